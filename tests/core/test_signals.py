"""core.signals: SIGTERM/SIGHUP become Stopped in the main thread, even when the kernel hands the
signal to another thread while the main thread sits in a blocking call."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading, time
    from mlflow_ci.core.errors import Stopped
    from mlflow_ci.core.signals import stop_on_signals

    def elsewhere():
        time.sleep(0.3)
        # As the kernel may do: the signal is delivered to this thread, not the main one.
        signal.pthread_kill(threading.get_ident(), signal.{sig})

    try:
        with stop_on_signals():
            threading.Thread(target=elsewhere, daemon=True).start()
            read_end, _ = os.pipe()
            os.read(read_end, 1)  # blocks for ever unless interrupted
    except Stopped as exc:
        print(exc.name, flush=True)
        sys.exit(exc.exit_code)
    sys.exit(0)
""")


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_signal_taken_by_another_thread_still_stops_the_blocked_main_thread(sig: str, code: int) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(sig=sig)], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (code, sig), done.stderr


def test_outside_the_block_the_handlers_are_restored() -> None:
    import signal

    from mlflow_ci.core.signals import stop_on_signals

    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
    assert signal.set_wakeup_fd(-1) == -1, "the wakeup fd is given back"
