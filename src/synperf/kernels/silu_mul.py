"""SiLU-and-mul: out[t, :] = silu(x[t, :d]) * x[t, d:] for x of shape [tokens, 2 * intermediate].

flashinfer (activation.cuh, act_and_mul_kernel): one CTA per token, vec = 16 / sizeof(T) elements
a thread, block = min(d / vec, 1024) threads.
triton (synperf.profile.triton_elementwise): grid (tokens, cdiv(d, BLOCK)) with
BLOCK = min(1024, next_pow2(d)) and one warp per 256 elements of the block.
torch: F.silu(x[:, :d]) * x[:, d:]: two PyTorch element-wise kernels (silu, then mul).
"""

from __future__ import annotations

from dataclasses import dataclass

from synperf.kernels._common import (DTYPE_BYTES, ceil_div, elementwise_launch, next_pow2, rowwise_launch,
                                     triton_access_bytes, triton_num_warps)
from synperf.tasks import Launch
from synperf.validate import MAX_TOKENS, get_int

FAMILY = "silu_and_mul"
LIBRARIES = ("flashinfer", "triton", "torch")
DTYPES = ("bf16", "fp16")
FIELDS = {"tokens", "intermediate"}

# silu(x) * y = x * y / (1 + exp(-x)): exp2 and reciprocal on the XU pipe, the rest on FP32.
_XU_PER_ELEM = 2.0
_FMA_PER_ELEM = 4.0


@dataclass(frozen=True)
class SiluMulCall:
    tokens: int
    intermediate: int
    dtype: str
    library: str


def parse(obj: dict, dtype: str, library: str) -> SiluMulCall:
    return SiluMulCall(get_int(obj, "tokens", hi=MAX_TOKENS), get_int(obj, "intermediate", hi=262_144), dtype, library)


def decompose(call: SiluMulCall, gpu) -> tuple[Launch, ...]:
    b = DTYPE_BYTES[call.dtype]
    d = call.intermediate
    if call.library == "flashinfer":
        return (rowwise_launch("act_and_mul_kernel", call.tokens, d, threads=min(ceil_div(d, 16 // b), 1024),
                               bytes_in_per_col=2 * b, bytes_out_per_col=b, fma_per_col=_FMA_PER_ELEM,
                               xu_per_col=_XU_PER_ELEM),)
    if call.library == "triton":
        block = min(1024, next_pow2(d))
        return (rowwise_launch("synperf_silu_and_mul_kernel", call.tokens, d, threads=32 * triton_num_warps(block),
                               bytes_in_per_col=2 * b, bytes_out_per_col=b, fma_per_col=_FMA_PER_ELEM,
                               xu_per_col=_XU_PER_ELEM, col_blocks=ceil_div(d, block),
                               access_bytes=triton_access_bytes(d, b)),)
    n = call.tokens * d
    # silu(x[:, :d]) * x[:, d:]: with more than one row the halves are strided views, so PyTorch runs
    # its generic elementwise_kernel, one element an access (profiled: 863 of 912 H200 rows; the
    # vectorized kernel only for a single row).
    access = b if call.tokens > 1 else 16
    return (
        elementwise_launch("silu", n, bytes_in_per_elem=b, bytes_out_per_elem=b, fma_per_elem=3.0, xu_per_elem=2.0,
                           access_bytes=access),
        elementwise_launch("mul", n, bytes_in_per_elem=2 * b, bytes_out_per_elem=b, access_bytes=access),
    )
