"""The drift report: checks for the job summary and the exit code, a per-feature table, and in the
HTML one inline SVG plot (reference against current) per drifted feature. No JavaScript, no CDN:
the file opens anywhere, offline.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np

from mlflow_ci.config import Monitoring
from mlflow_ci.core.report import Report, check
from mlflow_ci.monitoring.drift import ABSENT, DRIFT, INSUFFICIENT, DriftResult, FeatureResult
from mlflow_ci.monitoring.profile import FeatureProfile, Profile

REF_COLOUR = "#5f6368"
CUR_COLOUR = "#e8710a"
MAX_BARS = 20
DISPLAY_BINS = 25


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if value != 0 and abs(value) < 10 ** -(digits - 1):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def _names(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _found(res: FeatureResult) -> str:
    if res.verdict in (INSUFFICIENT, ABSENT):
        return f"{res.verdict}: {res.note}"
    parts = [f"{res.test} {_fmt(res.statistic)}"]
    if res.test in ("wasserstein", "jensenshannon"):
        parts.append(f"p_adj {_fmt(res.p_adjusted)}")
    else:
        parts.append(f"p {_fmt(res.p_value)}, p_adj {_fmt(res.p_adjusted)}")
    parts.append(f"n {res.rows_reference}/{res.rows_current}")
    return ", ".join(parts) + f" → {res.verdict}"


def build_report(result: DriftResult, cfg: Monitoring, *, reference: str, current: str, title: str) -> Report:
    report = Report(kind="drift", title=title)
    absent = result.absent
    report.add(
        check(
            "columns present",
            not absent,
            expected="every checked reference column in the current data",
            found=f"missing: {_names(absent)}" if absent else "all present",
            detail="A column the model was trained on is gone from the current data.",
        )
    )
    insufficient = result.insufficient
    report.add(
        check(
            "enough data",
            not insufficient,
            expected=f"≥ {cfg.min_rows} values per feature on both sides",
            found=f"insufficient: {_names(insufficient)}"
            if insufficient
            else f"{result.rows_current} current rows",
            detail="Too few values to tell drift from noise: this is not a pass.",
        )
    )
    for res in result.features:
        if res.verdict in (INSUFFICIENT, ABSENT):
            continue
        report.add(
            check(
                f"{res.name} ({res.test})",
                not res.drifted,
                expected=res.rule,
                found=_found(res),
                advisory=True,
                detail="Counted in the data-set rule below.",
            )
        )
    drifted = result.drifted
    report.add(
        check(
            "data-set drift",
            result.dataset_verdict != DRIFT,
            expected=f"weighted share of drifted features < {cfg.dataset.drift_share:g}",
            found=f"{result.drift_share:.3g} ({len(drifted)} of {len(result.features)}"
            + (f": {_names(drifted)})" if drifted else ")"),
            detail=f"Drifted: {', '.join(drifted)}.",
        )
    )
    pred = result.prediction
    if pred is not None and pred.verdict not in (INSUFFICIENT, ABSENT):
        report.add(
            check(
                f"prediction drift ({pred.name})",
                not pred.drifted,
                expected=pred.rule,
                found=_found(pred),
                advisory=not cfg.prediction.blocking,
                detail="The distribution of the model's predictions moved.",
            )
        )
    elif pred is not None and pred.verdict == ABSENT:
        report.notes.append(pred.note)
    rising = [r for r in result.all if r.missing_increase]
    report.add(
        check(
            "missing values",
            not rising,
            expected=f"missing share rises < {cfg.missing.max_increase:g} (or not significantly)",
            found=", ".join(
                f"{r.name} {r.missing_reference:.1%} → {r.missing_current:.1%}" for r in rising[:8]
            )
            or "no significant rise",
            advisory=not cfg.missing.blocking,
        )
    )
    unseen = [r for r in result.all if r.unseen_excess]
    report.add(
        check(
            "unseen categories",
            not unseen,
            expected=f"share of values unseen in the reference < {cfg.unseen.max_share:g}",
            found="; ".join(
                f"{r.name} {r.unseen_share or 0:.1%} ({', '.join(list(r.unseen_examples)[:3])})"
                for r in unseen[:6]
            )
            or "none beyond the tolerance",
            advisory=not cfg.unseen.blocking,
        )
    )
    if result.extra_columns:
        report.notes.append(
            f"Columns not in the reference profile (not checked): {_names(result.extra_columns)}."
        )
    report.notes.append(
        f"Reference: {reference}. Current: {current}. Tests: Kolmogorov-Smirnov / chi-squared below "
        f"{cfg.large_sample} values, effect size (Wasserstein in standard deviations / Jensen-Shannon) "
        f"from there; p-values corrected with {cfg.correction} at {cfg.false_alarm_rate:g}."
    )
    return report


# --- plots --------------------------------------------------------------------------------------

W, H = 640, 220
PAD_L, PAD_R, PAD_T, PAD_B = 48, 12, 28, 36


def _svg_open(name: str, subtitle: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        f'role="img" data-feature="{html.escape(name, quote=True)}" class="drift-plot">',
        f"<title>{html.escape(name)}: reference against current</title>",
        f'<rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>',
        f'<text x="{PAD_L}" y="16" font-size="13" font-weight="600">{html.escape(name)}</text>',
        f'<text x="{W - PAD_R}" y="16" font-size="11" text-anchor="end" fill="#555">{html.escape(subtitle)}</text>',
    ]


def _legend(y: float) -> list[str]:
    return [
        f'<rect x="{PAD_L}" y="{y}" width="10" height="10" fill="{REF_COLOUR}"/>',
        f'<text x="{PAD_L + 14}" y="{y + 9}" font-size="11">reference</text>',
        f'<rect x="{PAD_L + 90}" y="{y}" width="10" height="10" fill="{CUR_COLOUR}"/>',
        f'<text x="{PAD_L + 104}" y="{y + 9}" font-size="11">current</text>',
    ]


def numeric_svg(name: str, ref: FeatureProfile, cur: FeatureProfile, subtitle: str) -> str:
    """Densities over the reference's bins as two step lines (outer bins end at min/max)."""
    lo_r, hi_r = ref.bin_bounds()
    lo_c, hi_c = cur.bin_bounds()
    lower = np.minimum(lo_r, lo_c)
    upper = np.maximum(hi_r, hi_c)
    # Clip the outer bins to a few inner widths so one extreme value does not flatten the plot.
    inner = upper[1:-1] - lower[1:-1] if upper.size > 2 else upper - lower
    span = float(np.median(inner)) * 5 if inner.size and np.median(inner) > 0 else 1.0
    if upper.size > 1:
        lower[0] = max(lower[0], upper[0] - span)
        upper[-1] = min(upper[-1], lower[-1] + span)
    # Display bins: runs of consecutive reference bins (at most DISPLAY_BINS), so that sampling
    # noise in 1 %-bins does not hide the shape.
    step = max(1, math.ceil(lower.size / DISPLAY_BINS))
    starts = np.arange(0, lower.size, step)
    lower, upper = lower[starts], upper[np.minimum(starts + step, upper.size) - 1]
    widths = np.maximum(upper - lower, 1e-12)
    dens = []
    for fp in (ref, cur):
        n = fp.counts.sum()
        grouped = np.add.reduceat(fp.counts, starts)
        dens.append(grouped / n / widths if n else np.zeros_like(widths))
    x0, x1 = float(lower[0]), float(upper[-1])
    if not x1 > x0:
        x1 = x0 + 1.0
    ymax = float(max(d.max() for d in dens)) or 1.0
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def sx(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return PAD_T + plot_h - y / ymax * plot_h

    parts = _svg_open(name, subtitle)
    parts.append(
        f'<line x1="{PAD_L}" y1="{PAD_T + plot_h}" x2="{W - PAD_R}" y2="{PAD_T + plot_h}" stroke="#999"/>'
    )
    for d, colour in zip(dens, (REF_COLOUR, CUR_COLOUR), strict=True):
        points = []
        for lo, hi, y in zip(lower, upper, d, strict=True):
            points.append(f"{sx(lo):.1f},{sy(y):.1f}")
            points.append(f"{sx(hi):.1f},{sy(y):.1f}")
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{" ".join(points)}"/>'
        )
    for x in (x0, (x0 + x1) / 2, x1):
        parts.append(
            f'<text x="{sx(x):.1f}" y="{PAD_T + plot_h + 14}" font-size="10" text-anchor="middle">{_fmt(x, 3)}</text>'
        )
    parts.append(f'<text x="4" y="{PAD_T + 10}" font-size="10" fill="#555">density</text>')
    parts += _legend(H - 14)
    parts.append("</svg>")
    return "\n".join(parts)


