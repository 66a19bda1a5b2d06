"""Hardware-counter check: the analytical demand of each profiled case against its Nsight Compute
counters (``synperf.profile.counters`` writes them; docs/counters.md has the method and numbers).

Per case, the modelled launches (``predict.demand_for``) are paired with the measured kernels by
kind and order (``match_kernels``), and these are compared, analytical over measured:

- tensor FLOP, whole call: demand ``tensor`` row summed over launches vs ``sm__ops_path_tensor_*``
  ``.sum`` summed over kernels (the counter counts FLOP, 2 per multiply-add, of the MMAs executed:
  padded tiles included, as the demand counts them);
- tensor FLOP of the busiest SM: the largest per-SM demand of any launch vs the largest ``.max``;
- DRAM bytes: compulsory read + write (cold) vs ``dram__bytes_read + dram__bytes_write``, and the
  reads alone;
- XU and FMA pipe ops vs the pipes' warp instructions x 32, and shared bytes vs
  ``sm__sass_data_bytes_mem_shared`` (like for like only in part: see ``PIPE_NOTES``).

Diagnostics that separate the decomposer from the choices around it: for GEMM the decomposition
of the kernel cuBLAS actually ran (tile, cluster, split-K read from the profiled name and grid),
with and without cluster padding; for MoE the tensor FLOP rescaled from the decomposer's balanced
routing to the harness's uniform random routing; for heterogeneous grids the busiest SM under an
exact earliest-free-slot list schedule instead of ``schedule.py``'s batched placement.

``python -m synperf.counter_check data/h200-system/counters.parquet [--json]``
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import re
import sys
from dataclasses import dataclass, field

import numpy as np

from synperf.cases import parse_case
from synperf.demand import KernelDemand, LaunchDemand, dram_traffic, kernel_demand
from synperf.gpu.registry import resolve_gpu
from synperf.predict import demand_for

TENSOR_METRICS = ("sm__ops_path_tensor_src_bf16_dst_fp32", "sm__ops_path_tensor_src_fp16",
                  "sm__ops_path_tensor_src_fp8")
REQUIRED_COLUMNS = ("case_json", "family", "kernel_index", "kernel_name", "grid", "block",
                    "dram__bytes_read.sum", "dram__bytes_write.sum")
WARP = 32
# Targets of the validation issue: tolerance on |analytical / measured - 1|, for GEMM and attention.
TARGETS = {"tensor_total": 0.01, "tensor_sm": 0.05, "dram": 0.10}
TARGET_FAMILIES = ("gemm", "attention")
TOLERANCES = (0.01, 0.05, 0.10)
# cudaMemsetAsync is no kernel launch: ncu never profiles it, so a modelled memset has no partner.
NOT_PROFILED_KINDS = frozenset({"memset"})
# Every cold kernel reads a little from DRAM besides its operands (code, constants, parameters after
# the flush): 5-90 KB per kernel on the H200 data. Differences below this per kernel are that.
DRAM_FLOOR_BYTES_PER_KERNEL = 128 * 1024
METRICS = ("tensor_total", "tensor_sm", "dram", "dram_read", "xu", "shared", "fma")
PIPE_NOTES = {
    "xu": "ops vs XU warp instructions x 32 (exp2, rcp, log2, rsqrt; the XU pipe also runs conversions)",
    "shared": "operand bytes the MMAs read vs SASS shared-memory data bytes: like for like only for "
              "mma.sync kernels (wgmma reads its shared operands without SASS loads)",
    "fma": "FP32 math ops vs FMA-pipe warp instructions x 32: not like for like (the pipe also runs "
           "integer multiply-adds, and the demand counts no address arithmetic)",
}


# ------------------------------------------------------------------------------------------ load
def load_counters(path: str):
    """The counters parquet with per-kernel totals added: ``tensor_sum``/``tensor_max`` (FLOP over
    the tensor paths; a kernel runs one path, so summing the paths' ``.max`` is its busiest SM),
    ``dram_read``/``dram_write`` (bytes), ``fma_ops``/``xu_ops`` (warp instructions x 32) and
    ``shared_bytes``."""
    import pandas as pd

    df = pd.read_parquet(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a counters table (missing {', '.join(missing)})")

    def col(name: str):
        return df[name].astype(float) if name in df.columns else pd.Series(0.0, index=df.index)

    df = df.copy()
    df["tensor_sum"] = sum(col(f"{m}.sum") for m in TENSOR_METRICS)
    df["tensor_max"] = sum(col(f"{m}.max") for m in TENSOR_METRICS)
    df["dram_read"] = col("dram__bytes_read.sum")
    df["dram_write"] = col("dram__bytes_write.sum")
    df["fma_ops"] = WARP * col("sm__inst_executed_pipe_fma.sum")
    df["xu_ops"] = WARP * col("sm__inst_executed_pipe_xu.sum")
    df["shared_bytes"] = col("sm__sass_data_bytes_mem_shared.sum")
    return df.sort_values(["case_json", "kernel_index"], kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------------- matching
def kernel_kind(family: str, name: str) -> str:
    """Role of a kernel (modelled launch name or profiled kernel name) within its call."""
    low = name.lower()
    if low.startswith(("memset", "[gpu_memset]")):
        return "memset"
    if "combine" in low or "mergestates" in low:
        return "combine"
    if "blocksparseindices" in low:
        return "page_offsets"
    if family == "gemm" and "reduce" in low:
        return "reduce"
    if family == "moe":
        for key, kind in (("moe_align", "align"), ("fused_moe", "gemm"), ("silu", "activation"),
                          ("reduce", "topk_sum")):
            if key in low:
                return kind
    return "main"


def match_kernels(family: str, modelled: list[str], measured: list[str]) -> list[tuple[int | None, int | None, str]]:
    """Pair modelled launches with measured kernels: the i-th of a kind with the i-th of the same
    kind. Returns (modelled index or None, measured index or None, kind), in launch order."""
    mk = [kernel_kind(family, n) for n in modelled]
    pk = [kernel_kind(family, n) for n in measured]
    pairs: list[tuple[int | None, int | None, str]] = []
    for kind in dict.fromkeys(mk + pk):
        a = [i for i, k in enumerate(mk) if k == kind]
        b = [i for i, k in enumerate(pk) if k == kind]
        for j in range(max(len(a), len(b))):
            pairs.append((a[j] if j < len(a) else None, b[j] if j < len(b) else None, kind))
    return sorted(pairs, key=lambda p: (p[1] if p[1] is not None else math.inf,
                                        p[0] if p[0] is not None else math.inf))


# ------------------------------------------------------------------------------ per-launch values
def _launch_values(ld: LaunchDemand, gpu, cache: str) -> dict[str, float]:
    launch = ld.launch
    read, write = dram_traffic(launch, gpu, cache)
    return {"tensor_total": ld.row("tensor").gpu_demand, "tensor_sm": ld.row("tensor").sm_demand,
            "dram": read + write, "dram_read": read, "dram_write": write,
            "fma": ld.row("fma").gpu_demand, "xu": ld.row("xu").gpu_demand, "shared": ld.row("shared").gpu_demand}


def _kernel_values(row) -> dict[str, float]:
    return {"tensor_total": row.tensor_sum, "tensor_sm": row.tensor_max, "dram": row.dram_read + row.dram_write,
            "dram_read": row.dram_read, "dram_write": row.dram_write, "fma": row.fma_ops, "xu": row.xu_ops,
            "shared": row.shared_bytes}


def _combine(values: list[dict[str, float]]) -> dict[str, float]:
    out = {k: float(sum(v[k] for v in values)) for k in values[0]} if values else {}
    if values:
        out["tensor_sm"] = float(max(v["tensor_sm"] for v in values))
    return out


def ratio(analytical: float, measured: float) -> float:
    """analytical / measured; NaN where neither has any (nothing to compare)."""
    if measured:
        return float(analytical / measured)
    return math.inf if analytical else math.nan


def _grid(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", str(text)))


# ------------------------------------------------------------------------------------ diagnostics
def list_schedule_busiest_tensor(ld: LaunchDemand, gpu) -> float:
    """Tensor FLOP of the busiest SM when every CTA, in blockIdx order, goes to the CTA slot that
    frees first (exact list scheduling; ``schedule.py`` places long heterogeneous grids in batches
    of runs, which is cheaper and coarser). Persistent and uniform launches keep their schedule."""
    from synperf.schedule import _per_sm_rates

    launch = ld.launch
    if launch.persistent_ctas is not None or np.count_nonzero(launch.counts) <= 1:
        return ld.row("tensor").sm_demand
    n_sm = gpu.sm_count
    slots = n_sm * ld.schedule.occupancy.ctas_per_sm
    classes = launch.task_classes()
    durations = (launch.demand / _per_sm_rates(gpu, launch)).max(axis=1)[classes].tolist()
    tensor = launch.demand[classes, 0]
    sm_of_task = np.empty(classes.size, dtype=np.int64)
    first = min(slots, classes.size)
    sm_of_task[:first] = np.arange(first) % n_sm
    heap = [(durations[t], t) for t in range(first)]        # (frees at, slot); slot s sits on SM s % n_sm
    heapq.heapify(heap)
    for t in range(first, classes.size):
        free, slot = heap[0]
        heapq.heapreplace(heap, (free + durations[t], slot))
        sm_of_task[t] = slot % n_sm
    return float(np.bincount(sm_of_task, weights=tensor, minlength=n_sm).max())


def _tile_text(cfg) -> str:
    return (f"{cfg.tile_m}x{cfg.tile_n}x{cfg.tile_k} cl{cfg.cluster_m}x{cfg.cluster_n} split{cfg.split_k}"
            f"{' streamK' if cfg.stream_k else ''}{' persistent' if cfg.persistent_ctas else ''}")


def _gemm_profiled(case, kernels, gpu) -> dict:
    """The decomposer on the kernel cuBLAS ran: its TileConfig read back from the profiled names
    and grids (``gemm.config_from_profile``), with and without the cluster-padding CTAs."""
    from synperf.kernels import gemm

    call = case.call
    cfg = gemm.config_from_profile(call, list(kernels.kernel_name), [_grid(g) for g in kernels.grid],
                                   [_grid(b) for b in kernels.block], [0] * len(kernels))
    chosen = gemm.choose_config(call, gpu)
    key = ("tile_m", "tile_n", "tile_k", "split_k", "stream_k", "cluster_m", "cluster_n")
    out = {"kernel_as_profiled": all(getattr(cfg, k) == getattr(chosen, k) for k in key)
           and (cfg.persistent_ctas is None) == (chosen.persistent_ctas is None),
           "profiled_tile": _tile_text(cfg), "modelled_tile": _tile_text(chosen)}
    measured_total, measured_sm = float(kernels.tensor_sum.sum()), float(kernels.tensor_max.max())
    for suffix, padding in (("profiled", True), ("profiled_nopad", False)):
        kd = kernel_demand(gemm.launches_for(call, cfg, gpu, cluster_padding=padding), gpu, case.cache)
        total = sum(ld.row("tensor").gpu_demand for ld in kd.launches)
        out[f"tensor_total_ratio_{suffix}"] = ratio(total, measured_total)
        out[f"tensor_sm_ratio_{suffix}"] = ratio(max(ld.row("tensor").sm_demand for ld in kd.launches), measured_sm)
    return out


def _moe_balanced(case, model_tensor: float, measured_tensor: float) -> dict:
    """The tensor ratio had the decomposer laid the blocks out for round-robin routing instead."""
    from synperf.kernels import moe

    call = case.call
    if call.stage not in ("w13", "w2"):
        return {}
    bm = call.config.block_m
    modelled = moe.padding(call.tokens, call.num_experts, call.topk, bm, call.routing).active_m
    balanced = moe.padding(call.tokens, call.num_experts, call.topk, bm, "balanced").active_m
    return {"tensor_total_ratio_balanced_routing": ratio(model_tensor * balanced / modelled, measured_tensor)}


def dram_note(a: dict, m: dict, n_kernels: int) -> str:
    """Why the DRAM bytes differ, or 'within 10 %'."""
    r = ratio(a["dram"], m["dram"])
    if abs(r - 1.0) <= TARGETS["dram"]:
        return "within 10 %"
    if abs(a["dram"] - m["dram"]) <= DRAM_FLOOR_BYTES_PER_KERNEL * max(1, n_kernels):
        return "per-kernel floor (code/constants after the flush)"
    if m["dram_read"] > (1.0 + TARGETS["dram"]) * a["dram_read"]:
        return "operand re-reads (working set beyond L2)"
    reads_agree = abs(ratio(a["dram_read"], m["dram_read"]) - 1.0) <= TARGETS["dram"]
    if m["dram_write"] < a["dram_write"] and reads_agree:
        return "writes still in L2 at kernel end"
    if m["dram_write"] > a["dram_write"] and reads_agree:
        return "writes evicted before kernel end"
    return "other"


def case_label(obj: dict) -> str:
    skip = {"family", "library", "cache", "kv_cache_dtype", "page_size", "id"}
    parts = [obj.get("library", "")]
    for key, value in obj.items():
        if key in skip:
            continue
        if isinstance(value, dict):
            value = "{" + ",".join(f"{k.replace('BLOCK_SIZE_', '')}={v}" for k, v in value.items()) + "}"
        parts.append(f"{key}={value}")
    return " ".join(parts)


# ------------------------------------------------------------------------------------- per case
@dataclass
class CaseResult:
    row: dict
    kernels: list[dict] = field(default_factory=list)


def analyse_case(case_json: str, kernels, gpu) -> CaseResult:
    """One case: its measured kernel rows (in kernel_index order) against its demand."""
    obj = json.loads(case_json)
    case = parse_case(obj)
    demand: KernelDemand = demand_for(case, gpu)
    launches = list(demand.launches)
    modelled = [_launch_values(ld, gpu, case.cache) for ld in launches]
    measured = [_kernel_values(row) for row in kernels.itertuples()]
    pairs = match_kernels(case.family, [ld.launch.name for ld in launches], list(kernels.kernel_name))
    kernel_rows, model_kept, unmatched = [], [], []
    for mi, ki, kind in pairs:
        if mi is not None and (ki is not None or kind not in NOT_PROFILED_KINDS):
            model_kept.append(modelled[mi])
        if mi is None or ki is None:
            side = "measured only" if mi is None else "modelled only"
            unmatched.append(f"{kind} ({side})")
        a = modelled[mi] if mi is not None else None
        m = measured[ki] if ki is not None else None
        launch = launches[mi].launch if mi is not None else None
        krow = {"case_json": case_json, "family": case.family, "kind": kind,
                "modelled": launch.name if launch else None,
                "measured": kernels.kernel_name.iloc[ki] if ki is not None else None,
                "modelled_ctas": (launch.persistent_ctas or launch.num_tasks) if launch else None,
                "measured_ctas": (int(kernels.launch__grid_size.iloc[ki])
                                  if ki is not None and "launch__grid_size" in kernels else None)}
        if a is not None and m is not None:
            for metric in ("tensor_total", "tensor_sm", "dram", "dram_read"):
                krow[f"{metric}_ratio"] = ratio(a[metric], m[metric])
        kernel_rows.append(krow)
    a, m = _combine(model_kept), _combine(measured)
    row = {"case_json": case_json, "family": case.family, "library": case.library, "dtype": case.dtype,
           "label": case_label(obj), "modelled_kernels": len(launches), "measured_kernels": len(measured),
           "unmatched": "; ".join(unmatched)}
    # A pipe the demand leaves empty is not compared (the counter then sees conversions, integer
    # work, ...), nor shared bytes of wgmma/tcgen05 kernels (their MMAs read shared memory directly).
    sass_shared = all(ld.launch.tensor_path == "mma" for ld in launches)
    for metric in METRICS:
        row[f"{metric}_model"], row[f"{metric}_measured"] = a[metric], m[metric]
        comparable = metric not in PIPE_NOTES or (a[metric] > 0 and (metric != "shared" or sass_shared))
        row[f"{metric}_ratio"] = ratio(a[metric], m[metric]) if comparable else math.nan
    row["dram_write_model"], row["dram_write_measured"] = a["dram_write"], m["dram_write"]
    row["dram_note"] = dram_note(a, m, len(measured))
    busiest = max(list_schedule_busiest_tensor(ld, gpu) for ld in launches)
    row["tensor_sm_ratio_list_schedule"] = ratio(busiest, m["tensor_sm"])
    if case.family == "gemm":
        row.update(_gemm_profiled(case, kernels, gpu))
    if case.family == "moe":
        row.update(_moe_balanced(case, a["tensor_total"], m["tensor_total"]))
    return CaseResult(row, kernel_rows)


def case_table(counters, gpu_id: str | None = None):
    """(cases, kernels) DataFrames: one row per case and one per kernel pair."""
    import pandas as pd

    if gpu_id is None:
        ids = counters["gpu"].dropna().unique() if "gpu" in counters.columns else []
        if len(ids) != 1:
            raise ValueError("give the GPU id: the table names none, or more than one")
        gpu_id = str(ids[0])
    gpu = resolve_gpu(gpu_id)
    rows, kernels = [], []
    for case_json, group in counters.groupby("case_json", sort=False):
        result = analyse_case(case_json, group.sort_values("kernel_index"), gpu)
        rows.append(result.row)
        kernels += result.kernels
    return pd.DataFrame(rows), pd.DataFrame(kernels)


# -------------------------------------------------------------------------------------- summary
def _within(ratios, tol: float) -> float:
    r = np.asarray(ratios, dtype=float)
    r = r[~np.isnan(r)]
    return float(np.mean(np.abs(r - 1.0) <= tol)) if r.size else math.nan


def summarise(series) -> dict:
    r = np.asarray(series, dtype=float)
    r = r[~np.isnan(r)]
    out = {"n": int(r.size), "median": float(np.median(r)) if r.size else math.nan}
    for tol in TOLERANCES:
        out[f"within_{round(tol * 100)}pct"] = _within(r, tol)
    return out


def family_summary(cases, worst: int = 3) -> list[dict]:
    """Per family and metric: cases compared, median ratio, shares within 1/5/10 %, the target
    (GEMM and attention) and whether it is met, and the worst cases by |log ratio|."""
    out = []
    for family, group in cases.groupby("family", sort=True):
        for metric in (*METRICS, "tensor_total_profiled", "tensor_sm_profiled", "tensor_total_profiled_nopad",
                       "tensor_sm_list_schedule", "tensor_total_balanced_routing"):
            column = {"tensor_total_profiled": "tensor_total_ratio_profiled",
                      "tensor_sm_profiled": "tensor_sm_ratio_profiled",
                      "tensor_total_profiled_nopad": "tensor_total_ratio_profiled_nopad",
                      "tensor_sm_list_schedule": "tensor_sm_ratio_list_schedule",
                      "tensor_total_balanced_routing": "tensor_total_ratio_balanced_routing"}.get(metric, f"{metric}_ratio")
            if column not in group or group[column].isna().all():
                continue
            entry = {"family": family, "metric": metric, "cases": int(len(group)), **summarise(group[column])}
            base = metric.split("_profiled")[0].split("_list")[0].split("_random")[0]
            tol = TARGETS.get(base)
            entry["target"] = tol if family in TARGET_FAMILIES else None
            if entry["target"] is not None:
                entry["target_share"] = entry[f"within_{round(tol * 100)}pct"]
            valid = group[~group[column].isna()]
            order = np.argsort(-np.abs(np.log(np.clip(valid[column].to_numpy(dtype=float), 1e-12, 1e12))), kind="stable")
            entry["worst"] = [{"label": valid["label"].iloc[i], "ratio": float(valid[column].iloc[i]),
                               **({"dram_note": valid["dram_note"].iloc[i]} if base == "dram" else {})}
                              for i in order[:worst]]
            out.append(entry)
    return out


# ------------------------------------------------------------------------------------- rendering
def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}"


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f} %"


def render_markdown(cases, kernels, summary: list[dict], source: str = "") -> str:
    by = {(s["family"], s["metric"]): s for s in summary}
    families = sorted(cases["family"].unique())
    lines = [f"# Hardware counters vs analytical demand ({source or 'counters'})", "",
             f"{len(cases)} cases, {int(cases['measured_kernels'].sum())} profiled kernels. Ratios are analytical / "
             "measured; 'within' = |ratio - 1| at most 1 / 5 / 10 %.", "",
             "## Per family, as predicted (`demand_for`)", "",
             "| family | cases | tensor total: median | within 1 % | busiest-SM tensor: median | within 5 % "
             "| DRAM r+w: median | within 10 % | DRAM read: median | within 10 % |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for f in families:
        t, s, d, r = (by.get((f, k), {}) for k in ("tensor_total", "tensor_sm", "dram", "dram_read"))
        lines.append(f"| {f} | {int((cases.family == f).sum())} | {_fmt(t.get('median'))} | {_pct(t.get('within_1pct'))} "
                     f"| {_fmt(s.get('median'))} | {_pct(s.get('within_5pct'))} | {_fmt(d.get('median'))} "
                     f"| {_pct(d.get('within_10pct'))} | {_fmt(r.get('median'))} | {_pct(r.get('within_10pct'))} |")
    lines += ["", "## Targets (GEMM and attention)", ""]
    for f in TARGET_FAMILIES:
        for metric, label in (("tensor_total", "tensor total within 1 %"), ("tensor_sm", "busiest SM within 5 %"),
                              ("dram", "DRAM within 10 %")):
            e = by.get((f, metric))
            if e:
                lines.append(f"- {f}, {label}: {_pct(e['target_share'])} of {e['n']} cases")
    g = cases[cases.family == "gemm"]
    if len(g) and "tensor_total_ratio_profiled" in g:
        same = g["kernel_as_profiled"].astype(bool)
        lines += ["", "## GEMM: the decomposer on the kernel cuBLAS ran", "",
                  f"The tile choice (nearest profiled shapes) picked the profiled kernel for {int(same.sum())} of "
                  f"{len(g)} cases. Decomposing the profiled kernel itself (tile, cluster, split-K from its name "
                  f"and grid) separates the decomposition from the choice (predictions count the cluster "
                  f"padding; 'no padding' is the decomposition without it):", "",
                  "| decomposition | tensor total: median | within 1 % | busiest SM: median | within 5 % |",
                  "|---|---|---|---|---|"]
        for name, tot, sm in (("as predicted (chosen kernel)", "tensor_total_ratio", "tensor_sm_ratio"),
                              ("as predicted, where the chosen kernel is the profiled one", None, None),
                              ("profiled kernel, cluster padding not counted", "tensor_total_ratio_profiled_nopad",
                               "tensor_sm_ratio_profiled_nopad"),
                              ("profiled kernel, cluster padding counted", "tensor_total_ratio_profiled",
                               "tensor_sm_ratio_profiled")):
            sub = g[same] if tot is None else g
            tot, sm = tot or "tensor_total_ratio", sm or "tensor_sm_ratio"
            a, b = summarise(sub[tot]), summarise(sub[sm])
            lines.append(f"| {name} ({len(sub)}) | {_fmt(a['median'])} | {_pct(a['within_1pct'])} | {_fmt(b['median'])} "
                         f"| {_pct(b['within_5pct'])} |")
    a = cases[cases.family == "attention"]
    if len(a):
        s0, s1 = summarise(a["tensor_sm_ratio"]), summarise(a["tensor_sm_ratio_list_schedule"])
        lines += ["", "## Attention: busiest SM under an exact list schedule", "",
                  f"`schedule.py` places long heterogeneous grids in batches of runs; placing every CTA on the slot "
                  f"that frees first gives busiest-SM ratio median {_fmt(s1['median'])}, {_pct(s1['within_5pct'])} "
                  f"within 5 % (as predicted: {_fmt(s0['median'])}, {_pct(s0['within_5pct'])})."]
    mo = cases[cases.family == "moe"]
    if len(mo) and "tensor_total_ratio_balanced_routing" in mo:
        s0, s1 = summarise(mo["tensor_total_ratio"]), summarise(mo["tensor_total_ratio_balanced_routing"])
        lines += ["", "## MoE: routing", "",
                  f"The harness routes tokens at random and the decomposer lays the blocks out for a typical random "
                  f"draw: tensor ratio median {_fmt(s0['median'])}, {_pct(s0['within_5pct'])} within 5 %. Laid out "
                  f"round-robin (balanced) instead: median {_fmt(s1['median'])}, {_pct(s1['within_5pct'])}."]
    lines += ["", "## Other pipes (information, not targets)", "",
              "| family | XU: median | within 10 % | shared: median | within 10 % | FMA: median |", "|---|---|---|---|---|---|"]
    for f in families:
        x, sh, fm = (by.get((f, k), {}) for k in ("xu", "shared", "fma"))
        lines.append(f"| {f} | {_fmt(x.get('median'))} | {_pct(x.get('within_10pct'))} | {_fmt(sh.get('median'))} "
                     f"| {_pct(sh.get('within_10pct'))} | {_fmt(fm.get('median'))} |")
    lines += [""] + [f"- {k}: {v}" for k, v in PIPE_NOTES.items()]
    lines += ["", "## DRAM: why cases differ", "", "| family | " + " | ".join(_DRAM_NOTES) + " |",
              "|---|" + "---|" * len(_DRAM_NOTES)]
    for f in families:
        notes = cases[cases.family == f]["dram_note"].value_counts()
        lines.append(f"| {f} | " + " | ".join(str(int(notes.get(n, 0))) for n in _DRAM_NOTES) + " |")
    lines += ["", "## Worst cases", ""]
    for f in families:
        for metric in ("tensor_total", "tensor_sm", "dram"):
            e = by.get((f, metric))
            if not e or not e["worst"] or e["n"] == 0:
                continue
            tol = TARGETS[metric]
            if abs(e["worst"][0]["ratio"] - 1.0) <= tol:
                lines.append(f"- {f} {metric}: none off by more than {tol:.0%}")
                continue
            shown = "; ".join(f"`{w['label']}` {_fmt(w['ratio'])}" + (f" ({w['dram_note']})" if "dram_note" in w else "")
                              for w in e["worst"])
            lines.append(f"- {f} {metric}: {shown}")
    lines += ["", "## Kernel matching", "",
              "Modelled launches and profiled kernels are paired by kind (main, split-K reduce, split-KV combine, "
              "...) and order. Unpaired:", ""]
    unpaired = kernels[kernels["modelled"].isna() | kernels["measured"].isna()]
    if unpaired.empty:
        lines.append("- none")
    for (f, kind, side), n in unpaired.assign(side=np.where(unpaired["modelled"].isna(), "profiled only", "modelled only")) \
            .groupby(["family", "kind", "side"]).size().items():
        lines.append(f"- {f} {kind}: {n} {side}")
    paired = kernels.dropna(subset=["modelled", "measured"])
    same_ctas = paired[paired["measured_ctas"].notna()]
    lines += ["", "CTAs launched, modelled vs profiled, per family and kind (pairs with equal counts / pairs):", ""]
    for (f, kind), grp in same_ctas.groupby(["family", "kind"]):
        lines.append(f"- {f} {kind}: {int((grp['modelled_ctas'] == grp['measured_ctas']).sum())} / {len(grp)}")
    return "\n".join(lines) + "\n"



_DRAM_NOTES = ("within 10 %", "per-kernel floor (code/constants after the flush)",
               "writes still in L2 at kernel end", "writes evicted before kernel end",
               "operand re-reads (working set beyond L2)", "other")


def _clean(obj):
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return _clean(obj.item())
    return obj


def run(path: str, gpu_id: str | None = None, worst: int = 3):
    counters = load_counters(path)
    cases, kernels = case_table(counters, gpu_id)
    return cases, kernels, family_summary(cases, worst)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m synperf.counter_check",
                                description="Compare the analytical demand with Nsight Compute counters.")
    p.add_argument("counters", help="counters parquet (synperf.profile.counters)")
    p.add_argument("--gpu", default=None, help="GPU id (default: the table's gpu column)")
    p.add_argument("--json", action="store_true", help="print JSON (summary, cases, kernels) instead of markdown")
    p.add_argument("--worst", type=int, default=3, help="worst cases listed per family and metric")
    a = p.parse_args(argv)
    cases, kernels, summary = run(a.counters, a.gpu, a.worst)
    if a.json:
        doc = {"source": a.counters, "cases": len(cases), "summary": summary,
               "case_rows": cases.to_dict(orient="records"), "kernel_rows": kernels.to_dict(orient="records")}
        print(json.dumps(_clean(doc)))
    else:
        print(render_markdown(cases, kernels, summary, a.counters), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
