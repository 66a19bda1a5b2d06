"""Sustained clock and power of single kernel calls run back to back (GPU only).

The prefill kernel scale of the engine overhead is mostly the power cap's toll, and it is not the
same for every pass: dense 8B-70B prefills settle at 1,500-1,650 MHz, qwen3-30b-a3b's at 1,800-1,950
(docs/reference-engine.md). Which kernels draw the power is what a pass-level model of that toll
needs. Each call below (the engines' calls at 8,192 tokens) runs once after the GPU idled
(``rested_us``: median of five calls), then back to back for ``--seconds``, with the SM clock and
board power sampled every 10 ms (``PassClocks``): the per-call time, clock and power over the
second half of that run are ``sustained_us``, ``sustained_mhz`` and ``sustained_w``.

    python -m synperf.profile.power_census --out power.jsonl [--seconds 2] [--idle-s 1.5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

TOKENS = 8192
CASES = (
    # dense GEMMs: llama-3.1-8b gate_up and qkv, llama-3.2-1b gate_up, qwen3-30b-a3b qkv, a decode GEMM
    {"family": "gemm", "dtype": "bf16", "library": "cublas", "m": TOKENS, "n": 28672, "k": 4096},
    {"family": "gemm", "dtype": "bf16", "library": "cublas", "m": TOKENS, "n": 6144, "k": 4096},
    {"family": "gemm", "dtype": "bf16", "library": "cublas", "m": TOKENS, "n": 16384, "k": 2048},
    {"family": "gemm", "dtype": "bf16", "library": "cublas", "m": TOKENS, "n": 5120, "k": 2048},
    {"family": "gemm", "dtype": "bf16", "library": "cublas", "m": 64, "n": 28672, "k": 4096},
    # fused MoE as the reference engine runs it: qwen3-30b-a3b and mixtral-8x7b
    {"family": "moe", "dtype": "bf16", "library": "triton_fused_moe", "tokens": TOKENS, "hidden": 2048,
     "intermediate": 768, "num_experts": 128, "topk": 8, "stage": "all", "config": "sglang_default"},
    {"family": "moe", "dtype": "bf16", "library": "triton_fused_moe", "tokens": TOKENS, "hidden": 4096,
     "intermediate": 14336, "num_experts": 8, "topk": 2, "stage": "all", "config": "sglang_default"},
    {"family": "moe", "dtype": "bf16", "library": "triton_fused_moe", "tokens": TOKENS, "hidden": 2048,
     "intermediate": 768, "num_experts": 128, "topk": 8, "stage": "w13", "config": "sglang_default"},
    # attention, norms, activation
    {"family": "attention", "dtype": "bf16", "library": "flash_attn2_torch_sdpa", "phase": "prefill", "batch": 1,
     "q_len": TOKENS, "kv_len": TOKENS, "num_heads": 32, "num_kv_heads": 8, "head_dim": 128, "causal": True,
     "kv_cache_dtype": "bf16", "page_size": 16},
    {"family": "rmsnorm", "dtype": "bf16", "library": "triton", "tokens": TOKENS, "hidden": 4096, "residual": True},
    {"family": "rmsnorm", "dtype": "bf16", "library": "triton", "tokens": TOKENS * 32, "hidden": 128, "residual": False},
    {"family": "silu_and_mul", "dtype": "bf16", "library": "triton", "tokens": TOKENS, "intermediate": 14336},
)


def census_row(torch, op, clocks_factory, seconds: float, idle_s: float) -> dict:
    """One call's rested and sustained time, clock and power (module docstring)."""
    torch.cuda.synchronize()
    time.sleep(idle_s)
    rested = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        op.fn()
        end.record()
        end.synchronize()
        rested.append(start.elapsed_time(end) * 1e3)
    marks = []
    with clocks_factory() as clocks:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            marks.append(event)
            op.fn()
            if len(marks) > 8:
                marks[-8].synchronize()      # keep the launch queue a few calls deep
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
    marks.append(end)
    per_call = [a.elapsed_time(b) * 1e3 for a, b in zip(marks, marks[1:])]
    half = per_call[len(per_call) // 2:]
    samples = clocks.samples[len(clocks.samples) // 2:]
    return {"rested_us": round(statistics.median(rested), 2), "calls": len(per_call),
            "sustained_us": round(statistics.median(half), 2),
            "sustained_mhz": round(statistics.fmean(c for c, _ in samples), 1) if samples else None,
            "sustained_w": round(statistics.fmean(w for _, w in samples), 1) if samples else None}


def main(argv: list[str] | None = None) -> int:
    import torch

    from .cases import normalize_case
    from .engine import PassClocks
    from .ops import build_op

    p = argparse.ArgumentParser(prog="python -m synperf.profile.power_census", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output .jsonl, one row per call")
    p.add_argument("--seconds", type=float, default=2.0, help="back-to-back run per call")
    p.add_argument("--idle-s", type=float, default=1.5, help="idle time before each call's rested timing")
    args = p.parse_args(argv)
    if not (0 < args.seconds <= 60 and 0 <= args.idle_s <= 60):
        p.error("--seconds must be in (0, 60] and --idle-s in [0, 60]")
    device = torch.device("cuda")
    index = torch.cuda.current_device()
    for case in CASES:
        try:
            op = build_op(normalize_case(dict(case)), device)
            for _ in range(3):
                op.fn()
            row = census_row(torch, op, lambda: PassClocks.of_device(index), args.seconds, args.idle_s)
        except Exception as exc:       # a case that cannot run here is reported, the others go on
            print(f"power_census: {json.dumps(case)}: {exc.__class__.__name__}: {exc}", file=sys.stderr)
            continue
        row = {"case_json": json.dumps(case), "gpu_name": torch.cuda.get_device_name(index), **row}
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{case['family']:<12} {row['rested_us']:>10.1f} us rested  {row['sustained_us']:>10.1f} us"
              f" sustained ({row['calls']} calls)  {row['sustained_mhz']} MHz  {row['sustained_w']} W", flush=True)
        del op
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
