"""ai-dynamo/aiconfigurator measured kernel tables -> synperf records.

Layout: ``data/<system>/<op>/<framework>/<version>/*.parquet``. Every parquet file under the
given folder is read (so a user may point at the whole checkout, ``data/`` or one system folder),
one file at a time. Latency is in ms (converted to µs). Measurements are CUDA-graph replays at
locked clocks with the operands reused, so ``cache`` is ``warm``.

Filters (each counted under its own reason in the report), in this order:
- the GPU comes from the ``device`` column (never the folder name); unknown devices are dropped;
- ``latency`` <= 0 or missing;
- attention: ``window_size`` > 0 (sliding windows are not modelled), ``beam_width`` != 1, and
  TensorRT-LLM generation (decode) rows older than 1.3.0rc20 (another KV-length convention);
- dtypes and kernels synperf does not model (see the tables below and docs/importers.md);
- rows off by more than ``VERSION_SPREAD`` from the median of the same GPU, framework and case
  timed by at least ``VERSION_QUORUM`` versions of that framework (a system's tables of one kind
  are read together for this): versions of one engine time a kernel within a few percent, and a
  row 2x off measured something else (vLLM 0.19's H200 prefill rows include calls 40-80x faster
  than the GPU's peak).
The rest is validated with ``synperf.cases.parse_case``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Iterator

from synperf.importers import CaseValidator, Report, _is_column, emit

SOURCE = "aiconfigurator"
CACHE = "warm"
PAGE_SIZE = 64   # the vLLM and SGLang collectors build their paged KV cache with 64-token blocks

TABLES = {
    "gemm_perf.parquet": "gemm",
    "context_attention_perf.parquet": "prefill",
    "generation_attention_perf.parquet": "decode",
    "moe_perf.parquet": "moe",
}

FRAMEWORKS = {"VLLM": "vllm", "SGLang": "sglang", "TRTLLM": "trtllm"}

# gemm_dtype -> (dtype, library)
GEMM_DTYPES = {
    "bfloat16": ("bf16", "cublas"),
    "fp8": ("fp8_e4m3", "cublaslt_scaled_mm"),     # FP8 with per-tensor (dynamic) scales
    "fp8_block": ("fp8_e4m3", "fp8_block"),         # FP8 with 128x128 / 1x128 block scales
}

# attention kernel_source -> library. A callable takes the GPU's cc_major and returns the library
# or None (not modelled on that architecture).
ATTENTION_LIBRARIES = {
    "flashinfer": lambda cc: "flashinfer",                      # SGLang FlashInfer backend
    "vllm_flashinfer": lambda cc: None if cc == 10 else "flashinfer",
    "vllm_flashinfer_fiprefill": lambda cc: "flashinfer",       # vLLM FlashInfer, native prefill
    "vllm_flashinfer_fidecode": lambda cc: "flashinfer",        # vLLM FlashInfer, native decode
    "torch_flow_flashinfer": lambda cc: "flashinfer",           # TRT-LLM PyTorch flow, FlashInfer backend
    # Dao-AILab FlashAttention-3 (synperf's flash_attn3): SGLang's fa3 backend (sgl-kernel's build)
    # and FlashAttentionBackend on Hopper, vLLM's vllm_flash_attn on Hopper.
    "fa3": lambda cc: "flash_attn3" if cc == 9 else None,
    "flash_attention": lambda cc: "flash_attn3" if cc == 9 else None,
    "vllm_flash_attn_fa3": lambda cc: "flash_attn3" if cc == 9 else None,
    "vllm_flash_attn_fa2": lambda cc: "flash_attn2_torch_sdpa",
    # vLLM's FLASH_ATTN backend runs FA3 on Hopper and FA2 on Ampere/Ada/sm_120; on sm_100 it may
    # be FA2 or FA4 depending on the version, so it is not mapped there.
    "vllm_flash_attn": lambda cc: {9: "flash_attn3", 8: "flash_attn2_torch_sdpa", 12: "flash_attn2_torch_sdpa"}.get(cc),
}
# Known and deliberately not mapped: trtllm_mha, torch_flow (TRT-LLM's own FMHA/XQA), triton,
# vllm_triton_attn, vllm_flash_attn_fa4, vllm_flashinfer_trtllmprefill/_trtllmdecode (TRT-LLM-gen
# kernels inside FlashInfer).

# MoE kernel_source -> synperf default-config rule, for the Triton fused-MoE path only.
MOE_KERNELS = {
    "vllm_fused_moe": "vllm_default",                                # vllm fused_experts (Triton)
    "vllm_unquantizedfusedmoe_triton_tritonexperts": "vllm_default",
    "vllm_fp8moe_triton_tritonexperts": "vllm_default",              # fp8: dropped by dtype
    "vllm_modeloptfp8moe_triton_tritonexperts": "vllm_default",      # fp8: dropped by dtype
    "sglang_fused_moe_triton": "sglang_default",
    "moe_torch_flow_triton_fp8_block": "vllm_default",               # fp8: dropped by dtype
}

# A row more than this factor off the median of its GPU, kernel and shape over at least
# VERSION_QUORUM framework versions is dropped (module docstring).
VERSION_SPREAD = 2.0
VERSION_QUORUM = 3

ATTN_DTYPES = {"bfloat16": "bf16"}
KV_DTYPES = {"bfloat16": "bf16", "fp8": "fp8_e4m3"}


def _version_key(version: str) -> tuple:
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)(?:rc(\d+))?", str(version))
    if not m:
        return (-1,)
    major, minor, patch, rc = m.groups()
    return (int(major), int(minor), int(patch), int(rc) if rc is not None else math.inf)


TRTLLM_DECODE_MIN = _version_key("1.3.0rc20")


class _Gpus:
    """CUDA device name -> (synperf GPU id, cc_major), None when synperf has no spec for it."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[str, int] | None] = {}

    def __call__(self, name: str):
        if name not in self._cache:
            from synperf.errors import SynperfError
            from synperf.gpu import resolve_gpu
            try:
                spec = resolve_gpu(str(name))
                self._cache[name] = (spec.id, int(spec.cc_major))
            except SynperfError:
                self._cache[name] = None
        return self._cache[name]


