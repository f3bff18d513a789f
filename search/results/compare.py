"""The questions hand-built experiments ask, answered from a study's trials.

For each categorical parameter of the space (optimizer, activation, batch_norm, schedule, ...)
and for depth and width bands, the complete trials are grouped by their value: the number of
trials, the best and median validation metric, how fast they converged (epochs to reach 95 %
of the trial's own best) and how far they overfit (the generalization gap: training minus
validation accuracy at the best epoch). One plain statement per comparison says what the
numbers carry: a difference between two groups only where a Mann-Whitney test finds it
with at least :data:`MIN_TRIALS` trials in each, else that it is not clear, or that there are
not enough trials. Also: the gap against dropout and L2 (Spearman), and the epochs early
stopping and pruning saved. Nothing here draws; ``search.results.compare_view`` shows it.

A study asks a dozen such questions at once, and at p < 0.05 one in twenty finds a difference
that is not there: every test's p-value is adjusted for all the tests of the study
(Benjamini-Hochberg, ``scipy.stats.false_discovery_control``), and a statement claims a
difference only where the adjusted p-value is below 0.05. Both p-values are quoted.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from objectives.record import Key, StopReason, maximizes
from search.results import fronts
from search.studies import STUDY_ATTR

MIN_TRIALS = 5  # complete trials a group needs before the comparison says anything of it
SIGNIFICANCE = 0.05
WIDTH_BANDS = (128, 512, 1024)  # first-layer units: up to 128, 129-512, 513-1024, more


@dataclass(frozen=True)
class Group:
    label: str
    trials: list[FrozenTrial]
    values: list[float]  # the validation metric of each trial, in the order of ``trials``
    to_95: list[int]  # epochs each trial took to reach 95 % of its own best
    gaps: list[float]  # training minus validation accuracy at each trial's best epoch

    @property
    def n(self) -> int:
        return len(self.trials)

    @property
    def enough(self) -> bool:
        return self.n >= MIN_TRIALS

    def best(self, maximize: bool) -> float:
        return max(self.values) if maximize else min(self.values)

    @property
    def median(self) -> float:
        return float(statistics.median(self.values))

    @property
    def median_to_95(self) -> float | None:
        return float(statistics.median(self.to_95)) if self.to_95 else None

    @property
    def median_gap(self) -> float | None:
        return float(statistics.median(self.gaps)) if self.gaps else None

    def best_trial(self, maximize: bool) -> FrozenTrial:
        pick = max if maximize else min
        return self.trials[pick(range(self.n), key=lambda i: self.values[i])]


@dataclass(frozen=True)
class Comparison:
    parameter: str  # the parameter, or "depth" / "width"
    groups: list[Group]
    statement: str
    p_value: float | None = None  # of the leading group against the runner-up
    adjusted_p: float | None = None  # the same, adjusted for all the study's tests


@dataclass(frozen=True)
class Regularization:
    parameter: str  # dropout or l2
    points: list[tuple[float, float]]  # (parameter value, gap)
    rho: float | None
    p_value: float | None
    statement: str
    adjusted_p: float | None = None  # adjusted for all the study's tests


@dataclass(frozen=True)
class Savings:
    trained: int
    early_stopping: int  # epochs the budget allowed that early-stopped trials did not train
    pruning: int  # the same, for pruned trials
    early_stopped: int
    pruned: int


@dataclass
class Answers:
    metric: str
    maximize: bool
    complete: int
    comparisons: list[Comparison] = field(default_factory=list)
    regularization: list[Regularization] = field(default_factory=list)
    savings: Savings | None = None

    def _repr_html_(self) -> str:
        from search.results.compare_view import answers_html

        return answers_html(self)

    def __repr__(self) -> str:
        compared = ", ".join(c.parameter for c in self.comparisons) or "nothing yet"
        return (f"Answers({self.complete} complete trials by {self.metric}; compared: "
                f"{compared})")


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def epochs_to_95(curve: list[float], maximize: bool) -> int | None:
    """The first epoch (1-based) at which ``curve`` reached 95 % of its own best (within 5 %
    of it, for a loss); None for a curve without a finite value."""
    finite = [v for v in curve if v is not None and math.isfinite(v)]
    if not finite:
        return None
    best = max(finite) if maximize else min(finite)
    for epoch, value in enumerate(curve, start=1):
        if value is None or not math.isfinite(value):
            continue
        if (value >= 0.95 * best) if maximize else (value <= 1.05 * best):
            return epoch
    return None


def _gap(trial: FrozenTrial) -> float | None:
    train, val = trial.user_attrs.get("train_accuracy"), trial.user_attrs.get("val_accuracy")
    if isinstance(train, (int, float)) and isinstance(val, (int, float)):
        return float(train) - float(val)
    return None


def _group(label: str, trials: list[FrozenTrial], value: Callable[[FrozenTrial], float],
           metric: str, maximize: bool) -> Group:
    to_95, gaps = [], []
    for trial in trials:
        curve = trial.user_attrs.get("history", {}).get(metric, [])
        reached = epochs_to_95(list(curve), maximize)
        if reached is not None:
            to_95.append(reached)
        gap = _gap(trial)
        if gap is not None:
            gaps.append(gap)
    return Group(label, trials, [value(t) for t in trials], to_95, gaps)


def _label(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _width_band(units: int) -> str:
    low = 1
    for high in WIDTH_BANDS:
        if units <= high:
            return f"{low}-{high} units"
        low = high + 1
    return f"over {WIDTH_BANDS[-1]} units"


@dataclass(frozen=True)
class _Test:
    """A test run for one comparison: what it compared and its p-value before adjustment."""
    p: float
    lead: Group | None = None  # a comparison of groups: the leading group and the runner-up
    runner: Group | None = None
    rho: float | None = None  # a correlation
    n: int = 0


def _test(parameter: str, groups: list[Group], maximize: bool) -> _Test | str:
    """The Mann-Whitney test of the two best groups with enough trials; or, where there is
    nothing to test, the statement that says why."""
    enough = [g for g in groups if g.enough]
    if len(groups) < 2:
        only = groups[0] if groups else None
        return (f"{parameter}: all {only.n if only else 0} trials took "
                f"{only.label if only else 'none'}; nothing to compare")
    if len(enough) < 2:
        counts = ", ".join(f"{g.label} {g.n}" for g in groups)
        return (f"{parameter}: not enough trials to compare (each value needs {MIN_TRIALS} "
                f"complete trials; {counts})")
    from scipy.stats import mannwhitneyu

    lead, runner = sorted(enough, key=lambda g: g.median, reverse=maximize)[:2]
    p = float(mannwhitneyu(lead.values, runner.values, alternative="two-sided").pvalue)
    return _Test(p, lead=lead, runner=runner)


def _p_text(p: float, adjusted: float, tests: int) -> str:
    """``p = 0.030, 0.15 adjusted for the study's 10 tests``."""
    def shown(value: float) -> str:
        return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"

    if tests == 1:
        return f"p = {shown(p)}"
    return f"p = {shown(p)}, {shown(adjusted)} adjusted for the study's {tests} tests"


