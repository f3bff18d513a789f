"""The ``hpsearch`` command, run in-process: exit codes, messages, resuming, reading back."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner, Result
from optuna.trial import TrialState

from search.cli import cli

BIN = Path(sys.executable).parent


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def finished(url: str, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=url)
    return [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def test_run_resume_and_read_back(write_study: Callable[..., Path], storage_url: str,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    study_file = write_study()
    freezes: list[int] = []
    monkeypatch.setattr(gc, "freeze", lambda: freezes.append(len(freezes)))
    first = invoke("run", str(study_file), "--storage", storage_url)
    assert first.exit_code == 0, first.output
    assert "study tiny: ran 3 trials" in first.stdout
    # the command's process leaves what it holds before its trials out of the cyclic garbage
    # collector, once (search.workers.run.freeze_start_up)
    assert freezes == [0]
    assert "trial 2 " in first.stderr  # one line per finished trial
    where = (f"the SQLite file {storage_url.removeprefix('sqlite:///')}"
             if storage_url.startswith("sqlite") else
             f"database '{storage_url.rsplit('/', 1)[1]}' on the PostgreSQL server at "
             "127.0.0.1:5432")
    assert first.stderr.splitlines()[0] == (
        f"study 'tiny' on {where}: 0 trials finished, running up to 3")
    assert len(finished(storage_url)) == 3

    # Run again, in a process of its own: the budget is spent, and it ends without importing
    # TensorFlow (the objective is built only when trials are left: search.workers.run.start).
    again = _in_a_fresh_process(
        f"result = CliRunner().invoke(cli, ['run', {str(study_file)!r}, '--storage', "
        f"{storage_url!r}])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'already has 3 finished trials' in result.stderr, result.stderr\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n",
        cwd=study_file.parent)
    assert again.returncode == 0, again.stderr

    more = invoke("run", str(study_file), "--storage", storage_url, "--n-trials", "4")
    assert more.exit_code == 0 and "ran 1 trials" in more.stdout
    assert sorted(t.number for t in finished(storage_url)) == [0, 1, 2, 3]

    status = invoke("status", "--storage", storage_url)
    assert status.exit_code == 0 and "study tiny (maximize val_accuracy): 4 trials" in status.stdout
    table = invoke("trials", "--storage", storage_url, "--format", "csv")
    lines = table.stdout.strip().splitlines()
    assert lines[0].startswith("number,label,state,value,train_accuracy") and len(lines) == 5
    best = invoke("best", "--storage", storage_url, "--study", "tiny")
    assert best.exit_code == 0 and "val_accuracy = " in best.stdout and "n_layers = " in best.stdout

    # a plain Optuna study: Optuna's own command reads it
    optuna_cli = subprocess.run(
        [str(BIN / "optuna"), "trials", "--storage", storage_url, "--study-name", "tiny",
         "-f", "json"], capture_output=True, text=True, timeout=120,
    )
    assert optuna_cli.returncode == 0, optuna_cli.stderr
    assert optuna_cli.stdout.count('"number"') == 4


def test_storage_from_environment(write_study: Callable[..., Path], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    result = invoke("run", str(write_study()), "--n-trials", "1", env={"HPSEARCH_STORAGE": url})
    assert result.exit_code == 0, result.output
    assert len(finished(url)) == 1


def test_default_storage_is_a_sqlite_file_in_the_working_directory(
    write_study: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPSEARCH_STORAGE", raising=False)
    assert invoke("run", str(write_study()), "--n-trials", "1").exit_code == 0
    assert (tmp_path / "hpsearch.db").exists()


def test_a_different_space_is_refused_and_nothing_is_written(
    write_study: Callable[..., Path], stub_study: Callable[..., Path], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert invoke("run", str(write_study()), "--storage", url, "--n-trials", "1").exit_code == 0
    changed = stub_study(space={"activation": ["relu", "gelu"]}, name="changed.toml")
    result = invoke("run", str(changed), "--storage", url, "--n-trials", "2")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: study 'tiny' exists with a different search space (space.activation.choices: "
        "stored ['relu', 'tanh'], file ['relu', 'gelu']): resuming would mix two spaces; give "
        "the study another name"
    ]
    assert len(optuna.load_study(study_name="tiny", storage=url).trials) == 1


BAD_RUNS = [
    (["run", "{dir}/missing.toml"], "{dir}/missing.toml: no such study file"),
    (["run", "{study}", "--storage", "sqlite:///{dir}/no/such/folder/x.db"],
     "storage 'sqlite:///{dir}/no/such/folder/x.db': the folder {dir}/no/such/folder does not "
     "exist"),
    (["run", "{study}", "--storage", "not a url"],
     "malformed storage URL 'not a url': expected e.g. sqlite:///hpsearch.db, "
     "postgresql+psycopg://user@host:5432/db"),
    (["run", "{study}", "--storage", "postgresql+psycopg://u:s3cret@host:port/db"],
     "malformed storage URL 'postgresql+psycopg://u:***@host:port/db': expected e.g."),
    (["run", "{study}", "--storage", "oracle://u@h/db"],
     "unsupported storage 'oracle' in 'oracle://u@h/db': use sqlite, postgresql or grpc"),
    (["run", "{study}", "--storage", "postgresql+psycopg://u:s3cret@127.0.0.1:1/db"],
     "cannot reach storage 'postgresql+psycopg://u:***@127.0.0.1:1/db': connection failed:"),
    (["status", "--storage", "sqlite:///{dir}/absent.db"],
     "no storage at 'sqlite:///{dir}/absent.db': the file {dir}/absent.db does not exist"),
    (["validate", "{dir}/bad.toml"], "{dir}/bad.toml: space.dropout: Input should be less than "
     "1, but got 3"),
    (["validate", "{dir}/nodata.toml"], "{dir}/nodata.toml: data.path: {dir}/none.tar.gz does "
     "not exist on this machine (run and worker take another with --data-path)"),
    (["run", "{study}", "--storage", "sqlite://"],
     "storage 'sqlite://' is a SQLite database in memory: nothing would be kept and workers "
     "could not share it; give a file, e.g. sqlite:///hpsearch.db"),
    (["run", "{study}", "--storage", "sqlite:///:memory:", "--workers", "2"],
     "storage 'sqlite:///:memory:' is a SQLite database in memory"),
    (["status", "--storage", "sqlite://"], "storage 'sqlite://' is a SQLite database in memory"),
    (["run", "{study}", "--storage", "postgresql+psycopg://"],
     "storage 'postgresql+psycopg://' names no database: e.g. "
     "postgresql+psycopg://user@host:5432/db"),
    (["run", "{study}", "--storage", "postgresql+psycopg://u:s3cret@127.0.0.1"],
     "storage 'postgresql+psycopg://u:***@127.0.0.1' names no database"),
    (["run", "{dir}/pca.toml", "--storage", "sqlite:///{dir}/x.db"],
     "space.pca_components: reaches 4946, but the data's images hold 3072 values each (PCA "
     "keeps at most 3072 directions)"),
    (["run", "{dir}/pca.toml", "--storage", "sqlite:///{dir}/x.db", "--workers", "2"],
     "space.pca_components: reaches 4946"),  # checked by the run, which trains nothing itself
    (["run", "{study}", "--storage", "sqlite:///{dir}/lock.d/x.db"],
     "storage 'sqlite:///{dir}/lock.d/x.db': {dir}/lock.d/x.db.tiny.lock is in the way "
     "(hpsearch and SQLite keep a file of that name beside the database): move it"),
    (["run", "{study}", "--storage", "sqlite:///{dir}/study.toml"],
     "cannot reach storage 'sqlite:///{dir}/study.toml': file is not a database"),
]


@pytest.mark.parametrize(("args", "message"), BAD_RUNS)
def test_user_errors_are_one_line_and_write_nothing(
    write_study: Callable[..., Path], tmp_path: Path, args: list[str], message: str
) -> None:
    study = write_study()
    write_study("[study]\nn_trials = 1\n[space]\ndropout = 3\n", name="bad.toml")
    write_study(f'[study]\nn_trials = 1\n[data]\ndataset = "cifar10"\npath = '
                f'"{tmp_path}/none.tar.gz"\n', name="nodata.toml")
    write_study('[study]\nn_trials = 1\n[space]\npreprocessing = ["scale", "pca"]\n'
                'pca_components = {low = 4030, high = 4946}\n', name="pca.toml")
    (tmp_path / "lock.d" / "x.db.tiny.lock").mkdir(parents=True)
    fill = {"dir": str(tmp_path), "study": str(study)}
    result = invoke(*(arg.format(**fill) for arg in args))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: " + message.format(**fill))
    assert "s3cret" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml", "lock.d", "nodata.toml",
                                                          "pca.toml", "study.toml"]
    assert [p.name for p in (tmp_path / "lock.d").iterdir()] == ["x.db.tiny.lock"]


def test_a_dashboard_host_not_of_this_machine_is_named(tmp_path: Path) -> None:
    database = tmp_path / "d.db"
    optuna.storages.RDBStorage(f"sqlite:///{database}").engine.dispose()  # an empty storage
    result = invoke("dashboard", "--storage", f"sqlite:///{database}", "--host", "203.0.113.5")
    assert result.exit_code == 1
    assert result.stderr.strip() == ("Error: --host 203.0.113.5: not an address of this "
                                     "machine; pick one of its own with --host (0.0.0.0: all "
                                     "of them)")


def _read_only(path: Path) -> Callable[[], None]:
    """Make ``path`` read-only, also for root (immutable); returns the undo."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        return lambda: path.chmod(0o644)
    subprocess.run(["chattr", "+i", str(path)], check=True)
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_sqlite_file_is_one_line_and_gets_no_journal(
        write_study: Callable[..., Path], tmp_path: Path) -> None:
    database = tmp_path / "ro.db"
    optuna.storages.RDBStorage(f"sqlite:///{database}").engine.dispose()  # an empty storage
    before = sorted(p.name for p in tmp_path.iterdir())
    undo = _read_only(database)
    try:
        result = invoke("run", str(write_study()), "--storage", f"sqlite:///{database}")
    finally:
        undo()
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: storage 'sqlite:///{database}': the file {database} is read-only"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before + ["study.toml"]