def parquet_files(path: str) -> list[str]:
    if not os.path.isdir(path):
        from synperf.errors import SynperfError
        raise SynperfError(f"no such folder: {path}")
    out = []
    for root, _dirs, files in os.walk(path):
        out += [os.path.join(root, f) for f in files if f.endswith(".parquet")]
    return sorted(out)


def _read_parquet(pq, file: str, metadata_only: bool = False):
    """The table (or only its row count) of one parquet file; a damaged file is a SynperfError."""
    try:
        return pq.ParquetFile(file).metadata.num_rows if metadata_only else pq.read_table(file)
    except Exception as exc:  # pyarrow raises many types (ArrowInvalid, OSError...) for a bad file
        from synperf.errors import SynperfError
        raise SynperfError(f"{file}: not a readable parquet file ({exc.__class__.__name__})") from None


def iter_records(path: str, report: Report, *, limit: int | None = None) -> Iterator[dict]:
    """Records of every table under ``path``. A system's files of one table kind (its
    ``gemm_perf.parquet`` of every framework and version: ``<system>/<op>/<framework>/<version>/``)
    are read together, so that the versions can be checked against each other (``VERSION_SPREAD``)."""
    import pandas as pd
    import pyarrow.parquet as pq

    gpus, validator = _Gpus(), CaseValidator()
    by_table: dict[tuple[str, str], list[str]] = {}
    for file in parquet_files(path):
        by_table.setdefault((_system_of(file), os.path.basename(file)), []).append(file)
    for (_system, name), files in by_table.items():
        kind = TABLES.get(name)
        frames, pending = [], 0
        for file in files:
            budget = None if limit is None else limit - report.read - pending
            if budget is not None and budget <= 0:
                break
            if kind is None:
                rows = _read_parquet(pq, file, metadata_only=True)
                rows = rows if budget is None else min(rows, budget)
                report.read += rows
                report.drop(f"table {name[:-len('.parquet')]} not modelled", rows)
                continue
            df = _read_parquet(pq, file).to_pandas()
            frames.append(df if budget is None else df.iloc[:budget])
            pending += len(frames[-1])
        if frames:
            yield from records_of_frame(pd.concat(frames, ignore_index=True), kind, report, gpus=gpus,
                                        validator=validator)


