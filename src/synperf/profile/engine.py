"""Reference engine: the ground truth that ``synperf simulate batch`` is checked against.

A plain-PyTorch decoder (random weights) that launches the very kernels synperf models, in the
order SGLang launches them (``synperf.workloads.engines``, framework ``reference``):
embedding; per layer RMSNorm / fused add+RMSNorm (FlashInfer), QKV GEMM (cuBLAS via F.linear),
optional per-head q/k RMSNorm (Qwen3), rotary (FlashInfer, in place on the QKV views), KV-cache
write (index_put, page size 1), attention (FlashInfer SM90 ragged prefill; FlashInfer paged decode
with CUDA-core kernels), O projection, all-reduce under TP (NCCL), gate/up GEMM + SiLU-and-mul
(FlashInfer) + down GEMM, or a router GEMM + softmax/top-k + synperf's Triton fused MoE (engine
default config); final fused add+RMSNorm, lm_head on each sequence's last token, argmax.

``--moe-engine vllm`` runs the MoE layers as vLLM 0.22 does instead: its fused ``topk_softmax``
routing, its ``moe_align_block_size`` (once a layer) and ``moe_sum`` kernels (``triton_moe.engine_ops``:
vLLM installed, or $SYNPERF_VLLM_MOE_LIB) and the config vLLM picks on this GPU (its tuned config,
``kernels.moe.engine_config``), around synperf's Triton GEMM and SiLU kernels.

``--attention flash_attn3`` runs attention as SGLang's default FA3 backend does on Hopper
(framework ``sglang``): Dao-AILab FlashAttention-3 from vLLM's build ($SYNPERF_VLLM_FA3_LIB or
vLLM installed) over the same page-size-1 cache, prefill and decode alike.

Timing follows SGLang's ``bench_one_batch``: all prompts are prefilled as one eager batch, then
``output_len - 1`` decode steps of the whole batch, each replaying one CUDA graph of the full step;
every phase is wall-clock between device synchronisations. One profiled prefill and one profiled
decode step add a per-kernel breakdown (CUPTI) so errors can be attributed. ``--piecewise`` also
times each prefill as vLLM V1 runs steps of up to 512 tokens: piecewise CUDA graphs split at each
attention call, attention eager between them (``BatchRun.capture_pieces``).

Run on a GPU (one process per GPU for TP and PP, e.g. ``torchrun --nproc-per-node 2``; ``--pp N``
splits the processes into N pipeline stages of TP ranks each)::

    python -m synperf.profile.engine --models llama-3.1-8b,qwen3-8b --layers 8 --out e2e.parquet
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from synperf.kernels.attention import DECODE_GROUP_SIZES
from synperf.workloads.model import ModelConfig, load_model, with_layers

SUSTAINED_S = 2.0              # back-to-back steps of a continuous-batching step (run_mixed)
MAX_BATCH_TOKENS = 65_536       # prefill tokens per batch (keeps the KV cache and the run short)
DEFAULT_BATCHES = (1, 4, 16, 64)
DEFAULT_PROMPTS = (128, 512, 2048, 8192)
UNEVEN_BATCHES = ((2648, 3740, 512, 128), (1000, 200, 3000, 7000, 64, 333, 4096, 1500))

# Kernel-name fragments -> the family synperf prices them under ("other": not priced).
KERNEL_CLASSES = (
    ("sendrecv", "send_recv"), ("nccl", "all_reduce"), ("allreduce", "all_reduce"),
    ("synperf_fused_moe", "moe"), ("synperf_silu_and_mul", "moe"),
    # attention before gemm: FlashInfer's SM90 kernels carry cutlass:: in their template names
    ("batchprefill", "attention"), ("batchdecode", "attention"), ("prefillwithkvcache", "attention"),
    ("decodewithkvcache", "attention"), ("flashattention", "attention"), ("mergestates", "attention"),
    ("sparseoffsets", "attention"), ("flashattnfwd", "attention"), ("prepare_varlen", "attention"),
    ("nvjet", "gemm"), ("gemm", "gemm"), ("cutlass", "gemm"), ("xmma", "gemm"),
    ("rmsnorm", "rmsnorm"), ("rope", "rope"), ("rotary", "rope"), ("act_and_mul", "silu_and_mul"),
    ("silu", "silu_and_mul"),
)


def kernel_class(name: str) -> str:
    low = name.lower()
    for fragment, family in KERNEL_CLASSES:
        if fragment in low:
            return family
    return "other"


def batch_grid(batches=DEFAULT_BATCHES, prompts=DEFAULT_PROMPTS, max_tokens=MAX_BATCH_TOKENS) -> list[list[int]]:
    """Prompt-length lists to run: every (batch, prompt) with batch x prompt <= max_tokens and the
    uneven batches, in a fixed shuffled order."""
    grid = [[p] * b for b in batches for p in prompts if b * p <= max_tokens]
    grid += [list(u) for u in UNEVEN_BATCHES if sum(u) <= max_tokens]
    random.Random(0).shuffle(grid)          # a run cut short by its budget still spans the grid
    return grid


def scaled_model(name: str, layers: int | None) -> ModelConfig:
    """A bundled model (or config path) cut to ``layers`` decoder layers."""
    return with_layers(load_model(name), layers)


def slot_layout(prompt_lens: list[int], output_len: int) -> list[int]:
    """First KV slot of each request: requests own contiguous runs of prompt + output slots."""
    return [0] + list(itertools.accumulate(p + output_len for p in prompt_lens))[:-1]


# ------------------------------------------------------------------------- the model on GPU
class ReferenceEngine:
    def __init__(self, model: ModelConfig, device, tp_rank: int = 0, tp_size: int = 1, group=None,
                 max_slots: int = 1 << 20, max_pos: int = 1 << 15, seed: int = 0, pp_rank: int = 0,
                 pp_size: int = 1, moe_engine: str = "reference"):
        import torch

        from .triton_elementwise import make_cos_sin_cache

        if model.mla:
            raise ValueError("MLA models are not supported by the reference engine")
        model.check_tp(tp_size)
        if model.num_layers % pp_size:
            raise ValueError(f"{pp_size} pipeline stages do not divide {model.num_layers} layers")
        if moe_engine not in ("reference", "vllm"):
            raise ValueError(f"moe_engine must be reference or vllm, got {moe_engine!r}")
        self.torch, self.m, self.dev = torch, model, device
        self.moe_engine = moe_engine
        if moe_engine == "vllm":
            from synperf.gpu import resolve_gpu

            from .triton_moe import engine_ops
            self.vllm_ops, self.gpu = engine_ops(), resolve_gpu(torch.cuda.get_device_name(device))
        self.rank, self.tp, self.group = tp_rank, tp_size, group
        # Pipeline stage: a contiguous run of layers; the first stage embeds, the last samples.
        self.first, self.last = pp_rank == 0, pp_rank == pp_size - 1
        per_stage = model.num_layers // pp_size
        g = torch.Generator(device=device).manual_seed(seed + tp_rank + 1000 * pp_rank)
        bf = torch.bfloat16

        def rand(*shape, fan_in=None):
            t = torch.randn(shape, device=device, dtype=bf, generator=g)
            return t.mul_(fan_in ** -0.5) if fan_in else t

        def norm_weight(n):
            return (1.0 + 0.1 * torch.randn(n, device=device, generator=g)).to(bf)

        h, d = model.hidden_size, model.head_dim
        self.H = model.num_heads // tp_size
        self.KVH = max(1, model.num_kv_heads // tp_size)
        # FlashInfer's CUDA-core decode kernel has only some group sizes (e.g. not qwen2.5-14b's 5);
        # for the others the engines ask for its tensor-core decode, which runs the paged prefill kernel.
        self.decode_on_tensor_cores = self.H // self.KVH not in DECODE_GROUP_SIZES
        self.vocab_part = model.vocab_size // tp_size
        self.embed = rand(self.vocab_part, h) if self.first else None
        self.lm_head = rand(self.vocab_part, h, fan_in=h) if self.last else None
        self.final_norm = norm_weight(h) if self.last else None
        self.cos_sin = make_cos_sin_cache(max_pos, d, device=device)
        self.layers = []
        for i in range(pp_rank * per_stage, (pp_rank + 1) * per_stage):
            layer = {"in_norm": norm_weight(h), "post_norm": norm_weight(h),
                     "qkv": rand((self.H + 2 * self.KVH) * d, h, fan_in=h), "o": rand(h, self.H * d, fan_in=self.H * d)}
            if model.qk_norm:
                layer["q_norm"], layer["k_norm"] = norm_weight(d), norm_weight(d)
            if i >= model.num_dense_layers:
                inter = model.expert_intermediate // tp_size
                E = model.num_experts
                layer.update(router=rand(E, h, fan_in=h), w13=rand(E, 2 * inter, h, fan_in=h),
                             w2=rand(E, h, inter, fan_in=inter))
            else:
                inter = model.intermediate_size // tp_size
                layer.update(gate_up=rand(2 * inter, h, fan_in=h), down=rand(h, inter, fan_in=inter))
            self.layers.append(layer)
        self.k_cache = self.v_cache = None
        self._ensure_cache(max_slots)
        self.workspace = torch.empty(256 << 20, dtype=torch.uint8, device=device)

    def _ensure_cache(self, slots: int) -> None:
        torch = self.torch
        if self.k_cache is not None and self.k_cache.shape[1] >= slots:
            return
        self.k_cache = self.v_cache = None
        shape = (len(self.layers), slots, 1, self.KVH, self.m.head_dim)     # page size 1, NHD
        self.k_cache = torch.empty(shape, dtype=torch.bfloat16, device=self.dev)
        self.v_cache = torch.empty(shape, dtype=torch.bfloat16, device=self.dev)

    # -------------------------------------------------------------------------- pieces
    def _all_reduce(self, x):
        if self.tp > 1:
            self.torch.distributed.all_reduce(x, group=self.group)
        return x

    def _embed(self, ids):
        F = self.torch.nn.functional
        if self.tp == 1:
            return F.embedding(ids, self.embed)
        local = ids - self.rank * self.vocab_part
        outside = (local < 0) | (local >= self.vocab_part)
        out = F.embedding(local.masked_fill(outside, 0), self.embed)
        out.masked_fill_(outside.unsqueeze(-1), 0)
        return self._all_reduce(out)

    def _attention_qkv(self, layer, x, positions, out_loc, li):
        import flashinfer

        F = self.torch.nn.functional
        d, H, KVH = self.m.head_dim, self.H, self.KVH
        qkv = F.linear(x, layer["qkv"])
        q, k, v = qkv.split([H * d, KVH * d, KVH * d], dim=-1)
        if self.m.qk_norm:      # as SGLang's Qwen3: reshape copies the strided view, then norms out of place
            eps = self.m.rms_norm_eps
            q = flashinfer.norm.rmsnorm(q.reshape(-1, d), layer["q_norm"], eps).view(-1, H * d)
            k = flashinfer.norm.rmsnorm(k.reshape(-1, d), layer["k_norm"], eps).view(-1, KVH * d)
        flashinfer.rope.apply_rope_with_cos_sin_cache_inplace(positions, q, k, d, self.cos_sin, is_neox=True)
        k3, v3 = k.view(-1, KVH, d), v.view(-1, KVH, d)
        self.k_cache[li, :, 0][out_loc] = k3
        self.v_cache[li, :, 0][out_loc] = v3
        return q.view(-1, H, d), k3, v3

    def _mlp(self, layer, x):
        F = self.torch.nn.functional
        import flashinfer

        if "gate_up" in layer:
            return F.linear(flashinfer.activation.silu_and_mul(F.linear(x, layer["gate_up"])), layer["down"])
        from synperf.kernels.moe import default_config

        from .triton_moe import MoEWorkspace

        torch = self.torch
        logits = F.linear(x, layer["router"])
        if self.moe_engine == "vllm":
            return self._vllm_moe(layer, x, logits)
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
        weights, ids = torch.topk(probs, self.m.topk, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        inter = layer["w2"].shape[2]
        cfg = default_config("sglang_default", x.shape[0], self.m.num_experts, self.m.hidden_size, inter, self.m.topk)
        return MoEWorkspace(x, layer["w13"], layer["w2"], weights, ids.to(torch.int32), cfg).full()

    def _vllm_moe(self, layer, x, logits):
        from synperf.kernels.moe import engine_config

        from .triton_moe import MoEWorkspace

        torch, T, k = self.torch, x.shape[0], self.m.topk
        weights = torch.empty((T, k), dtype=torch.float32, device=x.device)
        ids = torch.empty((T, k), dtype=torch.int32, device=x.device)
        token_expert = torch.empty((T, k), dtype=torch.int32, device=x.device)
        self.vllm_ops.topk_softmax(weights, ids, token_expert, logits, True, None)   # renormalised
        inter = layer["w2"].shape[2]
        cfg, _ = engine_config("vllm", self.gpu, T, self.m.num_experts, self.m.hidden_size, inter, k)
        return MoEWorkspace(x, layer["w13"], layer["w2"], weights, ids, cfg, "vllm", prealign=False).full()

    def forward(self, ids, positions, out_loc, attend, last_rows, carry=None):
        """One pass of this stage over the flat token batch; ``attend(q, k, v, layer_index)`` runs
        attention. A later pipeline stage starts from ``carry`` = (hidden, residual) of the one
        before; every stage but the last returns that pair, the last the sampled token ids."""
        import flashinfer

        F, torch = self.torch.nn.functional, self.torch
        eps = self.m.rms_norm_eps
        x, residual = (self._embed(ids), None) if carry is None else carry
        for li, layer in enumerate(self.layers):
            if residual is None:
                residual = x
                x = flashinfer.norm.rmsnorm(x, layer["in_norm"], eps)
            else:
                flashinfer.norm.fused_add_rmsnorm(x, residual, layer["in_norm"], eps)
            q, k, v = self._attention_qkv(layer, x, positions, out_loc, li)
            attn = attend(q, k, v, li).reshape(x.shape[0], -1)
            x = self._all_reduce(F.linear(attn, layer["o"]))
            flashinfer.norm.fused_add_rmsnorm(x, residual, layer["post_norm"], eps)
            x = self._all_reduce(self._mlp(layer, x))
        if not self.last:
            return x, residual
        flashinfer.norm.fused_add_rmsnorm(x, residual, self.final_norm, eps)
        logits = F.linear(x[last_rows], self.lm_head)
        if self.tp > 1:
            full = torch.empty((self.tp,) + tuple(logits.shape), dtype=logits.dtype, device=self.dev)
            torch.distributed.all_gather_into_tensor(full, logits.contiguous(), group=self.group)
            logits = full.permute(1, 0, 2).reshape(logits.shape[0], -1)
        return torch.argmax(logits, dim=-1)


# ----------------------------------------------------------------------- one batch, timed
@dataclass(frozen=True)
class Stages:
    """This rank's place in the pipeline, as global ranks: neighbours (None at the ends) and the
    first stage's rank of the same TP slot, which gets the sampled ids back from the last."""
    size: int = 1
    prev: int | None = None
    next: int | None = None
    first: int = 0
    last: int = 0

    @classmethod
    def of(cls, rank: int, tp: int, pp: int) -> "Stages":
        stage, slot = divmod(rank, tp)
        return cls(pp, rank - tp if stage > 0 else None, rank + tp if stage < pp - 1 else None, slot,
                   (pp - 1) * tp + slot)


