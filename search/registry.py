"""The objectives a study file can name, found by name so that TensorFlow is imported only
when a study actually trains."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Protocol

import optuna

from objectives.config import DataConfig, Metric, TrainingConfig
from objectives.goals import Goals
from objectives.space import SearchSpace

# name -> "module:factory"; the factory takes the keyword arguments of ``ObjectiveFactory``.
OBJECTIVES: dict[str, str] = {
    "keras-mlp": "objectives.mlp:create_objective",
    # a table of MLPs trained beforehand, for judging a search strategy in seconds
    "tabular-mlp": "objectives.tabular:create_objective",
}


class ObjectiveFactory(Protocol):
    def __call__(
        self, *, space: SearchSpace, data: DataConfig, training: TrainingConfig, metric: Metric,
        seed: int, hooks: Any = None, goals: Goals | None = None,
    ) -> Callable[[optuna.trial.Trial], float | list[float]]: ...


def load_objective(name: str) -> ObjectiveFactory:
    """The factory registered under ``name`` (validated study files only name known ones)."""
    module_name, _, attribute = OBJECTIVES[name].partition(":")
    factory: Any = getattr(importlib.import_module(module_name), attribute)
    return factory
