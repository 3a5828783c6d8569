"""The CLI contract: --help everywhere, documented exit codes, no tracebacks on bad input."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from conftest import ROOT, run_cli
from mlflow_ci.cli import cli
from mlflow_ci.cli.app import json_option, policy_option, tracking_option
from mlflow_ci.core.errors import EXIT_CODES


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, command in group.commands.items():
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, (*prefix, name)))
    return paths


@pytest.mark.parametrize("path", _command_paths(cli), ids=" ".join)
def test_every_command_has_help_with_exit_codes(path: tuple[str, ...]) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Exit codes:" in result.output
    assert "3 infrastructure error" in " ".join(result.output.split())


def _option(decorator) -> click.Option:
    """The click.Option a shared option decorator attaches."""

    @decorator
    def command() -> None: ...

    return command.__click_params__[0]  # type: ignore[attr-defined]


def _form(option: click.Parameter) -> dict[str, object]:
    fields = ("name", "opts", "secondary_opts", "envvar", "help", "default", "is_flag", "multiple")
    kind = {**option.type.to_info_dict(), "path_type": getattr(option.type, "path_type", None)}
    return {field: getattr(option, field, None) for field in fields} | {"type": kind}


SHARED = {"--json": json_option, "--policy": policy_option, "--tracking-uri": tracking_option}
# `server up --policy` starts the profile of a policy: the same option, its own help.
OWN_HELP = {(("server", "up"), "--policy")}
# `server doctor --url/--tracking-uri` has no $MLFLOW_TRACKING_URI default: without one it checks
# the plan only.
OWN_FORM = {(("server", "doctor"), "--tracking-uri")}
# Commands that never talk to a tracking server: they read files, databases, git or GitHub, or
# start their own server (demo, server up).
NO_SERVER = {
    ("policy", "check"), ("policy", "show"), ("policy", "schema"), ("server", "up"), ("server", "down"),
    ("server", "config"), ("server", "upgrade"), ("backup",), ("restore",), ("pr-comment",), ("demo",),
    ("projects",),
}  # fmt: skip


def test_every_command_that_talks_to_a_server_takes_tracking_uri() -> None:
    for path in _command_paths(cli):
        command = cli
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        if isinstance(command, click.Group) or path in NO_SERVER:
            continue
        assert any("--tracking-uri" in p.opts for p in command.params), " ".join(path)


@pytest.mark.parametrize("flag", sorted(SHARED))
def test_commands_take_the_shared_options_form(flag: str) -> None:
    """Every command taking --json, --policy or --tracking-uri takes app.py's shared option (same
    name, envvar, type, default and help), so the flag means one thing across the CLI."""
    shared = _form(_option(SHARED[flag]))
    users = []
    for path in _command_paths(cli):
        command = cli
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        for param in command.params:
            if flag in param.opts:
                users.append(path)
                form = _form(param)
                if (path, flag) in OWN_HELP:
                    form["help"] = shared["help"]
                if (path, flag) in OWN_FORM:
                    continue
                assert form == shared, f"{' '.join(path)} {flag}"
    assert len(users) > 1


def test_exit_codes_documented_in_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for code in EXIT_CODES:
        assert f"| {code} |" in readme, f"exit code {code} missing from the README table"


def test_policy_with_unknown_key_exits_2_with_line(tmp_path: Path) -> None:
    policy = tmp_path / "mlflow-ci.yaml"
    policy.write_text("project: demo\nsmoke:\n  entry_point: main\n  retries: 3\n", encoding="utf-8")
    result = run_cli("policy", "check", str(policy))
    assert result.returncode == 2
    assert f"{policy}:4" in result.stderr
    assert "smoke.retries" in result.stderr
    assert "Traceback" not in result.stderr


def test_smoke_with_invalid_policy_exits_2(tmp_path: Path) -> None:
    (tmp_path / "MLproject").write_text("name: x\nentry_points:\n  main:\n    command: 'true'\n")
    (tmp_path / "mlflow-ci.yaml").write_text("project: x\nsmok: {}\n")
    result = run_cli("smoke", str(tmp_path))
    assert result.returncode == 2
    assert "did you mean 'smoke'" in result.stderr
    assert "Traceback" not in result.stderr


def test_smoke_against_unreachable_server_exits_3(tmp_path: Path) -> None:
    from mlflow_ci.mlflowio.tracking import free_port

    (tmp_path / "MLproject").write_text("name: x\nentry_points:\n  main:\n    command: 'true'\n")
    (tmp_path / "mlflow-ci.yaml").write_text("project: x\nsmoke: {env_manager: local}\n")
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli("smoke", str(tmp_path), "--tracking-uri", url)
    assert result.returncode == 3
    assert f"{url} did not answer" in result.stderr
    assert "Traceback" not in result.stderr


def test_non_project_folder_exits_2(tmp_path: Path) -> None:
    result = run_cli("smoke", str(tmp_path))
    assert result.returncode == 2
    assert "no MLproject file" in result.stderr


def test_policy_show_reports_sources(tmp_path: Path) -> None:
    policy = tmp_path / "mlflow-ci.yaml"
    policy.write_text("project: demo\nsmoke:\n  timeout: 30\n", encoding="utf-8")
    result = run_cli("policy", "show", str(policy), env={"MLFLOW_CI__SMOKE__ENV_MANAGER": "uv"})
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert lines["smoke.timeout"].endswith(f"[{policy}:3]")
    assert lines["smoke.env_manager"].endswith("[env MLFLOW_CI__SMOKE__ENV_MANAGER]")
    assert lines["smoke.entry_point"].endswith("[default]")