def _said(parameter: str, test: _Test, adjusted: float, tests: int) -> str:
    """The statement of a comparison of groups, by its adjusted p-value."""
    lead, runner = test.lead, test.runner
    assert lead is not None and runner is not None
    numbers = (f"{lead.label} median {_fmt(lead.median)} over {lead.n} trials, "
               f"{runner.label} median {_fmt(runner.median)} over {runner.n}")
    if adjusted < SIGNIFICANCE:
        return (f"{parameter}: {lead.label} did better than {runner.label}, the next best "
                f"({numbers}; Mann-Whitney {_p_text(test.p, adjusted, tests)})")
    return (f"{parameter}: no clear difference between {lead.label} and {runner.label} "
            f"({numbers}; Mann-Whitney {_p_text(test.p, adjusted, tests)})")


def _gap_said(name: str, test: _Test, adjusted: float, tests: int) -> str:
    """The statement of the gap against ``name``, by its adjusted p-value."""
    rho = test.rho
    assert rho is not None
    if adjusted < SIGNIFICANCE:
        way = "less" if rho < 0 else "more"
        return (f"gap against {name}: trials with more {name} overfit {way} (Spearman rho "
                f"{rho:+.2f}, {_p_text(test.p, adjusted, tests)}, {test.n} trials)")
    return (f"gap against {name}: no clear relation (Spearman rho {rho:+.2f}, "
            f"{_p_text(test.p, adjusted, tests)}, {test.n} trials)")