def test_a_database_of_other_tables_is_refused_not_given_optuna_s(
        write_study: Callable[..., Path], storage_url: str, tmp_path: Path) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(storage_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    result = invoke("run", str(write_study()), "--storage", storage_url)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[0].endswith(
        "holds tables that are not Optuna's (invoices): give hpsearch a database of its own")
    assert sqlalchemy.inspect(engine).get_table_names() == ["invoices"]
    engine.dispose()


@pytest.mark.parametrize("problem, message", [
    ("missing", "no such file or folder"),
    ("corrupt", "archive is corrupt or truncated"),
])
def test_a_data_source_that_cannot_be_loaded_leaves_no_storage_behind(
        stub_study: Callable[..., Path], storage_url: str, tmp_path: Path, problem: str,
        message: str) -> None:
    import sqlalchemy

    source = tmp_path / "data" / "cifar-10-python.tar.gz"
    if problem == "corrupt":
        source.parent.mkdir()
        source.write_bytes(b"not an archive at all")
    study_file = stub_study(data={"dataset": "cifar10", "path": str(source)}, name="data.toml")
    result = invoke("run", str(study_file), "--storage", storage_url)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0].lower(), lines
    if storage_url.startswith("sqlite"):
        database = Path(storage_url.removeprefix("sqlite:///"))
        assert list(database.parent.glob(database.name + "*")) == []
        assert list(database.parent.glob("*-artifacts")) == []
    else:
        engine = sqlalchemy.create_engine(storage_url)
        assert sqlalchemy.inspect(engine).get_table_names() == []
        engine.dispose()
        assert list(Path(os.environ["HPSEARCH_ARTIFACTS"]).iterdir()) == []


