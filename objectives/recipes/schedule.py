"""The learning-rate schedule recipe: the learning rate (a number or a Keras schedule) a
configuration asks for.

``lr_schedule`` (a ``[space]`` entry) is one of:

- ``plateau`` (the default, and the seed's way): a constant ``learning_rate``, halved (by
  ``[training] reduce_lr_factor``) when the metric has not improved for
  ``reduce_lr_patience`` epochs (Keras's ``ReduceLROnPlateau``);
- ``cosine``: cosine decay over the trial's planned epochs from ``learning_rate`` to
  ``final_lr_fraction * learning_rate``;
- ``warmup_cosine``: a linear warm-up from 0 to ``learning_rate`` over ``warmup_epochs``, then
  the cosine decay over the epochs left;
- ``one_cycle``: the shape of PyTorch's ``OneCycleLR`` (its defaults, without the momentum
  cycle): a linear warm-up from ``learning_rate / 25`` over ``warmup_epochs``, then the cosine
  decay.

The schedules advance every step (Keras's ``CosineDecay``, so a saved model's optimizer is a
built-in one and loads anywhere), over ``steps_per_epoch * epochs`` steps: an early-stopped or
pruned trial ends before its schedule does. No plateau reduction runs beside a schedule. A
checkpoint keeps the optimizer's step, so a resumed trial carries on with its schedule; and
``evaluate --full-train`` replays it epoch for epoch on more steps per epoch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from objectives.entries import Categorical, Entries, Epochs, Fraction, Numeric
from objectives.recipes.base import Recipe

if TYPE_CHECKING:
    from objectives.keras_setup import keras

ONE_CYCLE_DIVISOR = 25.0  # OneCycleLR's div_factor: where its warm-up starts

Schedule = Literal["plateau", "cosine", "warmup_cosine", "one_cycle"]


class ScheduleEntries(Entries):
    """``lr_schedule``, and the warm-up and final rate of the schedules that have them."""

    lr_schedule: Categorical[Schedule] = Categorical[Schedule](value="plateau")
    warmup_epochs: Numeric[Epochs] = Numeric[Epochs](low=1, high=5)
    final_lr_fraction: Numeric[Fraction] = Numeric[Fraction](low=0.0, high=0.1)


class LearningRateSchedule(Recipe):
    """The learning rate: constant and reduced on plateaus (the seed's), or a schedule."""

    entries = ScheduleEntries
    conditions = {
        "warmup_epochs": ("lr_schedule", ("warmup_cosine", "one_cycle")),
        "final_lr_fraction": ("lr_schedule", ("cosine", "warmup_cosine", "one_cycle")),
    }
    # cosine decay to 0 (benchmarks/recipe_ablation.py, objectives.space.REFERENCE_RECIPE)
    reference = {"lr_schedule": "cosine", "final_lr_fraction": 0.0}

    def learning_rate(self, params: dict[str, Any], *, steps_per_epoch: int,
                      epochs: int) -> Any | None:
        return learning_rate(params, steps_per_epoch=steps_per_epoch, epochs=epochs)


def uses_plateau(params: dict[str, Any]) -> bool:
    """Whether a configuration's learning rate is reduced on plateaus (no schedule)."""
    return params.get("lr_schedule", "plateau") == "plateau"


def learning_rate(params: dict[str, Any], *, steps_per_epoch: int,
                  epochs: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate of ``params``: ``learning_rate`` itself for ``plateau``, else a
    schedule over ``epochs`` epochs of ``steps_per_epoch`` steps."""
    from objectives.keras_setup import keras

    peak = float(params["learning_rate"])
    name = params.get("lr_schedule", "plateau")
    if name == "plateau":
        return peak
    total = max(1, steps_per_epoch * epochs)
    final = float(params.get("final_lr_fraction", 0.0))
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps=total, alpha=final)
    if name not in ("warmup_cosine", "one_cycle"):
        raise ValueError(f"lr_schedule must be one of plateau, cosine, warmup_cosine, "
                         f"one_cycle, but got {name!r}")
    # At least one step of decay is left, however long the warm-up asked for.
    warmup = min(steps_per_epoch * int(params.get("warmup_epochs", 1)), total - 1)
    start = 0.0 if name == "warmup_cosine" else peak / ONE_CYCLE_DIVISOR
    return keras.optimizers.schedules.CosineDecay(
        start, decay_steps=total - warmup, alpha=final, warmup_target=peak,
        warmup_steps=warmup)
