"""Parse torch.profiler chrome traces into per-rep kernel lists (pure Python).

The harness launches, for every case of a chunk::

    [inputs, warm-up]  (flush, op) x reps  marker

where ``flush`` is the Triton kernel ``synperf_l2_flush`` and ``marker`` the
Triton kernel ``synperf_case_end``.  Sorting the GPU events by start time and
cutting the stream at these kernels gives one segment per flush: the GPU work
of one rep.  Anything between a marker and the next flush (input creation,
warm-up) is ignored.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from .cases import median

FLUSH_NAME = "synperf_l2_flush"
MARKER_NAME = "synperf_case_end"
# GPU activity categories counted as part of an op.  cuBLAS / torch can issue
# memsets and device-to-device copies as part of an op, so those count too.
GPU_CATS = ("kernel", "gpu_memset", "gpu_memcpy")


def _as_int_list(v: Any) -> Optional[List[int]]:
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        try:
            return [int(x) for x in v]
        except (TypeError, ValueError):
            return None
    return None


def _as_int(v: Any) -> Optional[int]:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def load_gpu_events(
    trace: Union[str, Dict[str, Any], List[Dict[str, Any]]],
    device: Optional[int] = None,
    cats: Sequence[str] = GPU_CATS,
) -> List[Dict[str, Any]]:
    """GPU events of a chrome trace (path, parsed dict or event list), sorted
    by start time.  Each event: name, cat, ts (us), dur (us), grid, block,
    registers, shared_mem."""
    if isinstance(trace, str):
        with open(trace, "r", encoding="utf-8", errors="replace") as f:
            trace = json.load(f)
    events = trace.get("traceEvents", []) if isinstance(trace, dict) else trace
    out: List[Dict[str, Any]] = []
    for ev in events:
        if not isinstance(ev, dict):
            continue
        cat = ev.get("cat")
        if cat not in cats:
            continue
        if ev.get("ph", "X") != "X":
            continue
        args = ev.get("args") or {}
        if device is not None and "device" in args:
            try:
                if int(args["device"]) != int(device):
                    continue
            except (TypeError, ValueError):
                pass
        try:
            ts = float(ev["ts"])
            dur = float(ev.get("dur", 0.0))
        except (KeyError, TypeError, ValueError):
            continue
        out.append(
            {
                "name": str(ev.get("name", "")),
                "cat": cat,
                "ts": ts,
                "dur": dur,
                "grid": _as_int_list(args.get("grid")),
                "block": _as_int_list(args.get("block")),
                "registers": _as_int(args.get("registers per thread")),
                "shared_mem": _as_int(args.get("shared memory")),
                "stream": args.get("stream"),
            }
        )
    out.sort(key=lambda e: (e["ts"], e["ts"] + e["dur"]))
    return out


def is_flush(ev: Dict[str, Any]) -> bool:
    return ev["cat"] == "kernel" and FLUSH_NAME in ev["name"]


def is_marker(ev: Dict[str, Any]) -> bool:
    return ev["cat"] == "kernel" and MARKER_NAME in ev["name"]


def split_reps(events: Iterable[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
    """One segment per flush kernel, in stream order: the events after that
    flush up to the next flush or marker (exclusive)."""
    segments: List[List[Dict[str, Any]]] = []
    current: Optional[List[Dict[str, Any]]] = None
    for ev in events:
        if is_flush(ev):
            current = []
            segments.append(current)
        elif is_marker(ev):
            current = None
        elif current is not None:
            current.append(ev)
    return segments


def segment_latency_us(seg: List[Dict[str, Any]]) -> float:
    """Sum of GPU activity durations of one rep."""
    return float(sum(e["dur"] for e in seg))


def segment_span_us(seg: List[Dict[str, Any]]) -> float:
    """First start to last end of one rep (includes gaps between kernels)."""
    if not seg:
        return 0.0
    return float(max(e["ts"] + e["dur"] for e in seg) - min(e["ts"] for e in seg))


def _kernel_label(e: Dict[str, Any]) -> str:
    if e["cat"] == "kernel":
        return e["name"]
    return f"[{e['cat']}] {e['name']}"


def summarize_reps(segments: List[List[Dict[str, Any]]]) -> Dict[str, Any]:
    """Latency statistics and kernel metadata of one case from its rep
    segments.  Raises ValueError when no rep has any GPU activity."""
    segs = [s for s in segments if s]
    if not segs:
        raise ValueError("no GPU kernels were recorded between the L2 flushes of this case")
    lats = [segment_latency_us(s) for s in segs]
    med = median(lats)
    # representative rep: the one closest to the median latency
    rep_idx = min(range(len(segs)), key=lambda i: abs(lats[i] - med))
    rep = segs[rep_idx]
    names_per_rep = [tuple(_kernel_label(e) for e in s) for s in segs]
    return {
        "latency_us": med,
        "min_us": float(min(lats)),
        "max_us": float(max(lats)),
        "mean_us": float(sum(lats) / len(lats)),
        "n_reps": len(lats),
        "rep_latencies_us": [round(x, 4) for x in lats],
        "span_us": median([segment_span_us(s) for s in segs]),
        "n_kernels": len(rep),
        "kernels_consistent": len(set(names_per_rep)) == 1 and len(segs) == len(segments),
        "kernel_names": [_kernel_label(e) for e in rep],
        "grids": [e["grid"] for e in rep],
        "blocks": [e["block"] for e in rep],
        "registers": [e["registers"] for e in rep],
        "shared_mem": [e["shared_mem"] for e in rep],
    }


def assign_segments(
    segments: List[List[Dict[str, Any]]], launch_log: List[Any]
) -> Dict[Any, List[List[Dict[str, Any]]]]:
    """Group rep segments by the key that launched each flush.

    ``launch_log[i]`` is the key (e.g. case index) of the i-th flush launched
    in the profiled chunk.  Raises ValueError when the counts differ (the trace
    lost or gained flush kernels), since the mapping would then be unsafe."""
    if len(segments) != len(launch_log):
        raise ValueError(
            f"trace has {len(segments)} L2-flush kernels but {len(launch_log)} were launched; "
            "cannot attribute kernels to cases"
        )
    grouped: Dict[Any, List[List[Dict[str, Any]]]] = {}
    for key, seg in zip(launch_log, segments):
        grouped.setdefault(key, []).append(seg)
    return grouped
