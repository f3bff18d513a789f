"""The Keras MLP objective: sample a configuration, train it, record what happened.

Each trial records its user attributes as ``objectives.record`` lays them out (``stop_reason``
one of its ``StopReason``). A failure inside one trial fails that trial only; the search goes
on.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import optuna

from objectives import interrupts
from objectives.budget import BudgetSpent
from objectives.checkpoints import (CheckpointError, Checkpointer, CheckpointStore,
                                    TrainingState, callback_state_supported, check_model,
                                    read_state)
from objectives.callbacks import (EpochRecorder, PastShare, StopOnRequest, TrainingDiverged,
                                  multi_objective, trial_callbacks)
from objectives.config import DataConfig, Metric, TrainingConfig, direction
from objectives.data import Dataset, check_study_data
from objectives.feed import batches, order_seed
from objectives.goals import Goals
from objectives.pruning import CostAwareRule
from objectives.record import Key, StopReason, lineage as lineage_of, trial_seed
from objectives.keras_setup import keras
from objectives.model import WHITENED, build_model
from objectives.optimizers import get_optimizer
from objectives import cost, recipes
from objectives.recipes.preprocessing import whiten, whitened_in_training
from objectives.recipes.schedule import uses_plateau
from objectives.between_trials import fresh_session
from objectives.space import SearchSpace, suggest
from objectives.fast_path import dtype_policy, fuse_updates, fused_update_supported

logger = logging.getLogger(__name__)


@dataclass
class TrainingOutcome:
    """What one training run produced, whether it finished or was interrupted."""

    model: keras.Model
    recorder: EpochRecorder
    metric: Metric
    stop_reason: StopReason = StopReason.COMPLETED
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
            Key.N_PARAMS: int(self.model.count_params()),
            Key.EPOCHS_RUN: self.recorder.epochs,
            Key.HISTORY: history,
            Key.SECONDS_PER_EPOCH: round(float(np.mean(self.recorder.seconds)), 4)
            if self.recorder.seconds else None,
            Key.STOP_REASON: str(self.stop_reason),
            Key.PRECISION: trained_precision(self.model),
        }
        index = self.best_index
        if index is not None:
            attrs[Key.BEST_EPOCH] = index + 1
            for key in ("accuracy", "loss", "val_accuracy", "val_loss"):
                name = key if key.startswith("val_") else f"train_{key}"
                attrs[name] = history[key][index]
        if self.fail_reason:
            attrs[Key.FAIL_REASON] = self.fail_reason
        attrs.update(self.extra)
        return attrs


def trained_precision(model: keras.Model) -> str:
    """The dtype policy its hidden layers trained with (``precision = "auto"`` resolved):
    ``float32``, ``mixed_bfloat16`` or ``mixed_float16``."""
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    return str(dense[0].dtype_policy.name) if dense else "float32"


EVAL_BATCH = 1024
# The trials whose seconds per epoch a prediction learns from.
MEASURED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@dataclass
class Compiled:
    """A configuration's model, compiled. ``model`` takes raw uint8 images: it is evaluated,
    saved and counted. ``fitted`` is what ``model.fit`` trains: ``model`` itself, or, with ZCA
    whitening, its layers after the whitening, trained on images whitened once per training
    (:meth:`inputs`) instead of at every step, since ZCA's fixed 3072x3072 product costs more
    than the whole MLP's (``objectives.recipes.preprocessing``)."""

    model: keras.Model
    fitted: keras.Model
    preprocess: dict[str, Any]

    def inputs(self, x: np.ndarray) -> np.ndarray:
        """``x`` (raw images) as ``fitted`` takes them."""
        if self.fitted is self.model:
            return x
        import tensorflow as tf

        dtype = tf.dtypes.as_dtype(self.fitted.inputs[0].dtype).as_numpy_dtype
        return whiten(x, self.preprocess, dtype=dtype)


