"""microsoft/vidur per-layer operator profiles -> synperf records.

Layout: ``compute/<gpu>/<org>/<model>/mlp.csv`` (``attention.csv`` next to it, when present, is not
imported). One CSV row is one (num_tokens, TP degree) point of one model; its ``time_stats.<op>.*``
columns are per-op times in **ms** (min/max/mean/median/std over vidur's repeats; the median is
taken) and the shape columns (``n_head, n_kv_head, n_embd, n_expanded_embd, use_gated_mlp,
num_tokens, num_tensor_parallel_workers``) give the per-GPU shapes. Each op of a row is one
measurement ("read" counts them).

vidur's profiler runs sarathi-serve's layers in fp16: ColumnParallelLinear / RowParallelLinear
(torch ``F.linear`` -> cuBLAS), and sarathi's CUDA kernels (vLLM-derived, one fused kernel each) for
RMSNorm, SiLU-and-mul and rotary embedding. See docs/importers.md for the op mapping, the library
chosen for those fused kernels and the cache state.
"""

from __future__ import annotations

import os
from typing import Iterator

from synperf.importers import CaseValidator, Report, emit, read_csv_rows

SOURCE = "vidur"
FRAMEWORK = "sarathi-serve"
DTYPE = "fp16"
STAT = "median"

# vidur's compute/<gpu> folder -> synperf GPU id (assumed: the 80 GB SXM A100 and H100; the CSVs name no device).
GPUS = {"a100": "a100-sxm4-80gb", "h100": "h100-sxm", "a40": "a40", "a10": "a10"}

# The models vidur covers: (n_head, n_kv_head, hidden, intermediate, norm, gated MLP). Used to
# check the CSV's shape columns and to know the norm/activation (phi-2: LayerNorm + GELU).
MODELS = {
    "microsoft/phi-2": (32, 32, 2560, 10240, "layer_norm", False),
    "meta-llama/Llama-2-7b-hf": (32, 32, 4096, 11008, "rms_norm", True),
    "meta-llama/Llama-2-70b-hf": (64, 8, 8192, 28672, "rms_norm", True),
    "meta-llama/Meta-Llama-3-8B": (32, 8, 4096, 14336, "rms_norm", True),
    "meta-llama/Meta-Llama-3-70B": (64, 8, 8192, 28672, "rms_norm", True),
    "codellama/CodeLlama-34b-Instruct-hf": (64, 8, 8192, 22016, "rms_norm", True),
    "internlm/internlm-20b": (40, 40, 5120, 13824, "rms_norm", True),
    "Qwen/Qwen-72B": (64, 64, 8192, 24576, "rms_norm", True),
}

GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
NORM_OPS = ("input_layernorm", "post_attention_layernorm")
UNMODELLED_OPS = {"emb": "embedding lookup", "add": "residual add"}

# GEMMs stream weights that were last touched one layer pass earlier (each layer's weights exceed
# L2), so they are cold. The fused element-wise kernels read what the kernel just before wrote
# (embedding/residual output, QKV output, up-projection output), so they are warm.
GEMM_CACHE = "cold"
ELEMENTWISE_CACHE = "warm"
# sarathi's rms_norm / silu_and_mul / rotary_embedding are single fused CUDA kernels (one CTA per
# token), closest to synperf's "flashinfer" decomposition; synperf's "torch" is PyTorch eager's
# multi-kernel composition. Override with elementwise_library="torch" if you prefer.
ELEMENTWISE_LIBRARY = "flashinfer"


def csv_files(path: str) -> list[tuple[str, str, str]]:
    """(file, gpu folder, model "org/name") for every compute/<gpu>/<org>/<model>/*.csv."""
    if not os.path.isdir(path):
        from synperf.errors import SynperfError
        raise SynperfError(f"no such folder: {path}")
    root = os.path.join(path, "compute") if os.path.isdir(os.path.join(path, "compute")) else path
    out = []
    for dirpath, _dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root).split(os.sep)
        for f in files:
            if f.endswith(".csv") and len(rel) == 3:
                out.append((os.path.join(dirpath, f), rel[0], f"{rel[1]}/{rel[2]}"))
    return sorted(out)