class BatchRun:
    """Prefill + CUDA-graph decode of one static batch on a ReferenceEngine. Under pipeline
    parallelism each stage receives (hidden, residual) from the one before, runs its layers (its
    decode step one CUDA graph) and hands on, eagerly, as SGLang does; the last stage sends the
    sampled ids back to the first. One batch, no micro-batching: the stages run one after another."""

    def __init__(self, engine: ReferenceEngine, prompt_lens: list[int], output_len: int,
                 stages: Stages = Stages(), attention: str = "flashinfer"):
        import flashinfer

        torch = engine.torch
        self.e, self.torch, self.stages = engine, torch, stages
        self.prompts, self.output_len = list(prompt_lens), output_len
        self.B = len(prompt_lens)
        dev = engine.dev
        self.base = slot_layout(self.prompts, output_len)
        engine._ensure_cache(self.base[-1] + self.prompts[-1] + output_len)
        i32 = dict(dtype=torch.int32, device=dev)
        T = sum(self.prompts)
        self.prefill_ids = torch.randint(0, engine.m.vocab_size, (T,), device=dev)
        self.prefill_pos = torch.cat([torch.arange(p, device=dev) for p in self.prompts])
        self.prefill_loc = torch.cat([torch.arange(b, b + p, device=dev) for b, p in zip(self.base, self.prompts)])
        ends = list(itertools.accumulate(self.prompts))
        self.prefill_last = torch.tensor([x - 1 for x in ends], device=dev)
        qo_indptr = torch.tensor([0] + ends, **i32)
        # Decode state: static buffers the CUDA graph reads.
        self.ids = torch.zeros(self.B, dtype=torch.int64, device=dev)
        self.pos = torch.tensor(self.prompts, dtype=torch.int64, device=dev)
        self.loc = torch.tensor([b + p for b, p in zip(self.base, self.prompts)], dtype=torch.int64, device=dev)
        self.rows = torch.arange(self.B, device=dev)
        self.graph = self.graph_out = None
        m = engine.m
        if attention == "flash_attn3":
            self._use_flash_attn3(qo_indptr, output_len)
        else:
            self.prefill_wrapper = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(engine.workspace, "NHD",
                                                                                  backend="fa3")
            self.prefill_wrapper.plan(qo_indptr, qo_indptr, engine.H, engine.KVH, m.head_dim, causal=True,
                                      q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)
            self.indptr_buf = torch.zeros(self.B + 1, **i32)
            self.indices_buf = torch.zeros(sum(self.prompts) + self.B * output_len, **i32)
            self.last_buf = torch.ones(self.B, **i32)
            self.decode_wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
                engine.workspace, "NHD", use_cuda_graph=True, use_tensor_cores=engine.decode_on_tensor_cores,
                paged_kv_indptr_buffer=self.indptr_buf, paged_kv_indices_buffer=self.indices_buf,
                paged_kv_last_page_len_buffer=self.last_buf)
        h = m.hidden_size
        self.carry_in = (torch.randn(self.B, h, device=dev, dtype=torch.bfloat16),
                         torch.randn(self.B, h, device=dev, dtype=torch.bfloat16))

    def _use_flash_attn3(self, qo_indptr, output_len: int) -> None:
        """Attention as SGLang's FA3 backend (its default on Hopper) runs it: Dao-AILab
        FlashAttention-3 (vLLM's build, ``profile.ops.fa3_ops``) over the page-size-1 cache, no
        scheduler metadata, FA3's own split heuristic; the decode call is captured in the graph with
        the longest context the batch reaches (it sets the split heuristic) and the lengths in a buffer."""
        from synperf.profile.ops import fa3_ops

        torch, e = self.torch, self.e
        fa3 = fa3_ops()
        i32 = dict(dtype=torch.int32, device=e.dev)
        width = max(self.prompts) + output_len
        table = torch.zeros((self.B, width), **i32)
        for i, (b, p) in enumerate(zip(self.base, self.prompts)):
            table[i, :p + output_len] = torch.arange(b, b + p + output_len, **i32)
        prompts = torch.tensor(self.prompts, **i32)
        self.fa3_lens = torch.tensor(self.prompts, **i32)
        decode_q = torch.arange(self.B + 1, **i32)
        scale = e.m.head_dim ** -0.5

        def call(q, li, cu_q, lens, max_q, max_k, causal):
            return fa3.fwd(q, e.k_cache[li], e.v_cache[li], None, None, None, None, cu_q, None, None, None, lens,
                           max_q, max_k, table, None, None, None, None, None, None, None, None, scale, causal,
                           -1, -1, 0.0, True, None, 0, None, 0, None, 1, 0, None)[0]

        longest = max(self.prompts)
        self._prefill_attend = lambda q, k, v, li: call(q, li, qo_indptr, prompts, longest, longest, True)
        self._decode_attend = lambda q, k, v, li: call(q, li, decode_q, self.fa3_lens, 1, width, False)
        self._plan_decode = lambda step: self.fa3_lens.copy_(prompts + 1 + step)

    # ------------------------------------------------------------------ pipeline hand-over
    def _receive(self, tokens: int):
        """(hidden, residual) from the previous stage; None on the first."""
        if self.stages.prev is None:
            return None
        torch = self.torch
        bufs = self.carry_in if tokens == self.B else tuple(
            torch.empty(tokens, self.e.m.hidden_size, device=self.e.dev, dtype=torch.bfloat16) for _ in range(2))
        for t in bufs:
            torch.distributed.recv(t, self.stages.prev)
        return bufs

    def _hand_on(self, out, ids_into):
        """Send this stage's output on; the first stage receives the sampled ids into ``ids_into``."""
        dist, st = self.torch.distributed, self.stages
        if st.size == 1:
            return out
        if st.next is not None:
            for t in out:
                dist.send(t.contiguous(), st.next)
        else:
            dist.send(out, st.first)
        if st.prev is None:
            dist.recv(ids_into, st.last)
        return ids_into

    def _prefill_attend(self, q, k, v, li):
        return self.prefill_wrapper.run(q, k, v)

    def prefill(self):
        carry = self._receive(len(self.prefill_ids))
        out = self.e.forward(self.prefill_ids, self.prefill_pos, self.prefill_loc, self._prefill_attend,
                             self.prefill_last, carry)
        return self._hand_on(out, self.ids)

    # --------------------------------------------------- vLLM's piecewise CUDA graphs (prefill)
    def capture_pieces(self) -> int:
        """Capture the prefill as vLLM V1 runs a step of up to 512 tokens (``PiecewiseGraphs``);
        the number of pieces, 0 when capture is refused. One stage only: vLLM's PP ranks run their
        own pieces the same way."""
        if self.stages.size != 1:
            raise ValueError("piecewise prefill is measured at PP=1")
        self.pieces = PiecewiseGraphs.capture(
            self.torch, lambda attend: self.e.forward(self.prefill_ids, self.prefill_pos, self.prefill_loc, attend,
                                                      self.prefill_last),
            self._attend_into, warm_up=self.prefill)
        return self.pieces.count if self.pieces else 0

    def prefill_piecewise(self):
        """One prefill through the captured pieces (``capture_pieces``)."""
        return self._hand_on(self.pieces.replay(), self.ids)

    def _attend_into(self, q, k, v, li, out):
        """Prefill attention written into ``out``, as vLLM's attention op writes its output buffer
        (FA3's call returns a tensor, copied: one small kernel)."""
        if getattr(self, "prefill_wrapper", None) is not None:
            _run_into(self.prefill_wrapper.run, out, q, k, v)
        else:
            out.copy_(self._prefill_attend(q, k, v, li))

    def _plan_decode(self, step: int) -> None:
        torch = self.torch
        lens = [p + 1 + step for p in self.prompts]
        indptr = torch.tensor([0] + list(itertools.accumulate(lens)), dtype=torch.int32)
        indices = torch.cat([torch.arange(b, b + n, dtype=torch.int32, device=self.e.dev)
                             for b, n in zip(self.base, lens)])
        m = self.e.m
        self.decode_wrapper.plan(indptr, indices, torch.ones(self.B, dtype=torch.int32), self.e.H, self.e.KVH,
                                 m.head_dim, 1, q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)

    def _decode_attend(self, q, k, v, li):
        return self.decode_wrapper.run(q, (self.e.k_cache[li], self.e.v_cache[li]))

    def _decode_body(self):
        """One decode step of this stage's layers: what the CUDA graph captures."""
        carry = self.carry_in if self.stages.prev is not None else None
        out = self.e.forward(self.ids, self.pos, self.loc, self._decode_attend, self.rows, carry)
        if self.stages.size == 1:
            self.ids.copy_(out)
        self.pos.add_(1)
        self.loc.add_(1)
        return out

    def _reset_decode_state(self):
        torch = self.torch
        self.pos.copy_(torch.tensor(self.prompts, device=self.e.dev))
        self.loc.copy_(torch.tensor([b + p for b, p in zip(self.base, self.prompts)], device=self.e.dev))

    def capture(self) -> bool:
        """Capture one decode step; False (and eager decode) when capture is refused."""
        torch = self.torch
        self._plan_decode(0)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._decode_body()
                self._reset_decode_state()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        try:
            graph = torch.cuda.CUDAGraph()
            # thread_local: NCCL's watchdog thread may touch CUDA while this thread captures
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.graph_out = self._decode_body()
            self.graph = graph
        except RuntimeError as exc:
            print(f"engine: CUDA graph capture refused ({exc}); decode runs eagerly", file=sys.stderr)
            self.graph = None
        torch.cuda.synchronize()
        self._reset_decode_state()
        return self.graph is not None

    def decode_step(self, step: int):
        self._plan_decode(step)
        self._receive(self.B)
        if self.graph is not None:
            self.graph.replay()
            out = self.graph_out
        else:
            out = self._decode_body()
        self._hand_on(out, self.ids)