def compiled_model(params: dict[str, Any], dataset: Dataset, training: TrainingConfig, *,
                   epochs: int | None = None, x_train: np.ndarray | None = None) -> Compiled:
    """The MLP of ``params``, compiled for fast training (see ``objectives.fast_path``), with
    its training recipes (``objectives.recipes``): its input preprocessing computed on
    ``x_train`` (default: the training split), its loss, and its learning-rate schedule laid
    over ``epochs`` (default ``training.max_epochs``) epochs of it."""
    x_train = dataset.x_train if x_train is None else x_train
    preprocess = recipes.inputs(params, x_train)
    policy = dtype_policy(training.precision)
    model = build_model(params, dataset.input_shape, dataset.n_classes,
                        dtype_policy=policy, preprocess=preprocess)
    fitted = model
    if whitened_in_training(params):
        # The layers after the whitening, sharing their variables with ``model``.
        fitted = keras.Model(model.get_layer(WHITENED).output, model.output, name="mlp_body")
    steps = -(-len(x_train) // int(params["batch_size"]))
    optimizer = get_optimizer(params, recipes.learning_rate(
        params, steps_per_epoch=steps, epochs=epochs or training.max_epochs))
    if policy == "mixed_float16":  # float16's narrow range: Keras's dynamic loss scaling
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    elif training.fused_optimizer and fused_update_supported():
        fuse_updates(optimizer, fitted)
    loss = recipes.loss(params)
    fitted.compile(
        optimizer=optimizer, loss=loss, metrics=["accuracy"],
        steps_per_execution=training.steps_per_execution,
        jit_compile=False,  # XLA's CPU matrix products are slower than oneDNN's
    )
    if fitted is not model:  # evaluated and saved (with the optimizer's state), never fitted
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=False)
    labels = recipes.labels(params, dataset.y_train[:1], dataset.n_classes)
    for compiled in {id(fitted): fitted, id(model): model}.values():
        build_training_state(compiled, labels)
    return Compiled(model=model, fitted=fitted, preprocess=preprocess)