def _adjusted(tests: list[_Test]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values of ``tests``, in their order."""
    if not tests:
        return []
    from scipy.stats import false_discovery_control

    return [float(p) for p in false_discovery_control([t.p for t in tests], method="bh")]


def answers(study: optuna.Study) -> Answers:
    """Every comparison the study's complete trials allow."""
    names = fronts.names(study)
    index = fronts.metric_index(study)
    metric = names[index] if names[index] in ("val_accuracy", "val_loss") else "val_accuracy"
    maximize = maximizes(study, index)
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.values is not None and math.isfinite(t.values[index])]
    found = Answers(metric=metric, maximize=maximize, complete=len(complete))

    def value(trial: FrozenTrial) -> float:
        return float(trial.values[index])

    categorical: list[str] = []
    for trial in complete:
        for name, distribution in trial.distributions.items():
            if isinstance(distribution, CategoricalDistribution) and name not in categorical \
                    and len(distribution.choices) > 1:  # a value the space fixed: no question
                categorical.append(name)
    groupings: list[tuple[str, Callable[[FrozenTrial], str | None]]] = [
        (name, _by_value(name)) for name in categorical]
    groupings.append(("depth", lambda t: f"{t.params['n_layers']} layer"
                      + ("s" if t.params["n_layers"] != 1 else "")
                      if "n_layers" in t.params else None))
    groupings.append(("width", lambda t: _width_band(int(t.params["units_l0"]))
                      if "units_l0" in t.params else None))
    compared: list[tuple[str, list[Group], _Test | str]] = []
    for parameter, key in groupings:
        by: dict[str, list[FrozenTrial]] = {}
        for trial in complete:
            label = key(trial)
            if label is not None:
                by.setdefault(label, []).append(trial)
        if not by:
            continue
        groups = [_group(label, trials, value, metric, maximize)
                  for label, trials in sorted(by.items(), key=lambda item: _order(item[0]))]
        compared.append((parameter, groups, _test(parameter, groups, maximize)))
    gaps = [(name, _points(complete, name)) for name in ("dropout", "l2")
            if any(name in t.params for t in complete)]
    correlated = [(name, points, _correlation(name, points)) for name, points in gaps]
    # every test of the study, adjusted together
    tests = [t for _, _, t in compared + correlated if isinstance(t, _Test)]
    adjusted = dict(zip(map(id, tests), _adjusted(tests)))
    for parameter, groups, test in compared:
        if isinstance(test, str):
            found.comparisons.append(Comparison(parameter, groups, test))
        else:
            found.comparisons.append(Comparison(
                parameter, groups, _said(parameter, test, adjusted[id(test)], len(tests)),
                test.p, adjusted[id(test)]))
    for name, points, test in correlated:
        if isinstance(test, str):
            found.regularization.append(Regularization(name, points, None, None, test))
            continue
        q = adjusted[id(test)]
        found.regularization.append(Regularization(
            name, points, test.rho, test.p, _gap_said(name, test, q, len(tests)), q))
    found.savings = savings(study)
    return found


def _by_value(name: str) -> Callable[[FrozenTrial], str | None]:
    def key(trial: FrozenTrial) -> str | None:
        return _label(trial.params[name]) if name in trial.params else None

    return key


def _order(label: str) -> tuple[float, str]:
    """Numbers in order of size (depth, width bands, batch sizes), other labels by name."""
    head = label.split()[0].split("-")[0]
    if head == "over":
        return (math.inf, label)
    try:
        return (float(head), label)
    except ValueError:
        return (-math.inf, label)


def _points(complete: list[FrozenTrial], name: str) -> list[tuple[float, float]]:
    """(the parameter's value, the generalization gap) of each trial that has both."""
    return [(float(t.params[name]), gap) for t in complete
            if name in t.params and (gap := _gap(t)) is not None]


def _correlation(name: str, points: list[tuple[float, float]]) -> _Test | str:
    """Spearman's test of the gap against the parameter; or the statement that says why
    there is none."""
    if len(points) < MIN_TRIALS:
        return (f"gap against {name}: not enough trials ({len(points)}; {MIN_TRIALS} make "
                f"enough)")
    if len({x for x, _ in points}) < 2 or len({g for _, g in points}) < 2:
        return f"gap against {name}: {name} or the gap did not vary"
    from scipy.stats import spearmanr

    result = spearmanr([x for x, _ in points], [g for _, g in points])
    return _Test(float(result.pvalue), rho=float(result.statistic), n=len(points))


def savings(study: optuna.Study) -> Savings:
    """Epochs trained, and the epochs early stopping and pruning left untrained out of each
    trial's budget (``max_epochs``, or its own)."""
    stored = study.user_attrs.get(STUDY_ATTR, {})
    resolved = stored.get("study_file", {}) if isinstance(stored, dict) else {}
    default = int(resolved.get("training", {}).get("max_epochs", 0) or 0)
    trained = early = pruned_saved = early_n = pruned_n = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                         TrialState.PRUNED, TrialState.FAIL)):
        # an interrupted trial recorded its epochs as intermediate values only
        run = int(trial.user_attrs.get(Key.EPOCHS_RUN) or len(trial.intermediate_values))
        budget = int(trial.user_attrs.get(Key.MAX_EPOCHS) or default)
        # a failed trial trained too; a resumed one counts only the epochs it trained itself
        trained += max(0, run - int(trial.user_attrs.get(Key.RESUMED_AT) or 0))
        if trial.state == TrialState.FAIL:
            continue
        if trial.user_attrs.get(Key.STOP_REASON) == StopReason.INFEASIBLE:
            continue
        if trial.state == TrialState.PRUNED:
            pruned_n += 1
            pruned_saved += max(0, budget - run)
        elif trial.user_attrs.get(Key.STOP_REASON) == StopReason.EARLY_STOPPED:
            early_n += 1
            early += max(0, budget - run)
    return Savings(trained, early, pruned_saved, early_n, pruned_n)