# ------------------------------------------------------------------ timing one pass
def timed(torch, fn, *args) -> tuple[float, float]:
    """(wall ms, host ms) of one call from an idle GPU: the host time ends when the call returns,
    i.e. what issuing its work costs the CPU (nothing in a pass waits on the GPU). Under TP or PP
    the ranks start together, as an engine's per-step broadcast starts its workers: without the
    barrier a rank that started late held rank 0's small TP=2 prefills up to 2.3x longer."""
    torch.cuda.synchronize()
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(*args)
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3, (t1 - t0) * 1e3

def profile_kernels(torch, fn, *args) -> dict[str, dict[str, float]]:
    """CUPTI kernel times of one call: {family: {kernels, us}} (this rank's GPU)."""
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    from .trace import load_gpu_events

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn(*args)
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        events = load_gpu_events(path, device=torch.cuda.current_device())
    out: dict[str, dict[str, float]] = {}
    for ev in events:
        slot = out.setdefault(kernel_class(ev["name"]), {"kernels": 0, "us": 0.0})
        slot["kernels"] += 1
        slot["us"] += ev["dur"]
    return {k: {"kernels": v["kernels"], "us": round(v["us"], 2)} for k, v in sorted(out.items())}


def timed_columns(torch, name: str, fn, reps: int, stage=None) -> dict:
    """``{name}_ms`` and ``{name}_host_ms`` (medians of ``reps`` calls, ``timed``) and
    ``{name}_kernels`` (one CUPTI-profiled call; ``stage(breakdown)`` sums it over PP stages)."""
    reps_timed = [timed(torch, fn) for _ in range(reps)]
    kernels = profile_kernels(torch, fn)
    return {f"{name}_ms": statistics.median(w for w, _ in reps_timed),
            f"{name}_host_ms": statistics.median(h for _, h in reps_timed),
            f"{name}_kernels": json.dumps(stage(kernels) if stage else kernels)}


