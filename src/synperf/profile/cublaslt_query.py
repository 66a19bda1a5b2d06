"""cuBLASLt's own GEMM choice per shape, asked without running a GEMM (``python -m synperf.profile.cublaslt_query``).

cuBLAS is closed source: synperf reads its tiling from the names of profiled kernels, one timed run
per shape. ``cublasLtMatmulAlgoGetHeuristic`` tells in tens of microseconds, without launching
anything, which algorithm, tile, stages, split-K, swizzle and cluster cuBLASLt would use for a
shape, so 100k shapes cost minutes of host time rather than GPU hours. ``--check N`` runs N of them once under
torch.profiler and records the kernels launched, to see whether the heuristic's answer is what
PyTorch actually gets; ``--compare`` scores the answers against a measured gemm table.

The problem is posed as PyTorch poses ``F.linear(x, w)`` (x [m, k], w [n, k]), column-major
``C^T = W . X^T``: transa=T, transb=N, M=n, N=m, K=k, lda=ldb=k, ldc=n, CUBLAS_COMPUTE_32F with
float scale, no bias, 256-byte aligned operands (the preference default).

- bf16 / fp16: A, B, C, D of that type, workspace limit 32 MiB, PyTorch's cuBLAS workspace on sm90
  (``CUBLAS_WORKSPACE_CONFIG`` default); ``F.linear`` without bias goes through cublasGemmEx with it.
- fp8_e4m3 (``torch._scaled_mm``, per-tensor scales, bf16 out): A, B e4m3, C, D bf16, A/B scale
  pointers set to device scalars, workspace limit 1 MiB, PyTorch's cuBLASLt workspace
  (``CUBLASLT_WORKSPACE_SIZE`` default).

Tile, stages, cluster and inner-shape ids are decoded with tables copied from ``cublasLt.h`` of
cuBLAS 13.1.1 (wheel nvidia-cublas 13.1.1.3); an id not in them is written ``id<N>`` (ids are only
ever appended, so older libraries decode the same). The tile ``"MxN"`` is in cuBLAS's orientation:
M runs along our n, N along our m (``tile_of`` turns it round).

Output: one parquet row per (shape, rank) with the decoded config, waves and workspace, and
``status`` (``ok``; ``no_algo`` when the heuristic returns nothing; ``unsupported``;
``error:...``), rank -1 for a shape that failed. The file is rewritten every 30 s, so a run cut
short keeps what it had. Decoding, shape readers and the comparison need no GPU.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import math
import os
import re
import signal
import sys
import time

# -- cublasLt.h enums (cuBLAS 13.1.1) -------------------------------------------------------------

# CUBLASLT_MATMUL_TILE_<name>: ids 0..634 in this order
TILE_NAMES = dict(enumerate("""
UNDEFINED 8x8 8x16 16x8 8x32 16x16 32x8 8x64 16x32 32x16 64x8 32x32 32x64 64x32 32x128 64x64 128x32 64x128
128x64 64x256 128x128 256x64 64x512 128x256 256x128 512x64 64x96 96x64 96x128 128x160 160x128 192x128 128x192
128x96 32x256 256x32 8x128 8x192 8x256 8x320 8x384 8x448 8x512 8x576 8x640 8x704 8x768 16x64 16x128 16x192
16x256 16x320 16x384 16x448 16x512 16x576 16x640 16x704 16x768 24x64 24x128 24x192 24x256 24x320 24x384 24x448
24x512 24x576 24x640 24x704 24x768 32x192 32x320 32x384 32x448 32x512 32x576 32x640 32x704 32x768 40x64 40x128
40x192 40x256 40x320 40x384 40x448 40x512 40x576 40x640 40x704 40x768 48x64 48x128 48x192 48x256 48x320 48x384
48x448 48x512 48x576 48x640 48x704 48x768 56x64 56x128 56x192 56x256 56x320 56x384 56x448 56x512 56x576 56x640
56x704 56x768 64x192 64x320 64x384 64x448 64x576 64x640 64x704 64x768 72x64 72x128 72x192 72x256 72x320 72x384
72x448 72x512 72x576 72x640 80x64 80x128 80x192 80x256 80x320 80x384 80x448 80x512 80x576 88x64 88x128 88x192
88x256 88x320 88x384 88x448 88x512 96x192 96x256 96x320 96x384 96x448 96x512 104x64 104x128 104x192 104x256
104x320 104x384 104x448 112x64 112x128 112x192 112x256 112x320 112x384 120x64 120x128 120x192 120x256 120x320
120x384 128x320 128x384 136x64 136x128 136x192 136x256 136x320 144x64 144x128 144x192 144x256 144x320 152x64
152x128 152x192 152x256 152x320 160x64 160x192 160x256 168x64 168x128 168x192 168x256 176x64 176x128 176x192
176x256 184x64 184x128 184x192 184x256 192x64 192x192 192x256 200x64 200x128 200x192 208x64 208x128 208x192
216x64 216x128 216x192 224x64 224x128 224x192 232x64 232x128 232x192 240x64 240x128 240x192 248x64 248x128
248x192 256x192 264x64 264x128 272x64 272x128 280x64 280x128 288x64 288x128 296x64 296x128 304x64 304x128 312x64
312x128 320x64 320x128 328x64 328x128 336x64 336x128 344x64 344x128 352x64 352x128 360x64 360x128 368x64 368x128
376x64 376x128 384x64 384x128 392x64 400x64 408x64 416x64 424x64 432x64 440x64 448x64 456x64 464x64 472x64
480x64 488x64 496x64 504x64 520x64 528x64 536x64 544x64 552x64 560x64 568x64 576x64 584x64 592x64 600x64 608x64
616x64 624x64 632x64 640x64 648x64 656x64 664x64 672x64 680x64 688x64 696x64 704x64 712x64 720x64 728x64 736x64
744x64 752x64 760x64 768x64 64x16 64x24 64x40 64x48 64x56 64x72 64x80 64x88 64x104 64x112 64x120 64x136 64x144
64x152 64x160 64x168 64x176 64x184 64x200 64x208 64x216 64x224 64x232 64x240 64x248 64x264 64x272 64x280 64x288
64x296 64x304 64x312 64x328 64x336 64x344 64x352 64x360 64x368 64x376 64x392 64x400 64x408 64x416 64x424 64x432
64x440 64x456 64x464 64x472 64x480 64x488 64x496 64x504 64x520 64x528 64x536 64x544 64x552 64x560 64x568 64x584
64x592 64x600 64x608 64x616 64x624 64x632 64x648 64x656 64x664 64x672 64x680 64x688 64x696 64x712 64x720 64x728
64x736 64x744 64x752 64x760 128x8 128x16 128x24 128x40 128x48 128x56 128x72 128x80 128x88 128x104 128x112
128x120 128x136 128x144 128x152 128x168 128x176 128x184 128x200 128x208 128x216 128x224 128x232 128x240 128x248
128x264 128x272 128x280 128x288 128x296 128x304 128x312 128x328 128x336 128x344 128x352 128x360 128x368 128x376
128x392 128x400 128x408 128x416 128x424 128x432 128x440 128x448 128x456 128x464 128x472 128x480 128x488 128x496
128x504 128x512 192x8 192x16 192x24 192x32 192x40 192x48 192x56 192x72 192x80 192x88 192x96 192x104 192x112
192x120 192x136 192x144 192x152 192x160 192x168 192x176 192x184 192x200 192x208 192x216 192x224 192x232 192x240
192x248 192x264 192x272 192x280 192x288 192x296 192x304 192x312 192x320 192x328 192x336 256x8 256x16 256x24
256x40 256x48 256x56 256x72 256x80 256x88 256x96 256x104 256x112 256x120 256x136 256x144 256x152 256x160 256x168
256x176 256x184 256x200 256x208 256x216 256x224 256x232 256x240 256x248 256x256 320x8 320x16 320x24 320x32
320x40 320x48 320x56 320x72 320x80 320x88 320x96 320x104 320x112 320x120 320x136 320x144 320x152 320x160 320x168
320x176 320x184 320x192 320x200 384x8 384x16 384x24 384x32 384x40 384x48 384x56 384x72 384x80 384x88 384x96
384x104 384x112 384x120 384x136 384x144 384x152 384x160 384x168 448x8 448x16 448x24 448x32 448x40 448x48 448x56
448x72 448x80 448x88 448x96 448x104 448x112 448x120 448x128 448x136 448x144 512x8 512x16 512x24 512x32 512x40
512x48 512x56 512x72 512x80 512x88 512x96 512x104 512x112 512x120 512x128 576x8 576x16 576x24 576x32 576x40
576x48 576x56 576x72 576x80 576x88 576x96 576x104 576x112 640x8 640x16 640x24 640x32 640x40 640x48 640x56 640x72
640x80 640x88 640x96 704x8 704x16 704x24 704x32 704x40 704x48 704x56 704x72 704x80 704x88 768x8 768x16 768x24
768x32 768x40 768x48 768x56 768x72 768x80 256x512 256x1024 512x512 512x1024
""".split()))  # noqa: SIM905 (compact, in header order)
# CUBLASLT_MATMUL_STAGES_<name>, CUBLASLT_CLUSTER_SHAPE_<name>, CUBLASLT_MATMUL_INNER_SHAPE_<name>
STAGES_NAMES = {
    0: "UNDEFINED", 1: "16x1", 2: "16x2", 3: "16x3", 4: "16x4", 5: "16x5", 6: "16x6", 7: "32x1", 8: "32x2",
    9: "32x3", 10: "32x4", 11: "32x5", 12: "32x6", 13: "64x1", 14: "64x2", 15: "64x3", 16: "64x4", 17: "64x5",
    18: "64x6", 19: "128x1", 20: "128x2", 21: "128x3", 22: "128x4", 23: "128x5", 24: "128x6", 25: "32x10",
    26: "8x4", 27: "16x10", 28: "8x5", 31: "8x3", 32: "8xAUTO", 33: "16xAUTO", 34: "32xAUTO", 35: "64xAUTO",
    36: "128xAUTO", 37: "256xAUTO", 38: "768xAUTO",
}
CLUSTER_NAMES = {
    0: "AUTO", 2: "1x1x1", 3: "2x1x1", 4: "4x1x1", 5: "1x2x1", 6: "2x2x1", 7: "4x2x1", 8: "1x4x1", 9: "2x4x1",
    10: "4x4x1", 11: "8x1x1", 12: "1x8x1", 13: "8x2x1", 14: "2x8x1", 15: "16x1x1", 16: "1x16x1", 17: "3x1x1",
    18: "5x1x1", 19: "6x1x1", 20: "7x1x1", 21: "9x1x1", 22: "10x1x1", 23: "11x1x1", 24: "12x1x1", 25: "13x1x1",
    26: "14x1x1", 27: "15x1x1", 28: "3x2x1", 29: "5x2x1", 30: "6x2x1", 31: "7x2x1", 32: "1x3x1", 33: "2x3x1",
    34: "3x3x1", 35: "4x3x1", 36: "5x3x1", 37: "3x4x1", 38: "1x5x1", 39: "2x5x1", 40: "3x5x1", 41: "1x6x1",
    42: "2x6x1", 43: "1x7x1", 44: "2x7x1", 45: "1x9x1", 46: "1x10x1", 47: "1x11x1", 48: "1x12x1", 49: "1x13x1",
    50: "1x14x1", 51: "1x15x1",
}
INNER_SHAPE_NAMES = {
    0: "UNDEFINED", 1: "MMA884", 2: "MMA1684", 3: "MMA1688", 4: "MMA16816",
}

REDUCTION_NAMES = {0: "none", 1: "inplace", 2: "compute_type", 4: "output_type"}

CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF, CUDA_R_8F_E4M3 = 0, 2, 14, 28
CUBLAS_COMPUTE_32F = 68
CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
DESC_TRANSA, DESC_TRANSB, DESC_A_SCALE_POINTER, DESC_B_SCALE_POINTER = 3, 4, 17, 18
PREF_MAX_WORKSPACE_BYTES = 1
STATUS_NOT_SUPPORTED = 15
# cublasLtMatmulAlgoConfigAttributes_t, by the name of the raw value read
CONFIG_ATTRS = {"algo_id": 0, "tile_id": 1, "splitk": 2, "reduction_id": 3, "swizzle": 4, "custom": 5,
                "stages_id": 6, "inner_shape_id": 7, "cluster_id": 8}
_SIGNED = ("algo_id", "splitk")          # int32 attributes; the rest are unsigned
# synperf dtype -> (A/B type, C/D type), and the library name of the measured tables
TYPES = {"bf16": (CUDA_R_16BF, CUDA_R_16BF), "fp16": (CUDA_R_16F, CUDA_R_16F),
         "fp8_e4m3": (CUDA_R_8F_E4M3, CUDA_R_16BF)}
LIBRARY = {"bf16": "cublas", "fp16": "cublas", "fp8_e4m3": "cublaslt_scaled_mm"}
WORKSPACE_MIB, FP8_WORKSPACE_MIB = 32, 1
RANDOM_M, RANDOM_NK = (1, 32768), (64, 32768)
COLUMNS = ("m", "n", "k", "dtype", "rank", "algo_id", "tile", "stages", "splitk", "reduction", "swizzle", "custom",
           "cluster", "inner_shape", "waves", "workspace_bytes", "status", "tile_id", "stages_id", "cluster_id",
           "kernel_names", "check_status")
FLUSH_EVERY_S = 30.0


# -- decoding (pure) -------------------------------------------------------------------------------

def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))   # None or NaN (pandas)


def _name(table: dict, value) -> str | None:
    if _missing(value):
        return None
    return table.get(int(value), f"id{int(value)}")


def decode_config(raw: dict) -> dict:
    """Raw attribute values (keys of CONFIG_ATTRS) -> row fields: tile "MxN", stages "KxS", cluster
    "AxBxC", reduction and inner shape as names, the other values and the raw ids as they are;
    an attribute not read is None."""
    out = {key: raw.get(key)
           for key in ("algo_id", "splitk", "swizzle", "custom", "tile_id", "stages_id", "cluster_id")}
    out.update(tile=_name(TILE_NAMES, raw.get("tile_id")), stages=_name(STAGES_NAMES, raw.get("stages_id")),
               cluster=_name(CLUSTER_NAMES, raw.get("cluster_id")),
               reduction=_name(REDUCTION_NAMES, raw.get("reduction_id")),
               inner_shape=_name(INNER_SHAPE_NAMES, raw.get("inner_shape_id")))
    return out


def _extents(text) -> list[int] | None:
    if not isinstance(text, str) or not re.fullmatch(r"\d+(x\d+)+", text):
        return None
    return [int(v) for v in text.split("x")]


def tile_of(row) -> tuple[int, int] | None:
    """(tile_m, tile_n) of a query row (dict or pandas row) in F.linear's orientation, tile_m along m
    (the tokens), as synperf.kernels.gemm.tile_from_kernel_name gives it: cuBLAS's "MxN" runs M
    along our n, so tile_m is its second extent. None when the tile is undefined or unknown."""
    tile = row.get("tile")
    if not isinstance(tile, str):
        tile = _name(TILE_NAMES, row.get("tile_id"))
    ext = _extents(tile)
    return (ext[1], ext[0]) if ext and len(ext) == 2 else None


# -- shapes (pure) ---------------------------------------------------------------------------------

def shapes_from_parquet(path: str) -> list[tuple]:
    """Distinct (m, n, k, dtype) of the cuBLAS / cuBLASLt gemm rows of a synperf table, in table order."""
    import pandas as pd
    import pyarrow.parquet as pq

    names = set(pq.ParquetFile(path).schema_arrow.names)
    d = pd.read_parquet(path, columns=[c for c in ("m", "n", "k", "dtype", "family", "library") if c in names])
    if "family" in d:
        d = d[d["family"] == "gemm"]
    if "library" in d:
        d = d[d["library"].isin(set(LIBRARY.values()))]
    dtypes = d["dtype"] if "dtype" in d else ["bf16"] * len(d)
    shapes = zip(d["m"].astype(int), d["n"].astype(int), d["k"].astype(int), dtypes)
    return list(dict.fromkeys((int(m), int(n), int(k), str(t)) for m, n, k, t in shapes))


def shapes_from_jsonl(path: str) -> list[tuple]:
    """(m, n, k, dtype) per line {"m":..,"n":..,"k":..,"dtype":"bf16"} (dtype defaults to bf16);
    a line that does not parse is reported and skipped."""
    out = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                out.append((int(obj["m"]), int(obj["n"]), int(obj["k"]), str(obj.get("dtype", "bf16"))))
            except (ValueError, KeyError, TypeError) as exc:
                print(f"{path}:{number}: skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
    return out


def random_shapes(count: int, seed: int = 0, dtype: str = "bf16") -> list[tuple]:
    """Shapes of ``dtype``, m log-uniform in RANDOM_M, n and k in RANDOM_NK; half of them with n and
    k rounded to multiples of 64 (model-like), half left odd (alignment corner cases). FP8
    (`_scaled_mm`) needs n and k in multiples of 16, so its odd half is rounded to 16."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def log_uniform(lo, hi):
        return np.clip(np.exp(rng.uniform(np.log(lo), np.log(hi + 1), count)).astype(np.int64), lo, hi)

    m, n, k = log_uniform(*RANDOM_M), log_uniform(*RANDOM_NK), log_uniform(*RANDOM_NK)
    rounded = rng.random(count) < 0.5
    odd_step = 16 if dtype.startswith("fp8") else 1
    step = np.where(rounded, 64, odd_step)
    n = np.maximum(step, np.rint(n / step) * step).astype(np.int64)
    k = np.maximum(step, np.rint(k / step) * step).astype(np.int64)
    return [(int(a), int(b), int(c), dtype) for a, b, c in zip(m, n, k)]


