"""The kernels of one forward pass as vLLM or SGLang runs it, per GPU, under tensor parallelism.

``forward_pass(model, gpu, tp, framework, phase, lens)`` (and ``mixed_pass`` for a continuous batch of
prefill chunks and decode sequences) returns a ForwardPass whose ``kernels``
are ``(case dict, count, tag)`` triples (each case parses with ``synperf.cases.parse_case``;
``count`` is how many times the pass runs it, e.g. once per layer) and whose ``allreduces`` are
``(bytes, count, tag)`` triples (TP all-reduces, priced by ``comm``). ``lens`` are the prompt
lengths for a prefill, the current kv lengths (the new token included) for a decode step.

Library mappings (the closest modelled library; docs/end-to-end.md):
- attention, SGLang: ``flash_attn3`` on Hopper (head_dim 64/128/256; its FA3 backend, the default
  there, called without scheduler metadata), ``flashinfer`` otherwise: prefill, and paged decode
  (decode-only steps with the CUDA-graph plan). Page size 1, SGLang's default.
- attention, ``reference`` (synperf's reference engine, docs/reference-engine.md; what
  ``simulate validate`` prices): prefill ``fa3`` (FlashInfer's SM90 kernel) on Hopper, ``flashinfer``
  otherwise; decode ``flashinfer`` (page 1, the CUDA-graph plan for decode-only steps); MoE
  layers with SGLang's default config.
- attention, vLLM (FlashAttention backend): ``flash_attn3`` on Hopper (Dao-AILab FlashAttention-3
  as vllm_flash_attn ships it, paged KV, the split cap vLLM passes); elsewhere on sm80+
  ``flash_attn2_torch_sdpa`` (FlashAttention-2 kernels), whose dense tensors need equal lengths:
  the batch is padded to its longest request (an over-estimate for uneven batches); pre-sm80
  GPUs get ``flashinfer``. Page size 16.
- GEMMs ``cublas`` bf16; RMSNorm, SiLU-and-mul, RoPE ``flashinfer`` (vLLM's own CUDA kernels have
  the same one-CTA-per-row / element-wise shape); fused MoE ``triton_fused_moe`` with the engine's
  own align and sum kernels and the config it picks on that GPU: its shipped tuned config for
  (E, N, device) where it has one, else its default rule (``kernels.moe.engine_config``).

Execution: SGLang runs prefill and mixed passes eagerly and decode-only steps as one CUDA graph.
vLLM V1 does the same above 512 tokens; a prefill or mixed step of up to 512 tokens (its largest
CUDA-graph capture size) replays piecewise CUDA graphs split at each attention call, which runs
eagerly between them (``ForwardPass.piecewise``; priced by ``EngineOverhead``). vLLM's graphs,
piecewise and full (decode-only steps), run at the next capture size (``vllm_capture_size``): every
kernel but attention is priced at that padded token count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from synperf.errors import InputError
from synperf.kernels.attention import DECODE_GROUP_SIZES, FA3_HEAD_DIMS, HEAD_DIMS
from synperf.kernels.moe import engine_config
from synperf.workloads.model import ModelConfig

FRAMEWORKS = ("vllm", "sglang")
REFERENCE = "reference"      # the reference engine's kernel choices (not a CLI framework)
DTYPE = "bf16"
_ROPE_FLASHINFER_DIMS = (64, 128, 256, 512)
MLA_DECODE_HEAD_DIM = 256       # MLA decode priced as MQA at this head dim (see _mla_attention)
VLLM_PIECEWISE_MAX_TOKENS = 512  # vLLM V1's largest CUDA-graph capture size (its default)


class KernelOp(NamedTuple):
    case: dict
    count: int
    tag: str


class AllReduce(NamedTuple):
    bytes: int
    count: int
    tag: str


@dataclass
class ForwardPass:
    framework: str
    phase: str
    tp: int
    num_tokens: int
    num_seqs: int
    num_layers: int = 0
    layer_kind: str = "dense"      # calibration.LAYER_KINDS: selects the engine's unmodelled launches per layer
    routed_pairs: int = 0          # (token, expert) pairs each MoE layer routes: num_tokens x topk
    piecewise: bool = False        # a prefill / mixed pass replayed as piecewise CUDA graphs (vLLM V1)
    kernels: list[KernelOp] = field(default_factory=list)
    allreduces: list[AllReduce] = field(default_factory=list)

    def add(self, case: dict, count: int, tag: str) -> None:
        if count > 0:
            self.kernels.append(KernelOp({"id": tag, "dtype": DTYPE, **case}, count, tag))

    @property
    def kernel_launches(self) -> int:
        return sum(op.count for op in self.kernels)

    @property
    def attention_calls(self) -> int:
        """Attention calls in the pass (a piecewise CUDA-graph pass runs each eagerly)."""
        return sum(op.count for op in self.kernels if op.case["family"] == "attention")

    @property
    def attention_library(self) -> str | None:
        """The library of the pass's (last) attention call: a decode step's host work depends on
        it (calibration.EngineOverhead)."""
        libraries = [op.case["library"] for op in self.kernels if op.case["family"] == "attention"]
        return libraries[-1] if libraries else None


def _gemm(m: int, n: int, k: int) -> dict:
    return {"family": "gemm", "library": "cublas", "m": m, "n": n, "k": k}


def _rmsnorm(tokens: int, hidden: int, residual: bool) -> dict:
    return {"family": "rmsnorm", "library": "flashinfer", "tokens": tokens, "hidden": hidden, "residual": residual}


def _rope(tokens: int, heads: int, kv_heads: int, head_dim: int) -> dict:
    lib = "flashinfer" if head_dim in _ROPE_FLASHINFER_DIMS else "torch"
    return {"family": "rope", "library": lib, "tokens": tokens, "num_heads": heads,
            "num_kv_heads": kv_heads, "head_dim": head_dim}


def attention_library(framework: str, phase: str, gpu, head_dim: int) -> str:
    hopper = gpu.cc_major == 9
    if gpu.cc_major < 8:
        return "flashinfer"
    if framework == REFERENCE:
        return "fa3" if phase == "prefill" and hopper and head_dim in FA3_HEAD_DIMS else "flashinfer"
    if framework == "sglang":
        return "flash_attn3" if hopper and head_dim in FA3_HEAD_DIMS else "flashinfer"
    if hopper and head_dim in FA3_HEAD_DIMS:
        return "flash_attn3"
    return "flash_attn2_torch_sdpa" if head_dim in HEAD_DIMS else "flashinfer"


def _attention(framework: str, phase: str, gpu, lens: list[int], heads: int, kv_heads: int,
               head_dim: int, q_lens: list[int] | None = None, cuda_graph: bool = False) -> dict:
    """``lens`` are kv lengths; ``q_lens`` the new tokens of prefill chunks (default: whole prompts).
    ``cuda_graph``: a decode-only step, which both engines replay as a CUDA graph; FlashInfer's
    CUDA-core decode then runs the plan made for graphs (KV always split, grid a full wave)."""
    lib = attention_library(framework, phase, gpu, head_dim)
    case = {"family": "attention", "library": lib, "phase": phase, "num_heads": heads,
            "num_kv_heads": kv_heads, "head_dim": head_dim}
    q_lens = list(lens) if q_lens is None else list(q_lens)
    if lib == "flash_attn2_torch_sdpa":             # dense tensors: pad to the longest request
        longest = max(lens)
        case.update(batch=len(lens), kv_len=longest, q_len=max(q_lens) if phase == "prefill" else 1)
    elif phase == "prefill":
        case.update(q_lens=q_lens, kv_lens=list(lens))
    else:
        case.update(kv_lens=list(lens))
    page_size = 16 if framework == "vllm" else 1
    if lib == "flash_attn3":
        case.update(page_size=page_size, engine=framework)
    elif phase == "decode" and lib != "flash_attn2_torch_sdpa":
        case["page_size"] = page_size
        if cuda_graph and lib == "flashinfer" and heads // kv_heads in DECODE_GROUP_SIZES:
            case["cuda_graph"] = True
    return case


def _attention_parts(framework: str, gpu, chunks: list[tuple[int, int]], decode_lens: list[int], heads: int,
                     kv_heads: int, prefill_dim: int, decode_dim: int, decode_kv_heads: int | None = None):
    """(part, case) for the prefill chunks and the decoding sequences present in a pass.
    FlashAttention-3 (vLLM and SGLang on Hopper) takes both in one varlen call (part ``mixed``)."""
    one_call = (chunks and decode_lens and prefill_dim == decode_dim and decode_kv_heads in (None, kv_heads)
                and attention_library(framework, "prefill", gpu, prefill_dim) == "flash_attn3")
    if one_call:
        yield "mixed", _attention(framework, "prefill", gpu, [kv for _, kv in chunks] + list(decode_lens), heads,
                                  kv_heads, prefill_dim, [q for q, _ in chunks] + [1] * len(decode_lens))
        return
    if chunks:
        yield "prefill", _attention(framework, "prefill", gpu, [kv for _, kv in chunks], heads, kv_heads,
                                    prefill_dim, [q for q, _ in chunks])
    if decode_lens:
        yield "decode", _attention(framework, "decode", gpu, decode_lens, heads,
                                   kv_heads if decode_kv_heads is None else decode_kv_heads, decode_dim,
                                   cuda_graph=not chunks)


def forward_pass(model: ModelConfig, gpu, tp: int, framework: str, phase: str, lens: list[int],
                 embed: bool = True, head: bool = True, moe_engine: str | None = None,
                 piecewise: bool | None = None) -> ForwardPass:
    if phase not in ("prefill", "decode"):
        raise InputError(f"phase must be prefill or decode, got {phase!r}")
    if not lens or any(not isinstance(x, int) or x < 1 for x in lens):
        raise InputError("lengths must be a non-empty list of positive integers")
    if phase == "prefill":
        return mixed_pass(model, gpu, tp, framework, [(x, x) for x in lens], [], embed, head, moe_engine, piecewise)
    return mixed_pass(model, gpu, tp, framework, [], list(lens), embed, head, moe_engine)


def vllm_capture_size(tokens: int) -> int:
    """The CUDA-graph size vLLM V1 runs ``tokens`` at: its default capture sizes are 1, 2, 4, then
    multiples of 8 below 256 and of 16 up to 512 (with max_num_seqs 256)."""
    if tokens <= 4:
        return 1 << (tokens - 1).bit_length()
    step = 8 if tokens <= 256 else 16
    return -(-tokens // step) * step


def runs_piecewise(framework: str, phase: str, tokens: int) -> bool:
    """Whether the framework replays this pass as piecewise CUDA graphs (module docstring)."""
    return framework == "vllm" and phase != "decode" and tokens <= VLLM_PIECEWISE_MAX_TOKENS


def mixed_pass(model: ModelConfig, gpu, tp: int, framework: str, chunks: list[tuple[int, int]],
               decode_lens: list[int], embed: bool = True, head: bool = True,
               moe_engine: str | None = None, piecewise: bool | None = None) -> ForwardPass:
    """One forward pass over a continuous batch: prefill ``chunks`` as (new tokens, kv length with
    them) pairs (chunked prefill: kv >= new tokens) plus ``decode_lens`` (kv lengths of the decoding
    sequences, new token included). GEMMs, norms and activations run over all the tokens; attention
    is one prefill call over the chunks and one decode call over the decoding sequences. The phase
    is ``prefill`` or ``decode`` when only one part is present, else ``mixed``. A pipeline stage
    other than the first has no embedding (``embed``) and starts from the previous stage's
    residual; only the last has the final norm and lm_head (``head``). ``moe_engine`` (default: the
    framework) says whose MoE align, sum and tuned configs price the experts; ``reference`` is
    synperf's reference engine (docs/reference-engine.md). ``piecewise`` (default: as the framework
    runs the pass, ``runs_piecewise``) marks a prefill or mixed pass replayed as piecewise CUDA
    graphs; the reference engine's measured piecewise prefills set it."""
    if framework not in (*FRAMEWORKS, REFERENCE):
        raise InputError(f"framework must be one of {', '.join(FRAMEWORKS)}, got {framework!r}")
    moe_engine = moe_engine or framework
    if moe_engine not in ("reference", *FRAMEWORKS):
        raise InputError(f"moe_engine must be reference or one of {', '.join(FRAMEWORKS)}, got {moe_engine!r}")
    if not chunks and not decode_lens:
        raise InputError("a forward pass needs at least one prefill chunk or decoding sequence")
    if any(not isinstance(q, int) or not isinstance(kv, int) or not 1 <= q <= kv for q, kv in chunks) \
            or any(not isinstance(x, int) or x < 1 for x in decode_lens):
        raise InputError("lengths must be positive integers (a chunk's kv length at least its new tokens)")
    model.check_tp(tp)
    seqs = len(chunks) + len(decode_lens)
    T = sum(q for q, _ in chunks) + len(decode_lens)
    phase = "mixed" if chunks and decode_lens else "prefill" if chunks else "decode"
    # Unmodelled launches differ by layer kind: the reference engine's MoE layers run torch routing
    # and a second align; the engines' run a fused top-k softmax (calibration.LAYER_KINDS).
    if model.num_moe_layers:
        kind = "moe" if moe_engine == "reference" else "moe_fused"
    else:
        kind = "qk_norm" if model.qk_norm else "dense"
    if piecewise is None:
        piecewise = runs_piecewise(framework, phase, T)
    elif piecewise and phase == "decode":
        raise InputError("a decode-only step runs as one CUDA graph, not piecewise")
    if framework == "vllm" and (piecewise or phase == "decode") and T <= VLLM_PIECEWISE_MAX_TOKENS:
        T = vllm_capture_size(T)        # its graphs run padded; attention sees the real tokens
    fp = ForwardPass(framework, phase, tp, T, seqs, model.num_layers, kind, T * model.topk if model.num_moe_layers else 0,
                     piecewise)
    L, h = model.num_layers, model.hidden_size
    H = model.num_heads // tp
    KVH = max(1, model.num_kv_heads // tp)
    d = model.head_dim

    # Embedding lookup (not a modelled family); under TP the vocab-parallel embedding all-reduces.
    if tp > 1 and embed:
        fp.allreduces.append(AllReduce(T * h * 2, 1, "embedding"))

    # Norms. Gemma-2 has four per layer: pre/post attention, pre/post feed-forward; the post-norms
    # take no residual. The model's first input norm has no residual to add.
    fp.add(_rmsnorm(T, h, not embed), 1, "input_norm")
    fp.add(_rmsnorm(T, h, True), L - 1, "input_norm")
    fp.add(_rmsnorm(T, h, True), L, "post_attention_norm" if model.norms_per_layer == 2 else "pre_feedforward_norm")
    if model.norms_per_layer == 4:
        fp.add(_rmsnorm(T, h, False), L, "post_attention_norm")
        fp.add(_rmsnorm(T, h, False), L, "post_feedforward_norm")

    # Attention block.
    if model.mla:
        _mla_attention(fp, model, gpu, framework, chunks, decode_lens, T, H)
    else:
        fp.add(_gemm(T, (H + 2 * KVH) * d, h), L, "qkv_proj")
        if model.qk_norm:
            fp.add(_rmsnorm(T * H, d, False), L, "q_norm")
            fp.add(_rmsnorm(T * KVH, d, False), L, "k_norm")
        fp.add(_rope(T, H, KVH, d), L, "rope")
        for part, case in _attention_parts(framework, gpu, chunks, decode_lens, H, KVH, d, d):
            fp.add(case, L, "attention" if phase != "mixed" else f"attention_{part}")
        fp.add(_gemm(T, h, H * d), L, "o_proj")
    fp.allreduces.append(AllReduce(T * h * 2, L if tp > 1 else 0, "attention_out"))

    # Feed-forward: dense layers, then MoE layers.
    dense, moe = model.num_dense_layers, model.num_moe_layers
    if dense:
        inter = model.intermediate_size // tp
        fp.add(_gemm(T, 2 * inter, h), dense, "gate_up_proj")
        fp.add({"family": "silu_and_mul", "library": "flashinfer", "tokens": T, "intermediate": inter}, dense, "act_and_mul")
        fp.add(_gemm(T, h, inter), dense, "down_proj")
    if moe:
        fp.add(_gemm(T, model.num_experts, h), moe, "router")
        inter = model.expert_intermediate // tp
        if moe_engine == "reference":
            config = "sglang_default" if framework == REFERENCE else f"{framework}_default"
        else:
            config, _ = engine_config(moe_engine, gpu, T, model.num_experts, h, inter, model.topk)
        fp.add({"family": "moe", "library": "triton_fused_moe", "tokens": T, "hidden": h, "intermediate": inter,
                "num_experts": model.num_experts, "topk": model.topk, "stage": "all", "config": config,
                "engine": moe_engine}, moe, "experts")
        if model.shared_expert_intermediate:
            inter = model.shared_expert_intermediate // tp
            fp.add(_gemm(T, 2 * inter, h), moe, "shared_gate_up_proj")
            fp.add({"family": "silu_and_mul", "library": "flashinfer", "tokens": T, "intermediate": inter}, moe,
                   "shared_act_and_mul")
            fp.add(_gemm(T, h, inter), moe, "shared_down_proj")
    fp.allreduces.append(AllReduce(T * h * 2, L if tp > 1 else 0, "mlp_out"))
    fp.allreduces[:] = [a for a in fp.allreduces if a.count > 0]

    # Final norm and the logits of the last token of each sequence (vocab-parallel lm_head; the
    # logits gather and the sampler are not modelled).
    if head:
        fp.add(_rmsnorm(T, h, True), 1, "final_norm")
        fp.add(_gemm(seqs, model.vocab_size // tp, h), 1, "lm_head")
    return fp


def _mla_attention(fp: ForwardPass, model: ModelConfig, gpu, framework: str, chunks: list[tuple[int, int]],
                   decode_lens: list[int], T: int, H: int) -> None:
    """DeepSeek MLA. Projections are priced exactly (q, or q_a + norm + q_b; kv_a with the rope
    key; kv_b for prefill tokens or, for decode tokens, the absorbed W_UK / W_UV products as GEMMs
    with the same weights). The attention kernel is priced as the closest modelled family: prefill
    as multi-head attention at head_dim 192 (the qk width; v's 128 is not modelled separately);
    decode, which reads the shared 576-wide latent, as MQA (one kv head) at head_dim 256: 1024
    bytes of K+V a token against MLA's 1152."""
    L, h, r = model.num_layers, model.hidden_size, model.kv_lora_rank
    nope, rope_d, v = model.qk_nope_head_dim, model.qk_rope_head_dim, model.v_head_dim
    qk = nope + rope_d
    if model.q_lora_rank:
        fp.add(_gemm(T, model.q_lora_rank, h), L, "q_a_proj")
        fp.add(_rmsnorm(T, model.q_lora_rank, False), L, "q_a_norm")
        fp.add(_gemm(T, H * qk, model.q_lora_rank), L, "q_b_proj")
    else:
        fp.add(_gemm(T, H * qk, h), L, "q_proj")
    fp.add(_gemm(T, r + rope_d, h), L, "kv_a_proj")
    fp.add(_rmsnorm(T, r, False), L, "kv_a_norm")
    fp.add(_rope(T, H, 1, rope_d), L, "rope")
    t_pre, t_dec = sum(q for q, _ in chunks), len(decode_lens)
    if t_pre:
        fp.add(_gemm(t_pre, H * (nope + v), r), L, "kv_b_proj")
    if t_dec:
        fp.add(_gemm(t_dec, H * r, nope), L, "w_uk_absorbed")
        fp.add(_gemm(t_dec, H * v, r), L, "w_uv_absorbed")
    mixed = bool(t_pre and t_dec)
    for part, case in _attention_parts(framework, gpu, chunks, decode_lens, H, H, qk if qk in HEAD_DIMS else 256,
                                       MLA_DECODE_HEAD_DIM, decode_kv_heads=1):
        fp.add(case, L, f"attention_{part}" if mixed else "attention")
    fp.add(_gemm(T, h, H * v), L, "o_proj")
