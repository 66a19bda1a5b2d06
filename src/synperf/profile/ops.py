"""Build the timed callable of a case (inputs are created here, outside the
timed region).  Requires torch with CUDA (or CPU for the pure-torch paths)."""

from __future__ import annotations

import itertools

from dataclasses import dataclass, field
from typing import Any, Callable, Dict

import torch
import torch.nn.functional as F

from .cases import normalize_case
from ..kernels.attention import DECODE_GROUP_SIZES


class UnsupportedCase(Exception):
    """The case cannot be run by this harness (library/dtype/shape)."""


TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Op:
    fn: Callable[[], Any]
    meta: Dict[str, Any] = field(default_factory=dict)
    keep: Any = None  # tensors kept alive while the op is timed


def _act_dtype(case) -> torch.dtype:
    dt = case["dtype"]
    if dt not in TORCH_DTYPES:
        raise UnsupportedCase(f"dtype {dt!r} is not supported for family {case['family']!r} / library {case['library']!r}")
    return TORCH_DTYPES[dt]


def _randn(shape, dtype, device, scale=1.0):
    t = torch.randn(shape, dtype=dtype, device=device)
    if scale != 1.0:
        t.mul_(scale)
    return t


def _import_flashinfer():
    try:
        import flashinfer  # noqa: F401
    except Exception as e:  # ImportError or a broken install
        raise UnsupportedCase(f"library 'flashinfer' is not importable here ({type(e).__name__}: {e})")
    return flashinfer


# ------------------------------------------------------------------ gemm


def build_gemm(c, device) -> Op:
    m, n, k = int(c["m"]), int(c["n"]), int(c["k"])
    lib = c["library"]
    if lib == "cublas":
        dt = _act_dtype(c)
        x = _randn((m, k), dt, device)
        w = _randn((n, k), dt, device, scale=k ** -0.5)
        return Op(lambda: F.linear(x, w), {"impl_note": "torch.nn.functional.linear"}, (x, w))
    if lib == "cublaslt_scaled_mm":
        if c["dtype"] != "fp8_e4m3":
            raise UnsupportedCase("library 'cublaslt_scaled_mm' needs dtype 'fp8_e4m3'")
        if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
            raise UnsupportedCase("this torch has no float8_e4m3fn / _scaled_mm")
        if torch.device(device).type == "cuda":
            cap = torch.cuda.get_device_capability(device)
            if cap < (8, 9):
                raise UnsupportedCase(f"FP8 _scaled_mm needs compute capability >= 8.9, device has {cap}")
        if k % 16 or n % 16:
            raise UnsupportedCase(f"_scaled_mm needs k and n multiples of 16 (k={k}, n={n})")
        x = _randn((m, k), torch.float32, device).to(torch.float8_e4m3fn)
        w = _randn((n, k), torch.float32, device).to(torch.float8_e4m3fn)
        wt = w.t()  # column-major [k, n] as cuBLASLt requires
        sa = torch.tensor(1.0, dtype=torch.float32, device=device)
        sb = torch.tensor(1.0, dtype=torch.float32, device=device)

        def fn():
            return torch._scaled_mm(x, wt, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)

        return Op(fn, {"impl_note": "torch._scaled_mm per-tensor scales, out bf16"}, (x, w, sa, sb))
    if lib == "fp8_block":
        raise UnsupportedCase("library 'fp8_block' is not supported by the synperf profiling harness")
    raise UnsupportedCase(f"unknown gemm library {lib!r}")


# ------------------------------------------------------------- attention


