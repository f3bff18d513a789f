"""Running trials that never recorded a heartbeat: the one read of Optuna's tables.

Optuna's own staleness check (``optuna.storages.fail_stale_trials``) only sees trials that beat
at least once. A worker that lost the database (or died) between creating its trial and the
first beat leaves a RUNNING trial nobody would ever fail, holding a slot of the study's budget.
Optuna has no public API that tells which running trials never beat, so this module reads it
from Optuna's tables with one SELECT; it writes nothing.

It relies on Optuna's schema: table ``trials`` (``trial_id``, ``study_id``, ``state`` holding
``'RUNNING'``) and table ``trial_heartbeats`` (``trial_id``), as in Optuna 3.0 to 5.0 (the
``optuna<5.1`` bound in ``pyproject.toml``). The schema is checked once per worker; where it is
not as expected, one warning says so and such trials are not looked for (each then stays
RUNNING and holds a slot of the budget): the search itself goes on. A test in
``tests/test_workers.py`` forces that fallback (listed with the others in
``tests/test_fallbacks.py``).
"""

from __future__ import annotations

import logging

import sqlalchemy
from sqlalchemy.exc import NoSuchTableError

logger = logging.getLogger(__name__)

EXPECTED = {"trials": {"trial_id", "study_id", "state"}, "trial_heartbeats": {"trial_id"}}
QUERY = ("SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h "
         "ON h.trial_id = t.trial_id WHERE t.study_id = :study AND t.state = 'RUNNING' "
         "AND h.trial_id IS NULL")


class UnbeatenTrials:
    """Finds a study's RUNNING trials without any heartbeat, through the worker's storage
    engine (a connection of its pool, only when asked: at the end of a study's budget)."""

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

    def trial_ids(self, study_id: int) -> set[int]:
        with self._engine.connect() as connection:
            if self._usable is None:
                self._usable = self._schema_as_expected(connection)
            if not self._usable:
                return set()
            rows = connection.execute(sqlalchemy.text(QUERY), {"study": study_id})
            return {int(trial_id) for (trial_id,) in rows}
