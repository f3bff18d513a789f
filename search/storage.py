"""Where studies live: resolving, checking and opening an Optuna RDB storage.

The default is a SQLite file in the working directory (``HPSEARCH_STORAGE`` overrides it); a
PostgreSQL URL (``postgresql+psycopg://user@host/db``) serves workers on several machines. A
password never appears in what we print: use :func:`redact` on any URL shown to a user.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import sqlite3
import warnings
from pathlib import Path
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import (
    BaseDistribution, check_distribution_compatibility, distribution_to_json,
)
from optuna.storages._rdb import models as rdb_models
from optuna.trial import TrialState
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
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


class HpsearchStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, with three changes for many workers on one study.

    - A heartbeat survives a database hiccup: Optuna beats from a thread that dies, with a
      traceback, on the first failed write; the trial would then look dead to other workers
      while it still trains. Here a failed beat is logged in one line and tried again at the
      next interval.
    - ``on_trial_started``, when set, is called as soon as this process has a new trial in
      RUNNING state (created, or a waiting one taken), before the sampler runs: the worker
      loop releases its budget lock there, so other workers wait for a row to be written,
      not for a sampler.
    - A parameter (a dozen per trial) and an intermediate value (one per epoch, the pruner's
      input) are each written with one statement that also checks the trial is still
      running, instead of Optuna's three or four queries in a transaction; the tables, the
      values stored and the errors for a finished trial are Optuna's own.
    """

    on_trial_started: Callable[[], None] | None = None

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            logger.warning("heartbeat of trial %d not recorded: %s", trial_id,
                           database_error(exc))

    def _create_new_trial(self, study_id: int,
                          template_trial: optuna.trial.FrozenTrial | None = None
                          ) -> optuna.trial.FrozenTrial:
        # Optuna's cached storage (which every study wraps around this one) calls this, not
        # the public create_new_trial, which calls it too.
        trial = super()._create_new_trial(study_id, template_trial)
        if trial.state == TrialState.RUNNING:
            self._started()
        return trial

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)
        if changed and state == TrialState.RUNNING:  # a waiting trial taken
            self._started()
        return changed

    def _started(self) -> None:
        if self.on_trial_started is not None:
            self.on_trial_started()

    def set_trial_intermediate_value(self, trial_id: int, step: int,
                                     intermediate_value: float) -> None:
        model = rdb_models.TrialIntermediateValueModel
        stored, kind = model.intermediate_value_to_stored_repr(intermediate_value)
        row = {"trial_id": trial_id, "step": step, "intermediate_value": stored,
               "intermediate_value_type": kind}
        if not self._write_if_running(model.__table__, row, replace_on=("trial_id", "step")):
            super().set_trial_intermediate_value(trial_id, step, intermediate_value)

    def _set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                         distribution: BaseDistribution,
                         previous_distribution: BaseDistribution | None) -> None:
        # Optuna's cached storage passes the distribution this study already stored for the
        # name; then only the row is left to write. The first time a name is seen, Optuna's
        # own path looks the stored distribution up.
        if previous_distribution is not None:
            check_distribution_compatibility(previous_distribution, distribution)
            row = {"trial_id": trial_id, "param_name": param_name,
                   "param_value": param_value_internal,
                   "distribution_json": distribution_to_json(distribution)}
            if self._write_if_running(rdb_models.TrialParamModel.__table__, row):
                return
        super()._set_trial_param(trial_id, param_name, param_value_internal, distribution,
                                 previous_distribution)

    def _write_if_running(self, table: sqlalchemy.Table, row: dict[str, Any],
                          replace_on: tuple[str, ...] = ()) -> bool:
        """Insert ``row`` (replacing the one with the same ``replace_on`` columns) in one
        statement, only while its trial is RUNNING. False when nothing was written (no such
        trial, a finished one, or a database without this statement): the caller then takes
        Optuna's own path, which raises Optuna's own error."""
        insert = _UPSERTS.get(self.engine.dialect.name)
        if insert is None:
            return False
        trials = rdb_models.TrialModel.__table__
        rows = sqlalchemy.select(
            *(sqlalchemy.literal(value, table.c[name].type) for name, value in row.items())
        ).where(trials.c.trial_id == row["trial_id"], trials.c.state == TrialState.RUNNING)
        statement = insert(table).from_select(list(row), rows)
        if replace_on:
            statement = statement.on_conflict_do_update(
                index_elements=list(replace_on),
                set_={name: statement.excluded[name] for name in row if name not in replace_on})
        with self._autocommit.connect() as connection:
            return bool(connection.execute(statement).rowcount == 1)

    @functools.cached_property
    def _autocommit(self) -> sqlalchemy.Engine:
        return self.engine.execution_options(isolation_level="AUTOCOMMIT")


_UPSERTS: dict[str, Any] = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}


def _use_wal(path: Path) -> None:
    """Write-ahead logging lets readers and one writer work at once: several workers on one
    machine then wait less for each other. The setting is stored in the database file."""
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def open_storage(
    url: str, *, create: bool, heartbeat: tuple[int, int, int] | None = None
) -> HpsearchStorage:
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
                return HpsearchStorage(url, engine_kwargs=kwargs, **options)
    except SQLAlchemyError as exc:
        raise UserError(f"cannot open storage {shown!r}: {database_error(exc)}") from None
