"""Rotary position embedding (NeoX style), applied in place to q [tokens, heads, head_dim] and
k [tokens, kv_heads, head_dim] from a float32 cos/sin cache indexed by each token's position.

flashinfer (pos_enc.cuh, BatchQKApplyRotaryPosIdsCosSinCache): a CTA of bdx x bdy threads
(vec = max(16 / bytes, head_dim / 32), bdx = head_dim / vec, bdx * bdy = max(128, bdx)) covers bdy
tokens. With at least a full wave of such CTAs (cudaOccupancyMaxActiveBlocksPerMultiprocessor of
the token kernel, 47 registers on sm90, times the SMs) each CTA does all heads of its tokens;
otherwise the HeadParallelism kernel (40 registers) launches one CTA per (bdy tokens, head). Each
element needs its cos and sin and one multiply-add pair.
triton (synperf.profile.triton_elementwise): one program per token, all q and k heads, with
min(8, warps for (next_pow2(heads) + next_pow2(kv_heads)) x next_pow2(head_dim / 2) / 2) warps.
torch: vLLM's forward_native composition (synperf.profile.triton_elementwise.rope_torch): gather
cos/sin by position, then per tensor upcast both halves, four multiplies, a subtract and an add,
concatenate, cast back and copy into place: 1 + 2 x 11 PyTorch kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from synperf.errors import InputError
from synperf.kernels._common import DTYPE_BYTES, built_registers, ceil_div, elementwise_launch, next_pow2, rowwise_launch, triton_num_warps
from synperf.schedule import occupancy
from synperf.tasks import Launch, Resources, task_demand
from synperf.validate import MAX_TOKENS, get_int

FAMILY = "rope"
LIBRARIES = ("flashinfer", "triton", "torch")
DTYPES = ("bf16", "fp16")
FIELDS = {"tokens", "num_heads", "num_kv_heads", "head_dim"}
FLASHINFER_HEAD_DIMS = (64, 128, 256, 512)   # DISPATCH_HEAD_DIM in flashinfer's pos_enc
# Registers of flashinfer's two rope kernels (profiled on H200, flashinfer 0.5.0).
_FLASHINFER_TOKEN_REGISTERS, _FLASHINFER_HEAD_REGISTERS = 47, 40


@dataclass(frozen=True)
class RopeCall:
    tokens: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    dtype: str
    library: str


def parse(obj: dict, dtype: str, library: str) -> RopeCall:
    call = RopeCall(get_int(obj, "tokens", hi=MAX_TOKENS), get_int(obj, "num_heads", hi=1024),
                    get_int(obj, "num_kv_heads", hi=1024), get_int(obj, "head_dim", hi=1024), dtype, library)
    if call.head_dim % 2:
        raise InputError("must be even for rotary embedding", "head_dim")
    if library == "flashinfer" and call.head_dim not in FLASHINFER_HEAD_DIMS:
        raise InputError(f"flashinfer rope supports head_dim {FLASHINFER_HEAD_DIMS} only", "head_dim")
    return call


def _flashinfer_launch(call: RopeCall, gpu) -> Launch:
    """Per token: read and write every q/k element, read head_dim cos/sin floats once from DRAM
    (each head-parallel CTA reads them again, from L2)."""
    b = DTYPE_BYTES[call.dtype]
    heads = call.num_heads + call.num_kv_heads
    vec = max(16 // b, call.head_dim // 32)
    bdx = call.head_dim // vec
    threads = max(128, bdx)
    bdy = threads // bdx
    blocks = ceil_div(call.tokens, bdy)
    token_parallel = blocks >= occupancy(Resources(threads, _FLASHINFER_TOKEN_REGISTERS, 0), gpu).ctas_per_sm * gpu.sm_count
    heads_per_task, tasks = (heads, blocks) if token_parallel else (1, blocks * heads)
    # the last CTA's rows past the tokens are masked off: spread the real tokens over all tasks
    tokens_per_task = call.tokens / blocks
    elements = tokens_per_task * heads_per_task * call.head_dim
    return Launch(
        name="BatchQKApplyRotaryPosIdsCosSinCache" + ("" if token_parallel else "HeadParallelism"),
        demand=task_demand(fma_ops=3.0 * elements, l2_bytes=2.0 * b * elements + 4.0 * tokens_per_task * call.head_dim),
        counts=[tasks],
        resources=Resources(threads, _FLASHINFER_TOKEN_REGISTERS if token_parallel else _FLASHINFER_HEAD_REGISTERS, 0),
        dram_read_bytes=call.tokens * (heads * call.head_dim * b + 4.0 * call.head_dim),
        dram_write_bytes=call.tokens * heads * call.head_dim * b,
        notes=(f"{'token' if token_parallel else 'head'}-parallel grid {blocks}x{1 if token_parallel else heads}, "
               f"{bdy} tokens a CTA",),
    )


def _triton_block(call: RopeCall) -> tuple[int, int]:
    """(padded elements of a program's block, warps): the block spans next_pow2 of the q heads, of
    the k heads and of head_dim / 2, twice (both halves); masked lanes still take a thread's turn."""
    work = (next_pow2(call.num_heads) + next_pow2(call.num_kv_heads)) * next_pow2(call.head_dim // 2)
    return 2 * work, min(8, triton_num_warps(work // 2))


# Registers a thread of the Triton kernel holds, where the register census has no build (another
# GPU generation, a head_dim outside its grid): ~0.85 per element it walks (the q and k halves in
# fp32) + 19, least squares on 454 profiled H200 programs (8 % mean error, 22 % over the census grid).
# Large blocks fit one program an SM where 32 registers would have allowed 8; the occupancy steps
# are what the census gets right and the fit does not (held out Triton RoPE, same split: 32
# registers 4.54 %, the fit 4.37 %, the census 3.96 %; docs/kernels-elementwise.md).
_TRITON_REGISTERS_PER_ELEMENT, _TRITON_BASE_REGISTERS = 0.853, 18.7
REGISTER_KEY = ("head_dim", "q_block", "kv_block")


def _triton_registers(call: RopeCall, gpu) -> tuple[int, int]:
    """(registers per thread, spilled registers) of the Triton program."""
    built = built_registers("rope", gpu, (call.head_dim, next_pow2(call.num_heads), next_pow2(call.num_kv_heads)))
    if built:
        return built
    padded, warps = _triton_block(call)
    need = _TRITON_REGISTERS_PER_ELEMENT * padded / (32 * warps) + _TRITON_BASE_REGISTERS
    return min(255, int(math.ceil(need / 8) * 8)), 0


# The Triton kernel's block shape as model inputs: elements a thread handles one after another and
# the share of the block's lanes that hold real elements. The demand counts real elements only;
# a program of 1 warp walking 5 heads takes longer than one of 4 warps walking 13 (other libraries:
# 0 and 1, their blocks are not padded).
EXTRA_FEATURES = ("triton_elements_per_thread_log2", "triton_active_lane_fraction")


def extra_features(call: RopeCall) -> list[float]:
    if call.library != "triton":
        return [0.0, 1.0]
    padded, warps = _triton_block(call)
    return [math.log2(padded / (32 * warps)), (call.num_heads + call.num_kv_heads) * call.head_dim / padded]


def decompose(call: RopeCall, gpu) -> tuple[Launch, ...]:
    b = DTYPE_BYTES[call.dtype]
    heads = call.num_heads + call.num_kv_heads
    if call.library == "flashinfer":
        return (_flashinfer_launch(call, gpu),)
    if call.library == "triton":
        # Per token: read and write every q/k element, read head_dim cos/sin floats once.
        registers, spilled = _triton_registers(call, gpu)
        launch = rowwise_launch("synperf_rope_kernel", call.tokens, heads * call.head_dim,
                                threads=32 * _triton_block(call)[1], registers=registers,
                                bytes_in_per_col=b + 4.0 / heads, bytes_out_per_col=b,
                                fma_per_col=3.0, xu_per_col=0.0)
        return (replace(launch, spilled_registers=spilled),)
    launches: list[Launch] = [
        elementwise_launch("index_select cos/sin", call.tokens * call.head_dim, bytes_in_per_elem=4,
                           bytes_out_per_elem=4, fma_per_elem=0.0),
    ]
    for label, h in (("q", call.num_heads), ("k", call.num_kv_heads)):
        half = call.tokens * h * call.head_dim // 2
        cos_bytes = 4.0 / h   # one cos (or sin) float per token and column, shared by the heads
        launches += [elementwise_launch(f"{label}{half_index}.float()", half, bytes_in_per_elem=b,
                                        bytes_out_per_elem=4, fma_per_elem=0.0) for half_index in (1, 2)]
        launches += [elementwise_launch(f"{label} {op}", half, bytes_in_per_elem=4 + cos_bytes, bytes_out_per_elem=4)
                     for op in ("x1*cos", "x2*sin", "x2*cos", "x1*sin")]
        launches += [elementwise_launch(f"{label} {op}", half, bytes_in_per_elem=8, bytes_out_per_elem=4)
                     for op in ("sub", "add")]
        launches += [
            elementwise_launch(f"{label} cat", 2 * half, bytes_in_per_elem=4, bytes_out_per_elem=4, fma_per_elem=0.0),
            elementwise_launch(f"{label} .to(dtype)", 2 * half, bytes_in_per_elem=4, bytes_out_per_elem=b, fma_per_elem=0.0),
            elementwise_launch(f"{label} copy_", 2 * half, bytes_in_per_elem=b, bytes_out_per_elem=b, fma_per_elem=0.0),
        ]
    return tuple(launches)
