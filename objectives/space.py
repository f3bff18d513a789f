"""The search space of the Keras MLP objective: its schema and the one place that samples it.

Every hyperparameter keeps one name everywhere (study file, Optuna storage, dashboard,
report): ``n_layers``, ``units_l0`` ... ``units_l{n-1}``, ``activation``, ``batch_norm``,
``dropout``, ``l2``, ``initializer``, ``optimizer``, ``learning_rate``, ``batch_size`` and the
optimizer-specific ``weight_decay`` (adamw), ``momentum`` and ``nesterov`` (sgd) and ``rho``
(rmsprop), which are sampled only when their optimizer is chosen; ``lr_schedule`` with its
``warmup_epochs`` (warmup_cosine, one_cycle) and ``final_lr_fraction`` (every schedule but
plateau), sampled only when their schedule is chosen; ``label_smoothing``, ``augment_flip``
and ``augment_shift`` (pixels); ``preprocessing`` with its ``whitening_epsilon`` (pca, zca)
and ``pca_components`` (pca).

In a study file each entry takes one of three forms (``objectives.entries``)::

    activation = "relu"                                   # fixed to one value
    activation = ["relu", "tanh", "gelu"]                 # choices (also {choices = [...]})
    learning_rate = {low = 1e-4, high = 1e-2, log = true} # inclusive range (numbers only)

The MLP's own entries are here; those of each training recipe (schedules, smoothing,
augmentation, preprocessing) are declared by the recipe (``objectives.recipes``) and put
together here, after the MLP's. This module imports neither Keras nor TensorFlow, so
validating a study file is instant.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal

import optuna
from pydantic import ValidationInfo, field_validator

from objectives import recipes
from objectives.entries import (BatchSize, Categorical, Depth, Entries, NonNegative, Numeric,
                                Positive, Rate, Rho, Width)
from objectives.recipes.augmentation import AugmentationEntries
from objectives.recipes.preprocessing import PreprocessingEntries
from objectives.recipes.schedule import ScheduleEntries
from objectives.recipes.smoothing import SmoothingEntries

Activation = Literal["relu", "tanh", "gelu", "selu", "elu", "swish", "sigmoid", "leaky_relu"]
Initializer = Literal[
    "glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "lecun_normal", "lecun_uniform"
]
OptimizerName = Literal["adam", "adamw", "sgd", "rmsprop", "nadam", "lion"]

# Which optimizer each optimizer-specific parameter belongs to.
OPTIMIZER_PARAMS: dict[str, OptimizerName] = {
    "weight_decay": "adamw",
    "momentum": "sgd",
    "nesterov": "sgd",
    "rho": "rmsprop",
}

# The parameters of one choice of another entry, and the choices they belong to, as the
# training recipes declare them (objectives.recipes). Each follows the entry it depends on.
CONDITIONAL_PARAMS = recipes.CONDITIONS

# Entries added after studies were first stored, every training recipe's: left out of a stored
# study's fingerprint while they keep their defaults, so that a study made before them still
# resumes; they are sampled, in this order, only where the space asks for more than their
# defaults.
ENTRIES_ADDED_LATER = recipes.ENTRIES


class MlpEntries(Entries):
    """The MLP's own entries: its shape, its regularization, its optimizer and batches."""

    n_layers: Numeric[Depth] = Numeric[Depth](low=1, high=4)
    units: Numeric[Width] = Numeric[Width](low=32, high=1024, log=True)
    activation: Categorical[Activation] = Categorical[Activation](
        choices=["relu", "tanh", "gelu", "selu", "elu", "swish"]
    )
    batch_norm: Categorical[bool] = Categorical[bool](choices=[True, False])
    dropout: Numeric[Rate] = Numeric[Rate](low=0.0, high=0.5)
    l2: Numeric[NonNegative] = Numeric[NonNegative](low=1e-7, high=1e-3, log=True)
    initializer: Categorical[Initializer] = Categorical[Initializer](
        choices=["glorot_uniform", "he_normal", "lecun_normal"]
    )
    optimizer: Categorical[OptimizerName] = Categorical[OptimizerName](
        choices=["adam", "adamw", "sgd", "rmsprop"]
    )
    learning_rate: Numeric[Positive] = Numeric[Positive](low=1e-4, high=1e-2, log=True)
    batch_size: Numeric[BatchSize] = Numeric[BatchSize](choices=[64, 128, 256])
    weight_decay: Numeric[NonNegative] = Numeric[NonNegative](low=1e-6, high=1e-2, log=True)
    momentum: Numeric[Rate] = Numeric[Rate](low=0.0, high=0.99)
    nesterov: Categorical[bool] = Categorical[bool](choices=[True, False])
    rho: Numeric[Rho] = Numeric[Rho](low=0.8, high=0.99)


