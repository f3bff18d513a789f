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


# name -> "module:function" that loads and checks the data the objective's factory would, without
# building the objective; it takes ``space``, ``data`` and ``seed`` and raises DatasetError as
# the factory does. Every process checks the data this way before it knows whether trials are
# left (``checked_objective``): the Keras MLP's check imports no TensorFlow, so a process that
# starts workers and trains nothing itself (``run --workers``), or finds the budget spent, never
# imports it. With it, ``run --workers 2`` of a stub study started its workers 2.3 s after its
# start instead of 5.3 s, and held 237 MB for the whole run instead of 760 (2.5 CPU-s instead of
# 5.5; medians of 3 alternating runs); ``run`` of a study whose budget is spent ends in 2.3 s
# instead of 5.1. An objective not listed here is light: it is built instead.
DATA_CHECKS: dict[str, str] = {
    "keras-mlp": "objectives.data:check_study_data",
}


class ObjectiveFactory(Protocol):
    def __call__(
        self, *, space: SearchSpace, data: DataConfig, training: TrainingConfig, metric: Metric,
        seed: int, hooks: Any = None, goals: Goals | None = None,
    ) -> Callable[[optuna.trial.Trial], float | list[float]]: ...


def _resolve(path: str) -> Any:
    """What ``"module:attribute"`` names, its module imported."""
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def load_objective(name: str) -> ObjectiveFactory:
    """The factory registered under ``name`` (validated study files only name known ones)."""
    factory: ObjectiveFactory = _resolve(OBJECTIVES[name])
    return factory


def checked_objective(
    name: str, *, space: SearchSpace, data: DataConfig, training: TrainingConfig,
    metric: Metric, seed: int, goals: Goals | None = None, hooks: Any = None,
) -> Callable[[], Callable[[optuna.trial.Trial], float | list[float]]]:
    """Load and check the data that objective ``name`` trains on, now, and return what builds
    the objective. For an objective listed in ``DATA_CHECKS`` the check imports no TensorFlow
    and the build is left until it is called: a worker that finds its study's budget spent
    exits without importing TensorFlow (its data, loaded once per process, is reused by the
    build). Any other objective is light: it is built now and handed back.

    Raises:
        DatasetError: as the objective's factory.
    """
    settings: dict[str, Any] = dict(space=space, data=data, training=training, metric=metric,
                                    seed=seed, goals=goals)
    if name not in DATA_CHECKS:
        built = load_objective(name)(hooks=hooks, **settings)
        return lambda: built
    _resolve(DATA_CHECKS[name])(space=space, data=data, seed=seed)
    return lambda: load_objective(name)(hooks=hooks, **settings)
