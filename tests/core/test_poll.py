"""The one readiness poll (mlflow_ci.core.poll)."""

from __future__ import annotations

import itertools

import pytest
from mlflow_ci.core.poll import poll


class Pauses(list[float]):
    """A pause that records how long it was asked to wait, and does not wait."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_ready_on_the_third_answer_with_the_last_answer_kept() -> None:
    answers = iter([None, None, "8080", "never asked"])
    pauses = Pauses()
    polled = poll(lambda: next(answers), timeout=60, interval=0.25, pause=pauses)
    assert polled.ready
    assert polled.value == "8080"
    assert polled.stopped == ""
    assert pauses == [0.25, 0.25]


def test_attempts_with_backoff_and_no_pause_after_the_last() -> None:
    calls = itertools.count(1)
    pauses = Pauses()
    polled = poll(lambda: next(calls) and False, attempts=3, interval=1.0, backoff=2.0, pause=pauses)
    assert not polled.ready
    assert next(calls) == 4  # three attempts
    assert pauses == [1.0, 2.0]


def test_backoff_is_capped() -> None:
    pauses = Pauses()
    poll(lambda: False, attempts=6, interval=0.01, backoff=2.0, max_interval=0.05, pause=pauses)
    assert pauses == [0.01, 0.02, 0.04, 0.05, 0.05]


def test_no_attempt_when_there_are_none_to_make() -> None:
    probed: list[int] = []
    polled = poll(lambda: probed.append(1), attempts=0, interval=1.0)
    assert (polled.ready, polled.value, probed) == (False, None, [])
    polled = poll(lambda: probed.append(1), timeout=0, interval=1.0)
    assert (polled.ready, polled.value, probed) == (False, None, [])


def test_the_time_runs_out() -> None:
    statuses: list[int] = []

    def probe() -> int:
        statuses.append(503)
        return 503

    polled = poll(probe, timeout=0.05, interval=0.01, ready=lambda status: status == 200)
    assert not polled.ready
    assert polled.value == 503
    assert polled.stopped == ""
    assert statuses  # asked at least once


def test_give_up_ends_the_wait_with_its_reason_or_its_error() -> None:
    alive = iter([True, True, False])
    pauses = Pauses()
    polled = poll(lambda: 503, timeout=60, interval=0.25, ready=lambda s: s == 200, pause=pauses,
                  give_up=lambda status: None if next(alive) else f"the server exited (HTTP {status})")  # fmt: skip
    assert not polled.ready
    assert polled.stopped == "the server exited (HTTP 503)"
    assert len(pauses) == 2

    def exited(_: object) -> None:
        raise RuntimeError("exited with code 1")

    with pytest.raises(RuntimeError, match="exited with code 1"):
        poll(lambda: False, timeout=60, interval=0.25, give_up=exited, pause=Pauses())


def test_a_poll_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="timeout or a number of attempts"):
        poll(lambda: True, interval=1.0)
