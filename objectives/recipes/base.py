"""``Recipe``: what one training recipe declares and does, in one place.

A recipe is a way of training the MLP beyond the seed's (a learning-rate schedule, label
smoothing, augmentation, input whitening, ...). Its module declares, next to each other:

- its **space entries** (an ``Entries`` class: names, types, bounds and defaults), whose
  defaults train as the seed did, so that a study stored before the recipe existed keeps its
  fingerprint and resumes (``objectives.space.ENTRIES_ADDED_LATER``);
- its **conditions**: which of its entries apply only to some choices of another;
- the value the **warm-start references** take of each entry where a space searches it
  (``objectives.space.REFERENCE_RECIPE``);
- what it does to the **feed** (the training batches), the **labels** and the **loss**, the
  **learning rate**, the model's **inputs**, and what it must **check against the data** before
  a study starts: each an override of one of :class:`Recipe`'s methods, which by default leave
  training as it was, in the manner of KerasTuner's ``HyperModel.build`` and ``fit``.

``objectives.recipes`` lists the recipes and puts their effects together for the objective.
Recipe modules import Keras and TensorFlow inside their methods only, so that validating a
study file stays instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from objectives.entries import Entries

if TYPE_CHECKING:
    from objectives.space import SearchSpace

# An entry that applies only to some choices of another: its owner entry and those choices.
Condition = tuple[str, tuple[str, ...]]


class Recipe:
    """One training recipe. Subclasses set the class attributes and override the methods
    that their recipe changes."""

    #: the recipe's space entries, in the order they are sampled and shown
    entries: ClassVar[type[Entries]]
    #: entry -> (the entry it depends on, the choices of that entry it applies to)
    conditions: ClassVar[dict[str, Condition]] = {}
    #: the warm-start references' value of each entry, where a space searches it
    reference: ClassVar[dict[str, Any]] = {}

    def feed(self, params: dict[str, Any]) -> dict[str, Any]:
        """Options of the training batches (``objectives.feed.batches``)."""
        return {}

    def labels(self, params: dict[str, Any], y: np.ndarray, n_classes: int) -> np.ndarray:
        """The labels the loss takes, from class indices ``y``."""
        return y

    def loss(self, params: dict[str, Any]) -> Any | None:
        """The loss, where the recipe needs another than sparse categorical cross-entropy."""
        return None

    def learning_rate(self, params: dict[str, Any], *, steps_per_epoch: int,
                      epochs: int) -> Any | None:
        """The learning rate (a number or a Keras schedule), where the recipe sets it."""
        return None

    def inputs(self, params: dict[str, Any], x_train: np.ndarray) -> dict[str, Any] | None:
        """How the model preprocesses its raw inputs (``objectives.model.build_model``'s
        ``preprocess``), computed on ``x_train``, where the recipe decides it."""
        return None

    def check_data(self, space: SearchSpace, input_shape: tuple[int, ...]) -> list[str]:
        """What ``space`` asks of this recipe that data of ``input_shape`` (one example's
        shape) cannot give: one line each, named by entry."""
        return []
