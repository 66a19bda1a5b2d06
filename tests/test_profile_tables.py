"""Parquet streaming + resume bookkeeping (needs pyarrow, not torch)."""

import json

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from synperf.profile.cases import case_to_row
from synperf.profile.tables import append_jsonl, append_rows, read_error_ids, read_ids


def _row(case, lat):
    r = case_to_row(case)
    r.update({"latency_us": lat, "n_reps": 3, "kernel_names": ["a", "b"], "grids": [[1, 1, 1], None]})
    return r


def test_append_rows_and_resume(tmp_path):
    out = str(tmp_path / "o.parquet")
    g = {"family": "gemm", "m": 1, "n": 2, "k": 3}
    a = {"family": "attention", "phase": "decode", "batch": 2, "kv_len": 9, "num_heads": 4, "num_kv_heads": 2,
         "head_dim": 64, "q_lens": [1, 2]}
    append_rows(out, [_row(g, 1.5)])
    append_rows(out, [_row(a, 2.5)])
    t = pq.read_table(out)
    assert t.num_rows == 2
    assert t.schema.field("m").type == pa.int64()
    assert t.schema.field("latency_us").type == pa.float64()
    assert t.schema.field("causal").type == pa.bool_()
    d = t.to_pylist()
    assert d[0]["m"] == 1 and d[1]["m"] is None
    assert json.loads(d[0]["kernel_names"]) == ["a", "b"]
    assert d[1]["q_lens"] == "[1,2]"
    assert read_ids(out) == {d[0]["id"], d[1]["id"]}
    # same id again replaces the row
    append_rows(out, [_row(g, 9.0)])
    t = pq.read_table(out).to_pylist()
    assert len(t) == 2 and sorted(r["latency_us"] for r in t) == [2.5, 9.0]


def test_errors_jsonl(tmp_path):
    p = str(tmp_path / "o.parquet.errors.jsonl")
    append_jsonl(p, [{"id": "x", "error_type": "unsupported"}, {"id": "y", "error_type": "oom"}])
    append_jsonl(p, [{"id": "z", "error_type": "memory_cap"}])
    assert read_error_ids(p) == {"x", "z"}
