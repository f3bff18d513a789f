"""The training recipes, and their effects put together for the objective.

Each recipe is one module here (``objectives.recipes.base.Recipe`` says what a recipe
declares): ``schedule`` (learning-rate schedules), ``smoothing`` (label smoothing),
``augmentation`` (flips and shifts) and ``preprocessing`` (standardization, PCA and ZCA
whitening). To add one (mixup, say): a module with its ``Entries`` and its ``Recipe``, the
recipe appended to :data:`RECIPES` and its entries to ``objectives.space.SearchSpace``'s bases
(that is where a type checker sees them), and its test. Its entries are then sampled after
those of the recipes before it, shown by ``hpsearch validate``, checked for their conditions,
left out of the fingerprint of a study that does not search them, and taken by the warm-start
references as its ``reference`` says.

This package imports neither Keras nor TensorFlow; the recipes' methods do, when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from objectives.recipes.augmentation import Augmentation
from objectives.recipes.base import Condition, Recipe
from objectives.recipes.preprocessing import InputPreprocessing
from objectives.recipes.schedule import LearningRateSchedule
from objectives.recipes.smoothing import LabelSmoothing

if TYPE_CHECKING:
    from objectives.space import SearchSpace

# In the order their entries were added to the space: the order they are sampled in.
RECIPES: tuple[Recipe, ...] = (LearningRateSchedule(), LabelSmoothing(), Augmentation(),
                               InputPreprocessing())

ENTRIES: tuple[str, ...] = tuple(name for recipe in RECIPES
                                 for name in recipe.entries.model_fields)
CONDITIONS: dict[str, Condition] = {name: condition for recipe in RECIPES
                                    for name, condition in recipe.conditions.items()}
REFERENCE: dict[str, Any] = {name: value for recipe in RECIPES
                             for name, value in recipe.reference.items()}

__all__ = ["CONDITIONS", "ENTRIES", "RECIPES", "REFERENCE", "Recipe", "check_data",
           "feed_options", "inputs", "labels", "learning_rate", "loss"]


def feed_options(params: dict[str, Any]) -> dict[str, Any]:
    """The options of a configuration's training batches (``objectives.feed.batches``)."""
    options: dict[str, Any] = {}
    for recipe in RECIPES:
        options.update(recipe.feed(params))
    return options


def labels(params: dict[str, Any], y: np.ndarray, n_classes: int) -> np.ndarray:
    """The labels a configuration's loss takes, from class indices ``y``."""
    for recipe in RECIPES:
        y = recipe.labels(params, y, n_classes)
    return y


def loss(params: dict[str, Any]) -> Any:
    """A configuration's loss: a recipe's, else sparse categorical cross-entropy."""
    for recipe in RECIPES:
        chosen = recipe.loss(params)
        if chosen is not None:
            return chosen
    return "sparse_categorical_crossentropy"


def learning_rate(params: dict[str, Any], *, steps_per_epoch: int, epochs: int) -> Any:
    """A configuration's learning rate, a number or a Keras schedule over ``epochs`` epochs
    of ``steps_per_epoch`` steps: a recipe's, else ``learning_rate`` itself."""
    for recipe in RECIPES:
        rate = recipe.learning_rate(params, steps_per_epoch=steps_per_epoch, epochs=epochs)
        if rate is not None:
            return rate
    return float(params["learning_rate"])


def inputs(params: dict[str, Any], x_train: np.ndarray) -> dict[str, Any]:
    """How a configuration's model preprocesses its raw inputs (computed on ``x_train``): a
    recipe's way, else pixels scaled to [-1, 1]."""
    for recipe in RECIPES:
        layers = recipe.inputs(params, x_train)
        if layers is not None:
            return layers
    return {"kind": "scale"}


def check_data(space: SearchSpace, input_shape: tuple[int, ...]) -> list[str]:
    """What ``space`` asks that data of ``input_shape`` (one example's) cannot give."""
    return [problem for recipe in RECIPES for problem in recipe.check_data(space, input_shape)]
