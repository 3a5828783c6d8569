"""Smoke's preflight: an interpreter that python_env.yaml asks for and the env manager cannot get
is exit 3 with one sentence (version, manager, how to get it), before any server or run starts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import EXAMPLE, require, run_cli
from mlflow_ci.mlflowio.envmanagers import _reason

MISSING = "3.99.0"  # no pyenv definition, no uv build: refused offline and online alike


def project_asking_for(tmp_path: Path, version: str) -> Path:
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("reports", "mlruns"))
    env_file = project / "python_env.yaml"
    env_file.write_text(f'python: "{version}"\n' + "dependencies: [mlflow]\n", encoding="utf-8")
    return project


@pytest.mark.parametrize("manager", ["virtualenv", "uv"])
def test_a_python_that_cannot_be_had_is_exit_3_before_anything_starts(tmp_path: Path, manager: str) -> None:
    require(
        shutil.which("pyenv" if manager == "virtualenv" else "uv") is not None, f"{manager} needs its tool"
    )
    project = project_asking_for(tmp_path, MISSING)
    done = run_cli("smoke", str(project), "--env-manager", manager, env={"UV_PYTHON_DOWNLOADS": "never"})
    assert done.returncode == 3
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [errors[0]], "one error sentence"
    assert errors[0].startswith(
        f"error: python_env.yaml asks for Python {MISSING}, which the {manager} env manager cannot get here: "
    )
    assert f"install {MISSING}" in errors[0], "says how to get it"
    assert "tracking server:" not in done.stderr, "nothing started before the preflight"
    assert "Traceback" not in done.stderr


def test_the_local_manager_does_not_read_python_env(tmp_path: Path) -> None:
    from mlflow_ci.mlflowio.envmanagers import get

    get("local").ensure_python(project_asking_for(tmp_path, MISSING), {})


def test_an_unreadable_python_env_is_a_config_error(tmp_path: Path) -> None:
    from mlflow_ci.core.errors import ConfigError
    from mlflow_ci.mlflowio.envmanagers import get

    project = project_asking_for(tmp_path, MISSING)
    (project / "python_env.yaml").write_text("python: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"python_env.yaml: cannot be read as YAML"):
        get("uv").ensure_python(project, {})


def test_the_reason_is_the_tools_first_error_line() -> None:
    pyenv_offline = (
        "Downloading Python-3.4.10.tar.xz...\n-> https://www.python.org/ftp/python/3.4.10/Python-3.4.10.tar.xz\n"
        "error: failed to download Python-3.4.10.tar.xz\n\nBUILD FAILED (Debian 12 using python-build)\n"
        "curl: (6) Could not resolve host: www.python.org\n"
    )
    assert _reason(pyenv_offline) == "error: failed to download Python-3.4.10.tar.xz"
    assert _reason("first\nlast\n") == "last"
