"""The label-smoothing recipe: ``label_smoothing``, the weight moved from a sample's class to
all classes evenly (0, the default, is none). Keras's sparse cross-entropy takes no smoothing,
so a smoothed configuration's labels come one-hot and its loss is the categorical
cross-entropy with that smoothing; without it, nothing changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from objectives.entries import Entries, Numeric, Rate
from objectives.recipes.base import Recipe


class SmoothingEntries(Entries):
    """``label_smoothing``."""

    label_smoothing: Numeric[Rate] = Numeric[Rate](value=0.0)


def smoothing(params: dict[str, Any]) -> float:
    """A configuration's label smoothing (0 for none)."""
    return float(params.get("label_smoothing", 0.0))


class LabelSmoothing(Recipe):
    """Labels smoothed towards the uniform distribution."""

    entries = SmoothingEntries
    reference = {"label_smoothing": 0.1}  # benchmarks/recipe_ablation.py

    def labels(self, params: dict[str, Any], y: np.ndarray, n_classes: int) -> np.ndarray:
        if not smoothing(params):
            return y
        return np.eye(n_classes, dtype=np.float32)[y]

    def loss(self, params: dict[str, Any]) -> Any | None:
        if not smoothing(params):
            return None
        from objectives.keras_setup import keras

        return keras.losses.CategoricalCrossentropy(label_smoothing=smoothing(params))
