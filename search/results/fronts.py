"""A study's best, as the commands show it: the best feasible trial of a single-objective study,
the Pareto front of a multi-objective one, and each trial's values by their names."""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.config import METRICS
from objectives.record import maximizes
from search.studies import STUDY_ATTR


def multi_objective(study: optuna.Study) -> bool:
    """Whether ``study`` has several objectives."""
    return len(study.directions) > 1


def names(study: optuna.Study) -> list[str]:
    """The objectives' names: the metric names Optuna holds, else the study file's metric."""
    if study.metric_names is not None:
        return list(study.metric_names)
    stored = study.user_attrs.get(STUDY_ATTR, {})
    fingerprint = stored.get("fingerprint", {}) if isinstance(stored, dict) else {}
    if multi_objective(study):
        return list(fingerprint.get("objectives") or
                    [f"objective {i}" for i in range(len(study.directions))])
    return [str(fingerprint.get("metric", "value"))]


def metric_index(study: optuna.Study) -> int:
    """Where the validation metric stands among the objectives (0 for a plain study)."""
    found = [i for i, name in enumerate(names(study)) if name in METRICS]
    return found[0] if found else 0


def metric_value(study: optuna.Study, trial: FrozenTrial) -> float | None:
    """The trial's validation metric value; None for a trial without values."""
    if trial.values is None:
        return None
    return float(trial.values[metric_index(study)])


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best feasible trial (a one-trial list), or the Pareto front of feasible trials,
    best validation metric first; empty while no complete feasible trial exists."""
    if multi_objective(study):
        front = study.best_trials
        index = metric_index(study)
        maximize = maximizes(study, index)
        return sorted(front, key=lambda t: t.values[index], reverse=maximize)
    try:
        return [study.best_trial]
    except ValueError:  # no complete (feasible) trial yet
        return []


def _number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if float(value).is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1000 else f"{value:.4f}"


def values_text(study: optuna.Study, trial: FrozenTrial) -> str:
    """``val_accuracy 0.5123, n_params 1,234,567``: the trial's values by name."""
    if trial.values is None:
        return "no value"
    return ", ".join(f"{name} {_number(value)}"
                     for name, value in zip(names(study), trial.values))


def complete_values(study: optuna.Study) -> list[tuple[FrozenTrial, list[float]]]:
    """The complete trials with their finite values."""
    return [(t, list(t.values)) for t in study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None and all(math.isfinite(v) for v in t.values)]


def summary(study: optuna.Study) -> dict[str, str]:
    """The study's goals for a header line: directions by name, constraints."""
    return {name: direction.name.lower() for name, direction in zip(names(study),
                                                                    study.directions)}