def _system_of(file: str) -> str:
    """The system folder of ``<system>/<op>/<framework>/<version>/<table>``: four levels up (the
    top of a shallower layout)."""
    parents = Path(file).parents
    return str(parents[min(3, len(parents) - 1)])


def _drop(df, mask, reason, report: Report):
    """Drop rows where mask is True under one reason; returns the rest."""
    n = int(mask.sum())
    if n:
        report.drop(reason, n)
        return df[~mask]
    return df


def _drop_by_value(df, mask, column, template, report: Report):
    """Drop rows where mask is True, one reason per value of ``column``."""
    if mask.any():
        for value, n in df.loc[mask, column].value_counts().items():
            report.drop(template.format(value), n)
        return df[~mask]
    return df


# vLLM replaced its bf16 default rule in 0.17 (kernels.moe.default_config).
VLLM_NEW_DEFAULT_RULE = (0, 17)


def _engine_configs(engines, versions, gpu_ids, tokens, experts, hidden, intermediate, topk) -> list:
    """Per row, the config the engine ran on that GPU: its tuned config where the engine ships one
    (``kernels.moe.engine_config``), else the name of the default rule of its version."""
    from synperf.gpu import resolve_gpu
    from synperf.kernels.moe import engine_config
    out, memo, specs = [], {}, {}
    for row in zip(engines, versions, gpu_ids, tokens, experts, hidden, intermediate, topk):
        if row not in memo:
            engine, version, gpu, *shape = row
            spec = specs[gpu] if gpu in specs else specs.setdefault(gpu, resolve_gpu(gpu))
            cfg, source = engine_config(engine, spec, *(int(v) for v in shape))
            if source == "vllm_default" and _version_key(str(version))[:2] < VLLM_NEW_DEFAULT_RULE:
                source = "vllm_legacy_default"
            memo[row] = source if source.endswith("_default") else cfg
        out.append(memo[row])
    return out


def _off_the_other_versions(case: dict, gpu, framework, version, latency):
    """Per row: whether its latency is more than ``VERSION_SPREAD`` off the median over every row
    of the same GPU, framework and case (the case's columns), where at least ``VERSION_QUORUM``
    versions of the framework timed it. Frameworks are not pooled: under one library name they may
    run different kernels (TensorRT-LLM's FP8 GEMMs, SGLang's and vLLM's block-scaled FP8)."""
    import numpy as np
    import pandas as pd

    keys = {"_gpu": np.asarray(gpu), "_framework": np.asarray(framework)}
    keys.update({k: np.asarray(v, dtype=object) for k, v in case.items() if _is_column(v)})
    frame = pd.DataFrame({**{k: pd.Series(v).astype(str).to_numpy() for k, v in keys.items()},
                          "_version": np.asarray(version, dtype=object), "_lat": np.asarray(latency, float)})
    groups = frame.groupby(list(keys), sort=False)
    median = groups["_lat"].transform("median").to_numpy()
    versions = groups["_version"].transform("nunique").to_numpy()
    ratio = frame["_lat"].to_numpy() / median
    return (versions >= VERSION_QUORUM) & ((ratio > VERSION_SPREAD) | (ratio < 1.0 / VERSION_SPREAD))