class PassClocks:
    """The SM clock and board power (NVML), sampled on a thread every ``interval_s`` while timed
    passes run. A sustained pass can hold the GPU at its power cap, below the clocks of the isolated
    kernels the models were fitted on. Without NVML (nvidia-ml-py) it records nothing. The thread
    holds the GIL for a few microseconds a sample, so the host-bound passes it watches barely move."""

    def __init__(self, nvml, handle, interval_s: float = 0.01):
        import threading

        self.nvml, self.handle, self.interval_s = nvml, handle, interval_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @classmethod
    def of_device(cls, device_index: int) -> "PassClocks":
        from .harness import ClockReader

        reader = ClockReader(device_index)
        return cls(reader.nvml, reader.handle)

    def _run(self) -> None:
        nv, h = self.nvml, self.handle
        while not self._stop.is_set():
            self.samples.append((nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM), nv.nvmlDeviceGetPowerUsage(h) / 1e3))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PassClocks":
        if self.nvml is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()

    def means(self) -> tuple[float | None, float | None]:
        """(SM clock MHz, board power W), mean over the samples; None without NVML."""
        if not self.samples:
            return None, None
        return (round(statistics.fmean(c for c, _ in self.samples), 1),
                round(statistics.fmean(w for _, w in self.samples), 1))


