"""Each internal of Keras or TensorFlow that hpsearch relies on, made to look changed (as an
upgrade could change it): one warning, the plain path, and trials still complete.

The internals and what each falls back to: the fused optimizer update (``objectives/speed.py``:
Keras's own update), the gradient-registry cleanup (``objectives/session.py``: entries kept),
Optuna's study and trial ids (``search/optuna_ids.py``: nothing listed on the dashboard after a
trial), the state of Keras's callbacks that checkpoints restore (``objectives/checkpoints.py``:
no checkpoints).
The one read of Optuna's tables (``search/heartbeats.py``) is forced to its fallback in
``tests/test_workers.py``; the storage itself uses Optuna's public API only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from objectives import checkpoints, session, speed
from search import optuna_ids


@pytest.fixture
def checks_again() -> Iterator[None]:
    """The start-up checks run once per process: run them again for this test and after it."""
    checks = (speed.fused_update_supported, session._gradient_registry, optuna_ids.supported,
              checkpoints.callback_state_supported)
    for check in checks:
        check.cache_clear()
    yield
    for check in checks:
        check.cache_clear()


def _two_trials(write_study: Callable[..., Path], tmp_path: Path) -> optuna.Study:
    from conftest import TINY_STUDY

    from search.runner import run_study
    from search.studyfile import load

    text = TINY_STUDY.replace("n_trials = 3", "n_trials = 2").replace(
        "max_epochs = 3", "max_epochs = 1")
    return run_study(load(write_study(text)), f"sqlite:///{tmp_path / 'f.db'}").study


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_a_keras_without_the_autocast_internals_trains_with_keras_s_own_update(
        monkeypatch: pytest.MonkeyPatch, checks_again: None, write_study: Callable[..., Path],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(speed, "AUTOCAST_SCOPE", ("keras.src.backend.common.variables",
                                                  "get_autocast_scope_renamed"))
    fused: list[object] = []
    monkeypatch.setattr(speed, "fuse_updates", lambda *args: fused.append(args))
    monkeypatch.setattr("objectives.mlp.fuse_updates", speed.fuse_updates)
    study = _two_trials(write_study, tmp_path)
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
    assert not speed.fused_update_supported()
    assert not speed.fused_update_supported()  # said once
    assert len(_warnings(caplog, "not (grads, trainable_variables)")) == 1


def test_a_tensorflow_without_the_gradient_registry_keeps_its_entries_and_trains(
        monkeypatch: pytest.MonkeyPatch, checks_again: None, write_study: Callable[..., Path],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(session, "REGISTRY_PATH", ("tensorflow.python.framework.ops",
                                                   "_gradient_registry", "_renamed"))
    study = _two_trials(write_study, tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert len(_warnings(caplog, "gradient registry is not where hpsearch expects")) == 1


def test_an_optuna_without_the_study_and_trial_ids_runs_trials_without_dashboard_listings(
        monkeypatch: pytest.MonkeyPatch, checks_again: None, write_study: Callable[..., Path],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from search.dashboard_artifacts import DASHBOARD_PREFIX

    monkeypatch.setattr(optuna_ids, "TRIAL_ID", "_trial_id_renamed")
    study = _two_trials(write_study, tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    stored = study._storage.get_study_system_attrs(study._study_id)
    assert not [key for key in stored if key.startswith(DASHBOARD_PREFIX)]
    assert len(_warnings(caplog, "study and trial ids are not where hpsearch expects")) == 1


def test_a_keras_whose_callbacks_keep_their_state_elsewhere_trains_without_checkpoints(
        monkeypatch: pytest.MonkeyPatch, checks_again: None, write_study: Callable[..., Path],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(checkpoints, "EARLY_STOPPING_STATE",
                        (*checkpoints.EARLY_STOPPING_STATE, "patience_left"))
    saved: list[int] = []
    monkeypatch.setattr("search.checkpoint_store.FolderCheckpoints.save",
                        lambda self, key, data: saved.append(key))
    study = _two_trials(write_study, tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert saved == []
    assert _warnings(caplog, "checkpoints are off") == [
        "checkpoints are off: this Keras has no EarlyStopping.patience_left; trials that are "
        "interrupted start again at epoch 1"]
