"""What a study's trials add up to while it runs: counts by state, one line per finished trial,
and the stop after repeated failures."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.record import Key, StopReason

logger = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_CONSECUTIVE_FAILURES = 5


def ended(study: optuna.Study) -> int:
    """Trials in a final state; waiting (enqueued) and running ones are not counted."""
    counts = count_states(study.get_trials(deepcopy=False))
    return counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] + counts[TrialState.FAIL]


def count_states(trials: list[FrozenTrial]) -> dict[TrialState, int]:
    counts = {state: 0 for state in TrialState}
    for trial in trials:
        counts[trial.state] += 1
    return counts


def describe_trial(trial: FrozenTrial, metric: str,
                   names: list[str] | None = None) -> str:
    """One line for one finished trial; ``names``: the objectives of a multi-objective study."""
    attrs = trial.user_attrs
    if trial.state == TrialState.COMPLETE:
        if names and trial.values is not None and len(trial.values) > 1:
            shown = ", ".join(f"{name} {value:.4f}" if abs(value) < 1000 else
                              f"{name} {value:,.0f}" for name, value in zip(names, trial.values))
        else:
            value = trial.values[0] if trial.values else math.nan
            shown = f"{metric} {value:.4f}"
        epochs = (f"best epoch {attrs.get(Key.BEST_EPOCH)}/{attrs.get(Key.EPOCHS_RUN)}, "
                  if Key.BEST_EPOCH in attrs else "")
        speed = attrs.get(Key.SECONDS_PER_EPOCH)
        speed_text = f", {speed:.2f} s/epoch" if isinstance(speed, (int, float)) else ""
        simulated = attrs.get(Key.SIMULATED_SECONDS)  # a table's trial (objectives.tabular)
        if isinstance(simulated, (int, float)):
            speed_text += f", {simulated:g} s of training in the table"
        return (
            f"trial {trial.number} complete: {shown} ({epochs}"
            f"{attrs.get(Key.STOP_REASON, StopReason.COMPLETED)}{speed_text})"
        )
    if attrs.get(Key.STOP_REASON) == StopReason.INFEASIBLE:
        return (f"trial {trial.number} not trained: over the study's constraints "
                f"({attrs.get(Key.INFEASIBLE, '?')})")
    if trial.state == TrialState.PRUNED:
        last = trial.last_step
        reported = trial.intermediate_values.get(last) if last is not None else None
        epoch_values = attrs.get(Key.EPOCH_VALUES)  # several objectives: no intermediate values
        if last is None and isinstance(epoch_values, list) and epoch_values:
            last, reported = len(epoch_values) - 1, epoch_values[-1]
        shown = f" ({metric} {reported:.4f})" if reported is not None else ""
        when = (f"at epoch {last + 1}{shown}" if last is not None
                else "before its first epoch ended")
        why = (": over its share of the time budget, behind the study's best"
               if attrs.get(Key.STOP_REASON) == StopReason.TIME_SHARE else "")
        return f"trial {trial.number} pruned {when}{why}"
    reason = attrs.get(Key.FAIL_REASON, "interrupted or returned no value")
    return f"trial {trial.number} failed: {reason}"


class TrialReporter:
    """After each trial: one log line, the progress display, and the stop on repeated failures."""

    def __init__(self, metric: str, on_progress: Callable[[optuna.Study], None] | None,
                 names: list[str] | None = None) -> None:
        self.metric = metric
        self.names = names
        self.on_progress = on_progress
        self.consecutive_failures = 0
        self.stopped_by_failures = False
        self.ran = 0  # trials this process ran; other workers' trials end without calling us
        self.last: int | None = None  # the number of the last of them

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        logger.info(describe_trial(trial, self.metric, self.names))
        self.ran += 1
        self.last = trial.number
        failed = trial.state == TrialState.FAIL
        self.consecutive_failures = self.consecutive_failures + 1 if failed else 0
        if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            self.stopped_by_failures = True
            study.stop()
        if self.on_progress is not None:
            self.on_progress(study)