class PiecewiseGraphs:
    """A pass captured as vLLM V1 runs a step of up to 512 tokens: CUDA graphs split at each
    attention call (its splitting op), replayed one after another with attention run eagerly
    between them into a static output buffer (``attend_into(q, k, v, layer, out)``)."""

    def __init__(self, pieces, calls, out, attend_into):
        self.pieces, self.calls, self.out, self.attend_into = pieces, calls, out, attend_into
        self.count = len(pieces)

    @classmethod
    def capture(cls, torch, forward, attend_into, warm_up) -> "PiecewiseGraphs | None":
        """``forward(attend)`` runs the pass; ``warm_up()`` runs it eagerly (twice, on the capture
        stream, first). None when capture is refused."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                warm_up()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        pool = torch.cuda.graph_pool_handle()
        pieces, calls = [], []

        def begin():
            graph = torch.cuda.CUDAGraph()
            # thread_local: NCCL's watchdog thread may touch CUDA while this thread captures
            graph.capture_begin(pool=pool, capture_error_mode="thread_local")
            pieces.append(graph)

        def split(q, k, v, li):
            pieces[-1].capture_end()
            out = torch.empty(q.shape[0], q.shape[1], v.shape[-1], dtype=q.dtype, device=q.device)
            calls.append((q, k, v, li, out))
            begin()
            return out

        try:
            with torch.cuda.stream(side):
                begin()
                result = forward(split)
                pieces[-1].capture_end()
        except RuntimeError as exc:
            print(f"engine: piecewise capture refused ({exc}); the pass stays eager", file=sys.stderr)
            return None
        torch.cuda.synchronize()
        return cls(pieces, calls, result, attend_into)

    def replay(self):
        for graph, call in itertools.zip_longest(self.pieces, self.calls):
            graph.replay()
            if call is not None:
                self.attend_into(*call)
        return self.out


def _run_into(run, out, *args) -> None:
    """``run(*args)`` written into ``out``: in place where the FlashInfer wrapper takes ``out``,
    else copied (one small kernel)."""
    try:
        run(*args, out=out)
    except TypeError:
        out.copy_(run(*args))


class MixedRun:
    """One continuous-batching step on a ReferenceEngine, laid out as ``engines.mixed_pass``
    (framework ``reference``) prices it: fresh prompts ``chunks`` prefilled (FlashInfer's SM90 ragged
    prefill) and ``decode_ctx`` sequences decoding one token over their cached context (FlashInfer's
    paged decode, CUDA cores, page size 1), in one pass: one token batch through every GEMM and norm,
    two attention calls a layer. The cached contexts hold whatever the cache holds: timing does not
    depend on the values. TP only (no PP)."""

    def __init__(self, engine: ReferenceEngine, chunks: list[int], decode_ctx: list[int]):
        import flashinfer

        torch = engine.torch
        self.e, self.torch = engine, torch
        dev, m = engine.dev, engine.m
        i32 = dict(dtype=torch.int32, device=dev)
        seqs = list(chunks) + list(decode_ctx)
        base = slot_layout(seqs, 1)
        engine._ensure_cache(base[-1] + seqs[-1] + 1)
        self.P = sum(chunks)
        decode_base = base[len(chunks):]
        self.ids = torch.randint(0, m.vocab_size, (self.P + len(decode_ctx),), device=dev)
        self.pos = torch.cat([torch.arange(p, device=dev) for p in chunks]
                             + [torch.tensor(decode_ctx, device=dev)])
        self.loc = torch.cat([torch.arange(b, b + p, device=dev) for b, p in zip(base, chunks)]
                             + [torch.tensor([b + c for b, c in zip(decode_base, decode_ctx)], device=dev)])
        ends = list(itertools.accumulate(chunks))
        self.last = torch.tensor([x - 1 for x in ends] + [self.P + i for i in range(len(decode_ctx))], device=dev)
        qo = torch.tensor([0] + ends, **i32)
        self.prefill_wrapper = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(engine.workspace, "NHD", backend="fa3")
        self.prefill_wrapper.plan(qo, qo, engine.H, engine.KVH, m.head_dim, causal=True,
                                  q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)
        # a workspace of its own: both plans live through the pass
        self.decode_wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
            torch.empty(128 << 20, dtype=torch.uint8, device=dev), "NHD",
            use_tensor_cores=engine.decode_on_tensor_cores)
        lens = [c + 1 for c in decode_ctx]
        indices = torch.cat([torch.arange(b, b + n, **i32) for b, n in zip(decode_base, lens)])
        self.decode_wrapper.plan(torch.tensor([0] + list(itertools.accumulate(lens)), dtype=torch.int32), indices,
                                 torch.ones(len(lens), dtype=torch.int32), engine.H, engine.KVH, m.head_dim, 1,
                                 q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)
        self.pieces = None

    def _attend_into(self, q, k, v, li, out):
        P, e = self.P, self.e
        _run_into(self.prefill_wrapper.run, out[:P], q[:P], k[:P], v[:P])
        _run_into(self.decode_wrapper.run, out[P:], q[P:], (e.k_cache[li], e.v_cache[li]))

    def _attend(self, q, k, v, li):
        out = self.torch.empty(q.shape[0], q.shape[1], v.shape[-1], dtype=q.dtype, device=q.device)
        self._attend_into(q, k, v, li, out)
        return out

    def _forward(self, attend):
        return self.e.forward(self.ids, self.pos, self.loc, attend, self.last)

    def step(self):
        return self._forward(self._attend)

    def capture_pieces(self) -> int:
        self.pieces = PiecewiseGraphs.capture(self.torch, self._forward, self._attend_into, warm_up=self.step)
        return self.pieces.count if self.pieces else 0

    def step_piecewise(self):
        return self.pieces.replay()


def _stage(message: str) -> None:
    if os.environ.get("SYNPERF_ENGINE_TRACE"):
        print(f"[rank {os.environ.get('RANK', '0')} {time.strftime('%X')}] {message}", file=sys.stderr, flush=True)


def _stage_sum(breakdown: dict, stages: Stages, tp: int) -> dict:
    """Under PP, the kernels of all stages (each stage's first TP rank), as one pass would run them."""
    if stages.size == 1:
        return breakdown
    import torch

    gathered: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, breakdown)
    total: dict = {}
    for part in gathered[::tp]:
        for family, v in part.items():
            slot = total.setdefault(family, {"kernels": 0, "us": 0.0})
            slot["kernels"] += v["kernels"]
            slot["us"] = round(slot["us"] + v["us"], 2)
    return dict(sorted(total.items()))


