"""The ``synperf eval --report DIR`` output: report.md, report.json and one predicted-vs-measured
scatter plot per kernel family (SVG, written directly: no plotting library needed)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

PLOT_SIZE = 420                 # px, square plotting area
MARGIN = 56
MAX_POINTS = 2000               # per plot: a seeded sample beyond this keeps the files small
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, re.sub(r"^[<>^]?\d*", "", spec))     # keep precision and type, drop padding


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(c for c, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_fmt(r.get(c), spec) for c, spec in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def scatter_svg(measured: np.ndarray, predicted: np.ndarray, groups: list[str], title: str, seed: int = 0) -> str:
    """Log-log scatter of predicted against measured latency (us), the y = x line and a +-10 % band,
    one colour per group (library or GPU)."""
    measured, predicted = np.asarray(measured, float), np.asarray(predicted, float)
    keep = np.isfinite(measured) & np.isfinite(predicted) & (measured > 0) & (predicted > 0)
    idx = np.flatnonzero(keep)
    if idx.size > MAX_POINTS:
        idx = np.sort(np.random.default_rng(seed).choice(idx, MAX_POINTS, replace=False))
    lo = math.floor(math.log10(min(measured[idx].min(), predicted[idx].min()))) if idx.size else 0
    hi = math.ceil(math.log10(max(measured[idx].max(), predicted[idx].max()))) if idx.size else 1
    hi = max(hi, lo + 1)

    def pos(v: float) -> float:
        return (math.log10(v) - lo) / (hi - lo) * PLOT_SIZE

    width = height = PLOT_SIZE + 2 * MARGIN
    x0, y0 = MARGIN, MARGIN + PLOT_SIZE          # origin in SVG coordinates (y grows downwards)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 200}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<text x="{x0}" y="{MARGIN - 20}" font-size="13">{title}</text>',
           f'<rect x="{x0}" y="{MARGIN}" width="{PLOT_SIZE}" height="{PLOT_SIZE}" fill="none" stroke="#444"/>']
    for decade in range(lo, hi + 1):
        p = pos(10.0 ** decade)
        out.append(f'<line x1="{x0 + p:.1f}" y1="{MARGIN}" x2="{x0 + p:.1f}" y2="{y0}" stroke="#eee"/>')
        out.append(f'<line x1="{x0}" y1="{y0 - p:.1f}" x2="{x0 + PLOT_SIZE}" y2="{y0 - p:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x0 + p:.1f}" y="{y0 + 16}" text-anchor="middle">1e{decade}</text>')
        out.append(f'<text x="{x0 - 6}" y="{y0 - p + 4:.1f}" text-anchor="end">1e{decade}</text>')
    for factor, dash in ((1.0, ""), (1.1, ' stroke-dasharray="4 3"'), (1 / 1.1, ' stroke-dasharray="4 3"')):
        a, b = 10.0 ** lo, 10.0 ** hi
        out.append(f'<line x1="{x0 + pos(a):.1f}" y1="{y0 - pos(a) - math.log10(factor) / (hi - lo) * PLOT_SIZE:.1f}" '
                   f'x2="{x0 + pos(b):.1f}" y2="{y0 - pos(b) - math.log10(factor) / (hi - lo) * PLOT_SIZE:.1f}" '
                   f'stroke="#888"{dash}/>')
    names = sorted(set(groups[i] for i in idx))
    colour = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(names)}
    for i in idx:
        out.append(f'<circle cx="{x0 + pos(measured[i]):.1f}" cy="{y0 - pos(predicted[i]):.1f}" r="1.8" '
                   f'fill="{colour[groups[i]]}" fill-opacity="0.55"/>')
    out.append(f'<text x="{x0 + PLOT_SIZE / 2}" y="{y0 + 36}" text-anchor="middle">measured latency (us)</text>')
    out.append(f'<text x="{MARGIN - 42}" y="{MARGIN + PLOT_SIZE / 2}" text-anchor="middle" '
               f'transform="rotate(-90 {MARGIN - 42} {MARGIN + PLOT_SIZE / 2})">predicted latency (us)</text>')
    for k, name in enumerate(names):
        y = MARGIN + 14 + 16 * k
        out.append(f'<circle cx="{x0 + PLOT_SIZE + 16}" cy="{y - 4}" r="4" fill="{colour[name]}"/>')
        out.append(f'<text x="{x0 + PLOT_SIZE + 26}" y="{y}">{name}</text>')
    shown = f"{idx.size} of {int(keep.sum())} rows" if idx.size < keep.sum() else f"{idx.size} rows"
    out.append(f'<text x="{x0 + PLOT_SIZE + 10}" y="{MARGIN + 30 + 16 * len(names)}">{shown}</text>')
    out.append(f'<text x="{x0 + PLOT_SIZE + 10}" y="{MARGIN + 46 + 16 * len(names)}">solid: y = x; dashed: +-10 %</text>')
    out.append("</svg>")
    return "\n".join(out)


def worst_cases_markdown(rows: list[dict]) -> list[str]:
    """Per row that misses its target (``worst_cases``, from ``train.evaluate``): its worst calls."""
    missing = [r for r in rows if r.get("worst_cases")]
    if not missing:
        return []
    lines = ["", "## Worst cases where the learned model misses its target", "",
             "Ceiling / measured: how close the call came to its ceiling; bound: the pipe that sets the "
             "ceiling; ood: inputs outside the training range.", ""]
    for r in missing:
        lines += [f"### {r['gpu']} {r['family']} {r['library']}: {r['mlp_mape']:.1%} against {r['target_mape']:.0%}", "",
                  "| measured us | predicted us | error | ceiling / measured | bound | ood | case |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {w['measured_us']:.1f} | {w['predicted_us']:.1f} | {w['error']:+.1%} | {w['ceiling_efficiency']:.2f} "
                  f"| {w['bound']} | {'yes' if w['ood'] else ''} | `{w['case']}` |" for w in r["worst_cases"]]
        lines.append("")
    return lines


def write_report(out_dir: str | Path, title: str, rows: list[dict], columns: list[tuple[str, str]],
                 points: dict[str, dict[str, list]], seconds: float, notes: list[str] = ()) -> list[Path]:
    """report.md + report.json + <family>.svg under ``out_dir``; returns the files written.
    ``points[family]`` holds parallel lists ``measured``, ``predicted`` and ``group``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for family, p in sorted(points.items()):
        path = out / f"{family}.svg"
        path.write_text(scatter_svg(p["measured"], p["predicted"], p["group"], f"{title}: {family}"))
        written.append(path)
    lines = [f"# {title}", "", f"{sum(r['rows'] for r in rows)} rows, {seconds:.1f} s.", *notes, "",
             markdown_table(rows, columns), ""]
    lines += [f"![{p.stem}]({p.name})" for p in written]
    lines += worst_cases_markdown(rows)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps({"title": title, "rows": rows, "seconds": round(seconds, 1)},
                                                indent=1) + "\n")
    return [out / "report.md", out / "report.json", *written]
