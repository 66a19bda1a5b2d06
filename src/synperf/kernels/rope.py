"""Rotary position embedding (NeoX style), applied in place to q [tokens, heads, head_dim] and
k [tokens, kv_heads, head_dim] from a float32 cos/sin cache indexed by each token's position.

flashinfer (pos_enc.cuh, BatchQKApplyRotaryPosIdsCosSinCache): threads (bdx = head_dim / vec,
bdy) cover one token's heads; each element needs its cos and sin and one multiply-add pair.
triton (synperf.profile.triton_elementwise): one program per token, all q and k heads.
torch: the HuggingFace composition (index cos/sin, rotate_half via neg + cat, two multiplies and
an add per tensor, then the copy back into q and k), one PyTorch kernel per step.
"""

from __future__ import annotations

from dataclasses import dataclass

from synperf.errors import InputError
from synperf.kernels._common import DTYPE_BYTES, elementwise_launch, rowwise_launch
from synperf.tasks import Launch
from synperf.validate import MAX_TOKENS, get_int

FAMILY = "rope"
LIBRARIES = ("flashinfer", "triton", "torch")
DTYPES = ("bf16", "fp16")
FIELDS = {"tokens", "num_heads", "num_kv_heads", "head_dim"}


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
    return call


def decompose(call: RopeCall, gpu) -> tuple[Launch, ...]:
    b = DTYPE_BYTES[call.dtype]
    heads = call.num_heads + call.num_kv_heads
    if call.library in ("flashinfer", "triton"):
        # Per token: read and write every q/k element, read head_dim cos/sin floats once.
        name = "BatchQKApplyRotaryPosIdsCosSinCache" if call.library == "flashinfer" else "synperf_rope"
        threads = 128 if call.library == "flashinfer" else 128
        return (rowwise_launch(name, call.tokens, heads * call.head_dim, threads=threads,
                               bytes_in_per_col=b + 4.0 / heads, bytes_out_per_col=b,
                               fma_per_col=3.0, xu_per_col=0.0),)
    launches: list[Launch] = [
        elementwise_launch("index cos/sin", 2 * call.tokens * call.head_dim, bytes_in_per_elem=4,
                           bytes_out_per_elem=4, fma_per_elem=0.0),
    ]
    for label, h in (("q", call.num_heads), ("k", call.num_kv_heads)):
        n = call.tokens * h * call.head_dim
        launches += [
            elementwise_launch(f"neg {label}", n // 2, bytes_in_per_elem=b, bytes_out_per_elem=b),
            elementwise_launch(f"cat {label}", n, bytes_in_per_elem=b, bytes_out_per_elem=b, fma_per_elem=0.0),
            elementwise_launch(f"mul cos {label}", n, bytes_in_per_elem=b + 4.0 / h, bytes_out_per_elem=4),
            elementwise_launch(f"mul sin {label}", n, bytes_in_per_elem=b + 4.0 / h, bytes_out_per_elem=4),
            elementwise_launch(f"add {label}", n, bytes_in_per_elem=8, bytes_out_per_elem=b),
            elementwise_launch(f"copy {label}", n, bytes_in_per_elem=b, bytes_out_per_elem=b, fma_per_elem=0.0),
        ]
    return tuple(launches)
