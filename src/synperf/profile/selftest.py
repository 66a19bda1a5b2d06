"""GPU self-test: ``python -m synperf.profile.selftest [out_dir]``.

Checks synperf's Triton kernels against torch references on the GPU, then
profiles a handful of cases of every family and prints the rows."""

from __future__ import annotations

import json
import os
import sys
import tempfile


def check_kernels(device="cuda") -> dict:
    import torch

    from . import triton_elementwise as te
    from . import triton_moe as tm

    res = {}
    torch.manual_seed(0)
    for dt in (torch.bfloat16, torch.float16):
        x = torch.randn(37, 4096, dtype=dt, device=device)
        w = torch.randn(4096, dtype=dt, device=device)
        r = torch.randn_like(x)
        res[f"rmsnorm_{dt}"] = (te.rmsnorm_triton(x, w).float() - te.rmsnorm_torch(x, w).float()).abs().max().item()
        y_ref, r_ref = te.rmsnorm_torch(x, w, residual=r)
        x2, r2 = x.clone(), r.clone()
        te.rmsnorm_triton(x2, w, residual=r2)
        res[f"rmsnorm_res_{dt}"] = max((x2.float() - y_ref.float()).abs().max().item(), (r2.float() - r_ref.float()).abs().max().item())
        a = torch.randn(37, 2 * 3000, dtype=dt, device=device)
        res[f"silu_{dt}"] = (te.silu_and_mul_triton(a).float() - te.silu_and_mul_torch(a).float()).abs().max().item()
        T, H, KH, D = 33, 32, 8, 128
        qkv = torch.randn(T, (H + 2 * KH) * D, dtype=dt, device=device)
        cache = te.make_cos_sin_cache(8192, D, device=device)
        pos = torch.randint(0, 8192, (T,), device=device)
        q, k = qkv[:, : H * D], qkv[:, H * D : (H + KH) * D]
        q0, k0 = q.clone(), k.clone()
        te.rope_torch(pos, q0, k0, cache, H, KH, D)
        te.rope_triton(pos, q, k, cache, H, KH, D)
        res[f"rope_{dt}"] = max((q.float() - q0.float()).abs().max().item(), (k.float() - k0.float()).abs().max().item())
        T, Hd, I, E, K = 50, 256, 192, 8, 2
        xm = torch.randn(T, Hd, dtype=dt, device=device)
        w13 = (torch.randn(E, 2 * I, Hd, device=device) / 16).to(dt)
        w2 = (torch.randn(E, Hd, I, device=device) / 16).to(dt)
        tw, ids = tm.random_routing(T, E, K, device)
        for name in ("small", "large"):
            cfg = (
                {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1}
                if name == "small"
                else {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 8}
            )
            out = tm.fused_moe(xm, w13, w2, tw, ids, cfg)
            ref = tm.fused_moe_reference(xm, w13, w2, tw, ids)
            res[f"moe_{name}_{dt}"] = (out.float() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-6)
    return res


SMOKE_CASES = [
    {"family": "gemm", "dtype": "bf16", "library": "cublas", "m": 4096, "n": 4096, "k": 4096},
    {"family": "gemm", "dtype": "fp16", "library": "cublas", "m": 1, "n": 14336, "k": 4096},
    {"family": "gemm", "dtype": "fp8_e4m3", "library": "cublaslt_scaled_mm", "m": 2048, "n": 4096, "k": 4096},
    {"family": "gemm", "dtype": "fp8_e4m3", "library": "fp8_block", "m": 16, "n": 128, "k": 128},
    {"family": "attention", "dtype": "bf16", "library": "flash_attn2_torch_sdpa", "phase": "prefill", "batch": 2, "q_len": 2048, "kv_len": 2048, "num_heads": 32, "num_kv_heads": 8, "head_dim": 128, "causal": True, "kv_cache_dtype": "bf16", "page_size": 16},
    {"family": "attention", "dtype": "bf16", "library": "flash_attn2_torch_sdpa", "phase": "prefill", "batch": 1, "q_len": 512, "kv_len": 4096, "num_heads": 16, "num_kv_heads": 16, "head_dim": 80, "causal": True, "kv_cache_dtype": "bf16", "page_size": 16},
    {"family": "attention", "dtype": "fp16", "library": "flash_attn2_torch_sdpa", "phase": "decode", "batch": 64, "q_len": 1, "kv_len": 8192, "num_heads": 64, "num_kv_heads": 8, "head_dim": 128, "causal": False, "kv_cache_dtype": "fp16", "page_size": 16},
    {"family": "attention", "dtype": "bf16", "library": "flashinfer", "phase": "decode", "batch": 1, "q_len": 1, "kv_len": 128, "num_heads": 8, "num_kv_heads": 8, "head_dim": 128, "causal": False},
    {"family": "moe", "dtype": "bf16", "library": "triton_fused_moe", "tokens": 256, "hidden": 2048, "intermediate": 768, "num_experts": 128, "topk": 8, "stage": "all", "config": "vllm_default"},
    {"family": "moe", "dtype": "bf16", "library": "triton_fused_moe", "tokens": 64, "hidden": 4096, "intermediate": 1792, "num_experts": 8, "topk": 2, "stage": "w13", "config": "sglang_default"},
    {"family": "moe", "dtype": "bf16", "library": "triton_fused_moe", "tokens": 4096, "hidden": 2048, "intermediate": 768, "num_experts": 128, "topk": 8, "stage": "w2", "config": {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 16, "num_warps": 8, "num_stages": 3}},
    {"family": "rmsnorm", "dtype": "bf16", "library": "torch", "tokens": 4096, "hidden": 4096, "residual": True},
    {"family": "rmsnorm", "dtype": "bf16", "library": "triton", "tokens": 4096, "hidden": 4096, "residual": False},
    {"family": "rmsnorm", "dtype": "bf16", "library": "flashinfer", "tokens": 16, "hidden": 4096, "residual": False},
    {"family": "silu_and_mul", "dtype": "bf16", "library": "torch", "tokens": 2048, "intermediate": 14336},
    {"family": "silu_and_mul", "dtype": "bf16", "library": "triton", "tokens": 2048, "intermediate": 14336},
    {"family": "rope", "dtype": "bf16", "library": "torch", "tokens": 2048, "num_heads": 32, "num_kv_heads": 8, "head_dim": 128},
    {"family": "rope", "dtype": "bf16", "library": "triton", "tokens": 2048, "num_heads": 32, "num_kv_heads": 8, "head_dim": 128},
]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out_dir = argv[0] if argv else tempfile.mkdtemp(prefix="synperf_selftest_")
    os.makedirs(out_dir, exist_ok=True)
    errs = check_kernels()
    print(json.dumps({"kernel_max_abs_err": errs}, indent=1))
    from .harness import measure_device_floor, profile_cases

    print(json.dumps(measure_device_floor(), indent=1))
    out = os.path.join(out_dir, "smoke.parquet")
    summary = profile_cases(SMOKE_CASES, out, reps=5, warmup=2, chunk_size=8, resume=False)
    print(json.dumps(summary))
    import pandas as pd

    df = pd.read_parquet(out)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 20)
    pd.set_option("display.max_colwidth", 60)
    print(df[["family", "library", "latency_us", "min_us", "max_us", "n_kernels", "kernels_consistent", "sm_clock_mhz", "kernel_names"]].to_string())
    with open(out + ".errors.jsonl") as f:
        for line in f:
            r = json.loads(line)
            print("ERROR", r["error_type"], r["message"][:200])
    return 0


if __name__ == "__main__":
    sys.exit(main())
