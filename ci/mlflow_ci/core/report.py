"""Check reports: one table (check, expected, found, verdict) rendered as JSON, Markdown and HTML.

Every command that checks something builds a :class:`Report`; the CLI writes it to a report
folder, appends the Markdown to the GitHub job summary and prints JSON with ``--json``.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mlflow_ci.core.fsutil import atomic_write_json, atomic_write_text

Verdict = Literal["pass", "fail", "warn", "skip"]
ICONS = {"pass": "✅ pass", "fail": "❌ fail", "warn": "⚠️ warn", "skip": "⏭️ skip"}
COMMENT_MARKER = "<!-- mlflow-ci:{kind} -->"


@dataclass(frozen=True)
class Check:
    name: str
    expected: str
    found: str
    verdict: Verdict
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"


def check(
    name: str, ok: bool, *, expected: str, found: str, advisory: bool = False, detail: str = ""
) -> Check:
    """A check that passes when ``ok``; an advisory one only warns."""
    verdict: Verdict = "pass" if ok else ("warn" if advisory else "fail")
    return Check(name=name, expected=expected, found=found, verdict=verdict, detail=detail)


@dataclass
class Report:
    kind: str
    title: str
    checks: list[Check] = field(default_factory=list)
    run_id: str | None = None
    run_url: str | None = None
    tracking_uri: str | None = None
    notes: list[str] = field(default_factory=list)
    output_tail: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    )

    def add(self, item: Check) -> Check:
        self.checks.append(item)
        return item

    @property
    def verdict(self) -> Literal["pass", "fail"]:
        return "fail" if any(c.failed for c in self.checks) or not self.checks else "pass"

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.failed]

    @property
    def warnings(self) -> list[Check]:
        """Checks that did not pass and do not fail the report (advisory ones)."""
        return [c for c in self.checks if c.verdict == "warn"]

    def _warned(self) -> str:
        """`` (⚠️ 2 warnings)`` after the verdict when checks warn; nothing otherwise."""
        count = len(self.warnings)
        return f" (⚠️ {count} warning{'s' if count != 1 else ''})" if count else ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = self.verdict
        out["failures"] = [c.name for c in self.failures]
        if self.warnings:  # only then, so a report without warnings reads as it always did
            out["warnings"] = [c.name for c in self.warnings]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def to_markdown(self, *, marker: bool = False) -> str:
        icon = "✅" if self.verdict == "pass" else "❌"
        lines = []
        if marker:
            lines.append(COMMENT_MARKER.format(kind=self.kind))
        lines.append(
            f"### {icon} mlflow-ci {self.kind}: {self.title} — **{self.verdict.upper()}**{self._warned()}"
        )
        lines.append("")
        if self.run_url or self.run_id:
            link = f"[{self.run_id}]({self.run_url})" if self.run_url else f"`{self.run_id}`"
            lines.append(f"MLflow run: {link}")
            lines.append("")
        lines.append("| check | expected | found | verdict |")
        lines.append("|---|---|---|---|")
        for c in self.checks:
            lines.append(f"| {_md(c.name)} | {_md(c.expected)} | {_md(c.found)} | {ICONS[c.verdict]} |")
        if not self.checks:
            lines.append("| (no checks ran) | | | ❌ fail |")
        for note in self.notes:
            lines.append("")
            lines.append(f"> **Note:** {note}")
        details = [c for c in self.checks if c.detail and c.verdict != "pass"]
        for c in details:
            lines.append("")
            lines.append(f"**{_md(c.name)}:** {c.detail}")
        if self.output_tail and self.verdict == "fail":
            lines += [
                "",
                "<details open><summary>Last lines of output</summary>",
                "",
                "```text",
                self.output_tail.replace("```", "'''"),
                "```",
                "</details>",
            ]
        return "\n".join(lines) + "\n"

    def to_html(self, extra: str = "") -> str:
        rows = "\n".join(
            f"<tr class='{c.verdict}'><td>{_h(c.name)}</td><td>{_h(c.expected)}</td>"
            f"<td>{_h(c.found)}</td><td class='v'>{c.verdict}</td></tr>"
            for c in self.checks
        )
        run = ""
        if self.run_id:
            run = f"<p>MLflow run: <a href='{_h(self.run_url or '')}'>{_h(self.run_id)}</a></p>"
        notes = "".join(f"<p class='note'>{_h(n)}</p>" for n in self.notes)
        tail = f"<pre>{_h(self.output_tail)}</pre>" if self.output_tail and self.verdict == "fail" else ""
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mlflow-ci {_h(self.kind)}: {_h(self.title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}
tr.fail{{background:#fde2e1}}tr.warn{{background:#fff4ce}}tr.pass{{background:#e6f4ea}}
.v{{font-weight:600;text-transform:uppercase}}.verdict-pass{{color:#137333}}.verdict-fail{{color:#a50e0e}}pre{{background:#f6f8fa;padding:1rem}}</style>
</head><body>
<h1 class="verdict-{self.verdict}">mlflow-ci {_h(self.kind)}: {_h(self.title)} — {self.verdict.upper()}{_h(self._warned())}</h1>
{run}
<table><thead><tr><th>check</th><th>expected</th><th>found</th><th>verdict</th></tr></thead>
<tbody>{rows}</tbody></table>
{notes}{extra}{tail}
<p><small>generated {self.created}</small></p>
</body></html>
"""

    def write(self, folder: Path, *, html_extra: str | None = None) -> dict[str, Path]:
        """Write ``<kind>.json``, ``<kind>.md`` (and ``<kind>.html``) atomically."""
        folder = Path(folder)
        paths = {
            "json": atomic_write_json(folder / f"{self.kind}.json", self.to_dict()),
            "markdown": atomic_write_text(folder / f"{self.kind}.md", self.to_markdown()),
            "html": atomic_write_text(folder / f"{self.kind}.html", self.to_html(html_extra or "")),
        }
        return paths


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _h(text: object) -> str:
    return html.escape(str(text), quote=True)
