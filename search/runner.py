"""Create or resume a study and run its trials until the budget is spent.

``n_trials`` is the study's total: a resumed study runs only what is missing, counting complete
and pruned trials (failed ones are run again). ``timeout`` bounds one invocation.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from objectives.data import DatasetError
from objectives.config import MAX_EPOCHS_ATTR
from search.errors import UserError
from search.registry import load_objective
from search.samplers import make_pruner, make_sampler
from search.storage import open_storage, redact
from search.studyfile import StudyFile

logger = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_CONSECUTIVE_FAILURES = 5
STUDY_ATTR = "hpsearch"  # study user attribute: the fingerprint and the study file it came from


@dataclass(frozen=True)
class RunSummary:
    study: optuna.Study
    ran: int
    stopped_by_failures: bool = False


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def fingerprint_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The keys on which two study fingerprints differ, as ``key: stored X, file Y``."""
    old, new = _flatten(stored), _flatten(wanted)
    return [
        f"{key}: stored {old.get(key, '(absent)')!r}, file {new.get(key, '(absent)')!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def open_study(
    spec: StudyFile, storage: optuna.storages.BaseStorage, *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create the study, or load it if it exists and was made from the same search space.

    Raises:
        UserError: a study of that name exists with another space, metric or objective (resuming
            must not silently mix two spaces), or was not created by hpsearch.
    """
    kwargs: dict[str, Any] = dict(
        study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner
    )
    existing = find_study(spec, storage, sampler=sampler, pruner=pruner)
    if existing is not None:
        return existing
    try:
        study = optuna.create_study(direction=spec.study.resolved_direction, **kwargs)
    except optuna.exceptions.DuplicatedStudyError:  # another worker created it meanwhile
        study = optuna.load_study(**kwargs)
        _check_same_study(spec, study)
        return study
    study.set_user_attr(
        STUDY_ATTR, {"fingerprint": spec.fingerprint(), "study_file": spec.model_dump(mode="json")}
    )
    for fixed in spec.fixed_trials:  # only by the process that created the study
        attrs: dict[str, Any] = {"label": fixed.label}
        if fixed.max_epochs is not None:
            attrs[MAX_EPOCHS_ATTR] = fixed.max_epochs
        study.enqueue_trial(fixed.params(), user_attrs=attrs)
    return study


def find_study(
    spec: StudyFile, storage: optuna.storages.BaseStorage, *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study | None:
    """The stored study of ``spec``'s name, checked against ``spec``; None if there is none."""
    try:
        study = optuna.load_study(
            study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner
        )
    except KeyError:
        return None
    _check_same_study(spec, study)
    return study


def _check_same_study(spec: StudyFile, study: optuna.Study) -> None:
    stored = study.user_attrs.get(STUDY_ATTR)
    if not isinstance(stored, dict) or "fingerprint" not in stored:
        raise UserError(
            f"study {spec.name!r} exists in this storage but was not created by hpsearch; "
            "choose another [study] name"
        )
    differences = fingerprint_differences(stored["fingerprint"], spec.fingerprint())
    if differences:
        shown = "; ".join(differences[:5]) + ("; ..." if len(differences) > 5 else "")
        raise UserError(
            f"study {spec.name!r} exists with a different search space ({shown}): resuming "
            "would mix two spaces; give the study another name"
        )


def _ended(study: optuna.Study) -> int:
    """Trials in a final state; waiting (enqueued) and running ones are not counted."""
    counts = count_states(study.get_trials(deepcopy=False))
    return counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] + counts[TrialState.FAIL]


def count_states(trials: list[FrozenTrial]) -> dict[TrialState, int]:
    counts = {state: 0 for state in TrialState}
    for trial in trials:
        counts[trial.state] += 1
    return counts


