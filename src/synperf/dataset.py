"""Measured kernel datasets (parquet): loading, the summary table, and the ceiling check.

Rows carry the case (``case_json`` or the case columns), ``gpu_name``, ``latency_us``, ``cache``
and ``source``. pyarrow is needed here only (the prediction path never imports it).
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
from collections import Counter, defaultdict
from typing import Iterable, Iterator

import numpy as np

from synperf.cases import parse_case
from synperf.errors import SynperfError
from synperf.predict import demand_for

SUMMARY_KEYS = ("gpu", "family", "dtype", "library", "source")


def _pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SynperfError("reading datasets needs pyarrow: pip install 'synperf[data]'") from None
    return pq


KERNEL_COLUMNS = ("family", "latency_us")


def _is_kernel_table(path: str) -> bool:
    """Kernel measurements have a family and a latency per row; a folder may also hold system
    measurements (end-to-end batches, hardware counters, collectives) that are not kernel rows."""
    try:
        names = set(_pyarrow().read_schema(path).names)
    except Exception:  # unreadable: let iter_records report it by name
        return True
    return all(c in names for c in KERNEL_COLUMNS)


def dataset_files(paths: Iterable[str]) -> list[str]:
    """Parquet files of kernel measurements: each file given, or every kernel table under a folder."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
            files += [f for f in found if _is_kernel_table(f)]
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise SynperfError(f"no such dataset file or folder: {path}")
    return files


def iter_records(paths: Iterable[str]) -> Iterator[dict]:
    pq = _pyarrow()
    for path in dataset_files(paths):
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises many types for a bad file
            raise SynperfError(f"{path}: not a readable parquet file ({exc.__class__.__name__})") from None
        for row in table.to_pylist():
            row["_file"] = path
            yield row


def case_of(record: dict) -> dict:
    """The kernel case of a measured row, as the predict-kernels contract spells it."""
    if record.get("case_json"):
        case = json.loads(record["case_json"])
    else:
        case = {k: v for k, v in record.items() if v is not None and not k.startswith("_")}
    case.pop("id", None)
    case["cache"] = record.get("cache") or "cold"
    return case


def gpu_of(record: dict) -> str:
    gpu = record.get("gpu") or record.get("gpu_name")
    if not gpu:
        raise SynperfError(f"{record.get('_file', 'a dataset row')}: a row names no GPU (no `gpu` or `gpu_name` field)")
    return gpu


def summary(records: Iterable[dict]) -> list[dict]:
    counts = Counter((gpu_of(r), r.get("family"), r.get("dtype"), r.get("library"), r.get("source")) for r in records)
    return [dict(zip(SUMMARY_KEYS, key), rows=n) for key, n in sorted(counts.items(), key=lambda kv: tuple(map(str, kv[0])))]


def ceiling_check(records: Iterable[dict], registry) -> dict:
    """Per (gpu, family, library): how often the ceiling stays at or below the measured latency,
    and the median ceiling / measured ratio. Also the worst violations."""
    ratios: dict[tuple, list[float]] = defaultdict(list)
    worst: list[tuple[float, dict]] = []
    records = list(records)
    for rec, case, ceiling in _ceilings(records, registry):
        latency = rec["latency_us"]
        ratio = ceiling / latency
        ratios[(registry.get(gpu_of(rec)).id, case.family, case.library)].append(ratio)
        if ratio > 1:
            worst.append((ratio, {**case_of(rec), "latency_us": latency, "ceiling_us": ceiling,
                                  "kernel_names": rec.get("kernel_names")}))
    skipped = {"unusable rows": len(records) - sum(len(v) for v in ratios.values())}
    groups = []
    for (gpu_id, family, library), values in sorted(ratios.items()):
        arr = np.asarray(values)
        groups.append({"gpu": gpu_id, "family": family, "library": library, "rows": int(arr.size),
                       "below_fraction": float((arr <= 1.0).mean()), "median_ratio": float(np.median(arr)),
                       "p10_ratio": float(np.quantile(arr, 0.1)), "max_ratio": float(arr.max())})
    every = np.concatenate([np.asarray(v) for v in ratios.values()]) if ratios else np.array([])
    worst.sort(key=lambda item: -item[0])
    return {
        "groups": groups,
        "overall": {"rows": int(every.size),
                    "below_fraction": float((every <= 1.0).mean()) if every.size else float("nan"),
                    "median_ratio": float(np.median(every)) if every.size else float("nan")},
        "worst": [dict(item[1], ratio=item[0]) for item in worst[:20]],
        "skipped": skipped if skipped["unusable rows"] else {},
    }


def repeatability(records: Iterable[dict]) -> list[dict]:
    """Per (gpu, family, library): how far apart two measurements of the same case (same shape,
    same L2 state) land when it was measured more than once, e.g. in two sessions. Each repeat is
    compared with the case's first measurement (by timestamp). ``floor_mape`` = mean |later /
    first - 1| / sqrt(2): with independent, equal noise on every measurement, the error a predictor
    of each case's true mean would still score against single measurements."""
    measured: dict[tuple, list[tuple[str, float]]] = defaultdict(list)
    for rec, gpu, case in _measured_cases(records):
        measured[(gpu, case)].append((str(rec.get("timestamp") or ""), float(rec["latency_us"])))
    diffs: dict[tuple, list[float]] = defaultdict(list)
    for (gpu, case), values in measured.items():
        if len(values) > 1:
            values.sort()
            first = values[0][1]
            diffs[(gpu, case.family, case.library)] += [later / first - 1.0 for _, later in values[1:]]
    out = []
    for (gpu, family, library), d in sorted(diffs.items()):
        arr = np.abs(np.asarray(d))
        out.append({"gpu": gpu, "family": family, "library": library, "repeats": int(arr.size),
                    "median_ratio": float(np.median(np.asarray(d) + 1.0)),
                    "mean_abs_diff": float(arr.mean()), "median_abs_diff": float(np.median(arr)),
                    "p90_abs_diff": float(np.quantile(arr, 0.9)), "floor_mape": float(arr.mean() / math.sqrt(2.0))})
    return out


