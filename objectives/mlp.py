"""The Keras MLP objective: sample a configuration, train it, record what happened.

Each trial records as user attributes: ``n_params``, ``epochs_run``, ``best_epoch`` (1-based),
``train_accuracy``, ``train_loss``, ``val_accuracy`` and ``val_loss`` at the best epoch,
``history`` (per-epoch lists), ``seconds_per_epoch`` and ``stop_reason`` (``completed``,
``early_stopped``, ``pruned``, ``nan`` or ``error``), plus ``fail_reason`` when it failed, and
``test_accuracy`` / ``test_loss`` measured after training (never used for selection).
A failure inside one trial fails that trial only; the search goes on.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import optuna

from objectives import interrupts
from objectives.callbacks import (EpochRecorder, StopOnRequest, TrainingDiverged,
                                  trial_callbacks)
from objectives.config import MAX_EPOCHS_ATTR, DataConfig, Metric, TrainingConfig, direction
from objectives.data import Dataset, load_dataset
from objectives.feed import batches
from objectives.keras_setup import keras
from objectives.model import build_model
from objectives.optimizers import get_optimizer
from objectives.session import fresh_session
from objectives.space import SearchSpace, suggest
from objectives.speed import dtype_policy, fuse_updates, fused_update_supported

logger = logging.getLogger(__name__)


@dataclass
class TrainingOutcome:
    """What one training run produced, whether it finished or was interrupted."""

    model: keras.Model
    recorder: EpochRecorder
    metric: Metric
    stop_reason: str = "completed"
    fail_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best_index(self) -> int | None:
        values = self.recorder.history[self.metric]
        finite = [i for i, v in enumerate(values) if math.isfinite(v)]
        if not finite:
            return None
        # The first of equal values, as Keras's EarlyStopping keeps the first best weights.
        pick = max if direction(self.metric) == "maximize" else min
        return pick(finite, key=lambda i: values[i])

    @property
    def best_value(self) -> float:
        index = self.best_index
        return math.nan if index is None else self.recorder.history[self.metric][index]

    def attributes(self) -> dict[str, Any]:
        """The user attributes a trial records."""
        history = {k: [round(v, 6) for v in vs] for k, vs in self.recorder.history.items()}
        attrs: dict[str, Any] = {
            "n_params": int(self.model.count_params()),
            "epochs_run": self.recorder.epochs,
            "history": history,
            "seconds_per_epoch": round(float(np.mean(self.recorder.seconds)), 4)
            if self.recorder.seconds else None,
            "stop_reason": self.stop_reason,
        }
        index = self.best_index
        if index is not None:
            attrs["best_epoch"] = index + 1
            for key in ("accuracy", "loss", "val_accuracy", "val_loss"):
                name = key if key.startswith("val_") else f"train_{key}"
                attrs[name] = history[key][index]
        if self.fail_reason:
            attrs["fail_reason"] = self.fail_reason
        attrs.update(self.extra)
        return attrs


EVAL_BATCH = 1024


def compiled_model(params: dict[str, Any], dataset: Dataset,
                   training: TrainingConfig) -> keras.Model:
    """The MLP of ``params``, compiled for fast training (see ``objectives.speed``)."""
    model = build_model(params, dataset.input_shape, dataset.n_classes,
                        dtype_policy=dtype_policy(training.precision))
    optimizer = get_optimizer(params)
    if training.fused_optimizer and fused_update_supported():
        fuse_updates(optimizer, model)
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=training.steps_per_execution,
        jit_compile=False,  # XLA's CPU matrix products are slower than oneDNN's
    )
    return model


def train(
    params: dict[str, Any],
    dataset: Dataset,
    training: TrainingConfig,
    metric: Metric,
    *,
    trial: optuna.trial.BaseTrial | None = None,
    max_epochs: int | None = None,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainingOutcome:
    """Build, compile and fit one configuration with early stopping, LR reduction and pruning.

    Raises ``optuna.TrialPruned`` when the pruner stops the run (the outcome is attached to the
    exception as ``outcome``); a diverging loss ends the run with ``stop_reason == "nan"``.
    """
    model = compiled_model(params, dataset, training)
    recorder, early_stopping, callbacks = trial_callbacks(training, metric, trial)
    callbacks += extra_callbacks or []
    outcome = TrainingOutcome(model=model, recorder=recorder, metric=metric)
    try:
        model.fit(
            batches(dataset.x_train, dataset.y_train, int(params["batch_size"]), shuffle=True),
            # inference only: any batch size gives the same result
            validation_data=batches(dataset.x_val, dataset.y_val, EVAL_BATCH, shuffle=False),
            epochs=max_epochs or training.max_epochs,
            shuffle=False,  # the batches come shuffled, a new order every epoch
            callbacks=callbacks,
            verbose=0,
        )
    except optuna.TrialPruned as pruned:
        outcome.stop_reason = "pruned"
        pruned.outcome = outcome  # type: ignore[attr-defined]
        raise
    except TrainingDiverged as diverged:
        outcome.stop_reason = "nan"
        outcome.fail_reason = str(diverged)
        return outcome
    if early_stopping.stopped_epoch > 0:
        outcome.stop_reason = "early_stopped"
    # The test split is measured after training, for the record only: nothing selects on it.
    test_loss, test_accuracy = model.evaluate(
        batches(dataset.x_test, dataset.y_test, EVAL_BATCH, shuffle=False), verbose=0,
        callbacks=[StopOnRequest()])
    outcome.extra.update(test_accuracy=round(float(test_accuracy), 6),
                         test_loss=round(float(test_loss), 6))
    return outcome


def train_on_all(
    params: dict[str, Any], dataset: Dataset, training: TrainingConfig, *, epochs: int,
    learning_rates: list[float],
) -> TrainingOutcome:
    """Train on train plus validation for a fixed number of epochs, replaying the learning rate
    of each epoch as the trial had it (its plateau reductions), since no validation set is left
    to decide when to stop or to reduce."""
    model = compiled_model(params, dataset, training)
    recorder = EpochRecorder()
    rates = [rate for rate in learning_rates if math.isfinite(rate)]
    callbacks: list[keras.callbacks.Callback] = [StopOnRequest(), recorder]
    if rates:
        callbacks.insert(0, keras.callbacks.LearningRateScheduler(
            lambda epoch, current: rates[min(epoch, len(rates) - 1)]))
    model.fit(
        batches(np.concatenate([dataset.x_train, dataset.x_val]),
                np.concatenate([dataset.y_train, dataset.y_val]), int(params["batch_size"]),
                shuffle=True),
        epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False,  # shuffled batches
    )
    return TrainingOutcome(model=model, recorder=recorder, metric="val_accuracy")


class TrialHooks(Protocol):
    """What the service adds to a trial's training: more callbacks (TensorBoard), and a look at
    the trained model before it is dropped (figures, the saved model)."""

    def callbacks(self, trial: optuna.trial.Trial) -> list[keras.callbacks.Callback]: ...

    def after_training(self, trial: optuna.trial.Trial, outcome: TrainingOutcome,
                       dataset: Dataset, params: dict[str, Any]) -> None: ...


class MlpObjective:
    """The objective Optuna calls: one trial, one configuration, one training run.

    The dataset is loaded when the objective is made, once per process, not once per trial.
    """

    def __init__(
        self,
        *,
        space: SearchSpace,
        data: DataConfig,
        training: TrainingConfig,
        metric: Metric,
        seed: int,
        hooks: TrialHooks | None = None,
    ) -> None:
        self.space = space
        self.hooks = hooks
        self.training = training
        self.metric = metric
        self.seed = seed
        self.dataset = load_dataset(data, seed)

    def __call__(self, trial: optuna.trial.Trial) -> float:
        try:
            return self._run(trial)
        except KeyboardInterrupt:  # Optuna fails the trial; say why on it
            interrupts.failed_trials.append(trial.number)
            _record(trial, {"stop_reason": "interrupted", "fail_reason": interrupts.reason()})
            raise

    def _run(self, trial: optuna.trial.Trial) -> float:
        params = suggest(trial, self.space)
        try:
            # TensorFlow's work is not interrupted mid-way: a stop ends it at its next step.
            # A fresh session per trial, so that memory does not grow trial after trial.
            with interrupts.deferred(), fresh_session():
                keras.utils.set_random_seed(self.seed + trial.number)
                extra = self.hooks.callbacks(trial) if self.hooks is not None else []
                try:
                    outcome = train(params, self.dataset, self.training, self.metric,
                                    trial=trial, max_epochs=trial.user_attrs.get(MAX_EPOCHS_ATTR),
                                    extra_callbacks=extra)
                except optuna.TrialPruned as pruned:
                    outcome = pruned.outcome  # type: ignore[attr-defined]
                    self._after(trial, outcome, params)
                    _record(trial, outcome.attributes())
                    raise
                if outcome.stop_reason != "nan":
                    self._after(trial, outcome, params)
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # one trial's failure (OOM, a bad kernel) must not end the search
            logger.debug("trial %d failed", trial.number, exc_info=True)
            _record(trial, {"stop_reason": "error", "fail_reason": f"{type(exc).__name__}: {exc}"})
            return math.nan
        _record(trial, outcome.attributes())
        if outcome.stop_reason == "nan":
            return math.nan  # Optuna marks the trial failed; fail_reason says why
        return outcome.best_value

    def _after(self, trial: optuna.trial.Trial, outcome: TrainingOutcome,
               params: dict[str, Any]) -> None:
        """The hooks' look at the trained model; their failure costs the trial its figures,
        not its result."""
        if self.hooks is None:
            return
        try:
            self.hooks.after_training(trial, outcome, self.dataset, params)
        except Exception as exc:
            logger.warning("trial %d: artifacts not stored: %s: %s", trial.number,
                           type(exc).__name__, exc)
            logger.debug("artifacts of trial %d", trial.number, exc_info=True)
            outcome.extra["artifact_error"] = f"{type(exc).__name__}: {exc}"


def _record(trial: optuna.trial.BaseTrial, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def create_objective(
    *, space: SearchSpace, data: DataConfig, training: TrainingConfig, metric: Metric, seed: int,
    hooks: TrialHooks | None = None,
) -> MlpObjective:
    """The registry's entry point for the ``keras-mlp`` objective."""
    return MlpObjective(space=space, data=data, training=training, metric=metric, seed=seed,
                        hooks=hooks)