def run_batch(engine: ReferenceEngine, prompt_lens: list[int], output_len: int, prefill_reps: int = 10,
              cuda_graph: bool = True, stages: Stages = Stages(), attention: str = "flashinfer",
              piecewise: bool = False) -> dict:
    """``piecewise``: the prefill is also timed through vLLM-style piecewise CUDA graphs
    (``BatchRun.capture_pieces``), in the same row (``piecewise_*`` columns)."""
    run = BatchRun(engine, prompt_lens, output_len, stages, attention)
    _stage(f"batch {len(prompt_lens)} x {prompt_lens[0]}: warm-up prefill")
    run.prefill()                                   # warm-up: compiles Triton kernels, JIT modules
    device = engine.torch.cuda.current_device()
    with PassClocks.of_device(device) as prefill_clocks:
        prefill_timed = [timed(engine.torch, run.prefill) for _ in range(prefill_reps)]
    prefill_ms = sorted(wall for wall, _ in prefill_timed)
    _stage("profiled prefill")
    prefill_kernels = _stage_sum(profile_kernels(engine.torch, run.prefill), stages, engine.tp)
    pieces = {}
    if piecewise:
        _stage("piecewise capture")
        count = run.capture_pieces()
        if count:
            run.prefill_piecewise()
            pieces = {"piecewise_pieces": count,
                      **timed_columns(engine.torch, "piecewise_prefill", run.prefill_piecewise, prefill_reps,
                                      lambda k: _stage_sum(k, stages, engine.tp))}
            run.pieces = None
    _stage("decode capture")
    graph = run.capture() if cuda_graph else False
    _stage("profiled decode step")
    decode_kernels = _stage_sum(profile_kernels(engine.torch, run.decode_step, 0), stages, engine.tp)
    run._reset_decode_state()
    run.prefill()                                   # fresh KV for the timed generation
    _stage("timed decode")
    with PassClocks.of_device(device) as decode_clocks:
        steps_timed = [timed(engine.torch, run.decode_step, s) for s in range(output_len - 1)]
    steps = [wall for wall, _ in steps_timed]
    median_prefill = statistics.median(prefill_ms)
    prefill_host = statistics.median(host for _, host in prefill_timed)
    (prefill_mhz, prefill_w), (decode_mhz, decode_w) = prefill_clocks.means(), decode_clocks.means()
    return {
        "batch": len(prompt_lens), "prompt_lens": list(prompt_lens), "prompt_tokens": sum(prompt_lens),
        "output_len": output_len, "prefill_ms": median_prefill, "prefill_min_ms": prefill_ms[0],
        "prefill_max_ms": prefill_ms[-1], "decode_steps_ms": steps,
        "prefill_host_ms": prefill_host,
        # Under TP or PP the pass can wait on another rank's host: the slowest rank's median.
        "prefill_host_max_ms": _max_over_ranks(engine.torch, prefill_host),
        "decode_step_host_ms": statistics.median(host for _, host in steps_timed) if steps else 0.0,
        "decode_step_median_ms": statistics.median(steps) if steps else 0.0,
        "total_ms": median_prefill + sum(steps), "cuda_graph": graph, "prefill_reps": prefill_reps,
        "prefill_kernels": json.dumps(prefill_kernels), "decode_kernels": json.dumps(decode_kernels),
        "prefill_sm_mhz": prefill_mhz, "prefill_power_w": prefill_w,
        "decode_sm_mhz": decode_mhz, "decode_power_w": decode_w, **pieces,
    }


