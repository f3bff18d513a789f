"""Checkpoints of a trial's training: a training resumed from epoch k ends as the same training
run in one go, with every optimizer and with early stopping; checkpoints that are corrupt, of
other parameters or of another version are refused with the reason; a store that fails costs
the checkpoint, never the training; a writer killed mid-write leaves the previous one whole."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from objectives.checkpoints import CheckpointError, TrainingState, read_state
from objectives.config import TrainingConfig
from objectives.data import CIFAR10_CLASSES, Dataset
from objectives.keras_setup import keras
from objectives.mlp import train
from objectives.between_trials import fresh_session
from search.artifacts.checkpoints import ArtifactCheckpoints, FolderCheckpoints

PARAMS: dict[str, Any] = {
    "n_layers": 2, "units_l0": 48, "units_l1": 24, "activation": "relu", "batch_norm": True,
    "dropout": 0.2, "l2": 1e-4, "initializer": "he_normal", "optimizer": "adamw",
    "learning_rate": 2e-3, "weight_decay": 1e-4, "momentum": 0.9, "nesterov": True,
    "rho": 0.9, "batch_size": 64,
}


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(600, 8, 8, 3), dtype=np.uint8)
    y = (x[:, 0, 0, 0] // 26).astype(np.int64)  # learnable, so early stopping has work
    return Dataset(x[:400], y[:400], x[400:500], y[400:500], x[500:], y[500:],
                   CIFAR10_CLASSES)


def _train(dataset: Dataset, params: dict[str, Any], training: TrainingConfig,
           resume: TrainingState | None = None) -> tuple[Any, dict[int, bytes]]:
    saved: dict[int, bytes] = {}

    def save(data: bytes) -> None:
        saved[TrainingState.from_bytes(data).epoch] = data

    with fresh_session():
        keras.utils.set_random_seed(11)
        outcome = train(params, dataset, training, "val_accuracy", save_checkpoint=save,
                        resume=resume)
        weights = [np.array(w) for w in outcome.model.get_weights()]
    return (outcome.recorder.history, outcome.best_index, outcome.stop_reason,
            outcome.extra, weights), saved


@pytest.mark.parametrize("change", [
    {"optimizer": "adamw"}, {"optimizer": "sgd"}, {"optimizer": "rmsprop"},
    {"optimizer": "adam"}, {"optimizer": "lion", "learning_rate": 3e-4},
    # a schedule carries on from the optimizer's step, augmentation from its seed state
    {"lr_schedule": "one_cycle", "warmup_epochs": 2, "final_lr_fraction": 0.1,
     "label_smoothing": 0.1, "augment_flip": True, "augment_shift": 1},
    # trained on images whitened beforehand, the whitening layer outside what is fitted
    {"preprocessing": "zca", "whitening_epsilon": 0.1, "augment_flip": True,
     "augment_shift": 1},
], ids=["adamw", "sgd", "rmsprop", "adam", "lion", "one_cycle-smoothing-augmented",
        "zca-augmented"])
def test_training_resumed_at_epoch_k_ends_as_the_training_run_in_one_go(
        dataset: Dataset, change: dict[str, Any]) -> None:
    training = TrainingConfig(max_epochs=6, precision="float32", early_stopping_patience=6,
                              reduce_lr_patience=1, steps_per_execution=4)
    params = {**PARAMS, **change}
    whole, saved = _train(dataset, params, training)
    assert sorted(saved) == [1, 2, 3, 4, 5, 6]
    # The epochs resumed from (6: killed after training, before the trial was recorded); where
    # only the optimizer differs from PARAMS, one epoch mid-way shows that its state carries on.
    optimizer_only = change.keys() == {"optimizer"} and change != {"optimizer": PARAMS["optimizer"]}
    for k in (3,) if optimizer_only else (2, 5, 6):
        resumed, _ = _train(dataset, params, training, read_state(saved[k], params))
        history, best, stop, extra, weights = resumed
        assert history == whole[0]  # every epoch, the learning rate included
        assert (best, stop, extra) == whole[1:4]
        assert all(np.array_equal(a, b) for a, b in zip(weights, whole[4]))


def test_a_checkpoint_of_the_epoch_early_stopping_ended_on_resumes_to_the_same_end(
        dataset: Dataset) -> None:
    training = TrainingConfig(max_epochs=30, precision="float32", early_stopping_patience=1,
                              steps_per_execution=4)
    whole, saved = _train(dataset, PARAMS, training)
    assert whole[2] == "early_stopped"
    last = read_state(saved[max(saved)], PARAMS)
    assert last.stopped
    resumed, _ = _train(dataset, PARAMS, training, last)
    assert resumed[0] == whole[0] and resumed[1:4] == whole[1:4]
    assert all(np.array_equal(a, b) for a, b in zip(resumed[4], whole[4]))  # best weights


def test_checkpoints_every_k_epochs_and_none_with_zero(dataset: Dataset) -> None:
    _, saved = _train(dataset, PARAMS, TrainingConfig(max_epochs=5, checkpoint_every=2,
                                                      early_stopping_patience=5))
    assert sorted(saved) == [2, 4]
    _, saved = _train(dataset, PARAMS, TrainingConfig(max_epochs=2, checkpoint_every=0))
    assert saved == {}


@pytest.fixture(scope="module")
def checkpoint(dataset: Dataset) -> bytes:
    _, saved = _train(dataset, PARAMS, TrainingConfig(max_epochs=2, precision="float32"))
    return saved[2]


def test_a_partial_or_corrupt_checkpoint_is_refused_with_the_reason(checkpoint: bytes) -> None:
    with pytest.raises(CheckpointError, match="unreadable"):
        read_state(checkpoint[: len(checkpoint) // 2], PARAMS)
    flipped = bytearray(checkpoint)
    flipped[len(flipped) // 3] ^= 0xFF  # inside an array: the archive's checksum catches it
    with pytest.raises(CheckpointError, match="unreadable"):
        read_state(bytes(flipped), PARAMS)
    for junk in (b"", bytes(range(256)) * 40):  # random bytes: no NumPy pickle advice
        with pytest.raises(CheckpointError) as caught:
            read_state(junk, PARAMS)
        assert str(caught.value) == "not a checkpoint written by hpsearch (not a .npz archive)"


def test_a_checkpoint_of_other_parameters_or_version_is_refused(
        checkpoint: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CheckpointError, match=r"of other parameters \(units_l1\)"):
        read_state(checkpoint, {**PARAMS, "units_l1": 25})
    monkeypatch.setattr("objectives.checkpoints.hpsearch_version", lambda: "9.9.9")
    with pytest.raises(CheckpointError, match="written by hpsearch .* this is 9.9.9"):
        read_state(checkpoint, PARAMS)


def test_a_checkpoint_that_does_not_fit_the_model_is_refused_before_training(
        dataset: Dataset, checkpoint: bytes) -> None:
    state = read_state(checkpoint, PARAMS)
    state.model_values = state.model_values[:-1]
    with pytest.raises(CheckpointError, match="of another model"):
        _train(dataset, PARAMS, TrainingConfig(max_epochs=3), state)


def test_a_failing_store_costs_the_checkpoint_not_the_training(
        dataset: Dataset, caplog: pytest.LogCaptureFixture) -> None:
    training = TrainingConfig(max_epochs=3, precision="float32")
    whole, _ = _train(dataset, PARAMS, training)
    calls = []

    def full_disk(data: bytes) -> None:
        calls.append(len(data))
        raise OSError(28, "No space left on device")

    with fresh_session(), caplog.at_level(logging.WARNING):
        keras.utils.set_random_seed(11)
        outcome = train(PARAMS, dataset, training, "val_accuracy", save_checkpoint=full_disk)
    assert outcome.recorder.history == whole[0]
    assert len(calls) == 1  # tried once, then no more for this training
    assert [r.getMessage() for r in caplog.records] == [
        "checkpoint not saved, this trial goes on without one: OSError: "
        "[Errno 28] No space left on device"]


WRITER = """
import sys
from pathlib import Path
from search.artifacts.checkpoints import ArtifactCheckpoints, FolderCheckpoints
store = FolderCheckpoints(Path(sys.argv[1]))
for i in range(10**6):
    store.save(7, bytes([i % 251]) * 50_000_000)
