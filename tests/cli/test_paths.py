"""Paths given on the command line are checked before any work: a report folder that cannot be
written is exit 2 with one sentence, before a server or an entry point starts."""

from __future__ import annotations

import shutil
from pathlib import Path

import click
from conftest import EXAMPLE, run_cli
from mlflow_ci.cli import cli
from mlflow_ci.cli.app import writable_report_dir


def blocked(tmp_path: Path) -> Path:
    """A folder that cannot exist, even for root: its parent is a regular file."""
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    return tmp_path / "a-file" / "reports"


def test_an_unwritable_report_folder_stops_smoke_before_the_entry_point(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("reports", "mlruns"))
    done = run_cli("smoke", str(project), "--env-manager", "local", "--report-dir", str(blocked(tmp_path)))
    assert done.returncode == 2
    assert f"{blocked(tmp_path)}: the report folder cannot be written (Not a directory)" in done.stderr
    assert "tracking server:" not in done.stderr
    assert "mlflow run" not in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unwritable_default_report_folder_stops_smoke_too(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("reports", "mlruns"))
    (project / "reports").write_text("not a folder", encoding="utf-8")
    done = run_cli("smoke", str(project), "--env-manager", "local")
    assert done.returncode == 2
    assert "the report folder cannot be written" in done.stderr
    assert "tracking server:" not in done.stderr


def test_a_missing_report_folder_is_created(tmp_path: Path) -> None:
    from mlflow_ci.core.fsutil import writable_folder

    assert writable_folder(tmp_path / "new" / "deeper").is_dir()
    assert list((tmp_path / "new" / "deeper").iterdir()) == [], "the write probe is removed"


def test_every_report_folder_written_to_is_checked_while_parsing() -> None:
    """Each --report-dir a command writes to carries the check; pr-comment's is read from."""
    missing = []
    for name, command in _commands(cli):
        for param in command.params:
            if (
                "--report-dir" in param.opts
                and name != "pr-comment"
                and param.callback is not writable_report_dir
            ):
                missing.append(name)
    assert missing == []


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix}{name} ")
        else:
            found.append((f"{prefix}{name}", command))
    return found