def run_mixed(engine: ReferenceEngine, chunks: list[int], decode_seqs: int, decode_ctx: int, reps: int = 10,
              piecewise: bool = False) -> dict:
    """A continuous-batching step (``MixedRun``): ``chunks`` prefilled with ``decode_seqs`` sequences
    of context ``decode_ctx`` decoding, timed eagerly (``mixed_*`` columns) and, with ``piecewise``,
    through piecewise CUDA graphs (``piecewise_mixed_*``); medians of ``reps`` after a warm-up. Each
    mode is also run back to back for ``SUSTAINED_S`` as a busy server runs its steps, the GPU never
    idle (``*_sustained_ms``: the mean step; ``*_sustained_mhz``, ``*_sustained_w``: SM clock and
    board power over it)."""
    run = MixedRun(engine, chunks, [decode_ctx] * decode_seqs)
    _stage(f"mixed step: {len(chunks)} chunks + {decode_seqs} decoding")
    out = {"mixed_decode_seqs": decode_seqs, "mixed_decode_ctx": decode_ctx}
    modes = [("mixed", run.step)]
    if piecewise and run.capture_pieces():
        modes.append(("piecewise_mixed", run.step_piecewise))
    torch = engine.torch
    for name, fn in modes:
        fn()
        out.update(timed_columns(torch, name, fn, reps))
        # a step count every TP rank shares, so all issue the same collectives
        steps = max(1, int(_max_over_ranks(torch, SUSTAINED_S * 1e3 / out[f"{name}_ms"])))
        with PassClocks.of_device(torch.cuda.current_device()) as clocks:
            timed(torch, lambda: None)                  # the ranks start together
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            torch.cuda.synchronize()
            mean_ms = (time.perf_counter() - t0) * 1e3 / steps
        mhz, watts = clocks.means()
        out.update({f"{name}_sustained_ms": mean_ms, f"{name}_sustained_mhz": mhz, f"{name}_sustained_w": watts})
    return out


# ------------------------------------------------------------------------------------- CLI
def host_cpu() -> str | None:
    """The host's CPU model: eager prefill and the decode step's host work run at its speed (the
    same batches took up to 1.9x longer host time on another H200 host)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _versions() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu_name": torch.cuda.get_device_name(),
            "host_cpu": host_cpu()}
    for mod in ("triton", "flashinfer"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:                       # noqa: BLE001 - recorded, not fatal
            info[mod] = None
    return info


def _max_over_ranks(torch, value: float) -> float:
    """``value``'s maximum over the ranks of the run (every rank calls this; one rank: ``value``)."""
    if not torch.distributed.is_initialized():
        return value
    t = torch.tensor([value], device="cuda", dtype=torch.float64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t.item())


