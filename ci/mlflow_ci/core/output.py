"""Output fit for CI and for people: groups, annotations, step summaries, progress.

Everything human goes to stderr so that ``--json`` output on stdout stays machine-readable.
Inside GitHub Actions (``GITHUB_ACTIONS=true``) steps become ``::group::`` blocks and failures
become ``::error::`` annotations.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow_ci.core.report import Report


def _in_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def warning(message: str) -> None:
    if _in_actions():
        print(f"::warning::{_escape(message)}", file=sys.stderr, flush=True)
    else:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def error(message: str, *, title: str = "mlflow-ci") -> None:
    if _in_actions():
        print(f"::error title={_escape(title)}::{_escape(message)}", file=sys.stderr, flush=True)
    else:
        print(f"error: {message}", file=sys.stderr, flush=True)


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """A named step: a collapsible group in Actions, a timed heading elsewhere."""
    start = time.monotonic()
    if _in_actions():
        print(f"::group::{title}", file=sys.stderr, flush=True)
    else:
        info(f"==> {title}")
    try:
        yield
    finally:
        elapsed = time.monotonic() - start
        if _in_actions():
            print("::endgroup::", file=sys.stderr, flush=True)
        info(f"    {title}: {elapsed:.1f}s")


def write_step_summary(markdown: str, *, env: dict[str, str] | None = None) -> Path | None:
    """Append ``markdown`` to ``$GITHUB_STEP_SUMMARY`` when it is set; return the path."""
    target = (env if env is not None else os.environ).get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(markdown.rstrip("\n") + "\n\n")
    return path


def set_output(name: str, value: str, *, env: dict[str, str] | None = None) -> None:
    """Set a step output through ``$GITHUB_OUTPUT`` when it is set."""
    target = (env if env is not None else os.environ).get("GITHUB_OUTPUT")
    if not target:
        return
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(f"{name}={value}\n")


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 1 (children included) to stderr for a while,
    so that ``--json`` output on stdout stays clean while third-party code prints."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def emit_json(data: Any) -> None:
    """The one way machine output reaches stdout: indented JSON, anything else as its string."""
    import click

    click.echo(json.dumps(data, indent=2, default=str))


def finish(
    report: Report,
    *,
    report_dir: Path,
    as_json: bool,
    html_extra: str | None = None,
    echo: bool = True,
) -> int:
    """Write a report everywhere it belongs (files, job summary, step outputs, stdout) and return
    its exit code: the one way every command ends with a report.

    ``echo=False`` is for commands that tell people the outcome themselves (promote, rollback,
    audit): the files, the job summary and, with ``as_json``, the JSON on stdout are written all the
    same, but no step output is set and neither the Markdown nor a failure message is printed."""
    import click

    from mlflow_ci.core.errors import CheckFailed

    paths = _publish(report, report_dir, html_extra=html_extra)
    if echo:
        set_output("verdict", report.verdict)
        if report.run_id:
            set_output("run_id", report.run_id)
        set_output("report_dir", str(report_dir))
    if as_json:
        click.echo(report.to_json())
    elif echo:
        click.echo(report.to_markdown())
        info(f"report: {paths['markdown']} (also .json, .html)")  # type: ignore[index]
    if report.verdict == "fail":
        if echo:
            names = ", ".join(c.name for c in report.failures) or "no checks ran"
            error(f"{report.kind} failed: {names}")
        return CheckFailed.exit_code
    return 0


def emit(data: Any, *, as_json: bool, text: str, step_summary: str | None = None) -> None:
    """The end of a command that prints a result for people on stderr: ``step_summary``
    (Markdown) appended to the job summary, then ``data`` as JSON on stdout with ``--json``
    (:func:`emit_json`), else ``text`` on stderr."""
    if step_summary is not None:
        write_step_summary(step_summary)
    if as_json:
        emit_json(data)
    else:
        info(text)


def emit_report(report: Report, *, report_dir: Path | None, as_json: bool, text: str | None = None) -> None:
    """:func:`emit` for a report, as the server operations end: its files only when ``report_dir``
    is given, its Markdown in the job summary, then the report as JSON on stdout with ``--json``,
    else its Markdown (or ``text``) on stderr.  Unlike :func:`finish`, no step outputs are set and
    the exit code stays the caller's."""
    _publish(report, report_dir)
    markdown = report.to_markdown()
    emit(report.to_dict(), as_json=as_json, text=markdown if text is None else text)


def _publish(
    report: Report, report_dir: Path | None, *, html_extra: str | None = None
) -> dict[str, Path] | None:
    """What every report gets, whoever ends with it: its files (JSON, Markdown, HTML) when there
    is a folder for them, and its Markdown in the job summary. Returns the files' paths."""
    paths = report.write(report_dir, html_extra=html_extra) if report_dir is not None else None
    write_step_summary(report.to_markdown())
    return paths
