"""zksainx/pipeweave kernel measurements -> synperf records.

- ``moe_tile_sweeps/moe_dse_<GPU>_{99,99_5,top3}.csv``: the Triton fused-MoE kernel (bf16), w13
  pass only (``weight_type`` == w13), timed under explicit tile configurations. Columns: M (tokens),
  E (experts), topk, H (hidden), N (per-expert intermediate size; w13 is [E, 2N, H]),
  BLOCK_SIZE_M/N/K, GROUP_SIZE_M, num_warps, num_stages, avg_duration (µs). Routing is
  round-robin (the cases say ``routing: balanced``). The three files per GPU are overlapping selections
  of one sweep (configs within 99 % / 99.5 % of the best, and the top 3): a row identical to one
  already read (same GPU, shape, config and duration) is dropped as a duplicate.
- ``gemm_fp8_train.csv``: block-scaled FP8 GEMM (vLLM CUTLASS), M, N, K, avg_duration (µs),
  hardware (the CUDA device name).

Cache state: warm (repeated launches of the same kernel with no L2 flush in between).
"""

from __future__ import annotations

import os
import re
from typing import Iterator

from synperf.importers import CaseValidator, Report, emit, read_csv_rows

SOURCE = "pipeweave"
CACHE = "warm"

# File-name GPU tags of the MoE sweeps -> synperf GPU ids (their hardware/*.json names the device).
MOE_GPUS = {"A100": "a100-sxm4-80gb", "A40": "a40", "H20": "h20", "H800": "h800", "L40": "l40",
            "PRO6000S": "rtx-pro-6000-blackwell-server"}
CONFIG_COLUMNS = ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages")
_MOE_FILE = re.compile(r"^moe_dse_(?P<gpu>.+?)_(?P<sel>99|99_5|top3)\.csv$")


def _gpu_of_device(name: str, cache: dict) -> str | None:
    if name not in cache:
        from synperf.errors import SynperfError
        from synperf.gpu import resolve_gpu
        try:
            cache[name] = resolve_gpu(name).id
        except SynperfError:
            cache[name] = None
    return cache[name]


def iter_records(path: str, report: Report, *, limit: int | None = None) -> Iterator[dict]:
    if not os.path.isdir(path):
        from synperf.errors import SynperfError
        raise SynperfError(f"no such folder: {path}")
    validator = CaseValidator()
    sweeps = os.path.join(path, "moe_tile_sweeps")
    seen: set = set()
    if os.path.isdir(sweeps):
        for name in sorted(os.listdir(sweeps)):
            if not name.endswith(".csv"):
                continue
            if limit is not None and report.read >= limit:
                return
            yield from _moe_file(os.path.join(sweeps, name), name, report, validator, seen, limit)
    gemm = os.path.join(path, "gemm_fp8_train.csv")
    if os.path.isfile(gemm) and (limit is None or report.read < limit):
        yield from _gemm_file(gemm, report, validator, limit)


def _rows(file: str, report: Report, limit: int | None) -> list[dict]:
    rows = read_csv_rows(file)
    if limit is not None:
        rows = rows[: max(0, limit - report.read)]
    report.read += len(rows)
    return rows


def _moe_file(file, name, report, validator, seen, limit) -> Iterator[dict]:
    rows = _rows(file, report, limit)
    m = _MOE_FILE.match(name)
    gpu = MOE_GPUS.get(m.group("gpu")) if m else None
    if gpu is None:
        report.drop(f"pipeweave MoE file {name} (GPU tag not mapped)", len(rows))
        return
    case_cols = {k: [] for k in ("tokens", "hidden", "intermediate", "num_experts", "topk", "config")}
    lat = []
    for row in rows:
        us = _latency_us(row, report)
        if us is None:
            continue
        if row.get("weight_type") != "w13":
            report.drop(f"pipeweave MoE weight_type {row.get('weight_type')!r} not w13")
            continue
        config = {k: int(row[k]) for k in CONFIG_COLUMNS}
        key = (gpu, row["M"], row["E"], row["topk"], row["H"], row["N"], tuple(config.values()), round(us, 4))
        if key in seen:
            report.drop("duplicate row (same measurement in another selection file)")
            continue
        seen.add(key)
        case_cols["tokens"].append(int(row["M"]))
        case_cols["hidden"].append(int(row["H"]))
        case_cols["intermediate"].append(int(row["N"]))
        case_cols["num_experts"].append(int(row["E"]))
        case_cols["topk"].append(int(row["topk"]))
        case_cols["config"].append(config)
        lat.append(us)
    if not lat:
        return
    case = {"family": "moe", "dtype": "bf16", "library": "triton_fused_moe", "tokens": case_cols["tokens"],
            "hidden": case_cols["hidden"], "intermediate": case_cols["intermediate"],
            "num_experts": case_cols["num_experts"], "topk": case_cols["topk"], "stage": "w13",
            "config": case_cols["config"], "routing": "balanced"}
    yield from emit(case, {"gpu": gpu, "kernel_source": "pipeweave Triton fused_moe_kernel (w13)"}, lat,
                    report, validator, source=SOURCE, cache=CACHE, extra={"file": name})


def _gemm_file(file, report, validator, limit) -> Iterator[dict]:
    rows = _rows(file, report, limit)
    gpus: dict = {}
    cols = {"gpu": [], "m": [], "n": [], "k": []}
    lat = []
    for row in rows:
        gpu = _gpu_of_device(row.get("hardware", ""), gpus)
        if gpu is None:
            report.drop(f"device {row.get('hardware')!r} has no synperf GPU spec")
            continue
        us = _latency_us(row, report)
        if us is None:
            continue
        cols["gpu"].append(gpu)
        for k in ("m", "n", "k"):
            cols[k].append(int(row[k.upper()]))
        lat.append(us)
    if not lat:
        return
    case = {"family": "gemm", "dtype": "fp8_e4m3", "library": "fp8_block", "m": cols["m"], "n": cols["n"],
            "k": cols["k"]}
    yield from emit(case, {"gpu": cols["gpu"], "kernel_source": "vLLM CUTLASS block-scaled FP8"}, lat,
                    report, validator, source=SOURCE, cache=CACHE, extra={"file": os.path.basename(file)})


def _latency_us(row: dict, report) -> float | None:
    """avg_duration (already in us) when positive; otherwise the row is dropped and counted."""
    try:
        us = float(row["avg_duration"])
    except (KeyError, TypeError, ValueError):
        us = float("nan")
    if not us > 0:
        report.drop("latency <= 0 or missing")
        return None
    return us
