"""The Keras MLP objective on stub data: what a trial records, pruning, failures, repeatability."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from objectives.config import DataConfig, TrainingConfig
from objectives.data import load_dataset, make_stub
from objectives.keras_setup import keras
from objectives.mlp import MlpObjective, create_objective
from objectives.model import build_model
from objectives.space import SearchSpace

DATA = DataConfig(dataset="stub", validation_fraction=0.2)
GOOD = {
    "n_layers": 1, "units_l0": 64, "activation": "relu", "batch_norm": False, "dropout": 0.0,
    "l2": 1e-6, "initializer": "he_normal", "optimizer": "adam", "learning_rate": 1e-3,
    "batch_size": 64,
}
# Plain SGD with a tiny step: it barely moves, so the median pruner stops it.
STALLED = {**GOOD, "optimizer": "sgd", "learning_rate": 1e-6, "momentum": 0.0,
           "nesterov": False}
# SGD with an absurd step: the loss overflows within the first epoch.
DIVERGING = {**GOOD, "optimizer": "sgd", "learning_rate": 1e4, "momentum": 0.99,
             "nesterov": False}
# The hand-built "deep" experiment, narrower: BatchNorm, Dropout, L2, HeNormal, AdamW.
DEEP = {"n_layers": 3, "units_l0": 256, "units_l1": 128, "units_l2": 64, "activation": "relu",
        "batch_norm": True, "dropout": 0.3, "l2": 1e-4, "initializer": "he_normal",
        "optimizer": "adamw", "learning_rate": 1e-3, "weight_decay": 1e-4, "batch_size": 128}
# Wide enough for the extreme learning rates above.
SPACE = SearchSpace.model_validate({"learning_rate": {"low": 1e-7, "high": 1e5, "log": True}})

RECORDED = {"n_params", "epochs_run", "best_epoch", "train_accuracy", "train_loss",
            "val_accuracy", "val_loss", "history", "seconds_per_epoch", "stop_reason",
            "precision"}


def objective(max_epochs: int = 3, seed: int = 0) -> MlpObjective:
    return create_objective(
        space=SPACE, data=DATA, metric="val_accuracy", seed=seed,
        training=TrainingConfig(max_epochs=max_epochs, early_stopping_patience=2),
    )


def test_stub_dataset_has_cifar10_shapes_and_is_repeatable() -> None:
    x, y, x_test, y_test = make_stub(5)
    assert x.shape[1:] == (32, 32, 3) and x.dtype == np.uint8
    assert x_test.shape[1:] == (32, 32, 3) and set(np.unique(y)) == set(range(10))
    again = make_stub(5)
    assert np.array_equal(x, again[0]) and np.array_equal(y, again[1])
    assert not np.array_equal(x, make_stub(6)[0])


def test_validation_split_is_stratified_and_loaded_once_per_process() -> None:
    dataset = load_dataset(DATA, 0)
    assert load_dataset(DATA, 0) is dataset  # the cache: no second generation or decoding
    counts = np.bincount(dataset.y_val, minlength=10)
    assert counts.min() == counts.max()  # stub classes are balanced, so the split is exact
    assert len(dataset.y_val) == pytest.approx(0.2 * (len(dataset.y_train) + len(dataset.y_val)))
    subset = load_dataset(DATA.model_copy(update={"train_subset": 500}), 0)
    assert len(subset.y_train) == 500
    assert np.bincount(subset.y_train, minlength=10).tolist() == [50] * 10


def test_model_takes_raw_images() -> None:
    dataset = load_dataset(DATA, 0)
    model = build_model({**GOOD, "batch_norm": True, "dropout": 0.3}, dataset.input_shape, 10)
    probabilities = model.predict(dataset.x_test[:8], verbose=0)
    assert probabilities.shape == (8, 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_trial_trains_and_records_every_metric() -> None:
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(GOOD)
    study.optimize(objective(max_epochs=3), n_trials=1)
    trial = study.trials[0]
    attrs = trial.user_attrs
    assert trial.state == TrialState.COMPLETE
    assert RECORDED <= set(attrs)
    assert attrs["epochs_run"] == len(attrs["history"]["val_accuracy"]) == 3
    best = attrs["best_epoch"] - 1
    assert trial.value == pytest.approx(attrs["val_accuracy"], abs=1e-6)
    assert attrs["val_accuracy"] == pytest.approx(max(attrs["history"]["val_accuracy"]))
    assert attrs["train_loss"] == attrs["history"]["loss"][best]
    assert attrs["n_params"] == 3072 * 64 + 64 + 64 * 10 + 10
    assert attrs["stop_reason"] in {"completed", "early_stopped"}
    assert attrs["precision"] in {"float32", "mixed_bfloat16"}  # "auto" on this CPU, resolved
    assert attrs["seconds_per_epoch"] > 0
    assert trial.value > 0.25  # above the 0.1 of chance within three epochs
    assert len(attrs["history"]["learning_rate"]) == 3


def test_the_pruner_prunes_for_real() -> None:
    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    )
    study.enqueue_trial(GOOD)
    study.enqueue_trial(STALLED)
    study.optimize(objective(max_epochs=4), n_trials=2)
    pruned = study.trials[1]
    assert pruned.state == TrialState.PRUNED
    assert pruned.user_attrs["stop_reason"] == "pruned"
    assert pruned.user_attrs["epochs_run"] < 4
    assert len(pruned.user_attrs["history"]["val_accuracy"]) == pruned.user_attrs["epochs_run"]


def test_nan_loss_fails_only_its_trial() -> None:
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(DIVERGING)
    study.enqueue_trial(GOOD)
    study.optimize(objective(max_epochs=2), n_trials=2)
    failed, completed = study.trials
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["stop_reason"] == "nan"
    assert "training loss became" in failed.user_attrs["fail_reason"]
    assert completed.state == TrialState.COMPLETE


def test_an_error_inside_a_trial_is_recorded_and_the_search_goes_on() -> None:
    broken = objective(max_epochs=1)
    dataset = broken.dataset
    broken.dataset = dataclasses.replace(dataset, x_val=dataset.x_val[:, :16])  # wrong shape
    study = optuna.create_study(direction="maximize")
    study.optimize(broken, n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert study.trials[0].user_attrs["stop_reason"] == "error"
    assert study.trials[0].user_attrs["fail_reason"].startswith("ValueError")


def test_a_seeded_single_worker_study_repeats() -> None:
    def run() -> list[tuple[dict, float]]:
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=11, n_startup_trials=1)
        )
        study.optimize(objective(max_epochs=2, seed=11), n_trials=2)
        return [(t.params, t.value) for t in study.trials]

    first, second = run(), run()
    assert [p for p, _ in first] == [p for p, _ in second]
    for (_, a), (_, b) in zip(first, second):
        assert math.isclose(a, b, abs_tol=1e-6)


def test_trials_leave_no_traced_graphs_behind() -> None:
    from objectives.between_trials import _gradient_registry

    registry = _gradient_registry()
    study = optuna.create_study(direction="maximize")
    for config in (GOOD, {**GOOD, "units_l0": 32}, {**GOOD, "batch_norm": True}):
        study.enqueue_trial(config)
    study.optimize(objective(max_epochs=1), n_trials=1)  # the first trial warms up Keras
    before = set(registry)
    study.optimize(objective(max_epochs=1), n_trials=2)
    assert study.trials[-1].state == TrialState.COMPLETE
    left = [name for name in registry if name not in before]
    assert not [name for name in left if name.startswith("CustomGradient-")], left


@pytest.mark.parametrize("params", [
    {**GOOD, "optimizer": "sgd", "momentum": 0.9, "nesterov": True, "label_smoothing": 0.1},
    {**DEEP, "n_layers": 1, "units_l0": 32, "preprocessing": "zca", "whitening_epsilon": 0.1},
], ids=["sgd-smoothing", "adamw-batchnorm-zca"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "keras-update"])
def test_each_step_is_traced_once_per_training(
        params: dict[str, object], fused: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The optimizer's, loss's and metrics' variables exist before the first trace
    (``objectives.mlp.build_training_state``): a ``tf.function`` that creates variables as it
    traces is traced twice, which was half a small trial's tracing."""
    from objectives import mlp

    traced = {"train_step": 0, "test_step": 0}
    compiled_model = mlp.compiled_model

    def counted(*args: object, **kwargs: object) -> mlp.Compiled:
        compiled = compiled_model(*args, **kwargs)  # type: ignore[arg-type]
        for name in traced:
            step = getattr(compiled.fitted, name)

            def count(data: object, step: object = step, name: str = name) -> object:
                traced[name] += 1  # Python runs once per trace, not per step
                return step(data)  # type: ignore[operator]

            setattr(compiled.fitted, name, count)
        return compiled

    monkeypatch.setattr(mlp, "compiled_model", counted)
    training = TrainingConfig(max_epochs=2, early_stopping_patience=2, fused_optimizer=fused)
    outcome = mlp.train(dict(params), load_dataset(DATA, 0), training, "val_accuracy")
    assert outcome.recorder.epochs == 2
    assert traced == {"train_step": 1, "test_step": 1}


