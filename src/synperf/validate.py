"""Field checks for user-supplied kernel cases. Each failure names the field (the line is added
by whoever reads the file)."""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Mapping, Sequence

from synperf.errors import InputError

MAX_TOKENS = 10_000_000
MAX_DIM = 1_048_576


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for integer flags: anything else, or a value below ``minimum``, is refused
    with a message argparse prints after the flag's name."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value
    return parse


def get_int(obj: Mapping[str, Any], name: str, *, lo: int = 1, hi: int = MAX_DIM, default: int | None = None) -> int:
    if name not in obj or obj[name] is None:
        if default is not None:
            return default
        raise InputError("missing required field", name)
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"must be an integer, got {type(value).__name__} {value!r}", name)
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise InputError(f"must be an integer, got {value!r}", name)
    value = int(value)
    if not lo <= value <= hi:
        raise InputError(f"must be between {lo} and {hi}, got {value}", name)
    return value


def get_int_list(obj: Mapping[str, Any], name: str, *, lo: int = 1, hi: int = MAX_TOKENS,
                 max_len: int = 65_536) -> tuple[int, ...] | None:
    if name not in obj or obj[name] is None:
        return None
    value = obj[name]
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)) or not value:
        raise InputError("must be a non-empty list of integers", name)
    if len(value) > max_len:
        raise InputError(f"has {len(value)} entries, at most {max_len} allowed", name)
    return tuple(get_int({name: v}, name, lo=lo, hi=hi) for v in value)


def get_bool(obj: Mapping[str, Any], name: str, default: bool | None = None) -> bool:
    if name not in obj or obj[name] is None:
        if default is not None:
            return default
        raise InputError("missing required field", name)
    value = obj[name]
    if not isinstance(value, bool):
        raise InputError(f"must be true or false, got {value!r}", name)
    return value


def get_choice(obj: Mapping[str, Any], name: str, choices: Sequence[str], default: str | None = None) -> str:
    if name not in obj or obj[name] is None:
        if default is not None:
            return default
        raise InputError(f"missing required field (one of {', '.join(choices)})", name)
    value = obj[name]
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"must be one of {', '.join(choices)}, got {value!r}", name)
    return value


def reject_unknown(obj: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InputError(f"unknown field (allowed: {', '.join(sorted(allowed))})", unknown[0])
