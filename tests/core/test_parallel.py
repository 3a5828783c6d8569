"""The thread pool behind the backup's and restore's artifact copies (mlflow_ci.core.parallel)."""

from __future__ import annotations

import threading
import time

import pytest
from mlflow_ci.core import parallel
from mlflow_ci.core.errors import ConfigError


def test_results_come_back_in_input_order_from_several_threads() -> None:
    seen_threads: set[str] = set()

    def square(batch):
        seen_threads.add(threading.current_thread().name)
        time.sleep(0.001 * (len(batch) % 3))  # batches finish out of order
        return [x * x for x in batch]

    items = list(range(1000))
    assert parallel.map_batches(square, items, threads=4, batch=7) == [x * x for x in items]
    assert len(seen_threads) > 1


def test_few_items_or_one_thread_run_in_the_callers_thread() -> None:
    caller = threading.current_thread().name
    names: list[str] = []

    def record(batch):
        names.append(threading.current_thread().name)
        return list(batch)

    assert parallel.map_batches(record, list(range(10)), threads=4, batch=64) == list(range(10))
    assert parallel.map_batches(record, list(range(500)), threads=1, batch=64) == list(range(500))
    assert set(names) == {caller}


def test_the_first_error_is_raised_and_stops_the_batches_not_started() -> None:
    started: list[int] = []

    def fail_on_the_third(batch):
        started.append(batch[0])
        if batch[0] == 20:
            raise OSError("object 20 is damaged")
        time.sleep(0.01)
        return list(batch)

    with pytest.raises(OSError, match="object 20 is damaged"):
        parallel.map_batches(fail_on_the_third, list(range(10_000)), threads=2, batch=10)
    # 1,000 batches were queued; once the error is seen, the rest never start.
    assert len(started) < 100


def test_copy_threads_default_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_CI_COPY_THREADS", raising=False)
    assert parallel.copy_threads(remote=False) == parallel.LOCAL_THREADS
    assert parallel.copy_threads(remote=True) == parallel.REMOTE_THREADS
    monkeypatch.setenv("MLFLOW_CI_COPY_THREADS", "1")
    assert parallel.copy_threads(remote=True) == 1
    for bad in ("0", "-2", "many"):
        monkeypatch.setenv("MLFLOW_CI_COPY_THREADS", bad)
        with pytest.raises(ConfigError, match="MLFLOW_CI_COPY_THREADS"):
            parallel.copy_threads(remote=False)
