"""Fused MoE (bf16/fp16, no quantisation): synperf's own Triton kernel (library ``triton_fused_moe``).

The kernel modelled is ``synperf.profile.triton_moe`` (structured like vLLM's ``fused_moe_kernel``):

- ``moe_align_block_size`` sorts the P = tokens*topk (token, expert) pairs by expert and pads each
  expert's group up to a multiple of BLOCK_SIZE_M. ``sorted_token_ids`` has the worst-case length
  EM = P + E*(BM-1), capped at P*BM when P < E (``profile.moe_align.max_padded_len``).
- One launch per GEMM pass, grid = cdiv(EM, BM) * cdiv(N, BN), GROUP_SIZE_M-swizzled. Programs whose
  M block starts at or past ``num_tokens_post_padded`` return at once: real tasks with ~zero demand.
  w13: A = x [T, H] gathered by pair // topk, B = w13 [E, 2I, H]: N = 2I, K = H.
  w2:  A = act [P, I] (top_k = 1), B = w2 [E, H, I], rows scaled by the routing weight: N = H, K = I.
- An active program runs cdiv(K, BK) full [BM, BK] x [BK, BN] dots (tensor FLOP 2*BM*BN*K_pad);
  the loads of A rows past the expert's real count are masked off (no memory traffic), the B tile
  always loads BN columns (``offs_n % N`` wraps), the store is masked to real rows and columns.

Routing (case field ``routing``, docs/kernels-moe.md): ``random`` (default; what the profiles and
the reference engine run) lays the blocks out for a typical uniform-random top-k draw, the per-expert
pair counts being the Binomial(T, topk/E) quantiles; ``balanced`` uses round-robin (pair i -> expert
i mod E, as PipeWeave and aiconfigurator do). The compulsory DRAM read of expert weights counts the
experts the layout hits: the expected number of distinct experts under uniform random routing for
``random``, min(E, T*topk) for ``balanced``.

Stage "all" = the align step, w13, SiLU-and-mul (``profile.triton_elementwise.silu_and_mul_triton``),
w2 and the top-k sum, as separate launches in that order. Case field ``engine`` says whose align and
sum run (docs/kernels-moe.md):

- ``reference`` (default; the project's profiles and reference engine): the align in plain torch ops
  (the 33 or 50 small launches of ``profile.moe_align``) and ``torch.sum(..., dim=1)``.
- ``vllm`` (vLLM 0.22 ``fused_experts``): when pairs * 4 <= E the align is skipped and every pair gets
  its own M block (``_prepare_expert_assignment``'s naive assignment: one fill launch); otherwise its
  CUDA ``moe_align_block_size`` (one single-CTA kernel below 1,024 pairs with at most 64 experts, else
  a single-CTA count-and-scan kernel and a grid-wide ``count_and_sort_expert_tokens_kernel``); the sum is
  ``moe_sum`` (one CTA a token for topk 2-4, else PyTorch's reduce).
- ``sglang``: the same CUDA align (sgl-kernel's is a port of vLLM's), never the naive assignment, and
  the same sum, none at top-1.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

import numpy as np

from synperf.errors import InputError
from synperf.kernels._common import (DTYPE_BYTES, TENSOR_DTYPE, built_registers, ceil_div, elementwise_launch, next_pow2,
                                     one_call, rowwise_launch, triton_access_bytes)
from synperf.tasks import Launch, Resources, task_demand
from synperf.validate import MAX_TOKENS, get_choice, get_int

FAMILY = "moe"
LIBRARIES = ("triton_fused_moe",)
DTYPES = ("bf16", "fp16")
FIELDS = {"tokens", "hidden", "intermediate", "num_experts", "topk", "stage", "config", "routing", "engine"}
ROUTINGS = ("random", "balanced")
ENGINES = ("reference", "vllm", "sglang")

STAGES = ("w13", "w2", "all")
DEFAULT_RULES = ("vllm_default", "vllm_legacy_default", "sglang_default")
CONFIG_KEYS = ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages")
MAX_EXPERTS = 4096

# Triton's launch defaults on NVIDIA GPUs (triton/backends/nvidia/compiler.py, CUDAOptions:
# num_warps=4, num_stages=3); neither engine's bf16 default config sets them.
TRITON_DEFAULT_NUM_WARPS = 4
TRITON_DEFAULT_NUM_STAGES = 3

# Allowed values. tl.arange needs power-of-two extents and tl.dot needs every dot dimension >= 16.
_POW2_RANGES = {"BLOCK_SIZE_M": (16, 256), "BLOCK_SIZE_N": (16, 256), "BLOCK_SIZE_K": (16, 256),
                "num_warps": (1, 32)}
_INT_RANGES = {"GROUP_SIZE_M": (1, 256), "num_stages": (1, 8)}

# Above this many tasks the launch carries no explicit blockIdx order (class order is used).
_MAX_ORDERED_TASKS = 4_000_000


# ------------------------------------------------------------------------------------------------
# Default configs: the single source of truth (profile/moe_configs.py imports this).
# ------------------------------------------------------------------------------------------------

def default_config(rule: str, tokens: int, num_experts: int, hidden: int, intermediate: int,
                   topk: int, dtype: str = "bf16") -> dict[str, int]:
    """The config an engine uses for an unquantised bf16/fp16 fused-MoE call when no tuned JSON
    config file exists for (E, N, device). M = tokens of the call (rows of hidden_states, before
    top-k expansion).

    ``vllm_default``: vLLM 0.17 and later (read in 0.17.0 and 0.22.0,
    vllm/model_executor/layers/fused_moe/fused_moe.py ``get_default_config``, bf16/fp16 branch):
    BLOCK_SIZE_M 16 / 32 / 64 / 128 up to M = 32 / 96 / 512 / beyond; BLOCK_SIZE_N 64 up to M = 64,
    else 128; BLOCK_SIZE_K 128 up to M = 64, else 64; GROUP_SIZE_M 16 when M // E > 128, else 1;
    num_warps 4 up to M = 128, else 8; num_stages 4 up to M = 32, else 3.

    ``vllm_legacy_default`` (vLLM 0.16 and earlier) and ``sglang_default`` (SGLang 0.5.10,
    python/sglang/srt/layers/moe/fused_moe_triton/fused_moe_triton_config.py, non-fp8 branch; the
    ``is_marlin and M <= 32`` clause does not apply to the Triton path)::

        M <= E: BLOCK_SIZE_M=16, BLOCK_SIZE_N=32, BLOCK_SIZE_K=64, GROUP_SIZE_M=1
        else:   BLOCK_SIZE_M=64, BLOCK_SIZE_N=64, BLOCK_SIZE_K=32, GROUP_SIZE_M=8

    which set no num_warps / num_stages, so Triton's defaults (4, 3) apply. ``hidden``,
    ``intermediate`` and ``topk`` are accepted for parity with the engines' signatures (the bf16
    rules ignore them). Raises ValueError for an unknown rule or an unsupported dtype.
    """
    if rule not in DEFAULT_RULES:
        raise ValueError(f"unknown default config {rule!r}; expected one of {', '.join(DEFAULT_RULES)}")
    if dtype not in DTYPES:
        raise ValueError(f"default configs are modelled for {', '.join(DTYPES)} only, got {dtype!r}")
    m, e = int(tokens), int(num_experts)
    if rule == "vllm_default":
        return {"BLOCK_SIZE_M": 16 if m <= 32 else 32 if m <= 96 else 64 if m <= 512 else 128,
                "BLOCK_SIZE_N": 64 if m <= 64 else 128, "BLOCK_SIZE_K": 128 if m <= 64 else 64,
                "GROUP_SIZE_M": 16 if m // max(e, 1) > 128 else 1,
                "num_warps": 4 if m <= 128 else 8, "num_stages": 4 if m <= 32 else 3}
    if m <= e:
        cfg = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1}
    else:
        cfg = {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 8}
    cfg["num_warps"] = TRITON_DEFAULT_NUM_WARPS
    cfg["num_stages"] = TRITON_DEFAULT_NUM_STAGES
    return cfg


ENGINE_CONFIGS = "tiles/moe_engine_configs.json"


@lru_cache(maxsize=1)
def engine_table() -> dict:
    return json.loads((resources.files("synperf.kernels") / ENGINE_CONFIGS).read_text())


def engine_config(engine: str, gpu, tokens: int, num_experts: int, hidden: int, intermediate: int,
                  topk: int, dtype: str = "bf16") -> tuple[dict[str, int], str]:
    """(config, source) of an engine's fused-MoE call on ``gpu``: the tuned config the engine ships
    for (E, N = intermediate, device), the entry whose batch size is nearest ``tokens`` (ties to the
    earlier entry, as both engines' ``min`` does), else its default rule. The table is
    ``synperf data moe-configs`` output (``importers.engine_configs``)."""
    entry = engine_table()["engines"].get(engine, {}).get(gpu.id, {}).get(f"E={num_experts},N={intermediate}")
    if entry and dtype in DTYPES:
        batch = min(entry, key=lambda m: abs(int(m) - tokens))
        return dict(zip(CONFIG_KEYS, entry[batch])), f"{engine}_tuned"
    rule = f"{engine}_default"
    return default_config(rule, tokens, num_experts, hidden, intermediate, topk, dtype), rule


# ------------------------------------------------------------------------------------------------
# Call and parsing
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MoeConfig:
    block_m: int
    block_n: int
    block_k: int
    group_m: int
    num_warps: int
    num_stages: int

    def as_dict(self) -> dict[str, int]:
        return dict(zip(CONFIG_KEYS, (self.block_m, self.block_n, self.block_k, self.group_m,
                                      self.num_warps, self.num_stages)))


@dataclass(frozen=True)
class MoeCall:
    tokens: int
    hidden: int
    intermediate: int
    num_experts: int
    topk: int
    stage: str
    config: MoeConfig
    config_source: str      # "explicit" or the default rule's name
    dtype: str
    library: str
    routing: str = "random"
    engine: str = "reference"

    @property
    def naive_assignment(self) -> bool:
        """vLLM skips the align when pairs * 4 <= E: each (token, expert) pair is its own M block."""
        return self.engine == "vllm" and self.tokens * self.topk * 4 <= self.num_experts


def variant(call: MoeCall) -> str:
    """What the efficiency model must have seen (``features.case_variant``): the routing layout and,
    for a whole call, whose align and sum run."""
    own = f"routing_{call.routing}"
    if call.stage == "all" and call.engine != "reference":
        own += "/align_cuda"
    return own


def _parse_config_dict(value: Mapping[str, Any]) -> MoeConfig:
    keys = set(value)
    missing = [k for k in CONFIG_KEYS if k not in keys]
    unknown = sorted(keys - set(CONFIG_KEYS))
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown {', '.join(map(str, unknown))}")
        raise InputError(f"config needs exactly {', '.join(CONFIG_KEYS)} ({'; '.join(parts)})", "config")
    out = {}
    for key in CONFIG_KEYS:
        v = value[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and
                                                                     (not math.isfinite(v) or v != int(v))):
            raise InputError(f"{key} must be an integer, got {v!r}", "config")
        v = int(v)
        if key in _POW2_RANGES:
            lo, hi = _POW2_RANGES[key]
            if not (lo <= v <= hi and v & (v - 1) == 0):
                raise InputError(f"{key} must be a power of two in [{lo}, {hi}], got {v}", "config")
        else:
            lo, hi = _INT_RANGES[key]
            if not lo <= v <= hi:
                raise InputError(f"{key} must be between {lo} and {hi}, got {v}", "config")
        out[key] = v
    return MoeConfig(*(out[k] for k in CONFIG_KEYS))


def parse(obj: dict, dtype: str, library: str) -> MoeCall:
    tokens = get_int(obj, "tokens", hi=MAX_TOKENS)
    hidden = get_int(obj, "hidden", hi=65_536)
    intermediate = get_int(obj, "intermediate", hi=65_536)
    num_experts = get_int(obj, "num_experts", hi=MAX_EXPERTS)
    topk = get_int(obj, "topk", hi=MAX_EXPERTS)
    if topk > num_experts:
        raise InputError(f"must be at most num_experts ({num_experts}), got {topk}", "topk")
    stage = get_choice(obj, "stage", STAGES, default="all")
    raw = obj.get("config")
    if raw is None:
        raw = "vllm_default"
    if isinstance(raw, str):
        if raw not in DEFAULT_RULES:
            raise InputError(f"must be a config object or one of {', '.join(DEFAULT_RULES)}, got {raw!r}", "config")
        config = _parse_config_dict(default_config(raw, tokens, num_experts, hidden, intermediate, topk, dtype))
        source = raw
    elif isinstance(raw, Mapping):
        config = _parse_config_dict(raw)
        source = "explicit"
    else:
        raise InputError(f"must be a config object or one of {', '.join(DEFAULT_RULES)}, got {type(raw).__name__}",
                         "config")
    routing = get_choice(obj, "routing", ROUTINGS, default="random")
    engine = get_choice(obj, "engine", ENGINES, default="reference")
    return MoeCall(tokens, hidden, intermediate, num_experts, topk, stage, config, source, dtype, library, routing,
                   engine)


# ------------------------------------------------------------------------------------------------
# Routing and padding
# ------------------------------------------------------------------------------------------------

def max_padded_len(pairs: int, num_experts: int, block_m: int) -> int:
    """Length of ``sorted_token_ids`` (the kernel's EM): worst-case padded total, as
    ``profile.moe_align.max_padded_len`` (and vLLM's moe_align_block_size) allocate it."""
    n = pairs + num_experts * (block_m - 1)
    if pairs < num_experts:
        n = min(n, pairs * block_m)
    return n


def balanced_expert_counts(tokens: int, num_experts: int, topk: int) -> np.ndarray:
    """Pairs per expert under round-robin routing: pair i -> expert i mod E (token t's k-th choice is
    expert (t*topk + k) mod E, distinct for topk <= E). The first P mod E experts get one more."""
    pairs = tokens * topk
    counts = np.full(num_experts, pairs // num_experts, dtype=np.int64)
    counts[: pairs % num_experts] += 1
    return counts


def expected_active_experts(tokens: int, num_experts: int, topk: int) -> float:
    """Expected number of distinct experts hit when every token picks topk distinct experts
    uniformly at random: E * (1 - (1 - topk/E)^T). Never above min(E, T*topk)."""
    e = num_experts
    miss = (1.0 - topk / e) ** tokens if topk < e else 0.0
    return e * (1.0 - miss)


@dataclass(frozen=True)
class Padding:
    counts: np.ndarray          # pairs per expert
    block_rows: np.ndarray      # valid rows of each active M block, in sorted (expert) order
    em: int                     # len(sorted_token_ids): the grid's M extent
    grid_m: int                 # cdiv(EM, BM)
    active_m: int               # num_tokens_post_padded / BM
    padded_total: int           # num_tokens_post_padded

    @property
    def exit_m(self) -> int:
        return self.grid_m - self.active_m


@lru_cache(maxsize=65_536)
def random_expert_counts(tokens: int, num_experts: int, topk: int) -> tuple[int, ...]:
    """Pairs per expert of a typical uniform-random top-k routing: the quantiles of
    Binomial(tokens, topk / E) at (e + 0.5) / E, largest first, the rounding remainder on the
    largest so that they sum to tokens * topk (round-robin if that would go negative)."""
    pairs, p = tokens * topk, topk / num_experts
    if p >= 1.0:
        return (tokens,) * num_experts
    mean, sd = tokens * p, math.sqrt(tokens * p * (1.0 - p))
    lo, hi = max(0, int(mean - 12 * sd) - 1), min(tokens, int(mean + 12 * sd) + 2)
    c = np.arange(lo, hi + 1, dtype=np.float64)
    log_choose = np.array([math.lgamma(tokens + 1.0) - math.lgamma(x + 1.0) - math.lgamma(tokens - x + 1.0) for x in c])
    cdf = np.cumsum(np.exp(log_choose + c * math.log(p) + (tokens - c) * math.log1p(-p)))
    quantiles = (np.arange(num_experts) + 0.5) / num_experts
    counts = c[np.minimum(np.searchsorted(cdf, quantiles), c.size - 1)].astype(np.int64)[::-1]
    counts[0] += pairs - counts.sum()
    if counts[0] < 0:
        return tuple(int(x) for x in balanced_expert_counts(tokens, num_experts, topk))
    return tuple(int(x) for x in counts)


def padding(tokens: int, num_experts: int, topk: int, block_m: int, routing: str = "random",
            naive: bool = False) -> Padding:
    """Expert-sorted, BM-padded layout: expert e's c_e pairs fill ceil(c_e / BM) blocks, all full
    but the last, which holds the remaining rows. Counts from ``routing`` (module docstring).
    ``naive`` (vLLM's naive assignment): one block per pair, in pair order, all active."""
    counts = (np.array(random_expert_counts(tokens, num_experts, topk), dtype=np.int64) if routing == "random"
              else balanced_expert_counts(tokens, num_experts, topk))
    if naive:
        pairs = tokens * topk
        return Padding(counts, np.ones(pairs, dtype=np.int64), pairs * block_m, pairs, pairs, pairs * block_m)
    blocks = -(-counts // block_m)
    active_m = int(blocks.sum())
    block_rows = np.full(active_m, block_m, dtype=np.int64)
    hit = blocks > 0
    block_rows[np.cumsum(blocks[hit]) - 1] = counts[hit] - (blocks[hit] - 1) * block_m
    em = max_padded_len(tokens * topk, num_experts, block_m)
    return Padding(counts, block_rows, em, ceil_div(em, block_m), active_m, active_m * block_m)


# ------------------------------------------------------------------------------------------------
# Triton's MMA lowering (lib/Dialect/TritonGPU/Transforms/AccelerateMatmul.cpp, lib/Analysis/Utility.cpp)
# ------------------------------------------------------------------------------------------------

def tensor_path(cfg: MoeConfig, gpu) -> str:
    """MMA instruction family Triton picks for this dot.

    supportMMA(dot, 3) (wgmma, sm_90 only) and supportMMA(dot, 5) (tcgen05, sm_100/103) both require
    num_warps % 4 == 0, the dot's M % 64 == 0 and N % 8 == 0; tcgen05 also needs num_warps 4 or 8.
    Otherwise Triton falls back to MMAv2 (mma.sync), as on Ampere/Ada and consumer Blackwell (sm_120).
    """
    ok = cfg.num_warps % 4 == 0 and cfg.block_m % 64 == 0 and cfg.block_n % 8 == 0
    if gpu.cc_major == 9 and ok:
        return "wgmma"
    if gpu.cc_major == 10 and ok and cfg.num_warps in (4, 8):
        return "tcgen05"
    return "mma"


def warps_per_tile(cfg: MoeConfig, path: str) -> tuple[int, int]:
    """Warp grid over the [BM, BN] accumulator: Triton's warpsPerTileV2 (mma) / warpsPerTileV3
    (wgmma; the smallest unit is a 4-warp group along M)."""
    m, n, w = cfg.block_m, cfg.block_n, cfg.num_warps
    if path == "mma":
        wm, wn = 1, 1
        while wm * wn < w:
            if m // 16 // wm >= n // 16 // wn:
                if wm < m // 16:
                    wm *= 2
                else:
                    wn *= 2
            else:
                wn *= 2
        return wm, wn
    wm, wn = 4, 1
    while wm * wn < w:
        if m > 16 * wm:
            wm *= 2
        else:
            wn *= 2
    return wm, wn


# The config's knobs as model inputs: the demand shows their bytes, FLOP and occupancy, not how
# deep the pipeline is or how the tile splits over warps. Held out, MoE 11.7 -> 9.5 % (swept
# configs 17.0 -> 12.6 %; the engines' defaults unchanged at 6 %). And the block layout: the share
# of computed rows that are real pairs (the rest is padding to BLOCK_M) and of programs that exit at
# once (the grid is sized for the worst-case padding). The demand counts their work and bytes; how
# masked rows and idle programs pace the others it cannot say (held out 5.54 -> 5.41 %).
# And where a pass's rows are not 16-byte aligned (``triton_access_bytes``), the one-element load
# instructions a thread then issues for its A and B tiles per K step: the demand counts the bytes,
# the same either way; the load-store unit sees 8x the instructions (held out 5.03 -> 4.86 %,
# docs/kernels-moe.md). Zero where every row is aligned: there the 16-byte loads follow from the
# tile and warp inputs, and counting them too cost the H20 held out of training 4 points.
EXTRA_FEATURES = ("log2_block_m", "log2_block_n", "log2_block_k", "log2_num_warps", "log2_num_stages",
                  "real_row_fraction", "exiting_program_fraction", "log2_scalar_loads_per_thread")


def extra_features(call: MoeCall) -> list[float]:
    cfg = call.config
    b = DTYPE_BYTES[call.dtype]
    pad = padding(call.tokens, call.num_experts, call.topk, cfg.block_m, call.routing, call.naive_assignment)
    elements = (cfg.block_m * cfg.block_k + cfg.block_k * cfg.block_n) / (cfg.num_warps * 32)
    k_of_pass = {"w13": call.hidden, "w2": call.intermediate}
    passes = ("w13", "w2") if call.stage == "all" else (call.stage,)
    scalar_loads = elements if any(triton_access_bytes(k_of_pass[p], b) < 16 for p in passes) else 1.0
    return [*(math.log2(v) for v in (cfg.block_m, cfg.block_n, cfg.block_k, cfg.num_warps, cfg.num_stages)),
            call.tokens * call.topk / pad.padded_total, pad.exit_m / pad.grid_m, math.log2(scalar_loads)]


def mma_replication(cfg: MoeConfig, path: str) -> float:
    """How many times each MMA of the tile is issued. A warp's smallest MMA tile is 16 x 8 (mma.sync;
    a 4-warp group's wgmma: 64 x 8); when the warp grid covers more than [BM, BN] (e.g. BM=16, BN=32
    at 8 warps: 8 warps along N, 4 columns each), warps repeat each other's MMAs. Nsight Compute's
    tensor-op counts confirm 2x for every such profiled config (data/h200-system/counters.parquet)."""
    if path == "tcgen05":
        return 1.0
    wm, wn = warps_per_tile(cfg, path)
    rows = 16 * wm if path == "mma" else 64 * (wm // 4)
    return max(1.0, rows / cfg.block_m) * max(1.0, 8 * wn / cfg.block_n)


def _operand_shared_reads(cfg: MoeConfig, path: str, k_pad: int, b: int) -> float:
    """Bytes the MMAs read from the shared-memory operand buffers per CTA.

    mma: every warp ldmatrix-loads its own A rows and B columns, so A is read once per warp column
    and B once per warp row. wgmma: each warp group reads its A slice and B slice once, so A is read
    once per warp-group column and B once per warp-group row. tcgen05: one issuing thread feeds
    M <= 128 per instruction; B is re-read per 128-row slice of BM."""
    if path == "tcgen05":
        return (cfg.block_m + cfg.block_n * ceil_div(cfg.block_m, 128)) * k_pad * b
    wm, wn = warps_per_tile(cfg, path)
    if path == "wgmma":
        wm = max(1, wm // 4)
    return (cfg.block_m * wn + cfg.block_n * wm) * k_pad * b


# Registers per thread = acc x (fp32 accumulator elements per thread) + ops x (A and B tile elements
# per thread, staged through registers) + base. Least squares on the registers Triton 3.6 reported
# for 1,416 profiled H200 kernels (data/h200/moe.parquet): 8 % mean error per path, where counting
# 64-bit pointer tensors had over-estimated them about 2x (and so under-estimated occupancy).
# tcgen05 keeps its accumulator in tensor memory but reads it back through registers in the
# epilogue: no profile yet, the wgmma fit stands in.
_REGISTER_FIT = {"mma": (1.589, 0.358, 28.9), "wgmma": (0.861, 0.412, 26.3), "tcgen05": (0.861, 0.412, 26.3)}
# Rows of K not a multiple of 16 elements (``triton_access_bytes``): every operand element is loaded
# on its own, with its own address and mask: 6-9x the registers per operand element, 2.6x for the
# whole tile (median over 212 profiled kernels). Same form,
# accumulator term kept, fitted on the 91 unaligned H200 configurations below the cap (GPT-OSS's
# w2 at I = 360): 16 % (mma) and 7 % (wgmma) mean error. 41 % of the 165 unaligned configurations
# sit at the cap (aligned: 1 % of 678), and 7 mma-path ones came back from ptxas with 32 registers
# (below).
_NARROW_REGISTER_FIT = {"mma": (1.589, 2.294, 48.7), "wgmma": (0.861, 3.664, 35.3), "tcgen05": (0.861, 3.664, 35.3)}


def _register_need(cfg: MoeConfig, path: str, narrow: bool) -> int:
    """Per-thread registers the tile needs, in the allocation unit of 8 (uncapped); ``narrow``: the
    operand rows are not 16-element aligned."""
    threads = cfg.num_warps * 32
    acc_coef, operand_coef, base = (_NARROW_REGISTER_FIT if narrow else _REGISTER_FIT)[path]
    acc = cfg.block_m * cfg.block_n / threads
    operands = (cfg.block_m * cfg.block_k + cfg.block_k * cfg.block_n) / threads
    return max(32, int(math.ceil((acc_coef * acc + operand_coef * operands + base) / 8) * 8))


# ptxas's 32-register builds: every profiled unaligned mma-path tile with BLOCK_N >= 128 and a need
# of 384 or more (7 of 7 configurations; none of them came back at the cap) keeps the whole tile in
# local memory; they run 10-100x slower than their ceiling.
_LOCAL_MEMORY_BUILD_NEED = 384

# The register census (``_common.built_registers``) answers where ptxas has built the config: the
# fit cannot see which tiles ptxas fits under the cap after all (GPT-OSS's w2 at 32 x 32 x 256 on 4
# warps needs ~360 registers by the fit; ptxas built it at 255 with nothing spilled), nor how much
# it spills past the cap.
REGISTER_KEY = ("variant", "BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "num_warps", "num_stages")


def build_variant(which: str, narrow: bool) -> str | None:
    """The kernel's specialisation as the register census names it (None: not built there)."""
    if which == "w13":
        return None if narrow else "w13"
    return "w2_unaligned" if narrow else "w2"


def register_allocation(cfg: MoeConfig, gpu, which: str, narrow: bool) -> tuple[int, int]:
    """(registers per thread allocated, registers spilled to local memory): ptxas's build where the
    census has one for this GPU generation, else the fit. 255 is the cap; beyond it Triton spills.
    Of the 26 aligned profiled H200 kernels at 255, the 15 whose need the fit puts past the cap are
    all BLOCK 128 x 256 at 4 warps on the wgmma path, and they run up to 5x slower than their
    demand."""
    variant = build_variant(which, narrow)
    built = variant and built_registers("moe", gpu, (variant, cfg.block_m, cfg.block_n, cfg.block_k,
                                                     cfg.num_warps, cfg.num_stages))
    return built or fitted_allocation(cfg, tensor_path(cfg, gpu), narrow)


def fitted_allocation(cfg: MoeConfig, path: str, narrow: bool) -> tuple[int, int]:
    """(registers allocated, spilled) from the fit, for GPU generations the census has not built."""
    need = _register_need(cfg, path, narrow)
    if narrow and path == "mma" and cfg.block_n >= 128 and need >= _LOCAL_MEMORY_BUILD_NEED:
        return 32, need - 32
    return min(255, need), max(0, need - 255)


def shared_bytes(cfg: MoeConfig, b: int, path: str) -> int:
    """Triton's software pipeline keeps copies of the A and B tiles in shared memory: num_stages on
    the wgmma path, num_stages - 1 on the mma path (10,388 profiled H200 launches in
    data/h200/moe.parquet: 98 % of the wgmma-path and none of the mma-path ones hold num_stages
    copies). tcgen05 is taken as num_stages - 1: at num_stages copies the engines' own tuned B200
    configs would need up to 272 KB, more than a B200 block may use."""
    copies = cfg.num_stages if path == "wgmma" else max(1, cfg.num_stages - 1)
    return copies * (cfg.block_m * cfg.block_k + cfg.block_k * cfg.block_n) * b


# ------------------------------------------------------------------------------------------------
# Launches
# ------------------------------------------------------------------------------------------------

def gemm_launch(call: MoeCall, gpu, which: str) -> Launch:
    """One ``synperf_fused_moe_kernel`` launch (``which`` = "w13" or "w2")."""
    cfg, b = call.config, DTYPE_BYTES[call.dtype]
    if which == "w13":
        n, k, a_rows_total, routed = 2 * call.intermediate, call.hidden, call.tokens, False
    else:
        n, k, a_rows_total, routed = call.hidden, call.intermediate, call.tokens * call.topk, True
    path = tensor_path(cfg, gpu)
    access = triton_access_bytes(k, b)   # A and B rows are K elements apart (hidden for w13, intermediate for w2)
    narrow = access < 16
    smem = shared_bytes(cfg, b, path)
    limit = int(gpu.shared_memory_per_block_kb * 1024)
    if smem > limit:
        raise InputError(f"needs {smem} B of shared memory for its pipelined A and B tiles, "
                         f"{gpu.id} allows {limit} B per block (Triton would fail with OutOfResources)", "config")
    registers, spilled = register_allocation(cfg, gpu, which, narrow)
    pad = padding(call.tokens, call.num_experts, call.topk, cfg.block_m, call.routing, call.naive_assignment)
    grid_n = ceil_div(n, cfg.block_n)
    last_cols = n - (grid_n - 1) * cfg.block_n
    k_pad = ceil_div(k, cfg.block_k) * cfg.block_k

    # Task classes: (valid rows of the M block, valid columns of the N block) for active programs,
    # then the early-exit class.
    row_values, row_kind = np.unique(pad.block_rows, return_inverse=True)
    col_values = [cfg.block_n] if last_cols == cfg.block_n else [cfg.block_n, last_cols]
    col_count = [grid_n] if len(col_values) == 1 else [grid_n - 1, 1]
    rows_count = np.bincount(row_kind, minlength=row_values.size) if row_values.size else np.zeros(0, np.int64)

    demand, counts = [], []
    shared = _operand_shared_reads(cfg, path, k_pad, b)
    tensor = 2.0 * cfg.block_m * cfg.block_n * k_pad * mma_replication(cfg, path)
    for r, rc in zip(row_values.tolist(), rows_count.tolist()):
        for c, cc in zip(col_values, col_count):
            l2 = (r * k * b                     # gathered A rows (masked rows issue no loads)
                  + cfg.block_n * k * b         # expert weight tile (offs_n wraps: always BN columns)
                  + r * c * b                   # masked store of the output tile
                  + cfg.block_m * 4 + 4 + 4     # sorted_token_ids slice, expert id, num_tokens_post_padded
                  + (r * 4 if routed else 0))   # routing weights
            demand.append(task_demand(tensor_flops=tensor,
                                      fma_ops=cfg.block_m * cfg.block_n if routed else 0.0,
                                      l2_bytes=l2, shared_bytes=shared))
            counts.append(rc * cc)
    n_active_classes = len(counts)
    exit_tasks = pad.exit_m * grid_n
    if exit_tasks:
        demand.append(task_demand(l2_bytes=4))  # loads num_tokens_post_padded, returns
        counts.append(exit_tasks)

    order = _launch_order(pad, row_kind, grid_n, len(col_values), cfg.group_m, n_active_classes)

    pairs = call.tokens * call.topk
    hit = float(np.count_nonzero(pad.counts))
    active_experts = (min(expected_active_experts(call.tokens, call.num_experts, call.topk), hit)
                      if call.routing == "random" else hit)
    dram_read = (active_experts * n * k * b                 # weights of the experts that get pairs
                 + a_rows_total * k * b                     # activations (every row is used)
                 + pad.padded_total * 4 + pad.active_m * 4  # sorted ids and expert ids read
                 + (pairs * 4 if routed else 0))
    dram_write = pairs * n * b
    notes = (f"EM={pad.em} grid={pad.grid_m}x{grid_n} active_m_blocks={pad.active_m} "
             f"padded_total={pad.padded_total} early_exit_ctas={exit_tasks}",
             f"path={path} warps={warps_per_tile(cfg, path)} mma_replication={mma_replication(cfg, path):g} "
             f"config={cfg.as_dict()} ({call.config_source})",
             f"experts whose weights are read ({call.routing} routing)={active_experts:.2f}")
    return Launch(
        name=f"synperf_fused_moe_kernel[{which}]", demand=np.array(demand), counts=np.array(counts),
        resources=Resources(cfg.num_warps * 32, registers, smem),
        dram_read_bytes=dram_read, dram_write_bytes=dram_write,
        tensor_dtype=TENSOR_DTYPE[call.dtype], tensor_path=path, order=order, notes=notes,
        access_bytes=access,
        loop_trips=k_pad // cfg.block_k,
        spilled_registers=spilled,
    )


def _launch_order(pad: Padding, row_kind: np.ndarray, grid_n: int, n_col_kinds: int, group_m: int,
                  n_active_classes: int) -> np.ndarray | None:
    """Class of every program in blockIdx order, through the kernel's GROUP_SIZE_M swizzle."""
    total = pad.grid_m * grid_n
    if total > _MAX_ORDERED_TASKS:
        return None
    pid = np.arange(total, dtype=np.int64)
    per_group = group_m * grid_n
    first_m = (pid // per_group) * group_m
    rows_in_group = np.minimum(pad.grid_m - first_m, group_m)
    pid_m = first_m + (pid % per_group) % rows_in_group
    pid_n = (pid % per_group) // rows_in_group
    col_kind = (pid_n == grid_n - 1).astype(np.int64) if n_col_kinds == 2 else np.zeros(total, np.int64)
    active = pid_m < pad.active_m
    cls = np.full(total, n_active_classes, dtype=np.int64)      # early exit
    cls[active] = row_kind[pid_m[active]] * n_col_kinds + col_kind[active]
    return cls


def silu_and_mul_launch(call: MoeCall) -> Launch:
    """``silu_and_mul_triton`` on the [P, 2I] w13 output: grid (P, cdiv(I, BLOCK)),
    BLOCK = min(1024, next_pow2(I)), num_warps = max(1, min(16, BLOCK // 256)) (1 below 256).
    Per element: ex2 and a reciprocal on the XU pipe; scale, add and two multiplies on FMA."""
    b = DTYPE_BYTES[call.dtype]
    pairs, d = call.tokens * call.topk, call.intermediate
    block = min(1024, next_pow2(d))
    warps = max(1, min(16, block // 256)) if block >= 256 else 1
    col_blocks = ceil_div(d, block)
    last = d - (col_blocks - 1) * block
    widths = [block] if last == block else [block, last]
    per_row = [col_blocks] if last == block else [col_blocks - 1, 1]
    demand = [task_demand(fma_ops=4.0 * w, xu_ops=2.0 * w, l2_bytes=3.0 * w * b) for w in widths]
    return Launch("synperf_silu_and_mul_kernel", np.array(demand), np.array(per_row) * pairs,
                  Resources(warps * 32, 32, 0), dram_read_bytes=2.0 * pairs * d * b,
                  dram_write_bytes=1.0 * pairs * d * b, access_bytes=triton_access_bytes(d, b),
                  notes=(f"grid=({pairs}, {col_blocks}) BLOCK={block}",))


# TensorIterator halves an iteration until its byte offsets fit 32-bit indexing.
_INT32_INDEXABLE_BYTES = 1 << 31


def topk_sum_launches(call: MoeCall) -> tuple[Launch, ...]:
    """``torch.sum(cache3.view(T, topk, H), dim=1)``: PyTorch's reduce kernel, modelled as one
    output element per thread-slot (128 threads x 4) that adds its topk inputs in fp32; an input
    past 2 GiB is reduced in 2^k pieces, one launch each (profiled: 4 of 703 rows, all past 2 GiB)."""
    b = DTYPE_BYTES[call.dtype]
    pieces = 1 << max(0, math.ceil(math.log2(call.tokens * call.topk * call.hidden * b / _INT32_INDEXABLE_BYTES)))
    return tuple(elementwise_launch("reduce_kernel (sum over topk)", ceil_div(call.tokens, pieces) * call.hidden,
                                    bytes_in_per_elem=call.topk * b, bytes_out_per_elem=b,
                                    fma_per_elem=float(max(call.topk - 1, 0)))
                 for _ in range(pieces))


def align_launches(call: MoeCall) -> tuple[Launch, ...]:
    """The launches of ``profile.moe_align.moe_align_block_size``, in the order the profiles list
    them (CUPTI kernels, memcpys and memsets alike): one small launch per torch op, two for a cumsum
    (cub's scan init and scan), and the stable argsort's own (element counts and bytes per element;
    index tensors are int64 unless noted). Each group below is one torch op: one host call."""
    n, e, bm = call.tokens * call.topk, call.num_experts, call.config.block_m
    mp = max_padded_len(n, e, bm)
    nb = ceil_div(mp, bm)
    single = [("topk_ids to int64", n, 4, 8),
              ("counts: zeros", e, 0, 8), ("ones_like", n, 0, 8),
              ("counts: scatter_add_", n, 16, 8),             # atomics: read-modify-write of the counts
              ("padded: add", e, 8, 8), ("padded: sub", e, 8, 8), ("padded: floor_divide", e, 8, 8),
              ("padded: mul", e, 8, 8)]
    ops: list[list[tuple[str, int, float, float]]] = [[op] for op in single]
    ops += [[("cumsum padded: scan init", 1, 0, 8), ("cumsum padded: scan", e, 8, 8)],
            [("padded_start: sub", e, 16, 8)],
            [("cumsum counts: scan init", 1, 0, 8), ("cumsum counts: scan", e, 8, 8)],
            [("unpadded_start: sub", e, 16, 8)],
            _stable_argsort_ops(n)]
    ops += [[op] for op in [
        ("flat[order]", n, 16, 8),
        ("arange(numel)", n, 0, 8),
        ("unpadded_start[sorted_experts]", n, 16, 8),
        ("rank: sub", n, 16, 8),
        ("padded_start[sorted_experts]", n, 16, 8),
        ("dest: add", n, 16, 8),
        ("sorted_ids: full", mp, 0, 4),
        ("order to int32", n, 8, 4),
        ("sorted_ids: scatter_", n, 12, 4),
        ("block_end: floor_divide", e, 8, 8),
        ("arange(n_blocks)", nb, 0, 8),
        ("searchsorted", nb, 8 + 8 * max(1, math.ceil(math.log2(max(e, 2)))), 8),
        ("expert_ids: clamp_", nb, 8, 8),
        ("expert_ids to int32", nb, 8, 4),
        ("num_post to int32", 1, 8, 4),
    ]]
    return tuple(launch for op in ops for launch in one_call(*(
        elementwise_launch(f"moe_align: {name}", max(1, count), bytes_in_per_elem=bin_, bytes_out_per_elem=bout,
                           fma_per_elem=0.0) for name, count, bin_, bout in op)))


# cub's onesweep radix sort of 64-bit keys: 8 passes of 8 bits, each after a memset of its tile
# state; ATen sorts up to this many keys in one in-place kernel instead.
SMALL_SORT_MAX_KEYS = 4096
_RADIX_PASSES = 8


def _stable_argsort_ops(n: int) -> list[tuple[str, int, float, float]]:
    """torch.argsort(stable=True) on n int64 keys (ATen Sort.cpp), as profiled: up to 4,096 keys a
    copy of the keys, the index fill, two more device copies and one in-place sort kernel; beyond,
    a copy of the keys, the index fill, two memsets, cub's histogram and exclusive-sum kernels and
    per pass a memset and a onesweep kernel over all n keys and values."""
    if n <= SMALL_SORT_MAX_KEYS:
        copies = [("argsort: copy keys", n, 8, 8), ("argsort: fill indices", n, 0, 8),
                  ("argsort: copy keys in", n, 8, 8), ("argsort: copy values in", n, 8, 8)]
        return copies if n == 1 else copies + [("argsort: small sort", n, 16, 16)]   # one key: nothing to sort
    ops = [("argsort: copy keys", n, 8, 8), ("argsort: fill indices", n, 0, 8),
           ("argsort: memset", 1, 0, 4), ("argsort: memset", 1, 0, 4),
           ("argsort: radix histogram", n, 8, 0), ("argsort: radix exclusive sum", 1, 0, 8)]
    for i in range(_RADIX_PASSES):
        ops += [(f"argsort: memset pass {i}", 1, 0, 4), (f"argsort: radix onesweep pass {i}", n, 16, 16)]
    return ops


def argsort_launches(keys: int) -> int:
    """Launches of one stable argsort of ``keys`` int64 keys (what the reference align's sort costs
    the host, and what an engine that aligns twice launches again)."""
    return len(_stable_argsort_ops(keys))


def align_launches_in_call(pairs: int) -> int:
    """Launches of the reference align (``align_launches``) issued inside another's host call: its two
    cumsums' scans and its argsort's launches after the first."""
    return 2 + argsort_launches(pairs) - 1


# vLLM's align: one CTA does it all below this many pairs when there are at most this many experts.
_SMALL_ALIGN_MAX_PAIRS = 1024
_SMALL_ALIGN_MAX_EXPERTS = 64
_ALIGN_THREADS = 1024
_SORT_THREADS = 256


def engine_align_launches(call: MoeCall) -> tuple[Launch, ...]:
    """vLLM's / SGLang's CUDA ``moe_align_block_size`` (int32 ids), as profiled with vLLM 0.22's
    kernels on an H200 (names and grids in data/h200/moe.parquet). Threads handle 4-byte ids and
    atomics, so accesses are 4 bytes wide.

    - below 1,024 pairs with at most 64 experts: one CTA of max(E, 32) + 256 threads counts, scans and
      scatters in shared memory ((E+1)^2 counters) while its 256 extra threads fill the sentinel;
    - else two CTAs of 1,024 threads (one counts, scans and writes the blocks' expert ids, the other
      fills ``sorted_token_ids`` with the sentinel), then ``count_and_sort_expert_tokens_kernel``
      with one thread a pair (read its id, an atomic on the expert's cursor, one store) in CTAs of 256.
    """
    n, e, bm = call.tokens * call.topk, call.num_experts, call.config.block_m
    if call.naive_assignment:
        return (Launch("naive assignment: num_tokens_post_padded fill", task_demand(l2_bytes=4.0), [1],
                       Resources(128, 16, 0), dram_read_bytes=0.0, dram_write_bytes=4.0, access_bytes=4),)
    mp = max_padded_len(n, e, bm)
    nb = ceil_div(mp, bm)
    if n < _SMALL_ALIGN_MAX_PAIRS and e <= _SMALL_ALIGN_MAX_EXPERTS:
        l2 = 4.0 * (n + mp + nb + 1) + 4.0 * n
        return (Launch("moe_align_block_size_small_batch_expert_kernel", task_demand(fma_ops=n + e * e, l2_bytes=l2),
                       [1], Resources(max(e, 32) + 256, 32, 4 * (e + 1) * (e + 1)), dram_read_bytes=4.0 * n,
                       dram_write_bytes=4.0 * (mp + nb + 1), access_bytes=4),)
    scan = task_demand(fma_ops=n, l2_bytes=4.0 * (n + nb + e + 1))
    fill = task_demand(l2_bytes=4.0 * mp)
    align = Launch("moe_align_block_size_kernel", np.array([scan, fill]), np.array([1, 1]),
                   Resources(_ALIGN_THREADS, 48, 4 * e + 4096), dram_read_bytes=4.0 * n,
                   dram_write_bytes=4.0 * (mp + nb + e + 1), access_bytes=4)
    ctas = min(ceil_div(n, _SORT_THREADS), 65_535)
    sort = Launch("count_and_sort_expert_tokens_kernel", task_demand(fma_ops=n / ctas, l2_bytes=12.0 * n / ctas),
                  [ctas], Resources(_SORT_THREADS, 18, 0), dram_read_bytes=4.0 * n, dram_write_bytes=4.0 * n,
                  access_bytes=4)
    return one_call(align, sort)


def engine_sum_launches(call: MoeCall) -> tuple[Launch, ...]:
    """vLLM's ``moe_sum``: one CTA of min(H, 1024) threads a token for topk 2-4, else PyTorch's sum
    (``at::sum_out``), as profiled. SGLang 0.5.10 (``moe_runner/triton.py``) writes a top-1 result
    straight into the output (no launch) and otherwise runs one fused sum (``torch.add`` for top-2,
    a Triton or compiled reduce beyond) over the same bytes, priced alike."""
    if call.engine == "sglang" and call.topk == 1:
        return ()
    if not 2 <= call.topk <= 4:
        return topk_sum_launches(call)
    b = DTYPE_BYTES[call.dtype]
    return (rowwise_launch("moe_sum_kernel", call.tokens, call.hidden, threads=min(call.hidden, 1024),
                           bytes_in_per_col=call.topk * b, bytes_out_per_col=b, fma_per_col=call.topk - 1,
                           xu_per_col=0.0, access_bytes=b),)


def decompose(call: MoeCall, gpu) -> tuple[Launch, ...]:
    if call.stage == "w13":
        return (gemm_launch(call, gpu, "w13"),)
    if call.stage == "w2":
        return (gemm_launch(call, gpu, "w2"),)
    if call.engine == "reference":
        align, reduce = align_launches(call), topk_sum_launches(call)
    else:
        align, reduce = engine_align_launches(call), engine_sum_launches(call)
    return (*align, gemm_launch(call, gpu, "w13"), silu_and_mul_launch(call), gemm_launch(call, gpu, "w2"), *reduce)
