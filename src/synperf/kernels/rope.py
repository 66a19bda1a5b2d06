"""Rotary position embedding (NeoX style), applied in place to q [tokens, heads, head_dim] and
k [tokens, kv_heads, head_dim] from a float32 cos/sin cache indexed by each token's position.

flashinfer (pos_enc.cuh, BatchQKApplyRotaryPosIdsCosSinCache): threads (bdx = head_dim / vec,
bdy) cover one token's heads; each element needs its cos and sin and one multiply-add pair.
triton (synperf.profile.triton_elementwise): one program per token, all q and k heads, with
min(8, warps for (next_pow2(heads) + next_pow2(kv_heads)) x next_pow2(head_dim / 2) / 2) warps.
torch: vLLM's forward_native composition (synperf.profile.triton_elementwise.rope_torch): gather
cos/sin by position, then per tensor upcast both halves, four multiplies, a subtract and an add,
concatenate, cast back and copy into place: 1 + 2 x 11 PyTorch kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

from synperf.errors import InputError
from synperf.kernels._common import DTYPE_BYTES, elementwise_launch, next_pow2, rowwise_launch, triton_num_warps
from synperf.tasks import Launch
from synperf.validate import MAX_TOKENS, get_int

FAMILY = "rope"
LIBRARIES = ("flashinfer", "triton", "torch")
DTYPES = ("bf16", "fp16")
FIELDS = {"tokens", "num_heads", "num_kv_heads", "head_dim"}
_FLASHINFER_HEAD_DIMS = (64, 128, 256, 512)   # DISPATCH_HEAD_DIM in flashinfer's pos_enc


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
    if library == "flashinfer" and call.head_dim not in _FLASHINFER_HEAD_DIMS:
        raise InputError(f"flashinfer rope supports head_dim {_FLASHINFER_HEAD_DIMS} only", "head_dim")
    return call


def decompose(call: RopeCall, gpu) -> tuple[Launch, ...]:
    b = DTYPE_BYTES[call.dtype]
    heads = call.num_heads + call.num_kv_heads
    if call.library in ("flashinfer", "triton"):
        # Per token: read and write every q/k element, read head_dim cos/sin floats once.
        name = "BatchQKApplyRotaryPosIdsCosSinCache" if call.library == "flashinfer" else "synperf_rope_kernel"
        work = (next_pow2(call.num_heads) + next_pow2(call.num_kv_heads)) * next_pow2(call.head_dim // 2)
        threads = 128 if call.library == "flashinfer" else 32 * min(8, triton_num_warps(work // 2))
        return (rowwise_launch(name, call.tokens, heads * call.head_dim, threads=threads,
                               bytes_in_per_col=b + 4.0 / heads, bytes_out_per_col=b,
                               fma_per_col=3.0, xu_per_col=0.0),)
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
