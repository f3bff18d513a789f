"""What a study asks of its trials beyond the validation metric: several objectives (accuracy
against size or speed) or constraints on size or speed.

The measures (``n_params``, ``latency_ms``) are known before a trial trains: its model is
built, counted and timed first (``objectives.latency``), so that a trial over a constraint is never
trained and a cost-aware pruner can compare it with trials that cost no more. Nothing here
imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from objectives.config import MEASURES, METRICS, Direction, Metric, direction
from objectives.pruning import CostAwareRule

# The user attribute that holds a trial's validation metric per epoch while it runs, in
# multi-objective studies, where Optuna refuses intermediate values (optuna#3450).


@dataclass(frozen=True)
class Goals:
    """A study's objectives in order (the validation metric and any measures), its
    constraints (measure name -> the most it may be) and, with several objectives, the rule
    that prunes by cost (``objectives.pruning``; None: no pruning)."""

    objectives: tuple[str, ...] = ("val_accuracy",)
    constraints: Mapping[str, float] = field(default_factory=dict)
    pruning: CostAwareRule | None = None

    def __post_init__(self) -> None:
        metrics = [name for name in self.objectives if name in METRICS]
        if len(metrics) != 1:
            raise ValueError(f"exactly one validation metric among {self.objectives}")
        unknown = set(self.objectives) | set(self.constraints)
        unknown -= set(METRICS) | set(MEASURES)
        if unknown:
            raise ValueError(f"unknown objectives or constraints: {sorted(unknown)}")

    @property
    def metric(self) -> Metric:
        """The validation metric: what early stopping and pruning watch."""
        return next(name for name in self.objectives if name in METRICS)  # type: ignore[return-value]

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[Direction]:
        return [direction(name) for name in self.objectives]

    @property
    def measures(self) -> tuple[str, ...]:
        """The measures a trial must take before it trains (none for a plain study)."""
        wanted = {*self.objectives, *self.constraints} & set(MEASURES)
        return tuple(name for name in MEASURES if name in wanted)

    @property
    def cost_objectives(self) -> tuple[str, ...]:
        """The measures among the objectives: what a cost-aware pruner compares trials by."""
        return tuple(name for name in self.objectives if name in MEASURES)

    def violations(self, measured: Mapping[str, float]) -> dict[str, float]:
        """Each constraint's excess as Optuna's constraints take it (feasible when <= 0): the
        measure less its budget, relative to the budget."""
        return {name: (float(measured[name]) - limit) / limit
                for name, limit in self.constraints.items()}

    def values(self, metric_value: float, measured: Mapping[str, float]) -> list[float]:
        """The trial's objective values in the study's order."""
        return [metric_value if name in METRICS else float(measured[name])
                for name in self.objectives]
