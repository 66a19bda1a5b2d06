"""What issuing one call costs the host: the CPU time of each kind of call an eager forward pass
makes (a cuBLAS linear, a FlashInfer norm or attention run, a Triton launch, small torch ops), with
the GPU kept busy so that no call ever waits on it.

An eager prefill of a small batch is bound by the host: its wall time is the sum of these costs,
not of the kernels. The costs differ by kind (a torch op that checks its arguments in C++ is
cheaper than a Python wrapper that plans and dispatches), which is what a single rate per launch
misses when the mix of calls changes (an MoE layer issues many small torch ops).

Method: a ``torch.cuda._sleep`` kernel holds the GPU while ``CALLS`` calls are issued and timed
with ``time.perf_counter``; repeated ``ROUNDS`` times, the median per call is kept. The number of
kernels one call launches is counted once with torch.profiler. One JSON line per call kind:
``{"kind", "host_us", "host_us_min", "kernels", "shape", "host_cpu", "torch", ...}``.

Run on the GPU host: ``python -m synperf.profile.host_cost --out host_cost.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

CALLS = 50
ROUNDS = 9
SLEEP_CYCLES = 60_000_000      # ~30 ms at 2 GHz: longer than CALLS calls take to issue


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def time_host(torch, fn, calls: int = CALLS, rounds: int = ROUNDS) -> tuple[float, float]:
    """(median, min) host microseconds per call of ``fn`` while the GPU is busy."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    per_call = []
    for _ in range(rounds):
        torch.cuda._sleep(SLEEP_CYCLES)
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter() - t0) * 1e6 / calls)
        torch.cuda.synchronize()
    return statistics.median(per_call), min(per_call)


def count_kernels(torch, fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type.name == "CUDA" and "memcpy" not in e.name.lower()
               and "memset" not in e.name.lower())


