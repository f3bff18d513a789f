"""Create or resume a study and run its trials until the budget is spent.

``n_trials`` is the study's total: a resumed study runs only what is missing, counting complete
and pruned trials (failed ones are run again). ``timeout`` bounds one invocation.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from objectives import interrupts
from objectives.data import DatasetError
from search.errors import UserError
from search.artifacts import hooks_for, record_location
from search.registry import load_objective
from search.samplers import make_pruner, make_sampler
from search.slots import BudgetLock
from search.heartbeats import UnbeatenTrials
from search.storage import (cause, check_storage, engine_kwargs, open_storage, redact,
                            retrying)
from search.studies import find_study, open_study
from search.studyfile import StudyFile

logger = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ObjectiveFn = Callable[[optuna.Trial], float]
MAX_CONSECUTIVE_FAILURES = 5


@dataclass(frozen=True)
class RunSummary:
    study: optuna.Study
    ran: int


def ended(study: optuna.Study) -> int:
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
        reported = trial.intermediate_values.get(last) if last is not None else None
        shown = f" ({metric} {reported:.4f})" if reported is not None else ""
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
        self.ran = 0  # trials this process ran; other workers' trials end without calling us

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        logger.info(describe_trial(trial, self.metric))
        self.ran += 1
        failed = trial.state == TrialState.FAIL
        self.consecutive_failures = self.consecutive_failures + 1 if failed else 0
        if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            self.stopped_by_failures = True
            study.stop()
        if self.on_progress is not None:
            self.on_progress(study)


def _with_worker(objective: ObjectiveFn, on_created: Callable[[], None]) -> ObjectiveFn:
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def run(trial: optuna.Trial) -> float:
        on_created()  # the trial exists now: other workers may count it
        trial.set_user_attr("worker", worker)
        return objective(trial)

    return run


STORAGE_ERRORS = (SQLAlchemyError, optuna.exceptions.StorageInternalError)
POLL_S = 1.0


class WorkerLoop:
    """Runs trials of one study until its budget is spent across all workers.

    Before each trial the worker takes the study's budget lock, fails stale trials (whose
    worker stopped beating), and counts: with N finished trials it stops; when finished plus
    running trials already reach N it waits, since a running trial may still fail and free its
    slot. An unreachable storage is retried with backoff for ``storage_wait`` seconds.
    """

    def __init__(self, spec: StudyFile, storage_url: str, study: optuna.Study,
                 objective: ObjectiveFn, reporter: TrialReporter) -> None:
        self.spec = spec
        self.study = study
        self.objective = objective
        self.reporter = reporter
        self.lock = BudgetLock(storage_url, spec.name, engine_kwargs(storage_url))
        self.unbeaten = UnbeatenTrials(storage_url)
        self._unbeaten_since: dict[int, float] = {}  # trial id -> when first seen unbeaten

    def run(self) -> None:
        target, timeout = self.spec.study.n_trials, self.spec.study.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self.reporter.stopped_by_failures:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                try:
                    if not retrying(lambda: self._one_trial(target),
                                    self.spec.workers.storage_wait, _unreachable(self.spec),
                                    transient=_storage_failure):
                        return
                except optuna.exceptions.UpdateFinishedTrialError as exc:
                    # Another worker took this trial for dead (no heartbeat for the grace
                    # period, e.g. during a database outage) and has queued it again.
                    logger.warning("trial result not stored: %s", exc)
        finally:
            self.lock.dispose()
            self.unbeaten.dispose()

    def _fail_trials_that_never_beat(self) -> None:
        """Fail running trials that have recorded no heartbeat for a grace period: their worker
        lost the database (or died) between creating the trial and its first beat, and Optuna's
        own staleness check only sees trials that did beat once.

        The grace period is timed by this worker's own clock from when it first saw the trial
        unbeaten, not from the trial's stored start: Optuna stores that in the local time of the
        machine that created the trial, which says nothing here when workers' clocks or time
        zones differ.
        """
        unbeaten = self.unbeaten.trial_ids(self.study._study_id)
        now = time.monotonic()
        self._unbeaten_since = {trial_id: self._unbeaten_since.get(trial_id, now)
                                for trial_id in unbeaten}
        storage = self.study._storage
        for trial_id, since in self._unbeaten_since.items():
            if now - since < self.spec.workers.grace_period:
                continue
            try:  # the reason first: a finished trial takes no attributes
                storage.set_trial_user_attr(
                    trial_id, "fail_reason",
                    "its worker lost the storage before the first heartbeat")
                storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker got there first

    def _counts(self) -> dict[TrialState, int]:
        """Trials by state, as the study (Optuna's cached storage) holds them."""
        return count_states(self.study.get_trials(deepcopy=False))

    def _one_trial(self, target: int | None) -> bool:
        """Run one trial if the budget allows; False when this worker is done."""
        interrupts.check()  # a stop requested while the last trial ended starts no new one
        self.lock.acquire()
        try:
            if target is not None:
                counts = self._counts()
                if sum(counts[s] for s in FINISHED) + counts[TrialState.RUNNING] >= target:
                    # The budget looks spent; trials of dead workers may hold slots.
                    with warnings.catch_warnings():  # "experimental" since Optuna 2.9
                        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                        optuna.storages.fail_stale_trials(self.study)
                    self._fail_trials_that_never_beat()
                    counts = self._counts()
                finished = sum(counts[state] for state in FINISHED)
                if finished >= target:
                    return False
                if finished + counts[TrialState.RUNNING] >= target:
                    self.lock.release()
                    time.sleep(POLL_S)  # a running trial may still fail and free its slot
                    return True
            # The budget is safe once the new trial is RUNNING in the storage: the lock goes
            # when the objective starts, before its first suggestion (Optuna samples a trial's
            # relative parameters then, not when it creates the trial).
            self.study.optimize(
                _with_worker(self.objective, self.lock.release), n_trials=1,
                callbacks=[self.reporter], gc_after_trial=False,
            )
            return True
        finally:
            self.lock.release()


def _storage_failure(error: BaseException) -> BaseException | None:
    """The storage error behind ``error``, if any.

    When the database fails while Optuna records a trial's end, Optuna's own bookkeeping can
    raise a different error (an AssertionError in Optuna 5.0) on top of the storage error; the
    chain of causes still holds the real one.
    """
    return cause(error, lambda seen: isinstance(seen, STORAGE_ERRORS))


def prepare(spec: StudyFile, storage_url: str, *, seed_offset: int = 0) -> tuple[
    optuna.storages.RDBStorage, optuna.Study | None, int
]:
    """Check everything that can be checked before trials run: sampler, pruner, storage,
    stored space. Returns the storage, the existing study (if any) and its finished trials."""
    sampler, pruner = make_sampler(spec, seed_offset=seed_offset), make_pruner(spec)
    workers = spec.workers
    # A database that drops connections while a worker starts (a restart) is waited for, as
    # during the search; one that cannot be reached at all is reported at once.
    storage = open_storage(
        storage_url, create=True,
        heartbeat=(workers.heartbeat_interval, workers.grace_period, workers.max_retry),
        wait=workers.storage_wait,
    )

    def stored() -> tuple[optuna.Study | None, int]:
        existing = find_study(spec, storage, sampler=sampler, pruner=pruner)
        if existing is None:
            return None, 0
        return existing, sum(count_states(existing.get_trials(deepcopy=False))[s]
                             for s in FINISHED)

    existing, finished = retrying(stored, workers.storage_wait, _unreachable(spec))
    return storage, existing, finished


def _unreachable(spec: StudyFile) -> str:
    return f"the storage stayed unreachable for {spec.workers.storage_wait:g} s"


def start(
    spec: StudyFile, storage_url: str, *, seed_offset: int = 0, artifacts: str | None = None,
    announce: bool = True,
) -> tuple[optuna.Study, ObjectiveFn | None]:
    """Create or resume the study, with its objective ready; no objective when nothing is left.

    Everything that can be checked is checked before anything is written (no storage file, no
    table, no artifact folder): the sampler and pruner are built, the storage is reached, the
    data loaded (which also fills this machine's data cache for every worker), and the stored
    space (if any) compared.
    """
    make_sampler(spec, seed_offset=seed_offset), make_pruner(spec)
    check_storage(storage_url)
    hooks = hooks_for(spec, storage_url, artifacts)  # its store is made by open(), below
    try:
        objective = load_objective(spec.study.objective)(
            space=spec.space, data=spec.data, training=spec.training, metric=spec.study.metric,
            seed=spec.study.seed, hooks=hooks,
        )
    except DatasetError as exc:
        raise UserError(str(exc)) from None
    hooks.open()
    storage, existing, finished = prepare(spec, storage_url, seed_offset=seed_offset)
    target = spec.study.n_trials
    if existing is not None and target is not None and finished >= target:
        logger.info("study %r already has %d finished trials; nothing to run", spec.name,
                    finished)
        return existing, None
    study = existing or retrying(
        lambda: open_study(spec, storage, sampler=make_sampler(spec, seed_offset=seed_offset),
                           pruner=make_pruner(spec)),
        spec.workers.storage_wait, _unreachable(spec))
    retrying(lambda: record_location(study, hooks.location), spec.workers.storage_wait,
             _unreachable(spec))
    logger.log(
        logging.INFO if announce else logging.DEBUG,
        "study %r on %s: %s trials finished, %s", spec.name, redact(storage_url), finished,
        f"running up to {target}" if target else f"running for {spec.study.timeout:g} s",
    )
    return study, objective


def run_study(
    spec: StudyFile,
    storage_url: str,
    *,
    on_start: Callable[[optuna.Study, int | None], None] | None = None,
    on_progress: Callable[[optuna.Study], None] | None = None,
    seed_offset: int = 0,
    artifacts: str | None = None,
    announce: bool = True,
) -> RunSummary:
    """Create or resume ``spec``'s study on ``storage_url`` and run trials in this process until
    the study's budget is spent (also when other workers run trials of the same study)."""
    study, objective = start(spec, storage_url, seed_offset=seed_offset, artifacts=artifacts,
                             announce=announce)
    if objective is None:
        return RunSummary(study=study, ran=0)
    reporter = TrialReporter(spec.study.metric, on_progress)
    if on_start is not None:
        on_start(study, spec.study.n_trials)
    WorkerLoop(spec, storage_url, study, objective, reporter).run()
    if reporter.stopped_by_failures:
        last = study.get_trials(deepcopy=False)[-1]
        raise UserError(
            f"stopped after {MAX_CONSECUTIVE_FAILURES} failed trials in a row; the last one: "
            f"{last.user_attrs.get('fail_reason', 'no reason recorded')}"
        )
    return RunSummary(study=study, ran=reporter.ran)
