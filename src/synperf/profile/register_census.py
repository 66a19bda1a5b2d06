"""Registers and spills of synperf's Triton kernels, as this GPU's Triton builds them
(``CompiledKernel.n_regs`` and ``n_spills``, from ptxas): one build per specialisation, no timing.

Timing a kernel tells how fast it ran, not why. How many registers a thread holds sets how many
programs share an SM, and a tile that needs more than 255 keeps the rest in local memory; both are
only known once ptxas has built the kernel, and a fit over a few hundred profiled kernels misses
the discrete steps that decide occupancy.

    python -m synperf.profile.register_census --kernel moe --out moe_registers.parquet --workers 15
    python -m synperf.profile.register_census --kernel rope --out rope_registers.parquet --workers 15

moe: every config of the planner's grid and of the bundled vLLM / SGLang tables whose shared memory
fits, in the kernel's three specialisations in a model: w13 (K = hidden, 16-element aligned, top_k
rows per token), w2 (K = intermediate, aligned, routing weight applied) and w2 at an unaligned K
(GPT-OSS's I = 360: Triton loads element by element). rope: one program per token over all heads,
so the block is (next_pow2(q heads) + next_pow2(kv heads)) x next_pow2(head_dim / 2), twice; every
head_dim of the bundled models and more, q and kv head blocks 1-256, up to 288 padded elements a
thread (beyond, the build is at the cap anyway).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from types import SimpleNamespace
from typing import Dict, List

from synperf.kernels.moe import CONFIG_KEYS
from synperf.validate import int_at_least

# MoE specialisation: (K, N, top_k, routing weight applied)
MOE_VARIANTS = {
    "w13": (4096, 4096, 8, False),
    "w2": (4096, 4096, 1, True),
    "w2_unaligned": (360, 2880, 1, True),
}
ROPE_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 256)
ROPE_HEAD_BLOCKS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ROPE_MAX_ELEMENTS_PER_THREAD = 288


def moe_config_grid() -> List[Dict[str, int]]:
    """The profiling planner's grid (BM 16-256, BN and BK 32-256, 4 or 8 warps, 2-5 stages) and every
    config the bundled vLLM / SGLang tables ship."""
    from synperf.kernels.moe import engine_table

    seen = set(itertools.product((16, 32, 64, 128, 256), (32, 64, 128, 256), (32, 64, 128, 256), (4, 8), (2, 3, 4, 5)))
    for per_gpu in engine_table()["engines"].values():
        for tables in per_gpu.values():
            for by_tokens in tables.values():
                for bm, bn, bk, _group, nw, ns in by_tokens.values():
                    seen.add((bm, bn, bk, nw, ns))
    return [dict(zip(CONFIG_KEYS, (bm, bn, bk, 1, nw, ns))) for bm, bn, bk, nw, ns in sorted(seen)]


def _moe_fits_shared_memory(config: Dict[str, int], cc_major: int, limit_bytes: int) -> bool:
    """Builds that could not launch are skipped (bf16 tiles, the copies ``moe.shared_bytes`` counts)."""
    from synperf.kernels.moe import _parse_config_dict, shared_bytes, tensor_path

    cfg = _parse_config_dict(config)
    return shared_bytes(cfg, 2, tensor_path(cfg, SimpleNamespace(cc_major=cc_major))) <= limit_bytes


def rope_elements_per_thread(head_dim: int, q_block: int, kv_block: int) -> float:
    from synperf.kernels.rope import RopeCall, _triton_block

    padded, warps = _triton_block(RopeCall(1, q_block, kv_block, head_dim, "bf16", "triton"))
    return padded / (32 * warps)


def jobs(kernel: str, cc_major: int, shared_limit: int) -> List[dict]:
    if kernel == "moe":
        return [{"variant": v, **cfg} for v in MOE_VARIANTS for cfg in moe_config_grid()
                if _moe_fits_shared_memory(cfg, cc_major, shared_limit)]
    return [{"head_dim": d, "q_block": q, "kv_block": kv}
            for d in ROPE_HEAD_DIMS for q in ROPE_HEAD_BLOCKS for kv in ROPE_HEAD_BLOCKS
            if kv <= q and rope_elements_per_thread(d, q, kv) <= ROPE_MAX_ELEMENTS_PER_THREAD]


def _build_moe(job: dict):
    import torch

    from .triton_moe import launch_moe_kernel

    k, n, top_k, routed = MOE_VARIANTS[job["variant"]]
    config = {key: job[key] for key in CONFIG_KEYS}
    pairs, dev = config["BLOCK_SIZE_M"], torch.device("cuda")
    a = torch.randn((pairs // top_k + 1, k), device=dev, dtype=torch.bfloat16)
    b = torch.randn((2, n, k), device=dev, dtype=torch.bfloat16)
    c = torch.empty((pairs, n), device=dev, dtype=torch.bfloat16)
    weights = torch.rand((pairs,), device=dev, dtype=torch.float32)
    sorted_ids = torch.arange(pairs, device=dev, dtype=torch.int32)
    expert_ids = torch.zeros((1,), device=dev, dtype=torch.int32)
    num_post = torch.full((1,), pairs, device=dev, dtype=torch.int32)
    return launch_moe_kernel(a, b, c, weights if routed else None, sorted_ids, expert_ids, num_post, top_k,
                             config, routed)


def _build_rope(job: dict):
    import torch

    from .triton_elementwise import launch_rope_kernel, make_cos_sin_cache

    dev, d, tokens = torch.device("cuda"), job["head_dim"], 4
    q = torch.randn((tokens, job["q_block"] * d), device=dev, dtype=torch.bfloat16)
    k = torch.randn((tokens, job["kv_block"] * d), device=dev, dtype=torch.bfloat16)
    positions = torch.arange(tokens, device=dev)
    return launch_rope_kernel(positions, q, k, make_cos_sin_cache(tokens, d, device=dev), job["q_block"],
                              job["kv_block"], d)


def _build(kernel: str, batch: List[dict]) -> List[dict]:
    import torch

    build = _build_moe if kernel == "moe" else _build_rope
    rows = []
    for job in batch:
        row = {"kernel": kernel, **job}
        try:
            compiled = build(job)
            torch.cuda.synchronize()
            row.update(n_regs=int(compiled.n_regs), n_spills=int(compiled.n_spills), error=None)
        except Exception as exc:  # OutOfResources and the like: recorded, the census goes on
            row.update(n_regs=None, n_spills=None, error=f"{type(exc).__name__}: {exc}"[:300])
        rows.append(row)
    return rows


def census(kernel: str, workers: int) -> List[dict]:
    import torch

    props = torch.cuda.get_device_properties(0)
    todo = jobs(kernel, props.major, int(getattr(props, "shared_memory_per_block_optin", 232448)))
    batches = [todo[i::4 * workers] for i in range(4 * workers)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = [r for part in pool.map(_build, [kernel] * len(batches), batches) for r in part]
    for r in rows:
        r.update(gpu_name=props.name, cc=f"{props.major}.{props.minor}")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synperf.profile.register_census",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel", required=True, choices=("moe", "rope"))
    parser.add_argument("--out", required=True, help="parquet file to write")
    parser.add_argument("--workers", type=int_at_least(1), default=8, help="parallel Triton builds")
    args = parser.parse_args(argv)
    import pandas as pd
    import triton

    t0 = time.time()
    frame = pd.DataFrame(census(args.kernel, args.workers))
    frame["triton_version"] = triton.__version__
    frame.to_parquet(args.out, index=False, compression="zstd")
    built = int(frame["error"].isna().sum())
    print(json.dumps({"builds": built, "failed": len(frame) - built, "seconds": round(time.time() - t0, 1)}),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
