"""SIGTERM and SIGHUP stop a command the way Ctrl-C does.

A cancelled CI job, ``timeout`` or a container stop sends SIGTERM to mlflow-ci alone; the servers
and entry points it started run in sessions of their own and would be orphaned by Python's
default (die at once, no cleanup). Inside :func:`stop_on_signals` either signal raises
:class:`~mlflow_ci.core.errors.Stopped` in the main thread instead, and the code that started each
process stops it while the exception unwinds, exactly as for KeyboardInterrupt.

One trap: the kernel may deliver a process-directed signal to any thread. Python runs the handler
in the main thread, but only once that thread runs Python code again; when the signal landed on
another thread (MLflow's, a reader's) while the main thread sits in a blocking call (waiting for
a child, a socket), nothing interrupts that call, and the command would go on until it returns.
So a watcher thread reads the signal numbers from the wakeup fd and, if the main thread has not
handled the signal shortly after, sends it to the main thread itself, which interrupts the call.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from mlflow_ci.core.errors import Stopped

SIGNALS = (signal.SIGTERM, signal.SIGHUP)
# How long the main thread may take to run the handler by itself before the watcher nudges it.
_NUDGE_AFTER_S = 0.1


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP raise :class:`Stopped` in the main thread while the block runs (elsewhere a
    no-op). The first signal wins: further ones are ignored so that the cleanup they would
    interrupt can finish; a process that must die at once gets SIGKILL."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        if handled.is_set():
            return
        handled.set()
        for other in SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        raise Stopped(signum, signal.Signals(signum).name)

    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = {sig: signal.signal(sig, stop) for sig in SIGNALS}
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    done = threading.Event()
    main = threading.main_thread().ident
    watcher = threading.Thread(target=_nudge, args=(read_end, handled, done, main), name="mlflow-ci-signals",
                               daemon=True)  # fmt: skip
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        done.set()
        os.close(write_end)  # wakes the watcher, which closes the read end
        watcher.join(timeout=1)


def _nudge(read_end: int, handled: threading.Event, done: threading.Event, main: int | None) -> None:
    """Watch the wakeup fd; re-send a TERM or HUP to the main thread that has not handled it."""
    try:
        while not done.is_set():
            ready, _, _ = select.select([read_end], [], [])
            data = os.read(read_end, 64) if ready else b""
            if not data:
                return  # the write end was closed: the block ended
            wanted = [n for n in data if n in SIGNALS]
            if not wanted or handled.wait(_NUDGE_AFTER_S) or done.is_set() or main is None:
                continue
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pthread_kill(main, wanted[0])
    finally:
        os.close(read_end)