"""


def test_a_writer_killed_mid_write_leaves_the_previous_checkpoint_whole(tmp_path: Path) -> None:
    store = FolderCheckpoints(tmp_path)
    store.save(7, b"x" * 1000)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)])
    time.sleep(1.5)  # a few 50 MB writes, one of them under way
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    data = store.load(7)
    assert data is not None and len(set(data)) == 1  # one write, whole
    assert len(data) in (1000, 50_000_000)
    assert store.keys() == [7]  # beside it, at most a temporary file, never a second checkpoint
    store.drop(7)
    assert store.load(7) is None and store.keys() == []


def test_checkpoints_in_an_optuna_artifact_store_are_saved_replaced_read_and_dropped(
        tmp_path: Path) -> None:
    """The protocol S3 checkpoints use (``optuna.artifacts.Boto3ArtifactStore``), here on
    Optuna's file-system store, which keeps the same protocol."""
    import optuna

    (tmp_path / "checkpoints" / "study").mkdir(parents=True)  # S3 keys need no folders
    store = ArtifactCheckpoints(optuna.artifacts.FileSystemArtifactStore(tmp_path),
                                "checkpoints/study")
    assert store.load(3) is None
    store.save(3, b"first")
    store.save(3, b"second")
    assert store.load(3) == b"second"
    store.drop(3)
    store.drop(3)  # none left: nothing to do
    assert store.load(3) is None