def build_training_state(model: keras.Model, labels: np.ndarray) -> None:
    """Create a compiled model's optimizer, loss and metric variables now, eagerly, from one
    example's ``labels``: Keras's TensorFlow trainer (with no distribution strategy) leaves
    them to the first trace of its training and test steps, and a ``tf.function`` that creates
    variables as it traces is traced twice. Built before, each step is traced once: a stub
    trial took 1.21 CPU seconds instead of 1.37 (``benchmarks/trial_overhead.py``;
    ``tests/test_objective.py`` counts the traces)."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    output = model.outputs[0]
    y_pred = keras.ops.zeros((1, *output.shape[1:]), dtype=output.dtype)
    model.compute_loss(y=labels, y_pred=y_pred)
    model.compute_metrics(None, labels, y_pred)
    model.reset_metrics()  # what the example added


def train(
    params: dict[str, Any],
    dataset: Dataset,
    training: TrainingConfig,
    metric: Metric,
    *,
    trial: optuna.trial.BaseTrial | None = None,
    max_epochs: int | None = None,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
    save_checkpoint: Callable[[bytes], None] | None = None,
    resume: TrainingState | None = None,
    measure: Callable[[Compiled], dict[str, float] | None] | None = None,
    cost_aware: CostAwareRule | None = None,
) -> TrainingOutcome:
    """Build, compile and fit one configuration with early stopping, LR reduction and pruning;
    with ``save_checkpoint``, its state after every ``training.checkpoint_every`` epochs; from
    ``resume``'s epoch on, with its state, when given. ``measure`` sees the compiled model
    before it trains, and may end the trial there (raising ``Infeasible``); with
    ``cost_aware``, a multi-objective trial is pruned by that rule against the costs
    ``measure`` returned.

    Raises ``optuna.TrialPruned`` when the pruner stops the run (the outcome is attached to the
    exception as ``outcome``); a diverging loss ends the run with ``StopReason.NAN``;
    ``CheckpointError`` before any training when ``resume`` does not fit the model.
    """
    epochs = max_epochs or training.max_epochs
    compiled = compiled_model(params, dataset, training, epochs=epochs)
    costs = measure(compiled) if measure is not None else None
    model = compiled.fitted
    restored: list[float] | None = None
    if resume is not None:
        model.optimizer.build(model.trainable_variables)  # its variables, to check and fill
        check_model(resume, model)
        restored = _report_restored(trial, resume, metric, training.pruning_interval)
        if trial is not None:
            trial.set_user_attr(Key.RESUMED_AT, resume.epoch)
            logger.info("trial %d resumes trial %s at epoch %d of %d", trial.number,
                        trial.user_attrs.get(Key.RESUMES), resume.epoch + 1, epochs)
    recorder, early_stopping, callbacks = trial_callbacks(
        training, metric, trial, plateau=uses_plateau(params), restored=restored,
        cost_aware=(cost_aware, costs) if cost_aware is not None and costs else None)
    callbacks += extra_callbacks or []
    seed = order_seed() if resume is None else resume.order_seed
    checkpointer = Checkpointer(
        save=save_checkpoint if training.checkpoint_every else None,
        every=max(training.checkpoint_every, 1), params=params, order_seed=seed,
        recorder=recorder, early_stopping=early_stopping,
        plateau=next((c for c in callbacks
                      if isinstance(c, keras.callbacks.ReduceLROnPlateau)), None),
        resume=resume)
    callbacks.append(checkpointer)  # last: it restores and saves the others' state
    first = 0 if resume is None else min(resume.epoch, epochs)
    outcome = TrainingOutcome(model=compiled.model, recorder=recorder, metric=metric)
    n_classes = dataset.n_classes
    try:
        model.fit(
            batches(compiled.inputs(dataset.x_train),
                    recipes.labels(params, dataset.y_train, n_classes),
                    int(params["batch_size"]), shuffle=True, seed=seed, first_epoch=first,
                    **recipes.feed_options(params)),
            # inference only: any batch size gives the same result
            validation_data=batches(compiled.inputs(dataset.x_val),
                                    recipes.labels(params, dataset.y_val, n_classes),
                                    EVAL_BATCH, shuffle=False),
            initial_epoch=first,
            epochs=first if resume is not None and resume.stopped else epochs,
            shuffle=False,  # the batches come shuffled, a new order every epoch
            callbacks=callbacks,
            verbose=0,
        )
    except optuna.TrialPruned as pruned:
        outcome.stop_reason = (StopReason.TIME_SHARE if isinstance(pruned, PastShare)
                               else StopReason.PRUNED)
        pruned.outcome = outcome  # type: ignore[attr-defined]
        raise
    except TrainingDiverged as diverged:
        outcome.stop_reason = StopReason.NAN
        outcome.fail_reason = str(diverged)
        return outcome
    except BudgetSpent:
        # Recorded as it stood at its best complete epoch: those weights, that value.
        outcome.stop_reason = StopReason.TIME_BUDGET
        if recorder.epochs == 0:
            outcome.fail_reason = "the run's time budget ended before its first epoch"
            return outcome
        if early_stopping.best_weights is not None:
            model.set_weights(early_stopping.best_weights)
    if early_stopping.stopped_epoch > 0:
        outcome.stop_reason = StopReason.EARLY_STOPPED
    # The test split is measured after training, for the record only: nothing selects on it.
    test_loss, test_accuracy = compiled.model.evaluate(
        batches(dataset.x_test, recipes.labels(params, dataset.y_test, n_classes), EVAL_BATCH,
                shuffle=False), verbose=0, callbacks=[StopOnRequest()])
    outcome.extra.update(test_accuracy=round(float(test_accuracy), 6),
                         test_loss=round(float(test_loss), 6))
    return outcome


def _report_restored(trial: optuna.trial.BaseTrial | None, state: TrainingState,
                     metric: Metric, interval: int) -> list[float]:
    """Report the epochs a checkpoint holds as the pruning callback reported them, so that the
    pruner and the dashboard see the whole curve; the values, which a multi-objective study
    records in a user attribute instead (Optuna refuses its reports)."""
    values = [float(v) for v in state.history[metric][:state.epoch]]
    if not isinstance(trial, optuna.trial.Trial) or multi_objective(trial):
        return values
    for epoch, value in enumerate(state.history[metric][:state.epoch]):
        if (epoch + 1) % interval == 0 and math.isfinite(value):
            trial.report(value, step=epoch)
    return values


def train_on_all(
    params: dict[str, Any], dataset: Dataset, training: TrainingConfig, *, epochs: int,
    learning_rates: list[float], planned_epochs: int | None = None,
) -> TrainingOutcome:
    """Train on train plus validation for a fixed number of epochs, as the trial trained: with
    a schedule (``objectives.recipes.schedule``), the same schedule over the trial's
    ``planned_epochs`` (default ``training.max_epochs``), epoch for epoch, on the larger
    epochs' steps; with plateau reductions, the learning rate of each epoch as the trial had
    it, since no validation set is left to decide when to stop or to reduce."""
    x = np.concatenate([dataset.x_train, dataset.x_val])
    y = recipes.labels(params, np.concatenate([dataset.y_train, dataset.y_val]),
                       dataset.n_classes)
    compiled = compiled_model(params, dataset, training, epochs=planned_epochs, x_train=x)
    recorder = EpochRecorder()
    rates = [rate for rate in learning_rates if math.isfinite(rate)]
    callbacks: list[keras.callbacks.Callback] = [StopOnRequest(), recorder]
    if rates and uses_plateau(params):
        callbacks.insert(0, keras.callbacks.LearningRateScheduler(
            lambda epoch, current: rates[min(epoch, len(rates) - 1)]))
    compiled.fitted.fit(
        batches(compiled.inputs(x), y, int(params["batch_size"]), shuffle=True,
                **recipes.feed_options(params)),
        epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False,  # shuffled batches
    )
    return TrainingOutcome(model=compiled.model, recorder=recorder, metric="val_accuracy")


class TrialHooks(Protocol):
    """What the service adds to a trial's training: more callbacks (TensorBoard), a look at
    the trained model before it is dropped (figures, the saved model), and where checkpoints
    are kept."""

    def callbacks(self, trial: optuna.trial.Trial) -> list[keras.callbacks.Callback]: ...

    def checkpoints(self) -> CheckpointStore | None: ...

    def after_training(self, trial: optuna.trial.Trial, outcome: TrainingOutcome,
                       dataset: Dataset, params: dict[str, Any]) -> None: ...


class Infeasible(Exception):
    """The trial's model breaks the study's size or latency constraint: it is not trained."""


class MlpObjective:
    """The objective Optuna calls: one trial, one configuration, one training run.

    The dataset is loaded when the objective is made, once per process, not once per trial.
    With ``goals`` that name measures (``n_params``, ``latency_ms``), the model is measured
    before it trains: the measures are recorded as user attributes, constraints as Optuna's
    (``Trial.set_constraint``), and a trial over a constraint ends pruned
    (``StopReason.INFEASIBLE``) without training. In a multi-objective study the objective
    returns the values in the study's order.
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
        goals: Goals | None = None,
    ) -> None:
        self.space = space
        self.hooks = hooks
        self.training = training
        self.metric = metric
        self.goals = goals or Goals((metric,))
        if self.goals.metric != metric:
            raise ValueError(f"goals {self.goals.objectives} do not hold metric {metric!r}")
        self._measured: dict[str, float] = {}
        self.seed = seed
        self.dataset = check_study_data(space=space, data=data, seed=seed)

    def __call__(self, trial: optuna.trial.Trial) -> float | list[float]:
        try:
            return self._run(trial)
        except KeyboardInterrupt:  # Optuna fails the trial; say why on it
            interrupts.failed_trials.append(trial.number)
            _record(trial, {Key.STOP_REASON: str(StopReason.INTERRUPTED),
                            Key.FAIL_REASON: interrupts.reason()})
            raise

    def _failed(self) -> float | list[float]:
        """What a failed trial returns: NaN, which Optuna records as a failure."""
        return [math.nan] * len(self.goals.objectives) if self.goals.multi else math.nan

    def _measure(self, trial: optuna.trial.Trial, params: dict[str, Any],
                 compiled: Compiled) -> dict[str, float]:
        """The model's measures before it trains, recorded with its predicted seconds per
        epoch; ``Infeasible`` over a constraint. Returns its costs among the objectives (what a
        cost-aware pruner compares)."""
        self._predict_cost(trial, params, compiled)
        self._measured = {}
        model = compiled.model
        if not self.goals.measures:
            return {}
        measured: dict[str, float] = {Key.N_PARAMS: float(model.count_params())}
        if "latency_ms" in self.goals.measures:
            from objectives.latency import measure

            measured.update(measure(model))
        self._measured = measured
        _record(trial, {k: int(v) if k == Key.N_PARAMS else v for k, v in measured.items()})
        violations = self.goals.violations(measured)
        if hasattr(trial, "set_constraint"):
            for name, excess in violations.items():
                if name not in trial.constraints:  # measured again when a resume falls back
                    trial.set_constraint(name, excess)
        over = [f"{name} {measured[name]:g} > {self.goals.constraints[name]:g}"
                for name, excess in violations.items() if excess > 0]
        if over:
            raise Infeasible(", ".join(over))
        return {name: measured[name] for name in self.goals.cost_objectives}

    def _predict_cost(self, trial: optuna.trial.Trial, params: dict[str, Any],
                      compiled: Compiled) -> None:
        """Record the work of the trial's epoch and the seconds it is predicted to take,
        learnt from the study's trials that have trained (``objectives.cost``)."""
        work = cost.epoch_work(
            compiled.fitted, n_train=len(self.dataset.x_train), n_val=len(self.dataset.x_val),
            batch_size=int(params["batch_size"]),
            augmented=any(recipes.feed_options(params).values()))
        here = _machine(compiled.model)
        study = getattr(trial, "study", None)  # none for a FixedTrial
        trials = study.get_trials(deepcopy=False, states=MEASURED) if study is not None else []
        predicted = cost.predict(work, [
            (t.user_attrs[Key.EPOCH_WORK], t.user_attrs[Key.SECONDS_PER_EPOCH],
             t.user_attrs.get(Key.TRAINED_ON)) for t in trials
            if Key.EPOCH_WORK in t.user_attrs and t.number != trial.number
            and t.user_attrs.get(Key.SECONDS_PER_EPOCH) is not None], here)
        _record(trial, {Key.EPOCH_WORK: work, Key.TRAINED_ON: here})
        if predicted is not None:
            _record(trial, {Key.PREDICTED_EPOCH_SECONDS: round(predicted, 4)})

    def _run(self, trial: optuna.trial.Trial) -> float | list[float]:
        params = suggest(trial, self.space)
        # A retry (search.workers.retries) trains as its lineage's first try would: its seed, and
        # its checkpoint.
        lineage = lineage_of(trial)
        store = self._checkpoints()
        resume = self._resume_state(trial, lineage, params, store)
        try:
            # TensorFlow's work is not interrupted mid-way: a stop ends it at its next step.
            # A fresh session per trial, so that memory does not grow trial after trial.
            with interrupts.deferred(), fresh_session():
                extra = self.hooks.callbacks(trial) if self.hooks is not None else []
                try:
                    outcome = self._train(trial, params, lineage, extra, store, resume)
                except Infeasible as exc:
                    _record(trial, {Key.STOP_REASON: str(StopReason.INFEASIBLE),
                                    Key.INFEASIBLE: str(exc), Key.EPOCHS_RUN: 0})
                    raise optuna.TrialPruned(f"over the study's constraints: {exc}") from None
                except optuna.TrialPruned as pruned:
                    outcome = pruned.outcome  # type: ignore[attr-defined]
                    self._after(trial, outcome, params)
                    _record(trial, outcome.attributes())
                    raise
                if outcome.fail_reason is None:  # diverged, or no epoch: nothing to show
                    self._after(trial, outcome, params)
        except optuna.TrialPruned:
            _drop(store, lineage)
            raise
        except Exception as exc:  # one trial's failure (OOM, a bad kernel) must not end the search
            logger.debug("trial %d failed", trial.number, exc_info=True)
            if not _storage_failure(exc):  # a storage outage: the retry carries on from it
                _drop(store, lineage)
            _record(trial, {Key.STOP_REASON: str(StopReason.ERROR),
                            Key.FAIL_REASON: f"{type(exc).__name__}: {exc}"})
            return self._failed()
        _record(trial, outcome.attributes())
        _drop(store, lineage)
        if outcome.fail_reason is not None:
            return self._failed()  # Optuna marks the trial failed; fail_reason says why
        if self.goals.multi:
            return self.goals.values(outcome.best_value, self._measured)
        return outcome.best_value

    def _checkpoints(self) -> CheckpointStore | None:
        checkpoints = getattr(self.hooks, "checkpoints", None)  # hooks may keep none
        if checkpoints is None or not self.training.checkpoint_every:
            return None
        return checkpoints() if callback_state_supported() else None

    def _resume_state(self, trial: optuna.trial.Trial, lineage: int, params: dict[str, Any],
                      store: CheckpointStore | None) -> TrainingState | None:
        """The checkpoint a retry carries on from; None (and one line that says why) if there
        is none it can use."""
        if Key.RESUMES not in trial.user_attrs:
            return None
        resumes = trial.user_attrs[Key.RESUMES]
        trial.set_user_attr(Key.RESUMED_AT, 0)
        if store is None:
            return None
        try:
            data = store.load(lineage)
        except Exception as exc:
            logger.warning("trial %d starts at epoch 1: the checkpoint of trial %s cannot be "
                           "read: %s: %s", trial.number, resumes, type(exc).__name__, exc)
            return None
        if data is None:
            logger.warning("trial %d starts at epoch 1: trial %s left no checkpoint",
                           trial.number, resumes)
            return None
        try:
            return read_state(data, params)
        except CheckpointError as exc:
            logger.warning("trial %d starts at epoch 1: the checkpoint of trial %s is not "
                           "used: %s", trial.number, resumes, exc)
            return None

    def _train(self, trial: optuna.trial.Trial, params: dict[str, Any], lineage: int,
               extra: list[keras.callbacks.Callback], store: CheckpointStore | None,
               resume: TrainingState | None) -> TrainingOutcome:
        max_epochs = trial.user_attrs.get(Key.MAX_EPOCHS) or self.training.max_epochs
        save = None if store is None else functools.partial(store.save, lineage)
        measure = functools.partial(self._measure, trial, params)
        keras.utils.set_random_seed(trial_seed(self.seed, trial))
        if resume is not None:
            try:
                outcome = train(params, self.dataset, self.training, self.metric, trial=trial,
                                max_epochs=max_epochs, extra_callbacks=extra,
                                save_checkpoint=save, resume=resume, measure=measure,
                                cost_aware=self.goals.pruning)
            except CheckpointError as exc:
                logger.warning("trial %d starts at epoch 1: the checkpoint of trial %s is not "
                               "used: %s", trial.number, trial.user_attrs[Key.RESUMES], exc)
                keras.utils.set_random_seed(trial_seed(self.seed, trial))
            else:
                return outcome
        return train(params, self.dataset, self.training, self.metric, trial=trial,
                     max_epochs=max_epochs, extra_callbacks=extra, save_checkpoint=save,
                     measure=measure, cost_aware=self.goals.pruning)

    def _after(self, trial: optuna.trial.Trial, outcome: TrainingOutcome,
               params: dict[str, Any]) -> None:
        """The hooks' look at the trained model; their failure costs the trial its figures,
        not its result."""
        if self.hooks is None:
            return
        try:
            self.hooks.after_training(trial, outcome, self.dataset, params)
        except Exception as exc:
            details = getattr(exc, "details", None)  # a gRPC error's own words (a proxy's)
            told = str(details() if callable(details) else exc).strip().splitlines()
            error = f"{type(exc).__name__}: {told[0] if told else ''}"
            logger.warning("trial %d: artifacts not stored: %s", trial.number, error)
            logger.debug("artifacts of trial %d", trial.number, exc_info=True)
            outcome.extra[Key.ARTIFACT_ERROR] = error


