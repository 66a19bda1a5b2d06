"""Importers: public measured kernel data (read-only folders the user points at) -> synperf records.

``import_source(source, path)`` returns ``(records, report)``. A record is one measurement::

    {gpu, family, dtype, library, <the family's contract fields>, cache, latency_us, source,
     framework?, framework_version?, kernel_source?, case_json}

``case_json`` holds the kernel case only (family, dtype, library and the shape fields), and every
kept record's case has passed ``synperf.cases.parse_case``. The report is
``{"read": n, "kept": n, "dropped": {reason: count}}`` with ``read == kept + sum(dropped)``.

``iter_source`` yields the same records one at a time (the whole aiconfigurator folder is several
million records: stream it rather than holding the list). The data is never copied: an importer
only reads the folder it is given. See docs/importers.md for the mappings per source.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from itertools import repeat
from typing import Any, Callable, Iterator

from synperf.cases import parse_case
from synperf.errors import SynperfError

SOURCES = ("aiconfigurator", "vidur", "pipeweave")
_PLAIN = re.compile(r"^[A-Za-z0-9_.+-]*$")


class Report:
    """Counts rows read, kept and dropped (by reason). ``as_dict()`` is the public report."""

    def __init__(self) -> None:
        self.read = 0
        self.kept = 0
        self.dropped: Counter = Counter()

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] += int(n)

    def as_dict(self) -> dict:
        return {"read": self.read, "kept": self.kept,
                "dropped": dict(sorted(self.dropped.items(), key=lambda kv: (-kv[1], kv[0])))}


class CaseValidator:
    """parse_case once per distinct case_json (many measurements share a case). Returns None when
    the case parses, else the drop reason (naming the rejected field)."""

    def __init__(self) -> None:
        self._seen: dict[str, str | None] = {}

    def __call__(self, case_json: str) -> str | None:
        try:
            return self._seen[case_json]
        except KeyError:
            pass
        try:
            parse_case(json.loads(case_json))
            reason = None
        except SynperfError as exc:
            field = getattr(exc, "field", None)
            reason = f"rejected by parse_case ({field})" if field else f"rejected by parse_case ({exc})"
        self._seen[case_json] = reason
        return reason


def read_csv_rows(file: str) -> list[dict]:
    """All rows of one CSV file of a source folder; an unreadable or malformed file is a
    SynperfError naming it (not a traceback)."""
    import csv
    try:
        with open(file, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SynperfError(f"{file}: not a readable CSV file ({exc.__class__.__name__}: {exc})") from None


def _is_column(value) -> bool:
    return hasattr(value, "tolist") or isinstance(value, list)


def _as_list(value, n: int) -> list:
    out = value.tolist() if hasattr(value, "tolist") else list(value)
    if len(out) != n:
        raise ValueError(f"column has {len(out)} values, expected {n}")
    return out


def _json_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v + '"' if _PLAIN.match(v) else json.dumps(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return json.dumps(v, sort_keys=False)


def emit(case: dict, common: dict, latency_us, report: Report, validator: CaseValidator, *,
         source: str, cache: str, extra: dict | None = None) -> Iterator[dict]:
    """Build records column-wise. ``case`` maps each contract field (in contract order) to a column
    (Series, ndarray, list) or a constant; ``common`` and ``extra`` add non-case record fields.
    case_json is formatted exactly as ``json.dumps(case)`` would, and validated once per distinct
    case with parse_case; failing rows are counted under the reason and skipped."""
    latency_us = _as_list(latency_us, len(latency_us))
    n = len(latency_us)
    parts, strcols = [], []
    for key, value in case.items():
        if _is_column(value):
            vals = _as_list(value, n)
            conv = {u: _json_value(u) for u in set(vals)} if not any(isinstance(v, (dict, list)) for v in vals) else None
            strcols.append([conv[v] for v in vals] if conv is not None else [_json_value(v) for v in vals])
            parts.append(f'"{key}": %s')
        else:
            parts.append(f'"{key}": ' + _json_value(value).replace("%", "%%"))
    template = "{" + ", ".join(parts) + "}"
    case_jsons = [template % t for t in zip(*strcols)] if strcols else [template % ()] * n

    reasons = {cj: validator(cj) for cj in set(case_jsons)}
    keys, cols = [], []
    for group in (case, common, {"cache": cache, "latency_us": latency_us, "source": source}, extra or {}):
        for key, value in group.items():
            keys.append(key)
            cols.append(_as_list(value, n) if _is_column(value) else repeat(value))
    keys.append("case_json")
    cols.append(case_jsons)
    dropped: Counter = Counter()
    kept = 0
    for row in zip(*cols):
        reason = reasons[row[-1]]
        if reason is None:
            kept += 1
            yield dict(zip(keys, row))
        else:
            dropped[reason] += 1
    report.kept += kept
    for reason, count in dropped.items():
        report.drop(reason, count)


def _importer(source: str) -> Callable[..., Iterator[dict]]:
    if source == "aiconfigurator":
        from synperf.importers.aiconfigurator import iter_records
    elif source == "vidur":
        from synperf.importers.vidur import iter_records
    elif source == "pipeweave":
        from synperf.importers.pipeweave import iter_records
    else:
        raise SynperfError(f"unknown source {source!r}: one of {', '.join(SOURCES)}")
    return iter_records


def iter_source(source: str, path: str, report: Report | None = None, **options: Any) -> Iterator[dict]:
    """Stream the records of one source folder. Pass a Report to get the counts once the
    iterator is exhausted. Options (all sources): ``limit`` (stop after this many rows read);
    per source see its module."""
    return _importer(source)(path, report if report is not None else Report(), **options)


def import_source(source: str, path: str, **options: Any) -> tuple[list[dict], dict]:
    """All records of one source folder, and the report {read, kept, dropped: {reason: n}}."""
    report = Report()
    records = list(iter_source(source, path, report, **options))
    return records, report.as_dict()
