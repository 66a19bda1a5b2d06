"""Sampling plans: deterministic lists of cases mixing real model shapes and
log-uniform random shapes (pure Python, no torch).

    plan(family, n, seed, library=None, dtype=None) -> list[dict]

Real shapes come from the MODELS table (public model configs) at tensor
parallel sizes 1, 2, 4, 8; random shapes are drawn log-uniformly.  Every case
carries a memory estimate check: cases whose inputs exceed MAX_CASE_BYTES are
dropped.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Dict, List, Optional

from synperf.kernels.attention import DECODE_GROUP_SIZES, FA3_HEAD_DIMS
from synperf.kernels.rope import FLASHINFER_HEAD_DIMS as FLASHINFER_ROPE_HEAD_DIMS

from .cases import canonical_json, estimate_bytes

MAX_CASE_BYTES = 40 * 10**9
TPS = (1, 2, 4, 8)
REAL_FRACTION = 0.6

# name: (hidden, heads, kv_heads, head_dim, dense_intermediate, vocab, moe)
# moe: None or (num_experts, topk, moe_intermediate, shared_intermediate)
# Attention of MLA models (DeepSeek) is given as the decompressed MHA shape
# used in prefill (head_dim = qk_nope + qk_rope = 192).
MODELS: Dict[str, tuple] = {
    "llama-3.2-1b": (2048, 32, 8, 64, 8192, 128256, None),
    "llama-3.2-3b": (3072, 24, 8, 128, 8192, 128256, None),
    "llama-3.1-8b": (4096, 32, 8, 128, 14336, 128256, None),
    "llama-3.1-70b": (8192, 64, 8, 128, 28672, 128256, None),
    "llama-3.1-405b": (16384, 128, 8, 128, 53248, 128256, None),
    "qwen2.5-0.5b": (896, 14, 2, 64, 4864, 151936, None),
    "qwen2.5-1.5b": (1536, 12, 2, 128, 8960, 151936, None),
    "qwen2.5-3b": (2048, 16, 2, 128, 11008, 151936, None),
    "qwen2.5-7b": (3584, 28, 4, 128, 18944, 152064, None),
    "qwen2.5-14b": (5120, 40, 8, 128, 13824, 152064, None),
    "qwen2.5-32b": (5120, 40, 8, 128, 27648, 152064, None),
    "qwen2.5-72b": (8192, 64, 8, 128, 29568, 152064, None),
    "qwen3-0.6b": (1024, 16, 8, 128, 3072, 151936, None),
    "qwen3-1.7b": (2048, 16, 8, 128, 6144, 151936, None),
    "qwen3-4b": (2560, 32, 8, 128, 9728, 151936, None),
    "qwen3-8b": (4096, 32, 8, 128, 12288, 151936, None),
    "qwen3-14b": (5120, 40, 8, 128, 17408, 151936, None),
    "qwen3-32b": (5120, 64, 8, 128, 25600, 151936, None),
    "qwen3-30b-a3b": (2048, 32, 4, 128, 6144, 151936, (128, 8, 768, 0)),
    "qwen3-235b-a22b": (4096, 64, 4, 128, 12288, 151936, (128, 8, 1536, 0)),
    "mistral-7b": (4096, 32, 8, 128, 14336, 32768, None),
    "mixtral-8x7b": (4096, 32, 8, 128, 14336, 32000, (8, 2, 14336, 0)),
    "deepseek-v2-lite": (2048, 16, 16, 192, 10944, 102400, (64, 6, 1408, 2816)),
    "deepseek-v3": (7168, 128, 128, 192, 18432, 129280, (256, 8, 2048, 2048)),
    "gemma-2-2b": (2304, 8, 4, 256, 9216, 256000, None),
    "gemma-2-9b": (3584, 16, 8, 256, 14336, 256000, None),
    "gemma-2-27b": (4608, 32, 16, 128, 36864, 256000, None),
    "gemma-3-1b": (1152, 4, 1, 256, 6912, 262144, None),
    "gemma-3-4b": (2560, 8, 4, 256, 10240, 262208, None),
    "gemma-3-12b": (3840, 16, 8, 256, 15360, 262208, None),
    "gemma-3-27b": (5376, 32, 16, 128, 21504, 262208, None),
    "phi-3-mini": (3072, 32, 32, 96, 8192, 32064, None),
    "phi-3-medium": (5120, 40, 10, 128, 17920, 32064, None),
    "phi-4": (5120, 40, 10, 128, 17920, 100352, None),
    "phi-4-mini": (3072, 24, 8, 128, 8192, 200064, None),
    "gpt-oss-20b": (2880, 64, 8, 64, 2880, 201088, (32, 4, 2880, 0)),
    "gpt-oss-120b": (2880, 64, 8, 64, 2880, 201088, (128, 4, 2880, 0)),
}

# DeepSeek MLA projection GEMMs (n, k) at TP 1: q_a / q_b (V3), kv_a, kv_b, o.
MLA_GEMMS = {
    "deepseek-v2-lite": {"q": (16 * 192, 2048), "kv_a": (576, 2048), "kv_b": (16 * 256, 512), "o": (2048, 16 * 128)},
    "deepseek-v3": {
        "q_a": (1536, 7168),
        "q_b": (128 * 192, 1536),
        "kv_a": (576, 7168),
        "kv_b": (128 * 256, 512),
        "o": (7168, 128 * 128),
    },
}

HEAD_DIMS = (64, 80, 96, 128, 192, 256)
GQA_RATIOS = (1, 2, 3, 4, 5, 6, 7, 8, 12, 16)

ALL_LIBRARIES = {
    "gemm": ("cublas", "cublaslt_scaled_mm"),
    "attention": ("flash_attn2_torch_sdpa",),
    "moe": ("triton_fused_moe",),
    "rmsnorm": ("torch", "triton"),
    "silu_and_mul": ("torch", "triton"),
    "rope": ("torch", "triton"),
}


# ------------------------------------------------------------- helpers


def _log_uniform_int(rng: random.Random, lo: int, hi: int) -> int:
    return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def _tokens(rng: random.Random, lo: int = 1, hi: int = 32768) -> int:
    # mix of "nice" batch sizes and arbitrary ones
    if rng.random() < 0.3:
        choices = [2**i for i in range(int(math.log2(lo)) if lo > 1 else 0, int(math.log2(hi)) + 1)]
        return max(lo, min(hi, rng.choice(choices)))
    return max(lo, min(hi, _log_uniform_int(rng, lo, hi)))


def _shard_heads(heads: int, kv: int, tp: int):
    if heads % tp:
        return None
    return heads // tp, max(1, kv // tp) if kv >= tp else 1


def _valid_tps(model: str) -> List[int]:
    hidden, heads, kv, hd, inter, vocab, moe = MODELS[model]
    out = []
    for tp in TPS:
        if heads % tp or inter % tp:
            continue
        if moe and moe[2] % tp:
            continue
        out.append(tp)
    return out


def _pick_model(rng: random.Random, moe_only: bool = False):
    names = [m for m in MODELS if (MODELS[m][6] is not None or not moe_only)]
    name = rng.choice(names)
    tp = rng.choice(_valid_tps(name) or [1])
    return name, tp


def _gemm_dtype_lib(rng, library, dtype):
    if library is None and dtype is None:
        r = rng.random()
        if r < 0.6:
            return "cublas", "bf16"
        if r < 0.8:
            return "cublas", "fp16"
        return "cublaslt_scaled_mm", "fp8_e4m3"
    if library is None:
        return ("cublaslt_scaled_mm" if dtype == "fp8_e4m3" else "cublas"), dtype
    if dtype is None:
        if library == "cublaslt_scaled_mm" or library == "fp8_block":
            return library, "fp8_e4m3"
        return library, rng.choice(["bf16", "bf16", "fp16"])
    return library, dtype


def _act_dtype(rng, dtype):
    if dtype is not None:
        return dtype
    return "bf16" if rng.random() < 0.75 else "fp16"


def _lib(rng, family, library):
    return library if library is not None else rng.choice(ALL_LIBRARIES[family])


# ---------------------------------------------------------- per family


def _gemm_case(rng, library, dtype):
    lib, dt = _gemm_dtype_lib(rng, library, dtype)
    if rng.random() < REAL_FRACTION:
        name, tp = _pick_model(rng)
        hidden, heads, kv, hd, inter, vocab, moe = MODELS[name]
        sh = _shard_heads(heads, kv, tp)
        hq, hkv = sh if sh else (heads, kv)
        if name in MLA_GEMMS:
            layers = {}
            for lname, (n, k) in MLA_GEMMS[name].items():
                if lname in ("q", "q_b", "kv_b"):
                    layers[lname] = (n // tp, k)
                elif lname == "o":
                    layers[lname] = (n, k // tp)
                else:
                    layers[lname] = (n, k)
        else:
            layers = {
                "qkv": ((hq + 2 * hkv) * hd, hidden),
                "o": (hidden, hq * hd),
            }
        dense_inter = inter if moe is None else (moe[3] or inter)
        layers["gate_up"] = (2 * dense_inter // tp, hidden)
        layers["down"] = (hidden, dense_inter // tp)
        layers["lm_head"] = (_round_up(vocab, tp) // tp, hidden)
        n, k = layers[rng.choice(sorted(layers))]
        m = _tokens(rng)
    else:
        m = _tokens(rng)
        n = _round_up(_log_uniform_int(rng, 64, 65536), 16)
        k = _round_up(_log_uniform_int(rng, 64, 32768), 16)
    if dt == "fp8_e4m3":
        m, n, k = _round_up(m, 16), _round_up(n, 16), _round_up(k, 16)
    return {"family": "gemm", "dtype": dt, "library": lib, "m": m, "n": n, "k": k}


FLASHINFER_HEAD_DIMS = (64, 128, 256)   # one JIT build per head dim and kernel (~10-40 s each on the GPU)
FLASHINFER_PAGE_SIZES = (1, 16, 64)    # SGLang's default page, vLLM's, TensorRT-LLM's (aiconfigurator's rows)
FP8_KV_FRACTION = 0.25                   # decodes over an FP8 KV cache (FlashInfer dequantises in its decode kernel)


def _heads(rng, head_dims=HEAD_DIMS):
    """(num_heads, num_kv_heads, head_dim) of a real model's TP shard, or random."""
    if rng.random() < REAL_FRACTION:
        for _ in range(100):
            name, tp = _pick_model(rng)
            hidden, heads, kv, hd, inter, vocab, moe = MODELS[name]
            sh = _shard_heads(heads, kv, tp)
            if sh and hd in head_dims:
                return sh[0], sh[1], hd
    hd = rng.choice(head_dims)
    ratio = rng.choice(GQA_RATIOS)
    hkv = rng.choice([1, 1, 2, 4, 8, 8, 16, 32]) if ratio > 1 else rng.choice([4, 8, 16, 32, 64])
    while hkv * ratio > 128 and hkv > 1:
        hkv //= 2
    return hkv * ratio, hkv, hd


