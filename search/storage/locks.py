"""Locks that every worker of a storage shares, whatever machine it runs on: one kind, for
creating Optuna's tables and for a study's trial budget.

On SQLite, whose workers share one machine, a lock is an exclusive ``flock`` on a file beside
the database (``<database><suffix>``); on PostgreSQL it is a session-level advisory lock (the
server releases it if its holder dies).

- The schema lock: workers that start together on an empty database would all create
  Optuna's tables at once and collide; the first creates them while the others wait.
- The budget lock: a study of N trials must end with N finished trials whatever the number of
  workers, so a worker holds it from the moment it counts the trials until its new trial
  exists in the storage, and two workers never both take the last slot.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

import sqlalchemy

from search.storage.address import StorageAddress

SCHEMA_LOCK_KEY = 0x6870736561726368  # "hpsearch"
SCHEMA_SUFFIX = ".schema.lock"


def budget_suffix(study_name: str) -> str:
    """The end of the budget lock's file name beside a SQLite database."""
    return f".{study_name}.lock"


def wait_for(taken: Callable[[], bool]) -> None:
    """Try ``taken`` until it says the lock is taken, after pauses that grow from 5 ms to a
    second, jittered so that waiting workers do not try in step. A hundred waiting workers then
    ask a hundred times a second, not a thousand, which kept the database or ``hpsearch proxy``
    too busy to serve the holder: 90 workers of trials that sleep 0.3 s on one PostgreSQL
    study (``tests/sleeping_workers.py``, 2 cores) took 32.7 s and 45.5 CPU-s with pauses up to
    100 ms, 24.9 s and 28.6 CPU-s with pauses up to a second (medians of 3 alternating runs);
    200 workers through a proxy ran 63 trials a minute, against 138 (docs/benchmarks.md)."""
    pause = 0.005
    while not taken():
        time.sleep(pause * random.uniform(0.5, 1.5))
        pause = min(pause * 2, 1.0)


class StorageLock:
    """An exclusive lock across processes and machines on one storage; ``release`` is
    idempotent. On PostgreSQL it takes a connection of ``engine`` (the worker's own storage
    engine: no engine of its own) for as long as it is held, and none while it waits."""

    def __init__(self, address: StorageAddress, *, suffix: str, key: int,
                 engine: sqlalchemy.Engine | None) -> None:
        self._held = False
        self._guard = threading.Lock()
        self._key = key
        self._file: Path | None = address.beside(suffix)
        self._handle: IO[str] | None = None
        self._engine = engine if address.backend == "postgresql" else None
        self._connection: sqlalchemy.Connection | None = None

    def acquire(self) -> None:
        """Wait until the lock is this process's. On PostgreSQL it is tried, not waited for on
        the server: between tries the connection goes back to the worker's pool, so a worker
        waiting for the lock holds no connection beyond the one its pool keeps
        (``StorageAddress.engine_kwargs``), and a hundred waiting workers need a hundred
        connections, not two hundred. The tries are spaced by :func:`wait_for`."""
        wait_for(lambda: self._take(wait=True))

    def try_acquire(self) -> bool:
        """Take the lock if it is free; whether this process now holds it."""
        return self._take(wait=False)

    def _take(self, *, wait: bool) -> bool:
        if self._held:
            return True
        if self._file is not None:
            handle = self._file.open("a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
            except BaseException:
                handle.close()
                raise
            self._handle = handle
        elif self._engine is not None:
            self._connection = self._advisory_lock(self._engine)
            if self._connection is None:
                return False
        self._held = True
        return True

    def _advisory_lock(self, engine: sqlalchemy.Engine) -> sqlalchemy.Connection | None:
        """The advisory lock, tried once on a connection of ``engine`` that is kept until
        :meth:`release` if it was taken; None (the connection back to the pool) if not."""
        connection = engine.connect()
        try:
            taken = connection.exec_driver_sql(
                f"SELECT pg_try_advisory_lock({self._key})").scalar()
        except BaseException:
            # not known to be taken (a dropped connection, Ctrl-C): the connection goes,
            # not back to the worker's pool with its session in doubt
            connection.invalidate()
            connection.close()
            raise
        if taken:
            return connection
        connection.close()  # back to the pool, its transaction rolled back
        return None

    def release(self) -> None:
        with self._guard:
            if not self._held:
                return
            self._held = False
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            if self._connection is not None:
                try:
                    self._connection.exec_driver_sql(f"SELECT pg_advisory_unlock({self._key})")
                except Exception:
                    self._connection.invalidate()  # a dead session holds no lock any more
                    raise
                finally:
                    self._connection.close()
                    self._connection = None

    def __enter__(self) -> StorageLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


def budget_lock(address: StorageAddress, study_name: str,
                engine: sqlalchemy.Engine) -> StorageLock:
    """The lock on ``study_name``'s trial budget, on the worker's storage engine (or, in
    ``hpsearch proxy``, the proxy's: workers on the database and workers through a proxy of it
    share one lock)."""
    key = int.from_bytes(hashlib.sha256(f"hpsearch:{study_name}".encode()).digest()[:8], "big",
                         signed=True)
    return StorageLock(address, suffix=budget_suffix(study_name), key=key, engine=engine)


@contextlib.contextmanager
def schema_lock(address: StorageAddress) -> Iterator[StorageLock]:
    """The lock on creating Optuna's tables, held in the ``with`` block: taken before Optuna's
    storage (and its engine) exists, so on a connection of its own (one, kept while the lock is
    tried again), closed at the end."""
    engine = address.scratch_engine(one_kept=True) if address.backend == "postgresql" else None
    try:
        with StorageLock(address, suffix=SCHEMA_SUFFIX, key=SCHEMA_LOCK_KEY,
                         engine=engine) as lock:
            yield lock
    finally:
        if engine is not None:
            engine.dispose()
