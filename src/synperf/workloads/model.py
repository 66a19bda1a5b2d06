"""A model's shape, read from a HuggingFace ``config.json``: only what the kernel sequence needs.

``load_model(x)`` takes a path to a config.json (or a folder holding one) or the short id of a
bundled config (``src/synperf/workloads/configs/<id>.json``, e.g. ``llama-3.1-8b``; a HuggingFace
repo id such as ``meta-llama/Llama-3.1-8B`` matches its last part). Nothing is downloaded.

Every field is checked; a bad or missing one gives an InputError naming the file and the field
(``llama.json: field 'hidden_size': missing``). Architectures outside ``ARCHITECTURES`` are
refused: their layer structure is not modelled.
"""

from __future__ import annotations

import dataclasses

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from synperf.errors import InputError

# HF architecture -> the layer structure synperf builds for it (engines.py).
ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "llama",
    "Phi3ForCausalLM": "llama",           # fused qkv / gate_up weights: the same GEMMs
    "Qwen3ForCausalLM": "llama",          # + qk-norm
    "MixtralForCausalLM": "moe",
    "Qwen2MoeForCausalLM": "moe",         # + shared expert
    "Qwen3MoeForCausalLM": "moe",         # + qk-norm
    "GptOssForCausalLM": "moe",
    "DeepseekV2ForCausalLM": "mla_moe",
    "DeepseekV3ForCausalLM": "mla_moe",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma2",        # + qk-norm; 5 local : 1 global attention layers
    "Gemma3ForConditionalGeneration": "gemma2",   # the text model (text_config); the vision tower is not priced
}
QK_NORM_ARCHS = ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM", "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration")
# Gemma3TextConfig's defaults (transformers): released configs leave these out of text_config.
_GEMMA3_TEXT_DEFAULTS = {"vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216,
                         "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
                         "head_dim": 256, "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "sliding_window": 4096}
_MAX_DIM = 1 << 20
_MAX_LAYERS = 4096


def _configs_dir() -> Path:
    return Path(str(resources.files("synperf.workloads") / "configs"))


def bundled_models() -> list[str]:
    return sorted(p.stem for p in _configs_dir().glob("*.json"))


@dataclass(frozen=True)
class ModelConfig:
    name: str                       # short id or file name, for messages
    architecture: str               # the HF class name
    kind: str                       # llama / moe / mla_moe / gemma2 (ARCHITECTURES)
    hidden_size: int
    intermediate_size: int          # dense MLP width (dense layers, and DeepSeek's first_k_dense)
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    tie_word_embeddings: bool
    qk_norm: bool = False
    num_experts: int = 0            # 0: dense model
    topk: int = 0
    expert_intermediate: int = 0
    shared_expert_intermediate: int = 0   # all shared experts together (0: none)
    num_moe_layers: int = 0
    # DeepSeek multi-head latent attention (MLA)
    mla: bool = False
    kv_lora_rank: int = 0
    q_lora_rank: int = 0            # 0: q projected directly (no q LoRA)
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    norms_per_layer: int = 2        # Gemma-2: 4 (pre/post attention and feed-forward)
    sliding_window: int = 0         # recorded; not modelled (docs/end-to-end.md)
    source: str = ""

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    @property
    def gqa_group(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def qk_head_dim(self) -> int:
        """Per-head q/k width: MLA's nope + rope part; head_dim otherwise."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim if self.mla else self.head_dim

    def splits_at(self, tp: int) -> bool:
        """Whether ``check_tp`` accepts ``tp``."""
        try:
            self.check_tp(tp)
        except InputError:
            return False
        return True

    def check_tp(self, tp: int, flag: str = "tp") -> None:
        """Tensor parallelism must split heads (and MLP widths) evenly, as the engines require."""
        if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
            raise InputError(f"{flag}: must be a positive integer, got {tp!r}")
        if self.num_heads % tp:
            raise InputError(f"{flag}: {tp} does not divide {self.name}'s {self.num_heads} attention heads")
        if self.num_kv_heads >= tp and self.num_kv_heads % tp:
            raise InputError(f"{flag}: {tp} does not divide {self.name}'s {self.num_kv_heads} kv heads")
        if self.num_kv_heads < tp and tp % self.num_kv_heads:
            raise InputError(f"{flag}: {tp} is not a multiple of {self.name}'s {self.num_kv_heads} kv heads"
                             " (kv heads are replicated)")
        widths = {"intermediate_size": self.intermediate_size if self.num_dense_layers else 0,
                  "expert intermediate size": self.expert_intermediate,
                  "shared expert intermediate size": self.shared_expert_intermediate}
        for what, width in widths.items():
            if width and width % tp:
                raise InputError(f"{flag}: {tp} does not divide {self.name}'s {what} {width}")


# ------------------------------------------------------------------------------------ reading
class _Reader:
    def __init__(self, raw: dict, name: str, prefix: str = ""):
        self.raw, self.name, self.prefix = raw, name, prefix

    def fail(self, field: str, message: str):
        raise InputError(f"{self.name}: field '{self.prefix}{field}': {message}")

    def int(self, field: str, *, default: int | None = None, lo: int = 1, hi: int = _MAX_DIM,
            aliases: tuple[str, ...] = ()) -> int:
        for key in (field, *aliases):
            if self.raw.get(key) is not None:
                field = key
                break
        else:
            if default is not None:
                return default
            self.fail(field, "missing")
        value = self.raw[field]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and (not math.isfinite(value) or value != int(value))):
            self.fail(field, f"must be an integer, got {value!r}")
        if not lo <= int(value) <= hi:
            self.fail(field, f"must be between {lo} and {hi}, got {int(value)}")
        return int(value)

    def float(self, field: str, default: float) -> float:
        value = self.raw.get(field)
        if value is None:
            return default
        # A huge JSON integer overflows math.isfinite, so bound it before converting.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e30 \
                or not math.isfinite(value):
            self.fail(field, f"must be a positive number below 1e30, got {str(value)[:40]}")
        return float(value)

    def bool(self, field: str, default: bool) -> bool:
        value = self.raw.get(field)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(field, f"must be true or false, got {value!r}")
        return value


def model_from_dict(raw: Any, name: str = "config.json") -> ModelConfig:
    if not isinstance(raw, dict):
        raise InputError(f"{name}: must be a JSON object, got {type(raw).__name__}")
    r = _Reader(raw, name)
    archs = raw.get("architectures")
    if not isinstance(archs, list) or not archs or not all(isinstance(a, str) for a in archs):
        r.fail("architectures", "missing or not a list of class names")
    arch = next((a for a in archs if a in ARCHITECTURES), None)
    if arch is None:
        raise InputError(f"{name}: field 'architectures': {', '.join(archs)} not supported "
                         f"(supported: {', '.join(sorted(ARCHITECTURES))})")
    kind = ARCHITECTURES[arch]
    if arch.startswith("Gemma3"):
        prefix = ""
        if arch == "Gemma3ForConditionalGeneration":
            raw, prefix = raw.get("text_config"), "text_config."
            if not isinstance(raw, dict):
                r.fail("text_config", "missing or not an object (Gemma 3's text model is described there)")
        raw = {**_GEMMA3_TEXT_DEFAULTS, **raw}
        r = _Reader(raw, name, prefix)
    hidden = r.int("hidden_size")
    layers = r.int("num_hidden_layers", hi=_MAX_LAYERS)
    heads = r.int("num_attention_heads", hi=4096)
    kv_heads = r.int("num_key_value_heads", default=heads, hi=4096)
    if heads % kv_heads:
        r.fail("num_key_value_heads", f"{kv_heads} does not divide num_attention_heads {heads}")
    if raw.get("head_dim") is None and hidden % heads:
        r.fail("head_dim", f"missing, and hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    head_dim = r.int("head_dim", default=hidden // heads, hi=4096)
    fields: dict[str, Any] = dict(
        name=name, architecture=arch, kind=kind, hidden_size=hidden,
        intermediate_size=r.int("intermediate_size"), num_layers=layers, num_heads=heads,
        num_kv_heads=kv_heads, head_dim=head_dim, vocab_size=r.int("vocab_size", hi=1 << 24),
        rms_norm_eps=r.float("rms_norm_eps", 1e-6),
        tie_word_embeddings=r.bool("tie_word_embeddings", kind == "gemma2"),
        qk_norm=arch in QK_NORM_ARCHS,
        norms_per_layer=4 if kind == "gemma2" else 2,
        sliding_window=r.int("sliding_window", default=0, lo=0, hi=1 << 30),
        source=str(name),
    )
    if kind in ("moe", "mla_moe"):
        experts = r.int("num_experts", aliases=("num_local_experts", "n_routed_experts"), hi=4096)
        topk = r.int("num_experts_per_tok", aliases=("experts_per_token",), hi=4096)
        if topk > experts:
            r.fail("num_experts_per_tok", f"{topk} exceeds the {experts} experts")
        if arch == "MixtralForCausalLM" or arch == "GptOssForCausalLM":
            expert_inter = fields["intermediate_size"]
        else:
            expert_inter = r.int("moe_intermediate_size")
        shared = 0
        if arch == "Qwen2MoeForCausalLM":
            shared = r.int("shared_expert_intermediate_size", default=0, lo=0)
        elif kind == "mla_moe":
            shared = r.int("n_shared_experts", default=0, lo=0, hi=4096) * expert_inter
        # Which layers are MoE.
        if kind == "mla_moe":
            first_dense = r.int("first_k_dense_replace", default=0, lo=0, hi=layers)
            freq = r.int("moe_layer_freq", default=1, hi=layers)
            moe_layers = sum(1 for i in range(layers) if i >= first_dense and i % freq == 0)
        elif arch in ("Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM"):
            step = r.int("decoder_sparse_step", default=1, hi=layers)
            only = raw.get("mlp_only_layers") or []
            if not isinstance(only, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in only):
                r.fail("mlp_only_layers", "must be a list of layer indices")
            moe_layers = sum(1 for i in range(layers) if i not in only and (i + 1) % step == 0)
        else:
            moe_layers = layers
        fields.update(num_experts=experts, topk=topk, expert_intermediate=expert_inter,
                      shared_expert_intermediate=shared, num_moe_layers=moe_layers)
    if kind == "mla_moe":
        q_lora = raw.get("q_lora_rank")
        fields.update(
            mla=True, kv_lora_rank=r.int("kv_lora_rank"),
            q_lora_rank=0 if q_lora is None else r.int("q_lora_rank"),
            qk_nope_head_dim=r.int("qk_nope_head_dim"), qk_rope_head_dim=r.int("qk_rope_head_dim"),
            v_head_dim=r.int("v_head_dim"))
        fields["head_dim"] = fields["v_head_dim"]
    return ModelConfig(**fields)


def load_model(name_or_path: str | Path) -> ModelConfig:
    """A bundled short id, a HuggingFace repo id whose last part is bundled, or a config.json path."""
    text = str(name_or_path)
    path = Path(text)
    try:
        if path.is_dir():
            path = path / "config.json"
        is_file = path.is_file()
    except (OSError, ValueError):       # a name too long or with a NUL byte is no path
        is_file = False
    if is_file:
        label = path.name if path.name != "config.json" else f"{path.parent.name}/config.json"
    else:
        key = text.strip().rstrip("/").split("/")[-1].lower()
        if key.endswith(".json"):
            raise InputError(f"{text}: no such file")
        key = key.removesuffix("-instruct").removesuffix("-it")
        key = {"meta-llama-3.1-8b": "llama-3.1-8b", "meta-llama-3.1-70b": "llama-3.1-70b",
               "mixtral-8x7b-v0.1": "mixtral-8x7b"}.get(key, key)
        if key not in bundled_models():
            raise InputError(f"unknown model {text[:80]!r}: give a config.json path or one of "
                             f"{', '.join(bundled_models())}")
        path = _configs_dir() / f"{key}.json"
        label = path.name
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{label}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{label}: not valid JSON ({exc})") from None
    return model_from_dict(raw, label)


def with_layers(model: ModelConfig, layers: int | None) -> ModelConfig:
    """``model`` cut to ``layers`` decoder layers, dense and MoE layers kept in proportion (how the
    reference engine fits a large model on one GPU); unchanged when ``layers`` is None or not fewer."""
    if not layers or layers >= model.num_layers:
        return model
    moe = round(model.num_moe_layers * layers / model.num_layers)
    return dataclasses.replace(model, num_layers=layers, num_moe_layers=moe)
