"""A worker's memory stays bounded over a long study: once it has grown by
``[workers] max_memory_growth`` MB since its first trial it starts afresh
(search/workers/fresh_start.py), and the study goes on to exactly its budget. Measured on a real
``hpsearch worker`` process by its pid, the most it held while each trial ran."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import HPSEARCH, finished

import pytest

from search.workers.fresh_start import resident_mb


# benchmarks/memory.py's study, on less data: new layer shapes every trial, the fused update
# on (what a trial leaves behind does not depend on how much data it trained on).
def this_study(trials: int, limit: int) -> dict[str, Any]:
    """This file's study, models of very different sizes: overrides of the stub study."""
    return dict(
        study={"name": "memory", "n_trials": trials, "seed": 0, "warm_start": False},
        sampler={"type": "random", "n_startup_trials": None},
        data={"validation_fraction": None, "train_subset": 1000, "validation_subset": 200},
        training={"max_epochs": 1, "early_stopping_patience": None, "fused_optimizer": None},
        artifacts=None,
        space={"n_layers": {"low": 1, "high": 4}, "units": {"low": 32, "high": 512, "log": True},
               "activation": None, "optimizer": None, "batch_size": None},
        workers={"max_memory_growth": limit},
    )
TRIALS, LIMIT_MB = 16, 60
# Without the fresh starts (max_memory_growth = 0) a worker grew by 213 and 273 MB from its third
# trial to its twentieth here (13 to 16 MB a trial: 169 MB or more by its sixteenth); with them
# by at most the limit plus one trial and a fresh start's own spread (its first trial sets its
# baseline): 34 and 72 MB measured in 20 trials (fresh starts after trials 2, 8 and 13 in the
# second run). The bound lies between.
BOUND_MB = LIMIT_MB + 90
FROM = 3  # trials finished when the measurement starts: the first trials set up TensorFlow


def _finished(url: str) -> int:
    return finished(url, "memory")


@pytest.mark.long(120)
def test_a_worker_s_memory_stays_bounded_over_a_long_study(
        stub_study: Callable[..., Path], tmp_path: Path, limit: int = LIMIT_MB) -> None:
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    study_file = stub_study(**this_study(TRIALS, limit), name="memory.toml")
    worker = subprocess.Popen([HPSEARCH, "worker", str(study_file), "--threads", "1"],
                              env={**os.environ, "HPSEARCH_STORAGE": url},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss: dict[int, float] = {}
    deadline = time.monotonic() + 600
    done, counted = 0, 0.0
    try:
        while worker.poll() is None:
            assert time.monotonic() < deadline, "the study did not end in 10 minutes"
            if time.monotonic() - counted > 0.5:  # a read of the study costs more than of RSS
                done, counted = _finished(url), time.monotonic()
            if done >= FROM:
                now = resident_mb(worker.pid)
                if now is None:  # it just ended
                    break
                # The most while that many trials had ended: a sample taken as the worker
                # starts afresh (before it imports TensorFlow) is not its size.
                rss[done] = max(rss.get(done, 0.0), now)
            time.sleep(0.1)
        stdout, stderr = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 0, stderr
    measured = [rss[n] for n in sorted(rss)]
    growth = max(measured) - measured[0]
    print(f"RSS while trial {FROM + 1} ran: {measured[0]:.0f} MB, most after it: "
          f"{max(measured):.0f} MB")
    assert growth < BOUND_MB, (growth, rss)
    assert _finished(url) == TRIALS
    assert "starts afresh to give back memory after trial " in stderr
    assert f"worker done: ran {TRIALS} trials" in stderr


def test_a_fresh_start_keeps_the_invocation_s_timeout_and_count(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from search.workers import fresh_start

    for name in (fresh_start.DEADLINE_ENV, fresh_start.RAN_BEFORE_ENV):
        monkeypatch.setenv(name, "")  # so that what the test sets is undone after it
        monkeypatch.delenv(name)
    assert fresh_start.deadline_before() is None and fresh_start.ran_before() == 0
    fresh_start.hand_on_deadline(None)  # no --timeout: nothing to hand on
    assert fresh_start.deadline_before() is None
    deadline = time.monotonic() + 12.5
    fresh_start.hand_on_deadline(deadline)
    assert fresh_start.deadline_before() == deadline
    monkeypatch.setenv(fresh_start.RAN_BEFORE_ENV, "7")
    assert fresh_start.ran_before() == 7


def test_the_memory_watch_measures_from_the_end_of_the_first_trial(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from search.workers import fresh_start

    readings = iter([900.0, 950.0, 1001.0])
    monkeypatch.setattr(fresh_start, "resident_mb", lambda: next(readings))
    watch = fresh_start.MemoryWatch(100)
    assert [watch.after_trial() for _ in range(3)] == [False, False, True]
    assert watch.grown == 101.0
    assert not fresh_start.MemoryWatch(0).after_trial()  # 0: never
