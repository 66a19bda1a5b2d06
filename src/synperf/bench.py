"""`synperf bench`: prediction speed. Random distinct cases (the worst case, no cache hits), a
stream that repeats shapes as a serving workload does, and single-call latency."""

from __future__ import annotations

import random
import time

from synperf.cases import parse_case
from synperf.gpu.spec import GpuSpec
from synperf.predict import predict


def random_cases(n: int, seed: int = 0) -> list[dict]:
    """A mix of families in proportions close to an LLM forward pass."""
    rng = random.Random(seed)
    log_uniform = lambda lo, hi: int(round(lo * (hi / lo) ** rng.random()))  # noqa: E731
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.5:
            out.append({"family": "gemm", "m": log_uniform(1, 16384), "n": rng.choice([1024, 4096, 6144, 14336, 28672]),
                        "k": rng.choice([1024, 4096, 8192]), "dtype": rng.choice(["bf16", "fp16"])})
        elif r < 0.7:
            out.append({"family": "attention", "library": "flash_attn2_torch_sdpa", "phase": "decode",
                        "batch": log_uniform(1, 256), "q_len": 1, "kv_len": log_uniform(16, 32768),
                        "num_heads": 32, "num_kv_heads": 8, "head_dim": 128})
        elif r < 0.8:
            q = log_uniform(16, 8192)
            out.append({"family": "attention", "library": "flash_attn2_torch_sdpa", "phase": "prefill",
                        "batch": log_uniform(1, 8), "q_len": q, "kv_len": q, "num_heads": 32,
                        "num_kv_heads": 8, "head_dim": 128, "causal": True})
        elif r < 0.9:
            out.append({"family": "rmsnorm", "library": "flashinfer", "tokens": log_uniform(1, 16384), "hidden": 4096})
        else:
            out.append({"family": "moe", "tokens": log_uniform(1, 4096), "hidden": 4096, "intermediate": 1536,
                        "num_experts": 128, "topk": 8, "stage": "w13", "config": "vllm_default"})
    return out


def _rate(cases, gpu: GpuSpec) -> tuple[float, float]:
    start = time.perf_counter()
    for case in cases:
        predict(case, gpu)
    elapsed = time.perf_counter() - start
    return len(cases) / elapsed, elapsed


def end_to_end_seconds(gpu: GpuSpec, seed: int = 0) -> dict:
    """Wall time of the end-to-end simulations from a cold prediction cache: one static batch
    (8 x 2048 prompts, 128 outputs) and 2,000 Poisson requests through the serving scheduler,
    Llama-3.1-8B, TP 1, SGLang kernels."""
    from synperf.workloads.model import load_model
    from synperf.workloads.serving import poisson_requests, simulate_serving
    from synperf.workloads.static_batch import simulate_batch

    model = load_model("llama-3.1-8b")
    predict.cache_clear()
    start = time.perf_counter()
    simulate_batch(model, gpu, 1, "sglang", [2048] * 8, 128)
    batch_s = time.perf_counter() - start
    requests = poisson_requests(2000, 4.0, (128, 4096), (16, 512), seed=seed)
    start = time.perf_counter()
    simulate_serving(model, gpu, 1, "sglang", requests)
    return {"simulate_batch_seconds": round(batch_s, 3), "simulate_serve_2000_requests_seconds":
            round(time.perf_counter() - start, 2)}


def run_bench(gpu: GpuSpec, lines: int, seed: int = 0) -> dict:
    distinct = [parse_case(c) for c in random_cases(lines, seed)]
    predict.cache_clear()
    distinct_rate, distinct_s = _rate(distinct, gpu)
    pool = [parse_case(c) for c in random_cases(max(1, lines // 50), seed + 1)]
    rng = random.Random(seed)
    stream = [rng.choice(pool) for _ in range(lines)]
    predict.cache_clear()
    stream_rate, stream_s = _rate(stream, gpu)
    singles = []
    for case in distinct[:200]:
        predict.cache_clear()
        start = time.perf_counter()
        predict(case, gpu)
        singles.append(time.perf_counter() - start)
    singles.sort()
    return {
        "gpu": gpu.id, "lines": lines,
        "distinct_cases_per_s": round(distinct_rate), "distinct_seconds": round(distinct_s, 2),
        "repeating_stream_cases_per_s": round(stream_rate), "repeating_stream_seconds": round(stream_s, 2),
        "repeating_stream_distinct_shapes": len(pool),
        "single_call_median_ms": round(1e3 * singles[len(singles) // 2], 3),
        "single_call_p90_ms": round(1e3 * singles[int(len(singles) * 0.9)], 3),
        **end_to_end_seconds(gpu, seed),
    }