MODEL_TPS = (1, 2, 4, 8)


def model_m_values() -> list[int]:
    """Token counts a serving engine runs GEMMs at: every m to 256, every 8th to 1024, then steps of
    about 3 % to 32768 (where cuBLAS's choice changes slowly)."""
    values = set(range(1, 257)) | set(range(264, 1025, 8))
    m = 1024.0
    while m < 32768:
        m *= 1.03
        values.add(min(32768, int(round(m / 8)) * 8))
    return sorted(values)


def shapes_from_models(m_values: list[int] | None = None) -> list[tuple]:
    """bf16 (m, n, k) of every GEMM of every bundled model's forward pass (engines.forward_pass, as
    SGLang runs it) at TP 1, 2, 4 and 8 where the model splits, for each m: the shapes an
    end-to-end simulation prices, so a tile table built from them holds cuBLAS's exact choice."""
    from synperf.gpu import resolve_gpu
    from synperf.workloads.engines import forward_pass
    from synperf.workloads.model import bundled_models, load_model

    gpu = resolve_gpu("h200")
    pairs = set()
    for name in bundled_models():
        model = load_model(name)
        for tp in MODEL_TPS:
            try:
                fp = forward_pass(model, gpu, tp, "sglang", "prefill", [64])
            except Exception:  # noqa: BLE001 (a TP size the model does not split into)
                continue
            pairs |= {(int(case["n"]), int(case["k"])) for case, _count, _tag in fp.kernels if case["family"] == "gemm"}
    return [(m, n, k, "bf16") for n, k in sorted(pairs) for m in (m_values or model_m_values())]


