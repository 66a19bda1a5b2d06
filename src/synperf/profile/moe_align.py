"""moe_align_block_size in plain torch ops (no host synchronisation).

Given top-k expert ids per token, produce the layout the fused-MoE Triton
kernel consumes:

* ``sorted_token_ids`` [max_padded] int32: indices into the flattened
  (token, k) pairs, grouped by expert, each expert's group padded up to a
  multiple of ``block_size`` with the sentinel ``numel`` (= tokens*topk).
* ``expert_ids`` [cdiv(max_padded, block_size)] int32: expert of each M block
  (blocks past the padded total hold the last expert id; the kernel skips them).
* ``num_tokens_post_padded`` [1] int32: padded total, on device.
"""

from __future__ import annotations

import torch


def max_padded_len(numel: int, num_experts: int, block_size: int) -> int:
    n = numel + num_experts * (block_size - 1)
    if numel < num_experts:
        # each pair can at most occupy its own block
        n = min(n, numel * block_size)
    return n


def moe_align_block_size(topk_ids: torch.Tensor, block_size: int, num_experts: int):
    device = topk_ids.device
    flat = topk_ids.reshape(-1).to(torch.int64)
    numel = flat.numel()
    max_padded = max_padded_len(numel, num_experts, block_size)
    n_blocks = (max_padded + block_size - 1) // block_size

    # scatter_add instead of bincount: bincount on CUDA synchronises with the host
    counts = torch.zeros(num_experts, dtype=torch.int64, device=device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    padded = (counts + block_size - 1) // block_size * block_size
    padded_end = torch.cumsum(padded, 0)
    padded_start = padded_end - padded
    unpadded_start = torch.cumsum(counts, 0) - counts

    order = torch.argsort(flat, stable=True)
    sorted_experts = flat[order]
    rank = torch.arange(numel, device=device, dtype=torch.int64) - unpadded_start[sorted_experts]
    dest = padded_start[sorted_experts] + rank

    sorted_ids = torch.full((max_padded,), numel, dtype=torch.int32, device=device)
    sorted_ids.scatter_(0, dest, order.to(torch.int32))

    block_end = padded_end // block_size  # cumulative block counts per expert
    blocks = torch.arange(n_blocks, device=device, dtype=torch.int64)
    expert_ids = torch.searchsorted(block_end, blocks, right=True).clamp_(max=num_experts - 1).to(torch.int32)
    num_post = padded_end[-1:].to(torch.int32)
    return sorted_ids, expert_ids, num_post
