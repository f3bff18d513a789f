"""The budget lock: workers take it to decide whether one more trial may start.

A study of N trials must end with N finished trials whatever the number of workers. A worker
therefore holds this lock from the moment it counts the trials until its new trial exists in
the storage, so two workers never both take the last slot. On PostgreSQL it is a session-level
advisory lock (released by the server if the worker dies); on SQLite, whose workers share one
machine, a lock on a file next to the database.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
from pathlib import Path
from types import TracebackType

import sqlalchemy
from sqlalchemy.engine import make_url


class BudgetLock:
    """An exclusive lock per study, across processes and machines; ``release`` is idempotent."""

    def __init__(self, storage_url: str, study_name: str, engine_kwargs: dict[str, object]):
        self._held = False
        self._guard = threading.Lock()
        parsed = make_url(storage_url)
        self._key = int.from_bytes(
            hashlib.sha256(f"hpsearch:{study_name}".encode()).digest()[:8], "big", signed=True
        )
        self._file: Path | None = None
        self._engine: sqlalchemy.Engine | None = None
        self._connection: sqlalchemy.Connection | None = None
        self._handle: object = None
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database or ""
            self._file = Path(f"{database}.{study_name}.lock") if database not in (
                "", ":memory:") else None
        else:
            # A pooled connection, checked before use: taking the lock costs one round trip.
            self._engine = sqlalchemy.create_engine(
                parsed, pool_size=1, max_overflow=0, **engine_kwargs  # type: ignore[arg-type]
            )

    def acquire(self) -> None:
        if self._file is not None:
            self._handle = self._file.open("a")
            fcntl.flock(self._handle, fcntl.LOCK_EX)  # type: ignore[arg-type]
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
                self._handle.close()  # type: ignore[attr-defined]
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

    def __enter__(self) -> BudgetLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()

    def dispose(self) -> None:
        self.release()
        if self._engine is not None:
            self._engine.dispose()
