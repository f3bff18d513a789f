"""Locks that every worker of a storage shares, whatever machine it runs on: one kind, for
creating Optuna's tables and for a study's trial budget.

On SQLite, whose workers share one machine, a lock is an exclusive ``flock`` on a file beside
the database (``<database><suffix>``); on PostgreSQL it is a session-level advisory lock (the
server releases it if its holder dies). Other backends have nothing to lock against.

- The schema lock: workers that start together on an empty database would all create
  Optuna's tables at once and collide; the first creates them while the others wait.
- The budget lock: a study of N trials must end with N finished trials whatever the number of
  workers, so a worker holds it from the moment it counts the trials until its new trial
  exists in the storage, and two workers never both take the last slot.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
from pathlib import Path
from types import TracebackType
from typing import IO

import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

SCHEMA_LOCK_KEY = 0x6870736561726368  # "hpsearch"
SCHEMA_SUFFIX = ".schema.lock"


class StorageLock:
    """An exclusive lock across processes and machines on one storage; ``release`` is
    idempotent. ``pooled`` keeps one PostgreSQL connection for the lock's life (taken often:
    one round trip each time); otherwise a connection per acquisition, closed on release."""

    def __init__(self, storage_url: str, *, suffix: str, key: int,
                 engine_kwargs: dict[str, object], pooled: bool) -> None:
        self._held = False
        self._guard = threading.Lock()
        self._key = key
        self._file: Path | None = None
        self._handle: IO[str] | None = None
        self._engine: sqlalchemy.Engine | None = None
        self._connection: sqlalchemy.Connection | None = None
        parsed = make_url(storage_url)
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database or ""
            if database not in ("", ":memory:"):
                self._file = Path(f"{database}{suffix}")
        elif parsed.get_backend_name() == "postgresql":
            pool: dict[str, object] = ({"pool_size": 1, "max_overflow": 0} if pooled
                                       else {"poolclass": NullPool})
            self._engine = sqlalchemy.create_engine(
                parsed, **pool, **engine_kwargs)  # type: ignore[arg-type]

    def acquire(self) -> None:
        if self._file is not None:
            self._handle = self._file.open("a")
            fcntl.flock(self._handle, fcntl.LOCK_EX)
        elif self._engine is not None:
            self._connection = self._engine.connect()
            self._connection.exec_driver_sql(f"SELECT pg_advisory_lock({self._key})")
        self._held = True

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

    def dispose(self) -> None:
        self.release()
        if self._engine is not None:
            self._engine.dispose()


def budget_lock(storage_url: str, study_name: str,
                engine_kwargs: dict[str, object]) -> StorageLock:
    """The lock on ``study_name``'s trial budget."""
    key = int.from_bytes(hashlib.sha256(f"hpsearch:{study_name}".encode()).digest()[:8], "big",
                         signed=True)
    return StorageLock(storage_url, suffix=f".{study_name}.lock", key=key,
                       engine_kwargs=engine_kwargs, pooled=True)


def schema_lock(storage_url: str, engine_kwargs: dict[str, object]) -> StorageLock:
    """The lock on creating Optuna's tables; dispose of it once they exist."""
    return StorageLock(storage_url, suffix=SCHEMA_SUFFIX, key=SCHEMA_LOCK_KEY,
                       engine_kwargs=engine_kwargs, pooled=False)