class _Hooks:
    """Only the checkpoints of the objective's hooks."""

    def __init__(self, folder: Path) -> None:
        self.store = FolderCheckpoints(folder)

    def callbacks(self, trial: Any) -> list[Any]:
        return []

    def after_training(self, *args: Any) -> None:
        pass

    def checkpoints(self) -> FolderCheckpoints:
        return self.store


@pytest.mark.parametrize(("damage", "why"), [
    (lambda data: data[:100], "is not used: unreadable"),
    (lambda data: data, "is not used: of other parameters"),
    (None, "left no checkpoint"),
], ids=["partial", "other-parameters", "none"])
def test_a_retry_whose_checkpoint_cannot_be_used_starts_at_epoch_1_with_one_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any, why: str) -> None:
    import optuna

    from objectives.config import DataConfig
    from objectives.mlp import create_objective
    from objectives.space import SearchSpace, suggest
    from search.workers.retries import requeue

    hooks = _Hooks(tmp_path)
    space = SearchSpace.model_validate({"n_layers": 1, "units": 16, "batch_size": 128,
                                        "optimizer": "adam"})
    objective = create_objective(
        space=space, data=DataConfig(dataset="stub"), metric="val_accuracy", seed=0,
        hooks=hooks, training=TrainingConfig(max_epochs=2, early_stopping_patience=2))
    study = optuna.create_study(direction="maximize")
    stopped = study.ask()  # trial 0, whose worker died after its checkpoint below
    suggest(stopped, space)
    if damage is not None:
        state = TrainingState(params={"n_layers": 2}, epoch=1, stopped=False, history={},
                              seconds=[], order_seed=0, early_stopping={}, plateau={},
                              model_values=[], optimizer_values=[])
        hooks.store.save(0, damage(state.to_bytes()))
    study.tell(stopped, state=optuna.trial.TrialState.FAIL)
    requeue(study, study.trials[0])
    with caplog.at_level(logging.WARNING):
        study.optimize(objective, n_trials=1)
    retry = study.trials[1]
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.user_attrs["resumes"] == 0 and retry.user_attrs["resumed_at_epoch"] == 0
    assert retry.user_attrs["epochs_run"] == 2  # from epoch 1
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING and r.name.startswith("objectives")]
    assert len(warnings) == 1 and warnings[0].startswith("trial 1 starts at epoch 1: ")
    assert why in warnings[0]
    assert hooks.store.load(0) is None  # the retry ended: its lineage's checkpoint is gone
