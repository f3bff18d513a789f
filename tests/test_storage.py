"""hpsearch's storage on both backends: Optuna's results and errors, and how a lost connection
is told apart and waited for. Optuna's own storage suite runs in test_storage_contract.py."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import optuna
import psycopg
import pytest
import sqlalchemy
from sqlalchemy.pool import NullPool

from search.errors import UserError
from search.storage.outages import lost_connection, retrying
from search.storage.opening import HpsearchStorage, open_storage


def test_intermediate_values_are_stored_as_optuna_stores_them(storage_url: str) -> None:
    storage = open_storage(storage_url, create=True)
    assert isinstance(storage, HpsearchStorage)
    study = optuna.create_study(storage=storage, study_name="values")
    trial = study.ask()
    for step, value in enumerate([0.25, float("nan"), float("inf"), float("-inf"), 1e-300]):
        trial.report(value, step)
    storage.set_trial_intermediate_value(trial._trial_id, 0, 0.5)  # replaced, as in Optuna
    stored = optuna.storages.RDBStorage(storage_url).get_trial(trial._trial_id)
    values = stored.intermediate_values
    assert values[0] == 0.5 and math.isnan(values[1]) and values[4] == 1e-300
    assert (values[2], values[3]) == (float("inf"), float("-inf"))
    study.tell(trial, 0.5)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_intermediate_value(trial._trial_id, 5, 0.1)
    with pytest.raises(KeyError):
        storage.set_trial_intermediate_value(10_000, 0, 0.1)
    storage.engine.dispose()


def test_parameters_are_stored_as_optuna_stores_them(storage_url: str) -> None:
    storage = open_storage(storage_url, create=True)
    study = optuna.create_study(storage=storage, study_name="params")
    for _ in range(2):  # the second trial takes the path of a name already seen
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_categorical("act", ["relu", "tanh"])
        trial.suggest_int("layers", 1, 4)
        study.tell(trial, 1.0)
    plain = optuna.storages.RDBStorage(storage_url)
    assert [t.params for t in plain.get_all_trials(study._study_id)] == \
        [t.params for t in study.trials]
    assert plain.get_all_trials(study._study_id)[1].distributions == trial.distributions
    with pytest.raises(ValueError):  # other choices under a stored name
        study.ask().suggest_categorical("act", ["relu", "gelu"])
    finished = study.trials[1]
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        study._storage.set_trial_param(finished._trial_id, "lr", 0.01,
                                       finished.distributions["lr"])
    storage.engine.dispose()


def test_a_study_another_worker_is_still_creating_is_joined_a_foreign_one_refused(
        tmp_path: Path) -> None:
    from search.errors import UserError
    from search.studies import STUDY_ATTR, find_study, open_study
    from search.studyfile import StudyFile

    url = f"sqlite:///{tmp_path / 's.db'}"
    spec = StudyFile.model_validate({"study": {"name": "joined", "n_trials": 2}})
    made = optuna.create_study(study_name="joined", storage=url, direction="maximize")
    record = optuna.storages.RDBStorage(url)
    record_later = threading.Timer(1.0, lambda: record.set_study_user_attr(
        made._study_id, STUDY_ATTR, {"fingerprint": spec.fingerprint()}))
    record_later.start()  # as the creating worker does, a moment after creating it
    assert find_study(spec, optuna.storages.RDBStorage(url)) is not None
    record_later.join()

    foreign = optuna.create_study(study_name="foreign", storage=url)
    foreign.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    other = StudyFile.model_validate({"study": {"name": "foreign", "n_trials": 2}})
    with pytest.raises(UserError, match="not created by hpsearch"):
        open_study(other, optuna.storages.RDBStorage(url))


def test_a_study_s_configuration_is_read_back_with_the_defaults_it_was_made_with(
        tmp_path: Path) -> None:
    """``evaluate`` retrains a trial as its search trained it even after hpsearch's defaults
    change: the stored resolved study file wins; what the author wrote is the fallback for a
    setting since removed; a configuration that validates neither way is one clear error."""
    from search.errors import UserError
    from search.results.evaluate import stored_spec
    from search.studies import STUDY_ATTR, open_study
    from search.studyfile import StudyFile

    url = f"sqlite:///{tmp_path / 's.db'}"
    spec = StudyFile.model_validate({"study": {"name": "old", "n_trials": 2},
                                     "data": {"dataset": "cifar10"},
                                     "training": {"max_epochs": 7}})
    study = open_study(spec, optuna.storages.RDBStorage(url))
    assert stored_spec(study, None) == spec
    assert stored_spec(study, "/data/cifar").data.path == "/data/cifar"

    stored = study.user_attrs[STUDY_ATTR]
    made_then = {**stored["study_file"], "pruner": {"type": "median", "n_startup_trials": 4},
                 "training": {**stored["study_file"]["training"], "early_stopping_patience": 9}}
    study.set_user_attr(STUDY_ATTR, {**stored, "study_file": made_then})
    read = stored_spec(optuna.load_study(study_name="old", storage=url), None)
    assert read.pruner.type == "median" and read.pruner.n_startup_trials == 4
    assert (read.training.early_stopping_patience, read.training.max_epochs) == (9, 7)

    removed = {**stored["study_file"], "training": {**stored["study_file"]["training"],
                                                    "a_setting_since_removed": 1}}
    study.set_user_attr(STUDY_ATTR, {**stored, "study_file": removed})
    assert stored_spec(optuna.load_study(study_name="old", storage=url), None) == spec

    study.set_user_attr(STUDY_ATTR, {**stored, "study_file": removed,
                                     "study_file_given": {"training": {"max_epochs": -1}}})
    with pytest.raises(UserError, match=r"^study 'old': its stored configuration no longer "
                                        r"validates \(1 problems\)"):
        stored_spec(optuna.load_study(study_name="old", storage=url), None)


def _ended_by_the_server(engine: sqlalchemy.Engine, admin: sqlalchemy.Engine) -> int:
    """Run a query on a connection the server ends first, as a restart would."""
    with engine.connect() as connection:
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with admin.connect() as other:
            other.exec_driver_sql("SELECT pg_terminate_backend(%s)", (pid,))
        return int(connection.exec_driver_sql("SELECT 1").scalar_one())


def test_a_connection_the_database_ends_is_told_apart_from_one_it_refuses(
    postgres_url: str,
) -> None:
    engine = sqlalchemy.create_engine(postgres_url, poolclass=NullPool)
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with pytest.raises(sqlalchemy.exc.OperationalError) as ended:
        _ended_by_the_server(engine, admin)
    assert lost_connection(ended.value) is ended.value
    wrapped = optuna.exceptions.StorageInternalError("commit failed")
    wrapped.__cause__ = ended.value  # as Optuna's storage raises it
    assert lost_connection(wrapped) is ended.value
    # As a new engine's first connection reports it (seen under load): not marked invalidated.
    unexpected = sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError(
        "consuming input failed: server closed the connection unexpectedly"))
    assert not unexpected.connection_invalidated
    assert lost_connection(unexpected) is unexpected
    refused = sqlalchemy.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/test",
                                       poolclass=NullPool)
    with pytest.raises(sqlalchemy.exc.OperationalError) as failed:
        refused.connect()
    assert lost_connection(failed.value) is None
    missing = sqlalchemy.make_url(postgres_url).set(database="hpsearch_no_such_database")
    with pytest.raises(sqlalchemy.exc.OperationalError) as unknown:
        sqlalchemy.create_engine(missing, poolclass=NullPool).connect()
    assert lost_connection(unknown.value) is None
    admin.dispose()


def test_dropped_connections_are_tried_again_until_the_wait_is_over(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = sqlalchemy.create_engine(postgres_url, poolclass=NullPool)
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    attempts: list[int] = []

    def dropped_twice() -> int:
        attempts.append(1)
        if len(attempts) <= 2:
            return _ended_by_the_server(engine, admin)
        with engine.connect() as connection:
            return int(connection.exec_driver_sql("SELECT 7").scalar_one())

    assert retrying(dropped_twice, 30, "never") == 7
    assert len(attempts) == 3
    assert caplog.text.count("storage error (terminating connection due to administrator") == 2
    with pytest.raises(UserError, match="^gave up: terminating connection due to administrator"):
        retrying(lambda: _ended_by_the_server(engine, admin), 1, "gave up")
    with pytest.raises(ZeroDivisionError):  # any other error at once
        retrying(lambda: 1 // 0, 30, "never")
    admin.dispose()


def test_a_schema_another_worker_makes_at_the_same_moment_is_opened_on_the_next_try(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker whose schema lock the database ended mid-way (an administrator ending every
    connection) went on making Optuna's tables while the next worker, holding the lock now,
    made them too: the second to create a table failed on PostgreSQL's catalogue ('type
    "alembic_version" already exists') and its worker ended. It opens the storage on its next
    try. Here the other worker is a transaction that has made Optuna's version table and
    commits a second later."""
    made = threading.Event()

    def the_other_worker() -> None:
        with sqlalchemy.create_engine(postgres_url, poolclass=NullPool).begin() as connection:
            connection.exec_driver_sql(  # as Alembic makes it
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))")
            made.set()
            threading.Event().wait(1.0)

    other = threading.Thread(target=the_other_worker)
    other.start()
    made.wait(10)
    try:
        storage = open_storage(postgres_url, create=True, wait=30)
    finally:
        other.join()
    try:
        assert "pg_type_typname_nsp_index\"); retrying in" in caplog.text
        study = optuna.create_study(storage=storage, study_name="opened")
        assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["opened"]
        assert study.ask().number == 0
    finally:
        storage.engine.dispose()