def iter_records(path: str, report: Report, *, limit: int | None = None,
                 elementwise_library: str = ELEMENTWISE_LIBRARY) -> Iterator[dict]:
    validator = CaseValidator()
    for file, gpu_dir, model in csv_files(path):
        if limit is not None and report.read >= limit:
            break
        rows = read_csv_rows(file)
        ops = [c[len("time_stats."):-len(".median")] for c in (rows[0] if rows else {})
               if c.startswith("time_stats.") and c.endswith(".median")]
        if os.path.basename(file) != "mlp.csv":
            n = len(rows) * max(len(ops), 1)
            n = n if limit is None else min(n, limit - report.read)
            report.read += n
            report.drop(f"vidur {os.path.basename(file)} not imported", n)
            continue
        yield from _records_of_rows(rows, ops, gpu_dir, model, report, validator, limit, elementwise_library)


def _records_of_rows(rows, ops, gpu_dir, model, report, validator, limit, ew_library) -> Iterator[dict]:
    gpu = GPUS.get(gpu_dir.lower())
    spec = MODELS.get(model)
    for row in rows:
        for op in ops:
            if limit is not None and report.read >= limit:
                return
            report.read += 1
            try:
                ms = float(row[f"time_stats.{op}.{STAT}"])
            except (KeyError, ValueError):
                ms = float("nan")
            if gpu is None:
                report.drop(f"vidur GPU folder {gpu_dir!r} not mapped")
                continue
            if not ms > 0:
                report.drop("latency <= 0 or missing")
                continue
            if op in UNMODELLED_OPS:
                report.drop(f"vidur op {op} ({UNMODELLED_OPS[op]}) not modelled")
                continue
            h, hkv, e, inter = (int(row[k]) for k in ("n_head", "n_kv_head", "n_embd", "n_expanded_embd"))
            gated = row["use_gated_mlp"].strip().lower() == "true"
            t, tp = int(row["num_tokens"]), int(row["num_tensor_parallel_workers"])
            if spec is not None and spec[:4] != (h, hkv, e, inter):
                report.drop("vidur shape columns disagree with the model table")
                continue
            norm = spec[4] if spec is not None else ("rms_norm" if gated else "layer_norm")
            if e % h or h % tp or hkv % tp or inter % tp:
                report.drop("vidur shapes not divisible by the TP degree")
                continue
            d = e // h
            if op in GEMM_OPS:
                n, k = {
                    "attn_pre_proj": ((h + 2 * hkv) * d // tp, e),
                    "attn_post_proj": (e, h * d // tp),
                    "mlp_up_proj": ((2 if gated else 1) * inter // tp, e),
                    "mlp_down_proj": (e, inter // tp),
                }[op]
                case = {"family": "gemm", "dtype": DTYPE, "library": "cublas", "m": t, "n": n, "k": k}
                cache, kernel = GEMM_CACHE, f"sarathi {op} (F.linear)"
            elif op in NORM_OPS:
                if norm != "rms_norm":
                    report.drop("vidur LayerNorm (not RMSNorm) not modelled")
                    continue
                case = {"family": "rmsnorm", "dtype": DTYPE, "library": ew_library, "tokens": t, "hidden": e,
                        "residual": False}
                cache, kernel = ELEMENTWISE_CACHE, "sarathi rms_norm CUDA kernel"
            elif op == "mlp_act":
                if not gated:
                    report.drop("vidur GELU activation (not SiLU-and-mul) not modelled")
                    continue
                case = {"family": "silu_and_mul", "dtype": DTYPE, "library": ew_library, "tokens": t,
                        "intermediate": inter // tp}
                cache, kernel = ELEMENTWISE_CACHE, "sarathi silu_and_mul CUDA kernel"
            elif op == "attn_rope":
                case = {"family": "rope", "dtype": DTYPE, "library": ew_library, "tokens": t,
                        "num_heads": h // tp, "num_kv_heads": hkv // tp, "head_dim": d}
                cache, kernel = ELEMENTWISE_CACHE, "sarathi rotary_embedding CUDA kernel"
            else:
                report.drop(f"vidur op {op} not modelled")
                continue
            yield from emit(case, {"gpu": gpu, "framework": FRAMEWORK, "kernel_source": kernel},
                            [ms * 1000.0], report, validator, source=SOURCE, cache=cache,
                            extra={"model": model, "tp": tp})
