"""What an epoch of a trial will cost, known before it trains.

An MLP's epoch on a given machine costs about the same per floating-point operation and per
training step, whatever its widths: so each trial records the work of its epoch before it
trains (:func:`features`: its dense layers' multiply-adds over the training and validation
examples, its steps, the examples its augmentation touches) and, once it has trained, the
seconds it measured (``seconds_per_epoch``). A new trial's seconds per epoch are predicted from
the earlier trials of its study (:func:`predict`): after one or two, the study's measured
rate on an assumed mix of arithmetic, steps and fixed cost; after three, the arithmetic and
the fixed cost per layer fitted to the study; after ten, every part of the mix
(non-negative least squares on the relative error). Recorded on the trial as
``predicted_epoch_seconds`` beside the measured ``seconds_per_epoch`` (``objectives.record``).
Machines differ (a GPU beside CPUs, more threads, bfloat16 or float32): each trial also records
what it trained on (``trained_on``), and a prediction learns from the trials of its own
machine once there are a few of them.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# The features of an epoch's work, in the order the fit takes them.
FEATURES = ("flops", "steps", "augmented", "layers")
# Before the study has measured enough trials to fit its own mix: the seconds of one operation,
# one step, one augmented example and one layer's share of an epoch's fixed cost on a 2-core
# CPU, used only for their ratios, the study's measured rate scaling them all.
PRIOR = {"flops": 1 / 2e10, "steps": 1e-3, "augmented": 1e-6, "layers": 0.05}
# From this many measured trials on, the arithmetic and the fixed cost per layer are fitted
# to the study; from FIT_FROM on, every feature.
FIT_FEW_FROM = 3
FEW = ("flops", "layers")
FIT_FROM = 2 * len(FEATURES) + 2
# The latest this many measured trials are what a prediction learns from.
WINDOW = 200


def machine(*, threads: int, device: str, precision: str) -> str:
    """What a trial trains on, as far as its speed goes: this host, its thread count, the
    device and the compute precision."""
    import socket

    return f"{socket.gethostname()}, {threads} threads, {device}, {precision}"


def dense_layers(model: Any) -> list[tuple[int, int]]:
    """The (inputs, outputs) of each of ``model``'s layers with a kernel, in order."""
    found = []
    for layer in getattr(model, "layers", ()):
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and len(kernel.shape) == 2:
            found.append((int(kernel.shape[0]), int(kernel.shape[1])))
    return found


def dense_flops(model: Any) -> int:
    """Multiply-adds (2 operations each) per example of ``model``'s layers with a kernel."""
    return sum(2 * inputs * outputs for inputs, outputs in dense_layers(model))


def epoch_work(model: Any, *, n_train: int, n_val: int, batch_size: int,
               augmented: bool) -> dict[str, float]:
    """The :func:`features` of an epoch of ``model`` (what ``fit`` trains) on ``n_train``
    training and ``n_val`` validation examples."""
    return features(flops_per_example=dense_flops(model), n_layers=len(dense_layers(model)),
                    n_train=n_train, n_val=n_val,
                    batch_size=batch_size, augmented=augmented)


def features(*, flops_per_example: int, n_layers: int, n_train: int, n_val: int,
             batch_size: int, augmented: bool) -> dict[str, float]:
    """An epoch's work: the training examples' forward and backward passes (three times the
    forward's operations) and the validation's forward pass, the training steps, the examples
    that augmentation transforms, and the layers with a kernel (what an epoch costs whatever
    its size grows with them: callbacks, the validation's start, a share of the first epoch's
    tracing)."""
    return {
        "flops": float(flops_per_example) * (3 * n_train + n_val),
        "steps": float(math.ceil(n_train / batch_size)),
        "augmented": float(n_train if augmented else 0),
        "layers": float(n_layers),
    }


def _vector(values: Mapping[str, Any]) -> np.ndarray | None:
    try:
        vector = np.array([float(values[name]) for name in FEATURES])
    except (KeyError, TypeError, ValueError):
        return None
    return vector if np.all(np.isfinite(vector)) and np.all(vector >= 0) else None


def predict(work: Mapping[str, float],
            measured: Sequence[tuple[Mapping[str, Any], float, str | None]],
            machine: str | None = None) -> float | None:
    """Seconds per epoch of an epoch of ``work`` on ``machine``, from ``measured`` (earlier
    trials' work, seconds per epoch and the machine they trained on, oldest first): from the
    trials of the same machine once there are :data:`FIT_FEW_FROM` of them, else from all;
    None before any trial has been measured."""
    target = _vector(work)
    same = [row for row in measured if machine is not None and row[2] == machine]
    if len(same) >= FIT_FEW_FROM:
        measured = same
    rows = [(vector, float(seconds)) for values, seconds, _ in measured[-WINDOW:]
            if (vector := _vector(values)) is not None
            and isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0]
    if target is None or not rows:
        return None
    x = np.array([vector for vector, _ in rows])
    y = np.array([seconds for _, seconds in rows])
    prior = np.array([PRIOR[name] for name in FEATURES])
    weights = prior * float(np.median(y / (x @ prior)))  # the study's rate, the assumed mix
    fitted = None
    if len(rows) >= FIT_FROM:
        fitted = _fit(x, y, FEATURES)
    elif len(rows) >= FIT_FEW_FROM:
        fitted = _fit(x, y, FEW)
    if fitted is not None:
        weights = fitted
    predicted = float(target @ weights)
    return predicted if predicted > 0 and math.isfinite(predicted) else None


def _fit(x: np.ndarray, y: np.ndarray, names: Sequence[str]) -> np.ndarray | None:
    """Non-negative weights of the features ``names`` (the others 0) that minimize the
    relative error, seconds / prediction near 1 for fast and slow trials alike; None where no
    such weights predict every measured trial above 0 seconds."""
    from scipy.optimize import nnls

    columns = [FEATURES.index(name) for name in names]
    found, _ = nnls(x[:, columns] / y[:, None], np.ones(len(y)))
    weights = np.zeros(len(FEATURES))
    weights[columns] = found
    return weights if np.all(x @ weights > 0) else None
