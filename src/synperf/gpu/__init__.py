"""GPU hardware specs: the only way hardware enters synperf."""

from synperf.gpu.spec import GpuSpec
from synperf.gpu.registry import GpuRegistry, default_registry, resolve_gpu

__all__ = ["GpuSpec", "GpuRegistry", "default_registry", "resolve_gpu"]
