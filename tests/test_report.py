"""synperf eval --report: markdown, JSON and predicted-vs-measured plots."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from synperf.report import MAX_POINTS, markdown_table, scatter_svg

ROOT = Path(__file__).parents[1]


def _circles(svg: str):
    ns = "{http://www.w3.org/2000/svg}"
    return ET.fromstring(svg).iter(ns + "circle")


def test_scatter_is_valid_svg_with_points_on_the_diagonal():
    measured = np.array([1.0, 10.0, 100.0, 1000.0])
    svg = scatter_svg(measured, measured, ["a", "a", "b", "b"], "t")
    points = [c for c in _circles(svg) if c.get("r") == "1.8"]
    assert len(points) == 4
    for c in points:      # y = x: the point's distance from the bottom equals its distance from the left
        x, y = float(c.get("cx")), float(c.get("cy"))
        assert abs((x - 56) - (476 - y)) < 0.2
    assert ">a<" in svg and ">b<" in svg


def test_scatter_samples_large_sets_and_drops_bad_values():
    rng = np.random.default_rng(0)
    m = rng.uniform(1, 1e4, 3 * MAX_POINTS)
    p = m * rng.uniform(0.8, 1.2, m.size)
    p[:10] = np.nan
    svg = scatter_svg(m, p, ["g"] * m.size, "t")
    assert sum(1 for c in _circles(svg) if c.get("r") == "1.8") == MAX_POINTS
    assert f"{MAX_POINTS} of {m.size - 10} rows" in svg


def test_markdown_table_formats_missing_values():
    table = markdown_table([{"family": "gemm", "mlp_mape": 0.0654, "neusight_mape": float("nan")}],
                           [("family", "<10"), ("mlp_mape", ">8.1%"), ("neusight_mape", ">8.1%")])
    assert table.splitlines()[2] == "| gemm | 6.5% | - |"


def test_cli_eval_report(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    from synperf.cli import main

    assert main(["eval", str(ROOT / "data" / "h200" / "rope.parquet"), "--report", str(tmp_path)]) == 0
    files = {p.name for p in tmp_path.iterdir()}
    assert {"report.md", "report.json", "rope.svg"} <= files
    report = json.loads((tmp_path / "report.json").read_text())
    import pyarrow.parquet as pq
    assert sum(r["rows"] for r in report["rows"]) == pq.read_metadata(ROOT / "data" / "h200" / "rope.parquet").num_rows
    assert "![rope](rope.svg)" in (tmp_path / "report.md").read_text()
    # Every rope library has cases measured twice: the report puts their noise floor beside the error.
    assert all(r["repeats"] >= 100 and 0 < r["floor_mape"] < r["mlp_mape"] + 0.05 for r in report["rows"])


def test_report_lists_the_worst_cases_where_a_target_is_missed(monkeypatch):
    """A library over its held-out target gets its worst calls (largest |error| first), with the
    pipe that bounds their ceiling; a library within its target gets none."""
    pq = pytest.importorskip("pyarrow.parquet")
    from synperf import train
    from synperf.demand import PIPES
    from synperf.gpu.registry import default_registry
    from synperf.predict import family_models
    from synperf.report import worst_cases_markdown
    rows = pq.read_table(ROOT / "data" / "h200" / "rope.parquet").to_pylist()[:400]
    monkeypatch.setitem(train.HELD_OUT_TARGETS, "rope", 1e-4)
    report = train.evaluate(rows, default_registry(), family_models())
    for r in report:
        worst = r["worst_cases"]
        assert len(worst) == min(train.WORST_SHOWN, r["rows"]) and r["target_mape"] == 1e-4
        errors = [abs(w["error"]) for w in worst]
        assert errors == sorted(errors, reverse=True) and errors[0] >= r["mlp_mape"]
        for w in worst:
            assert w["predicted_us"] / w["measured_us"] - 1 == pytest.approx(w["error"])
            assert w["bound"] in PIPES and w["ceiling_efficiency"] > 0
            assert json.loads(w["case"])["family"] == "rope"
    text = "\n".join(worst_cases_markdown(report))
    assert text.count("### h200 rope") == len(report)
    monkeypatch.setitem(train.HELD_OUT_TARGETS, "rope", 1.0)
    assert not any("worst_cases" in r for r in train.evaluate(rows, default_registry(), family_models()))
    assert worst_cases_markdown(train.evaluate(rows, default_registry(), family_models())) == []