# Bases in reverse: the fields come in the MLP's order, then each recipe's, as RECIPES lists them.
class SearchSpace(PreprocessingEntries, AugmentationEntries, SmoothingEntries, ScheduleEntries,
                  MlpEntries):
    """The whole space; every entry has a default, so a study file overrides only what it needs."""

    @field_validator(*CONDITIONAL_PARAMS)
    @classmethod
    def _owner_is_searched(cls, value: Any, info: ValidationInfo) -> Any:
        owner, choices = CONDITIONAL_PARAMS[info.field_name or ""]
        entry = info.data.get(owner)
        if entry is None:  # the entry it depends on was itself invalid; reported there
            return value
        if value == cls.model_fields[info.field_name or ""].default:
            return value  # its default, as a resolved study file repeats it: not asked for
        allowed = [entry.value] if entry.value is not None else entry.choices
        if not set(choices) & set(allowed):
            raise ValueError(
                f"applies only to {owner} {' or '.join(map(repr, choices))}, which "
                f"`{owner}` does not allow (it allows {allowed})"
            )
        return value

    @field_validator("weight_decay", "momentum", "nesterov", "rho")
    @classmethod
    def _optimizer_is_searched(cls, value: Any, info: ValidationInfo) -> Any:
        optimizers = info.data.get("optimizer")
        if optimizers is None:  # the optimizer entry itself was invalid; reported there
            return value
        if value == cls.model_fields[info.field_name or ""].default:
            return value  # its default, as a resolved study file repeats it: not asked for
        owner = OPTIMIZER_PARAMS[info.field_name or ""]
        allowed = [optimizers.value] if optimizers.value is not None else optimizers.choices
        if owner not in allowed:
            raise ValueError(
                f"applies only to optimizer {owner!r}, which `optimizer` does not allow "
                f"(it allows {allowed})"
            )
        return value

    def describe(self) -> list[tuple[str, str, str]]:
        """Rows of (name, distribution, condition) in sampling order, for ``hpsearch validate``."""
        rows = [
            ("n_layers", self.n_layers.describe(), ""),
            ("units_l{i}", self.units.describe(), "one per layer, i < n_layers"),
        ]
        for name in ("activation", "batch_norm", "dropout", "l2", "initializer", "optimizer",
                     "learning_rate", "batch_size"):
            rows.append((name, getattr(self, name).describe(), ""))
        for name, owner in OPTIMIZER_PARAMS.items():
            rows.append((name, getattr(self, name).describe(), f"optimizer == {owner!r}"))
        for name in ENTRIES_ADDED_LATER:
            depends_on, choices = CONDITIONAL_PARAMS.get(name, ("", ()))
            rows.append((name, getattr(self, name).describe(),
                         f"{depends_on} in {list(choices)!r}" if depends_on else ""))
        return rows

    def check(self, params: dict[str, Any]) -> list[str]:
        """What is wrong with a fixed configuration: unknown names, values outside the space."""
        problems = []
        for name, value in params.items():
            entry_name = "units" if re.fullmatch(r"units_l\d+", name) else name
            known = entry_name in type(self).model_fields
            entry = getattr(self, entry_name) if known else None
            if entry is None:
                close = difflib.get_close_matches(name, list(type(self).model_fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{name}: not a parameter of the space{hint}")
            elif not entry.contains(value):
                problems.append(f"{name}: {value!r} is outside the space ({entry.describe()})")
        return problems + self._inapplicable(params)

    def _inapplicable(self, params: dict[str, Any]) -> list[str]:
        """Parameters of a fixed configuration that its own choices leave unused (a layer past
        its depth, the weight decay of an optimizer it does not use): each would be dropped
        without a word, so each is refused by name."""

        def chosen(entry: str) -> Any:
            if entry in params:
                return params[entry]
            field = getattr(self, entry)
            return field.value if field.value is not None else (
                field.choices[0] if field.choices is not None and len(field.choices) == 1
                else None)

        problems = []
        depth = chosen("n_layers")
        for name in params:
            layer = re.fullmatch(r"units_l(\d+)", name)
            if layer and isinstance(depth, int) and int(layer.group(1)) >= depth:
                problems.append(f"{name}: the trial has {depth} layers (n_layers), so it has no "
                                f"layer {layer.group(1)}")
            owners = ({"optimizer": ((OPTIMIZER_PARAMS[name],))} if name in OPTIMIZER_PARAMS
                      else dict([CONDITIONAL_PARAMS[name]]) if name in CONDITIONAL_PARAMS
                      else {})
            for owner, uses in owners.items():
                value = chosen(owner)
                if value is not None and value not in uses:
                    problems.append(f"{name}: applies only to {owner} "
                                    f"{' or '.join(map(repr, uses))}, but the trial's {owner} "
                                    f"is {value!r}")
        return problems

    def fingerprint(self) -> dict[str, Any]:
        """A JSON-able form, stored with the study so that resuming can refuse another space."""
        dumped = self.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
        defaults = type(self)().model_dump(mode="json", exclude_none=True)
        return {name: value for name, value in dumped.items()
                if name not in ENTRIES_ADDED_LATER or value != defaults[name]}


# The configurations a new study tries first (``[study] warm_start``), decided by
# benchmarks/search_efficiency.py (docs/benchmarks.md) on CIFAR-10:
# - the strongest of the hand-built experiments, a deep ReLU MLP with BatchNorm, Dropout and
#   AdamW, for 18 epochs: a finished, good trial within the first two minutes, and a bar for the
#   pruner. The course ran it for 15, which gives 0.54-0.56 validation accuracy; at 18 it was
#   0.566 and 0.568 for two seeds (0.551 and 0.558 at 15);
# - the same MLP twice as wide with batches of 256, for the study's whole epoch budget
#   (0.578-0.587 with 40 epochs), a strong start for the sampler.
REFERENCE: dict[str, Any] = {
    "n_layers": 3, "units_l0": 512, "units_l1": 256, "units_l2": 128, "activation": "relu",
    "batch_norm": True, "dropout": 0.3, "l2": 1e-5, "initializer": "he_normal",
    "optimizer": "adamw", "learning_rate": 5e-4, "batch_size": 128, "weight_decay": 1e-4,
}
REFERENCE_WIDE: dict[str, Any] = {
    **REFERENCE, "units_l0": 1024, "units_l1": 512, "units_l2": 256, "batch_size": 256,
}
# The training recipe that a reference takes where a space searches the recipes (and holds
# its values), as each recipe declares it (objectives.recipes): ZCA whitening, flips, shifts of
# 2 pixels, cosine decay to 0 and label smoothing 0.1, CIFAR-10's best in
# benchmarks/recipe_ablation.py (docs/benchmarks.md): there it is worth 0.02 to the wide
# reference in 40 epochs (0.596 to 0.616 validation accuracy) and nothing to the deep one by its
# 18th epoch (0.557 and 0.556). On other images it can be the worst: on scikit-learn's digits
# (8x8, benchmarks/digits.py) it took both references from 0.94-0.96 test accuracy to
# 0.20-0.42 (two seeds), where a shift of 2 pixels is a quarter of the image. So the
# references span both recipes: the deep one trains with the seed's (no recipe: every entry
# at its default), the wide one with CIFAR-10's, and the sampler learns from the two. Where the
# space leaves a value of a reference's recipe out, it keeps the seed's (the entry's default),
# or, if the space leaves that out too, the sampler chooses.
REFERENCE_RECIPE = recipes.REFERENCE
SEED_RECIPE: dict[str, Any] = {}
# (parameters, epochs: None for the study's max_epochs, training recipe)
REFERENCES: tuple[tuple[dict[str, Any], int | None, dict[str, Any]], ...] = (
    (REFERENCE, 18, SEED_RECIPE), (REFERENCE_WIDE, None, REFERENCE_RECIPE))


def reference_trials(space: SearchSpace) -> list[tuple[dict[str, Any], int | None]]:
    """The parts of each of ``REFERENCES`` that ``space`` holds (the sampler fills in the
    rest), with their epochs, without repeats and without empty ones: a parameter outside the
    space is left out, and the layer widths go with the depth. Where ``space`` searches a
    training recipe (a later entry), each reference takes its own recipe's value of it."""
    starts: list[tuple[dict[str, Any], int | None]] = []
    for reference, epochs, recipe in REFERENCES:
        allowed = {name: value for name, value in reference.items()
                   if not space.check({name: value})}
        if "n_layers" not in allowed:
            allowed = {k: v for k, v in allowed.items() if not re.fullmatch(r"units_l\d+", k)}
        if "optimizer" not in allowed:
            allowed = {k: v for k, v in allowed.items() if k not in OPTIMIZER_PARAMS}
        if allowed:
            allowed.update(_recipe(space, allowed, recipe))
        if allowed and allowed not in [params for params, _ in starts]:
            starts.append((allowed, epochs))
    return starts


def _recipe(space: SearchSpace, chosen: dict[str, Any],
            recipe_values: dict[str, Any]) -> dict[str, Any]:
    """The later entries ``space`` searches, as ``recipe_values`` has them where the space
    holds that, else at their defaults where it holds those; their own parameters where their
    choice is made and the space holds the recipe's value."""
    recipe: dict[str, Any] = {}
    for name in ENTRIES_ADDED_LATER:
        if name in CONDITIONAL_PARAMS or not _searched(space, name):
            continue
        default = SearchSpace.model_fields[name].default.value
        for value in (recipe_values.get(name), default):
            if value is not None and not space.check({name: value}):
                recipe[name] = value
                break
    for name, (owner, choices) in CONDITIONAL_PARAMS.items():
        value = recipe_values.get(name)
        if ({**chosen, **recipe}.get(owner) in choices and value is not None
                and not space.check({name: value})):
            recipe[name] = value
    return recipe


def suggest(trial: optuna.trial.BaseTrial, space: SearchSpace) -> dict[str, Any]:
    """Sample one configuration from ``space`` through ``trial.suggest_*``.

    Returns the parameters by their stable names, ready for ``build_model`` and
    ``get_optimizer``. Parameters of an optimizer or a learning-rate schedule that was not
    chosen are not sampled.

    Example:
        >>> params = suggest(optuna.trial.FixedTrial({...}), SearchSpace())
    """
    params: dict[str, Any] = {"n_layers": space.n_layers.suggest(trial, "n_layers")}
    for i in range(params["n_layers"]):
        params[f"units_l{i}"] = space.units.suggest(trial, f"units_l{i}")
    for name in ("activation", "batch_norm", "dropout", "l2", "initializer", "optimizer",
                 "learning_rate", "batch_size"):
        params[name] = getattr(space, name).suggest(trial, name)
    for name, owner in OPTIMIZER_PARAMS.items():
        if params["optimizer"] == owner:
            params[name] = getattr(space, name).suggest(trial, name)
    # The later entries are sampled (and recorded) only where the space asks for more than
    # their defaults, which train as every trial did before they existed.
    for name in ENTRIES_ADDED_LATER:
        depends_on, choices = CONDITIONAL_PARAMS.get(name, ("", ()))
        if depends_on:
            applies = params.get(depends_on) in choices
        else:
            applies = _searched(space, name)
        if applies:
            params[name] = getattr(space, name).suggest(trial, name)
    return params


def _searched(space: SearchSpace, name: str) -> bool:
    """Whether ``space`` holds entry ``name`` at anything but its default."""
    return bool(getattr(space, name) != SearchSpace.model_fields[name].default)


def layer_widths(params: dict[str, Any]) -> list[int]:
    """The hidden-layer widths of a sampled configuration, in order."""
    return [int(params[f"units_l{i}"]) for i in range(int(params["n_layers"]))]
