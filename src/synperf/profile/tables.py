"""Typed row -> parquet writing with crash-safe appends (pyarrow, lazy)."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, List, Set

from .cases import ALL_COLUMNS, to_json_cell


def _pa():
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


def _infer_kind(values: List[Any]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "str"
    if all(isinstance(v, bool) for v in vals):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return "int"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return "float"
    if all(isinstance(v, str) for v in vals):
        return "str"
    return "json"


def _convert(v: Any, kind: str) -> Any:
    if v is None:
        return None
    if kind == "json":
        return to_json_cell(v)
    if kind == "int":
        return int(v)
    if kind == "float":
        return float(v)
    if kind == "bool":
        return bool(v)
    return v if isinstance(v, str) else to_json_cell(v)


def rows_to_table(rows: List[Dict[str, Any]]):
    pa, _ = _pa()
    types = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "str": pa.string(), "json": pa.string()}
    keys: List[str] = [k for k in ALL_COLUMNS]
    extra = sorted({k for r in rows for k in r} - set(keys))
    arrays, names = [], []
    for key in keys + extra:
        vals = [r.get(key) for r in rows]
        kind = ALL_COLUMNS.get(key) or _infer_kind(vals)
        if key in ALL_COLUMNS and kind in ("int", "float", "bool"):
            # a mistyped value in a known column is kept as JSON text rather than failing
            try:
                conv = [_convert(v, kind) for v in vals]
            except (TypeError, ValueError):
                kind, conv = "json", [to_json_cell(v) for v in vals]
        else:
            conv = [_convert(v, kind) for v in vals]
        arrays.append(pa.array(conv, type=types[kind]))
        names.append(key)
    return pa.Table.from_arrays(arrays, names=names)


def _unify(tables):
    pa, _ = _pa()
    order: List[str] = []
    ftype: Dict[str, Any] = {}
    for t in tables:
        for f in t.schema:
            if f.name not in ftype:
                order.append(f.name)
                ftype[f.name] = f.type
            elif ftype[f.name] != f.type and not pa.types.is_null(f.type):
                ftype[f.name] = pa.string() if not pa.types.is_null(ftype[f.name]) else f.type
    out = []
    for t in tables:
        cols = []
        for name in order:
            if name in t.column_names:
                col = t.column(name)
                if col.type != ftype[name]:
                    col = col.cast(ftype[name])
            else:
                col = pa.nulls(t.num_rows, type=ftype[name])
            cols.append(col)
        out.append(pa.Table.from_arrays(cols, names=order))
    return pa.concat_tables(out)


def read_ids(path: str) -> Set[str]:
    if not os.path.exists(path):
        return set()
    _, pq = _pa()
    t = pq.read_table(path, columns=["id"])
    return {x for x in t.column("id").to_pylist() if x is not None}


def append_rows(path: str, rows: List[Dict[str, Any]]) -> None:
    """Add rows to the parquet file at ``path`` (rows with the same id are
    replaced).  The file is rewritten to a temp file and atomically renamed,
    so it is always a complete parquet file: an interruption loses at most
    the rows being appended."""
    if not rows:
        return
    _, pq = _pa()
    new = rows_to_table(rows)
    tables = []
    if os.path.exists(path):
        old = pq.read_table(path)
        new_ids = set(new.column("id").to_pylist())
        if new_ids & set(old.column("id").to_pylist()):
            import pyarrow.compute as pc

            pa, _ = _pa()
            mask = pc.invert(pc.is_in(old.column("id"), value_set=pa.array(sorted(new_ids), type=pa.string())))
            old = old.filter(mask)
        tables.append(old)
    tables.append(new)
    table = _unify(tables) if len(tables) > 1 else new
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def append_jsonl(path: str, records: Iterable[Dict[str, Any]]) -> None:
    recs = list(records)
    if not recs:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r, sort_keys=True, default=str) + "\n")


def read_error_ids(path: str, kinds=("unsupported", "memory_cap", "invalid")) -> Set[str]:
    ids: Set[str] = set()
    if not os.path.exists(path):
        return ids
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("error_type") in kinds and r.get("id"):
                ids.add(r["id"])
    return ids
