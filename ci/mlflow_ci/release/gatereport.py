"""Rendering of a gate verdict beyond the shared check table: a candidate-against-baseline table
(Markdown and HTML) and an inline SVG bar chart (no JavaScript, no extra dependency)."""

from __future__ import annotations

import html
import math
from typing import Any

CANDIDATE_COLOR = "#1a73e8"
BASELINE_COLOR = "#9aa0a6"


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:+.4f}"


def _pct(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:+.2%}"


def comparison_markdown(rows: list[dict[str, Any]], baseline_label: str, links: list[str]) -> str:
    if not rows:
        return ""
    out = [
        "",
        f"**Candidate against baseline** ({baseline_label})",
        "",
        "| metric | better | candidate | baseline | Δ | Δ % |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['metric']} | {r['direction']} | {_fmt(r['candidate'])} | {_fmt(r['baseline'])} | "
            f"{_signed(r['delta'])} | {_pct(r['relative'])} |"
        )
    if links:
        out += ["", " · ".join(links)]
    return "\n".join(out) + "\n"


def comparison_html(rows: list[dict[str, Any]], baseline_label: str, links: list[tuple[str, str]]) -> str:
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{html.escape(r['metric'])}</td><td>{r['direction']}</td><td>{_fmt(r['candidate'])}</td>"
        f"<td>{_fmt(r['baseline'])}</td><td>{_signed(r['delta'])}</td>"
        f"<td>{_pct(r['relative'])}</td></tr>"
        for r in rows
    )
    link_html = " · ".join(f"<a href='{html.escape(u, quote=True)}'>{html.escape(t)}</a>" for t, u in links)
    return (
        f"<h2>Candidate against baseline ({html.escape(baseline_label)})</h2>"
        f"{bar_chart_svg(rows)}"
        "<table><thead><tr><th>metric</th><th>better</th><th>candidate</th><th>baseline</th><th>Δ</th>"
        f"<th>Δ %</th></tr></thead><tbody>{body}</tbody></table><p>{link_html}</p>"
    )


def bar_chart_svg(rows: list[dict[str, Any]], width: int = 640) -> str:
    """Horizontal paired bars per metric, each row scaled to its own maximum (metrics differ in scale)."""
    label_w, value_w, bar_h, gap = 150, 70, 14, 14
    plot_w = width - label_w - value_w
    height = len(rows) * (2 * bar_h + gap) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="system-ui,sans-serif" font-size="12">',
        "<title>Candidate against baseline, per metric</title>",
        f'<rect x="{label_w}" y="4" width="12" height="12" fill="{CANDIDATE_COLOR}"/>'
        f'<text x="{label_w + 16}" y="14">candidate</text>'
        f'<rect x="{label_w + 100}" y="4" width="12" height="12" fill="{BASELINE_COLOR}"/>'
        f'<text x="{label_w + 116}" y="14">baseline</text>',
    ]
    y = 30
    for r in rows:
        values = [v for v in (r["candidate"], r["baseline"]) if v is not None and not math.isnan(v)]
        scale = max((abs(v) for v in values), default=1.0) or 1.0
        parts.append(
            f'<text x="{label_w - 8}" y="{y + bar_h + 4}" text-anchor="end">{html.escape(r["metric"])}</text>'
        )
        for i, (key, color) in enumerate((("candidate", CANDIDATE_COLOR), ("baseline", BASELINE_COLOR))):
            v = r[key]
            yy = y + i * bar_h
            if v is None or math.isnan(v):
                # No baseline value at all is normal for a first model; a missing candidate value is not.
                word, fill = (
                    ("none", "#5f6368") if key == "baseline" and v is None else ("missing", "#a50e0e")
                )
                parts.append(f'<text x="{label_w + 4}" y="{yy + 11}" fill="{fill}">{word}</text>')
                continue
            w = max(1.0, plot_w * abs(v) / scale * 0.95)
            parts.append(
                f'<rect x="{label_w}" y="{yy}" width="{w:.1f}" height="{bar_h - 2}" fill="{color}">'
                f"<title>{key}: {v:.6g}</title></rect>"
            )
            parts.append(f'<text x="{label_w + w + 4:.1f}" y="{yy + 11}">{v:.4g}</text>')
        y += 2 * bar_h + gap
    parts.append("</svg>")
    return "".join(parts)
