"""RMSNorm and fused residual-add + RMSNorm.

flashinfer (norm.cuh, RMSNormKernel / FusedAddRMSNormKernel): grid = one CTA per token;
vec_size = gcd(16 / sizeof(T), hidden); block = (32, ceil(min(1024, hidden / vec_size) / 32));
shared memory = one float per warp (the cross-warp reduction).
triton (synperf.profile.triton_elementwise): one program per token, BLOCK = next_pow2(hidden),
one warp per 256 elements of BLOCK (at most 16).
torch: the HuggingFace composition x.float().pow(2).mean(-1) -> rsqrt -> scale -> cast -> weight,
launched by PyTorch eager as separate element-wise and reduction kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from synperf.kernels._common import (DTYPE_BYTES, elementwise_launch, next_pow2, rowwise_launch, triton_access_bytes,
                                    triton_num_warps)
from synperf.tasks import Launch, Resources, task_demand
from synperf.validate import MAX_TOKENS, get_bool, get_int

FAMILY = "rmsnorm"
LIBRARIES = ("flashinfer", "triton", "torch")
DTYPES = ("bf16", "fp16")
FIELDS = {"tokens", "hidden", "residual"}

# FP32 pipe ops per element: square-accumulate, scale by 1/rms, multiply by weight (+ residual add).
_FMA_PER_ELEM = 3.0


@dataclass(frozen=True)
class RmsNormCall:
    tokens: int
    hidden: int
    residual: bool
    dtype: str
    library: str


def parse(obj: dict, dtype: str, library: str) -> RmsNormCall:
    return RmsNormCall(get_int(obj, "tokens", hi=MAX_TOKENS), get_int(obj, "hidden", hi=65_536),
                       get_bool(obj, "residual", default=False), dtype, library)


def _fused_row_kernel(call: RmsNormCall, threads: int, shared_bytes: int, name: str, access_bytes: int) -> Launch:
    b = DTYPE_BYTES[call.dtype]
    # Fused add: reads x and residual, writes the new residual and the normalised output.
    reads, writes = (2 * b, 2 * b) if call.residual else (b, b)
    return rowwise_launch(
        name, call.tokens, call.hidden, threads=threads,
        bytes_in_per_col=reads, bytes_out_per_col=writes,
        fma_per_col=_FMA_PER_ELEM + (1 if call.residual else 0), xu_per_col=0.0, xu_per_row=1.0,
        shared_bytes=shared_bytes, fixed_bytes_in=call.hidden * b, access_bytes=access_bytes,
    )


def decompose(call: RmsNormCall, gpu) -> tuple[Launch, ...]:
    b = DTYPE_BYTES[call.dtype]
    if call.library == "flashinfer":
        vec = math.gcd(16 // b, call.hidden)
        warps = math.ceil(min(1024, call.hidden // vec) / 32)
        name = "FusedAddRMSNormKernel" if call.residual else "RMSNormKernel"
        return (_fused_row_kernel(call, warps * 32, warps * 4, name, vec * b),)
    if call.library == "triton":
        return (_fused_row_kernel(call, 32 * triton_num_warps(next_pow2(call.hidden)), 0, "synperf_rmsnorm_kernel",
                                  triton_access_bytes(call.hidden, b)),)
    return _torch_launches(call)


def _torch_launches(call: RmsNormCall) -> tuple[Launch, ...]:
    n = call.tokens * call.hidden
    b = DTYPE_BYTES[call.dtype]
    launches = []
    if call.residual:
        launches.append(elementwise_launch("add (x + residual)", n, bytes_in_per_elem=2 * b, bytes_out_per_elem=b))
    launches += [
        elementwise_launch("to float32", n, bytes_in_per_elem=b, bytes_out_per_elem=4, fma_per_elem=0.0),
        elementwise_launch("pow", n, bytes_in_per_elem=4, bytes_out_per_elem=4),
        _torch_row_mean(call),
        elementwise_launch("add eps", call.tokens, bytes_in_per_elem=4, bytes_out_per_elem=4),
        elementwise_launch("rsqrt", call.tokens, bytes_in_per_elem=4, bytes_out_per_elem=4, xu_per_elem=1.0),
        elementwise_launch("mul rsqrt", n, bytes_in_per_elem=4, bytes_out_per_elem=4),
        elementwise_launch("to dtype", n, bytes_in_per_elem=4, bytes_out_per_elem=b, fma_per_elem=0.0),
        elementwise_launch("mul weight", n, bytes_in_per_elem=b, bytes_out_per_elem=b),
    ]
    return tuple(launches)


def _torch_row_mean(call: RmsNormCall) -> Launch:
    """PyTorch's reduce_kernel over the last dim: a block of 32 x 16 threads covers several rows;
    roughly one output row per 16-thread group, so the grid is ceil(rows / 16) CTAs."""
    rows_per_cta = 16
    ctas = -(-call.tokens // rows_per_cta)
    per_task = task_demand(fma_ops=rows_per_cta * call.hidden, l2_bytes=rows_per_cta * call.hidden * 4 + rows_per_cta * 4)
    return Launch("reduce mean", per_task, [ctas], Resources(512, 32, 0),
                  dram_read_bytes=call.tokens * call.hidden * 4, dram_write_bytes=call.tokens * 4)