def _machine(model: keras.Model) -> str:
    """What this process trains ``model`` on (``objectives.cost.machine``)."""
    import os

    import tensorflow as tf

    from objectives.devices import device_name

    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1
    return cost.machine(threads=threads, device=device_name(),
                        precision=trained_precision(model))


def _record(trial: optuna.trial.BaseTrial, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def create_objective(
    *, space: SearchSpace, data: DataConfig, training: TrainingConfig, metric: Metric, seed: int,
    hooks: TrialHooks | None = None, goals: Goals | None = None,
) -> MlpObjective:
    """The registry's entry point for the ``keras-mlp`` objective."""
    return MlpObjective(space=space, data=data, training=training, metric=metric, seed=seed,
                        hooks=hooks, goals=goals)


def _drop(store: CheckpointStore | None, lineage: int) -> None:
    """Delete a trial's checkpoint once it has ended; a store that fails leaves the file."""
    if store is None:
        return
    try:
        store.drop(lineage)
    except Exception as exc:
        logger.warning("checkpoint of trial %d not deleted: %s: %s", lineage,
                       type(exc).__name__, exc)


def _storage_failure(error: BaseException) -> bool:
    """Whether ``error`` comes from the study's storage (a database that went away, or the
    proxy in front of it: a gRPC error), by its causes and contexts."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, optuna.exceptions.StorageInternalError) or \
                type(seen).__module__.startswith(("sqlalchemy", "grpc")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
