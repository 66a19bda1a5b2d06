"""Default fused-MoE Triton configs of vLLM and SGLang (bf16/fp16, no quant).

Both engines first look for a tuned JSON config file (per E, N, device); only
when none exists do they fall back to their default rule. The names
``"vllm_default"`` (vLLM 0.17+), ``"vllm_legacy_default"`` (vLLM 0.16 and
earlier) and ``"sglang_default"`` mean those fallbacks; the rules themselves are
``synperf.kernels.moe.default_config``.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

CONFIG_KEYS = ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages")

# The rules themselves live in synperf.kernels.moe.default_config (single source of truth).
from synperf.kernels.moe import (  # noqa: E402
    DEFAULT_RULES as DEFAULT_NAMES,
    TRITON_DEFAULT_NUM_STAGES,
    TRITON_DEFAULT_NUM_WARPS,
    default_config,
)


def resolve_default_config(
    name: str, tokens: int, num_experts: int, hidden: int, intermediate: int, topk: int
) -> Dict[str, int]:
    """The config vLLM / SGLang would use for a bf16 fused MoE call when no
    tuned config file exists (see ``synperf.kernels.moe.default_config``).
    Raises ValueError for an unknown name."""
    return default_config(name, tokens, num_experts, hidden, intermediate, topk, "bf16")


def resolve_config(case: Dict[str, Any]) -> Tuple[Dict[str, int], str]:
    """(resolved config dict, source) for a moe case.  ``source`` is the
    default's name or ``"explicit"``."""
    cfg = case.get("config", "vllm_default")
    if isinstance(cfg, str):
        resolved = resolve_default_config(
            cfg,
            case["tokens"],
            case["num_experts"],
            case["hidden"],
            case["intermediate"],
            case["topk"],
        )
        return resolved, cfg
    if not isinstance(cfg, dict):
        raise ValueError(f"moe config must be a dict or a default name, got {cfg!r}")
    missing = [k for k in CONFIG_KEYS[:4] if k not in cfg]
    if missing:
        raise ValueError(f"moe config lacks {missing}")
    resolved = {k: int(cfg[k]) for k in CONFIG_KEYS[:4]}
    resolved["num_warps"] = int(cfg.get("num_warps", TRITON_DEFAULT_NUM_WARPS))
    resolved["num_stages"] = int(cfg.get("num_stages", TRITON_DEFAULT_NUM_STAGES))
    return resolved, "explicit"