def categorical_svg(name: str, ref: FeatureProfile, cur: FeatureProfile, subtitle: str) -> str:
    """Shares of the most frequent categories (reference order), side by side."""
    labels = list(ref.spec.categories[:MAX_BARS])
    ref_n, cur_n = max(ref.count, 1), max(cur.count, 1)
    ref_shares = [int(c) / ref_n for c in ref.counts[: len(labels)]]
    cur_shares = [int(c) / cur_n for c in cur.counts[: len(labels)]]
    rest_ref = 1 - sum(ref_shares) if ref.count else 0.0
    rest_cur = 1 - sum(cur_shares) if cur.count else 0.0
    if rest_ref > 1e-9 or rest_cur > 1e-9:
        labels.append("(other)")
        ref_shares.append(max(rest_ref, 0.0))
        cur_shares.append(max(rest_cur, 0.0))
    ymax = max([*ref_shares, *cur_shares, 1e-9])
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    slot = plot_w / max(len(labels), 1)
    bar = slot * 0.38
    parts = _svg_open(name, subtitle)
    for i, (lab, a, b) in enumerate(zip(labels, ref_shares, cur_shares, strict=True)):
        x = PAD_L + i * slot + slot * 0.1
        for j, (share, colour) in enumerate(((a, REF_COLOUR), (b, CUR_COLOUR))):
            h = share / ymax * plot_h
            parts.append(
                f'<rect x="{x + j * bar:.1f}" y="{PAD_T + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{html.escape(lab)}: {share:.1%}</title></rect>'
            )
        parts.append(
            f'<text x="{x + bar:.1f}" y="{PAD_T + plot_h + 12}" font-size="9" text-anchor="middle">'
            f"{html.escape(lab[:10])}</text>"
        )
    parts.append(f'<text x="4" y="{PAD_T + 10}" font-size="10" fill="#555">share</text>')
    parts += _legend(H - 14)
    parts.append("</svg>")
    return "\n".join(parts)


