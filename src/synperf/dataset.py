"""Measured kernel datasets (parquet): loading, the summary table, and the ceiling check.

Rows carry the case (``case_json`` or the case columns), ``gpu_name``, ``latency_us``, ``cache``
and ``source``. pyarrow is needed here only (the prediction path never imports it).
"""

from __future__ import annotations

import glob
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


def dataset_files(paths: Iterable[str]) -> list[str]:
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
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
    return record.get("gpu") or record["gpu_name"]


def summary(records: Iterable[dict]) -> list[dict]:
    counts = Counter((gpu_of(r), r.get("family"), r.get("dtype"), r.get("library"), r.get("source")) for r in records)
    return [dict(zip(SUMMARY_KEYS, key), rows=n) for key, n in sorted(counts.items(), key=lambda kv: tuple(map(str, kv[0])))]


def ceiling_check(records: Iterable[dict], registry) -> dict:
    """Per (gpu, family, library): how often the ceiling stays at or below the measured latency,
    and the median ceiling / measured ratio. Also the worst violations."""
    ratios: dict[tuple, list[float]] = defaultdict(list)
    worst: list[tuple[float, dict]] = []
    skipped = Counter()
    for rec in records:
        latency = rec.get("latency_us")
        if latency is None or not math.isfinite(latency) or latency <= 0:
            skipped["no latency"] += 1
            continue
        try:
            case = parse_case(case_of(rec))
            gpu = registry.get(gpu_of(rec))
            ceiling = demand_for(case, gpu).ceiling_us
        except SynperfError as exc:
            skipped[str(exc).split(":")[0][:60]] += 1
            continue
        ratio = ceiling / latency
        ratios[(gpu.id, case.family, case.library)].append(ratio)
        if ratio > 1:
            worst.append((ratio, {**case_of(rec), "latency_us": latency, "ceiling_us": ceiling,
                                  "kernel_names": rec.get("kernel_names")}))
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
        "skipped": dict(skipped),
    }
