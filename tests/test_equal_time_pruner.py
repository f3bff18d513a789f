"""Pruning at equal training time (``[pruner] compare_at = "seconds"``,
``search.equal_time_pruner``), on a deterministic objective whose trials take set seconds per
epoch: a slow trial that learns per epoch as the best fast trial did is stopped, where the
epoch-based rule lets it train to the end; a slow trial that is ahead after the same seconds
goes on; a study of several objectives refuses the setting in one line."""

from __future__ import annotations

import tomllib
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from conftest import stub_study_text
from objectives.record import Key
from search import studyfile
from search.equal_time_pruner import EqualTimePruner, best_by
from search.samplers import make_pruner

EPOCHS = 20
# name -> (seconds per epoch, value at epoch e (1-based))
TRIALS: dict[str, tuple[float, Any]] = {
    "fast-a": (1.0, lambda e: 0.50 + 0.020 * e),
    "fast-b": (1.0, lambda e: 0.51 + 0.020 * e),
    "fast-c": (1.0, lambda e: 0.52 + 0.020 * e),
    # ten times slower, as good as the best fast trial epoch for epoch: behind after any time
    "slow-loser": (10.0, lambda e: 0.52 + 0.020 * e),
    # ten times slower and far ahead after the same time
    "slow-winner": (10.0, lambda e: min(0.99, 0.60 + 0.15 * e)),
}


def _study(compare_at: str) -> optuna.Study:
    spec = studyfile.from_dict(tomllib.loads(stub_study_text(
        pruner={"type": "percentile", "compare_at": compare_at},
        training={"max_epochs": EPOCHS})))
    pruner = make_pruner(spec)
    assert isinstance(pruner, EqualTimePruner) == (compare_at == "seconds")
    study = optuna.create_study(direction="maximize", pruner=pruner)

    def objective(trial: optuna.Trial) -> float:
        name = trial.suggest_categorical("name", list(TRIALS))
        pace, curve = TRIALS[name]
        trial.set_user_attr(Key.PREDICTED_EPOCH_SECONDS, pace)  # as objectives.cost records
        for epoch in range(1, EPOCHS + 1):
            trial.report(curve(epoch), step=epoch - 1)
            trial.set_user_attr(Key.EPOCHS_RUN, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr(Key.SECONDS_PER_EPOCH, pace)
        return max(curve(e) for e in range(1, EPOCHS + 1))

    for name in TRIALS:
        study.enqueue_trial({"name": name})
    study.optimize(objective, n_trials=len(TRIALS))
    return study


def _ended(study: optuna.Study) -> dict[str, tuple[TrialState, int]]:
    return {t.params["name"]: (t.state, t.user_attrs[Key.EPOCHS_RUN]) for t in study.trials}


def test_a_slow_losing_trial_is_stopped_at_equal_time_not_at_equal_epochs() -> None:
    by_epoch = _ended(_study("epoch"))
    assert by_epoch["slow-loser"] == (TrialState.COMPLETE, EPOCHS)  # 200 s, all of them

    by_time = _ended(_study("seconds"))
    # judged after its warm-up (2 epochs) at epoch 3: 30 s, when the fast trials stood at
    # their epoch 20
    assert by_time["slow-loser"] == (TrialState.PRUNED, 3)
    assert by_time["slow-winner"] == (TrialState.COMPLETE, EPOCHS)
    for name in ("fast-a", "fast-b", "fast-c"):
        assert by_time[name] == by_epoch[name] == (TrialState.COMPLETE, EPOCHS)


def test_a_completed_trials_value_after_some_seconds() -> None:
    trial = optuna.trial.create_trial(
        value=0.9, intermediate_values={0: 0.5, 1: 0.7, 2: 0.6, 3: 0.9},
        user_attrs={Key.SECONDS_PER_EPOCH: 2.0})
    assert best_by(trial, 1.9, maximize=True) is None  # no epoch ended yet
    assert best_by(trial, 2.0, maximize=True) == 0.5
    assert best_by(trial, 7.5, maximize=True) == 0.7  # the best of its first three epochs
    assert best_by(trial, 100.0, maximize=True) == 0.9  # ended: its final best
    assert best_by(trial, 7.5, maximize=False) == 0.5
    unmeasured = optuna.trial.create_trial(value=0.9, intermediate_values={0: 0.9})
    assert best_by(unmeasured, 100.0, maximize=True) is None


def test_a_study_of_several_objectives_refuses_compare_at_seconds() -> None:
    with pytest.raises(studyfile.StudyFileError) as raised:
        studyfile.from_dict(tomllib.loads(stub_study_text(
            study={"objectives": ["val_accuracy", "n_params"]},
            pruner={"type": "median", "compare_at": "seconds"})))
    assert raised.value.problems == [
        "pruner.compare_at: 'seconds' judges a study of one objective; a study of several "
        "compares trials of no larger cost at the same epoch: leave it 'epoch'"]