def _flashinfer_attention_case(rng, lib, dt):
    """FlashInfer as serving engines call it: paged decode (CUDA-core kernels) at page size 1, 16 or 64,
    eager or with the CUDA-graph plan, over a BF16 or FP8 KV cache, and FA2 (``flashinfer``) / FA3 (``fa3``) prefill on a ragged
    or paged KV; uniform or mixed per-request lengths."""
    hq, hkv, hd = _heads(rng, FLASHINFER_HEAD_DIMS)
    mixed = rng.random() < 0.5
    if lib == "flashinfer" and rng.random() < 0.6:
        batch = _log_uniform_int(rng, 1, 512)
        kv = [_log_uniform_int(rng, 1, 131072) for _ in range(batch)] if mixed else [_log_uniform_int(rng, 1, 131072)] * batch
        per_token = 2 * hkv * hd * 2
        while len(kv) > 1 and sum(kv) * per_token > 0.8 * MAX_CASE_BYTES:
            kv.pop()
        case = {"phase": "decode", "batch": len(kv), "page_size": rng.choice(FLASHINFER_PAGE_SIZES)}
        if hq // hkv in DECODE_GROUP_SIZES:          # the CUDA-core kernel's group sizes
            case["cuda_graph"] = rng.random() < 0.5
        if rng.random() < FP8_KV_FRACTION:
            case["kv_cache_dtype"] = "fp8_e4m3"
    else:
        q_len = _log_uniform_int(rng, 16, 32768)
        batch = max(1, min(_log_uniform_int(rng, 1, 16), 65536 // q_len))
        q = [_log_uniform_int(rng, 16, q_len) for _ in range(batch)] if mixed else [q_len] * batch
        kv = [x if rng.random() < 0.7 else x + _log_uniform_int(rng, 1, 32768) for x in q]
        case = {"phase": "prefill", "batch": batch, "causal": True}
        if mixed:
            case["q_lens"] = q
        else:
            case["q_len"] = q_len
        if rng.random() < 0.5:
            case["page_size"] = rng.choice(FLASHINFER_PAGE_SIZES)
    if mixed:
        case["kv_lens"] = kv
    else:
        case["kv_len"] = kv[0]
    return {"family": "attention", "dtype": dt, "library": lib, "num_heads": hq, "num_kv_heads": hkv,
            "head_dim": hd, "kv_cache_dtype": dt, **case}


def _flash_attn3_case(rng, dt):
    """FlashAttention-3 as vLLM calls it (``ops._build_flash_attn3``): decode, prefill and mixed
    batches (decode requests next to chunked prefills, as a continuous-batching step has them),
    always over the paged cache; called as vLLM (page size 16 mostly) or SGLang (1 mostly) calls it."""
    hq, hkv, hd = _heads(rng, FA3_HEAD_DIMS)
    per_token = 2 * hkv * hd * 2
    kind = rng.choices(("decode", "prefill", "mixed"), (0.5, 0.35, 0.15))[0]
    if kind == "decode":
        batch = _log_uniform_int(rng, 1, 512)
        kv = ([_log_uniform_int(rng, 1, 131072) for _ in range(batch)] if rng.random() < 0.5
              else [_log_uniform_int(rng, 1, 131072)] * batch)
        q = [1] * len(kv)
    else:
        q_len = _log_uniform_int(rng, 16, 16384)
        batch = max(1, min(_log_uniform_int(rng, 1, 16), 32768 // q_len))
        q = [_log_uniform_int(rng, 16, q_len) for _ in range(batch)] if rng.random() < 0.5 else [q_len] * batch
        kv = [x if rng.random() < 0.7 else x + _log_uniform_int(rng, 1, 32768) for x in q]
        if kind == "mixed":
            decodes = _log_uniform_int(rng, 1, 256)
            q += [1] * decodes
            kv += [_log_uniform_int(rng, 16, 32768) for _ in range(decodes)]
    while len(kv) > 1 and sum(kv) * per_token > 0.8 * MAX_CASE_BYTES:
        kv.pop()
        q.pop()
    lengths = {"kv_lens": kv} if kind == "decode" else {"q_lens": q, "kv_lens": kv}
    engine = rng.choice(("vllm", "vllm", "sglang"))
    page = rng.choice((16, 16, 1)) if engine == "vllm" else rng.choice((1, 1, 16, 64))
    return {"family": "attention", "dtype": dt, "library": "flash_attn3", "num_heads": hq, "num_kv_heads": hkv,
            "head_dim": hd, "kv_cache_dtype": dt, "phase": "decode" if kind == "decode" else "prefill",
            "batch": len(kv), **lengths, "causal": kind != "decode", "page_size": page, "engine": engine}


def _attention_case(rng, library, dtype):
    lib = _lib(rng, "attention", library)
    if lib in ("flashinfer", "fa3"):
        return _flashinfer_attention_case(rng, lib, dtype or "bf16")
    if lib == "flash_attn3":
        return _flash_attn3_case(rng, dtype or "bf16")
    dt = _act_dtype(rng, dtype)
    if rng.random() < REAL_FRACTION:
        name, tp = _pick_model(rng)
        hidden, heads, kv, hd, inter, vocab, moe = MODELS[name]
        sh = _shard_heads(heads, kv, tp)
        hq, hkv = sh if sh else (heads, kv)
    else:
        hd = rng.choice(HEAD_DIMS)
        ratio = rng.choice(GQA_RATIOS)
        hkv = rng.choice([1, 1, 2, 4, 8, 8, 16, 32]) if ratio > 1 else rng.choice([4, 8, 16, 32, 64])
        while hkv * ratio > 128 and hkv > 1:
            hkv //= 2
        hq = hkv * ratio
    eb = 2
    if rng.random() < 0.5:
        phase = "decode"
        kv_len = _log_uniform_int(rng, 1, 131072)
        batch = _log_uniform_int(rng, 1, 512)
        per_seq = 2 * hkv * kv_len * hd * eb
        batch = max(1, min(batch, int(0.8 * MAX_CASE_BYTES) // max(per_seq, 1)))
        q_len, causal = 1, False
    else:
        phase = "prefill"
        q_len = _log_uniform_int(rng, 16, 32768)
        batch = max(1, min(_log_uniform_int(rng, 1, 16), 65536 // q_len))
        kv_len = q_len if rng.random() < 0.7 else q_len + _log_uniform_int(rng, 1, 32768)
        causal = True
    return {
        "family": "attention",
        "dtype": dt,
        "library": lib,
        "phase": phase,
        "batch": batch,
        "q_len": q_len,
        "kv_len": kv_len,
        "num_heads": hq,
        "num_kv_heads": hkv,
        "head_dim": hd,
        "causal": causal,
        "kv_cache_dtype": dt,
        "page_size": 16,
    }


BLOCK_M = (16, 32, 64, 128)
BLOCK_N = (32, 64, 128, 256)
BLOCK_K = (32, 64, 128, 256)


def _random_moe_config(rng) -> Dict[str, int]:
    while True:
        cfg = {
            "BLOCK_SIZE_M": rng.choice(BLOCK_M),
            "BLOCK_SIZE_N": rng.choice(BLOCK_N),
            "BLOCK_SIZE_K": rng.choice(BLOCK_K),
            "GROUP_SIZE_M": rng.choice((1, 8, 16, 32, 64)),
            "num_warps": rng.choice((4, 8)),
            "num_stages": rng.choice((2, 3, 4, 5)),
        }
        smem = (cfg["BLOCK_SIZE_M"] + cfg["BLOCK_SIZE_N"]) * cfg["BLOCK_SIZE_K"] * 2 * cfg["num_stages"]
        if smem <= 160 * 1024:
            return cfg


def _moe_case(rng, library, dtype):
    dt = _act_dtype(rng, dtype)
    lib = _lib(rng, "moe", library)
    if rng.random() < REAL_FRACTION:
        name, tp = _pick_model(rng, moe_only=True)
        hidden, heads, kv, hd, inter, vocab, moe = MODELS[name]
        E, topk, mi, _ = moe
        intermediate = mi // tp
    else:
        hidden = _round_up(_log_uniform_int(rng, 512, 8192), 128)
        intermediate = _round_up(_log_uniform_int(rng, 128, 8192), 64)
        E = rng.choice((8, 16, 32, 64, 128, 256))
        topk = min(E, rng.choice((1, 2, 4, 6, 8)))
    tokens = _tokens(rng)
    r = rng.random()
    cfg: Any = "vllm_default" if r < 0.35 else ("sglang_default" if r < 0.5 else _random_moe_config(rng))
    return {
        "family": "moe",
        "dtype": dt,
        "library": lib,
        "tokens": tokens,
        "hidden": hidden,
        "intermediate": intermediate,
        "num_experts": E,
        "topk": topk,
        "stage": rng.choice(("w13", "w2", "all")),
        "config": cfg,
    }


def _real_hidden(rng):
    name, tp = _pick_model(rng)
    return MODELS[name][0]


def _rmsnorm_case(rng, library, dtype):
    hidden = _real_hidden(rng) if rng.random() < REAL_FRACTION else _round_up(_log_uniform_int(rng, 256, 16384), 8)
    return {
        "family": "rmsnorm",
        "dtype": _act_dtype(rng, dtype),
        "library": _lib(rng, "rmsnorm", library),
        "tokens": _tokens(rng),
        "hidden": hidden,
        "residual": rng.random() < 0.5,
    }


def _qk_norm_case(rng, library, dtype):
    """Qwen3's and Gemma 3's per-head q/k RMSNorm: a row per token and head of one rank, head_dim wide."""
    name, tp = rng.choice([(m, tp) for m in ("qwen3-0.6b", "qwen3-8b", "qwen3-32b", "qwen3-30b-a3b",
                                             "qwen3-235b-a22b", "gemma-3-1b", "gemma-3-27b")
                           for tp in _valid_tps(m)])
    hidden, heads, kv, hd, inter, vocab, moe = MODELS[name]
    heads_per_rank = max(1, (heads if rng.random() < 0.5 else kv) // tp)
    return {
        "family": "rmsnorm",
        "dtype": _act_dtype(rng, dtype),
        "library": _lib(rng, "rmsnorm", library),
        "tokens": _tokens(rng) * heads_per_rank,
        "hidden": hd,
        "residual": False,
    }


def _silu_case(rng, library, dtype):
    tokens = _tokens(rng)
    if rng.random() < REAL_FRACTION:
        name, tp = _pick_model(rng)
        hidden, heads, kv, hd, inter, vocab, moe = MODELS[name]
        if moe is not None and rng.random() < 0.5:
            inter = moe[2]
            tokens = min(32768 * 8, tokens * moe[1])  # expanded rows inside fused MoE
        intermediate = inter // tp
    else:
        intermediate = _round_up(_log_uniform_int(rng, 128, 32768), 8)
    return {
        "family": "silu_and_mul",
        "dtype": _act_dtype(rng, dtype),
        "library": _lib(rng, "silu_and_mul", library),
        "tokens": tokens,
        "intermediate": intermediate,
    }


def _rope_case(rng, library, dtype):
    if rng.random() < REAL_FRACTION:
        name, tp = _pick_model(rng)
        hidden, heads, kv, hd, inter, vocab, moe = MODELS[name]
        sh = _shard_heads(heads, kv, tp)
        hq, hkv = sh if sh else (heads, kv)
        if name in MLA_GEMMS:
            hd, hkv = 64, 1  # MLA applies RoPE to the 64-dim rope part; k_pe is one shared head
    else:
        hd = rng.choice((64, 128, 128, 256, 80, 96))
        hkv = rng.choice((1, 2, 4, 8, 16))
        hq = hkv * rng.choice(GQA_RATIOS)
    dtype = _act_dtype(rng, dtype)
    library = _lib(rng, "rope", library)
    if library == "flashinfer" and hd not in FLASHINFER_ROPE_HEAD_DIMS:   # FlashInfer refuses the call
        hd = rng.choice((64, 128, 256))
    return {
        "family": "rope",
        "dtype": dtype,
        "library": library,
        "tokens": _tokens(rng),
        "num_heads": hq,
        "num_kv_heads": hkv,
        "head_dim": hd,
    }


GENERATORS: Dict[str, Callable] = {
    "gemm": _gemm_case,
    "attention": _attention_case,
    "moe": _moe_case,
    "rmsnorm": _rmsnorm_case,
    "rmsnorm_qk": _qk_norm_case,     # rmsnorm cases of the q/k-norm shape (a plan of its own: the
                                     # rmsnorm plans of earlier seeds stay as they were drawn)
    "silu_and_mul": _silu_case,
    "rope": _rope_case,
}


def plan(family: str, n: int, seed: int, library: Optional[str] = None, dtype: Optional[str] = None) -> List[Dict[str, Any]]:
    """``n`` distinct cases of ``family``, deterministic given ``seed``."""
    if family not in GENERATORS:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(GENERATORS)}")
    rng = random.Random(f"synperf-plan:{family}:{seed}:{library}:{dtype}")
    gen = GENERATORS[family]
    out: List[Dict[str, Any]] = []
    seen = set()
    attempts = 0
    while len(out) < n and attempts < 50 * n + 100:
        attempts += 1
        c = gen(rng, library, dtype)
        if estimate_bytes(c) > MAX_CASE_BYTES:
            continue
        key = canonical_json(c)
        if key in seen:
            continue
        seen.add(key)
        out.append(c)
    return out


def plan_many(families, n: int, seed: int, library=None, dtype=None) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    for fam in families:
        out.extend(plan(fam, n, seed, library=library, dtype=dtype))
    return out
