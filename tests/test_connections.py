"""One database connection per worker, on the local PostgreSQL (stock ``max_connections`` of
100): 90 real worker processes on one study (forked by tests/sleeping_workers.py, sleeping
instead of training, so that two cores are not the limit) end it with exactly N finished trials
and never hold more connections than workers plus a few; a worker whose connection is refused
(too many connections) waits within ``storage_wait`` and goes on."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from conftest import POSTGRES_ADMIN_URL, _postgres_database

HELPER = Path(__file__).with_name("sleeping_workers.py")
# The benchmark's watch on pg_stat_activity, measuring here what it measures there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from coordination import PeakConnections  # noqa: E402
WORKERS, TRIALS = 90, 90
# The stub study, its trials sleeping (tests/sleeping_workers.py) instead of training.
STUDY = dict(study={"name": "many", "n_trials": TRIALS, "warm_start": False},
             sampler={"type": "random", "n_startup_trials": None},
             workers={"heartbeat_interval": 5, "grace_period": 60, "storage_wait": 120})


@pytest.fixture
def postgres_alone() -> Iterator[str]:
    """A fresh database on a server no other test uses meanwhile: its connections are all this
    test's."""
    yield from _postgres_database(lock="alone")


@pytest.mark.long(65)
def test_ninety_workers_share_a_stock_postgresql_one_connection_each(
        postgres_alone: str, stub_study: Callable[..., Path]) -> None:
    postgres_url = postgres_alone
    study_file = stub_study(**STUDY, name="many.toml")
    with PeakConnections(postgres_url, POSTGRES_ADMIN_URL) as peak:
        done = subprocess.run([sys.executable, str(HELPER), str(study_file), postgres_url,
                               str(WORKERS)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["exit_codes"] == [0] * WORKERS
    assert sum(summary["ran"]) == TRIALS
    trials = optuna.load_study(study_name="many", storage=postgres_url).get_trials(
        deepcopy=False)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == TRIALS  # exactly N
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # one each while they run; a second only briefly (the budget lock's holder, a heartbeat
    # beside a report), and the watcher's own
    print(f"{WORKERS} workers: at most {peak.most} connections to the study's database")
    assert peak.most <= WORKERS + 6, peak.most


@pytest.fixture
def limited_role(postgres_url: str) -> Iterator[str]:
    """The test database's URL as a role allowed three connections at a time (superusers have
    no limit; opening a new storage takes three for a moment: the lock on creating Optuna's
    tables, and two of the storage checking their version), owner of that database's public
    schema."""
    role = f"hpsearch_limited_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 3')
        connection.exec_driver_sql(f'ALTER SCHEMA public OWNER TO "{role}"')
    try:
        yield sqlalchemy.engine.make_url(postgres_url).set(username=role).render_as_string(
            hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,))
            connection.exec_driver_sql('ALTER SCHEMA public OWNER TO "postgres"')
            connection.exec_driver_sql(f'DROP OWNED BY "{role}"')
            connection.exec_driver_sql(f'DROP ROLE "{role}"')
        admin.dispose()


def test_a_refused_connection_is_waited_for_within_storage_wait(
        limited_role: str, caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL refuses a connection past the limit ("too many connections", SQLSTATE
    53300): the worker opening its storage waits, with one line per try, and opens it once a
    connection is free; past ``storage_wait`` it is one line, not a traceback."""
    from search.errors import UserError
    from search.storage.opening import open_storage

    blocker = sqlalchemy.create_engine(limited_role, poolclass=sqlalchemy.pool.NullPool)
    held = [blocker.connect() for _ in range(3)]  # every connection the role may have

    def free() -> None:
        for connection in held:
            connection.close()

    try:
        with pytest.raises(UserError, match="too many connections"):
            open_storage(limited_role, create=True, wait=1.0)
        threading.Timer(2.0, free).start()  # the connections come free in 2 s
        with caplog.at_level(logging.WARNING, logger="search"):
            storage = open_storage(limited_role, create=True, wait=30.0)
        storage.engine.dispose()
    finally:
        free()
        blocker.dispose()
    waited = [r.getMessage() for r in caplog.records if "too many connections" in r.getMessage()]
    assert waited and all("retrying in" in line for line in waited)
