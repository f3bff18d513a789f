"""Several real worker processes on one study, on PostgreSQL and SQLite: the budget is exact
and workers carry on when the database drops their connections; a stop signal to ``run
--workers`` stops every worker at once and leaves nothing running; a trial that never beat
is failed after the grace period."""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from conftest import HPSEARCH, interruptible, study_trials, wait_for

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState


def this_study(n_trials: int, epochs: int, *, grace_period: int = 4,
          warm_start: bool | None = None) -> dict[str, Any]:
    """This file's study, for several workers: overrides of the stub study."""
    return dict(
        study={"name": "shared", "n_trials": n_trials, "seed": 5, "warm_start": warm_start},
        sampler=None, data={"validation_fraction": None},
        training={"max_epochs": epochs, "early_stopping_patience": epochs},
        workers={"heartbeat_interval": 1, "grace_period": grace_period, "max_retry": 1,
                 "storage_wait": 60},
        space={"units": {"low": 32, "high": 96}, "activation": None,
               "optimizer": ["adam", "rmsprop"], "batch_size": 64},
    )


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return study_trials(url, "shared")


def _finished(url: str) -> list[optuna.trial.FrozenTrial]:
    return [t for t in _trials(url) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def _mid_trial(url: str, pid: int | None = None) -> bool:
    """A trial is training (it has reported an epoch), on the worker ``pid`` if given."""
    return any(t.state == TrialState.RUNNING and t.intermediate_values
               and (pid is None or t.user_attrs.get("worker", "").endswith(f":{pid}"))
               for t in _trials(url))


def _worker(study_file: Path, url: str) -> subprocess.Popen[str]:
    # TF_CPP_MIN_LOG_LEVEL as a process that imported TensorFlow through hpsearch hands it on.
    return subprocess.Popen([HPSEARCH, "worker", str(study_file), "--threads", "1"],
                            env={**os.environ, "HPSEARCH_STORAGE": url,
                                 "TF_CPP_MIN_LOG_LEVEL": "3"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(workers: list[subprocess.Popen[str]], seconds: float = 300) -> list[str]:
    errors = []
    for worker in workers:
        try:
            _, stderr = worker.communicate(timeout=seconds)
        finally:
            worker.kill()
        errors.append(stderr)
    return errors


def test_three_workers_end_with_exactly_n_trials(
    stub_study: Callable[..., Path], storage_url: str
) -> None:
    """Three workers on one study of 7 trials: exactly 7 finish, each drew its own. On
    PostgreSQL the database ends every connection of theirs meanwhile, every 3 s, three times
    (an administrator, a failover): they carry on."""
    study_file = stub_study(**this_study(7, 2))
    workers = [_worker(study_file, storage_url) for _ in range(3)]
    with _dropping_connections(storage_url) as dropped:
        errors = _finish(workers)
    assert [w.returncode for w in workers] == [0, 0, 0], "\n".join(errors)
    assert dropped() >= (1 if storage_url.startswith("postgresql") else 0)
    assert all("Traceback" not in e for e in errors)
    assert all("absl" not in e for e in errors)  # TensorFlow's start-up notices are dropped
    assert all("WARNING:tensorflow" not in e for e in errors)  # and its Python warnings
    trials = _trials(storage_url)
    finished = _finished(storage_url)
    assert len(finished) == 7
    assert [t.state for t in trials].count(TrialState.RUNNING) == 0
    configurations = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(configurations)) == 7  # the workers did not all draw the same ones
    assert all({"n_layers", "units_l0", "optimizer", "learning_rate"} <= set(t.params)
               for t in finished)
    # every finished trial says which worker ran it (a trial whose connection was ended as it
    # was created failed before it could say, and another trial took its place)
    assert len({t.user_attrs["worker"] for t in finished}) >= 2


@contextlib.contextmanager
def _dropping_connections(url: str, every: float = 3, times: int = 3
                          ) -> Iterator[Callable[[], int]]:
    """On PostgreSQL, end every connection to ``url``'s database but this one's, every ``every``
    seconds, ``times`` times, while the block runs; yields how many times some were ended. On
    SQLite, nothing."""
    if not url.startswith("postgresql"):
        yield lambda: 0
        return
    database = sqlalchemy.engine.make_url(url).database
    admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    terminated = 0
    stop = threading.Event()

    def terminate_connections() -> None:
        nonlocal terminated
        while not stop.wait(every) and terminated < times:
            with admin.connect() as connection:
                killed = connection.exec_driver_sql(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (database,)
                ).scalar()
            terminated += 1 if killed else 0

    killer = threading.Thread(target=terminate_connections)
    killer.start()
    try:
        yield lambda: terminated
    finally:
        stop.set()
        killer.join()
        admin.dispose()


@pytest.mark.parametrize(("how", "backend"), [(signal.SIGTERM, "postgresql"),
                                              (signal.SIGINT, "sqlite")])
def test_a_stop_signal_to_run_with_workers_stops_every_worker_at_once(
    stub_study: Callable[..., Path], tmp_path: Path, how: signal.Signals, backend: str,
    request: pytest.FixtureRequest,
) -> None:
    """SIGTERM or Ctrl-C sent to the run's process alone reaches its workers at once (Ctrl-C
    waited 10 s for them, in which they started trials only to fail them); every failed trial
    was running when the signal came."""
    storage_url = (f"sqlite:///{tmp_path / 'studies.db'}" if backend == "sqlite"
                   else request.getfixturevalue("postgres_url"))
    study_file = stub_study(**this_study(4, 12))
    run = subprocess.Popen(interruptible([HPSEARCH, "run", str(study_file), "--workers", "2"]),
                           env={**os.environ, "HPSEARCH_STORAGE": storage_url},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: _mid_trial(storage_url), 120, "a trial mid-training")
    signalled = datetime.datetime.now()
    started = time.monotonic()
    run.send_signal(how)
    errors = _finish([run], 90)
    took = time.monotonic() - started
    assert run.returncode == 128 + how, "\n".join(errors)
    assert took < 30, took  # no hang
    # Told at once, no worker started a trial after the signal (in the 10 s that Ctrl-C
    # waited, each started new trials, failed when the SIGTERM came)
    trials = _trials(storage_url)
    assert all(t.datetime_start < signalled for t in trials if t.datetime_start is not None)
    assert TrialState.RUNNING not in [t.state for t in trials]
    assert "Traceback" not in errors[0]
    lines = errors[0].strip().splitlines()
    assert lines[-1] == ("interrupted: every worker stopped; run the same command to resume "
                         "the study")
    assert len([line for line in lines if line.startswith("interrupted")]) == 3  # 2 workers
    assert sum(line.startswith("study 'shared' on ") for line in lines) == 1
    trials = _trials(storage_url)
    assert TrialState.RUNNING not in [t.state for t in trials]
    assert TrialState.FAIL in [t.state for t in trials]


def test_run_with_local_workers_never_prints_the_password_nor_starts_more_than_fit(
    stub_study: Callable[..., Path], postgres_url: str
) -> None:
    """``run --workers 500`` on PostgreSQL: capped at what the machine holds with one warning,
    and the password of the storage URL never printed."""
    from search.workers.processes import most_workers

    url = sqlalchemy.engine.make_url(postgres_url).set(password="s3cret").render_as_string(
        hide_password=False)  # trust auth: the server ignores it, hpsearch must hide it
    study_file = stub_study(**this_study(2, 1))
    done = subprocess.run([HPSEARCH, "run", str(study_file), "--storage", url,
                           "--workers", "500"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    most = most_workers(os.cpu_count() or 1, os.sysconf("SC_PHYS_PAGES")
                        * os.sysconf("SC_PAGE_SIZE"))
    warnings = [line for line in done.stderr.splitlines() if line.startswith("--workers 500")]
    assert len(warnings) == 1 and warnings[0].endswith(f"; starting {most}")
    assert f"started {most} workers x 1 TensorFlow threads" in done.stderr
    assert "postgres:***@" in done.stdout
    assert len(_finished(postgres_url)) == 2


def test_a_run_with_workers_checks_the_data_without_importing_tensorflow(
        stub_study: Callable[..., Path], tmp_path: Path) -> None:
    """``run --workers`` creates the study and loads and checks its data in its own process,
    which trains nothing: without importing TensorFlow, which cost that process 3 s before its
    workers could start, and 0.5 GB it held for the whole run (``search.registry``)."""
    study_file = stub_study(**this_study(2, 1))
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    code = ("import sys\n"
            "from search.studyfile import load\n"
            "from search.workers.run import start\n"
            f"started = start(load({str(study_file)!r}), {url!r}, build=False)\n"
            "print(started.left, started.objective, 'tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "None", "False"]
    assert [study.study_name for study in optuna.get_all_study_summaries(url)] == ["shared"]


def test_a_worker_s_threads_bound_tensorflow_and_blas_alike() -> None:
    """``--threads 1`` (``HPSEARCH_TF_THREADS``) gives a worker one TensorFlow thread and one
    BLAS thread: numpy's eigendecomposition of the whitening no longer runs a thread per core
    in each of several workers."""
    code = ("import objectives.keras_setup, tensorflow as tf, threadpoolctl\n"
            "blas = {p['num_threads'] for p in threadpoolctl.threadpool_info()\n"
            "        if p['user_api'] == 'blas'}\n"
            "print(tf.config.threading.get_intra_op_parallelism_threads(), sorted(blas))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HPSEARCH_TF_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "[1]"]


def test_workers_auto_does_not_oversubscribe_the_cores() -> None:
    from search.workers.processes import resolve_layout

    assert resolve_layout("auto", None, cores=2) == (2, 1)
    assert resolve_layout("1", None, cores=8) == (1, 8)
    assert resolve_layout("3", None, cores=8) == (3, 2)
    assert resolve_layout("4", 3, cores=8) == (4, 3)  # told otherwise
    gib = 2**30
    assert resolve_layout("500", None, cores=2, memory=24 * gib) == (2, 1)  # capped, warned
    assert resolve_layout("auto", None, cores=16, memory=6 * gib) == (4, 4)  # by memory


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_trial_that_never_beat_is_failed_after_the_grace_period_by_this_worker_s_clock(
        storage_url: str, stub_study: Callable[..., Path]) -> None:
    """A worker that died between creating its trial and the first heartbeat leaves a trial
    that Optuna's staleness check never sees; the next worker fails it once it has seen it
    unbeaten for the grace period. The trial's stored start is the creating machine's local
    time, so it is not trusted: a start a day ago (a clock or time zone apart) changes nothing,
    and on SQLite it is read back as text, which once crashed the worker."""
    from search.workers.outcomes import TrialReporter
    from search.workers.loop import WorkerLoop
    from search.storage.opening import open_storage
    from search.studies import open_study
    from search.studyfile import load

    spec = load(stub_study(**this_study(3, 1, grace_period=2, warm_start=False)))
    storage = open_storage(storage_url, create=True, heartbeat=(1, 2, 0))
    study = open_study(spec, storage)
    unbeaten, beating = study.ask(), study.ask()
    storage.record_heartbeat(beating._trial_id)
    engine = sqlalchemy.create_engine(storage_url)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("UPDATE trials SET datetime_start = :start WHERE trial_id = :id"),
            {"start": datetime.datetime.now() - datetime.timedelta(days=1),
             "id": unbeaten._trial_id})
    engine.dispose()
    loop = WorkerLoop(spec, storage, study, lambda trial: 0.0, TrialReporter("val", None))
    try:
        loop._fail_trials_that_never_beat()
        states = [t.state for t in study.get_trials(deepcopy=False)]
        assert states == [TrialState.RUNNING, TrialState.RUNNING]  # first seen just now
        time.sleep(2.2)
        loop._fail_trials_that_never_beat()
    finally:
        loop.lock.release()
        storage.engine.dispose()
    failed, running = study.get_trials(deepcopy=False)
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["fail_reason"] == (
        "its worker lost the storage before the first heartbeat")
    assert running.state == TrialState.RUNNING  # it beat: Optuna's own check is in charge


def test_where_optuna_s_tables_are_not_as_expected_unbeaten_trials_are_left_with_one_warning(
        tmp_path: Path, stub_study: Callable[..., Path],
        caplog: pytest.LogCaptureFixture) -> None:
    """The fallback of the one read of Optuna's tables (search/storage/heartbeats.py): a schema
    without the heartbeat table gives one warning, no trial is failed, and trials still run
    to the study's end."""
    from search.storage.heartbeats import HeartbeatAges
    from search.workers.run import run_study
    from search.studyfile import load

    url = f"sqlite:///{tmp_path / 'changed.db'}"
    spec = load(stub_study(**this_study(2, 1)))
    original = HeartbeatAges.of

    def after_an_upgrade(self: HeartbeatAges, study_id: int) -> dict[int, float | None]:
        with self._engine.begin() as connection:  # as if Optuna had renamed its table
            connection.execute(sqlalchemy.text("DROP TABLE IF EXISTS trial_heartbeats"))
        return original(self, study_id)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HeartbeatAges, "of", after_an_upgrade)
        patch.setattr("search.workers.loop.WorkerLoop._counts", _budget_always_spent_once())
        summary = run_study(spec, url)
    assert summary.ran == 2
    assert [t.state for t in summary.study.trials] == [TrialState.COMPLETE] * 2
    warnings = [r for r in caplog.records if "Optuna's tables are not as hpsearch expects"
                in r.getMessage()]
    assert len(warnings) == 1 and "trial_heartbeats.trial_id" in warnings[0].getMessage()


def _budget_always_spent_once() -> Callable[..., dict[TrialState, int]]:
    """WorkerLoop._counts that reports the budget spent by running trials at each first
    count, so that the loop looks for unbeaten trials before every trial."""
    from search.workers.outcomes import count_states
    from search.workers.loop import WorkerLoop

    calls = {"n": 0}

    def counts(self: WorkerLoop) -> dict[TrialState, int]:
        calls["n"] += 1
        real = count_states(self.study.get_trials(deepcopy=False))
        if calls["n"] % 2 == 1:
            real[TrialState.RUNNING] += 100
        return real

    return counts