def build_attention(c, device) -> Op:
    lib = c["library"]
    if lib in ("flashinfer", "fa3"):
        return _build_flashinfer_attention(c, device)
    if lib == "flash_attn3":
        return _build_flash_attn3(c, device)
    if lib != "flash_attn2_torch_sdpa":
        raise UnsupportedCase(f"unknown attention library {lib!r}")
    dt = _act_dtype(c)
    if c.get("kv_cache_dtype", c["dtype"]) != c["dtype"]:
        raise UnsupportedCase("SDPA flash needs kv_cache_dtype == dtype")
    b, hq, hkv, d = int(c["batch"]), int(c["num_heads"]), int(c["num_kv_heads"]), int(c["head_dim"])
    phase = c.get("phase", "prefill")
    ql = int(c.get("q_len", 1 if phase == "decode" else c["kv_len"]))
    kl = int(c["kv_len"])
    if d > 256 or d % 8:
        raise UnsupportedCase(f"SDPA flash backend needs head_dim <= 256 and a multiple of 8 (got {d})")
    if hq % hkv:
        raise UnsupportedCase(f"num_heads {hq} is not a multiple of num_kv_heads {hkv}")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = _randn((b, hq, ql, d), dt, device)
    k = _randn((b, hkv, kl, d), dt, device)
    v = _randn((b, hkv, kl, d), dt, device)
    causal = bool(c.get("causal", phase != "decode")) and phase != "decode"
    attn_mask = None
    is_causal = causal
    note = "sdpa flash"
    if causal and ql == 1:
        is_causal = False  # one query at the end of the context sees every key
    elif causal and ql != kl:
        from torch.nn.attention.bias import causal_lower_right

        attn_mask = causal_lower_right(ql, kl)
        is_causal = False
        note = "sdpa flash, causal_lower_right"

    def make(qq, kk, vv, gqa):
        def fn():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                if gqa:
                    return F.scaled_dot_product_attention(qq, kk, vv, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=True)
                return F.scaled_dot_product_attention(qq, kk, vv, attn_mask=attn_mask, is_causal=is_causal)

        return fn

    gqa = hq != hkv
    fn = make(q, k, v, gqa)
    meta = {"gqa_expanded": False, "impl_note": note}
    try:
        fn()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as e:
        if not gqa or isinstance(e, torch.cuda.OutOfMemoryError):
            raise
        # flash backend refused GQA: expand k/v outside the timed region
        rep = hq // hkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        fn = make(q, k, v, False)
        fn()
        meta = {"gqa_expanded": True, "impl_note": note + f"; enable_gqa refused ({type(e).__name__}), k/v expanded"}
    return Op(fn, meta, (q, k, v))


def _lengths(c) -> tuple[list[int], list[int]]:
    b = int(c["batch"])
    decode = c.get("phase", "prefill") == "decode"
    q_lens = [int(x) for x in c["q_lens"]] if c.get("q_lens") else [int(c.get("q_len") or (1 if decode else c["kv_len"]))] * b
    kv_lens = [int(x) for x in c["kv_lens"]] if c.get("kv_lens") else [int(c["kv_len"])] * b
    return q_lens, kv_lens


def _varlen_attention_inputs(c, device):
    """What the varlen attention builders share: dtype, heads, phase, causal, per-request lengths
    and the query offsets (int32 on ``device``)."""
    dt = _act_dtype(c)
    hq, hkv, d = int(c["num_heads"]), int(c["num_kv_heads"]), int(c["head_dim"])
    decode = c.get("phase", "prefill") == "decode"
    causal = bool(c.get("causal", not decode)) and not decode
    q_lens, kv_lens = _lengths(c)
    qo_indptr = torch.tensor([0] + list(itertools.accumulate(q_lens)), dtype=torch.int32, device=device)
    return dt, hq, hkv, d, decode, causal, q_lens, kv_lens, qo_indptr


