"""A trial's training state, kept while it trains so that a retry carries on from its last
epoch instead of epoch 1.

A checkpoint holds everything that decides what the next epoch does: the model's variables
(weights, BatchNorm statistics, Dropout's random state), the optimizer's (step count, learning
rate, moments), early stopping's best weights, best value, best epoch and wait, the plateau
reduction's best value, wait and cooldown, the epochs done and their history, and the seed of
the input order (epoch ``e``'s batches depend on the seed and ``e`` only, see
``objectives.feed``). The pruner's reports live in the study's storage already.

It is one ``.npz`` file (NumPy arrays and a JSON header, no pickles), written after every
``checkpoint_every`` epochs by :class:`Checkpointer` through a :class:`CheckpointStore`
(``search.artifacts.checkpoints``: written whole or not at all). A checkpoint that cannot be read,
or that was written by another hpsearch version, for other parameters or another model, is
refused with :class:`CheckpointError`, whose message says why; the trial then starts at
epoch 1.

Keras's callbacks keep their state in plain attributes (``EarlyStopping.wait``, ``best``,
``best_epoch``, ``best_weights``, ``stopped_epoch``; ``ReduceLROnPlateau.wait``, ``best``,
``cooldown_counter``), reset in their ``on_train_begin``; :class:`Checkpointer` runs after
them and sets them back. ``pyproject.toml`` bounds Keras below its next minor version, and
:func:`callback_state_supported` checks those attributes once per process: where they are
not there, one warning says so and trials train without checkpoints.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol

import numpy as np

from objectives.keras_setup import keras

logger = logging.getLogger(__name__)

FORMAT = 1  # bumped whenever what a checkpoint holds changes
EARLY_STOPPING_STATE = ("wait", "best", "best_epoch", "stopped_epoch")
PLATEAU_STATE = ("wait", "best", "cooldown_counter")


class CheckpointError(Exception):
    """A checkpoint that must not be used; the message says why."""


class CheckpointStore(Protocol):
    """Where one study's checkpoints live, one per trial lineage (its first try's number)."""

    def save(self, key: int, data: bytes) -> None:
        """Replace checkpoint ``key`` with ``data``, whole or not at all."""

    def load(self, key: int) -> bytes | None:
        """Checkpoint ``key``'s bytes; None if there is none."""

    def drop(self, key: int) -> None:
        """Delete checkpoint ``key``, if there is one."""