def call_kinds(torch, tokens: int, hidden: int, heads: int, kv_heads: int, head_dim: int,
               experts: int, topk: int, moe_inter: int) -> dict:
    """The calls of one reference-engine layer (engine.py), each on inputs of this shape."""
    import flashinfer
    import torch.nn.functional as F

    from synperf.kernels.moe import default_config

    from .moe_align import moe_align_block_size
    from .triton_elementwise import make_cos_sin_cache, silu_and_mul_triton
    from .triton_moe import MoEWorkspace, invoke_moe_kernel

    dev, bf = "cuda", torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(0)

    def rand(*shape, dtype=bf):
        return torch.randn(shape, device=dev, dtype=dtype, generator=g)

    T, h, d = tokens, hidden, head_dim
    x, res, w = rand(T, h), rand(T, h), rand(h)
    qkv_w = rand((heads + 2 * kv_heads) * d, h)
    q, k, v = rand(T, heads * d), rand(T, kv_heads * d), rand(T, kv_heads * d)
    pos = torch.arange(T, device=dev)
    cos_sin = make_cos_sin_cache(4096, d, device=dev)
    up = rand(T, 2 * 4 * h)
    cache = torch.empty((2, T * 2, 1, kv_heads, d), device=dev, dtype=bf)
    loc = torch.arange(T, device=dev)
    ws = torch.empty(256 << 20, dtype=torch.uint8, device=dev)
    indptr = torch.tensor([0, T], dtype=torch.int32, device=dev)
    wrapper = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(ws, "NHD", backend="fa3")
    wrapper.plan(indptr, indptr, heads, kv_heads, d, causal=True, q_data_type=bf, kv_data_type=bf)
    q3, k3, v3 = q.view(T, heads, d), k.view(T, kv_heads, d), v.view(T, kv_heads, d)
    router = rand(experts, h)
    w13, w2 = rand(experts, 2 * moe_inter, h), rand(experts, h, moe_inter)
    logits = rand(T, experts, dtype=torch.float32)
    probs = torch.softmax(logits, -1)
    weights, ids = torch.topk(probs, topk, dim=-1)
    ids32 = ids.to(torch.int32)
    cfg = default_config("sglang_default", T, experts, h, moe_inter, topk)
    moe = MoEWorkspace(x, w13, w2, weights, ids32, cfg)
    last = torch.tensor([T - 1], device=dev)

    def kv_write():
        cache[0, :, 0][loc] = k3
        cache[1, :, 0][loc] = v3

    return {
        "linear": lambda: F.linear(x, qkv_w),
        "flashinfer_rmsnorm": lambda: flashinfer.norm.rmsnorm(x, w, 1e-6),
        "flashinfer_fused_add_rmsnorm": lambda: flashinfer.norm.fused_add_rmsnorm(x, res, w, 1e-6),
        "flashinfer_rope": lambda: flashinfer.rope.apply_rope_with_cos_sin_cache_inplace(pos, q, k, d, cos_sin,
                                                                                       is_neox=True),
        "flashinfer_silu_and_mul": lambda: flashinfer.activation.silu_and_mul(up),
        "flashinfer_fa3_prefill_run": lambda: wrapper.run(q3, k3, v3),
        "triton_fused_moe_launch": lambda: invoke_moe_kernel(x, w13, moe.cache1, None, moe.sorted_ids, moe.expert_ids,
                                                             moe.num_post, topk, cfg, mul_routed_weight=False),
        "triton_silu_and_mul_launch": lambda: silu_and_mul_triton(moe.cache1, out=moe.cache2),
        "torch_softmax": lambda: torch.softmax(logits, dim=-1, dtype=torch.float32),
        "torch_topk": lambda: torch.topk(probs, topk, dim=-1),
        "torch_sum_dim": lambda: weights.sum(dim=-1, keepdim=True),
        "torch_div": lambda: weights / weights,
        "torch_to_int32": lambda: ids.to(torch.int32),
        "torch_add": lambda: x + res,
        "torch_index_rows": lambda: x[last],
        "torch_argmax": lambda: torch.argmax(logits, dim=-1),
        "torch_embedding": lambda: F.embedding(loc, x),
        "kv_cache_write": kv_write,
        "moe_align_block_size": lambda: moe_align_block_size(ids32, cfg["BLOCK_SIZE_M"], experts),
        "moe_routing": lambda: _routing(torch, x, router, topk),
        "moe_workspace_full": lambda: MoEWorkspace(x, w13, w2, weights, ids32, cfg).full(),
    }


def _routing(torch, x, router, topk):
    probs = torch.softmax(torch.nn.functional.linear(x, router), dim=-1, dtype=torch.float32)
    weights, ids = torch.topk(probs, topk, dim=-1)
    return weights / weights.sum(dim=-1, keepdim=True), ids.to(torch.int32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m synperf.profile.host_cost", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="JSON-lines file to append to")
    ap.add_argument("--tokens", default="128,2048", help="token counts of the inputs (comma list)")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("host_cost: needs a CUDA GPU", file=sys.stderr)
        return 2
    meta = {"host_cpu": _cpu_name(), "gpu_name": torch.cuda.get_device_name(), "torch": torch.__version__,
            "python": platform.python_version(), "calls": CALLS, "rounds": ROUNDS}
    with open(args.out, "a") as out:
        for tokens in (int(t) for t in args.tokens.split(",")):
            shape = dict(tokens=tokens, hidden=2048, heads=32, kv_heads=4, head_dim=128, experts=128, topk=8,
                         moe_inter=768)
            for kind, fn in call_kinds(torch, **shape).items():
                host, fastest = time_host(torch, fn)
                row = {"kind": kind, "host_us": round(host, 3), "host_us_min": round(fastest, 3),
                       "kernels": count_kernels(torch, fn), "shape": shape, **meta}
                out.write(json.dumps(row) + "\n")
                print(f"{kind:32s} T={tokens:5d} {host:8.2f} us  {row['kernels']} kernels", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
