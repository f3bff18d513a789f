"""Where studies live: resolving, checking and opening an Optuna RDB storage.

The default is a SQLite file in the working directory (``HPSEARCH_STORAGE`` overrides it); a
PostgreSQL URL (``postgresql+psycopg://user@host/db``) serves workers on several machines. A
password never appears in what we print: use :func:`redact` on any URL shown to a user.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import warnings
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from search.disk_space import check_free_space
from search.errors import UserError, database_error
from search.locks import SCHEMA_SUFFIX, schema_lock
from search.resumption import RetryStaleTrials
from search.retrying import lost_connection, retrying

DEFAULT_STORAGE = "sqlite:///hpsearch.db"
logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
# Tables that only Optuna's storage makes (any one of them: its schema is being made).
OPTUNA_FIRST_TABLES = {"studies", "version_info", "alembic_version"}


def resolve_url(given: str | None) -> str:
    """The storage URL to use: the command line's, else ``HPSEARCH_STORAGE``, else the default."""
    return given or os.environ.get("HPSEARCH_STORAGE") or DEFAULT_STORAGE


def redact(url: str) -> str:
    """The URL as it may be shown: the password, if any, replaced by ``***`` (also in a URL
    that does not parse, where whatever stands between ``user:`` and ``@`` is hidden)."""
    try:
        parsed = make_url(url)
        # as given where there is nothing to hide (SQLAlchemy would escape ':memory:' and such)
        return url if parsed.password is None else parsed.render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(//[^/:@]*:)[^@]*@", r"\1***@", url)


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
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
    if parsed.get_backend_name() == "sqlite" and _in_memory(parsed):
        # Each process (each worker) would have a database of its own, gone when it ends.
        raise UserError(
            f"storage {redact(url)!r} is a SQLite database in memory: nothing would be kept "
            "and workers could not share it; give a file, e.g. sqlite:///hpsearch.db"
        )
    if parsed.get_backend_name() == "postgresql" and not parsed.database:
        # libpq would pick the local socket and a database named after the user.
        raise UserError(
            f"storage {redact(url)!r} names no database: e.g. "
            "postgresql+psycopg://user@host:5432/db"
        )
    return parsed


def _in_memory(parsed: URL) -> bool:
    database = parsed.database or ""
    return (database in ("", ":memory:") or database.startswith("file::memory:")
            or parsed.query.get("mode") == "memory" or "mode=memory" in database)


def describe(url: str) -> str:
    """Where a study lives, for the first line of a run: the file, or the database and the
    server (the local socket where the URL names no host); never a password."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return redact(url)
    if parsed.get_backend_name() == "sqlite":
        return f"the SQLite file {Path(parsed.database or '').resolve()}"
    server = (f"{parsed.host}:{parsed.port or 5432}" if parsed.host
              else "this machine's local socket")
    return f"database {parsed.database!r} on the PostgreSQL server at {server}"


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
def _schema_lock(url: str, kwargs: dict[str, object], *, needed: bool) -> Iterator[None]:
    """Taken by every opening that may create Optuna's tables (``search.locks``): a worker
    that finds the tables already there may still come while another is writing their version
    rows, and would write them twice."""
    if not needed:
        yield
        return
    lock = schema_lock(url, kwargs)
    try:
        with lock:
            yield
    finally:
        lock.dispose()


class HpsearchStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, with one change for many workers on one study.

    A heartbeat survives a database hiccup: Optuna beats from a thread that dies, with a
    traceback, on the first failed write; the trial would then look dead to other workers while
    it still trains. Here a failed beat is logged in one line and tried again at the next
    interval. ``record_heartbeat`` is public API; everything else (tables, values, caching,
    errors) is Optuna's own, held to Optuna's storage test suite
    (``tests/test_storage_contract.py``).

    An earlier version wrote a running trial's records behind and reused the trials it read for
    0.5 s, through Optuna's private ``_create_new_trial``, ``_get_trials`` and
    ``_set_trial_param``: 40-50 ms less coordination per trial (``docs/benchmarks.md``), but it
    failed 10 of Optuna's 236 storage tests and depended on Optuna's internals.
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


def _check_path(parsed: URL, shown: str, *, create: bool) -> Path | None:
    """The SQLite file's problems that need no connection; its path (None for a server)."""
    path = _sqlite_path(parsed)
    if path is None:
        return None
    if not create and not path.exists():
        raise UserError(f"no storage at {shown!r}: the file {path} does not exist")
    if create:
        if not path.parent.exists():
            raise UserError(f"storage {shown!r}: the folder {path.parent} does not exist")
        if path.exists() and not os.access(path, os.W_OK):
            raise UserError(f"storage {shown!r}: the file {path} is read-only")
        if not os.access(path.parent, os.W_OK):  # SQLite writes its journal beside the file
            raise UserError(f"storage {shown!r}: the folder {path.parent} is not writable")
    return path


def _check_companions(path: Path, shown: str, study_name: str | None) -> None:
    """The files SQLite and hpsearch keep beside a database file must be files: a folder in
    the place of one fails only once the storage and the study are written."""
    names = [f"{path.name}{SCHEMA_SUFFIX}", f"{path.name}-wal", f"{path.name}-shm",
             f"{path.name}-journal", f"{path.name}.reserve"]
    if study_name is not None:
        names.append(f"{path.name}.{study_name}.lock")
    for name in names:
        companion = path.parent / name
        if companion.exists() and not companion.is_file():
            raise UserError(f"storage {shown!r}: {companion} is in the way (hpsearch and "
                            "SQLite keep a file of that name beside the database): move it")


def check_storage(url: str, study_name: str | None = None) -> None:
    """Everything ``open_storage(url, create=True)`` would refuse that can be found without
    writing anything (a new SQLite file is not made, no table is created): for the commands
    that check their other inputs (the data) before they create a storage. With
    ``study_name``, also what would stop that study's budget lock beside a SQLite file.

    Raises:
        UserError: as ``open_storage`` does.
    """
    parsed = _parse(url)
    shown = redact(url)
    path = _check_path(parsed, shown, create=True)
    if path is not None:
        _check_companions(path, shown, study_name)
        check_free_space(url, shown)
    if path is None or path.exists():
        _inspect(parsed, shown, create=True)


def open_storage(
    url: str, *, create: bool, heartbeat: tuple[int, int, int] | None = None,
    wait: float = 0.0, drop_checkpoint: Callable[[int], None] | None = None,
) -> HpsearchStorage:
    """Open the storage at ``url`` after checking that it can be reached.

    With ``create=False`` (reading commands) a storage that does not exist yet is an error
    rather than being created empty. ``heartbeat`` is (interval, grace period, retries): a
    running trial whose worker stops beating for the grace period is failed by the next worker
    that looks, and run again with the same parameters up to ``retries`` times
    (``search.resumption``; past that, ``drop_checkpoint`` is given the number of the
    lineage's first try). A database that
    drops the connection while the storage is opened is tried again for ``wait`` seconds.

    Raises:
        UserError: the URL is malformed, names an unknown driver, the database cannot be
            reached, holds no Optuna studies (reading) or other tables than Optuna's, or a
            SQLite file or its folder is read-only; the message never shows a password.
    """
    parsed = _parse(url)
    shown = redact(url)
    _check_path(parsed, shown, create=create)
    return retrying(lambda: _open(url, parsed, create=create, heartbeat=heartbeat,
                                  drop_checkpoint=drop_checkpoint),
                    wait, f"cannot open storage {shown!r}")


def _inspect(parsed: URL, shown: str, *, create: bool) -> bool:
    """Connect once: whether the database holds Optuna's tables.

    Raises:
        UserError: it cannot be reached, holds no studies (``create=False``), or holds tables
            that are not Optuna's (which would get Optuna's beside them).
    """
    engine: sqlalchemy.Engine | None = None
    try:
        engine = sqlalchemy.create_engine(parsed, **_engine_kwargs(parsed))  # type: ignore[arg-type]
        with engine.connect() as connection:
            tables = set(sqlalchemy.inspect(connection).get_table_names())
    except NoSuchModuleError:
        raise UserError(f"storage {shown!r}: no database driver for this URL") from None
    except ModuleNotFoundError as exc:
        raise UserError(f"storage {shown!r}: its driver is not installed ({exc.name})") from None
    except SQLAlchemyError as exc:
        if lost_connection(exc):
            raise
        raise UserError(f"cannot reach storage {shown!r}: {database_error(exc)}") from None
    finally:
        if engine is not None:  # each attempt's own
            engine.dispose()
    if "studies" in tables:
        return True
    if not create:
        raise UserError(f"storage {shown!r} holds no studies")
    # SQLite makes Optuna's tables one by one: another worker may be making them right now.
    if tables and not tables & OPTUNA_FIRST_TABLES:
        listed = ", ".join(sorted(tables)[:3]) + (", ..." if len(tables) > 3 else "")
        raise UserError(f"storage {shown!r} holds tables that are not Optuna's ({listed}): "
                        "give hpsearch a database of its own")
    return False


def _open(url: str, parsed: URL, *, create: bool, heartbeat: tuple[int, int, int] | None,
          drop_checkpoint: Callable[[int], None] | None = None) -> HpsearchStorage:
    shown = redact(url)
    path = _sqlite_path(parsed)
    kwargs = _engine_kwargs(parsed)
    _inspect(parsed, shown, create=create)
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
                    heartbeat_stale_trial_callback=RetryStaleTrials(retries, drop_checkpoint),
                )
            with _schema_lock(url, kwargs, needed=create):
                return HpsearchStorage(url, engine_kwargs=kwargs, **options)
    except SQLAlchemyError as exc:
        if lost_connection(exc):
            raise
        raise UserError(f"cannot open storage {shown!r}: {database_error(exc)}") from None
