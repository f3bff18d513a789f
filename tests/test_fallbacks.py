"""Each internal that hpsearch relies on, made to look changed (as an upgrade could change it):
one warning, the plain path, and trials still complete.

The internals are listed once, in the table of ``docs/internals.md``; the first test here holds
that table to the code: every row's bound is in ``pyproject.toml``, its check is a function of
its module, and its test exists (here, or in ``tests/test_workers.py`` for the one read of
Optuna's tables).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from objectives import between_trials, checkpoints, fast_path
from search.artifacts import dashboard_listing
from search.storage import optuna_ids, proxy_client
from search.workers import retries


ROOT = Path(__file__).resolve().parents[1]


def _internals() -> list[dict[str, str]]:
    """The rows of the internals table in docs/internals.md."""
    lines = [line for line in (ROOT / "docs" / "internals.md").read_text().splitlines()
             if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split(" | "))))
            for line in lines[2:]]


def test_the_internals_table_is_what_the_code_and_pyproject_say() -> None:
    rows = _internals()
    assert len(rows) >= 7
    pyproject = (ROOT / "pyproject.toml").read_text()
    tests = "".join((ROOT / "tests" / name).read_text()
                    for name in ("test_fallbacks.py", "test_workers.py"))
    for row in rows:
        path = re.match(r"`([\w/]+)\.py`", row["module"])
        bound = re.fullmatch(r"`([\w-]+)(<[\d.]+)`", row["bound"])
        assert path and bound, row
        module = importlib.import_module(path.group(1).replace("/", "."))
        owner, _, name = row["check"].strip("`").rpartition(".")
        assert callable(getattr(getattr(module, owner) if owner else module, name)), row
        package, limit = bound.groups()
        assert re.search(rf'"{re.escape(package)}>=[\d.]+,{re.escape(limit)}",\s+#.*internals: '
                         r"docs/internals\.md", pyproject), row
        assert f"def {row['test'].strip('`')}(" in tests, row


@pytest.fixture
def checks_again() -> Iterator[None]:
    """The start-up checks run once per process: run them again for this test and after it."""
    checks = (fast_path.fused_update_supported, between_trials._gradient_registry,
              optuna_ids.supported, checkpoints.callback_state_supported,
              retries.optuna_reads_retries,
              dashboard_listing.dashboard_shows_listings, proxy_client.heartbeats_supported)
    for check in checks:
        check.cache_clear()
    yield
    for check in checks:
        check.cache_clear()


def _two_trials(stub_study: Callable[..., Path], tmp_path: Path) -> optuna.Study:
    from search.studyfile import load
    from search.workers.run import run_study

    # the fused update on, as a user's trials have it: some internals are the fused update's
    spec = load(stub_study(study={"n_trials": 2},
                           training={"max_epochs": 1, "fused_optimizer": None}))
    return run_study(spec, f"sqlite:///{tmp_path / 'f.db'}").study


def test_an_optuna_whose_heartbeat_interface_moved_runs_through_a_proxy_without_heartbeats(
        monkeypatch: pytest.MonkeyPatch, checks_again: None, stub_study: Callable[..., Path],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Workers through ``hpsearch proxy`` (a real one, on a SQLite file) run their trials
    without heartbeats: none recorded, and one warning."""
    import sqlalchemy

    from conftest import free_port
    from search.studyfile import load
    from search.workers.run import run_study
    from test_proxy import _proxy

    monkeypatch.setattr(proxy_client, "HEARTBEAT_INTERFACE",
                        ("optuna.storages._heartbeat", "BaseHeartbeatRenamed"))
    database, port = f"sqlite:///{tmp_path / 'behind.db'}", free_port()
    proxy = _proxy(database, port)
    try:
        spec = load(stub_study(study={"n_trials": 2}, training={"max_epochs": 1}))
        study = run_study(spec, f"grpc://127.0.0.1:{port}").study
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    finally:
        proxy.kill()
        proxy.communicate()
    engine = sqlalchemy.create_engine(database)
    with engine.connect() as connection:
        beats = connection.exec_driver_sql("SELECT COUNT(*) FROM trial_heartbeats").scalar()
    engine.dispose()
    assert beats == 0
    assert len(_warnings(caplog, "heartbeat interface is not where hpsearch expects")) == 1


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_a_keras_without_the_autocast_internals_trains_with_keras_s_own_update(
        monkeypatch: pytest.MonkeyPatch, checks_again: None, stub_study: Callable[..., Path],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(fast_path, "AUTOCAST_SCOPE", ("keras.src.backend.common.variables",
                                                      "get_autocast_scope_renamed"))
    fused: list[object] = []
    monkeypatch.setattr(fast_path, "fuse_updates", lambda *args: fused.append(args))
    monkeypatch.setattr("objectives.mlp.fuse_updates", fast_path.fuse_updates)
    study = _two_trials(stub_study, tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert fused == []
    assert _warnings(caplog, "the fused optimizer update is off") == [
        "the fused optimizer update is off: keras.src.backend.common.variables."
        "get_autocast_scope_renamed is gone; trials train with Keras's own update (slower, "
        "the same results)"]


def test_an_optimizer_apply_of_another_signature_turns_the_fused_update_off(
        monkeypatch: pytest.MonkeyPatch, checks_again: None,
        caplog: pytest.LogCaptureFixture) -> None:
    from objectives.keras_setup import keras

    monkeypatch.setattr(keras.optimizers.Optimizer, "apply",
                        lambda self, gradients_and_variables: None)
    assert not fast_path.fused_update_supported()
    assert not fast_path.fused_update_supported()  # said once
    assert len(_warnings(caplog, "not (grads, trainable_variables)")) == 1


def test_a_tensorflow_without_the_gradient_registry_keeps_its_entries_and_trains(
        monkeypatch: pytest.MonkeyPatch, checks_again: None, stub_study: Callable[..., Path],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(between_trials, "REGISTRY_PATH", ("tensorflow.python.framework.ops",
                                                          "_gradient_registry", "_renamed"))
    study = _two_trials(stub_study, tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert len(_warnings(caplog, "gradient registry is not where hpsearch expects")) == 1


def test_an_optuna_without_the_study_and_trial_ids_runs_trials_without_dashboard_listings(
        monkeypatch: pytest.MonkeyPatch, checks_again: None, stub_study: Callable[..., Path],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from search.artifacts.dashboard_listing import DASHBOARD_PREFIX

    monkeypatch.setattr(optuna_ids, "TRIAL_ID", "_trial_id_renamed")
    study = _two_trials(stub_study, tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    stored = study._storage.get_study_system_attrs(study._study_id)
    assert not [key for key in stored if key.startswith(DASHBOARD_PREFIX)]
    assert len(_warnings(caplog, "study and trial ids are not where hpsearch expects")) == 1


def test_a_keras_whose_callbacks_keep_their_state_elsewhere_trains_without_checkpoints(
        monkeypatch: pytest.MonkeyPatch, checks_again: None, stub_study: Callable[..., Path],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(checkpoints, "EARLY_STOPPING_STATE",
                        (*checkpoints.EARLY_STOPPING_STATE, "patience_left"))
    saved: list[int] = []
    monkeypatch.setattr("search.artifacts.checkpoints.FolderCheckpoints.save",
                        lambda self, key, data: saved.append(key))
    study = _two_trials(stub_study, tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert saved == []
    assert _warnings(caplog, "checkpoints are off") == [
        "checkpoints are off: this Keras has no EarlyStopping.patience_left; trials that are "
        "interrupted start again at epoch 1"]


def test_an_optuna_that_reads_retries_elsewhere_counts_them_by_hpsearch_s_own_attributes(
        monkeypatch: pytest.MonkeyPatch, checks_again: None,
        caplog: pytest.LogCaptureFixture) -> None:
    """Optuna's retry readers (``RetryHeartbeatStaleTrialCallback.retried_trial_number`` and
    ``retry_history``) read attributes that only Optuna's callback writes: where they no longer
    read what hpsearch writes, retries are still traced, counted and bounded."""
    monkeypatch.setattr(retries, "FAILED_TRIAL", "failed_trial_renamed")
    monkeypatch.setattr(retries, "RETRY_HISTORY", "retry_history_renamed")
    study = optuna.create_study()
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    dropped: list[int] = []
    stale = retries.RetryStaleTrials(max_retry=2, drop=dropped.append)
    trial = study.ask(distributions)
    for _ in range(3):  # the first try and two retries stop beating, one after the other
        study.tell(trial, state=TrialState.FAIL)
        stale(study, study.trials[trial.number])
        if dropped:
            break
        trial = study.ask()  # the retry, queued first
    first, second, third = study.trials
    assert [retries.first_try(t) for t in study.trials] == [0, 0, 0]
    assert second.user_attrs["resumes"] == 0 and third.user_attrs["resumes"] == 1
    assert second.params == third.params == first.params
    assert dropped == [0]  # two retries, then the lineage's checkpoint is given up
    assert len(_warnings(caplog, "Optuna does not read retries back")) == 1


def test_a_dashboard_that_lists_artifacts_elsewhere_is_said_once_when_it_starts(
        monkeypatch: pytest.MonkeyPatch, checks_again: None,
        caplog: pytest.LogCaptureFixture) -> None:
    """optuna-dashboard's listing of a finished trial's artifacts (study attributes under
    ``dashboard:artifacts:``) is its convention, not its API: the installed one is asked, through
    its own WSGI app, whether it shows a listed artifact; where not, one warning."""
    assert dashboard_listing.dashboard_shows_listings()
    dashboard_listing.dashboard_shows_listings.cache_clear()
    monkeypatch.setattr(dashboard_listing, "DASHBOARD_PREFIX", "dashboard:listed:")
    assert not dashboard_listing.dashboard_shows_listings()
    assert not dashboard_listing.dashboard_shows_listings()  # said once
    assert len(_warnings(caplog, "this optuna-dashboard does not show")) == 1
