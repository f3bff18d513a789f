"""Keras callbacks of a trial: the epoch recorder with its divergence guard, and the set of
callbacks every trial trains with."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from typing import Any

from objectives.keras_setup import keras
import optuna
from optuna_integration import KerasPruningCallback

from objectives import budget, interrupts
from objectives.config import Metric, TrainingConfig, direction
from objectives.record import Key
from objectives.pruning import CostAwareRule, peer_of

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")


class TrainingDiverged(Exception):
    """The training loss became NaN or infinite."""


class EpochRecorder(keras.callbacks.Callback):
    """Keeps the per-epoch history, the learning rate and the seconds of each epoch, and stops
    a run whose loss is no longer finite.

    It keeps its own history (rather than Keras's ``History``) so that what happened before a
    pruning or a divergence is still there when ``fit`` is interrupted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
        self.seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._started)
        logs = dict(logs or {})
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        for key in HISTORY_KEYS:
            self.history[key].append(float(logs.get(key, math.nan)))
        loss = self.history["loss"][-1]
        if not math.isfinite(loss):
            raise TrainingDiverged(f"training loss became {loss} at epoch {epoch + 1}")

    @property
    def epochs(self) -> int:
        return len(self.seconds)


class StopOnRequest(keras.callbacks.Callback):
    """Ends ``fit``, ``evaluate`` or ``predict`` with ``KeyboardInterrupt`` at the first step
    or epoch after a stop request (see ``objectives.interrupts``)."""

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        interrupts.check()

    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        interrupts.check()

    def on_predict_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        interrupts.check()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        interrupts.check()


class StopAtBudgetEnd(keras.callbacks.Callback):
    """Ends ``fit`` with ``budget.BudgetSpent`` at the first step or epoch end after the run's
    time budget ended (``objectives.budget``). Placed after the recorder and early stopping,
    so that an epoch that completes is recorded, and its weights kept if it is the best, before
    training stops."""

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if budget.spent():
            raise budget.BudgetSpent()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if budget.spent():
            raise budget.BudgetSpent()


class PastShare(optuna.TrialPruned):
    """A trial took more than its share of the run's time budget without leading the study."""


class StopPastShare(keras.callbacks.Callback):
    """Ends ``fit`` with :class:`PastShare` at the first step or epoch end after the trial has
    taken more than ``budget.trial_limit()`` seconds since it started, unless its best epoch
    so far leads the study (``budget.leads``). The study's best is read once an epoch, once
    the trial is past its limit. Placed after the recorder and the pruning callback, so that an
    epoch that completes is recorded and reported first.

    ``now`` is the clock the trial's start is measured against (Optuna records
    ``datetime_start`` in local time)."""

    def __init__(self, trial: optuna.trial.Trial, metric: Metric, recorder: EpochRecorder,
                 now: Callable[[], dt.datetime] = dt.datetime.now) -> None:
        super().__init__()
        self.trial = trial
        self.metric = metric
        self.recorder = recorder
        self.now = now
        self.maximize = direction(metric) == "maximize"
        self._leading: bool | None = None  # judged this epoch, once past the limit

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._leading = None

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._check()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._leading = None  # this epoch's value counts now
        self._check()

    def _check(self) -> None:
        limit = budget.trial_limit()
        started = self.trial.datetime_start
        if limit is None or started is None:
            return
        taken = (self.now() - started).total_seconds()
        if taken <= limit or self._leading:
            return
        values = [v for v in self.recorder.history[self.metric] if math.isfinite(v)]
        own = (max(values) if self.maximize else min(values)) if values else None
        try:
            best: float | None = self.trial.study.best_value  # the best feasible, if constrained
        except ValueError:  # no complete (feasible) trial yet
            best = None
        self._leading = budget.leads(own, best, self.maximize)
        if not self._leading:
            shown = "no epoch yet" if own is None else f"its best {own:.4f}"
            raise PastShare(
                f"pruned after {taken:.0f} s, over its share of the time budget "
                f"({limit:.0f} s), with {shown} behind the study's best {best:.4f}")


def multi_objective(trial: optuna.trial.BaseTrial | None) -> bool:
    """Whether ``trial`` belongs to a multi-objective study (where Optuna refuses
    ``trial.report``)."""
    return isinstance(trial, optuna.trial.Trial) and len(trial.study.directions) > 1