def shape_key(rec: dict) -> str:
    """The measured shape on its GPU: repeats of a case, and its twins timed after a clean and a
    dirtying L2 flush, share one key."""
    case = case_of(rec)
    if case["cache"] == "cold_dirty":
        case["cache"] = "cold"
    return json.dumps(case, sort_keys=True) + gpu_of(rec)


def shape_bucket(key: str, salt: str = "") -> float:
    """A uniform number in [0, 1] fixed by the shape (and ``salt``): splits that keep a shape's
    rows on one side."""
    return int(hashlib.sha1((salt + key).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def holdout_split(records: Iterable[dict], test_fraction: float) -> tuple[list[dict], list[dict]]:
    """Deterministic split by a hash of the case: the same shape always lands on the same side,
    also when it was measured after both a clean and a dirtying L2 flush."""
    train, test = [], []
    for rec in records:
        (test if shape_bucket(shape_key(rec)) < test_fraction else train).append(rec)
    return train, test


def write_records(records: list[dict], path: str) -> None:
    pq = _pyarrow()
    import pyarrow as pa
    clean = [{k: v for k, v in rec.items() if not k.startswith("_")} for rec in records]
    pq.write_table(pa.Table.from_pylist(clean), path, compression="zstd", compression_level=9)


def fit_efficiency_priors(records: Iterable[dict], registry) -> dict:
    """Per family/library: median and 10th/90th percentile of efficiency = ceiling / measured."""
    effs: dict[str, list[float]] = defaultdict(list)
    gpus = set()
    for rec, case, ceiling in _ceilings(records, registry):
        effs[f"{case.family}/{case.library}"].append(min(1.0, ceiling / rec["latency_us"]))
        gpus.add(gpu_of(rec))
    priors = {}
    for key, values in sorted(effs.items()):
        arr = np.asarray(values)
        priors[key] = {"median": round(float(np.median(arr)), 4), "low": round(float(np.quantile(arr, 0.1)), 4),
                       "high": round(float(np.quantile(arr, 0.9)), 4),
                       "source": f"fitted on {arr.size} measured rows ({', '.join(sorted(gpus))})"}
    return priors


def _measured_cases(records: Iterable[dict]) -> Iterator[tuple[dict, str, object]]:
    """(record, GPU name, parsed case) for rows with a positive latency and a valid case."""
    for rec in records:
        latency = rec.get("latency_us")
        if latency is None or not math.isfinite(latency) or latency <= 0:
            continue
        gpu = gpu_of(rec)          # a file whose rows name no GPU is an error, not a skip
        try:
            yield rec, gpu, parse_case(case_of(rec))
        except SynperfError:
            continue


def _usable(records: Iterable[dict], registry) -> Iterator[tuple[dict, object, object]]:
    """(record, parsed case, GPU spec) for rows with a positive latency, a valid case and a known GPU."""
    for rec, gpu, case in _measured_cases(records):
        try:
            yield rec, case, registry.get(gpu)
        except SynperfError:
            continue


def _ceilings(records: Iterable[dict], registry) -> Iterator[tuple[dict, object, float]]:
    for rec, case, gpu in _usable(records, registry):
        try:
            yield rec, case, demand_for(case, gpu).ceiling_us
        except SynperfError:
            continue


# Columns of imported datasets: the contract's shape fields plus provenance; anything else a
# source adds stays inside case_json.
IMPORT_COLUMNS = {
    "gpu": "string", "family": "string", "dtype": "string", "library": "string", "cache": "string",
    "latency_us": "float64", "source": "string", "framework": "string", "framework_version": "string",
    "kernel_source": "string", "case_json": "string",
    "m": "int64", "n": "int64", "k": "int64", "phase": "string", "batch": "int64", "q_len": "int64",
    "kv_len": "int64", "num_heads": "int64", "num_kv_heads": "int64", "head_dim": "int64", "causal": "bool_",
    "kv_cache_dtype": "string", "page_size": "int64", "tokens": "int64", "hidden": "int64",
    "intermediate": "int64", "num_experts": "int64", "topk": "int64", "stage": "string", "residual": "bool_",
}


def write_records_streaming(records: Iterable[dict], path: str, chunk_rows: int = 200_000) -> int:
    """Stream records into one parquet file in row groups; returns the rows written."""
    pq = _pyarrow()
    import pyarrow as pa
    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in IMPORT_COLUMNS.items()])
    written = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        chunk: list[dict] = []
        for rec in records:
            chunk.append({name: rec.get(name) for name in IMPORT_COLUMNS})
            if len(chunk) >= chunk_rows:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                written += len(chunk)
                chunk = []
        if chunk:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            written += len(chunk)
    return written
