"""All subprocesses go through here: the command is shown, the environment is explicit, the exit
code is checked, and a failure reports command, code and the tail of the output."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_ci.core.errors import CommandFailed, InfraError
from mlflow_ci.core.poll import poll

TAIL_LINES = 40


@dataclass(frozen=True)
class Completed:
    args: tuple[str, ...]
    returncode: int
    output: str
    duration_s: float

    @property
    def tail(self) -> str:
        return tail(self.output)


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every child gets: ours, with telemetry off, plus ``extra``."""
    env = dict(os.environ)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DO_NOT_TRACK", "1")
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float | None = None,
    check: bool = True,
    stream: bool = False,
    what: str | None = None,
) -> Completed:
    """Run ``args``; capture stdout+stderr together.

    ``stream`` echoes each line to stderr as it arrives (progress for long steps) while still
    capturing it.  On timeout the whole process group is killed, so no grandchild survives.
    """
    argv = tuple(str(a) for a in args)
    label = what or shlex.join(argv)
    if stream:
        print(f"$ {shlex.join(argv)}", file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        child = subprocess.Popen(
            argv,
            env=dict(env) if env is not None else base_env(),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise InfraError(
            f"Could not start {label}: the program {argv[0]!r} was not found on PATH.",
            hint="Install it, or run through `nox`, which installs what mlflow-ci needs.",
        ) from exc
    lines: list[str] = []
    recent: deque[str] = deque(maxlen=TAIL_LINES)

    def pump() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line)
            recent.append(line)
            if stream:
                sys.stderr.write("    " + line)
                sys.stderr.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        returncode = child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(child)
        reader.join(5)
        output = "".join(lines)
        raise CommandFailed(
            f"{label} did not finish within {timeout:.0f}s and was stopped. Last output:\n{tail(output)}",
            returncode=-1,
            output_tail=tail(output),
            hint="Raise the timeout in mlflow-ci.yaml if the step is legitimately slow.",
        ) from None
    except BaseException:
        kill_group(child)
        raise
    reader.join()
    output = "".join(lines)
    done = Completed(argv, returncode, output, time.monotonic() - start)
    if check and returncode != 0:
        raise CommandFailed(
            f"{label} exited with code {returncode}. Last output:\n{done.tail}",
            returncode=returncode,
            output_tail=done.tail,
        )
    return done


def kill_group(child: subprocess.Popen[str], grace: float = 5.0) -> None:
    """Terminate ``child`` and everything it started (it leads its own session)."""
    stop_group(child.pid, grace=grace, child=child)


@contextlib.contextmanager
def scoped_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (``None``: remove) environment variables of this process for the block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def captured_stdio(*, stream: bool = True, prefix: str = "    ") -> Iterator[list[str]]:
    """For children started by a library that takes no pipes (MLflow's project backend): point this
    process's stdin at /dev/null and its stdout and stderr at one pipe for the block.

    Children started inside inherit the pipe; every line is kept in the yielded list and, with
    ``stream``, echoed to the real stderr (stdout stays clean for ``--json``).  Lines written after
    the block by a grandchild that outlived it are still collected, never waited for.
    """
    for stream_obj in (sys.stdout, sys.stderr):
        stream_obj.flush()
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    read_end, write_end = os.pipe()
    lines: list[str] = []

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for raw in pipe:
                line = raw.decode("utf-8", errors="replace")
                lines.append(line)
                if stream:
                    os.write(saved[2], (prefix + line).encode("utf-8", errors="replace"))

    reader = threading.Thread(target=pump, name="captured-stdio", daemon=True)
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(devnull, 0)
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
    finally:
        os.close(devnull)
        os.close(write_end)
    reader.start()
    try:
        yield lines
    finally:
        for stream_obj in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream_obj.flush()
        for fd, copy in zip((0, 1, 2), saved, strict=True):
            os.dup2(copy, fd)
        # EOF once every child has exited; a grandchild left running must not hang us.
        reader.join(timeout=5)
        for copy in saved[:2]:
            os.close(copy)
        if not reader.is_alive():
            os.close(saved[2])


# --------------------------------------------------------------------------------------------
# Stopping processes: SIGTERM, a grace period, SIGKILL for what is left.


# Seconds for processes sent SIGKILL to be gone (one in uninterruptible sleep may take longer).
KILLED_WAIT_S = 5.0


def _within(seconds: float, done: Callable[[], bool]) -> bool:
    """Whether ``done()`` within ``seconds``, asked at once, then ever less often (at most every 50 ms)."""
    return poll(done, timeout=seconds, interval=0.001, backoff=2.0, max_interval=0.05).ready


def terminate(send: Callable[[int], None], gone: Callable[[], bool], *, grace: float) -> bool:
    """The one TERM-then-KILL: ``send(SIGTERM)``, then up to ``grace`` seconds until ``gone()``,
    then ``send(SIGKILL)`` unless it is, and until ``gone()`` again (a killed process takes a
    moment to exit; at most :data:`KILLED_WAIT_S`). True when SIGTERM was enough."""
    send(signal.SIGTERM)
    if _within(grace, gone):
        return True
    send(signal.SIGKILL)
    _within(KILLED_WAIT_S, gone)
    return False


def _stat(pid: str | int) -> tuple[str, int, int] | None:
    """(state, ppid, process group) of a live process from Linux ``/proc``, else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: the state follows the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 3:
        return None
    return fields[0].decode(), int(fields[1]), int(fields[2])


def _alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie (an exited process its parent has not reaped yet)."""
    if os.path.isdir("/proc"):
        stat = _stat(pid)
        return stat is not None and stat[0] != "Z"
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _group_alive(pgid: int) -> bool:
    """A process of group ``pgid`` is running (zombies waiting for a parent do not count)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if entry.isdigit() and (stat := _stat(entry)) is not None and stat[2] == pgid and stat[0] != "Z":
            return True
    return False


def stop_group(pgid: int, *, grace: float, child: subprocess.Popen[Any] | None = None) -> bool:
    """Stop the process group ``pgid`` (of a process started in its own session): SIGTERM, up to
    ``grace`` seconds for every process in it to exit, SIGKILL for what is left; its leader is
    reaped when it is a child of this process (``child``, or a pid it started). False when there
    was no such group.

    Works from another process too (``mlflow-ci server down``, ``undeploy``): only the group id
    is needed.
    """

    def reaped() -> bool:
        if child is not None:
            return child.poll() is not None
        try:
            return os.waitpid(pgid, os.WNOHANG)[0] != 0
        except ChildProcessError:  # not ours, or reaped already
            return True

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def gone() -> bool:
        reaped()
        return not _group_alive(pgid)

    if child is not None and child.poll() is not None:
        send(signal.SIGKILL)  # the leader is gone, but its group may not be
        return True
    if not _group_alive(pgid):
        reaped()
        return False
    terminate(send, gone, grace=grace)
    _within(max(grace, 5.0), reaped)  # reaped, also with no grace
    return True


def _children_map() -> dict[int, list[int]]:
    """ppid → pids of every live process (Linux ``/proc``; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return children
    for entry in entries:
        if entry.isdigit() and (stat := _stat(entry)) is not None:
            children.setdefault(stat[1], []).append(int(entry))
    return children


def descendants(*pids: int) -> list[int]:
    """Every live process below ``pids``."""
    children = _children_map()
    found: list[int] = []
    todo = list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def kill_tree(child: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """Terminate ``child`` and everything below it, for a child that does not lead its own group."""
    # Collected before the first signal: once the child is gone its orphans are re-parented.
    tree = [child.pid, *descendants(child.pid)]

    def signal_all(sig: int) -> None:
        tree.extend(p for p in descendants(*tree) if p not in tree)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def gone() -> bool:
        child.poll()
        return not any(_alive(pid) for pid in tree)

    if child.poll() is None:
        terminate(signal_all, gone, grace=grace)
    elif not gone():
        signal_all(signal.SIGKILL)  # the child is gone, but what it started may not be
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=grace)