def records_of_frame(df, kind: str, report: Report, *, gpus=None, validator=None) -> Iterator[dict]:
    """Records of one aiconfigurator table (a pandas DataFrame with the parquet's columns).
    ``kind`` is gemm, prefill, decode or moe. Counts every row into ``report``."""
    import numpy as np

    gpus = gpus or _Gpus()
    validator = validator or CaseValidator()
    report.read += len(df)
    if not len(df):
        return

    # The GPU comes from the device column, never from the folder.
    dev = {d: gpus(d) for d in df["device"].unique()}
    known = df["device"].isin([d for d, v in dev.items() if v is not None])
    df = _drop_by_value(df, ~known, "device", "device {!r} has no synperf GPU spec", report)
    lat = df["latency"].astype(float)
    df = _drop(df, ~(lat > 0), "latency <= 0 or missing", report)

    if kind == "gemm":
        df = _drop_by_value(df, ~df["gemm_dtype"].isin(list(GEMM_DTYPES)), "gemm_dtype",
                            "gemm_dtype {} not modelled", report)
    elif kind in ("prefill", "decode"):
        if "window_size" in df:
            df = _drop(df, df["window_size"].fillna(0) > 0, "attention window_size > 0 (sliding window)", report)
        df = _drop(df, df["beam_width"] != 1, "attention beam_width != 1", report)
        if kind == "decode":
            too_old = {v: _version_key(v) < TRTLLM_DECODE_MIN for v in df["version"].unique()}
            old = (df["framework"] == "TRTLLM") & df["version"].map(too_old).astype(bool)
            df = _drop(df, old, "TensorRT-LLM decode attention older than 1.3.0rc20 (KV-length convention)",
                       report)
        df = _drop_by_value(df, ~df["attn_dtype"].isin(list(ATTN_DTYPES)), "attn_dtype",
                            "attention attn_dtype {} not modelled", report)
    elif kind == "moe":
        df = _drop_by_value(df, df["moe_dtype"] != "bfloat16", "moe_dtype", "moe_dtype {} not modelled", report)
    if not len(df):
        return

    gpu_id = df["device"].map({d: v[0] for d, v in dev.items() if v})
    cc = df["device"].map({d: v[1] for d, v in dev.items() if v})
    framework = df["framework"].map({f: FRAMEWORKS.get(f, str(f).lower()) for f in df["framework"].unique()})
    common = dict(gpu=gpu_id, framework=framework, framework_version=df["version"].astype(str),
                  kernel_source=df["kernel_source"].astype(str))

    if kind == "gemm":
        case = {"family": "gemm", "dtype": df["gemm_dtype"].map({k: v[0] for k, v in GEMM_DTYPES.items()}),
                "library": df["gemm_dtype"].map({k: v[1] for k, v in GEMM_DTYPES.items()}),
                "m": df["m"], "n": df["n"], "k": df["k"]}
    elif kind in ("prefill", "decode"):
        pairs = {(k, c): ATTENTION_LIBRARIES[k](c) if k in ATTENTION_LIBRARIES else None
                 for k, c in set(zip(df["kernel_source"], cc))}
        lib = np.array([pairs[p] for p in zip(df["kernel_source"], cc)], dtype=object)
        unmapped = lib == None  # noqa: E711 (elementwise)
        if unmapped.any():
            for (k, c), n in df.loc[unmapped].assign(_cc=cc[unmapped]).groupby(["kernel_source", "_cc"]).size().items():
                why = "not modelled" if k not in ATTENTION_LIBRARIES else f"not mapped on cc {c}.x"
                report.drop(f"attention kernel_source {k} {why}", n)
            keep = ~unmapped
            df, lib, cc = df[keep], lib[keep], cc[keep]
            common = {k: v[keep] for k, v in common.items()}
        kv = df["kv_cache_dtype"].map(KV_DTYPES)
        fp8_ok = (kind == "decode") & (lib == "flashinfer")
        bad_kv = kv.isna() | ((kv == "fp8_e4m3") & ~fp8_ok)
        if bad_kv.any():
            report.drop("attention fp8 KV cache (modelled for flashinfer decode only)", int(bad_kv.sum()))
            keep = ~bad_kv.to_numpy()
            df, lib, kv = df[keep], lib[keep], kv[keep]
            common = {k: v[keep] for k, v in common.items()}
        isl = df["isl"].astype("int64")
        if kind == "prefill":
            q, kvl, causal = isl, isl, True
        else:
            # Generation rows: one new token (isl == 1) attending to isl + step cached tokens.
            q, kvl, causal = 1, isl + df["step"].astype("int64"), False
        case = {"family": "attention", "dtype": "bf16", "library": lib, "phase": kind,
                "batch": df["batch_size"], "q_len": q, "kv_len": kvl, "num_heads": df["num_heads"],
                "num_kv_heads": df["num_key_value_heads"], "head_dim": df["head_dim"], "causal": causal,
                "kv_cache_dtype": kv, "page_size": PAGE_SIZE,
                # whose FA3 call it is (vLLM makes the scheduler metadata ahead, SGLang does not)
                "engine": [fw if lb == "flash_attn3" else None for fw, lb in zip(common["framework"], lib)]}
    else:  # moe
        rule = df["kernel_source"].map(MOE_KERNELS)
        df2 = _drop_by_value(df, rule.isna(), "kernel_source", "moe kernel_source {} is not the Triton fused MoE",
                             report)
        keep = df.index.isin(df2.index)
        df, rule = df2, rule[keep]
        common = {k: v[keep] for k, v in common.items()}
        masks = [
            (df["distribution"] != "balanced", "moe routing distribution not balanced (power-law routing is not modelled)"),
            (df["moe_ep_size"] != 1, "moe expert parallel (moe_ep_size > 1) not modelled"),
            (df["inter_size"] % df["moe_tp_size"] != 0, "moe inter_size not divisible by moe_tp_size"),
        ]
        for mask, reason in masks:
            mask = mask.reindex(df.index)
            if mask.any():
                report.drop(reason, int(mask.sum()))
                keep = ~mask.to_numpy()
                df, rule = df[keep], rule[keep]
                common = {k: v[keep] for k, v in common.items()}
        intermediate = df["inter_size"] // df["moe_tp_size"]
        engine = rule.str.removesuffix("_default")
        case = {"family": "moe", "dtype": "bf16", "library": "triton_fused_moe", "tokens": df["num_tokens"],
                "hidden": df["hidden_size"], "intermediate": intermediate,
                "num_experts": df["num_experts"], "topk": df["topk"], "stage": "all",
                "config": _engine_configs(engine, df["version"], df["device"].map(lambda d: dev[d][0]),
                                          df["num_tokens"], df["num_experts"], df["hidden_size"], intermediate,
                                          df["topk"]),
                "routing": "balanced", "engine": engine}
    if not len(df):
        return
    latency_us = df["latency"].astype(float).to_numpy() * 1000.0   # ms -> µs
    off = _off_the_other_versions(case, common["gpu"], common["framework"], common["framework_version"], latency_us)
    if off.any():
        report.drop(f"more than {VERSION_SPREAD:g}x off the median of {VERSION_QUORUM}+ versions of its framework"
                    f" for the same GPU and case", int(off.sum()))
        keep = ~off
        case = {k: _take(v, keep) for k, v in case.items()}
        common = {k: _take(v, keep) for k, v in common.items()}
        latency_us = latency_us[keep]
    yield from emit(case, common, latency_us.tolist(), report, validator, source=SOURCE, cache=CACHE)


def _take(value, keep):
    """``value`` (a column or a constant) at the rows ``keep`` marks."""
    import numpy as np

    if not _is_column(value):
        return value
    return np.asarray(value, dtype=object)[keep] if isinstance(value, list) else \
        (value[keep] if isinstance(value, np.ndarray) else value.to_numpy()[keep])
