"""The one readiness poll: ask until the answer is ready, the time or the attempts run out, or
the caller gives up (the process it waits for has exited).

A server's ``/health`` or ``/ping`` after its start, a tracking server that should already be up,
a container's published port, a process group that should have exited: each caller says what
to ask, how often and for how long, and words the outcome itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Polled(Generic[T]):
    ready: bool
    value: T | None  # the last answer (None: not asked even once)
    seconds: float  # from the start to the outcome
    stopped: str = ""  # why ``give_up`` ended the wait before the time ran out ("": it did not)


def poll(
    probe: Callable[[], T],
    *,
    interval: float,
    timeout: float | None = None,
    attempts: int | None = None,
    backoff: float = 1.0,
    max_interval: float | None = None,
    ready: Callable[[T], bool] = bool,
    give_up: Callable[[T], str | None] | None = None,
    pause: Callable[[float], None] = time.sleep,
) -> Polled[T]:
    """Call ``probe`` until ``ready(answer)`` (default: the answer is truthy).

    Between two attempts ``pause`` waits ``interval`` seconds, times ``backoff`` after each
    further attempt (at most ``max_interval``). No new attempt starts ``timeout`` seconds after
    the start, nor after ``attempts`` attempts (no pause after the last). After an answer that
    is not ready, ``give_up(answer)`` may end the wait early: it returns the reason (or raises
    the caller's error), ``None`` to go on.
    """
    if timeout is None and attempts is None:
        raise ValueError("poll needs a timeout or a number of attempts")
    start = time.monotonic()
    answer: T | None = None
    wait, attempt = interval, 0
    while (timeout is None or time.monotonic() - start < timeout) and (
        attempts is None or attempt < attempts
    ):
        answer = probe()
        attempt += 1
        if ready(answer):
            return Polled(True, answer, time.monotonic() - start)
        if give_up is not None and (reason := give_up(answer)):
            return Polled(False, answer, time.monotonic() - start, reason)
        if attempts is not None and attempt >= attempts:
            break  # no pause after the last attempt
        pause(wait)
        wait = wait * backoff if max_interval is None else min(wait * backoff, max_interval)
    return Polled(False, answer, time.monotonic() - start)
