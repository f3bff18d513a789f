"""Pruning at equal training time: a trial is judged against what the completed trials had
reached after as many seconds of training, not after as many epochs.

Optuna's percentile and median pruners compare trials at equal steps, and an epoch of a wide
MLP costs ten or thirty times one of a narrow MLP: a slow trial that learns per epoch as the
fast ones did is never stopped, though after the same time it is far behind them (the
30-minute CIFAR-10 runs of ``docs/benchmarks.md`` spent half a worker's budget on one such
trial). This pruner keeps Optuna's percentile rule (startup trials, warm-up epochs, interval,
minimum number of trials) and changes what a trial is compared with: after ``t`` seconds of
training, each completed trial's best value within its epochs that had ended by ``t``.

A trial's seconds come from its epochs: a completed trial's measured ``seconds_per_epoch``; a
running trial's ``predicted_epoch_seconds`` (recorded before it trained, ``objectives.cost``),
else what its epochs have taken since it started. A completed trial that had ended no epoch
by ``t`` is left out; one that had ended all its epochs counts with its final best. Nothing
here imports TensorFlow.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.record import Key


class EqualTimePruner(optuna.pruners.BasePruner):
    """Optuna's percentile rule (``percentile = 50``: the median rule) at equal seconds of
    training."""

    def __init__(self, percentile: float, *, n_startup_trials: int = 2, n_warmup_steps: int = 2,
                 interval_steps: int = 1, n_min_trials: int = 1) -> None:
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], but got {percentile}")
        self.percentile = percentile
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.interval_steps = interval_steps
        self.n_min_trials = n_min_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.n_warmup_steps:
            return False
        if (step - self.n_warmup_steps) % self.interval_steps:
            return False
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(completed) < max(self.n_startup_trials, 1):
            return False
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        own = _best(trial.intermediate_values.values(), maximize)
        pace = running_pace(trial)
        if own is None or pace is None:
            return False
        seconds = (step + 1) * pace
        values = [value for other in completed if other.number != trial.number
                  and (value := best_by(other, seconds, maximize)) is not None]
        if len(values) < self.n_min_trials:
            return False
        bar = float(np.percentile(values, 100 - self.percentile if maximize
                                  else self.percentile))
        return own < bar if maximize else own > bar


def _best(values: Iterable[float | None], maximize: bool) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None
    return max(finite) if maximize else min(finite)


def best_by(trial: FrozenTrial, seconds: float, maximize: bool) -> float | None:
    """The best value ``trial`` had reached after ``seconds`` of training: over its epochs
    that had ended by then, at its measured seconds per epoch; None if none had."""
    pace = trial.user_attrs.get(Key.SECONDS_PER_EPOCH)
    if not isinstance(pace, (int, float)) or not pace > 0:
        return None
    ended = math.floor(seconds / pace + 1e-9)  # epochs ended by then
    return _best((value for step, value in trial.intermediate_values.items()
                  if step < ended), maximize)


def running_pace(trial: FrozenTrial) -> float | None:
    """Seconds per epoch of a running trial: as predicted before it trained, else as its
    epochs in this try have taken since it started (a retry's restored epochs are not)."""
    predicted = trial.user_attrs.get(Key.PREDICTED_EPOCH_SECONDS)
    if isinstance(predicted, (int, float)) and predicted > 0:
        return float(predicted)
    if trial.datetime_start is None or trial.last_step is None:
        return None
    trained = trial.last_step + 1 - int(trial.user_attrs.get(Key.RESUMED_AT) or 0)
    if trained <= 0:
        return None
    return (dt.datetime.now() - trial.datetime_start).total_seconds() / trained
