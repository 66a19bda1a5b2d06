"""synperf: predict LLM kernel latency on NVIDIA GPUs from their specs, and say which pipe bounds it."""

__version__ = "0.1.0"