def plot(res: FeatureResult, reference: Profile, current: Profile) -> str:
    ref, cur = reference.features[res.name], current.features[res.name]
    subtitle = f"{res.test} {_fmt(res.statistic)} (threshold {_fmt(res.threshold)})"
    if ref.kind == "numeric":
        return numeric_svg(res.name, ref, cur, subtitle)
    return categorical_svg(res.name, ref, cur, subtitle)


def html_extra(result: DriftResult, reference: Profile, current: Profile) -> str:
    """The per-feature table and one plot per drifted feature (and the prediction when it drifted)."""
    rows = []
    for res in result.all:
        cls = "fail" if res.drifted else ("warn" if res.verdict in (INSUFFICIENT, ABSENT) else "pass")
        rows.append(
            f"<tr class='{cls}'><td>{html.escape(res.name)}{' (prediction)' if res.role == 'prediction' else ''}</td>"
            f"<td>{res.kind}</td><td>{html.escape(res.test)}</td><td>{_fmt(res.statistic)}</td>"
            f"<td>{_fmt(res.threshold)}</td><td>{_fmt(res.p_adjusted)}</td>"
            f"<td>{res.missing_reference:.1%} → {res.missing_current:.1%}</td>"
            f"<td>{html.escape(res.verdict)}</td></tr>"
        )
    table = (
        "<h2>Features</h2><table><thead><tr><th>feature</th><th>kind</th><th>test</th><th>statistic</th>"
        "<th>threshold</th><th>p (adjusted)</th><th>missing</th><th>verdict</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )
    drifted = [r for r in result.all if r.verdict == DRIFT]
    if not drifted:
        return table + "<h2>Distributions</h2><p>No feature drifted: nothing to plot.</p>"
    plots = "".join(f"<figure>{plot(r, reference, current)}</figure>" for r in drifted)
    return table + f"<h2>Distributions of the drifted features ({len(drifted)})</h2>" + plots
