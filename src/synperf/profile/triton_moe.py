"""synperf's own fused-MoE Triton kernel (library ``triton_fused_moe``).

Structured like vLLM's ``fused_moe_kernel`` (bf16/fp16, no quantisation):
token-expert pairs are sorted by expert and padded per expert to BLOCK_SIZE_M
(``moe_align_block_size``); a 1-D grid of cdiv(EM, BLOCK_SIZE_M) *
cdiv(N, BLOCK_SIZE_N) programs, GROUP_SIZE_M-swizzled, each computes one
[BLOCK_SIZE_M, BLOCK_SIZE_N] tile of C = A[token rows] @ B[expert]^T, skipping
blocks past num_tokens_post_padded.

Full call (``fused_moe``):
  align -> w13 pass  (A = x [T, H], B = w13 [E, 2I, H], top_k indexing)
        -> silu_and_mul ([T*topk, 2I] -> [T*topk, I])
        -> w2 pass     (A = act [T*topk, I], B = w2 [E, H, I], top_k=1,
                        MUL_ROUTED_WEIGHT)
        -> sum over topk ([T, H]).
"""

from __future__ import annotations

import os
from typing import Dict, Optional

import torch
import triton
import triton.language as tl

from .moe_align import max_padded_len, moe_align_block_size
from .triton_elementwise import silu_and_mul_triton