def describe_trial(trial: FrozenTrial, metric: str) -> str:
    """One line for one finished trial."""
    attrs = trial.user_attrs
    if trial.state == TrialState.COMPLETE:
        value = trial.value if trial.value is not None else math.nan
        epochs = f"best epoch {attrs.get('best_epoch')}/{attrs.get('epochs_run')}"
        speed = attrs.get("seconds_per_epoch")
        speed_text = f", {speed:.2f} s/epoch" if isinstance(speed, (int, float)) else ""
        return (
            f"trial {trial.number} complete: {metric} {value:.4f} ({epochs}, "
            f"{attrs.get('stop_reason', 'completed')}{speed_text})"
        )
    if trial.state == TrialState.PRUNED:
        last = trial.last_step
        value = trial.intermediate_values.get(last) if last is not None else None
        shown = f" ({metric} {value:.4f})" if value is not None else ""
        epoch = last + 1 if last is not None else "?"
        return f"trial {trial.number} pruned at epoch {epoch}{shown}"
    reason = attrs.get("fail_reason", "interrupted or returned no value")
    return f"trial {trial.number} failed: {reason}"


class TrialReporter:
    """After each trial: one log line, the progress display, and the stop on repeated failures."""

    def __init__(self, metric: str, on_progress: Callable[[optuna.Study], None] | None) -> None:
        self.metric = metric
        self.on_progress = on_progress
        self.consecutive_failures = 0
        self.stopped_by_failures = False

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        logger.info(describe_trial(trial, self.metric))
        self.consecutive_failures = self.consecutive_failures + 1 if trial.state == TrialState.FAIL else 0
        if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            self.stopped_by_failures = True
            study.stop()
        if self.on_progress is not None:
            self.on_progress(study)


def _with_worker(objective: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def run(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker)
        return objective(trial)

    return run


def run_study(
    spec: StudyFile,
    storage_url: str,
    *,
    on_start: Callable[[optuna.Study, int | None], None] | None = None,
    on_progress: Callable[[optuna.Study], None] | None = None,
) -> RunSummary:
    """Create or resume ``spec``'s study on ``storage_url`` and run it until its budget is spent.

    Everything that can be checked is checked before the storage is written to: the sampler and
    pruner are built, the storage is reached, and the stored space (if any) compared.
    """
    sampler, pruner = make_sampler(spec), make_pruner(spec)
    storage = open_storage(storage_url, create=True)
    existing = find_study(spec, storage, sampler=sampler, pruner=pruner)
    target = spec.study.n_trials
    finished = 0
    if existing is not None:
        finished = sum(count_states(existing.get_trials(deepcopy=False))[s] for s in FINISHED)
        if target is not None and finished >= target:
            logger.info("study %r already has %d finished trials; nothing to run", spec.name,
                        finished)
            return RunSummary(study=existing, ran=0)
    try:
        objective = load_objective(spec.study.objective)(
            space=spec.space, data=spec.data, training=spec.training, metric=spec.study.metric,
            seed=spec.study.seed,
        )
    except DatasetError as exc:
        raise UserError(str(exc)) from None
    # Created only now, so that a dataset that cannot be loaded leaves nothing in the storage.
    study = existing or open_study(spec, storage, sampler=sampler, pruner=pruner)
    logger.info(
        "study %r on %s: %s trials finished, %s", spec.name, redact(storage_url), finished,
        f"running up to {target}" if target else f"running for {spec.study.timeout:g} s",
    )
    reporter = TrialReporter(spec.study.metric, on_progress)
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [reporter]
    if target is not None:
        callbacks.insert(0, MaxTrialsCallback(target, states=FINISHED))
    before = _ended(study)
    if on_start is not None:
        on_start(study, target)
    study.optimize(
        _with_worker(objective), timeout=spec.study.timeout, callbacks=callbacks,
        gc_after_trial=False,
    )
    ran = _ended(study) - before
    if reporter.stopped_by_failures:
        last = study.get_trials(deepcopy=False)[-1]
        raise UserError(
            f"stopped after {MAX_CONSECUTIVE_FAILURES} failed trials in a row; the last one: "
            f"{last.user_attrs.get('fail_reason', 'no reason recorded')}"
        )
    return RunSummary(study=study, ran=ran)
