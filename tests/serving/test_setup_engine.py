""".ci/setup-engine.sh: its pure functions, sourced into bash, and its side-effect-free modes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml
from conftest import ROOT, require

SCRIPT = ROOT / ".ci" / "setup-engine.sh"


def sh(snippet: str, **env: str) -> str:
    """Source the script (which then defines its functions and does nothing) and run ``snippet``."""
    proc = subprocess.run(
        ["bash", "-c", f'source "{SCRIPT}"\n{snippet}'],
        capture_output=True, text=True, timeout=30, check=True, env={**os.environ, **env},
    )  # fmt: skip
    return proc.stdout


def test_sourcing_defines_functions_and_does_nothing() -> None:
    assert sh("declare -F main python_versions >/dev/null && echo ok") == "ok\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("3.11 3.11.7", ["3.11", "3.11.7"]),
        ("3.11 3.9.18 3.11.2 3.11.7 3.12.1 3.11.7 3.110.1", ["3.11", "3.11.2", "3.11.7"]),
        ("3.11", ["3.11"]),
        ("3.12 3.11.7", ["3.12"]),
    ],
)
def test_python_versions_keeps_only_the_image_python(args: str, expected: list[str]) -> None:
    assert sh(f"python_versions {args}").split() == expected


@pytest.mark.parametrize(
    ("hard", "want", "expected"),
    [("20000", "1048576", "20000"), ("unlimited", "4096", "4096"), ("96365", "4096", "4096")],
)
def test_clamp_limit(hard: str, want: str, expected: str) -> None:
    assert sh(f"clamp_limit {hard} {want}").strip() == expected


def test_containers_conf_is_valid_toml_with_the_known_traps() -> None:
    conf = tomllib.loads(sh("render_containers_conf 20000 4096"))
    assert conf["engine"] == {"runtime": "runc", "cgroup_manager": "cgroupfs", "events_logger": "file"}
    assert conf["containers"]["default_ulimits"] == ["nofile=20000:20000", "nproc=4096:4096"]


def test_registries_conf_marks_the_loopback_registry_insecure() -> None:
    conf = tomllib.loads(sh("render_registries_conf 127.0.0.1:5001"))
    assert {(r["location"], r["insecure"]) for r in conf["registry"]} == {
        ("localhost:5001", True),
        ("127.0.0.1:5001", True),
    }


def test_registry_config_listens_on_loopback_only() -> None:
    conf = yaml.safe_load(sh("render_registry_conf 127.0.0.1:5000 /var/lib/x"))
    assert conf["http"]["addr"] == "127.0.0.1:5000"
    assert conf["storage"]["filesystem"]["rootdirectory"] == "/var/lib/x"
    assert conf["storage"]["delete"]["enabled"] is True


def test_base_recipe_changes_with_the_image_env() -> None:
    one = sh("base_recipe").strip()
    two = sh('IMAGE_ENV+=("X=1"); base_recipe').strip()
    assert len(one) == 16
    assert one != two
    assert sh("base_recipe").strip() == one


def test_booted_since(tmp_path: Path) -> None:
    recorded = tmp_path / "boot-id"
    assert sh(f'booted_since "{recorded}" abc && echo yes || echo no').strip() == "no"
    recorded.write_text("abc\n")
    assert sh(f'booted_since "{recorded}" abc && echo yes || echo no').strip() == "no"
    assert sh(f'booted_since "{recorded}" def && echo yes || echo no').strip() == "yes"


def test_write_if_changed_reports_whether_it_wrote(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.conf"
    snippet = f'echo hi | write_if_changed "{target}" && echo wrote || echo same'
    assert sh(snippet).strip() == "wrote"
    assert sh(snippet).strip() == "same"
    assert target.read_text() == "hi\n"


def test_check_mode_changes_nothing_and_fails_without_servers(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MLFLOW_CI_ENGINE_SOCKET": str(tmp_path / "none.sock"),
        "MLFLOW_CI_REGISTRY_ADDR": "127.0.0.1:9",
    }
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--check"], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert proc.returncode == 1
    assert "engine: no answer" in proc.stdout
    assert "registry: no answer" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_unknown_argument_is_a_usage_error() -> None:
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--frobnicate"], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode != 0
    assert "usage" in proc.stderr


def test_shellcheck_is_clean() -> None:
    # The lint extra's shellcheck sits beside this interpreter; else the one on PATH.
    shellcheck = shutil.which(
        "shellcheck", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    require(shellcheck is not None, "shellcheck is not installed (the lint extra brings it)")
    proc = subprocess.run(
        [str(shellcheck), str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout


@pytest.mark.engine
def test_services_it_starts_do_not_hold_the_setup_lock() -> None:
    """A daemon that inherits the lock's descriptor holds it for its whole life, and every later
    run of the script waits 15 minutes and fails; the services must start with it closed."""
    if os.geteuid() != 0 or not shutil.which("podman"):
        from conftest import require

        require(False, "setup-engine.sh needs root and podman")
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lock = Path("/run/mlflow-ci/setup.lock").resolve()
    holders = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                if os.readlink(fd) == str(lock):
                    holders.append(fd_dir.parent.name)
        except OSError:
            continue
    assert holders == [], f"processes still holding {lock}: {holders}"


def test_a_server_whose_working_folder_was_deleted_is_found_and_a_new_one_starts_in_root(
    tmp_path: Path,
) -> None:
    """A server started from a clone that was deleted later keeps that folder as its working
    directory; podman's conmon inherits it and every container start fails.  cwd_gone finds
    such a server; start_daemon starts a new one in /, whatever the caller's folder."""
    gone, kept = tmp_path / "clone", tmp_path / "kept"
    gone.mkdir()
    kept.mkdir()
    sleepers = [subprocess.Popen(["sleep", "60"], cwd=folder) for folder in (gone, kept)]
    try:
        for sleeper, name in zip(sleepers, ("gone.pid", "kept.pid"), strict=True):
            (tmp_path / name).write_text(f"{sleeper.pid}\n")
        gone.rmdir()
        found = sh(f'cwd_gone {tmp_path / "gone.pid"} && echo gone; cwd_gone {tmp_path / "kept.pid"} || echo kept; '
                   f'cwd_gone {tmp_path / "absent.pid"} || echo absent')  # fmt: skip
        assert found.split() == ["gone", "kept", "absent"]
        started = sh(
            f"cd {kept} && start_daemon {tmp_path / 'd.log'} sleep 60 && pid=$!; sleep 0.3; "
            f'readlink /proc/$pid/cwd; echo "$pid" > {tmp_path / "d.pid"}'
        )
        assert started.strip() == "/"
        daemon = int((tmp_path / "d.pid").read_text())
        assert os.getsid(daemon) == daemon  # its own session, as setsid gives it
        os.kill(daemon, 15)
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
