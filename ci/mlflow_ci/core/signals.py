"""SIGTERM and SIGHUP stop a command the way Ctrl-C does.

A cancelled CI job, ``timeout`` or a container stop sends SIGTERM to mlflow-ci alone; the servers
and entry points it started run in sessions of their own and would be orphaned by Python's
default (die at once, no cleanup). Inside :func:`stop_on_signals` either signal raises
:class:`~mlflow_ci.core.errors.Stopped` in the main thread instead, and the code that started each
process stops it while the exception unwinds, exactly as for KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from mlflow_ci.core.errors import Stopped

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP raise :class:`Stopped` while the block runs (main thread only; elsewhere a
    no-op). The first signal wins: further ones are ignored so that the cleanup they would
    interrupt can finish; a process that must die at once gets SIGKILL."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        for other in SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        raise Stopped(signum, signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
