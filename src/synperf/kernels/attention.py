"""Attention forward kernels: PyTorch SDPA's vendored FlashAttention-2, FlashInfer FA2 (prefill
on a ragged KV, or a paged one when the case gives page_size; paged decode) and FlashInfer FA3 (Hopper, persistent). Rules, and the source files they
were read from, are in docs/kernels-attention.md; the SDPA grids were checked on an H200 (torch 2.11).

A task is one CTA (FA2 kernels) or one (q-tile, head) work item of FA3's persistent scheduler.
Tensor FLOP count full tiles as the MMAs execute them (4 * tile_q * tile_kv * head_dim per kv
step); bytes count only what really moves (valid rows, valid kv columns).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from synperf.errors import InputError
from synperf.kernels._common import DTYPE_BYTES, TENSOR_DTYPE, ceil_div, one_call
from synperf.schedule import occupancy
from synperf.tasks import Launch, Resources, task_demand
from synperf.validate import MAX_TOKENS, get_bool, get_choice, get_int, get_int_list

FAMILY = "attention"
LIBRARIES = ("flash_attn2_torch_sdpa", "flashinfer", "fa3", "flash_attn3")
DTYPES = ("bf16", "fp16")
FIELDS = {"phase", "batch", "q_len", "kv_len", "q_lens", "kv_lens", "num_heads", "num_kv_heads",
          "head_dim", "causal", "kv_cache_dtype", "page_size", "cuda_graph", "engine"}
FA3_ENGINES = ("vllm", "sglang")        # how an engine calls flash_attn3 (flash_attn3_splits, _flash_attn3)
HEAD_DIMS = (64, 80, 96, 128, 192, 256)
FA3_HEAD_DIMS = (64, 128, 256)
DECODE_GROUP_SIZES = (1, 2, 3, 4, 8)     # FlashInfer DISPATCH_GQA_GROUP_SIZE for the decode kernel
# Registers of FlashInfer 0.5.0's BatchDecodeWithPagedKVCacheKernel per (head_dim, KV bytes, group),
# as CUPTI recorded them (sm90 build, data/h200). They set the occupancy that the planner's KV
# split and the CUDA-graph grid follow (e.g. 56 registers: 9 CTAs an SM, 64 would give 8).
DECODE_REGISTERS = {(64, 2, 1): 72, (64, 2, 2): 52, (64, 2, 3): 56, (64, 2, 4): 56, (64, 2, 8): 56,
                    (128, 2, 1): 72, (128, 2, 2): 52, (128, 2, 3): 56, (128, 2, 4): 59, (128, 2, 8): 56,
                    (256, 2, 1): 72, (256, 2, 2): 52, (256, 2, 3): 48, (256, 2, 4): 60, (256, 2, 8): 64,
                    # FP8 KV cache (profiled 2026-11-30 at page sizes 1, 16 and 64)
                    (64, 1, 1): 79, (64, 1, 2): 72, (64, 1, 3): 72, (64, 1, 4): 77, (64, 1, 8): 72,
                    (128, 1, 1): 76, (128, 1, 2): 72, (128, 1, 3): 72, (128, 1, 4): 77, (128, 1, 8): 72,
                    (256, 1, 1): 72, (256, 1, 2): 72, (256, 1, 3): 72, (256, 1, 4): 72, (256, 1, 8): 72}
DECODE_REGISTERS_DEFAULT = 64
MAX_KV_TOKENS = 1 << 30                  # 2^30 tokens x 1 kv head x 64 dims x K and V in fp8 = 128 GiB
_REGS_FULL = 255                         # FA2-style kernels run at the register cap (probe: 244-255)


# vLLM's FLASH_ATTN backend on Hopper (vllm/v1/attention/backends/flash_attn.py, 0.22): with full
# CUDA graphs (the default) it caps FA3's splits at attention_config's 32 for steps up to the
# largest captured size (512 tokens), and leaves FA3 its own heuristic (0) above.
FA3_GRAPH_MAX_SPLITS = 32
FA3_GRAPH_MAX_TOKENS = 512


def flash_attn3_max_splits(tokens: int) -> int:
    """The ``num_splits`` vLLM passes to FlashAttention-3 for a step of ``tokens`` query tokens."""
    return FA3_GRAPH_MAX_SPLITS if tokens <= FA3_GRAPH_MAX_TOKENS else 0


@dataclass(frozen=True)
class AttentionCall:
    phase: str
    q_lens: tuple[int, ...]
    kv_lens: tuple[int, ...]
    num_heads: int
    num_kv_heads: int
    head_dim: int
    causal: bool
    kv_cache_dtype: str
    page_size: int
    dtype: str
    library: str
    paged: bool = True   # KV in a paged cache (decode always; prefill when page_size is given)
    cuda_graph: bool = False   # FlashInfer decode planned for CUDA-graph replay (split KV, padded grid)
    engine: str = "vllm"       # flash_attn3 only: the engine whose call it is (FA3_ENGINES)

    @property
    def batch(self) -> int:
        return len(self.q_lens)

    @property
    def group(self) -> int:
        return self.num_heads // self.num_kv_heads


def variant(call: AttentionCall) -> str:
    """What the efficiency model must have seen (``features.case_variant``): the phase, and for
    FlashInfer's paged kernels the page size (page 1 gathers every token through its own index)."""
    page = f"/page{call.page_size}" if call.paged and call.library != "flash_attn2_torch_sdpa" else ""
    graph = "/cuda_graph" if call.cuda_graph else ""
    if call.library == "flash_attn3":
        graph += f"/{call.engine}"
    return f"{call.phase}{page}{graph}/kv_{call.kv_cache_dtype}"


# FlashInfer's prefill kernels differ by how they reach K/V: contiguous (ragged) or gathered through a
# page table. Their demands look alike, so the efficiency model gets the path as an input:
# held out, FlashInfer 6.7 -> 5.1 % (ragged prefills had been 6 % slow and paged ones 5 % fast).
KERNEL_PATHS = ("ragged_prefill", "paged_prefill")
EXTRA_FEATURES = tuple(f"path_{path}" for path in KERNEL_PATHS)


