"""Where studies live: resolving, checking and opening an Optuna RDB storage.

The default is a SQLite file in the working directory (``HPSEARCH_STORAGE`` overrides it); a
PostgreSQL URL (``postgresql+psycopg://user@host/db``) serves workers on several machines. A
password never appears in what we print: use :func:`redact` on any URL shown to a user.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import warnings
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from search.errors import UserError

DEFAULT_STORAGE = "sqlite:///hpsearch.db"
logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
SCHEMA_LOCK_KEY = 0x6870736561726368  # "hpsearch"


def resolve_url(given: str | None) -> str:
    """The storage URL to use: the command line's, else ``HPSEARCH_STORAGE``, else the default."""
    return given or os.environ.get("HPSEARCH_STORAGE") or DEFAULT_STORAGE


def database_error(exc: BaseException) -> str:
    """The driver's own first line for a database error, without SQLAlchemy's wrapping."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def redact(url: str) -> str:
    """The URL as it may be shown: the password, if any, replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<malformed URL>"


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(
            f"malformed storage URL {redact(url)!r}: expected e.g. sqlite:///hpsearch.db or "
            "postgresql+psycopg://user@host:5432/db"
        ) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise UserError(
            f"unsupported storage {parsed.get_backend_name()!r} in {redact(url)!r}: use sqlite "
            "or postgresql"
        )
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg2":
        raise UserError(
            f"storage {redact(url)!r}: use the psycopg 3 driver, postgresql+psycopg://..."
        )
    return parsed


def engine_kwargs(url: str) -> dict[str, object]:
    """The SQLAlchemy engine options hpsearch uses for ``url``."""
    return _engine_kwargs(_parse(url))


def _engine_kwargs(parsed: URL) -> dict[str, object]:
    if parsed.get_backend_name() == "sqlite":
        # Several workers on one machine wait for the write lock instead of failing at once.
        return {"connect_args": {"timeout": 60}}
    return {
        "pool_pre_ping": True,  # a restarted server's dead connections are replaced, not used
        "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S},
    }


def _sqlite_path(parsed: URL) -> Path | None:
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database)


@contextlib.contextmanager
def _schema_lock(parsed: URL, kwargs: dict[str, object], *, needed: bool) -> Iterator[None]:
    """Workers that start together on an empty database would all create Optuna's tables at
    once and collide; the first creates them while the others wait.

    Taken by every opening that may create: a worker that finds the tables already there may
    still come while another is writing their version rows, and would write them twice.
    """
    if not needed:
        yield
        return
    path = _sqlite_path(parsed)
    if path is not None:
        with open(f"{path}.schema.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        return
    if parsed.get_backend_name() != "postgresql":
        yield
        return
    engine = sqlalchemy.create_engine(parsed, poolclass=NullPool, **kwargs)  # type: ignore[arg-type]
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({SCHEMA_LOCK_KEY})")
            try:
                yield
            finally:
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({SCHEMA_LOCK_KEY})")
    finally:
        engine.dispose()


class _HeartbeatTolerantStorage(optuna.storages.RDBStorage):
    """An RDB storage whose heartbeat survives a database hiccup.

    Optuna beats from a thread that dies, with a traceback, on the first failed write; the
    trial would then look dead to other workers while it still trains. Here a failed beat is
    logged in one line and tried again at the next interval.
    """

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            logger.warning("heartbeat of trial %d not recorded: %s", trial_id,
                           database_error(exc))


def _use_wal(path: Path) -> None:
    """Write-ahead logging lets readers and one writer work at once: several workers on one
    machine then wait less for each other. The setting is stored in the database file."""
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def open_storage(
    url: str, *, create: bool, heartbeat: tuple[int, int, int] | None = None
) -> optuna.storages.RDBStorage:
    """Open the storage at ``url`` after checking that it can be reached.

    With ``create=False`` (reading commands) a storage that does not exist yet is an error
    rather than being created empty. ``heartbeat`` is (interval, grace period, retries): a
    running trial whose worker stops beating for the grace period is failed by the next worker
    that looks, and run again with the same parameters up to ``retries`` times.

    Raises:
        UserError: the URL is malformed, names an unknown driver, or the database cannot be
            reached or holds no Optuna studies; the message never shows a password.
    """
    parsed = _parse(url)
    shown = redact(url)
    path = _sqlite_path(parsed)
    if path is not None:
        if not create and not path.exists():
            raise UserError(f"no storage at {shown!r}: the file {path} does not exist")
        if create and not path.parent.exists():
            raise UserError(f"storage {shown!r}: the folder {path.parent} does not exist")
    kwargs = _engine_kwargs(parsed)
    try:
        engine = sqlalchemy.create_engine(parsed, **kwargs)  # type: ignore[arg-type]
        with engine.connect() as connection:
            has_tables = sqlalchemy.inspect(connection).has_table("studies")
        engine.dispose()
    except NoSuchModuleError:
        raise UserError(f"storage {shown!r}: no database driver for this URL") from None
    except ModuleNotFoundError as exc:
        raise UserError(f"storage {shown!r}: its driver is not installed ({exc.name})") from None
    except SQLAlchemyError as exc:
        raise UserError(f"cannot reach storage {shown!r}: {database_error(exc)}") from None
    if not create and not has_tables:
        raise UserError(f"storage {shown!r} holds no studies")
    if parsed.get_backend_name() == "sqlite" and path is not None:
        _use_wal(path)
    options: dict[str, Any] = {}
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat is not None:
                interval, grace, retries = heartbeat
                options = dict(
                    heartbeat_interval=interval, grace_period=grace,
                    heartbeat_stale_trial_callback=(
                        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)
                    ),
                )
            with _schema_lock(parsed, kwargs, needed=create):
                return _HeartbeatTolerantStorage(url, engine_kwargs=kwargs, **options)
    except SQLAlchemyError as exc:
        raise UserError(f"cannot open storage {shown!r}: {database_error(exc)}") from None