def spread(shapes: list[tuple], count: int) -> list[tuple]:
    """Up to ``count`` of ``shapes`` evenly spaced in m*n*k order, smallest and largest included."""
    ordered = sorted(set(shapes), key=lambda s: (s[0] * s[1] * s[2], s))
    if count <= 0 or not ordered:
        return []
    if count >= len(ordered):
        return ordered
    picks = {round(i * (len(ordered) - 1) / max(count - 1, 1)) for i in range(count)}
    return [ordered[i] for i in sorted(picks)]


# -- comparison with measured kernel names (pure) --------------------------------------------------

def _kernel_list(value) -> list[str]:
    """kernel_names cell: JSON list (synperf tables), list, or ';'-joined (--check)."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if not isinstance(value, str) or not value:
        return []
    if value.startswith('["'):
        try:
            return [str(v) for v in json.loads(value)]
        except ValueError:
            pass                            # a ';'-joined list that starts with "[gpu_memset] ..."
    return value.split(";")


def _pct(flags: list[bool]) -> float | None:
    return round(100.0 * sum(flags) / len(flags), 1) if flags else None


def compare_with_kernel_names(query_df, gemm_df, verbose: bool = True) -> dict:
    """For shapes in both frames (join on m, n, k, dtype), how often the rank-0 answer of the
    heuristic matches the GEMM kernel measured (first kernel whose name carries a tile):
    ``tile`` (tile_of against tile_from_kernel_name), ``tile_any`` (either way round: cuBLAS may
    swap the operands, ``..._TNN`` names), ``tile_k`` (K of the stages), ``cluster`` (when the
    heuristic names one), ``splitk`` (split-K > 1 against a ``splitK`` name or a reduce kernel).
    Percentages (None without cases) and counts; printed unless ``verbose`` is False."""
    from synperf.kernels.gemm import tile_from_kernel_name

    keys = ["m", "n", "k", "dtype"]
    q = query_df[(query_df["rank"] == 0) & (query_df["status"] == "ok")].drop(columns=["kernel_names"], errors="ignore")
    g = gemm_df[keys + ["kernel_names"]].drop_duplicates(keys)
    merged = q.merge(g, on=keys)
    flags: dict[str, list[bool]] = {"tile": [], "tile_any": [], "tile_k": [], "cluster": [], "splitk": []}
    by_dtype: dict[str, list[bool]] = {}
    for row in merged.to_dict("records"):
        names = [n for n in _kernel_list(row["kernel_names"]) if not n.startswith("[gpu_")]
        kernel = next((n for n in names if tile_from_kernel_name(n)), None)
        predicted = tile_of(row)
        if kernel is None or predicted is None:
            continue
        measured = tile_from_kernel_name(kernel)
        pair = (measured["tile_m"], measured["tile_n"])
        flags["tile"].append(predicted == pair)
        flags["tile_any"].append(predicted in (pair, pair[::-1]))
        by_dtype.setdefault(row["dtype"], []).append(predicted == pair)
        stages = _extents(row.get("stages"))
        if stages:
            flags["tile_k"].append(stages[0] == measured["tile_k"])
        cluster = _extents(row.get("cluster"))
        if cluster and "cluster_m" in measured:
            flags["cluster"].append((cluster[1], cluster[0]) == (measured["cluster_m"], measured["cluster_n"]))
        if not _missing(row.get("splitk")):
            split = "splitk" in kernel.lower() or any("reduce" in n.lower() for n in names if n != kernel)
            flags["splitk"].append((int(row["splitk"]) > 1) == split)
    out = {"shapes_joined": len(merged), "shapes_compared": len(flags["tile"])}
    for key, values in flags.items():
        out[f"{key}_pct"], out[f"{key}_n"] = _pct(values), len(values)
    out["tile_pct_by_dtype"] = {dtype: _pct(values) for dtype, values in sorted(by_dtype.items())}
    if verbose:
        print(f"heuristic rank 0 vs measured kernel: {out['shapes_compared']} of {out['shapes_joined']} joined shapes; "
              + ", ".join(f"{key} {out[key + '_pct']}% (n={out[key + '_n']})" for key in flags)
              + f"; tile by dtype {out['tile_pct_by_dtype']}")
    return out


# -- cuBLASLt through ctypes -----------------------------------------------------------------------

class _Algo(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64 * 8)]


class _HeuristicResult(ctypes.Structure):
    _fields_ = [("algo", _Algo), ("workspaceSize", ctypes.c_size_t), ("state", ctypes.c_int),
                ("wavesCount", ctypes.c_float), ("reserved", ctypes.c_int * 4)]


class LtError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _loaded_cublaslt() -> list[str]:
    """Paths of libcublasLt already mapped into this process (the one PyTorch uses)."""
    try:
        with open("/proc/self/maps") as f:
            paths = [line.split()[-1] for line in f if "libcublasLt.so" in line]
    except OSError:
        return []
    return list(dict.fromkeys(paths))


def load_cublaslt():
    """(library, path) of PyTorch's libcublasLt: the one mapped after a small bf16 matmul, else by
    soname, else the first found next to torch (nvidia pip packages, torch/lib) or under CUDA."""
    import torch

    a = torch.ones(64, 64, dtype=torch.bfloat16, device="cuda")
    (a @ a).sum().item()                    # loads cuBLAS and cuBLASLt, creates the context
    site = os.path.dirname(os.path.dirname(torch.__file__))
    found = [p for pattern in ("nvidia/*/lib/libcublasLt.so*", "nvidia/cublas/lib/libcublasLt.so*",
                               "torch/lib/libcublasLt.so*") for p in sorted(glob.glob(os.path.join(site, pattern)))]
    found += sorted(glob.glob("/usr/local/cuda*/lib64/libcublasLt.so*"))
    for candidate in _loaded_cublaslt() + ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"] + found:
        try:
            return ctypes.CDLL(candidate), candidate
        except OSError:
            continue
    raise OSError("libcublasLt not found (loaded, by soname, or next to torch)")


def _bind(lib) -> None:
    P, INT, SZ = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    signatures = {
        "cublasLtCreate": [P], "cublasLtDestroy": [P],
        "cublasLtMatmulDescCreate": [P, INT, INT], "cublasLtMatmulDescDestroy": [P],
        "cublasLtMatmulDescSetAttribute": [P, INT, P, SZ],
        "cublasLtMatrixLayoutCreate": [P, INT, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int64],
        "cublasLtMatrixLayoutDestroy": [P],
        "cublasLtMatmulPreferenceCreate": [P], "cublasLtMatmulPreferenceDestroy": [P],
        "cublasLtMatmulPreferenceSetAttribute": [P, INT, P, SZ],
        "cublasLtMatmulAlgoGetHeuristic": [P, P, P, P, P, P, P, INT, P, P],
        "cublasLtMatmulAlgoConfigGetAttribute": [P, INT, P, SZ, P],
    }
    for name, args in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, ctypes.c_int
    for name in ("cublasLtGetVersion", "cublasLtGetCudartVersion"):
        getattr(lib, name).argtypes, getattr(lib, name).restype = [], ctypes.c_size_t
    lib.cublasLtGetStatusName.argtypes, lib.cublasLtGetStatusName.restype = [ctypes.c_int], ctypes.c_char_p


class LtQuery:
    """One cuBLASLt handle; per dtype one matmul descriptor and preference (workspace limit);
    layouts per shape, destroyed after the call."""

    def __init__(self, lib, top: int, workspace_bytes: dict, scale_pointers: tuple[int, int] | None):
        _bind(lib)
        self.lib, self.top, self.workspace_bytes = lib, top, workspace_bytes
        self.scale_pointers = scale_pointers
        self.results = (_HeuristicResult * top)()
        self.stride = ctypes.sizeof(_HeuristicResult)
        self.value, self.written = ctypes.c_uint64(), ctypes.c_size_t()
        self.handle = ctypes.c_void_p()
        self._check(lib.cublasLtCreate(ctypes.byref(self.handle)), "cublasLtCreate")
        self.descs: dict = {}
        self.prefs: dict = {}
        # attribute sizes as this library stores them; one it does not know is left out
        zero = _Algo()
        self.attrs = []
        for key, attr in CONFIG_ATTRS.items():
            size = ctypes.c_size_t()
            if lib.cublasLtMatmulAlgoConfigGetAttribute(ctypes.byref(zero), attr, None, 0, ctypes.byref(size)) == 0:
                self.attrs.append((key, attr, size.value))

    def status_name(self, status: int) -> str:
        try:
            return self.lib.cublasLtGetStatusName(status).decode()
        except (AttributeError, OSError):
            return f"status{status}"

    def _check(self, status: int, what: str) -> None:
        if status:
            raise LtError(status, f"{what}: {self.status_name(status)}")

    def _setup(self, dtype: str):
        """Matmul descriptor and preference of a dtype, made on first use (and kept only when complete)."""
        lib = self.lib
        if dtype not in self.descs:
            desc = ctypes.c_void_p()
            self._check(lib.cublasLtMatmulDescCreate(ctypes.byref(desc), CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc")
            settings = [(DESC_TRANSA, ctypes.c_int32(CUBLAS_OP_T)), (DESC_TRANSB, ctypes.c_int32(CUBLAS_OP_N))]
            if dtype.startswith("fp8"):
                settings += [(attr, ctypes.c_void_p(p)) for attr, p in
                             zip((DESC_A_SCALE_POINTER, DESC_B_SCALE_POINTER), self.scale_pointers or ())]
            try:
                if dtype.startswith("fp8") and not self.scale_pointers:
                    raise LtError(STATUS_NOT_SUPPORTED, "fp8 needs scale pointers (no float8 in this torch)")
                for attr, value in settings:
                    self._check(lib.cublasLtMatmulDescSetAttribute(desc, attr, ctypes.byref(value),
                                                                   ctypes.sizeof(value)), "desc attribute")
            except LtError:
                lib.cublasLtMatmulDescDestroy(desc)
                raise
            self.descs[dtype] = desc
        limit = self.workspace_bytes[dtype]
        if limit not in self.prefs:
            pref, value = ctypes.c_void_p(), ctypes.c_uint64(limit)
            self._check(lib.cublasLtMatmulPreferenceCreate(ctypes.byref(pref)), "preference")
            status = lib.cublasLtMatmulPreferenceSetAttribute(pref, PREF_MAX_WORKSPACE_BYTES, ctypes.byref(value), 8)
            if status:
                lib.cublasLtMatmulPreferenceDestroy(pref)
                self._check(status, "workspace")
            self.prefs[limit] = pref
        return self.descs[dtype], self.prefs[limit]

    def query(self, m: int, n: int, k: int, dtype: str) -> list[dict]:
        """Decoded heuristic results of one shape, best first (possibly none)."""
        lib = self.lib
        desc, pref = self._setup(dtype)
        ab, cd = TYPES[dtype]
        layouts = []
        try:
            for kind, rows, cols, ld in ((ab, k, n, k), (ab, k, m, k), (cd, n, m, n)):  # A: w, B: x, C = D: out^T
                layout = ctypes.c_void_p()
                self._check(lib.cublasLtMatrixLayoutCreate(ctypes.byref(layout), kind, rows, cols, ld), "layout")
                layouts.append(layout)
            a, b, c = layouts
            count = ctypes.c_int(0)
            self._check(lib.cublasLtMatmulAlgoGetHeuristic(self.handle, desc, a, b, c, c, pref, self.top,
                                                           self.results, ctypes.byref(count)), "heuristic")
            return [self._decode(i) for i in range(count.value)]
        finally:
            for layout in layouts:
                lib.cublasLtMatrixLayoutDestroy(layout)

    def _decode(self, i: int) -> dict:
        result = self.results[i]
        algo = ctypes.addressof(self.results) + i * self.stride      # algo is the struct's first field
        raw = {}
        for key, attr, size in self.attrs:
            self.value.value = 0
            if self.lib.cublasLtMatmulAlgoConfigGetAttribute(algo, attr, ctypes.byref(self.value), size,
                                                             ctypes.byref(self.written)) == 0:
                v = self.value.value
                raw[key] = v - (1 << 32) if key in _SIGNED and v >= 1 << 31 else v
        row = decode_config(raw)
        row.update(waves=float(result.wavesCount), workspace_bytes=int(result.workspaceSize),
                   status="ok" if result.state == 0 else f"error:{self.status_name(result.state)}")
        return row

    def close(self) -> None:
        for desc in self.descs.values():
            self.lib.cublasLtMatmulDescDestroy(desc)
        for pref in self.prefs.values():
            self.lib.cublasLtMatmulPreferenceDestroy(pref)
        self.lib.cublasLtDestroy(self.handle)
        self.descs, self.prefs = {}, {}


def query_rows(lt: LtQuery, shape: tuple) -> list[dict]:
    """Rows of one shape; a failure is one row of rank -1 with its status, never an exception."""
    m, n, k, dtype = shape
    base = {"m": m, "n": n, "k": k, "dtype": dtype}
    if dtype not in TYPES:
        return [{**base, "rank": -1, "status": "unsupported"}]
    if min(m, n, k) <= 0:
        return [{**base, "rank": -1, "status": "invalid"}]
    try:
        results = lt.query(m, n, k, dtype)
    except LtError as exc:
        status = "unsupported" if exc.status == STATUS_NOT_SUPPORTED else f"error:{exc}"
        return [{**base, "rank": -1, "status": status}]
    except Exception as exc:  # noqa: BLE001 (anything else about one shape is recorded, never fatal)
        return [{**base, "rank": -1, "status": f"error:{type(exc).__name__}: {exc}"[:300]}]
    if not results:
        return [{**base, "rank": -1, "status": "no_algo"}]
    return [{**base, "rank": rank, **r} for rank, r in enumerate(results)]


# -- --check: the kernels PyTorch launches ---------------------------------------------------------

def check_kernels(shape: tuple, device) -> tuple[str | None, str]:
    """(';'-joined kernel names, status) of one F.linear / _scaled_mm call under torch.profiler,
    inputs as the profiling harness makes them (random, non-zero), after one warm-up call."""
    import tempfile
    import warnings

    import torch
    from torch.profiler import ProfilerActivity, profile

    from .ops import build_op
    from .trace import _kernel_label, load_gpu_events

    warnings.filterwarnings("ignore", message=".*Profiler clears events.*")
    m, n, k, dtype = shape
    op = None
    try:
        op = build_op({"family": "gemm", "library": LIBRARY.get(dtype, "cublas"), "dtype": dtype,
                       "m": m, "n": n, "k": k}, device)
        op.fn()
        torch.cuda.synchronize(device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            op.fn()
            torch.cuda.synchronize(device)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "trace.json")
            prof.export_chrome_trace(path)
            names = [_kernel_label(e) for e in load_gpu_events(path, device=torch.cuda.current_device())]
        return (";".join(names), "ok") if names else (None, "no_kernels")
    except Exception as exc:  # noqa: BLE001 (out of memory, unsupported shape, profiler: recorded, not fatal)
        return None, f"error:{type(exc).__name__}: {exc}"[:300]
    finally:
        del op
        torch.cuda.empty_cache()


# -- run -------------------------------------------------------------------------------------------

class _Sink:
    """All rows so far, rewritten to ``path`` (temporary file, then rename) at most every
    FLUSH_EVERY_S seconds and at the end: a run cut short leaves a readable table."""

    def __init__(self, path: str, meta: dict):
        self.path, self.meta, self.rows, self.last = path, meta, [], time.monotonic()

    def add(self, rows: list[dict]) -> None:
        self.rows.extend(rows)
        if time.monotonic() - self.last > FLUSH_EVERY_S:
            self.flush()

    def frame(self):
        import pandas as pd

        df = pd.DataFrame(self.rows, columns=list(COLUMNS))
        for key, value in self.meta.items():
            df[key] = value
        return df

    def flush(self) -> None:
        tmp = self.path + ".tmp"
        self.frame().to_parquet(tmp, index=False)
        os.replace(tmp, self.path)
        self.last = time.monotonic()


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(shapes: list[tuple], out: str, top: int, workspace_mib: float, fp8_workspace_mib: float, check: int,
        budget_s: float | None) -> dict:
    """Query every shape (then ``check`` of them under the profiler) into ``out``; the summary."""
    import torch

    t0 = time.monotonic()
    deadline = t0 + budget_s if budget_s else float("inf")
    lib, path = load_cublaslt()
    scales = None
    if hasattr(torch, "float8_e4m3fn"):
        scales = [torch.ones((), dtype=torch.float32, device="cuda") for _ in range(2)]  # kept alive below
    limits = {d: int((fp8_workspace_mib if d.startswith("fp8") else workspace_mib) * 2**20) for d in TYPES}
    lt = LtQuery(lib, top, limits, tuple(s.data_ptr() for s in scales) if scales else None)
    major, minor = torch.cuda.get_device_capability()
    meta = {"gpu_name": torch.cuda.get_device_name(), "sm": f"{major}{minor}",
            "cublaslt_version": int(lib.cublasLtGetVersion()), "cudart_version": int(lib.cublasLtGetCudartVersion()),
            "cuda_version": torch.version.cuda, "torch_version": torch.__version__, "cublaslt_path": path,
            "workspace_limit_mib": workspace_mib, "fp8_workspace_limit_mib": fp8_workspace_mib}
    print(f"cublaslt_query: {len(shapes)} shapes on {meta['gpu_name']} (sm{meta['sm']}), cuBLASLt "
          f"{meta['cublaslt_version']} from {path}, top {top}", flush=True)
    sink = _Sink(out, meta)
    queried = checked = 0
    stopped, query_s, agreement = None, None, None
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        q0 = time.monotonic()
        for shape in shapes:
            if time.monotonic() > deadline:
                stopped = "time budget"
                break
            sink.add(query_rows(lt, shape))
            queried += 1
        query_s = time.monotonic() - q0
        if check and stopped is None:
            where: dict[tuple, list[int]] = {}
            for i, r in enumerate(sink.rows):
                if r["status"] == "ok":
                    where.setdefault((r["m"], r["n"], r["k"], r["dtype"]), []).append(i)
            device = torch.device("cuda", torch.cuda.current_device())
            for shape in spread(list(where), check):
                if time.monotonic() > deadline:
                    stopped = "time budget"
                    break
                names, status = check_kernels(shape, device)
                for i in where[shape]:
                    sink.rows[i].update(kernel_names=names, check_status=status)
                checked += 1
                print(f"check {shape}: {status} {names}", flush=True)
        if checked:
            frame = sink.frame()
            try:
                agreement = compare_with_kernel_names(frame, frame[frame["kernel_names"].notna()])
            except Exception as exc:  # noqa: BLE001 (the rows are what matters; the score can be redone offline)
                agreement = {"error": f"{type(exc).__name__}: {exc}"}
    except KeyboardInterrupt as exc:
        stopped = f"interrupted ({exc})" if str(exc) else "interrupted"
    finally:
        signal.signal(signal.SIGTERM, previous)
        sink.flush()
        lt.close()
    elapsed = time.monotonic() - t0
    rank0 = [r for r in sink.rows if r["rank"] in (0, -1)]
    statuses: dict[str, int] = {}
    for r in rank0:
        key = r["status"] if not r["status"].startswith("error:") else "error"
        statuses[key] = statuses.get(key, 0) + 1
    tiles: dict[str, int] = {}
    for r in rank0:
        if r["status"] == "ok":
            tiles[r["tile"]] = tiles.get(r["tile"], 0) + 1
    summary = {"shapes": len(shapes), "queried": queried, "rows": len(sink.rows), "status": statuses,
               "checked": checked, "check_agreement": agreement, "stopped": stopped, "seconds": round(elapsed, 1),
               "shapes_per_s": round(queried / max(query_s or elapsed, 1e-9), 1),
               "top_rank0_tiles": dict(sorted(tiles.items(), key=lambda kv: -kv[1])[:10]), "out": out}
    errors = [r["status"] for r in rank0 if r["status"].startswith("error:")]
    if errors:
        summary["first_errors"] = list(dict.fromkeys(errors))[:5]
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m synperf.profile.cublaslt_query", description=__doc__.splitlines()[0])
    p.add_argument("--from-parquet", action="append", default=[], metavar="PATH",
                   help="synperf gemm table: its distinct (m, n, k, dtype) (repeatable)")
    p.add_argument("--shapes", action="append", default=[], metavar="PATH.jsonl",
                   help='lines {"m":..,"n":..,"k":..,"dtype":"bf16"} (repeatable)')
    p.add_argument("--random", type=int, default=0, metavar="N", help="add N log-uniform random shapes")
    p.add_argument("--random-dtype", choices=("bf16", "fp16", "fp8_e4m3"), default="bf16",
                   help="dtype of the --random shapes (fp8_e4m3: torch._scaled_mm's)")
    p.add_argument("--from-models", action="store_true",
                   help="add every GEMM (n, k) of the bundled models at TP 1-8, for m from 1 to 32768")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=4, help="heuristic results kept per shape")
    p.add_argument("--workspace-mib", type=float, default=WORKSPACE_MIB, help="workspace limit, bf16/fp16")
    p.add_argument("--fp8-workspace-mib", type=float, default=FP8_WORKSPACE_MIB, help="workspace limit, fp8")
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="run N shapes (spread over sizes) once under torch.profiler and record their kernels")
    p.add_argument("--time-budget-s", type=float, default=None)
    p.add_argument("--out", required=True, help="output parquet")
    p.add_argument("--compare", metavar="GEMM_PARQUET",
                   help="score rank 0 against the kernel names of a measured gemm table; without shapes to "
                        "query, scores an existing --out (no GPU needed)")
    args = p.parse_args(argv)
    shapes = []
    for reader, paths in ((shapes_from_parquet, args.from_parquet), (shapes_from_jsonl, args.shapes)):
        for path in paths:
            try:
                shapes += reader(path)
            except Exception as exc:  # noqa: BLE001 (an unreadable source is skipped, the others still run)
                print(f"{path}: skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
    shapes += random_shapes(args.random, args.seed, args.random_dtype) if args.random > 0 else []
    shapes += shapes_from_models() if args.from_models else []
    shapes = list(dict.fromkeys(shapes))
    if shapes:
        if args.top < 1:
            p.error("--top must be at least 1")
        try:
            summary = run(shapes, args.out, args.top, args.workspace_mib, args.fp8_workspace_mib, args.check,
                          args.time_budget_s)
        except Exception as exc:  # noqa: BLE001 (no GPU, libcublasLt or handle: nothing could be asked)
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "shapes": len(shapes)}), flush=True)
            return 1
        print(json.dumps(summary), flush=True)
    elif not args.compare:
        p.error("no shapes: give --from-parquet, --shapes, --random or --from-models")
    if args.compare:
        import pandas as pd

        try:
            query = pd.read_parquet(args.out)
            measured = pd.read_parquet(args.compare, columns=["m", "n", "k", "dtype", "kernel_names"])
        except (OSError, ValueError) as exc:
            print(f"--compare: cannot read the tables ({type(exc).__name__}: {exc})", file=sys.stderr)
            return 1
        compare_with_kernel_names(query, measured)
    return 0


if __name__ == "__main__":
    sys.exit(main())