class EpochValues(keras.callbacks.Callback):
    """Records the validation metric of every epoch so far as a trial user attribute
    (``epoch_values``), in multi-objective studies, where Optuna refuses intermediate values:
    the dashboard and ``hpsearch trials`` show a running trial's curve from it."""

    def __init__(self, trial: optuna.trial.Trial, metric: Metric,
                 restored: list[float] | None = None) -> None:
        super().__init__()
        self.trial = trial
        self.metric = metric
        self.values: list[float] = list(restored or [])

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = float((logs or {}).get(self.metric, math.nan))
        del self.values[epoch:]
        self.values.append(round(value, 6) if math.isfinite(value) else math.nan)
        self.trial.set_user_attr(Key.EPOCH_VALUES, [
            v if math.isfinite(v) else None for v in self.values])


class CostAwarePruning(keras.callbacks.Callback):
    """Stops a trial of a multi-objective study by ``rule`` (``objectives.pruning``): against
    the completed trials that cost no more than its ``costs``, at each epoch, from the values
    :class:`EpochValues` records. Placed after it."""

    def __init__(self, trial: optuna.trial.Trial, rule: CostAwareRule, metric: Metric,
                 costs: dict[str, float], values: EpochValues) -> None:
        super().__init__()
        self.trial = trial
        self.rule = rule
        self.metric = metric
        self.costs = costs
        self.values = values

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch < self.rule.n_warmup_steps:
            return  # no need to read the study
        completed = self.trial.study.get_trials(deepcopy=False,
                                                states=(optuna.trial.TrialState.COMPLETE,))
        peers = [peer for t in completed if (peer := peer_of(
            t.user_attrs, list(self.costs), self.metric, Key.EPOCH_VALUES)) is not None]
        maximize = direction(self.metric) == "maximize"
        if self.rule.prunes(epoch, self.values.values, self.costs, peers, maximize=maximize):
            bar = self.rule.threshold(epoch, self.costs, peers, maximize=maximize)
            raise optuna.TrialPruned(
                f"pruned at epoch {epoch + 1}: trials that cost no more had reached {bar:.4f}")


def trial_callbacks(
    training: TrainingConfig, metric: Metric, trial: optuna.trial.BaseTrial | None, *,
    plateau: bool = True, restored: list[float] | None = None,
    cost_aware: tuple[CostAwareRule, dict[str, float]] | None = None,
) -> tuple[EpochRecorder, keras.callbacks.EarlyStopping, list[keras.callbacks.Callback]]:
    """The recorder, the early stopping and the full list of callbacks for one training run.

    The recorder comes first (after the stop-request check) so the history is complete when
    pruning interrupts ``fit``.
    Pruning applies only when there is a real Optuna trial to report to (in a multi-objective
    study, where Optuna refuses reports, each epoch's value is recorded instead, after the
    ``restored`` values of a resumed trial, and ``cost_aware`` (a rule and the trial's costs)
    prunes; in a study of one objective, the pruner, and the share of the time budget a trial
    may take without leading); the plateau reduction only with ``plateau``.
    """
    mode = "max" if direction(metric) == "maximize" else "min"
    recorder = EpochRecorder()
    early_stopping = keras.callbacks.EarlyStopping(
        monitor=metric, mode=mode, patience=training.early_stopping_patience,
        restore_best_weights=True,
    )
    callbacks: list[keras.callbacks.Callback] = [StopOnRequest(), recorder, early_stopping,
                                                 StopAtBudgetEnd()]
    if plateau:  # a learning-rate schedule (objectives.recipes.schedule) owns the rate otherwise
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=metric, mode=mode, patience=training.reduce_lr_patience,
            factor=training.reduce_lr_factor, min_lr=training.min_learning_rate,
        ))
    if multi_objective(trial):
        assert isinstance(trial, optuna.trial.Trial)
        values = EpochValues(trial, metric, restored)
        callbacks.append(values)
        if cost_aware is not None:
            rule, costs = cost_aware
            callbacks.append(CostAwarePruning(trial, rule, metric, costs, values))
    elif isinstance(trial, optuna.trial.Trial):
        callbacks.append(KerasPruningCallback(trial, metric, interval=training.pruning_interval))
        callbacks.append(StopPastShare(trial, metric, recorder))
    return recorder, early_stopping, callbacks
