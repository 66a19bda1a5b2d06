"""Tensor-parallel all-reduce time, from measured NCCL / custom all-reduce timings.

Model: per (GPU, number of GPUs, implementation) and per message-size band, ``t = a + bytes / b``
(a: latency in us, b: bandwidth in bytes/us), fitted by least squares on *relative* error (each
point weighted by 1/t, so the microsecond-scale small messages count as much as the large ones).
One line cannot follow NCCL's protocol switches (LL -> LL128 -> Simple) from 1 KB to 1 GB, so the
fit is made separately in three bands: <= 64 KiB, <= 4 MiB, larger. Implementations:

- ``nccl``: ncclAllReduce (bf16/fp16).
- ``vllm_graph``/``vllm_eager`` and ``sglang_graph``/``sglang_eager``: the engines' own custom
  all-reduce kernels (one-shot/two-shot over NVLink IPC buffers), inside a CUDA graph or eager;
  used for messages up to the largest size measured, NCCL beyond.

The data is read only by ``fit_from_data`` (run once by a maintainer: ``python -m
synperf.workloads.comm [DATA_DIR]``); what ships is ``comm_fit.json``: the coefficients, the
files they came from and the fit error. GPUs, GPU counts or implementations without a fit fall
back to an analytical ring all-reduce (``analytical_allreduce_us``).
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

BANDS = (65_536, 4_194_304, None)          # upper edges in bytes (None: no limit)
ANALYTICAL_LATENCY_US = 5.0                # fixed per-call latency of the ring fallback (assumption)
DEFAULT_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
REPO_DATA = Path(__file__).resolve().parents[3] / "data"      # synperf's own measurements (comm_bench)

# Folder / device names in the public data -> synperf GPU ids.
_AIC_SYSTEMS = {"a100_sxm": "a100-sxm4-80gb", "h100_sxm": "h100-sxm", "h200_sxm": "h200", "b200_sxm": "b200",
                "gb200": "gb200", "l40s": "l40s", "rtx_pro_6000_server": "rtx-pro-6000-blackwell-server"}
_PIPEWEAVE = {"A100": "a100-sxm4-80gb", "H100": "h100-sxm", "H20": "h20", "H800": "h800",
              "RTX 6000 Ada": "rtx-6000-ada", "RTX PRO 6000 S": "rtx-pro-6000-blackwell-server"}
_VIDUR = {"a100_dgx": "a100-sxm4-80gb", "h100_dgx": "h100-sxm", "a40_pairwise_nvlink": "a40",
          "a100_pairwise_nvlink": "a100-sxm4-80gb", "h100_pairwise_nvlink": "h100-sxm"}
# Where one (gpu, n) has NCCL data from several sources, the first listed wins: synperf's own
# comm_bench runs (data/<gpu>-system/comm.parquet, this repo), then aiconfigurator (SXM/NVSwitch
# systems, recent NCCL); the others' machines are less documented.
_SOURCE_ORDER = ("synperf", "aiconfigurator", "vidur", "pipeweave")


# ---------------------------------------------------------------------------------- fitting
def _fit_line(x: np.ndarray, t: np.ndarray) -> tuple[float, float] | None:
    """Weighted least squares of t = a + x * c with weights 1/t; returns (a_us, b_bytes_per_us)."""
    if x.size < 2 or np.ptp(x) == 0:
        return None
    w = 1.0 / t
    A = np.stack([w, x * w], axis=1)
    (a, c), *_ = np.linalg.lstsq(A, np.ones_like(t), rcond=None)
    if c <= 0:                                # flat band: latency only
        return float(np.median(t)), float("inf")
    if a < 0:                                 # keep the intercept physical
        a = 0.0
        c = float(np.sum(x * t * w * w) / np.sum(x * x * w * w))
    return float(a), float(1.0 / c)


def _fit_points(bytes_: np.ndarray, t_us: np.ndarray) -> dict:
    order = np.argsort(bytes_)
    x, t = bytes_[order].astype(float), t_us[order].astype(float)
    bands, lo = [], 0.0
    for hi in BANDS:
        sel = (x > lo) & (x <= (hi if hi is not None else np.inf))
        fit = _fit_line(x[sel], t[sel])
        if fit is not None:
            a, b = fit
            pred = a + x[sel] / b
            err = float(np.median(np.abs(pred / t[sel] - 1.0)))
            bands.append({"max_bytes": hi, "a_us": round(a, 4),
                          "b_bytes_per_us": None if not np.isfinite(b) else round(b, 2),
                          "points": int(sel.sum()), "median_rel_err": round(err, 4)})
        lo = hi if hi is not None else lo
    return {"min_bytes": int(x.min()), "max_bytes": int(x.max()), "bands": bands}


def _median_by_size(bytes_, t_us):
    out: dict[int, list[float]] = {}
    for b, t in zip(bytes_, t_us):
        out.setdefault(int(b), []).append(float(t))
    keys = np.array(sorted(out))
    return keys, np.array([np.median(out[k]) for k in keys])


def _collect_synperf(f: Path, root: Path, acc: dict) -> None:
    """synperf comm_bench rows. ``nccl``: the GPU time of an NCCL all-reduce, i.e. the CUDA-graph
    replay where measured (eager loops of small messages time the host's ~50 us per call instead)
    and the eager loop beyond; ``custom_one_shot`` / ``custom_two_shot``: peer-memory all-reduce
    kernels (the algorithms of vLLM/SGLang's custom all-reduce), eager."""
    import pandas as pd

    d = pd.read_parquet(f)
    p2p = d[(d["op"] == "send_recv") & (d["us"] > 0)]
    for gpu, g in p2p.groupby("gpu"):
        bs, ts, fs = acc.setdefault((gpu, 2, "send_recv", "synperf"), ([], [], set()))
        bs.extend(g["bytes"].tolist()), ts.extend(g["us"].tolist()), fs.add("data/" + str(f.relative_to(root)))
    d = d[(d["op"] == "all_reduce") & (d["us"] > 0)]
    for (gpu, n), g in d.groupby(["gpu", "world"]):
        by_impl = g.pivot_table(index="bytes", columns="impl", values="us", aggfunc="median")
        nccl = by_impl[[c for c in ("nccl", "nccl_graph") if c in by_impl]].min(axis=1).dropna()
        series = {"nccl": nccl}
        for impl in ("one_shot", "two_shot"):
            if impl in by_impl:
                series[f"custom_{impl}"] = by_impl[impl].dropna()
        for impl, values in series.items():
            bs, ts, fs = acc.setdefault((gpu, int(n), impl, "synperf"), ([], [], set()))
            bs.extend(values.index.tolist()), ts.extend(values.tolist()), fs.add("data/" + str(f.relative_to(root)))


def _collect(data: Path, repo_data: Path = REPO_DATA) -> dict[tuple[str, int, str, str], tuple[list, list, set]]:
    """(gpu, n, impl, source) -> (bytes, us, files)."""
    import pandas as pd
    acc: dict = {}

    def add(key, b, t, f):
        bs, ts, fs = acc.setdefault(key, ([], [], set()))
        bs.extend(b), ts.extend(t), fs.add(str(f.relative_to(data)))

    aic = data / "aiconfigurator" / "data"
    for system, gpu in _AIC_SYSTEMS.items():
        for f in sorted((aic / system / "comm").glob("nccl/*/nccl_perf.parquet")):
            d = pd.read_parquet(f)
            d = d[(d["op_name"] == "all_reduce") & (d["nccl_dtype"] == "half") & (d["latency"] > 0)]
            for n, g in d.groupby("num_gpus"):   # message_size: elements (2 bytes each)
                add((gpu, int(n), "nccl", "aiconfigurator"), g["message_size"] * 2, g["latency"] * 1e3, f)
        for fw in ("vllm", "sglang"):
            for f in sorted((aic / system / "comm").glob(f"{fw}/*/custom_allreduce_perf.parquet")):
                d = pd.read_parquet(f)
                if "backend" not in d:
                    continue
                d = d[(d["op_name"] == "all_reduce") & (d["latency"] > 0)]
                for (n, backend), g in d.groupby(["num_gpus", "backend"]):
                    if backend in (f"{fw}_graph", f"{fw}_eager"):
                        add((gpu, int(n), backend, "aiconfigurator"), g["message_size"] * 2, g["latency"] * 1e3, f)
    for f in sorted(repo_data.glob("*-system/comm.parquet")):
        _collect_synperf(f, repo_data, acc)
    for folder, table in ((data / "vidur" / "network", _VIDUR), (data / "pipeweave" / "collective", _PIPEWEAVE)):
        source = "vidur" if "vidur" in str(folder) else "pipeweave"
        for name, gpu in table.items():
            f = folder / name / "all_reduce.csv"
            if not f.is_file():
                continue
            d = pd.read_csv(f)
            d = d[d["rank"] == 0]    # size: bytes (vidur's convention; checked against aiconfigurator on H100)
            for n, g in d.groupby("num_workers"):
                add((gpu, int(n), "nccl", source), g["size"], g["time_stats.all_reduce.median"] * 1e3, f)
    return acc


def fit_from_data(data: str | Path = DEFAULT_DATA) -> dict:
    """Fit every (gpu, n, impl) found under ``data``; the preferred source per key is kept, the
    others are listed under ``other_sources`` with their fits for comparison."""
    data = Path(data).resolve()
    acc = _collect(data)
    fits: dict[str, dict] = {}
    for (gpu, n, impl, source) in sorted(acc, key=lambda k: (k[0], k[1], k[2], _SOURCE_ORDER.index(k[3]))):
        b, t, files = acc[(gpu, n, impl, source)]
        x, y = _median_by_size(np.asarray(b), np.asarray(t))
        if x.size < 4:
            continue
        entry = {"source": source, "files": sorted(files), **_fit_points(x, y)}
        key = f"{gpu}/{n}/{impl}"
        if key in fits:
            fits[key].setdefault("other_sources", []).append(entry)
        else:
            fits[key] = entry
    return {"format_version": 1, "model": "t_us = a_us + bytes / b_bytes_per_us per size band",
            "bands_max_bytes": list(BANDS),
            "data_root": "../shared/data and data/ (relative to the repo root)",
            "fits": fits}


# ---------------------------------------------------------------------------------- runtime
@lru_cache(maxsize=1)
def bundled_fits() -> dict:
    entry = resources.files("synperf.workloads") / "comm_fit.json"
    return json.loads(entry.read_text())["fits"] if entry.is_file() else {}


def _eval(fit: dict, nbytes: float) -> float:
    for band in fit["bands"]:
        if band["max_bytes"] is None or nbytes <= band["max_bytes"]:
            break
    b = band["b_bytes_per_us"]
    return band["a_us"] + (nbytes / b if b else 0.0)


def analytical_allreduce_us(nbytes: float, n: int, gpu) -> float:
    """Ring all-reduce: 2 (n-1)/n x bytes over the per-direction link bandwidth (NVLink when the
    spec has it, else PCIe, else 32 GB/s), plus ANALYTICAL_LATENCY_US."""
    link = gpu.nvlink_gb_s or gpu.pcie_gb_s or 32.0
    return ANALYTICAL_LATENCY_US + 2.0 * (n - 1) / n * nbytes / (link * 1e3)


def allreduce_us(nbytes: float, n: int, gpu, impl: str = "nccl") -> tuple[float, str]:
    """Time of one all-reduce of ``nbytes`` over ``n`` GPUs, and which model answered.
    ``impl``: nccl, or an engine's custom all-reduce (vllm_graph, sglang_eager, ...): used up to
    its largest measured size, NCCL beyond (as the engines switch)."""
    if n <= 1:
        return 0.0, "none"
    fits = bundled_fits()
    if impl != "nccl":
        fit = fits.get(f"{gpu.id}/{n}/{impl}")
        if fit is not None and nbytes <= fit["max_bytes"]:
            return _eval(fit, nbytes), f"fit:{impl}"
    fit = fits.get(f"{gpu.id}/{n}/nccl")
    if fit is not None:
        return _eval(fit, nbytes), "fit:nccl"
    return analytical_allreduce_us(nbytes, n, gpu), "analytical ring"


def send_recv_us(nbytes: float, gpu) -> tuple[float, str]:
    """One point-to-point transfer between two GPUs (pipeline-parallel activations): the measured
    NCCL send/recv fit where this GPU has one, else the link bandwidth plus a fixed latency."""
    fit = bundled_fits().get(f"{gpu.id}/2/send_recv")
    if fit is not None:
        return _eval(fit, nbytes), "fit:send_recv"
    link = gpu.nvlink_gb_s or gpu.pcie_gb_s or 32.0
    return ANALYTICAL_LATENCY_US + nbytes / (link * 1e3), "analytical link"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    data = Path(args[0]) if args else DEFAULT_DATA
    out = Path(__file__).with_name("comm_fit.json")
    result = fit_from_data(data)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{len(result['fits'])} fits -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
