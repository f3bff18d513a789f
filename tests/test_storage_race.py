"""Workers that open one fresh storage at nearly the same time all get it: none trips on the
tables another is still creating."""

from __future__ import annotations

import subprocess
import sys
import time

import optuna

OPENERS = 8
STAGGER_S = 0.1  # later openers find the tables half made

OPEN_AT = """
import sys, time
from search.storage.opening import open_storage
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
open_storage(sys.argv[1], create=True, heartbeat=(5, 20, 1))
"""


def test_workers_opening_a_fresh_storage_at_once_all_succeed(storage_url: str) -> None:
    start = time.time() + 6.0  # after every process has imported Optuna
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT, storage_url, str(start + i * STAGGER_S)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(OPENERS)
    ]
    failures = [
        err for err in (p.communicate(timeout=120)[1] for p in openers) if "Error" in err
    ]
    assert [p.returncode for p in openers] == [0] * OPENERS, failures
    assert optuna.storages.RDBStorage(storage_url).get_all_studies() == []


def test_a_storage_lock_excludes_another_holder_of_the_same_lock(storage_url: str) -> None:
    """The one lock of ``search.storage.locks`` (schema and budget alike): a second holder waits
    until the first releases; another study's budget lock does not. The budget lock takes its
    connection from the worker's storage engine (one engine per worker): two workers here."""
    import threading

    from search.storage.locks import budget_lock, schema_lock
    from search.storage.opening import open_storage

    one, two = (open_storage(storage_url, create=True) for _ in range(2))
    first = budget_lock(one.address, "a", one.engine)
    second = budget_lock(two.address, "a", two.engine)
    other = budget_lock(two.address, "b", two.engine)
    taken = threading.Event()

    def take() -> None:
        second.acquire()
        taken.set()

    try:
        first.acquire()
        waiter = threading.Thread(target=take)
        waiter.start()
        assert not taken.wait(1.0)  # held by the first
        with other:  # another study's budget is free
            pass
        first.release()
        assert taken.wait(10.0)
        waiter.join()
        second.release()
        with schema_lock(one.address) as schema:
            schema.release()  # releasing twice is fine
    finally:
        for lock in (first, second, other):
            lock.release()
        for storage in (one, two):
            storage.engine.dispose()
