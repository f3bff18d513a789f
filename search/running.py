"""The records of the trials one process runs, written behind (see ``HpsearchStorage``).

A running trial's parameters, intermediate values and user and system attributes are kept in
memory, where this process reads them, and written to the database together: at most
``delay`` seconds after the first of them (``PARAMS_DELAY_S`` for parameters), from a timer
thread, off the training thread, and whenever the storage asks (always before the trial's
state changes). Each table's rows go in
one statement that writes only while the trial is RUNNING in the database, and replaces rows
with the same key, so a write can be repeated after an error.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import threading
import time
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.storages._rdb import models as rdb_models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from search.errors import database_error

logger = logging.getLogger(__name__)

_UPSERTS: dict[str, Any] = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}
_PARAMS = rdb_models.TrialParamModel.__table__
_VALUES = rdb_models.TrialIntermediateValueModel.__table__
_USER_ATTRS = rdb_models.TrialUserAttributeModel.__table__
_SYSTEM_ATTRS = rdb_models.TrialSystemAttributeModel.__table__

PARAMS_DELAY_S = 0.05  # how long parameters wait for the rest of their burst

_Rows = tuple[Any, list[dict[str, Any]], tuple[str, ...]]  # table, rows, columns to replace on


@dataclasses.dataclass
class _Held:
    """A running trial as this process knows it, and its records not yet written."""

    trial: FrozenTrial
    study_id: int | None  # None when not known (a waiting trial taken)
    params: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    values: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    attrs: dict[tuple[Any, str], dict[str, Any]] = dataclasses.field(default_factory=dict)
    timer: threading.Timer | None = None
    due: float = 0.0  # when the timer fires (time.monotonic)

    def take(self) -> list[_Rows]:
        """The held rows by table, which are no longer held."""
        tables: list[_Rows] = []
        if self.params:
            tables.append((_PARAMS, list(self.params.values()), ("trial_id", "param_name")))
        if self.values:
            tables.append((_VALUES, list(self.values.values()), ("trial_id", "step")))
        for table in (_USER_ATTRS, _SYSTEM_ATTRS):
            rows = [row for (kind, _), row in self.attrs.items() if kind is table]
            if rows:
                tables.append((table, rows, ("trial_id", "key")))
        self.params, self.values, self.attrs = {}, {}, {}
        return tables

    def give_back(self, tables: list[_Rows]) -> None:
        """Hold again rows whose write failed, under anything held since."""
        for table, rows, _ in tables:
            for row in rows:
                if table is _PARAMS:
                    self.params.setdefault(row["param_name"], row)
                elif table is _VALUES:
                    self.values.setdefault(row["step"], row)
                else:
                    self.attrs.setdefault((table, row["key"]), row)


class RunningTrials:
    """The trials this process runs, and their records not yet written."""

    def __init__(self, engine: sqlalchemy.Engine, delay: float) -> None:
        self._engine = engine
        self._delay = delay
        self._held: dict[int, _Held] = {}
        self._lock = threading.Lock()  # guards _held
        self._writing = threading.Lock()  # keeps this process's writes in order

    @property
    def supported(self) -> bool:
        return self._engine.dialect.name in _UPSERTS

    def adopt(self, trial: FrozenTrial, study_id: int | None) -> None:
        """Hold the records of ``trial`` from now on (a trial this process starts)."""
        if not self.supported:
            return
        with self._lock:
            self._held[trial._trial_id] = _Held(copy.deepcopy(trial), study_id)

    def study_of(self, trial_id: int) -> int | None:
        with self._lock:
            held = self._held.get(trial_id)
            return held.study_id if held is not None else None

    def forget(self, trial_id: int) -> None:
        with self._lock:
            held = self._held.pop(trial_id, None)
        if held is not None and held.timer is not None:
            held.timer.cancel()

    def view(self, trial_id: int) -> FrozenTrial | None:
        """The trial as this process knows it (with its held records); None if not ours."""
        with self._lock:
            held = self._held.get(trial_id)
            return copy.deepcopy(held.trial) if held is not None else None

    def param(self, trial_id: int, name: str, internal: float,
              distribution: BaseDistribution) -> bool:
        """Hold one parameter of a trial this process runs; False for any other trial (the
        caller then takes Optuna's path). So for the other records below."""
        with self._lock:
            held = self._held.get(trial_id)
            if held is None:
                return False
            held.params[name] = {"trial_id": trial_id, "param_name": name,
                                 "param_value": internal,
                                 "distribution_json": distribution_to_json(distribution)}
            self._set_param(held.trial, name, internal, distribution)
            # Parameters come in a burst as the objective starts: written right after it,
            # before training, so a worker killed mid-trial leaves them for the retry.
            self._schedule(trial_id, held, PARAMS_DELAY_S)
        return True

    def param_written(self, trial_id: int, name: str, internal: float,
                      distribution: BaseDistribution) -> None:
        """A parameter written by Optuna's own path, for this process's view of the trial."""
        with self._lock:
            held = self._held.get(trial_id)
            if held is not None:
                self._set_param(held.trial, name, internal, distribution)

    @staticmethod
    def _set_param(trial: FrozenTrial, name: str, internal: float,
                   distribution: BaseDistribution) -> None:
        trial._params[name] = distribution.to_external_repr(internal)
        trial._distributions[name] = distribution

    def intermediate_value(self, trial_id: int, step: int, value: float) -> bool:
        stored, kind = rdb_models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(
            value)
        with self._lock:
            held = self._held.get(trial_id)
            if held is None:
                return False
            held.values[step] = {"trial_id": trial_id, "step": step,
                                 "intermediate_value": stored, "intermediate_value_type": kind}
            held.trial.intermediate_values[step] = value
            self._schedule(trial_id, held)
        return True

    def attr(self, trial_id: int, user: bool, key: str, value: Any) -> bool:
        row = {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
        with self._lock:
            held = self._held.get(trial_id)
            if held is None:
                return False
            held.attrs[(_USER_ATTRS if user else _SYSTEM_ATTRS, key)] = row
            attrs = held.trial._user_attrs if user else held.trial._system_attrs
            attrs[key] = copy.deepcopy(value)
            self._schedule(trial_id, held)
        return True

    def _schedule(self, trial_id: int, held: _Held, delay: float | None = None) -> None:
        """The write-behind of a trial's held records in ``delay`` seconds (``self._delay``
        by default), unless one is already due by then."""
        delay = self._delay if delay is None else delay
        due = time.monotonic() + delay
        if held.timer is not None:
            if held.due <= due:
                return
            held.timer.cancel()
        held.timer = threading.Timer(delay, self._flush_later, (trial_id,))
        held.timer.daemon = True
        held.due = due
        held.timer.start()

    def _flush_later(self, trial_id: int) -> None:
        try:
            self.flush(trial_id)
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            # Held again, for the next write-behind or the trial's end (which raises if the
            # database is still away).
            logger.warning("records of trial %d not written yet: %s", trial_id,
                           database_error(exc))

    def flush(self, trial_id: int | None = None) -> None:
        """Write the held records of one trial (or of all), in the order they were taken."""
        with self._writing:
            with self._lock:
                batches = []
                for tid in list(self._held) if trial_id is None else [trial_id]:
                    held = self._held.get(tid)
                    if held is None:
                        continue
                    if held.timer is not None:
                        held.timer.cancel()
                        held.timer = None
                    batches.append((tid, held, held.take()))
            for index, (tid, held, tables) in enumerate(batches):
                try:
                    while tables:  # what is left in ``tables`` is not written yet
                        table, rows, replace_on = tables[0]
                        if not self._write_if_running(table, tid, rows, replace_on):
                            # Finished in the database (another worker found it stale):
                            # nothing more to hold; its next write raises Optuna's error.
                            self.forget(tid)
                            tables.clear()
                        else:
                            tables.pop(0)
                except BaseException:
                    # Every write replaces its rows, so one that reached the database before
                    # the error can be written again.
                    with self._lock:
                        for later_tid, later, later_tables in batches[index:]:
                            if self._held.get(later_tid) is later:
                                later.give_back(later_tables)
                    raise

    def _write_if_running(self, table: sqlalchemy.Table, trial_id: int,
                          rows: list[dict[str, Any]], replace_on: tuple[str, ...]) -> bool:
        """Insert ``rows`` of one trial (replacing those with the same ``replace_on`` columns)
        in one statement, only while the trial is RUNNING; False when it is not."""
        insert = _UPSERTS[self._engine.dialect.name]
        trials = rdb_models.TrialModel.__table__
        names = list(rows[0])
        selects = [sqlalchemy.select(
            # typed, so that a union of rows keeps PostgreSQL's enum columns
            *(sqlalchemy.cast(sqlalchemy.literal(row[name], table.c[name].type),
                              table.c[name].type) for name in names)
        ).where(trials.c.trial_id == trial_id, trials.c.state == TrialState.RUNNING)
            for row in rows]
        statement = insert(table).from_select(
            names, selects[0] if len(selects) == 1 else sqlalchemy.union_all(*selects))
        if replace_on:
            statement = statement.on_conflict_do_update(
                index_elements=list(replace_on),
                set_={name: statement.excluded[name] for name in names if name not in replace_on})
        with self._autocommit.connect() as connection:
            return bool(connection.execute(statement).rowcount == len(rows))

    @functools.cached_property
    def _autocommit(self) -> sqlalchemy.Engine:
        # rowcount tells whether the trial was running; SQLAlchemy keeps it for INSERT only
        # when asked to.
        return self._engine.execution_options(isolation_level="AUTOCOMMIT",
                                              preserve_rowcount=True)