def kernel_path(call: AttentionCall) -> str | None:
    """The FlashInfer/FA3 prefill kernel a call runs (decode with a group size the CUDA-core kernel
    lacks runs the paged prefill kernel); None for SDPA and the CUDA-core decode kernel."""
    if call.library in ("flash_attn2_torch_sdpa", "flash_attn3"):
        return None
    if call.phase == "decode" and call.group in DECODE_GROUP_SIZES and all(q == 1 for q in call.q_lens):
        return None
    return "paged_prefill" if call.paged else "ragged_prefill"


def extra_features(call: AttentionCall) -> list[float]:
    """One-hot of ``kernel_path`` (the efficiency model's ``EXTRA_FEATURES``)."""
    path = kernel_path(call)
    return [1.0 if path == p else 0.0 for p in KERNEL_PATHS]


# ---------------------------------------------------------------------------------------- parse
def parse(obj: dict, dtype: str, library: str) -> AttentionCall:
    phase = get_choice(obj, "phase", ("prefill", "decode"), default="prefill")
    decode = phase == "decode"
    q_list, kv_list = get_int_list(obj, "q_lens"), get_int_list(obj, "kv_lens")
    batch = get_int(obj, "batch", hi=65_536) if obj.get("batch") is not None or kv_list is None else None
    if kv_list is None:
        kv_list = (get_int(obj, "kv_len", hi=MAX_TOKENS),) * batch
    elif obj.get("kv_len") is not None:
        raise InputError("give kv_len or kv_lens, not both", "kv_len")
    batch = batch if batch is not None else len(kv_list)
    if len(kv_list) != batch:
        raise InputError(f"has {len(kv_list)} entries but batch is {batch}", "kv_lens")
    if q_list is None:
        q = get_int(obj, "q_len", hi=MAX_TOKENS, default=1 if decode else None)
        if decode and q != 1:
            raise InputError("decode means q_len == 1 (give per-request q_lens for more)", "q_len")
        q_list = (q,) * batch
    elif obj.get("q_len") is not None:
        raise InputError("give q_len or q_lens, not both", "q_len")
    if len(q_list) != batch:
        raise InputError(f"has {len(q_list)} entries but batch is {batch}", "q_lens")
    field = "q_lens" if "q_lens" in obj else "q_len"
    # Totals over the batch: no GPU holds more query tokens, or a bigger KV cache, in one call.
    if sum(q_list) > MAX_TOKENS:
        raise InputError(f"{sum(q_list)} query tokens over the batch, at most {MAX_TOKENS}", field)
    if sum(kv_list) > MAX_KV_TOKENS:
        raise InputError(f"{sum(kv_list)} kv tokens over the batch, at most {MAX_KV_TOKENS}",
                         "kv_lens" if "kv_lens" in obj else "kv_len")
    for q, kv in zip(q_list, kv_list):
        if q > kv:
            raise InputError(f"q_len {q} exceeds kv_len {kv} (the kv cache holds the query tokens)", field)
    num_heads = get_int(obj, "num_heads", hi=1024)
    num_kv_heads = get_int(obj, "num_kv_heads", hi=1024, default=num_heads)
    if num_heads % num_kv_heads:
        raise InputError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}", "num_kv_heads")
    head_dim = get_int(obj, "head_dim", hi=1024)
    if head_dim not in HEAD_DIMS:
        raise InputError(f"must be one of {HEAD_DIMS}, got {head_dim}", "head_dim")
    causal = get_bool(obj, "causal", default=not decode)
    kv_dtype = get_choice(obj, "kv_cache_dtype", ("bf16", "fp16", "fp8_e4m3"), default=dtype)
    if kv_dtype != dtype and not (kv_dtype == "fp8_e4m3" and library == "flashinfer" and decode):
        raise InputError(f"must equal dtype {dtype} (fp8_e4m3 only for flashinfer decode)", "kv_cache_dtype")
    # A prefill reads a ragged (contiguous) KV unless the case names a page size; vLLM's
    # FlashAttention-3 always reads the paged cache.
    paged = decode or obj.get("page_size") is not None or library == "flash_attn3"
    page_size = get_int(obj, "page_size", hi=4096, default=16)
    cuda_graph = get_bool(obj, "cuda_graph", default=False)
    if cuda_graph and not (library == "flashinfer" and decode and num_heads // num_kv_heads in DECODE_GROUP_SIZES):
        raise InputError("only FlashInfer's CUDA-core decode (group sizes "
                         f"{DECODE_GROUP_SIZES}) has a CUDA-graph plan here", "cuda_graph")
    if obj.get("engine") is not None and library != "flash_attn3":
        raise InputError("only flash_attn3 takes an engine (the FA3 call of vllm or sglang)", "engine")
    engine = get_choice(obj, "engine", FA3_ENGINES, default="vllm")
    call = AttentionCall(phase, tuple(q_list), tuple(kv_list), num_heads, num_kv_heads, head_dim,
                         causal, kv_dtype, page_size, dtype, library, paged, cuda_graph, engine)
    if library == "flash_attn2_torch_sdpa":
        if len(set(q_list)) > 1 or len(set(kv_list)) > 1:
            raise InputError("SDPA takes dense (padded) tensors: per-request lengths must be equal", "kv_lens")
    if library in ("fa3", "flash_attn3") and head_dim not in FA3_HEAD_DIMS:
        raise InputError(f"{library} supports head_dim {FA3_HEAD_DIMS}, got {head_dim}", "head_dim")
    if library == "flash_attn3" and page_size > FA3_MAX_PAGE:
        raise InputError(f"flash_attn3 is modelled for pages of at most {FA3_MAX_PAGE} tokens (K/V loaded "
                         f"through cp.async), got {page_size}", "page_size")
    return call


# ------------------------------------------------------------------------------ shared helpers
def _launch(name: str, rows: np.ndarray, resources: Resources, dram_read: float, dram_write: float,
            call: AttentionCall, notes: tuple[str, ...], *, tensor: bool = True, path: str = "mma",
            persistent: int | None = None, task_cta: np.ndarray | None = None, repeat: int = 1) -> Launch:
    """Tasks in launch order (one demand row each) -> a Launch of deduplicated classes. Tasks
    that differ only in bytes (partial edge tiles) are averaged into one class when they share
    the same math, which keeps totals exact and uniform grids cheap to schedule.

    ``repeat``: the launch runs ``rows`` that many times over (e.g. once per batch x head); the
    classes are found on one copy (np.unique over millions of rows took seconds)."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    if persistent is None and np.all(rows[:, :3] == rows[0, :3]):
        full = np.tile(rows, (repeat, 1)) if repeat > 1 else rows
        return Launch(name, full.mean(axis=0), [full.shape[0]], resources, float(dram_read), float(dram_write),
                      tensor_dtype=TENSOR_DTYPE[call.dtype] if tensor else None, tensor_path=path, notes=notes)
    classes, inverse = np.unique(rows, axis=0, return_inverse=True)
    inverse = np.tile(inverse.reshape(-1), repeat)
    counts = np.bincount(inverse, minlength=len(classes))
    order = inverse if len(classes) > 1 else None
    return Launch(name, classes, counts, resources, float(dram_read), float(dram_write),
                  tensor_dtype=TENSOR_DTYPE[call.dtype] if tensor else None, tensor_path=path,
                  order=order, persistent_ctas=persistent, task_cta=task_cta, notes=notes)


def _fa_rows(iters, rows_q, kv_cols, tile_m, tile_n, kd, d, call, *, warps_read_kv, q_reads,
             out_bytes_per_row) -> np.ndarray:
    """Demand rows of FA-style tasks: ``iters`` kv steps on a tile_m x tile_n tile (head dim kd as
    the MMA sees it), ``rows_q`` valid query rows, ``kv_cols`` valid kv columns loaded."""
    iters = np.asarray(iters, dtype=np.float64)
    rows_q = np.asarray(rows_q, dtype=np.float64) * np.ones_like(iters)
    kv_cols = np.asarray(kv_cols, dtype=np.float64) * np.ones_like(iters)
    qb, kvb = DTYPE_BYTES[call.dtype], DTYPE_BYTES[call.kv_cache_dtype]
    out = np.empty((iters.size, 5))
    out[:, 0] = 4.0 * tile_m * tile_n * kd * iters
    # softmax: scale-subtract-max and row-sum per score, O rescale per step, final normalise
    out[:, 1] = iters * (2.0 * tile_m * tile_n + tile_m * kd) + tile_m * kd
    # one exp2 per score, one rescale exp2 per row and step, final log2 + rcp per row
    out[:, 2] = iters * (tile_m * tile_n + tile_m) + 2.0 * tile_m
    out[:, 3] = rows_q * d * qb + 2.0 * kv_cols * d * kvb + rows_q * out_bytes_per_row
    out[:, 4] = iters * (warps_read_kv * 2.0 * tile_n * kd * kvb + q_reads * tile_m * kd * qb)
    return out


def _dram(call: AttentionCall) -> tuple[float, float]:
    """Compulsory traffic: Q, and K/V once per kv head (GQA heads share them); O and LSE out."""
    d, qb, kvb = call.head_dim, DTYPE_BYTES[call.dtype], DTYPE_BYTES[call.kv_cache_dtype]
    q_tok, kv_tok = sum(call.q_lens), sum(call.kv_lens)
    reads = q_tok * call.num_heads * d * qb + 2.0 * kv_tok * call.num_kv_heads * d * kvb
    writes = q_tok * call.num_heads * (d * qb + 4)
    return float(reads), float(writes)


def _grid_note(x: int, y: int = 1, z: int = 1, block: tuple[int, ...] = (128,)) -> tuple[str, str]:
    return f"grid=({x},{y},{z})", "block=(" + ",".join(str(b) for b in block) + ")"


# ----------------------------------------------------------------- PyTorch SDPA FlashAttention-2
def _sdpa_tile(call: AttentionCall, kd: int, causal: bool, gpu) -> tuple[int, int, int]:
    """run_mha_fwd_hdimXX (flash_fwd_launch_template.h), no dropout. Hopper takes the sm80 path."""
    minor = int(gpu.compute_capability.split(".")[1]) if "." in gpu.compute_capability else 0
    sm8x = gpu.cc_major == 8 and minor > 0
    if kd == 64:
        return 128, 128, 4
    if kd == 96:
        return (64, 64, 4) if sm8x and causal else (128, 64, 4)
    if kd == 128:
        if sm8x:
            return (64, 64, 4) if causal else (128, 32, 4)
        return 128, 64, 4
    if kd == 192:
        return 128, 64, 8
    smem_block, smem_sm = gpu.shared_memory_per_block_kb * 1024, gpu.shared_memory_per_sm_kb * 1024
    if smem_block >= 2 * 256 * (128 + 128) and smem_sm < 4 * 256 * (64 + 128):
        return 128, 64, 8
    return 64, 64, 4


def num_splits_heuristic(bhm: int, num_sms: int, num_n_blocks: int, max_splits: int) -> int:
    """flash_api.cpp num_splits_heuristic, with its float32 arithmetic."""
    if bhm >= np.float32(0.8) * np.float32(num_sms):
        return 1
    max_splits = min(max_splits, num_sms, num_n_blocks)
    eff = []
    for s in range(1, max_splits + 1):
        if s > 1 and ceil_div(num_n_blocks, s) == ceil_div(num_n_blocks, s - 1):
            eff.append(None)
            continue
        waves = np.float32(bhm * s) / np.float32(num_sms)
        eff.append(float(waves / np.float32(np.ceil(waves))))
    best = max((e for e in eff if e is not None), default=0.0)
    for s, e in enumerate(eff, start=1):
        if e is not None and e >= 0.85 * best:
            return s
    return 1


def _sdpa(call: AttentionCall, gpu) -> tuple[Launch, ...]:
    if gpu.cc_major < 8:
        raise InputError("FlashAttention-2 needs an sm80 or newer GPU", "library")
    b, sq, sk, h, d = call.batch, call.q_lens[0], call.kv_lens[0], call.num_heads, call.head_dim
    causal = call.causal and sq > 1
    if sq == 1 and h > call.num_kv_heads and not causal:     # seqlenq_ngroups_swapped (mha_fwd)
        sq, h = h // call.num_kv_heads, call.num_kv_heads
    kd = 64 if d <= 64 else 96 if d <= 96 else 128 if d <= 128 else 192 if d <= 192 else 256
    d_rounded = -(-d // 32) * 32 if d <= 128 else -(-d // 64) * 64
    qb = DTYPE_BYTES[call.dtype]
    block_n = 256 if d <= 64 else 128 if d <= 128 else 64
    splits = num_splits_heuristic(b * h * ceil_div(sq, 64), 2 * gpu.sm_count, ceil_div(sk, block_n), 128)
    dram_r, dram_w = _dram(call)
    if splits <= 1:
        bm, bn, warps = _sdpa_tile(call, kd, causal, gpu)
        m_blocks = ceil_div(sq, bm)
        m = np.arange(m_blocks)
        n_max = np.full(m_blocks, ceil_div(sk, bn))
        if causal:
            n_max = np.minimum(n_max, -(-((m + 1) * bm + sk - sq) // bn))
        n_max = np.maximum(n_max, 0)
        rows = _fa_rows(n_max, np.minimum(bm, sq - m * bm), np.minimum(n_max * bn, sk), bm, bn, kd, d, call,
                        warps_read_kv=warps, q_reads=1, out_bytes_per_row=d * qb + 4)
        smem = (bm + 2 * bn) * kd * qb
        res = Resources(warps * 32, _REGS_FULL if kd != 192 else 228, smem)
        notes = _grid_note(m_blocks, b, h, (warps * 32,)) + (f"tile=({bm},{bn},{warps} warps)",)
        return (_launch(f"flash_fwd_kernel<hdim{kd}>", rows, res, dram_r, dram_w, call, notes, repeat=b * h),)
    # split-KV kernel (kBlockM = 64) + combine kernel
    bm, bn = 64, block_n
    m_blocks, n_blocks = ceil_div(sq, bm), ceil_div(sk, bn)
    per_split = ceil_div(n_blocks, splits)
    m, s = np.meshgrid(np.arange(m_blocks), np.arange(splits))       # x (m) fastest
    m, s = m.ravel(), s.ravel()
    n_min = s * per_split
    n_max = np.minimum(n_blocks, (s + 1) * per_split)
    if causal:
        n_max = np.minimum(n_max, -(-((m + 1) * bm + sk - sq) // bn))
    iters = np.maximum(n_max - n_min, 0)
    cols = np.maximum(np.minimum(n_max * bn, sk) - n_min * bn, 0) * (iters > 0)
    rows = _fa_rows(iters, np.minimum(bm, sq - m * bm), cols, bm, bn, kd, d, call,
                    warps_read_kv=4, q_reads=1, out_bytes_per_row=d_rounded * 4 + 4)
    accum = float(splits) * b * h * sq * (d_rounded * 4 + 4)
    split = _launch(f"flash_fwd_splitkv_kernel<hdim{kd}>", rows,
                    Resources(128, _REGS_FULL, (bm + 2 * bn) * kd * qb), dram_r, accum, call,
                    _grid_note(m_blocks, splits, b * h) + (f"tile=({bm},{bn},4 warps)", f"num_splits={splits}"),
                    repeat=b * h)
    cm = 4 if kd % 128 == 0 else 8 if kd % 64 == 0 else 16
    n_rows = b * h * sq
    c_ctas = ceil_div(n_rows, cm)
    log_splits = max(1, (splits - 1).bit_length())
    per = np.empty((1, 5))
    per[0] = [0.0, cm * splits * (d_rounded + 4), cm * (splits + 1), cm * (splits * (d_rounded * 4 + 4) + d * qb + 4),
              cm * splits * 4]
    combine = _launch(f"flash_fwd_splitkv_combine_kernel<hdim{kd}>", np.repeat(per, c_ctas, axis=0),
                      Resources(128, 52, cm * ((1 << log_splits) + 1) * 4), accum, dram_w, call,
                      _grid_note(c_ctas), tensor=False)
    return split, combine


# ----------------------------------------------------------------------- FlashInfer FA2 (mma)
def _fi_cta_tile_q(avg_packed: int, d: int, gpu) -> int:
    """FA2DetermineCtaTileQ (utils.cuh)."""
    if avg_packed > 64 and d < 256:
        return 128
    if gpu.cc_major >= 8:
        return 64 if avg_packed > 16 else 16
    return 64


def _fi_kv_tile(cta_q: int, d: int, kvb: int, gpu) -> tuple[int, int, int, int]:
    """NUM_MMA_KV choice of Batch*Dispatched (prefill.cuh) -> (CTA_TILE_KV, warps_q, warps_kv, smem)."""
    wq = 4 if cta_q > 16 else 1
    wkv = 4 // wq
    mma_q = 2 if cta_q > 64 else 1
    smem_sm = int(gpu.shared_memory_per_sm_kb * 1024)
    step = 2 * d * 16 * wkv * kvb
    ctas = 2 if smem_sm >= 2 * (cta_q * d * 2 + step) else 1
    n = min((smem_sm // ctas - cta_q * d * 2) // step, 8 // mma_q)
    mma_kv = next((v for v in (8, 4, 2, 1) if n >= v), 1)
    if d // 16 == 4 and mma_kv % 2:          # KernelTraits::IsInvalid: NUM_MMA_D == 4 needs even NUM_MMA_KV
        mma_kv = 2
    cta_kv = mma_kv * wkv * 16
    smem = (cta_q * d + 2 * cta_kv * d) * 2
    if wkv > 1:                               # cross-warp merge buffers share the union
        smem = max(smem, wkv * cta_q * d * 4 + wkv * cta_q * 8)
    return cta_kv, wq, wkv, smem


def _binary_search_chunk(max_bs: int, packed: np.ndarray, kv: np.ndarray, cta_q: int, low: int) -> tuple[bool, int]:
    """PrefillBinarySearchKVChunkSize (scheduler.cuh), no CUDA graph. kv in pages (tokens if ragged)."""
    tiles_q = -(-packed // cta_q)
    kv = np.maximum(kv, 1)
    max_kv = int(max(kv.max(), 1))
    high = max_kv
    while low < high:
        mid = (low + high) // 2
        if int((tiles_q * -(-kv // mid)).sum()) > max_bs:
            low = mid + 1
        else:
            high = mid
    return low < max_kv, low


def _merge_launch(call: AttentionCall, chunks_per_row: np.ndarray, gpu) -> Launch:
    """PersistentVariableLengthMergeStates (cascade.cuh): grid-stride over (row, head) pairs, on
    as many CTAs an SM as fit, but no more than the pairs need (VariableLengthMergeStates)."""
    d, qb = call.head_dim, DTYPE_BYTES[call.dtype]
    vec = max(4, d // 32)
    bdy = 128 // (d // vec)
    res = Resources(128, 40, 4 * bdy * d * 4 + 128 * 4)
    pairs = len(chunks_per_row) * call.num_heads
    ctas = min(occupancy(res, gpu).ctas_per_sm, ceil_div(pairs, gpu.sm_count)) * gpu.sm_count
    c = np.repeat(chunks_per_row.astype(np.float64), call.num_heads)
    rows = np.stack([np.zeros_like(c), c * (d + 4), 2.0 * c, c * (d * 4 + 4) + d * qb + 4, np.zeros_like(c)], axis=1)
    partial = float((c * (d * 4 + 4)).sum())
    out = float(c.size * (d * qb + 4))
    return _launch("PersistentVariableLengthMergeStatesKernel", rows, res, partial, out, call,
                   _grid_note(ctas), tensor=False, persistent=ctas)


def _fi_prefill(call: AttentionCall, gpu, paged: bool) -> tuple[Launch, ...]:
    d, g, hkv = call.head_dim, call.group, call.num_kv_heads
    qb, kvb = DTYPE_BYTES[call.dtype], DTYPE_BYTES[call.kv_cache_dtype]
    q = np.asarray(call.q_lens, dtype=np.int64)
    kv = np.asarray(call.kv_lens, dtype=np.int64)
    packed = q * g
    cta_q = _fi_cta_tile_q(int(packed.sum() // call.batch), d, gpu)
    cta_kv, wq, wkv, smem = _fi_kv_tile(cta_q, d, kvb, gpu)
    page = call.page_size if paged else 1
    kv_units = -(-kv // page)
    split, chunk_units = _binary_search_chunk((2 * gpu.sm_count) // hkv, packed, kv_units, cta_q, max(128 // page, 1))
    chunk = chunk_units * page
    tiles_q = -(-packed // cta_q)
    n_chunks = -(-np.maximum(kv_units, 1) // chunk_units)
    req = np.repeat(np.arange(call.batch), tiles_q * n_chunks)
    first = np.repeat(np.cumsum(tiles_q * n_chunks) - tiles_q * n_chunks, tiles_q * n_chunks)
    local = np.arange(req.size) - first
    qt, ck = local // n_chunks[req], local % n_chunks[req]
    start = ck * chunk
    length = np.maximum(np.minimum(chunk, kv[req] - start), 0)
    if call.causal:
        bound = kv[req] - q[req] + -(-((qt + 1) * cta_q) // g)
        length = np.minimum(length, np.maximum(bound - start, 0))
    iters = -(-length // cta_kv)
    rows_q = np.minimum(cta_q, packed[req] - qt * cta_q)
    out_row = (d * 4 + 4) if split else (d * qb + 4)
    rows = _fa_rows(iters, rows_q, length, cta_q, cta_kv, d, d, call, warps_read_kv=wq, q_reads=wkv,
                    out_bytes_per_row=out_row)
    dram_r, dram_w = _dram(call)
    name = "BatchPrefillWith" + ("PagedKVCache" if paged else "RaggedKVCache") + "Kernel"
    partial = float((rows_q * (d * 4 + 4)).sum() * hkv)
    notes = _grid_note(req.size, 1, hkv, (32, wq, wkv)) + (f"tile=({cta_q},{cta_kv})",
                                                          f"kv_chunk={chunk if split else 0}")
    main = _launch(name, rows, Resources(128, _REGS_FULL, smem), dram_r,
                   partial if split else dram_w, call, notes, repeat=hkv)
    if not split:
        return (main,)
    return main, _merge_launch(call, np.repeat(n_chunks, q), gpu)


def _fi_decode(call: AttentionCall, gpu) -> tuple[Launch, ...]:
    """BatchDecodeWithPagedKVCacheKernel (decode.cuh) with DecodePlan's work estimation
    (scheduler.cuh); CUDA cores, no MMA. Group sizes the kernel does not dispatch use the
    tensor-core (paged prefill) path, as FlashInfer's use_tensor_cores does."""
    g, d, hkv, p = call.group, call.head_dim, call.num_kv_heads, call.page_size
    if g not in DECODE_GROUP_SIZES or any(q != 1 for q in call.q_lens):
        return _fi_prefill(call, gpu, paged=True)
    qb, kvb = DTYPE_BYTES[call.dtype], DTYPE_BYTES[call.kv_cache_dtype]
    vec = max(16 // kvb, d // 32)
    bdx = d // vec
    threads = max(128, bdx * g)
    bdz = threads // (bdx * g)
    tile = (4 if kvb == 2 else 2) if g == 1 else 1
    stages = 2 if gpu.cc_major >= 8 else 1
    smem = 2 * stages * tile * g * bdz * d * kvb + max(tile * threads * 8, 2 * g * bdz * 4)
    res = Resources(threads, DECODE_REGISTERS.get((d, kvb, g), DECODE_REGISTERS_DEFAULT), smem)
    max_grid = occupancy(res, gpu).ctas_per_sm * gpu.sm_count
    kv = np.asarray(call.kv_lens, dtype=np.int64)
    pages = -(-kv // p)
    split, chunk_pages = False, int(max(pages.max(), 1))
    padded = call.batch
    if call.batch * hkv < max_grid:
        low, high = max(128 // p, 1), int(pages.max())
        while low < high:
            mid = (low + high) // 2
            if int((-(-pages // mid)).sum()) * hkv > max_grid:
                low = mid + 1
            else:
                high = mid
        n_new = int((-(-np.maximum(pages, 1) // low)).sum())
        # A CUDA-graph plan always splits and launches a fixed grid of a full wave; CTAs past the
        # real chunks find their block_valid_mask unset and exit.
        split, chunk_pages = n_new != call.batch or call.cuda_graph, low
        padded = max_grid // hkv if call.cuda_graph else n_new
    n_chunks = -(-np.maximum(pages, 1) // chunk_pages) if split else np.ones_like(pages)
    req = np.repeat(np.arange(call.batch), n_chunks)
    ck = np.arange(req.size) - np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)
    tokens = np.minimum(chunk_pages * p, kv[req] - ck * chunk_pages * p) if split else kv[req]
    tokens = np.maximum(tokens, 0).astype(np.float64)
    step = tile * g * bdz
    iters = -(-tokens // step)
    out_row = (d * 4 + 4) if split else (d * qb + 4)
    rows = np.stack([np.zeros_like(tokens), 2.0 * d * g * tokens + g * d * iters, g * (tokens + iters + 2),
                     g * d * qb + 2.0 * tokens * d * kvb + g * out_row, 2.0 * g * tokens * d * kvb], axis=1)
    if padded > req.size:
        rows = np.concatenate([rows, np.zeros((padded - req.size, rows.shape[1]))])
    dram_r, dram_w = _dram(call)
    partial = float(req.size * hkv * g * (d * 4 + 4))
    notes = _grid_note(max(padded, req.size), hkv, 1, (bdx, g, bdz)) + (f"kv_chunk={chunk_pages * p if split else 0}",)
    main = _launch("BatchDecodeWithPagedKVCacheKernel", rows, res, dram_r,
                   partial if split else dram_w, call, notes, tensor=False, repeat=hkv)
    if not split:
        return (main,)
    return main, _merge_launch(call, n_chunks, gpu)


def _dynamic_schedule(costs: np.ndarray, n_sm: int) -> np.ndarray:
    """The CTA each tile runs on when ``n_sm`` persistent CTAs take the next tile as they free up
    (FlashAttention-3's atomic counter; FlashInfer's SM90 plan pops the least-loaded CTA of a
    min-heap, the same rule): greedy list scheduling in tile order; equal costs deal round robin."""
    if np.all(costs == costs[0]):
        return np.arange(costs.size) % n_sm
    heap = [(0.0, c) for c in range(n_sm)]
    cta = np.empty(costs.size, dtype=np.int64)
    for t, cost in enumerate(costs.tolist()):
        busy, c = heapq.heappop(heap)
        cta[t] = c
        heapq.heappush(heap, (busy + cost, c))
    return cta


# ------------------------------------------------------------------ FlashInfer FA3 (wgmma, SM90)
def _fa3_tile(d: int, paged: bool, causal: bool) -> tuple[int, int]:
    """getCTATileSize / BatchPrefillWithPagedKVCacheDispatched (hopper/prefill_sm90.cuh)."""
    if paged:
        return {64: (192, 96), 128: (128, 96), 256: (128, 32)}[d]
    if d == 128:
        return (128, 128) if causal else (128, 192)
    return {64: (192, 128), 256: (128, 64)}[d]


def _fa3(call: AttentionCall, gpu) -> tuple[Launch, ...]:
    if gpu.cc_major != 9:
        raise InputError("fa3 needs a Hopper GPU", "library")
    d, h, n_sm = call.head_dim, call.num_heads, gpu.sm_count
    paged = call.paged
    cq, ckv = _fa3_tile(d, paged, call.causal)
    q = np.asarray(call.q_lens, dtype=np.int64)
    kv = np.asarray(call.kv_lens, dtype=np.int64)
    by_kv = sorted(range(call.batch), key=lambda i: -kv[i])                  # PrefillSM90Plan sort
    req = np.concatenate([np.full(ceil_div(q[i], cq), i) for i in by_kv])
    qt = np.concatenate([np.arange(ceil_div(q[i], cq))[::-1] for i in by_kv])   # last tile first
    eff = kv[req].copy()
    if call.causal:
        eff = np.where(qt + 1 == -(-q[req] // cq), kv[req],
                       np.clip(kv[req] - q[req] + (qt + 1) * cq, 0, kv[req]))
    iters = -(-eff // ckv)
    qb = DTYPE_BYTES[call.dtype]
    rows = _fa_rows(iters, np.minimum(cq, q[req] - qt * cq), eff, cq, ckv, d, d, call,
                    warps_read_kv=cq // 64, q_reads=1, out_bytes_per_row=d * qb + 4)
    works = int(ceil_div(int(q.sum()), cq) + call.batch - 1)
    same_schedule = works > 4096
    cost = (2.0 * cq + eff).astype(np.float64)
    heads = 1 if same_schedule else h
    cta = _dynamic_schedule(np.tile(cost, heads), n_sm)      # the plan's MinHeap of CTA costs
    threads = (cq // 64 + 1) * 128
    smem = (cq * d + 2 * 2 * ckv * d) * qb
    res = Resources(threads, min(255, (65536 // threads) // 8 * 8), smem)
    dram_r, dram_w = _dram(call)
    name = "PrefillWithKVCacheKernel<" + ("paged" if paged else "ragged") + ">"
    notes = (f"tile=({cq},{ckv})", f"same_schedule_for_all_heads={same_schedule}")
    all_rows = np.tile(rows, (heads, 1))
    if same_schedule:   # grid (num_sm, num_heads): each CTA runs its SM's work list for one head
        per_cta = np.zeros((n_sm, 5))
        np.add.at(per_cta, cta, all_rows)
        return (_launch(name, np.tile(per_cta, (h, 1)), res, dram_r, dram_w, call,
                        _grid_note(n_sm, h, 1, (threads,)) + notes, path="wgmma"),)
    order = np.argsort(cta, kind="stable")                  # tasks grouped by CTA, in plan order
    main = _launch(name, all_rows[order], res, dram_r, dram_w, call, _grid_note(n_sm, 1, 1, (threads,)) + notes,
                   path="wgmma", persistent=n_sm, task_cta=cta[order])
    return one_call(_page_offsets_launch(call, n_sm), main) if paged else (main,)


def _page_offsets_launch(call: AttentionCall, n_sm: int) -> Launch:
    """FA3 on a paged cache first expands the page table into one KV offset per token
    (BlockSparseIndicesToVectorSparseOffsetsKernel, profiled on H200 with a grid of num_SM CTAs):
    4 bytes read per page, 4 bytes written per KV token."""
    tokens = int(sum(call.kv_lens))
    pages = int(sum(-(-kv // call.page_size) for kv in call.kv_lens))
    per_cta = task_demand(l2_bytes=4.0 * (tokens + pages) / n_sm)
    return Launch("BlockSparseIndicesToVectorSparseOffsetsKernel", per_cta, [n_sm], Resources(128, 32, 0),
                  dram_read_bytes=4.0 * pages, dram_write_bytes=4.0 * tokens,
                  notes=_grid_note(n_sm, 1, 1, (128,)))


# ------------------------------------------- FlashAttention-3 (Dao-AILab, vLLM's vllm_flash_attn)
# Rules from vllm-project/flash-attention hopper/ (tile_size.h, heuristics.h, flash_api.cpp,
# flash_prepare_scheduler.cu), checked against 12,572 calls of vLLM 0.22.0's _vllm_fa3_C on an
# H200 (kernel names carry the tile, grids the combine layout): the KV is always paged with pages
# smaller than a K tile, so K/V come in through cp.async (PagedKVNonTMA) and GQA heads are packed
# into the query tile (PackGQA); the tile scheduler is VarlenDynamicPersistent on one CTA an SM.
FA3_MAX_PAGE = 64
FA3_PERSISTENT_MAX_BATCH = 992   # prepare_varlen_num_blocks' one-CTA limit: more forces one split
FA3_L2_SPLIT_BYTES = 50 * 1024 * 1024


def flash_attn3_tile(d: int, packed_rows: int) -> tuple[int, int, int, int]:
    """(kBlockM, kBlockN, threads, registers) of the forward kernel: one MMA warpgroup when the
    longest request's packed rows fit 64 (hdim 64/128), else kBlockM/64 MMA warpgroups; one
    producer warpgroup either way (cp.async loads of the paged K/V)."""
    if d == 256:
        return 128, 80, 384, 168
    if packed_rows <= 64:
        return (64, 192, 256, 255) if d == 64 else (64, 128, 256, 255)
    return (192, 128, 512, 128) if d == 64 else (128, 128, 384, 168)


def flash_attn3_num_splits_heuristic(m_blocks_total: int, n_sm: int, n_blocks: int, m_blocks: int,
                                     kv_head_bytes: int, causal: bool, max_splits: int = 128) -> int:
    """num_splits_heuristic (heuristics.h, the version vLLM 0.22 ships: which calls split matches
    all 12,572 profiled ones): split the KV only to fill the GPU, and only as far as reaches 85 %
    of the best wave efficiency."""
    if m_blocks_total >= 0.8 * n_sm:
        if kv_head_bytes > FA3_L2_SPLIT_BYTES and m_blocks >= 2 * n_sm and not causal:
            return min(ceil_div(kv_head_bytes, FA3_L2_SPLIT_BYTES), max_splits)
        return 1
    if n_blocks <= 4:
        return 1
    max_splits = min(max_splits, n_sm, n_blocks)
    effs = [w / np.ceil(w) for w in (m_blocks_total * s / n_sm for s in range(1, max_splits + 1))]
    return next(s for s, e in enumerate(effs, start=1) if e >= 0.85 * max(effs))


def flash_attn3_splits(call: AttentionCall, gpu) -> tuple[bool, np.ndarray]:
    """(split kernel launched, KV splits of each request). vLLM passes a split cap
    (``flash_attn3_max_splits``) or 0, SGLang always 0: FA3's own heuristic then sets the cap;
    a split kernel divides each request by prepare_varlen_num_blocks' dynamic rule."""
    g, d, hkv, n_sm = call.group, call.head_dim, call.num_kv_heads, gpu.sm_count
    q = np.asarray(call.q_lens, dtype=np.int64)
    kv = np.asarray(call.kv_lens, dtype=np.int64)
    bm, bn, _, _ = flash_attn3_tile(d, int(q.max()) * g)
    cap = flash_attn3_max_splits(int(q.sum())) if call.engine == "vllm" else 0
    if call.batch > FA3_PERSISTENT_MAX_BATCH:
        return False, np.ones(call.batch, dtype=np.int64)
    if cap == 0:
        m_max = ceil_div(int(q.max()) * g, bm)
        cap = flash_attn3_num_splits_heuristic(hkv * m_max, n_sm, ceil_div(int(kv.max()), bn), m_max,
                                               int(kv.max()) * 2 * d * 2, call.causal)
    if cap <= 1:
        return False, np.ones(call.batch, dtype=np.int64)
    n_blocks = -(-kv // bn)
    total = int((-(-(q * g) // bm) * n_blocks).sum())
    per_sm = max(1, ceil_div(int(np.ceil(total * 1.1 * hkv)), n_sm))
    return True, np.clip(-(-n_blocks // per_sm), 1, cap).astype(np.int64)


def _flash_attn3_tiles(call: AttentionCall, q: np.ndarray, kv: np.ndarray, splits: np.ndarray, bm: int,
                       bn: int) -> tuple[np.ndarray, np.ndarray]:
    """Demand rows and costs of every tile, in the scheduler's order: request by request; within
    one, KV heads outer, splits, m-blocks inner; for causal calls (longest first) m-blocks outer
    from the last one, splits, KV heads inner."""
    g, d, hkv, qb = call.group, call.head_dim, call.num_kv_heads, DTYPE_BYTES[call.dtype]
    m_blocks = -(-(q * g) // bm)
    per_request = hkv * splits * m_blocks
    req = np.repeat(np.arange(call.batch), per_request)
    j = np.arange(req.size) - np.repeat(np.cumsum(per_request) - per_request, per_request)
    M, S = m_blocks[req], splits[req]
    if call.causal:
        sp, mb = (j // hkv) % S, M - 1 - j // (hkv * S)
    else:
        sp, mb = (j // M) % S, j % M
    packed = q[req] * g
    last_token = np.minimum(q[req], ((mb + 1) * bm - 1) // g + 1)
    reach = kv[req] - q[req] + last_token if call.causal else kv[req]
    span = -(-(-(-kv[req] // bn)) // S) * bn                  # KV tokens a split covers
    cols = np.clip(reach - sp * span, 0, span)
    valid = np.minimum(bm, packed - mb * bm)
    out_row = np.where(S > 1, d * 4 + 4, d * qb + 4)
    rows = _fa_rows(-(-cols // bn), valid, cols, bm, bn, d, d, call, warps_read_kv=bm // 64, q_reads=1,
                    out_bytes_per_row=out_row)
    return rows, (2.0 * bm + cols).astype(np.float64)


def _flash_attn3(call: AttentionCall, gpu) -> tuple[Launch, ...]:
    if gpu.cc_major != 9:
        raise InputError("flash_attn3 needs a Hopper GPU", "library")
    g, d, n_sm = call.group, call.head_dim, gpu.sm_count
    qb = DTYPE_BYTES[call.dtype]
    q = np.asarray(call.q_lens, dtype=np.int64)
    kv = np.asarray(call.kv_lens, dtype=np.int64)
    bm, bn, threads, regs = flash_attn3_tile(d, int(q.max()) * g)
    split, splits = flash_attn3_splits(call, gpu)
    rows, costs = _flash_attn3_tiles(call, q, kv, splits, bm, bn)
    cta = _dynamic_schedule(costs, n_sm)
    order = np.argsort(cta, kind="stable")
    dram_r, dram_w = _dram(call)
    partial, _ = _flash_attn3_outputs(call, splits)
    written = partial + float(np.sum(np.where(splits > 1, 0, q * call.num_heads * (d * qb + 4))))
    smem = 2 * (bm * d + 4 * bn * d) + 3072      # Q tile + two stages of K and V (+ barriers), as profiled
    notes = _grid_note(n_sm, 1, 1, (threads,)) + (f"tile=({bm},{bn})", f"max_splits={int(splits.max())}")
    main = _launch("FlashAttnFwdSm90<PagedKVNonTMA, PackGQA>", rows[order], Resources(threads, regs, smem),
                   dram_r, written if split else dram_w, call, notes, path="wgmma", persistent=n_sm,
                   task_cta=cta[order])
    after = (_flash_attn3_combine(call, splits),) if split else ()
    if call.engine == "sglang":
        # No scheduler metadata made ahead: FA3 prepares the per-request tile counts itself.
        return one_call(_flash_attn3_prepare(call), main, *after)
    if not split:
        # With the metadata made ahead, an unsplit call resets the tile semaphore in a fill kernel.
        after = (Launch("vectorized_elementwise_kernel<FillFunctor<int>>", task_demand(l2_bytes=4.0), [1],
                        Resources(128, 16, 0), 0.0, 4.0, notes=_grid_note(1)),)
    return one_call(main, *after)


def _flash_attn3_outputs(call: AttentionCall, splits: np.ndarray) -> tuple[float, float]:
    """Bytes of the split requests' fp32 partial outputs (with their log-sum-exp) that the main
    kernel writes and the combine reads, and of the final outputs the combine writes for them."""
    rows = np.asarray(call.q_lens, dtype=np.int64) * call.num_heads
    split = splits > 1
    d, qb = call.head_dim, DTYPE_BYTES[call.dtype]
    return (float(np.sum(np.where(split, rows * splits * (d * 4 + 4), 0))),
            float(np.sum(np.where(split, rows * (d * qb + 4), 0))))


def _flash_attn3_prepare(call: AttentionCall) -> Launch:
    """prepare_varlen_num_blocks: one warp lane a request (31 a warp), up to 992 a CTA; reads the
    lengths, writes each request's m-blocks, splits and L2 head grouping."""
    ctas = ceil_div(call.batch, FA3_PERSISTENT_MAX_BATCH)
    warps = min(32, 1 << max(0, (ceil_div(min(call.batch, FA3_PERSISTENT_MAX_BATCH), 31) - 1).bit_length()))
    per_cta = task_demand(fma_ops=64.0 * call.batch / ctas, l2_bytes=24.0 * call.batch / ctas)
    return Launch("prepare_varlen_num_blocks_kernel", per_cta, [ctas], Resources(32 * warps, 32, 0),
                  8.0 * call.batch, 16.0 * call.batch + 4.0, notes=_grid_note(ctas, block=(32 * warps,)))


def _flash_attn3_combine(call: AttentionCall, splits: np.ndarray) -> Launch:
    """FlashAttnFwdCombine: 256 threads, kBlockM (query, head) rows x kBlockK columns a CTA;
    requests left unsplit exit at once. The grid is flat over the batch's rows (one spare CTA a
    request) or padded to the longest request per request; which one, inferred from the profiled
    combines (99.5 % of 9,616): padded for one or two requests, and for prefills whose
    padded grid is under twice the flat one."""
    d, h, qb = call.head_dim, call.num_heads, DTYPE_BYTES[call.dtype]
    k_block = 64 if d <= 64 else 128
    m_block = 16 if d <= 64 else 8
    q = np.asarray(call.q_lens, dtype=np.int64)
    per_request = -(-(q * h) // m_block)
    padded = ceil_div(int(q.max()) * h, m_block) * call.batch
    flat = ceil_div(int(q.sum()) * h, m_block) + call.batch
    use_padded = call.batch <= 2 or (int(q.max()) > 8 and padded < 2 * flat)
    ctas = padded if use_padded else flat
    s = np.repeat(splits.astype(np.float64), per_request)
    active = np.where(s > 1, 1.0, 0.0)
    cta_rows = np.stack([np.zeros_like(s), active * m_block * k_block * (2 * s + 2), active * m_block * (s + 1),
                         8.0 + active * m_block * (s * (k_block * 4 + 4) + k_block * qb + 4), np.zeros_like(s)], axis=1)
    col_blocks = ceil_div(d, k_block)
    cta_rows = np.tile(cta_rows, (col_blocks, 1))
    idle = ctas * col_blocks - cta_rows.shape[0]
    if idle > 0:
        cta_rows = np.concatenate([cta_rows, np.tile(task_demand(l2_bytes=8.0), (idle, 1))])
    partial, out = _flash_attn3_outputs(call, splits)
    grid = (ctas, col_blocks, 1) if not use_padded else (padded // call.batch, col_blocks, call.batch)
    return _launch("FlashAttnFwdCombine", cta_rows, Resources(256, 32, 0), partial, out, call,
                   _grid_note(*grid, block=(256,)), tensor=False)


# -------------------------------------------------------------------------------- decompose
def decompose(call: AttentionCall, gpu) -> tuple[Launch, ...]:
    if call.library == "flash_attn2_torch_sdpa":
        return _sdpa(call, gpu)
    if call.library == "fa3":
        return _fa3(call, gpu)
    if call.library == "flash_attn3":
        return _flash_attn3(call, gpu)
    if call.phase == "decode":
        return _fi_decode(call, gpu)
    return _fi_prefill(call, gpu, paged=call.paged)
