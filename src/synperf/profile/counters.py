"""Hardware counters of profiled cases through Nsight Compute (``synperf profile --counters``).

``ncu`` (``--clock-control none``, caches flushed before every replay pass, i.e. operands cold as in
the latency data) runs a worker process that, per case, builds the inputs and warms the op up
outside any NVTX range, then inside an NVTX range ``synperf_case`` launches a marker kernel
(``synperf_case_end`` with the case's index) followed by the op once. Only kernels inside the range
are profiled; the markers split the kernel rows back into cases.

Per kernel the metrics in ``METRIC_PATTERNS`` that this ncu knows are read: instructions per pipe
(tensor wgmma / mma, FMA, XU, LSU; sum over SMs and max over SMs), tensor-pipe active cycles,
DRAM bytes read/written, L2 bytes, shared-memory bytes and wavefronts, achieved occupancy and the
duration. The rows go to parquet (one row per kernel, the case JSON beside it).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

NVTX_RANGE = "synperf_case"
MARKER = "synperf_case_end"
# Base metric names (regex, matched against `ncu --query-metrics`), read as .sum and .max (busiest SM).
METRIC_PATTERNS = (
    r"sm__inst_executed_pipe_tensor_op_gmma", r"sm__inst_executed_pipe_tensor_op_hmma",
    r"sm__ops_path_tensor_src_(bf16_dst_fp32|fp16|fp8)",
)
# Read as .sum only (GPU-wide totals).
SUM_PATTERNS = (r"sm__inst_executed_pipe_(fma|xu|lsu)", r"sm__sass_data_bytes_mem_shared", r"dram__bytes_read",
                r"dram__bytes_write", r"lts__t_bytes")
SINGLE_METRICS = ("gpu__time_duration.sum", "sm__warps_active.avg.pct_of_peak_sustained_active",
                  "launch__grid_size", "launch__block_size")


def available_metrics(ncu: str) -> set[str]:
    out = subprocess.run([ncu, "--query-metrics"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip() and not line.startswith(("-", "Device"))}


def select_metrics(known: set[str]) -> list[str]:
    chosen: list[str] = []
    for pattern in METRIC_PATTERNS:
        for name in sorted(known):
            if re.fullmatch(pattern, name):
                chosen += [f"{name}.sum", f"{name}.max"]
    for pattern in SUM_PATTERNS:
        chosen += [f"{name}.sum" for name in sorted(known) if re.fullmatch(pattern, name)]
    return chosen + [m for m in SINGLE_METRICS if m.startswith("launch__") or m.split(".")[0] in known]


def parse_raw_csv(text: str) -> list[dict]:
    """ncu ``--csv --page raw`` output (after ncu's own log lines): one dict per kernel."""
    start = text.find('"ID"')
    if start < 0:
        return []
    rows = list(csv.reader(io.StringIO(text[start:])))
    header, body = rows[0], rows[2:]            # rows[1] holds the units
    return [dict(zip(header, r)) for r in body if len(r) == len(header)]


def split_by_marker(kernels: list[dict]) -> dict[int, list[dict]]:
    """Kernel rows grouped by the case index of the marker before them."""
    out: dict[int, list[dict]] = {}
    current = None
    for k in kernels:
        if MARKER in k.get("Kernel Name", ""):
            current = len(out)
            out[current] = []
        elif current is not None:
            out[current].append(k)
    return out


def _number(text: str):
    try:
        return float(text.replace(",", ""))
    except (AttributeError, ValueError):
        return None


# Libraries sampled per family (the ones whose kernels the decomposers model in detail and that need
# no JIT compilation per shape); MoE stages one kernel at a time under the engines' default configs.
SAMPLED = {"gemm": None, "attention": ("flash_attn2_torch_sdpa",), "moe": None,
           "rmsnorm": ("flashinfer", "triton"), "silu_and_mul": ("flashinfer", "triton"), "rope": ("flashinfer", "triton")}


PRIORITY = {"gemm": 2, "attention": 2}


def sample_cases(data_dir: str, per_family: int, seed: int = 0) -> list[dict]:
    """Up to ``per_family`` measured cases per family from a data/<gpu> folder (seeded sample),
    interleaved across families so that a run cut short by its time budget stays balanced."""
    import pandas as pd

    per: list[list[dict]] = []
    for family, libraries in SAMPLED.items():
        path = Path(data_dir) / f"{family}.parquet"
        if not path.exists():
            continue
        d = pd.read_parquet(path, columns=["case_json", "library"] + (["stage", "config"] if family == "moe" else []))
        if libraries:
            d = d[d["library"].isin(libraries)]
        if family == "moe":
            d = d[d["stage"].isin(["w13", "w2"]) & ~d["config"].astype(str).str.contains("BLOCK_SIZE_K\":(?:128|256)")]
        d = d.sample(n=min(per_family, len(d)), random_state=seed)
        cases = [json.loads(c) for c in d["case_json"]]
        weight = PRIORITY.get(family, 1)        # interleave gemm/attention at twice the rate
        per += [cases[i::weight] for i in range(weight)]
    return [c for group in itertools.zip_longest(*per) for c in group if c is not None]


def worker(cases_path: str, budget_s: float | None) -> int:
    import torch

    from .harness import synperf_case_end
    from .ops import UnsupportedCase, build_op

    dev = torch.device("cuda")
    flag = torch.zeros(1, dtype=torch.int32, device=dev)
    start = time.time()
    done = []
    for i, line in enumerate(Path(cases_path).read_text().splitlines()):
        if budget_s and time.time() - start > budget_s:
            break
        case = json.loads(line)
        try:
            op = build_op(case, dev)
            op.fn()
            torch.cuda.synchronize()
        except (UnsupportedCase, RuntimeError, ValueError) as exc:
            print(f"counters: case {i} skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        torch.cuda.nvtx.range_push(NVTX_RANGE)
        synperf_case_end[(1,)](flag, i)
        op.fn()
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()
        done.append(i)
        del op
    Path(cases_path + ".done").write_text(json.dumps(done))
    return 0


def run_counters(cases: list[dict], out_path: str, budget_s: float | None = None, ncu: str | None = None) -> dict:
    """Profile ``cases`` under ncu; write one parquet row per kernel to ``out_path``."""
    import pandas as pd

    ncu = ncu or shutil.which("ncu") or "/usr/local/cuda/bin/ncu"
    metrics = select_metrics(available_metrics(ncu))
    work = Path(out_path).with_suffix(".work")
    work.mkdir(parents=True, exist_ok=True)
    cases_file = work / "cases.jsonl"
    cases_file.write_text("".join(json.dumps(c, sort_keys=True) + "\n" for c in cases))
    raw = work / "raw.csv"
    cmd = [ncu, "--clock-control", "none", "--nvtx", "--nvtx-include", f"{NVTX_RANGE}/", "--metrics", ",".join(metrics),
           "--csv", "--page", "raw", "--log-file", str(raw),
           sys.executable, "-m", "synperf.profile.counters", "worker", str(cases_file)]
    if budget_s:
        cmd += ["--budget-s", str(budget_s)]
    t0 = time.time()
    proc = subprocess.run(cmd, env=os.environ.copy())
    kernels = parse_raw_csv(raw.read_text(errors="replace")) if raw.exists() else []
    done = json.loads((work / "cases.jsonl.done").read_text()) if (work / "cases.jsonl.done").exists() else []
    groups = split_by_marker(kernels)
    rows = []
    for ordinal, ks in groups.items():
        if ordinal >= len(done):
            break
        case = cases[done[ordinal]]
        for j, k in enumerate(ks):
            row = {"case_json": json.dumps(case, sort_keys=True), "family": case["family"],
                   "library": case.get("library"), "kernel_index": j, "kernel_name": k.get("Kernel Name"),
                   "grid": k.get("Grid Size"), "block": k.get("Block Size")}
            row.update({m: _number(k.get(m)) for m in metrics})
            rows.append(row)
    if rows:
        pd.DataFrame(rows).to_parquet(out_path, index=False, compression="zstd")
    return {"ncu_rc": proc.returncode, "cases": len(cases), "cases_profiled": len(groups), "kernel_rows": len(rows),
            "metrics": metrics, "seconds": round(time.time() - t0, 1)}


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "worker":
        budget = float(args[args.index("--budget-s") + 1]) if "--budget-s" in args else None
        return worker(args[1], budget)
    import argparse

    p = argparse.ArgumentParser(prog="python -m synperf.profile.counters")
    p.add_argument("--input", default=None, help="cases.jsonl (default: a sample of --data)")
    p.add_argument("--data", default="data/h200", help="measured data folder to sample cases from")
    p.add_argument("--per-family", type=int, default=300)
    p.add_argument("--out", required=True, help="output parquet")
    p.add_argument("--time-budget-s", type=float, default=None)
    a = p.parse_args(args)
    cases = ([json.loads(line) for line in Path(a.input).read_text().splitlines() if line.strip()] if a.input
             else sample_cases(a.data, a.per_family))
    print(json.dumps(run_counters(cases, a.out, a.time_budget_s)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
