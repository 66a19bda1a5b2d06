"""Kernel cases: the JSON objects of the `predict-kernels` contract, read and validated.

A case is ``{id?, family, dtype, library, cache?, ...family fields}``. Reading a JSONL file yields,
per line, either a parsed case or an InputError naming the line and the field; a bad line never
stops the good ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from synperf.demand import CACHE_STATES
from synperf.errors import InputError
from synperf.kernels import families
from synperf.validate import get_choice, reject_unknown

COMMON_FIELDS = {"id", "family", "dtype", "library", "cache"}
MAX_LINE_CHARS = 1_000_000


@dataclass(frozen=True)
class KernelCase:
    family: str
    dtype: str
    library: str
    cache: str
    call: Any                 # the family's frozen Call dataclass
    # The id is echoed, not modelled: cases differing only in id are equal, so predict's cache
    # serves a file of many ids over few shapes (without this, 200k lines missed it every time).
    id: str | int | None = field(default=None, compare=False)


def parse_case(obj: Any) -> KernelCase:
    if not isinstance(obj, dict):
        raise InputError(f"a case must be a JSON object, got {type(obj).__name__}")
    fams = families()
    family = get_choice(obj, "family", tuple(fams))
    module = fams[family]
    reject_unknown(obj, COMMON_FIELDS | module.FIELDS)
    case_id = obj.get("id")
    if case_id is not None and (isinstance(case_id, bool) or not isinstance(case_id, (str, int))):
        raise InputError("must be a string or an integer", "id")
    library = get_choice(obj, "library", module.LIBRARIES, default=module.LIBRARIES[0])
    dtype = get_choice(obj, "dtype", module.DTYPES[library] if isinstance(module.DTYPES, dict) else module.DTYPES,
                       default="bf16")
    cache = get_choice(obj, "cache", CACHE_STATES, default="cold")
    call = module.parse(obj, dtype, library)
    return KernelCase(family, dtype, library, cache, call, case_id)


def _reject_constants(token: str) -> float:
    raise ValueError(f"{token} is not a number JSON allows")


def parse_json_text(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constants)
    except (json.JSONDecodeError, ValueError) as exc:
        raise InputError(f"not valid JSON ({exc})") from None
    except RecursionError:   # e.g. 100k nested '[': the decoder recurses per level
        raise InputError("not valid JSON (nested too deeply)") from None


def read_cases(lines: Iterable[bytes | str]) -> Iterator[tuple[int, Any, KernelCase | InputError]]:
    """Yield (line number, raw object or None, case or error) for each non-blank line, streaming.
    Lines may be bytes (decoded here, so one badly encoded line fails alone) or text."""
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, None, InputError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})", line=number)
                continue
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            yield number, None, InputError(f"line longer than {MAX_LINE_CHARS} characters", line=number)
            continue
        try:
            raw = parse_json_text(line)
        except InputError as exc:
            yield number, None, exc.at_line(number)
            continue
        try:
            yield number, raw, parse_case(raw)
        except InputError as exc:
            yield number, raw, exc.at_line(number)
