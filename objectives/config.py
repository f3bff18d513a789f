"""The data and training sections of a study file, as the Keras MLP objective reads them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

Metric = Literal["val_accuracy", "val_loss"]
# What a trial's model costs, known before it trains (objectives.goals): its parameters, and
# its inference time per image in milliseconds at batch 1.
Measure = Literal["n_params", "latency_ms"]
ObjectiveName = Literal["val_accuracy", "val_loss", "n_params", "latency_ms"]
Direction = Literal["maximize", "minimize"]
METRICS: tuple[Metric, ...] = ("val_accuracy", "val_loss")
# Datasets that are tables of results, for the tabular objective (objectives.tabular).
TABULAR = ("hpobench", "fcnet")
MEASURES: tuple[Measure, ...] = ("n_params", "latency_ms")


def direction(name: str) -> Direction:
    """Whether the metric or measure ``name`` is to be maximized (accuracy) or minimized (loss,
    size, latency): the one place that says it."""
    return "maximize" if name == "val_accuracy" else "minimize"



class DataConfig(BaseModel):
    """Which dataset to train on and how to split it.

    ``cifar10`` without a path is Keras's download; with a path, CIFAR-10's pickled batches
    (archive or folder) or an image-folder tree. ``images`` is any image-folder tree
    (``train/<class>/...``, ``test/<class>/...``), as a folder or a .tar.gz/.zip archive.
    ``hpobench`` and ``fcnet`` are tables of MLPs trained beforehand, for the ``tabular-mlp``
    objective (``objectives.tabular``); ``task`` names the table's dataset.
    """

    # strict: a boolean is not a number (`n_trials = true` is no budget); every number finite
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    dataset: Literal["stub", "cifar10", "images", "hpobench", "fcnet"] = "stub"
    path: str | None = Field(default=None, min_length=1)
    task: str | None = Field(default=None, min_length=1)
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)
    train_subset: int | None = Field(default=None, ge=10)
    validation_subset: int | None = Field(default=None, ge=10)


    @model_validator(mode="after")
    def _path_fits_dataset(self) -> DataConfig:
        if self.dataset == "images" and self.path is None:
            raise ValueError("dataset 'images' needs `path`: an image-folder tree or its archive")
        if self.dataset == "stub" and self.path is not None:
            raise ValueError("dataset 'stub' is generated and takes no `path`")
        if self.dataset in TABULAR:
            self._check_task()
        elif self.task is not None:
            raise ValueError(f"`task` names a table's dataset (hpobench, fcnet); dataset "
                             f"{self.dataset!r} takes none")
        return self

    def _check_task(self) -> None:
        from objectives.tabular import TableMissing, tasks

        if self.path is not None:
            raise ValueError(f"dataset {self.dataset!r} ships in its package and takes no "
                             "`path`")
        try:
            known = tasks(self.dataset)
        except TableMissing as exc:
            raise ValueError(str(exc)) from None
        if self.task not in known:
            raise ValueError(f"dataset {self.dataset!r} needs `task`, one of {known}, but got "
                             f"{self.task!r}")


class TrainingConfig(BaseModel):
    """How long each trial trains and when it stops early."""

    # strict: a boolean is not a number (`n_trials = true` is no budget); every number finite
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    max_epochs: int = Field(default=40, ge=1, le=10_000)
    early_stopping_patience: int = Field(default=5, ge=1)
    reduce_lr_patience: int = Field(default=2, ge=1)
    reduce_lr_factor: float = Field(default=0.5, gt=0.0, lt=1.0)
    min_learning_rate: float = Field(default=1e-6, ge=0.0)
    pruning_interval: int = Field(default=1, ge=1)
    # How fast it runs, not what it learns (see objectives/fast_path.py).
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = "auto"
    steps_per_execution: int = Field(default=64, ge=1)
    fused_optimizer: StrictBool = True
    # A checkpoint after every this many epochs, for retries to resume from; 0: none.
    checkpoint_every: int = Field(default=1, ge=0, le=10_000)

    @model_validator(mode="after")
    def _interval_fits(self) -> TrainingConfig:
        if self.pruning_interval > self.max_epochs:
            raise ValueError(
                "`pruning_interval <= max_epochs` must hold, but got "
                f"(pruning_interval={self.pruning_interval}, max_epochs={self.max_epochs})"
            )
        return self
