"""Checking and opening Optuna's RDB storage at a :class:`StorageAddress`.

The default is a SQLite file in the working directory (``HPSEARCH_STORAGE`` overrides it); a
PostgreSQL URL (``postgresql+psycopg://user@host/db``) serves workers on several machines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import optuna
import sqlalchemy
from sqlalchemy.exc import NoSuchModuleError, SQLAlchemyError

from search.errors import UserError, database_error
from search.storage.address import StorageAddress
from search.storage.disk_space import RESERVE_SUFFIX, check_free_space
from search.storage.heartbeats import UnbeatenTrials
from search.storage.locks import SCHEMA_SUFFIX, StorageLock, budget_lock, budget_suffix, schema_lock
from search.storage.outages import cause, lost_connection, retrying
from search.workers.retries import RetryStaleTrials

if TYPE_CHECKING:
    from search.storage.proxy_client import ProxyStorage

logger = logging.getLogger(__name__)

# Tables that only Optuna's storage makes (any one of them: its schema is being made).
OPTUNA_FIRST_TABLES = {"studies", "version_info", "alembic_version"}

# SQLSTATEs of a table, type or row that another session made first: unique_violation (on
# PostgreSQL's catalogue of types, when two sessions create one table at once), duplicate_table,
# duplicate_object.
_MADE_MEANWHILE = ("23505", "42P07", "42710")


def _made_meanwhile(error: BaseException) -> BaseException | None:
    """The database error behind ``error``, if any, that says another worker made part of
    Optuna's schema while this one made it: possible only when the schema lock was lost
    mid-way, its connection ended by the database (an administrator, a restart), and the next
    worker took it. Worth trying again: the next try finds what the other made."""
    return cause(error, lambda seen: isinstance(seen, sqlalchemy.exc.DBAPIError)
                 and (getattr(seen.orig, "sqlstate", None) or "") in _MADE_MEANWHILE)


def _worth_again(create: bool) -> Callable[[BaseException], BaseException | None]:
    """What opening a storage tries again: a dropped connection, and, when it may create
    Optuna's tables, a part of them made meanwhile by another worker."""
    return lambda error: lost_connection(error) or (_made_meanwhile(error) if create else None)


@contextlib.contextmanager
def _schema_lock(address: StorageAddress, *, needed: bool) -> Iterator[None]:
    """Taken by every opening that may create Optuna's tables (``search.storage.locks``): a worker
    that finds the tables already there may still come while another is writing their version
    rows, and would write them twice."""
    if not needed:
        yield
        return
    with schema_lock(address):
        yield


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

    POOL: tuple[int, int] | None = None  # the engine's pool size and overflow, if not the default

    def __init__(self, address: StorageAddress, *, worker: bool = False,
                 **options: Any) -> None:
        engine_kwargs = address.engine_kwargs(worker=worker)
        if self.POOL is not None and address.backend == "postgresql":
            engine_kwargs.update(pool_size=self.POOL[0], max_overflow=self.POOL[1])
        super().__init__(address.url, engine_kwargs=engine_kwargs, **options)
        self.address = address

    def budget_lock(self, study_name: str) -> StorageLock:
        """The lock on ``study_name``'s trial budget, on this storage's own engine."""
        return budget_lock(self.address, study_name, self.engine)

    def unbeaten(self) -> UnbeatenTrials:
        """The running trials that never beat, read on this storage's own engine."""
        return UnbeatenTrials(self.engine)

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            logger.warning("heartbeat of trial %d not recorded: %s", trial_id,
                           database_error(exc))


# What open_storage gives: a database, or an hpsearch proxy in front of one. Both have
# ``address``, ``budget_lock(study_name)`` and ``unbeaten()``.
Storage = Union[HpsearchStorage, "ProxyStorage"]


def _use_wal(path: Path) -> None:
    """Write-ahead logging lets readers and one writer work at once: several workers on one
    machine then wait less for each other. The setting is stored in the database file."""
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def _check_path(address: StorageAddress, *, create: bool) -> Path | None:
    """The SQLite file's problems that need no connection; its path (None for a server)."""
    path, shown = address.sqlite_file, address.shown
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


def _check_companions(address: StorageAddress, study_name: str | None) -> None:
    """The files SQLite and hpsearch keep beside a database file must be files: a folder in
    the place of one fails only once the storage and the study are written."""
    suffixes = [SCHEMA_SUFFIX, "-wal", "-shm", "-journal", RESERVE_SUFFIX]
    if study_name is not None:
        suffixes.append(budget_suffix(study_name))
    for suffix in suffixes:
        companion = address.beside(suffix)
        if companion is not None and companion.exists() and not companion.is_file():
            raise UserError(f"storage {address.shown!r}: {companion} is in the way (hpsearch "
                            "and SQLite keep a file of that name beside the database): move it")


