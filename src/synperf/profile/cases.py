"""Case helpers shared by the plans and the harness (pure Python, no torch).

A *case* is one JSON object describing one kernel call (see README.md in this
folder).  This module normalises cases, gives them stable ids, estimates the
device memory their inputs need and knows the typed output columns.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Dict, Iterable, List, Optional

from synperf.demand import CACHE_STATES

FAMILIES = ("gemm", "attention", "moe", "rmsnorm", "silu_and_mul", "rope")

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp8_e4m3": 1, "fp32": 4}

DEFAULT_LIBRARY = {
    "gemm": "cublas",
    "attention": "flash_attn2_torch_sdpa",
    "moe": "triton_fused_moe",
    "rmsnorm": "torch",
    "silu_and_mul": "torch",
    "rope": "torch",
}

# Typed case columns of the output table ("int", "float", "bool", "str", "json").
CASE_COLUMNS: Dict[str, str] = {
    "id": "str",
    "family": "str",
    "dtype": "str",
    "library": "str",
    "cache": "str",
    # gemm
    "m": "int",
    "n": "int",
    "k": "int",
    # attention
    "phase": "str",
    "batch": "int",
    "q_len": "int",
    "kv_len": "int",
    "num_heads": "int",
    "num_kv_heads": "int",
    "head_dim": "int",
    "causal": "bool",
    "kv_cache_dtype": "str",
    "page_size": "int",
    "cuda_graph": "bool",
    # moe / elementwise
    "tokens": "int",
    "hidden": "int",
    "intermediate": "int",
    "num_experts": "int",
    "topk": "int",
    "stage": "str",
    "config": "json",
    "residual": "bool",
}

# Columns the harness adds (measurement + environment).
RESULT_COLUMNS: Dict[str, str] = {
    "latency_us": "float",
    "min_us": "float",
    "max_us": "float",
    "mean_us": "float",
    "n_reps": "int",
    "rep_latencies_us": "json",
    "span_us": "float",
    "n_kernels": "int",
    "kernels_consistent": "bool",
    "kernel_names": "json",
    "grids": "json",
    "blocks": "json",
    "registers": "json",
    "shared_mem": "json",
    "config_source": "str",
    "gqa_expanded": "bool",
    "impl_note": "str",
    "gpu_name": "str",
    "sm_count": "int",
    "sm_clock_mhz": "float",
    "mem_clock_mhz": "float",
    "driver_version": "str",
    "cuda_version": "str",
    "torch_version": "str",
    "triton_version": "str",
    "timestamp": "str",
    "source": "str",
    "case_json": "str",
}

ALL_COLUMNS: Dict[str, str] = {**CASE_COLUMNS, **RESULT_COLUMNS}


def normalize_case(case: Dict[str, Any]) -> Dict[str, Any]:
    """Return a copy of ``case`` with defaults filled in (never mutates)."""
    if not isinstance(case, dict):
        raise TypeError(f"case must be a dict, got {type(case).__name__}")
    c = dict(case)
    fam = c.get("family")
    if fam not in FAMILIES:
        raise ValueError(f"unknown family {fam!r}; expected one of {FAMILIES}")
    c.setdefault("cache", "cold")
    if c["cache"] not in CACHE_STATES:
        raise ValueError(f"cache must be one of {', '.join(CACHE_STATES)}, got {c['cache']!r}")
    c.setdefault("dtype", "bf16")
    c.setdefault("library", DEFAULT_LIBRARY[fam])
    if fam == "attention":
        c.setdefault("kv_cache_dtype", c["dtype"])
        if c.get("phase") == "decode":
            c.setdefault("q_len", 1)
            c.setdefault("causal", False)
        else:
            c.setdefault("causal", True)
        c.setdefault("num_kv_heads", c.get("num_heads"))
    if fam == "rmsnorm":
        c.setdefault("residual", False)
    if fam == "moe":
        c.setdefault("stage", "all")
        c.setdefault("config", "vllm_default")
    return c


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def case_id(case: Dict[str, Any]) -> str:
    """The case's ``id`` if it has one, else a stable hash of its canonical JSON
    (defaults filled in, ``id`` excluded)."""
    if case.get("id"):
        return str(case["id"])
    c = normalize_case(case)
    c.pop("id", None)
    h = hashlib.sha1(canonical_json(c).encode()).hexdigest()[:16]
    return f"{c['family']}-{h}"


def _prod(xs: Iterable[int]) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


def estimate_bytes(case: Dict[str, Any]) -> int:
    """Rough device memory (bytes) of a case's inputs, outputs and temporaries."""
    c = normalize_case(case)
    fam = c["family"]
    eb = DTYPE_BYTES.get(c["dtype"], 2)
    if fam == "gemm":
        m, n, k = int(c["m"]), int(c["n"]), int(c["k"])
        ob = 2  # output is bf16/fp16 (fp8 scaled_mm writes bf16)
        return m * k * eb + n * k * eb + m * n * ob
    if fam == "attention":
        b = int(c["batch"])
        q_tokens = sum(c["q_lens"]) if c.get("q_lens") else b * int(c.get("q_len") or 1)
        kv_tokens = sum(c["kv_lens"]) if c.get("kv_lens") else b * int(c["kv_len"])
        hq, hkv, d = int(c["num_heads"]), int(c["num_kv_heads"]), int(c["head_dim"])
        q = hq * q_tokens * d * eb
        kv = 2 * hkv * kv_tokens * d * DTYPE_BYTES.get(c.get("kv_cache_dtype", c["dtype"]), eb)
        out = q
        lse = hq * q_tokens * 4
        # (the rare GQA-expansion fallback, kv * num_heads/num_kv_heads more, is not counted)
        return q + kv + out + lse
    if fam == "moe":
        t, h, i = int(c["tokens"]), int(c["hidden"]), int(c["intermediate"])
        e, k = int(c["num_experts"]), int(c["topk"])
        w = e * (2 * i * h + h * i) * eb
        act = t * h * eb + t * k * (2 * i + i + h) * eb + t * h * eb
        routing = t * e * 4 + t * k * 16 + (t * k + e * 256) * 8
        return w + act + routing
    if fam == "rmsnorm":
        t, h = int(c["tokens"]), int(c["hidden"])
        # torch path keeps fp32 temporaries
        return t * h * (eb * 4 + 8) + h * eb
    if fam == "silu_and_mul":
        t, i = int(c["tokens"]), int(c["intermediate"])
        return t * 2 * i * eb + t * i * eb * 3
    if fam == "rope":
        t, hq, hkv, d = int(c["tokens"]), int(c["num_heads"]), int(c["num_kv_heads"]), int(c["head_dim"])
        return t * (hq + hkv) * d * (eb * 3 + 8) + 8192 * d * 4 + t * 8
    raise ValueError(fam)


def to_json_cell(v: Any) -> Optional[str]:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    return canonical_json(v)


def case_to_row(case: Dict[str, Any]) -> Dict[str, Any]:
    """Flatten a case to output-row fields: lists/dicts become JSON strings."""
    c = normalize_case(case)
    row: Dict[str, Any] = {}
    for key, val in c.items():
        if isinstance(val, (list, tuple, dict)):
            row[key] = canonical_json(val)
        else:
            row[key] = val
    row["id"] = case_id(case)
    row["case_json"] = canonical_json({k: v for k, v in c.items() if k != "id"})
    return row


def median(xs: List[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return math.nan
    mid = n // 2
    return float(s[mid]) if n % 2 else 0.5 * (s[mid - 1] + s[mid])
