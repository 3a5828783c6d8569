"""Stopping processes (mlflow_ci.core.proc): TERM, a grace period, KILL, and nothing left behind,
on real process trees."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from mlflow_ci.core import proc
from mlflow_ci.core.poll import poll

TWO_SLEEPERS = "sleep 60 & sleep 60 & wait"
DEAF = "trap '' TERM; " + TWO_SLEEPERS  # bash and both sleeps ignore SIGTERM


def running(pid: int) -> bool:
    """``pid`` exists and is not a zombie, read straight from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def tree_of(child: subprocess.Popen[str], size: int) -> list[int]:
    """The child and its descendants, once it has started ``size - 1`` of them."""
    found = poll(
        lambda: proc.descendants(child.pid), timeout=30, interval=0.01, ready=lambda d: len(d) >= size - 1
    )
    assert found.ready, "the process tree did not start"
    return [child.pid, *found.value]


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    children: list[subprocess.Popen[str]] = []
    yield children
    for child in children:  # whatever a failed test left
        with_group = os.getpgid(child.pid) == child.pid if running(child.pid) else False
        if with_group:
            os.killpg(child.pid, 9)
        child.kill()
        child.wait()


def spawn(
    started: list[subprocess.Popen[str]], script: str, *, session: bool = True
) -> subprocess.Popen[str]:
    child = subprocess.Popen(["bash", "-c", script], start_new_session=session, text=True)
    started.append(child)
    return child


def test_a_group_that_stops_on_sigterm(started: list[subprocess.Popen[str]]) -> None:
    child = spawn(started, TWO_SLEEPERS)
    tree = tree_of(child, 3)
    proc.kill_group(child, grace=30)
    assert child.returncode == -15  # reaped, by SIGTERM
    assert not [pid for pid in tree if running(pid)]


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace(started: list[subprocess.Popen[str]]) -> None:
    child = spawn(started, DEAF)
    tree = tree_of(child, 3)
    assert proc.stop_group(child.pid, grace=0.2, child=child)
    assert child.returncode == -9
    assert not [pid for pid in tree if running(pid)]


def test_a_group_whose_leader_exited_first_is_killed(started: list[subprocess.Popen[str]]) -> None:
    """The leader answers SIGTERM, the sleepers it left do not: they get the grace, then SIGKILL."""
    child = spawn(started, "trap 'exit 0' TERM; (trap '' TERM; exec sleep 60) & sleep 60 & wait")
    tree = tree_of(child, 3)
    proc.kill_group(child, grace=0.3)
    assert not [pid for pid in tree if running(pid)]


def test_a_group_stopped_from_its_id_alone() -> None:
    """As `server down` does: the group's leader is not a child of this process."""
    launcher = subprocess.run(
        [sys.executable, "-c", "import subprocess; print(subprocess.Popen(['bash', '-c', "
         f"{DEAF!r}], start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    pgid = int(launcher.stdout)
    found = poll(
        lambda: [pgid, *proc.descendants(pgid)], timeout=30, interval=0.01, ready=lambda t: len(t) >= 3
    )
    assert found.ready
    assert proc.stop_group(pgid, grace=0.2)
    assert not [pid for pid in found.value or [] if running(pid)]
    assert not proc.stop_group(pgid, grace=0.2)  # nothing left to stop


def test_a_tree_outside_its_own_group(started: list[subprocess.Popen[str]]) -> None:
    child = spawn(started, DEAF, session=False)
    tree = tree_of(child, 3)
    proc.kill_tree(child, grace=0.2)
    assert child.returncode == -9
    assert not [pid for pid in tree if running(pid)]
    assert os.getpgid(0) == os.getpgrp()  # this process was not signalled


def test_terminate_says_whether_sigterm_was_enough() -> None:
    sent: list[int] = []
    assert proc.terminate(sent.append, lambda: True, grace=1)
    assert sent == [15]
    sent.clear()
    assert not proc.terminate(sent.append, lambda: sent == [15, 9], grace=0)
    assert sent == [15, 9]