def check_storage(storage: str | StorageAddress, study_name: str | None = None, *,
                  wait: float = 0.0) -> None:
    """Everything ``open_storage(url, create=True)`` would refuse that can be found without
    writing anything (a new SQLite file is not made, no table is created): for the commands
    that check their other inputs (the data) before they create a storage. With
    ``study_name``, also what would stop that study's budget lock beside a SQLite file. A
    database that drops the connection while it is looked at is tried again for ``wait``
    seconds, as ``open_storage`` tries it.

    Raises:
        UserError: as ``open_storage`` does.
    """
    address = StorageAddress.of(storage)
    if address.proxy is not None:
        retrying(lambda: _open_proxy(address, create=True, heartbeat=None).close(), wait,
                 f"cannot reach storage {address.shown!r}")
        return
    path = _check_path(address, create=True)
    if path is not None:
        _check_companions(address, study_name)
        check_free_space(address)
    if path is None or path.exists():
        retrying(lambda: _inspect(address, create=True), wait,
                 f"cannot reach storage {address.shown!r}")


def open_storage(
    storage: str | StorageAddress, *, create: bool, heartbeat: tuple[int, int, int] | None = None,
    wait: float = 0.0, drop_checkpoint: Callable[[int], None] | None = None,
    storage_class: type[HpsearchStorage] = HpsearchStorage,
) -> Storage:
    """Open the storage at ``storage`` (a URL or its address) after checking that it can be
    reached: a database (as ``storage_class``), or an hpsearch proxy in front of one
    (``grpc://host:port``: ``search.storage.proxy_client``).

    With ``create=False`` (reading commands) a storage that does not exist yet is an error
    rather than being created empty. ``heartbeat`` is (interval, grace period, retries): a
    running trial whose worker stops beating for the grace period is failed by the next worker
    that looks, and run again with the same parameters up to ``retries`` times
    (``search.workers.retries``; past that, ``drop_checkpoint`` is given the number of the
    lineage's first try). A database that
    drops the connection while the storage is opened is tried again for ``wait`` seconds.

    Raises:
        UserError: the URL is malformed, names an unknown driver, the database cannot be
            reached, holds no Optuna studies (reading) or other tables than Optuna's, or a
            SQLite file or its folder is read-only; the message never shows a password.
    """
    address = StorageAddress.of(storage)
    if address.proxy is not None:
        return retrying(lambda: _open_proxy(address, create=create, heartbeat=heartbeat,
                                            drop_checkpoint=drop_checkpoint),
                        wait, f"cannot reach storage {address.shown!r}")
    _check_path(address, create=create)
    return retrying(lambda: _open(address, create=create, heartbeat=heartbeat,
                                  drop_checkpoint=drop_checkpoint, storage_class=storage_class),
                    wait, f"cannot open storage {address.shown!r}",
                    transient=_worth_again(create))


def _open_proxy(address: StorageAddress, *, create: bool,
                heartbeat: tuple[int, int, int] | None,
                drop_checkpoint: Callable[[int], None] | None = None) -> ProxyStorage:
    from search.storage.proxy_client import open_proxy

    callback = None if heartbeat is None else RetryStaleTrials(heartbeat[2], drop_checkpoint)
    return open_proxy(address, create=create, heartbeat=heartbeat, callback=callback)


def _inspect(address: StorageAddress, *, create: bool) -> bool:
    """Connect once: whether the database holds Optuna's tables.

    Raises:
        UserError: it cannot be reached, holds no studies (``create=False``), or holds tables
            that are not Optuna's (which would get Optuna's beside them).
    """
    shown = address.shown
    engine: sqlalchemy.Engine | None = None
    try:
        engine = address.scratch_engine()
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


def _open(address: StorageAddress, *, create: bool, heartbeat: tuple[int, int, int] | None,
          drop_checkpoint: Callable[[int], None] | None = None,
          storage_class: type[HpsearchStorage] = HpsearchStorage) -> HpsearchStorage:
    shown = address.shown
    _inspect(address, create=create)
    if address.sqlite_file is not None:
        _use_wal(address.sqlite_file)
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
            with _schema_lock(address, needed=create):
                return storage_class(address, worker=heartbeat is not None, **options)
    except SQLAlchemyError as exc:
        if _worth_again(create)(exc):
            raise
        raise UserError(f"cannot open storage {shown!r}: {database_error(exc)}") from None