def _build_flashinfer_attention(c, device) -> Op:
    """FlashInfer wrappers as serving engines call them: ragged prefill (no page_size), paged
    prefill (page_size given), paged decode; library fa3 selects FlashInfer's SM90 backend."""
    fi = _import_flashinfer()
    lib = c["library"]
    if lib == "fa3" and torch.cuda.get_device_capability(device)[0] != 9:
        raise UnsupportedCase("fa3 needs a Hopper GPU")
    dt, hq, hkv, d, decode, causal, q_lens, kv_lens, qo_indptr = _varlen_attention_inputs(c, device)
    kv_dt = torch.float8_e4m3fn if c.get("kv_cache_dtype") == "fp8_e4m3" else dt
    i32 = dict(dtype=torch.int32, device=device)
    workspace = torch.empty(256 << 20, dtype=torch.uint8, device=device)
    backend = "fa3" if lib == "fa3" else "fa2"
    q = _randn((sum(q_lens), hq, d), dt, device)
    paged = decode or c.get("page_size") is not None
    if not paged:
        kv_indptr = torch.tensor([0] + list(itertools.accumulate(kv_lens)), **i32)
        k = _randn((sum(kv_lens), hkv, d), dt, device)
        v = _randn((sum(kv_lens), hkv, d), dt, device)
        wrapper = fi.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD", backend=backend)
        wrapper.plan(qo_indptr, kv_indptr, hq, hkv, d, causal=causal, q_data_type=dt, kv_data_type=dt)
        return Op(lambda: wrapper.run(q, k, v), {"impl_note": f"flashinfer ragged prefill ({backend})"},
                  (q, k, v, workspace, wrapper))
    page = int(c.get("page_size") or 16)
    pages = [max(1, -(-kv // page)) for kv in kv_lens]
    kv_indptr = torch.tensor([0] + list(itertools.accumulate(pages)), **i32)
    # Pages of a request scattered over the pool, as a serving engine's allocator leaves them.
    indices = torch.randperm(sum(pages), device=device).to(torch.int32)
    last_len = torch.tensor([kv - (n - 1) * page for kv, n in zip(kv_lens, pages)], **i32)
    cache = _randn((sum(pages), 2, page, hkv, d), dt, device).to(kv_dt)
    if decode and lib == "flashinfer":
        # The CUDA-core decode kernel dispatches a few GQA group sizes only; for the others engines
        # pass use_tensor_cores, which runs the paged prefill kernel.
        tensor_cores = hq // hkv not in DECODE_GROUP_SIZES
        if c.get("cuda_graph"):
            # The plan a CUDA graph replays (split KV, grid padded to a full wave); timed eagerly,
            # the kernels are the ones the graph would launch.
            wrapper = fi.BatchDecodeWithPagedKVCacheWrapper(
                workspace, "NHD", use_cuda_graph=True, paged_kv_indptr_buffer=kv_indptr.clone(),
                paged_kv_indices_buffer=indices.clone(), paged_kv_last_page_len_buffer=last_len.clone(),
                use_tensor_cores=tensor_cores)
        else:
            wrapper = fi.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD", use_tensor_cores=tensor_cores)
        wrapper.plan(kv_indptr, indices, last_len, hq, hkv, d, page, q_data_type=dt, kv_data_type=kv_dt)
        note = ("flashinfer paged decode" + (" (tensor cores)" if tensor_cores else "")
                + (" (cuda-graph plan)" if c.get("cuda_graph") else ""))
    else:
        wrapper = fi.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD", backend=backend)
        wrapper.plan(qo_indptr, kv_indptr, indices, last_len, hq, hkv, d, page, causal=causal,
                     q_data_type=dt, kv_data_type=kv_dt)
        note = f"flashinfer paged prefill ({backend})"
    return Op(lambda: wrapper.run(q, cache), {"impl_note": note}, (q, cache, workspace, wrapper))


FA3_LIB_ENV = "SYNPERF_VLLM_FA3_LIB"


def fa3_ops():
    """vLLM's FlashAttention-3 custom ops (``torch.ops._vllm_fa3_C``): from an installed vLLM, else
    from the shared library named by $SYNPERF_VLLM_FA3_LIB (``vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so``
    of a vLLM wheel built for this PyTorch)."""
    import os
    if not hasattr(torch.ops._vllm_fa3_C, "fwd"):
        path = os.environ.get(FA3_LIB_ENV)
        try:
            if path:
                torch.ops.load_library(path)
            else:
                import vllm.vllm_flash_attn._vllm_fa3_C  # noqa: F401
        except Exception as e:  # ImportError, or an OSError from a library built for another torch
            raise UnsupportedCase(f"library 'flash_attn3' is not loadable here ({type(e).__name__}: {e}); "
                                  f"set ${FA3_LIB_ENV}")
    return torch.ops._vllm_fa3_C


def _build_flash_attn3(c, device) -> Op:
    """FlashAttention-3 as vLLM's FLASH_ATTN backend calls it on Hopper: varlen queries, the KV in
    the paged cache (prefill and decode alike; page_size, default 16), the scheduler metadata
    made ahead (vLLM's AOT schedule, outside the timed call) and the split cap vLLM passes
    (``kernels.attention.flash_attn3_max_splits``). ``engine: sglang``: as SGLang's
    FlashAttentionBackend calls it, without metadata and with FA3's own split heuristic."""
    from ..kernels.attention import flash_attn3_max_splits
    if torch.cuda.get_device_capability(device)[0] != 9:
        raise UnsupportedCase("flash_attn3 needs a Hopper GPU")
    fa3 = fa3_ops()
    dt, hq, hkv, d, decode, causal, q_lens, kv_lens, cu_q = _varlen_attention_inputs(c, device)
    i32 = dict(dtype=torch.int32, device=device)
    seqused_k = torch.tensor(kv_lens, **i32)
    q = _randn((sum(q_lens), hq, d), dt, device)
    out = torch.empty_like(q)
    sglang = c.get("engine", "vllm") == "sglang"
    max_splits = 0 if sglang else flash_attn3_max_splits(sum(q_lens))
    page = int(c.get("page_size") or 16)
    pages = [max(1, -(-kv // page)) for kv in kv_lens]
    # Pages of a request scattered over the pool, as vLLM's block allocator leaves them.
    pool = torch.randperm(sum(pages), device=device).to(torch.int32)
    table = torch.zeros((len(kv_lens), max(pages)), **i32)
    start = 0
    for i, n in enumerate(pages):
        table[i, :n] = pool[start:start + n]
        start += n
    k = _randn((sum(pages), page, hkv, d), dt, device)
    v = _randn((sum(pages), page, hkv, d), dt, device)
    # SGLang's FlashAttentionBackend passes no metadata: FA3 then prepares its schedule in the call.
    metadata = None if sglang else fa3.get_scheduler_metadata(
        len(q_lens), max(q_lens), max(kv_lens), hq, hkv, d, d, dt, seqused_k, cu_q, None, None, None, None,
        page, 0, causal, -1, -1, False, max_splits, None, 0)
    scale = d ** -0.5

    def fn():
        return fa3.fwd(q, k, v, None, None, None, out, cu_q, None, None, None, seqused_k, max(q_lens), max(kv_lens),
                       table, None, None, None, None, None, None, None, None, scale, causal, -1, -1, 0.0, True,
                       metadata, max_splits, None, 0, None, 1, 0, None)

    note = (f"{'sglang' if sglang else 'vllm'} fa3 paged {'decode' if decode else 'prefill'}, page {page}, "
            f"max_splits {max_splits}")
    return Op(fn, {"impl_note": note}, (q, k, v, out, table, cu_q, seqused_k, metadata))


# ------------------------------------------------------------------- moe


def build_moe(c, device) -> Op:
    if c["library"] != "triton_fused_moe":
        raise UnsupportedCase(f"unknown moe library {c['library']!r} (supported: triton_fused_moe)")
    dt = _act_dtype(c)
    from .moe_configs import resolve_config
    from .triton_moe import MoEWorkspace, balanced_routing, random_routing

    cfg, src = resolve_config(c)
    T, H, I = int(c["tokens"]), int(c["hidden"]), int(c["intermediate"])
    E, K = int(c["num_experts"]), int(c["topk"])
    if not 1 <= K <= E:
        raise UnsupportedCase(f"topk {K} must be in [1, num_experts={E}]")
    x = _randn((T, H), dt, device)
    w13 = _randn((E, 2 * I, H), dt, device, scale=H ** -0.5)
    w2 = _randn((E, H, I), dt, device, scale=I ** -0.5)
    routing = c.get("routing", "random")
    if routing not in ("random", "balanced"):
        raise UnsupportedCase(f"unknown moe routing {routing!r}")
    tw, ids = (random_routing if routing == "random" else balanced_routing)(T, E, K, device)
    stage = c.get("stage", "all")
    engine = c.get("engine", "reference")
    if engine not in ("reference", "vllm") or (engine != "reference" and stage != "all"):
        raise UnsupportedCase(f"moe engine {engine!r} is profiled for stage all with reference or vllm only")
    ws = MoEWorkspace(x, w13, w2, tw, ids, cfg, engine)
    if stage == "w13":
        fn = ws.w13_pass
    elif stage == "w2":
        ws.w13_pass()
        ws.activation()
        fn = ws.w2_pass
    elif stage == "all":
        fn = ws.full
    else:
        raise UnsupportedCase(f"unknown moe stage {stage!r}")
    return Op(fn, {"config": cfg, "config_source": src, "impl_note": f"synperf triton fused moe, stage {stage}, {engine} align and sum"}, ws)


# ----------------------------------------------------------- elementwise


def build_rmsnorm(c, device) -> Op:
    dt = _act_dtype(c)
    T, H = int(c["tokens"]), int(c["hidden"])
    eps = 1e-6
    x = _randn((T, H), dt, device)
    w = (1.0 + 0.1 * torch.randn(H, device=device)).to(dt)
    r = _randn((T, H), dt, device) if c.get("residual") else None
    lib = c["library"]
    if lib == "torch":
        from .triton_elementwise import rmsnorm_torch

        return Op(lambda: rmsnorm_torch(x, w, eps, residual=r), {"impl_note": "HF-style composed torch ops"}, (x, w, r))
    if lib == "triton":
        from .triton_elementwise import rmsnorm_triton

        if r is not None:
            return Op(lambda: rmsnorm_triton(x, w, eps, residual=r), {"impl_note": "synperf triton, in place"}, (x, w, r))
        out = torch.empty_like(x)
        return Op(lambda: rmsnorm_triton(x, w, eps, out=out), {"impl_note": "synperf triton"}, (x, w, out))
    if lib == "flashinfer":
        fi = _import_flashinfer()
        if r is not None:
            return Op(lambda: fi.norm.fused_add_rmsnorm(x, r, w, eps), {"impl_note": "flashinfer.norm.fused_add_rmsnorm"}, (x, w, r))
        return Op(lambda: fi.norm.rmsnorm(x, w, eps), {"impl_note": "flashinfer.norm.rmsnorm"}, (x, w))
    raise UnsupportedCase(f"unknown rmsnorm library {lib!r}")


def build_silu_and_mul(c, device) -> Op:
    dt = _act_dtype(c)
    T, I = int(c["tokens"]), int(c["intermediate"])
    x = _randn((T, 2 * I), dt, device)
    lib = c["library"]
    if lib == "torch":
        from .triton_elementwise import silu_and_mul_torch

        return Op(lambda: silu_and_mul_torch(x), {"impl_note": "F.silu(x[:, :d]) * x[:, d:]"}, x)
    out = torch.empty((T, I), dtype=dt, device=device)
    if lib == "triton":
        from .triton_elementwise import silu_and_mul_triton

        return Op(lambda: silu_and_mul_triton(x, out=out), {"impl_note": "synperf triton"}, (x, out))
    if lib == "flashinfer":
        fi = _import_flashinfer()
        return Op(lambda: fi.activation.silu_and_mul(x, out=out), {"impl_note": "flashinfer.activation.silu_and_mul"}, (x, out))
    raise UnsupportedCase(f"unknown silu_and_mul library {lib!r}")


def build_rope(c, device) -> Op:
    dt = _act_dtype(c)
    T, HQ, HK, D = int(c["tokens"]), int(c["num_heads"]), int(c["num_kv_heads"]), int(c["head_dim"])
    if D % 2:
        raise UnsupportedCase("rope needs an even head_dim")
    from .triton_elementwise import make_cos_sin_cache

    cache = make_cos_sin_cache(8192, D, device=device)
    pos = torch.randint(0, 8192, (T,), device=device, dtype=torch.int64)
    lib = c["library"]
    if lib in ("torch", "triton"):
        # q and k are strided views of a fused qkv projection output, as in vLLM
        qkv = _randn((T, (HQ + 2 * HK) * D), dt, device)
        q = qkv[:, : HQ * D]
        k = qkv[:, HQ * D : (HQ + HK) * D]
        if lib == "torch":
            from .triton_elementwise import rope_torch as impl
        else:
            from .triton_elementwise import rope_triton as impl
        return Op(lambda: impl(pos, q, k, cache, HQ, HK, D), {"impl_note": f"{lib} neox rope in place (q,k views of qkv)"}, (qkv, cache, pos))
    if lib == "flashinfer":
        fi = _import_flashinfer()
        q = _randn((T, HQ * D), dt, device)
        k = _randn((T, HK * D), dt, device)
        return Op(
            lambda: fi.rope.apply_rope_with_cos_sin_cache_inplace(pos, q, k, D, cache, is_neox=True),
            {"impl_note": "flashinfer apply_rope_with_cos_sin_cache_inplace"},
            (q, k, cache, pos),
        )
    raise UnsupportedCase(f"unknown rope library {lib!r}")


BUILDERS = {
    "gemm": build_gemm,
    "attention": build_attention,
    "moe": build_moe,
    "rmsnorm": build_rmsnorm,
    "silu_and_mul": build_silu_and_mul,
    "rope": build_rope,
}


def build_op(case: Dict[str, Any], device) -> Op:
    c = normalize_case(case)
    return BUILDERS[c["family"]](c, device)


def case_seed(cid: str) -> int:
    import hashlib

    return int(hashlib.sha1(cid.encode()).hexdigest()[:8], 16)


__all__ = ["Op", "UnsupportedCase", "build_op", "case_seed"]
