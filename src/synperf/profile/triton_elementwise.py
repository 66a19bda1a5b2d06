"""synperf's own Triton kernels for RMSNorm, SiLU-and-mul and NeoX RoPE,
plus the plain-torch reference implementations used by the harness
(library "torch") and by the tests.

Kernel names start with ``synperf_`` so they are recognisable in traces.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def _num_warps(elements: int) -> int:
    """A power of two in [1, 16], about one warp per 256 elements."""
    w = 1
    while w < 16 and w * 256 < elements:
        w *= 2
    return w


# --------------------------------------------------------------------------
# RMSNorm (optionally fused with the residual add)
# --------------------------------------------------------------------------


@triton.jit
def synperf_rmsnorm_kernel(
    x_ptr,
    w_ptr,
    out_ptr,
    res_ptr,
    stride_x,
    stride_out,
    stride_res,
    N,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + row * stride_res + cols, mask=mask, other=0.0).to(tl.float32)
        s = (x + r).to(res_ptr.dtype.element_ty)
        tl.store(res_ptr + row * stride_res + cols, s, mask=mask)
        x = s.to(tl.float32)
    var = tl.sum(x * x, axis=0) / N
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    y = x * rstd * w
    tl.store(out_ptr + row * stride_out + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


def rmsnorm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, residual=None, out=None):
    """RMSNorm of ``x`` [tokens, hidden], one program per row.

    With ``residual``: residual <- x + residual, out <- rmsnorm(residual)
    (vLLM's fused_add_rms_norm semantics; ``out`` defaults to ``x``, in place).
    Without: returns a new tensor unless ``out`` is given."""
    assert x.dim() == 2 and x.stride(-1) == 1
    tokens, hidden = x.shape
    if out is None:
        out = x if residual is not None else torch.empty_like(x)
    block = triton.next_power_of_2(hidden)
    res = residual if residual is not None else x
    synperf_rmsnorm_kernel[(tokens,)](
        x,
        weight,
        out,
        res,
        x.stride(0),
        out.stride(0),
        res.stride(0),
        hidden,
        eps,
        HAS_RESIDUAL=residual is not None,
        BLOCK=block,
        num_warps=_num_warps(block),
    )
    return out


def rmsnorm_torch(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, residual=None):
    """HuggingFace-style composed ops (LlamaRMSNorm.forward).  With
    ``residual`` the decoder-layer add ``x = residual + x`` comes first and
    both the sum and the normed output are returned (out of place)."""
    if residual is not None:
        x = residual + x
        residual = x
    dtype = x.dtype
    h = x.to(torch.float32)
    var = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(var + eps)
    y = weight * h.to(dtype)
    return (y, residual) if residual is not None else y


# --------------------------------------------------------------------------
# SiLU and mul:  [tokens, 2*d] -> [tokens, d]
# --------------------------------------------------------------------------


@triton.jit
def synperf_silu_and_mul_kernel(x_ptr, out_ptr, stride_x, stride_out, D, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < D
    a = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(x_ptr + row * stride_x + D + cols, mask=mask, other=0.0).to(tl.float32)
    y = a / (1.0 + tl.exp(-a)) * b
    tl.store(out_ptr + row * stride_out + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul_triton(x: torch.Tensor, out=None, block: int = 1024):
    assert x.dim() == 2 and x.stride(-1) == 1 and x.shape[1] % 2 == 0
    tokens, two_d = x.shape
    d = two_d // 2
    if out is None:
        out = torch.empty((tokens, d), dtype=x.dtype, device=x.device)
    block = min(block, triton.next_power_of_2(d))
    grid = (tokens, triton.cdiv(d, block))
    synperf_silu_and_mul_kernel[grid](x, out, x.stride(0), out.stride(0), d, BLOCK=block, num_warps=_num_warps(block))
    return out


def silu_and_mul_torch(x: torch.Tensor):
    d = x.shape[-1] // 2
    return torch.nn.functional.silu(x[..., :d]) * x[..., d:]


# --------------------------------------------------------------------------
# NeoX-style rotary embedding, in place on q and k
# --------------------------------------------------------------------------


def make_cos_sin_cache(max_pos: int, head_dim: int, base: float = 10000.0, device="cpu"):
    """float32 [max_pos, head_dim]: cos in the first half, sin in the second."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    t = torch.arange(max_pos, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)
    return torch.cat([freqs.cos(), freqs.sin()], dim=-1).contiguous()


@triton.jit
def synperf_rope_kernel(
    q_ptr,
    k_ptr,
    cache_ptr,
    pos_ptr,
    stride_qt,
    stride_kt,
    stride_cache,
    NQ,
    NK,
    HEAD_DIM: tl.constexpr,
    HALF: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
    BLOCK_HQ: tl.constexpr,
    BLOCK_HK: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_HALF)
    dmask = offs_d < HALF
    cos = tl.load(cache_ptr + pos * stride_cache + offs_d, mask=dmask, other=0.0)
    sin = tl.load(cache_ptr + pos * stride_cache + HALF + offs_d, mask=dmask, other=0.0)
    cos = cos[None, :]
    sin = sin[None, :]

    offs_hq = tl.arange(0, BLOCK_HQ)
    qmask = (offs_hq[:, None] < NQ) & dmask[None, :]
    q1_ptrs = q_ptr + t * stride_qt + offs_hq[:, None] * HEAD_DIM + offs_d[None, :]
    q1 = tl.load(q1_ptrs, mask=qmask, other=0.0).to(tl.float32)
    q2 = tl.load(q1_ptrs + HALF, mask=qmask, other=0.0).to(tl.float32)
    tl.store(q1_ptrs, (q1 * cos - q2 * sin).to(q_ptr.dtype.element_ty), mask=qmask)
    tl.store(q1_ptrs + HALF, (q2 * cos + q1 * sin).to(q_ptr.dtype.element_ty), mask=qmask)

    offs_hk = tl.arange(0, BLOCK_HK)
    kmask = (offs_hk[:, None] < NK) & dmask[None, :]
    k1_ptrs = k_ptr + t * stride_kt + offs_hk[:, None] * HEAD_DIM + offs_d[None, :]
    k1 = tl.load(k1_ptrs, mask=kmask, other=0.0).to(tl.float32)
    k2 = tl.load(k1_ptrs + HALF, mask=kmask, other=0.0).to(tl.float32)
    tl.store(k1_ptrs, (k1 * cos - k2 * sin).to(k_ptr.dtype.element_ty), mask=kmask)
    tl.store(k1_ptrs + HALF, (k2 * cos + k1 * sin).to(k_ptr.dtype.element_ty), mask=kmask)


def rope_triton(positions, q, k, cos_sin_cache, num_heads: int, num_kv_heads: int, head_dim: int):
    """In-place NeoX RoPE.  q: [tokens, num_heads*head_dim] (row stride may
    exceed the width, e.g. a slice of a fused qkv tensor), k likewise; heads
    contiguous inside a row.  One program per token."""
    launch_rope_kernel(positions, q, k, cos_sin_cache, num_heads, num_kv_heads, head_dim)
    return q, k


def launch_rope_kernel(positions, q, k, cos_sin_cache, num_heads: int, num_kv_heads: int, head_dim: int):
    """``rope_triton``'s launch; returns Triton's compiled kernel (its registers, spills)."""
    tokens = positions.shape[0]
    assert q.stride(-1) == 1 and k.stride(-1) == 1 and head_dim % 2 == 0
    half = head_dim // 2
    bh = triton.next_power_of_2(half)
    bq = triton.next_power_of_2(num_heads)
    bk = triton.next_power_of_2(num_kv_heads)
    work = (bq + bk) * bh
    return synperf_rope_kernel[(tokens,)](
        q,
        k,
        cos_sin_cache,
        positions,
        q.stride(0),
        k.stride(0),
        cos_sin_cache.stride(0),
        num_heads,
        num_kv_heads,
        HEAD_DIM=head_dim,
        HALF=half,
        BLOCK_HALF=bh,
        BLOCK_HQ=bq,
        BLOCK_HK=bk,
        num_warps=min(8, _num_warps(work // 2)),
    )


def rope_torch(positions, q, k, cos_sin_cache, num_heads: int, num_kv_heads: int, head_dim: int):
    """Plain torch NeoX RoPE (vLLM RotaryEmbedding.forward_native style),
    written back in place into q and k."""
    tokens = positions.shape[0]
    half = head_dim // 2
    cos_sin = cos_sin_cache.index_select(0, positions)
    cos, sin = cos_sin.chunk(2, dim=-1)
    cos = cos.unsqueeze(1)
    sin = sin.unsqueeze(1)
    for x, h in ((q, num_heads), (k, num_kv_heads)):
        xv = x.view(tokens, h, head_dim) if x.is_contiguous() else x.unflatten(-1, (h, head_dim))
        x1 = xv[..., :half].float()
        x2 = xv[..., half:].float()
        o1 = x1 * cos - x2 * sin
        o2 = x2 * cos + x1 * sin
        xv.copy_(torch.cat((o1, o2), dim=-1).to(x.dtype))
    return q, k
