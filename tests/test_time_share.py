"""No trial takes more than a share of a worker's time budget unless it leads the study
(``[study] max_trial_share``, ``objectives.budget``, ``callbacks.StopPastShare``): on the real
objective, with the trial's clock set by a test hook, a trial past its share that is behind
the study's best is pruned (``time_share``) at the next step, one that leads trains on; through
``hpsearch run``, with a share too small for any trial, the first trial (nothing to lead yet)
completes and the others are pruned before their first epoch ends."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from conftest import study_trials
from objectives import budget
from objectives.config import DataConfig, TrainingConfig
from objectives.keras_setup import keras
from objectives.mlp import create_objective
from objectives.space import SearchSpace
from search.cli.commands import cli

DATA = DataConfig(dataset="stub", validation_fraction=0.2)
SPACE = SearchSpace.model_validate({"n_layers": 1, "units": 32, "activation": "relu",
                                    "optimizer": "adam", "batch_size": 128})
EPOCHS = 6


def test_the_limit_and_who_leads() -> None:
    try:
        budget.end_at(100.0, 1800.0, 0.25)
        assert budget.trial_limit() == 450.0
        budget.end_at(100.0, 1800.0, 1.0)  # the whole budget: no rule
        assert budget.trial_limit() is None
        budget.end_at(None, None, 0.25)  # no time budget, no share of it
        assert budget.trial_limit() is None
    finally:
        budget.end_at(None, None)
    assert budget.leads(0.61, 0.60, maximize=True)
    assert budget.leads(0.60, 0.60, maximize=True)  # level with the best leads
    assert not budget.leads(0.59, 0.60, maximize=True)
    assert budget.leads(0.9, 1.0, maximize=False)  # a loss: lower leads
    assert budget.leads(None, None, maximize=True)  # nothing completed: nothing to lead
    assert not budget.leads(None, 0.1, maximize=True)  # no epoch of its own yet


class _ClockFrom:
    """Trial hooks whose callback sets a 30-minute budget of which a trial may take a quarter
    (450 s), and makes the trial's clock read ``200 * epoch`` seconds after its start: past
    its share from epoch 3 (0-based; 600 s) on."""

    def __init__(self) -> None:
        self.elapsed = 0.0

    def callbacks(self, trial: optuna.trial.Trial) -> list[keras.callbacks.Callback]:
        clock = self

        class Clock(keras.callbacks.Callback):
            def on_train_begin(self, logs: object = None) -> None:
                budget.end_at(1e12, 1800.0, 0.25)

            def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
                clock.elapsed = 200.0 * epoch

        return [Clock()]

    def after_training(self, *args: object) -> None:
        pass

    def now(self, trial: optuna.trial.Trial) -> Callable[[], dt.datetime]:
        started = trial.datetime_start
        assert started is not None
        return lambda: started + dt.timedelta(seconds=self.elapsed)


@pytest.mark.parametrize("best, stopped", [(0.99, True), (0.0, False)],
                         ids=["behind-the-best", "leading"])
def test_a_trial_past_its_share_goes_on_only_while_it_leads(
        best: float, stopped: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from objectives import callbacks

    hooks = _ClockFrom()
    made = callbacks.StopPastShare.__init__

    def with_the_test_clock(self: callbacks.StopPastShare, trial: optuna.trial.Trial,
                            *args: object) -> None:
        made(self, trial, *args)  # type: ignore[arg-type]
        self.now = hooks.now(trial)

    monkeypatch.setattr(callbacks.StopPastShare, "__init__", with_the_test_clock)
    run = create_objective(
        space=SPACE, data=DATA, metric="val_accuracy", seed=0, hooks=hooks,
        training=TrainingConfig(max_epochs=EPOCHS, early_stopping_patience=EPOCHS))
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=best))  # the study's best completed trial
    try:
        study.optimize(run, n_trials=1)
    finally:
        budget.end_at(None, None)
    trial = study.trials[1]
    if stopped:  # at the first step of epoch 4 (600 s), with three epochs recorded
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs["stop_reason"] == "time_share"
        assert trial.user_attrs["epochs_run"] == 3
        assert sorted(trial.intermediate_values) == [0, 1, 2]
    else:
        assert trial.state == TrialState.COMPLETE
        assert trial.user_attrs["epochs_run"] == EPOCHS


def test_a_run_prunes_trials_past_their_share(stub_study: Callable[..., Path],
                                             tmp_path: Path) -> None:
    """A share of a millionth of an hour: every trial is past it at its first step. The first
    trial leads (no trial has completed) and trains; the others, with no epoch of their own,
    do not lead and stop there."""
    storage = f"sqlite:///{tmp_path / 'share.db'}"
    path = stub_study(study={"n_trials": 3, "timeout": 3600, "max_trial_share": 1e-6})
    result = CliRunner().invoke(cli, ["run", str(path), "--storage", storage])
    assert result.exit_code == 0, result.output
    trials = study_trials(storage, "tiny")
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED,
                                         TrialState.PRUNED]
    assert [t.user_attrs["stop_reason"] for t in trials[1:]] == ["time_share"] * 2
    assert "trial 1 pruned before its first epoch ended: over its share of the time budget, " \
        "behind the study's best" in result.stderr

    # with the rule off, the same study trains every trial
    off = f"sqlite:///{tmp_path / 'off.db'}"
    path = stub_study(study={"n_trials": 3, "timeout": 3600, "max_trial_share": 1})
    result = CliRunner().invoke(cli, ["run", str(path), "--storage", off])
    assert result.exit_code == 0, result.output
    assert all(t.state == TrialState.COMPLETE for t in study_trials(off, "tiny"))


def test_the_replay_stops_a_slow_trial_behind_the_best_in_the_study_s_own_time() -> None:
    """``benchmarks/pruning.py`` replays the rule on a finished study: a budget of 1,000 s, a
    quarter of it 250 s. Trial 1 (600 s) is behind trial 0 (complete at 100 s) when it passes
    250 s, and would stop there; trial 2 (600 s, from 100 s) leads at 350 s and at each moment
    after, and runs on; trial 0 never reaches its share."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "pruning.py"
    found = importlib.util.spec_from_file_location("pruning_benchmark", path)
    assert found is not None and found.loader is not None
    replay = importlib.util.module_from_spec(found)
    found.loader.exec_module(replay)

    t0 = dt.datetime(2026, 1, 1)

    def trial(start: float, end: float, values: list[float]) -> optuna.trial.FrozenTrial:
        return optuna.trial.FrozenTrial(
            number=0, trial_id=0, state=TrialState.COMPLETE, value=max(values),
            datetime_start=t0 + dt.timedelta(seconds=start),
            datetime_complete=t0 + dt.timedelta(seconds=end), params={}, distributions={},
            user_attrs={}, system_attrs={}, intermediate_values=dict(enumerate(values)))

    study = optuna.create_study(direction="maximize")
    study.add_trial(trial(0, 100, [0.5, 0.6]))
    study.add_trial(trial(0, 600, [0.50, 0.55, 0.60, 0.65, 0.70, 0.75]))
    study.add_trial(trial(100, 700, [0.70, 0.80, 0.85]))
    assert replay.share_stops(study, 250.0) == {
        1: (t0 + dt.timedelta(seconds=250), False), 2: (None, True)}
    lines = replay.share_lines(study, 1000.0, 0.25)
    assert lines[0].startswith(
        "a trial's share of the time budget, 0.25 of 1000 s (250 s), replayed in the study's "
        "own time over its 3 finished trials (1,300 s of workers' time): 1 stopped, 350 s "
        "saved (27%); of the five best, stopped: 1")
    assert lines[1] == ("  trials that ran past the share: 1 (600 s, behind at 250 s, stopped "
                        "at 250 s), 2 (600 s, leading at 250 s, ran on)")


def test_a_study_of_several_objectives_refuses_a_share() -> None:
    import tomllib

    from conftest import stub_study_text
    from search import studyfile

    with pytest.raises(studyfile.StudyFileError) as raised:
        studyfile.from_dict(tomllib.loads(stub_study_text(
            study={"objectives": ["val_accuracy", "n_params"], "max_trial_share": 0.5})))
    assert raised.value.problems == [
        "study: max_trial_share: in a study of several objectives no one trial leads (it "
        "keeps a Pareto front); leave it out"]
    # left out, there is no share; and the study's stored, resolved form reads back as it was
    # (search.studies keeps it, search.results.evaluate.stored_spec reads it)
    for objectives, share in ((["val_accuracy", "n_params"], None), (["val_accuracy"], 0.25)):
        spec = studyfile.from_dict(tomllib.loads(stub_study_text(
            study={"objectives": objectives})))
        assert spec.study.trial_share == share
        assert studyfile.StudyFile.model_validate(spec.model_dump(mode="json")) == spec
