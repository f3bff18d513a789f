"""How long ago each running trial last beat, by the database's clock: the one read of Optuna's
tables.

Optuna's own staleness check (``optuna.storages.fail_stale_trials``) only sees trials that beat
at least once. A worker that lost the database (or died) between creating its trial and the
first beat leaves a RUNNING trial nobody would ever fail, holding a slot of the study's budget.
And workers through ``hpsearch proxy`` have no database connection to ask Optuna's check with:
the proxy answers for them (``search.storage.proxy_server``). Optuna has no public API that
tells either, so this module reads the running trials and their last heartbeat from Optuna's
tables with one SELECT (and the database's time with another); it writes nothing.

It relies on Optuna's schema: table ``trials`` (``trial_id``, ``study_id``, ``state`` holding
``'RUNNING'``) and table ``trial_heartbeats`` (``trial_id``, ``heartbeat``), as in Optuna 3.0
to 5.0 (the ``optuna<5.1`` bound in ``pyproject.toml``). The schema is checked once per worker
(and once per proxy); where it is not as expected, one warning says so and such trials are not
looked for (each then stays RUNNING and holds a slot of the budget; through a proxy, no trial is
taken for dead): the search itself goes on. A test in ``tests/test_workers.py`` forces that
fallback (listed with the others in ``tests/test_fallbacks.py``).
"""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy
from sqlalchemy.exc import NoSuchTableError

logger = logging.getLogger(__name__)

EXPECTED = {"trials": {"trial_id", "study_id", "state"},
            "trial_heartbeats": {"trial_id", "heartbeat"}}
QUERY = sqlalchemy.text(
    "SELECT t.trial_id, h.heartbeat FROM trials t LEFT JOIN trial_heartbeats h "
    "ON h.trial_id = t.trial_id WHERE t.study_id = :study AND t.state = 'RUNNING'"
).columns(trial_id=sqlalchemy.Integer, heartbeat=sqlalchemy.DateTime)


def _naive(moment: datetime | None) -> datetime:
    # PostgreSQL's now() carries a time zone, Optuna's column none (as Optuna's own check does)
    assert moment is not None
    return moment.replace(tzinfo=None)


class HeartbeatAges:
    """A study's RUNNING trials and the seconds since each last beat (None: it never beat),
    through a storage engine (a connection of its pool, only when asked: at the end of a
    study's budget, or when a proxy's worker asks)."""

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        self._engine = engine
        self._usable: bool | None = None  # checked at the first look

    def _schema_as_expected(self, connection: sqlalchemy.Connection) -> bool:
        inspector = sqlalchemy.inspect(connection)
        missing = []
        for table, columns in EXPECTED.items():
            try:
                found = {column["name"] for column in inspector.get_columns(table)}
            except NoSuchTableError:
                found = set()
            missing += [f"{table}.{column}" for column in sorted(columns - found)]
        if missing:
            logger.warning(
                "Optuna's tables are not as hpsearch expects (no %s): trials whose worker "
                "stopped before its first heartbeat will not be failed automatically",
                ", ".join(missing))
        return not missing

    def of(self, study_id: int) -> dict[int, float | None]:
        """{trial id: seconds since its last heartbeat, or None}; empty where Optuna's tables
        are not as expected."""
        with self._engine.connect() as connection:
            if self._usable is None:
                self._usable = self._schema_as_expected(connection)
            if not self._usable:
                return {}
            now = _naive(connection.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar())
            rows = connection.execute(QUERY, {"study": study_id})
            return {int(trial_id): None if beat is None
                    else (now - _naive(beat)).total_seconds() for trial_id, beat in rows}


class UnbeatenTrials:
    """A study's RUNNING trials that never beat, from :class:`HeartbeatAges`."""

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        self._ages = HeartbeatAges(engine)

    def trial_ids(self, study_id: int) -> set[int]:
        return {trial_id for trial_id, age in self._ages.of(study_id).items() if age is None}