@pytest.mark.parametrize("args", [["run"], ["run", "x.toml", "--n-trials", "0"],
                                  ["trials", "--format", "xml"], ["nope"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2


def test_unknown_study_name(write_study: Callable[..., Path], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    invoke("run", str(write_study()), "--storage", url, "--n-trials", "1")
    result = invoke("best", "--storage", url, "--study", "other")
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: no study 'other' in the storage; it holds ['tiny']"
    result = invoke("best", "--storage", url, "--study", "x" * 5000)
    assert result.stderr.strip() == ("Error: no study '" + "x" * 59 + "... (5000 characters) in "
                                     "the storage; it holds ['tiny']")


def test_validate_prints_the_resolved_space(write_study: Callable[..., Path]) -> None:
    result = invoke("validate", str(write_study()))
    assert result.exit_code == 0
    assert "study tiny: maximize val_accuracy, budget 3 trials" in result.stdout
    assert "units_l{i}" in result.stdout and "optimizer == 'sgd'" in result.stdout


@pytest.mark.parametrize("command", ["validate", "run"])
def test_validate_refuses_what_run_refuses(
        write_study: Callable[..., Path], tmp_path: Path, command: str) -> None:
    """A sampler whose package is missing: validate says what run says (it said valid)."""
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("PyTorch is installed here: the GP sampler can be made")
    path = write_study('[study]\nn_trials = 1\n[sampler]\ntype = "gp"\n')
    args = [] if command == "validate" else ["--storage", f"sqlite:///{tmp_path / 'x.db'}"]
    result = invoke(command, str(path), *args)
    assert result.exit_code == 1
    assert result.stderr.strip() == ("Error: sampler.type 'gp' needs PyTorch: pip install "
                                     "'hpsearch[gp]'")
    assert not (tmp_path / "x.db").exists()


def test_validate_shows_the_warm_start_trials_within_the_budget(
        write_study: Callable[..., Path]) -> None:
    def first_trials(text: str) -> list[str]:
        result = invoke("validate", str(write_study(text, name="w.toml")))
        assert result.exit_code == 0, result.output
        out = result.stdout
        return [line for line in out.splitlines() if line.startswith("first trials")]

    budget = '[study]\nn_trials = {n}\n[data]\ndataset = "stub"\n'
    two = first_trials(budget.format(n=5))
    assert [line.split("),")[0] for line in two] == [
        "first trials: a reference configuration (warm_start, 18 epochs",
        "first trials: a reference configuration (warm_start, 40 epochs"]
    assert "units_l0=1024" in two[1]
    assert len(first_trials(budget.format(n=1))) == 1  # the budget holds one
    cold = budget.format(n=5).replace("[data]", "warm_start = false\n[data]")
    assert first_trials(cold) == []


def _in_a_fresh_process(script: str, cwd: Path | None = None
                        ) -> subprocess.CompletedProcess[str]:
    """``script`` run by a new Python process, in ``cwd`` (by default the repository), after
    ``import sys``, ``CliRunner`` and the ``cli``."""
    repo = Path(__file__).resolve().parent.parent
    script = ("import sys\n"
              "from click.testing import CliRunner\n"
              "from search.cli import cli\n") + script
    return subprocess.run([sys.executable, "-c", script], cwd=cwd or repo, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(repo)})


def test_every_command_has_help_and_none_imports_tensorflow() -> None:
    done = _in_a_fresh_process(
        "for args in [['--help'], ['run', '--help'], ['validate', '--help'], ['status', '--help'],"
        " ['trials', '--help'], ['best', '--help'], ['dashboard', '--help'],"
        " ['compare', '--help'], ['validate', 'studies/cifar10-mlp.toml'],"
        " ['validate', 'studies/cifar10-pareto.toml']]:\n"
        "    result = CliRunner().invoke(cli, args)\n"
        "    assert result.exit_code == 0, (args, result.output)\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n")
    assert done.returncode == 0, done.stderr


def test_fixed_trials_run_first_with_their_label_and_epochs(
    stub_study: Callable[..., Path], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    study_file = stub_study(fixed_trials=[{
        "label": "hand-built", "max_epochs": 2, "hidden_layers": [32, 16], "activation": "tanh",
        "optimizer": "sgd", "momentum": 0.9, "nesterov": True}])
    result = invoke("run", str(study_file), "--storage", url, "--n-trials", "2")
    assert result.exit_code == 0 and "ran 2 trials" in result.stdout
    first = optuna.load_study(study_name="tiny", storage=url).trials[0]
    assert first.user_attrs["label"] == "hand-built"
    assert first.user_attrs["epochs_run"] == 2
    assert {k: first.params[k] for k in ("n_layers", "units_l0", "units_l1", "activation",
                                         "momentum", "nesterov")} == {
        "n_layers": 2, "units_l0": 32, "units_l1": 16, "activation": "tanh", "momentum": 0.9,
        "nesterov": True}
    assert 0.0 <= first.user_attrs["test_accuracy"] <= 1.0


def test_outputs_that_cannot_be_written_are_refused_before_any_work(
        write_study: Callable[..., Path], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert invoke("run", str(write_study()), "--storage", url, "--n-trials", "1").exit_code == 0
    locked = tmp_path / "locked"
    locked.mkdir()
    undo = _read_only(locked)
    try:
        for command in ("report", "evaluate"):
            result = invoke(command, "--storage", url, "--output", str(locked / "out"))
            assert result.exit_code == 1, result.output
            assert result.stderr.strip().splitlines() == [
                f"Error: --output {locked / 'out'}: cannot write there ({locked} is not "
                "writable)"], command
            assert "retrain" not in result.output
    finally:
        undo()
    assert list(locked.iterdir()) == []
    assert not list(tmp_path.glob("hpsearch-evaluations*"))


def test_a_trial_the_budget_ends_before_its_first_epoch_runs_again_first_next_time(
        stub_study: Callable[..., Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's time budget can end a trial before it completes an epoch; that trial failed for
    want of time, not of its own, so the study's next run trains it again, before anything
    new, with its parameters."""
    from objectives import budget

    study_file = stub_study(study={"warm_start": False})
    url = f"sqlite:///{tmp_path / 'cut.db'}"
    # The budget ends right after the first trial starts, at its first training step: not
    # left to the machine's speed (the budget counts from the command's start).
    asked = []

    def ends_once_a_trial_started() -> bool:
        asked.append(True)
        return len(asked) > 1  # the worker's look before its first trial is the first

    with monkeypatch.context() as patch:
        patch.setattr(budget, "spent", ends_once_a_trial_started)
        cut = invoke("run", str(study_file), "--storage", url, "--timeout", "3600")
    assert cut.exit_code == 0, cut.output
    (first,) = optuna.load_study(study_name="tiny", storage=url).trials
    assert first.state == TrialState.FAIL
    assert first.user_attrs["stop_reason"] == "time_budget"
    assert ("1 failed in all (1 stopped by the user or the time budget, to run again first "
            "when the study next runs)") in cut.output
    again = invoke("run", str(study_file), "--storage", url, "--n-trials", "1")
    assert again.exit_code == 0, again.output
    assert ("trial 0 was cut by a run's time budget before its first epoch: queued to run "
            "again") in again.stderr
    first, retry = optuna.load_study(study_name="tiny", storage=url).trials
    assert retry.state == TrialState.COMPLETE
    assert retry.params == first.params and retry.user_attrs["resumes"] == 0
    assert "(1 stopped" not in again.output  # retried: nothing left to run again


def test_a_time_budget_ends_the_running_trial_at_its_best_epoch_not_after_it(
        stub_study: Callable[..., Path], tmp_path: Path) -> None:
    """With a timeout, a trial still training when it ends stops and is recorded at its best
    epoch (Optuna's own timeout would let it train its 400 epochs first)."""
    import time

    # no warm start: the first reference trains 18 epochs only, and on a loaded machine a
    # second trial could start and rightly fail for want of time before its first epoch
    study_file = stub_study(study={"warm_start": False},
                            training={"max_epochs": 400, "early_stopping_patience": 400})
    url = f"sqlite:///{tmp_path / 'budget.db'}"
    started = time.monotonic()
    result = invoke("run", str(study_file), "--storage", url, "--timeout", "8")
    took = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert took < 60, took  # not the hundreds of seconds of 400 epochs
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    last = trials[-1]
    assert last.state == TrialState.COMPLETE, last.user_attrs
    assert last.user_attrs["stop_reason"] == "time_budget"
    assert 1 <= last.user_attrs["epochs_run"] < 400
    assert "time_budget" in result.stderr
    # and no trial starts after it only to fail for want of time
    assert all(trial.state == TrialState.COMPLETE for trial in trials), [
        (trial.state, trial.user_attrs.get("fail_reason")) for trial in trials]


def test_a_time_budget_counts_from_the_command_s_start(
        stub_study: Callable[..., Path], tmp_path: Path) -> None:
    """A real process: ``--timeout 14`` has the run's summary out about 14 s after the command
    started, not 14 s after TensorFlow, the data and the storage were ready (12.5 s late for
    8 s of them before). What follows the summary, Python and TensorFlow shutting down, is not
    counted."""
    import time

    study_file = stub_study(training={"max_epochs": 400, "early_stopping_patience": 400})
    env = {**os.environ, "HPSEARCH_STORAGE": f"sqlite:///{tmp_path / 'budget.db'}",
           "TF_CPP_MIN_LOG_LEVEL": "3", "HPSEARCH_ARTIFACTS": str(tmp_path / "artifacts")}
    import datetime

    started = time.monotonic()
    started_at = datetime.datetime.now()
    process = subprocess.Popen([str(BIN / "hpsearch"), "run", str(study_file), "--n-trials",
                                "50", "--timeout", "14"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        next(line for line in process.stdout if line.startswith("study tiny: ran"))
        took = time.monotonic() - started
        process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0
    first = optuna.load_study(study_name="tiny", storage=env["HPSEARCH_STORAGE"]).trials[0]
    assert first.datetime_start is not None
    startup = (first.datetime_start - started_at).total_seconds()  # TensorFlow, data, storage
    # The trial stops a twentieth before the end and is stored within it. Counted from the
    # first trial, the summary came the start-up's seconds later: on a loaded machine those
    # grow, and so may the wrap-up, hence an allowance of half of them.
    assert took < 14 + 1.0 + startup / 2, (took, startup)
