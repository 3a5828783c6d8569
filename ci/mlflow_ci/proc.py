"""All subprocesses go through here: the command is shown, the environment is explicit, the exit
code is checked, and a failure reports command, code and the tail of the output."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import CommandFailed, InfraError

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
    import signal

    if child.poll() is not None:
        # The leader is gone, but its group may not be.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        return
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=grace)