@triton.jit
def synperf_fused_moe_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    topk_weights_ptr,
    sorted_token_ids_ptr,
    expert_ids_ptr,
    num_tokens_post_padded_ptr,
    N,
    K,
    EM,
    num_valid_tokens,
    stride_am,
    stride_ak,
    stride_be,
    stride_bn,
    stride_bk,
    stride_cm,
    stride_cn,
    BLOCK_SIZE_M: tl.constexpr,
    BLOCK_SIZE_N: tl.constexpr,
    BLOCK_SIZE_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr,
    MUL_ROUTED_WEIGHT: tl.constexpr,
    top_k: tl.constexpr,
    compute_type: tl.constexpr,
):
    # grouped (swizzled) ordering of the output tiles for L2 reuse
    pid = tl.program_id(axis=0)
    num_pid_m = tl.cdiv(EM, BLOCK_SIZE_M)
    num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
    tiles_per_group = GROUP_SIZE_M * num_pid_n
    group = pid // tiles_per_group
    first_m = group * GROUP_SIZE_M
    rows_in_group = tl.minimum(num_pid_m - first_m, GROUP_SIZE_M)
    pid_m = first_m + ((pid % tiles_per_group) % rows_in_group)
    pid_n = (pid % tiles_per_group) // rows_in_group

    total_padded = tl.load(num_tokens_post_padded_ptr)
    if pid_m * BLOCK_SIZE_M >= total_padded:
        return

    slot = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M).to(tl.int64)
    pair = tl.load(sorted_token_ids_ptr + slot).to(tl.int64)
    row_ok = pair < num_valid_tokens
    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)

    offs_n = (pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N).to(tl.int64)) % N
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    a_rows = pair // top_k
    a_ptrs = a_ptr + a_rows[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + expert * stride_be + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn

    acc = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
        k_left = K - kb * BLOCK_SIZE_K
        a = tl.load(a_ptrs, mask=row_ok[:, None] & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_SIZE_K * stride_ak
        b_ptrs += BLOCK_SIZE_K * stride_bk

    if MUL_ROUTED_WEIGHT:
        wgt = tl.load(topk_weights_ptr + pair, mask=row_ok, other=0.0)
        acc = acc * wgt[:, None]

    out = acc.to(compute_type)
    offs_cn = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    c_ptrs = c_ptr + pair[:, None] * stride_cm + offs_cn[None, :] * stride_cn
    tl.store(c_ptrs, out, mask=row_ok[:, None] & (offs_cn[None, :] < N))


def _compute_type(dtype: torch.dtype):
    if dtype == torch.bfloat16:
        return tl.bfloat16
    if dtype == torch.float16:
        return tl.float16
    if dtype == torch.float32:
        return tl.float32
    raise ValueError(f"unsupported MoE dtype {dtype}")


def invoke_moe_kernel(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    topk_weights: Optional[torch.Tensor],
    sorted_token_ids: torch.Tensor,
    expert_ids: torch.Tensor,
    num_tokens_post_padded: torch.Tensor,
    top_k: int,
    config: Dict[str, int],
    mul_routed_weight: bool,
):
    """C[pair] = A[pair // top_k] @ B[expert(pair)]^T (* routing weight).

    a: [rows, K]; b: [E, N, K]; c: [num_pairs, N] (a 2-D view)."""
    launch_moe_kernel(a, b, c, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded, top_k,
                      config, mul_routed_weight)
    return c


def launch_moe_kernel(a, b, c, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded,
                      top_k: int, config: Dict[str, int], mul_routed_weight: bool):
    """``invoke_moe_kernel``'s launch; returns Triton's compiled kernel (its registers, spills)."""
    assert a.stride(-1) == 1 and b.stride(-1) == 1
    E, N, K = b.shape
    EM = sorted_token_ids.shape[0]
    bm, bn = config["BLOCK_SIZE_M"], config["BLOCK_SIZE_N"]
    grid = (triton.cdiv(EM, bm) * triton.cdiv(N, bn),)
    num_valid = c.shape[0]
    tw = topk_weights if topk_weights is not None else c  # unused when not mul_routed_weight
    return synperf_fused_moe_kernel[grid](
        a,
        b,
        c,
        tw,
        sorted_token_ids,
        expert_ids,
        num_tokens_post_padded,
        N,
        K,
        EM,
        num_valid,
        a.stride(0),
        a.stride(1),
        b.stride(0),
        b.stride(1),
        b.stride(2),
        c.stride(0),
        c.stride(1),
        BLOCK_SIZE_M=bm,
        BLOCK_SIZE_N=bn,
        BLOCK_SIZE_K=config["BLOCK_SIZE_K"],
        GROUP_SIZE_M=config["GROUP_SIZE_M"],
        MUL_ROUTED_WEIGHT=mul_routed_weight,
        top_k=top_k,
        compute_type=_compute_type(c.dtype),
        num_warps=config.get("num_warps", 4),
        num_stages=config.get("num_stages", 3),
    )


def random_routing(tokens: int, num_experts: int, topk: int, device, generator=None):
    """Random softmax top-k routing: (topk_weights float32 [T, topk],
    topk_ids int32 [T, topk]).  Weights renormalised over the top-k."""
    logits = torch.randn(tokens, num_experts, device=device, dtype=torch.float32, generator=generator)
    probs = torch.softmax(logits, dim=-1)
    w, ids = torch.topk(probs, topk, dim=-1)
    w = w / w.sum(dim=-1, keepdim=True)
    return w.contiguous(), ids.to(torch.int32).contiguous()


ENGINE_LIB_ENV = "SYNPERF_VLLM_MOE_LIB"


def engine_ops():
    """vLLM's ``_moe_C`` custom ops (``moe_align_block_size``, ``moe_sum``): from an installed vLLM,
    else from the shared library named by $SYNPERF_VLLM_MOE_LIB (``vllm/_moe_C.abi3.so`` of a vLLM
    wheel built for this PyTorch)."""
    if not hasattr(torch.ops._moe_C, "moe_align_block_size"):
        path = os.environ.get(ENGINE_LIB_ENV)
        if path:
            torch.ops.load_library(path)
        else:
            import vllm._moe_C  # noqa: F401  (registers torch.ops._moe_C)
    return torch.ops._moe_C


def balanced_routing(tokens: int, num_experts: int, topk: int, device, generator=None):
    """Round-robin top-k routing (``routing: balanced``): pair i = token * topk + k goes to expert
    i mod E, as PipeWeave and aiconfigurator time it; equal weights. ``generator`` is unused."""
    ids = (torch.arange(tokens * topk, device=device, dtype=torch.int32) % num_experts).view(tokens, topk)
    return torch.full((tokens, topk), 1.0 / topk, device=device, dtype=torch.float32), ids.contiguous()


class MoEWorkspace:
    """Pre-allocated buffers + routing for one MoE shape, so that each stage
    can be launched on its own (what the harness times).

    ``engine`` (``synperf.kernels.moe`` docstring): ``reference`` aligns with the torch ops of
    ``moe_align`` and sums with ``torch.sum``; ``vllm`` runs vLLM's own align and sum kernels
    (``engine_ops``), or its naive assignment when pairs * 4 <= E. ``prealign=False`` leaves the
    align to ``full()`` (one align a call, as vLLM runs it)."""

    def __init__(self, x, w13, w2, topk_weights, topk_ids, config, engine: str = "reference",
                 prealign: bool = True):
        self.x, self.w13, self.w2 = x, w13, w2
        self.topk_weights, self.topk_ids = topk_weights, topk_ids
        self.config = config
        self.T, self.H = x.shape
        self.E, two_i, _ = w13.shape
        self.I = two_i // 2
        self.topk = topk_ids.shape[1]
        dev, dt = x.device, x.dtype
        self.cache1 = torch.empty((self.T * self.topk, 2 * self.I), device=dev, dtype=dt)
        self.cache2 = torch.empty((self.T * self.topk, self.I), device=dev, dtype=dt)
        self.cache3 = torch.empty((self.T * self.topk, self.H), device=dev, dtype=dt)
        self.out = torch.empty((self.T, self.H), device=dev, dtype=dt)
        self.flat_weights = topk_weights.reshape(-1)
        if engine not in ("reference", "vllm"):
            raise ValueError(f"profiled MoE engines are reference and vllm, got {engine!r}")
        self.engine = engine
        self.ops = engine_ops() if engine == "vllm" else None
        pairs, bm = self.T * self.topk, config["BLOCK_SIZE_M"]
        self.naive = engine == "vllm" and pairs * 4 <= self.E
        if self.naive:
            # vLLM's kernel then reads pair m for M block m; the same layout as sorted ids
            self.sorted_ids = torch.full((pairs * bm,), pairs, dtype=torch.int32, device=dev)
            self.sorted_ids[::bm] = torch.arange(pairs, dtype=torch.int32, device=dev)
            self.expert_ids = topk_ids.reshape(-1).to(torch.int32)
        elif engine == "vllm":
            padded = max_padded_len(pairs, self.E, bm)
            self.sorted_ids = torch.empty((padded,), dtype=torch.int32, device=dev)
            self.expert_ids = torch.empty((triton.cdiv(padded, bm),), dtype=torch.int32, device=dev)
            self.num_post = torch.empty((1,), dtype=torch.int32, device=dev)
        if prealign:       # the stages timed on their own need the layout; full() aligns again
            self.align()

    def align(self):
        bm = self.config["BLOCK_SIZE_M"]
        if self.engine == "reference":
            self.sorted_ids, self.expert_ids, self.num_post = moe_align_block_size(self.topk_ids, bm, self.E)
        elif self.naive:
            self.num_post = torch.full((1,), self.T * self.topk * bm, dtype=torch.int32, device=self.x.device)
        else:
            args = [self.topk_ids, self.E, bm, self.sorted_ids, self.expert_ids, self.num_post]
            extra = len(self.ops.moe_align_block_size.default._schema.arguments) - len(args)
            self.ops.moe_align_block_size(*args, *([None] * extra))

    def w13_pass(self):
        return invoke_moe_kernel(
            self.x, self.w13, self.cache1, None, self.sorted_ids, self.expert_ids, self.num_post,
            self.topk, self.config, mul_routed_weight=False,
        )

    def activation(self):
        return silu_and_mul_triton(self.cache1, out=self.cache2)

    def w2_pass(self):
        return invoke_moe_kernel(
            self.cache2, self.w2, self.cache3, self.flat_weights, self.sorted_ids, self.expert_ids,
            self.num_post, 1, self.config, mul_routed_weight=True,
        )

    def reduce(self):
        if self.engine == "vllm":
            self.ops.moe_sum(self.cache3.view(self.T, self.topk, self.H), self.out)
            return self.out
        return torch.sum(self.cache3.view(self.T, self.topk, self.H), dim=1, out=self.out)

    def full(self):
        self.align()
        self.w13_pass()
        self.activation()
        self.w2_pass()
        return self.reduce()


def fused_moe(x, w13, w2, topk_weights, topk_ids, config):
    """Whole fused-MoE call; returns [T, H]."""
    return MoEWorkspace(x, w13, w2, topk_weights, topk_ids, config).full()


def fused_moe_reference(x, w13, w2, topk_weights, topk_ids):
    """Plain torch reference (float32 math)."""
    T, H = x.shape
    I = w13.shape[1] // 2
    out = torch.zeros((T, H), dtype=torch.float32, device=x.device)
    xf = x.float()
    for t in range(T):
        for j in range(topk_ids.shape[1]):
            e = int(topk_ids[t, j])
            h = w13[e].float() @ xf[t]
            act = torch.nn.functional.silu(h[:I]) * h[I:]
            out[t] += float(topk_weights[t, j]) * (w2[e].float() @ act)
    return out
