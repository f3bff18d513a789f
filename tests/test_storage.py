"""hpsearch's storage on both backends: what it changes in Optuna's RDB storage keeps Optuna's
results and errors."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import optuna
import psycopg
import pytest
import sqlalchemy
from sqlalchemy.pool import NullPool

from search.errors import UserError
from search.storage import HpsearchStorage, lost_connection, open_storage, retrying


def test_intermediate_values_are_stored_as_optuna_stores_them(storage_url: str) -> None:
    storage = open_storage(storage_url, create=True)
    assert isinstance(storage, HpsearchStorage)
    study = optuna.create_study(storage=storage, study_name="values")
    trial = study.ask()
    for step, value in enumerate([0.25, float("nan"), float("inf"), float("-inf"), 1e-300]):
        trial.report(value, step)
    storage.set_trial_intermediate_value(trial._trial_id, 0, 0.5)  # replaced, as in Optuna
    storage.flush()
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


def test_the_start_hook_fires_for_running_trials_only(storage_url: str) -> None:
    storage = open_storage(storage_url, create=True)
    study = optuna.create_study(storage=storage, study_name="hook")
    started: list[int] = []
    storage.on_trial_started = lambda: started.append(len(study.trials))
    study.enqueue_trial({"x": 1.0})  # a waiting trial: not started
    assert started == []
    study.ask()  # takes the waiting trial
    study.ask()  # creates a running one
    assert started == [1, 2]
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


def test_a_running_trial_s_records_are_written_behind_and_before_its_end(
        storage_url: str) -> None:
    storage = open_storage(storage_url, create=True)
    study = optuna.create_study(storage=storage, study_name="behind", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # names now stored
    plain = optuna.storages.RDBStorage(storage_url)
    trial = study.ask()
    x = trial.suggest_float("x", 0, 1)
    trial.set_user_attr("worker", "here")
    trial.report(0.5, 0)
    # this process sees them at once; the database within WRITE_BEHIND_S
    mine = storage.get_trial(trial._trial_id)
    assert (mine.params, mine.user_attrs, mine.intermediate_values) == (
        {"x": x}, {"worker": "here"}, {0: 0.5})
    assert [t.params for t in study.get_trials(deepcopy=False)][-1] == {"x": x}
    # (one statement per table, so a reader may see one table's rows a moment before another's)
    deadline = time.monotonic() + storage.WRITE_BEHIND_S + 5
    while True:
        stored = plain.get_trial(trial._trial_id)
        if (stored.params, stored.user_attrs, stored.intermediate_values) == (
                {"x": x}, {"worker": "here"}, {0: 0.5}):
            break
        assert time.monotonic() < deadline, "records not written behind"
        time.sleep(0.05)
    # whatever is held when the trial ends is written before its state
    trial.report(0.75, 1)
    trial.set_user_attr("best_epoch", 2)
    study.tell(trial, 0.75)
    stored = plain.get_trial(trial._trial_id)
    assert stored.state == optuna.trial.TrialState.COMPLETE
    assert stored.intermediate_values == {0: 0.5, 1: 0.75}
    assert stored.user_attrs == {"worker": "here", "best_epoch": 2}
    storage.engine.dispose()


def test_a_trial_failed_by_another_worker_takes_no_more_records(storage_url: str) -> None:
    storage = open_storage(storage_url, create=True)
    study = optuna.create_study(storage=storage, study_name="taken", direction="maximize")
    trial = study.ask()
    trial.report(0.5, 0)
    # another worker found it stale and failed it, before the write-behind
    optuna.storages.RDBStorage(storage_url).set_trial_state_values(
        trial._trial_id, optuna.trial.TrialState.FAIL)
    storage.flush()
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        trial.report(0.6, 1)  # the next record says so at once, as Optuna's path does
    stored = optuna.storages.RDBStorage(storage_url).get_trial(trial._trial_id)
    assert stored.state == optuna.trial.TrialState.FAIL and stored.intermediate_values == {}
    storage.engine.dispose()


def test_held_records_take_one_statement_per_table(storage_url: str) -> None:
    import sqlalchemy

    storage = open_storage(storage_url, create=True)
    study = optuna.create_study(storage=storage, study_name="batched", direction="maximize")
    names = [f"p{i}" for i in range(6)]
    study.optimize(lambda t: sum(t.suggest_float(n, 0, 1) for n in names), n_trials=1)
    trial = study.ask()
    for name in names:
        trial.suggest_float(name, 0, 1)
    for step in range(5):
        trial.report(step / 10, step)
    trial.set_user_attr("worker", "here")
    statements: list[str] = []
    sqlalchemy.event.listen(storage.engine, "before_cursor_execute",
                            lambda *args: statements.append(args[2]))
    storage.flush()
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 3 and len(statements) <= 4, statements  # no row by row fallback
    stored = optuna.storages.RDBStorage(storage_url).get_trial(trial._trial_id)
    assert stored.params == trial.params and len(stored.intermediate_values) == 5
    storage.engine.dispose()


def test_other_workers_trials_are_seen_within_the_read_reuse(storage_url: str) -> None:
    storage = open_storage(storage_url, create=True)
    study = optuna.create_study(storage=storage, study_name="reuse", direction="maximize")
    mine = study.ask()
    assert len(study.get_trials(deepcopy=False)) == 1  # its own new trial, at once
    other = optuna.load_study(study_name="reuse", storage=optuna.storages.RDBStorage(storage_url))
    other.optimize(lambda t: 1.0, n_trials=1)
    deadline = time.monotonic() + storage.READ_REUSE_S + 5
    while len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))) < 1:
        assert time.monotonic() < deadline, "another worker's trial never seen"
        time.sleep(0.05)
    study.tell(mine, 0.5)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 2  # its own end, at once
    storage.engine.dispose()


def test_a_joining_worker_checks_stored_distributions_without_a_query_per_name(
        storage_url: str) -> None:
    import sqlalchemy

    first = open_storage(storage_url, create=True)
    study = optuna.create_study(storage=first, study_name="join", direction="maximize")
    names = [f"p{i}" for i in range(6)]
    study.optimize(lambda t: sum(t.suggest_float(n, 0, 1) for n in names), n_trials=1)
    study.optimize(lambda t: t.suggest_categorical("act", ["relu", "tanh"]) and 1.0, n_trials=1)

    joining = open_storage(storage_url, create=True)  # another worker, nothing cached yet
    joined = optuna.load_study(study_name="join", storage=joining,
                               sampler=optuna.samplers.RandomSampler(seed=0))  # reads nothing
    trial = joined.ask()
    statements: list[str] = []
    sqlalchemy.event.listen(joining.engine, "before_cursor_execute",
                            lambda *args: statements.append(args[2]))
    for name in names:
        trial.suggest_float(name, 0, 1)
    assert len(statements) == 1, statements  # the study's distributions, read once
    with pytest.raises(ValueError):  # other choices under a stored name: refused, as Optuna does
        trial.suggest_categorical("act", ["relu", "gelu"])
    joined.tell(trial, 1.0)
    plain = optuna.storages.RDBStorage(storage_url).get_trial(trial._trial_id)
    assert plain.params == trial.params and set(plain.params) == set(names)
    first.engine.dispose()
    joining.engine.dispose()


def test_records_whose_write_failed_are_written_at_the_next_flush(
        storage_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy

    from search.running import RunningTrials

    storage = open_storage(storage_url, create=True)
    study = optuna.create_study(storage=storage, study_name="again", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    trial = study.ask()
    x = trial.suggest_float("x", 0, 1)
    trial.report(0.5, 0)
    trial.set_user_attr("worker", "here")
    write = RunningTrials._write_if_running
    calls: list[str] = []

    def flaky(self: RunningTrials, table: sqlalchemy.Table, *args: object) -> bool:
        calls.append(table.name)
        if len(calls) == 2:  # the parameters went through; the database drops then
            raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("server closed"))
        return write(self, table, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(RunningTrials, "_write_if_running", flaky)
    with pytest.raises(sqlalchemy.exc.OperationalError):
        storage.flush()
    trial.report(0.75, 1)  # held meanwhile, beside what failed
    study.tell(trial, 0.75)  # writes what is left, then the state
    assert calls[2:] == ["trial_intermediate_values", "trial_user_attributes"]
    stored = optuna.storages.RDBStorage(storage_url).get_trial(trial._trial_id)
    assert stored.state == optuna.trial.TrialState.COMPLETE and stored.params == {"x": x}
    assert stored.intermediate_values == {0: 0.5, 1: 0.75}
    assert stored.user_attrs == {"worker": "here"}
    storage.engine.dispose()


def test_parameters_are_written_right_after_their_burst(storage_url: str) -> None:
    from search.running import PARAMS_DELAY_S

    storage = open_storage(storage_url, create=True)
    study = optuna.create_study(storage=storage, study_name="burst", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    trial = study.ask()
    trial.set_user_attr("worker", "here")  # its write-behind is due in WRITE_BEHIND_S
    x = trial.suggest_float("x", 0, 1)
    sampled = time.monotonic()  # however long sampling took, the write is due soon after
    held = storage._running._held[trial._trial_id]
    assert held.due <= sampled + PARAMS_DELAY_S  # brought forward for the parameters
    plain = optuna.storages.RDBStorage(storage_url)
    deadline = time.monotonic() + 5
    while True:  # with them, the attribute held before the burst
        stored = plain.get_trial(trial._trial_id)
        if (stored.params, stored.user_attrs) == ({"x": x}, {"worker": "here"}):
            break
        assert time.monotonic() < deadline, "parameters not written"
        time.sleep(0.01)
    study.tell(trial, 1.0)
    storage.engine.dispose()


def test_a_study_s_configuration_is_read_back_with_the_defaults_it_was_made_with(
        tmp_path: Path) -> None:
    """``evaluate`` retrains a trial as its search trained it even after hpsearch's defaults
    change: the stored resolved study file wins; what the author wrote is the fallback for a
    setting since removed; a configuration that validates neither way is one clear error."""
    from search.errors import UserError
    from search.evaluate import stored_spec
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