def test_a_stop_request_ends_training_even_if_the_raise_was_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A signal handler's KeyboardInterrupt can be swallowed inside TensorFlow's bindings; the
    flag it leaves still stops training at the next step, and the trial is failed."""
    from objectives import interrupts

    monkeypatch.setattr(interrupts, "_requested", True)  # as if the raise had been dropped
    study = optuna.create_study(direction="maximize")
    with pytest.raises(KeyboardInterrupt):
        study.optimize(objective(max_epochs=3), n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert study.trials[0].intermediate_values == {}  # stopped within the first epoch


class _SignalMidEpoch:
    """Trial hooks that send this process SIGTERM from another thread a moment into the second
    epoch, so that the handler runs wherever TensorFlow holds the main thread."""

    def callbacks(self, trial: optuna.trial.Trial) -> list[keras.callbacks.Callback]:
        sent = threading.Event()

        def send() -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            sent.set()

        class Later(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
                if epoch == 1:
                    threading.Timer(0.05, send).start()

            def on_epoch_end(self, epoch: int, logs: object = None) -> None:
                # On a loaded machine the timer may fire late: training waits for the signal
                # here rather than end first (the stop then comes at the next step).
                if epoch >= 1:
                    sent.wait(30)

        return [Later()]

    def after_training(self, *args: object) -> None:
        pass


def test_a_stop_signal_mid_training_is_raised_at_the_next_step_not_inside_tensorflow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from objectives import interrupts
    from search.cli.console import interrupt as _interrupt

    monkeypatch.setattr(interrupts, "_requested", False)
    stopped = create_objective(
        space=SPACE, data=DATA, metric="val_accuracy", seed=0, hooks=_SignalMidEpoch(),
        training=TrainingConfig(max_epochs=30, early_stopping_patience=30))
    study = optuna.create_study(direction="maximize")
    # A learning rate that trains: a diverging first trial would fail before the signal is sent
    # and leave it to the second.
    study.enqueue_trial(GOOD)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with pytest.raises(KeyboardInterrupt) as raised:
            study.optimize(stopped, n_trials=2)
    finally:
        signal.signal(signal.SIGTERM, previous)
    # Raised by the check after a step or an epoch (StopOnRequest), not by the handler inside
    # TensorFlow (which step comes first depends on when the signal lands).
    caller, raiser = (entry.name for entry in raised.traceback[-2:])
    assert raiser == "check"
    assert caller in ("on_train_batch_end", "on_test_batch_end", "on_epoch_end")
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert 1 <= len(study.trials[0].intermediate_values) < 30


def test_a_stop_request_is_left_to_tensorflow_work_once_and_raised_when_it_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from objectives import interrupts

    monkeypatch.setattr(interrupts, "_requested", False)
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            assert interrupts.request()  # training will stop at its next step
            assert not interrupts.request()  # asked again: the handler raises at once
    assert not interrupts.request()  # no TensorFlow work running: the handler raises


@pytest.mark.long(120)  # deep-adamw; adam 43
@pytest.mark.parametrize("params", [GOOD, DEEP], ids=["adam", "deep-adamw"])
def test_the_fast_path_learns_what_plain_fit_learns(params: dict[str, object]) -> None:
    """hpsearch's training (uint8 input through its own batches, many steps per call, fused
    updates with the L2 gradients in them, bfloat16 where the CPU has it) against plain
    ``model.fit`` on float32 arrays with Keras's defaults, from the same seeds: the validation
    accuracy after 3 epochs agrees within 1 point. Averaged over three seeds on a stub set of
    3,000 validation images, so that the sampling noise of one small validation set does not
    decide."""
    from objectives.data import CIFAR10_CLASSES, Dataset
    from objectives.keras_setup import keras
    from objectives.mlp import train
    from objectives.optimizers import get_optimizer
    from objectives.between_trials import fresh_session

    x, y, x_test, y_test = make_stub(3, n_train=12_000, n_test=100)
    cut = 9_000
    dataset = Dataset(x[:cut], y[:cut], x[cut:], y[cut:], x_test, y_test, CIFAR10_CLASSES)
    fast = TrainingConfig(max_epochs=3, early_stopping_patience=3)

    def plain_fit() -> float:
        model = build_model(dict(params), dataset.input_shape, dataset.n_classes)
        model.compile(optimizer=get_optimizer(dict(params)),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(
            dataset.x_train.astype(np.float32), dataset.y_train,
            validation_data=(dataset.x_val.astype(np.float32), dataset.y_val),
            batch_size=int(params["batch_size"]), epochs=3, verbose=0)  # type: ignore[arg-type]
        return float(history.history["val_accuracy"][-1])

    def fast_train() -> float:
        outcome = train(dict(params), dataset, fast, "val_accuracy")
        assert outcome.recorder.epochs == 3
        return outcome.recorder.history["val_accuracy"][-1]

    means = []
    for run in (fast_train, plain_fit):
        final = []
        for seed in (5, 6, 7):
            with fresh_session():
                keras.utils.set_random_seed(seed)
                final.append(run())
        means.append(float(np.mean(final)))
    assert means[0] > 0.3  # it learned something: chance is 0.1
    print(f"val accuracy after 3 epochs, fast {means[0]:.4f}, plain {means[1]:.4f}")
    assert abs(means[0] - means[1]) <= 0.01, means


class _BudgetEndsInEpoch:
    """Trial hooks whose callback ends the run's time budget as epoch ``at`` (0-based)
    begins, and that score the trained model on the validation split."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.scored: float | None = None

    def callbacks(self, trial: optuna.trial.Trial) -> list[keras.callbacks.Callback]:
        from objectives import budget

        at = self.at

        class EndBudget(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
                if epoch == at:
                    budget.end_at(0.0, 1.0)  # it ended long ago

        return [EndBudget()]

    def after_training(self, trial: optuna.trial.Trial, outcome: object, dataset: object,
                       params: object) -> None:
        from objectives.feed import batches
        from objectives.mlp import EVAL_BATCH

        data = load_dataset(DATA, 0)
        _, self.scored = outcome.model.evaluate(  # type: ignore[attr-defined]
            batches(data.x_val, data.y_val, EVAL_BATCH, shuffle=False), verbose=0)


@pytest.mark.parametrize("at", [4, 0], ids=["in-epoch-5", "in-epoch-1"])
def test_a_trial_training_when_the_budget_ends_is_recorded_at_its_best_epoch(at: int) -> None:
    """The epoch the budget ends in counts for nothing; the trial completes with the best
    complete epoch's value and weights, or fails if none completed."""
    from objectives import budget

    hooks = _BudgetEndsInEpoch(at)
    run = create_objective(
        space=SPACE, data=DATA, metric="val_accuracy", seed=0, hooks=hooks,
        training=TrainingConfig(max_epochs=30, early_stopping_patience=30))
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({**DEEP, "learning_rate": 3e-2})  # uneven: its best is not its last
    try:
        study.optimize(run, n_trials=1)
    finally:
        budget.end_at(None, None)
    trial = study.trials[0]
    attrs = trial.user_attrs
    assert attrs["stop_reason"] == "time_budget"
    if at == 0:
        assert trial.state == TrialState.FAIL
        assert attrs["fail_reason"] == "the run's time budget ended before its first epoch"
        assert hooks.scored is None  # nothing trained, nothing shown
        return
    assert trial.state == TrialState.COMPLETE
    history = attrs["history"]["val_accuracy"]
    assert attrs["epochs_run"] == at == len(history)  # the unfinished epoch is not there
    assert trial.value == pytest.approx(max(history), abs=1e-6)  # recorded rounded
    assert max(history) > history[-1]  # its best epoch is not its last
    # the model kept is the best epoch's: it scores that epoch's validation accuracy
    assert hooks.scored == pytest.approx(trial.value, abs=1e-6)