def _budget_spent(spent_here: bool, world: int) -> bool:
    """True on every rank once any rank's budget is spent, so no rank leaves the others waiting."""
    if world == 1:
        return bool(spent_here)
    import torch

    flag = torch.tensor([1 if spent_here else 0], device="cuda")
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m synperf.profile.engine", description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, help="comma list of bundled model names or config paths")
    p.add_argument("--layers", type=int, default=8, help="decoder layers kept per model (0: all)")
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--prefill-reps", type=int, default=10, help="timed prefills per batch (median reported)")
    p.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)))
    p.add_argument("--prompts", default=",".join(map(str, DEFAULT_PROMPTS)))
    p.add_argument("--max-batch-tokens", type=int, default=MAX_BATCH_TOKENS)
    p.add_argument("--time-budget-s", type=float, default=None,
                   help="per model, counted from the end of its first batch (which pays the JIT builds)")
    p.add_argument("--eager-decode", action="store_true", help="decode without CUDA graphs")
    p.add_argument("--pp", type=int, default=1, help="pipeline stages (TP = processes / pp)")
    p.add_argument("--moe-engine", choices=("reference", "vllm"), default="reference",
                   help="MoE layers as the reference engine runs them, or as vLLM 0.22 does (module docstring)")
    p.add_argument("--attention", choices=("flashinfer", "flash_attn3"), default="flashinfer",
                   help="FlashInfer (SM90 prefill, CUDA-core decode), or FlashAttention-3 as SGLang's FA3 "
                        "backend calls it (needs $SYNPERF_VLLM_FA3_LIB or vLLM)")
    p.add_argument("--piecewise", action="store_true",
                   help="also time each prefill through vLLM-style piecewise CUDA graphs (PP=1)")
    p.add_argument("--mixed-decode", default=None, metavar="SEQS:CTX",
                   help="also time each batch's prompts as one continuous-batching step with SEQS sequences "
                        "of context CTX decoding (mixed_* columns; PP=1)")
    p.add_argument("--out", required=True, help="output .jsonl (rank 0 writes; parquet is made from it)")
    args = p.parse_args(argv)
    if args.prefill_reps < 1:
        p.error(f"--prefill-reps must be at least 1, got {args.prefill_reps}")
    mixed = None
    if args.mixed_decode:
        try:
            mixed = tuple(int(x) for x in args.mixed_decode.split(":"))
            if len(mixed) != 2 or min(mixed) < 1:
                raise ValueError
        except ValueError:
            p.error(f"--mixed-decode: expected SEQS:CTX (two positive integers), got {args.mixed_decode!r}")
    if os.environ.get("SYNPERF_ENGINE_HANG_DUMP_S"):      # a hung rank prints where it waits
        import faulthandler
        faulthandler.dump_traceback_later(float(os.environ["SYNPERF_ENGINE_HANG_DUMP_S"]), repeat=True)

    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if args.pp < 1 or world % args.pp:
        p.error(f"--pp {args.pp} does not divide the {world} processes")
    tp = world // args.pp
    stages = Stages.of(rank, tp, args.pp)
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    group = None
    if world > 1:
        torch.distributed.init_process_group("nccl", device_id=torch.device("cuda", torch.cuda.current_device()))
        # every rank creates every stage's TP group, in the same order
        tp_groups = [torch.distributed.new_group(list(range(s * tp, (s + 1) * tp))) for s in range(args.pp)]
        group = tp_groups[rank // tp]
    grid = batch_grid([int(x) for x in args.batches.split(",")], [int(x) for x in args.prompts.split(",")],
                      args.max_batch_tokens)
    env = _versions()
    out = Path(args.out)
    for name in args.models.split(","):
        start = None
        model = scaled_model(name, args.layers or None)
        engine = ReferenceEngine(model, torch.device("cuda"), rank % tp, tp, group,
                                 max_slots=args.max_batch_tokens + 64 * args.output_len,
                                 pp_rank=rank // tp, pp_size=args.pp, moe_engine=args.moe_engine)
        for prompts in grid:
            if _budget_spent(bool(args.time_budget_s and start and time.time() - start > args.time_budget_s), world):
                print("engine: time budget spent", file=sys.stderr)
                break
            try:
                row = run_batch(engine, prompts, args.output_len, args.prefill_reps,
                                cuda_graph=not args.eager_decode, stages=stages, attention=args.attention,
                                piecewise=args.piecewise)
            except torch.cuda.OutOfMemoryError as exc:
                print(f"engine: {name} batch {len(prompts)} out of memory ({exc})", file=sys.stderr)
                torch.cuda.empty_cache()
                continue
            if mixed:
                row.update(run_mixed(engine, prompts, *mixed, args.prefill_reps, args.piecewise))
            start = start or time.time()
            row.update(model=name, num_layers=model.num_layers, full_layers=load_model(name).num_layers,
                       tp=tp, pp=args.pp, framework_kernels="sglang", moe_engine=args.moe_engine,
                       attention=args.attention, **env)
            if rank == 0:
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{name} tp{tp} pp{args.pp} B={row['batch']} tokens={row['prompt_tokens']}: prefill {row['prefill_ms']:.2f} ms,"
                      f" step {row['decode_step_median_ms']:.3f} ms, graph {row['cuda_graph']}"
                      + (f", piecewise prefill {row['piecewise_prefill_ms']:.2f} ms" if "piecewise_prefill_ms" in row else ""),
                      flush=True)
        del engine
        torch.cuda.empty_cache()
    if world > 1:
        # A CUDA graph that captured an NCCL collective keeps the communicator busy: with a
        # piecewise graph still alive (held by a reference cycle), destroy_process_group waited
        # forever on both ranks (faulthandler, 2026-11-30). Free every graph, then leave together.
        gc.collect()
        torch.cuda.synchronize()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