def hpsearch_version() -> str:
    try:
        return metadata.version("hpsearch")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class TrainingState:
    """What a trial's training was at the end of its ``epoch``-th epoch."""

    params: dict[str, Any]
    epoch: int
    stopped: bool  # early stopping had decided to stop
    history: dict[str, list[float]]
    seconds: list[float]
    order_seed: int
    early_stopping: dict[str, Any]
    plateau: dict[str, Any]
    model_values: list[np.ndarray]
    optimizer_values: list[np.ndarray]
    best_weights: list[np.ndarray] | None = None
    version: str = field(default_factory=hpsearch_version)

    def to_bytes(self) -> bytes:
        header = {
            "format": FORMAT, "version": self.version, "params": self.params,
            "epoch": self.epoch, "stopped": self.stopped, "history": self.history,
            "seconds": self.seconds, "order_seed": self.order_seed,
            "early_stopping": self.early_stopping, "plateau": self.plateau,
            "n_model": len(self.model_values), "n_optimizer": len(self.optimizer_values),
            "n_best": None if self.best_weights is None else len(self.best_weights),
        }
        arrays: dict[str, Any] = {f"model_{i}": v for i, v in enumerate(self.model_values)}
        arrays.update({f"optimizer_{i}": v for i, v in enumerate(self.optimizer_values)})
        arrays.update({f"best_{i}": v for i, v in enumerate(self.best_weights or [])})
        buffer = io.BytesIO()
        np.savez(buffer, header=np.array(json.dumps(header)), **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainingState:
        """Raises:
            CheckpointError: the bytes are not a whole checkpoint of this format and version.
        """
        if not data.startswith(b"PK"):  # a checkpoint is a .npz, a zip archive
            raise CheckpointError("not a checkpoint written by hpsearch (not a .npz archive)")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                header = json.loads(str(archive["header"]))
                if header.get("format") != FORMAT or header.get("version") != hpsearch_version():
                    raise CheckpointError(
                        f"written by hpsearch {header.get('version')} (checkpoint format "
                        f"{header.get('format')}), this is {hpsearch_version()} "
                        f"(format {FORMAT})")

                def listed(prefix: str, count: int | None) -> list[np.ndarray] | None:
                    if count is None:
                        return None
                    return [archive[f"{prefix}_{i}"] for i in range(count)]

                return cls(
                    params=header["params"], epoch=int(header["epoch"]),
                    stopped=bool(header["stopped"]), history=header["history"],
                    seconds=header["seconds"], order_seed=int(header["order_seed"]),
                    early_stopping=header["early_stopping"], plateau=header["plateau"],
                    model_values=listed("model", header["n_model"]) or [],
                    optimizer_values=listed("optimizer", header["n_optimizer"]) or [],
                    best_weights=listed("best", header["n_best"]),
                    version=header["version"],
                )
        except CheckpointError:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise CheckpointError(f"unreadable ({type(exc).__name__}: {exc})") from None


def _plain(value: Any) -> Any:
    """A callback's value as JSON holds it (NumPy scalars to floats; None stays None)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    return float(value)


def read_state(data: bytes, params: dict[str, Any]) -> TrainingState:
    """The state in ``data`` if it is a checkpoint of ``params``.

    Raises:
        CheckpointError: it is not (whether it fits the model is :func:`check_model`'s).
    """
    state = TrainingState.from_bytes(data)
    if state.params != params:
        changed = sorted(k for k in set(state.params) | set(params)
                         if state.params.get(k) != params.get(k))
        raise CheckpointError(f"of other parameters ({', '.join(changed)})")
    return state


def check_model(state: TrainingState, model: Any) -> None:
    """Raises CheckpointError where ``state`` does not fit ``model`` (built and compiled)."""
    for name, values, variables in (
            ("model", state.model_values, model.variables),
            ("optimizer", state.optimizer_values, model.optimizer.variables)):
        shapes = [tuple(v.shape) for v in values]
        if shapes != [tuple(v.shape) for v in variables]:
            raise CheckpointError(f"of another {name} ({len(shapes)} variables of other shapes)")


class Checkpointer(keras.callbacks.Callback):
    """Restores a trial's training state when ``fit`` begins (after the other callbacks have
    reset theirs) and saves it after every ``every`` epochs, and at the epoch early stopping
    ends on. It must come after every callback whose state it keeps.

    A store that fails costs the trial its checkpoint, never its training: one warning, and
    no more saving for this trial.
    """

    def __init__(self, *, save: Callable[[bytes], None] | None, every: int,
                 params: dict[str, Any], order_seed: int, recorder: Any,
                 early_stopping: keras.callbacks.EarlyStopping,
                 plateau: keras.callbacks.ReduceLROnPlateau | None,
                 resume: TrainingState | None = None) -> None:
        super().__init__()
        # (not self.params: Keras sets that to fit's own parameters)
        self._save, self.every, self.trial_params = save, every, params
        self.order_seed, self.recorder = order_seed, recorder
        self.early_stopping, self.plateau, self.resume = early_stopping, plateau, resume

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        state = self.resume
        if state is None:
            return
        for variable, value in zip(self.model.variables, state.model_values):
            variable.assign(value)
        for variable, value in zip(self.model.optimizer.variables, state.optimizer_values):
            variable.assign(value)
        for name in EARLY_STOPPING_STATE:
            setattr(self.early_stopping, name, state.early_stopping[name])
        self.early_stopping.best_weights = state.best_weights
        if self.plateau is not None:  # None under a schedule (objectives.recipes.schedule)
            for name in PLATEAU_STATE:
                setattr(self.plateau, name, state.plateau[name])
        self.recorder.history = {k: list(v) for k, v in state.history.items()}
        self.recorder.seconds = list(state.seconds)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        done = epoch + 1
        if self._save is None or not (done % self.every == 0 or self.model.stop_training):
            return
        try:
            self._save(self.state(done).to_bytes())
        except Exception as exc:  # a full disk, a bucket gone: the trial trains on
            logger.warning("checkpoint not saved, this trial goes on without one: %s: %s",
                           type(exc).__name__, exc)
            self._save = None

    def state(self, done: int) -> TrainingState:
        best_weights = self.early_stopping.best_weights
        return TrainingState(
            params=self.trial_params, epoch=done, stopped=bool(self.model.stop_training),
            history={k: list(v) for k, v in self.recorder.history.items()},
            seconds=list(self.recorder.seconds), order_seed=self.order_seed,
            early_stopping={n: _plain(getattr(self.early_stopping, n))
                            for n in EARLY_STOPPING_STATE},
            plateau={} if self.plateau is None else
            {n: _plain(getattr(self.plateau, n)) for n in PLATEAU_STATE},
            model_values=[keras.ops.convert_to_numpy(v) for v in self.model.variables],
            optimizer_values=[keras.ops.convert_to_numpy(v)
                              for v in self.model.optimizer.variables],
            best_weights=None if best_weights is None else [np.asarray(w)
                                                            for w in best_weights],
        )


@functools.lru_cache(maxsize=1)
def callback_state_supported() -> bool:
    """Whether Keras's EarlyStopping and ReduceLROnPlateau keep their state in the attributes
    a checkpoint restores; if not, says so once (trials then train without checkpoints)."""
    early = keras.callbacks.EarlyStopping(restore_best_weights=True)
    plateau = keras.callbacks.ReduceLROnPlateau()
    early.on_train_begin()
    plateau.on_train_begin()
    missing = [f"EarlyStopping.{n}" for n in (*EARLY_STOPPING_STATE, "best_weights")
               if not hasattr(early, n)]
    missing += [f"ReduceLROnPlateau.{n}" for n in PLATEAU_STATE if not hasattr(plateau, n)]
    if missing:
        logger.warning("checkpoints are off: this Keras has no %s; trials that are "
                       "interrupted start again at epoch 1", ", ".join(missing))
    return not missing
