"""One worker's loop over a study's trials: the budget lock, stale trials, and retries while the
storage is away."""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Callable
from typing import Union

import optuna
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from objectives import budget, interrupts
from objectives.record import Key, StopReason
from search.errors import database_error
from search.storage import optuna_ids
from search.storage.disk_space import DiskFull, check_free_space, disk_full, give_up_reserve
from search.storage.opening import Storage
from search.storage.outages import cause, proxy_error, retrying
from search.studyfile import StudyFile
from search.workers import fresh_start
from search.workers.fresh_start import MemoryWatch
from search.workers.outcomes import FINISHED, TrialReporter, count_states
from search.workers.retries import requeue_interrupted

logger = logging.getLogger(__name__)

ObjectiveFn = Callable[[optuna.Trial], Union[float, list[float]]]


def _with_worker(objective: ObjectiveFn, on_created: Callable[[optuna.Trial], None]
                 ) -> ObjectiveFn:
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def run(trial: optuna.Trial) -> float | list[float]:
        on_created(trial)  # the trial exists now: other workers may count it
        trial.set_user_attr("worker", worker)
        with interrupts.immediate():  # the objective records a stop on its trial
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

    def __init__(self, spec: StudyFile, storage: Storage, study: optuna.Study,
                 objective: ObjectiveFn, reporter: TrialReporter, *,
                 deadline: float | None = None) -> None:
        self.spec = spec
        self.deadline = deadline
        self.study = study
        self.objective = objective
        self.reporter = reporter
        # The lock and the stale-trial check use the storage's own engine (one per worker), or
        # ask the proxy it goes through.
        self.address = storage.address
        self.lock = storage.budget_lock(spec.name)
        self.memory = MemoryWatch(spec.workers.max_memory_growth)
        self.restart = False  # this process should start afresh (search.workers.fresh_start)
        self.unbeaten = storage.unbeaten()
        self._unbeaten_since: dict[int, float] = {}  # trial id -> when first seen unbeaten
        self.running: int | None = None  # the number of this worker's running trial

    def run(self) -> None:
        target, timeout = self.spec.study.n_trials, self.spec.study.timeout
        deadline = self.deadline or fresh_start.deadline_before() or (
            None if timeout is None else time.monotonic() + timeout)
        # A trial still training when the budget ends stops and is recorded at its best epoch
        # (objectives.budget), instead of training on past the budget; one that has taken more
        # than its share of it without leading the study is pruned.
        budget.end_at(deadline, timeout, self.spec.study.trial_share)
        try:
            ran = self.reporter.ran
            while not self.reporter.stopped_by_failures:
                # Within the last margin before the deadline a new trial could not finish an
                # epoch: it would only be recorded as failed by the budget.
                if budget.spent() or (deadline is not None and time.monotonic() >= deadline):
                    return
                if self.reporter.ran > ran:
                    ran = self.reporter.ran
                    if self.memory.after_trial():
                        logger.info("this worker starts afresh to give back memory after trial "
                                    "%s: %+.0f MB since its first trial (max_memory_growth "
                                    "%g MB)", self.reporter.last, self.memory.grown,
                                    self.memory.limit_mb)
                        self.restart = True
                        fresh_start.hand_on_deadline(deadline)
                        return
                check_free_space(self.address)
                try:
                    if not retrying(lambda: self._one_trial(target),
                                    self.spec.workers.storage_wait, unreachable(self.spec),
                                    transient=_storage_failure):
                        return
                except optuna.exceptions.UpdateFinishedTrialError as exc:
                    # Another worker took this trial for dead (no heartbeat for the grace
                    # period, e.g. during a database outage) and has queued it again.
                    logger.warning("trial result not stored: %s", exc)
                except Exception as exc:
                    if not disk_full(exc):
                        raise
                    raise self._out_of_space(exc) from None
                finally:
                    self.running = None
        finally:
            budget.end_at(None, None)  # nothing after this run (evaluate, say) is bounded by it
            self.lock.release()

    def _out_of_space(self, error: BaseException) -> DiskFull:
        """The storage's disk is full: its reserve given up (search.storage.disk_space) to record
        the running trial as failed; what to tell the user."""
        give_up_reserve(self.address)
        shown = self.address.shown
        told = f"storage {shown!r}: the disk is full ({database_error(disk_error(error))})"
        number = self.running
        if number is None:
            return DiskFull(f"{told}: free some space, then run the same command")
        reason = "the storage's disk was full"
        try:
            if optuna_ids.supported():
                optuna_ids.storage_of(self.study).set_trial_user_attr(
                    optuna_ids.trial_id(self.study.get_trials(deepcopy=False)[number]),
                    Key.FAIL_REASON, reason)
            self.study.tell(number, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # Optuna recorded it failed
        except Exception:
            return DiskFull(
                f"{told}: trial {number} could not be recorded failed and stays running "
                f"until a worker takes it for dead ({self.spec.workers.grace_period} s without "
                "a heartbeat) and runs it again; free some space, then run the same command")
        return DiskFull(f"{told}: trial {number} recorded failed; free some space, then run "
                        "the same command")

    def _fail_trials_that_never_beat(self) -> None:
        """Fail running trials that have recorded no heartbeat for a grace period: their worker
        lost the database (or died) between creating the trial and its first beat, and Optuna's
        own staleness check only sees trials that did beat once.

        The grace period is timed by this worker's own clock from when it first saw the trial
        unbeaten, not from the trial's stored start: Optuna stores that in the local time of the
        machine that created the trial, which says nothing here when workers' clocks or time
        zones differ.
        """
        if not optuna_ids.supported():
            return
        unbeaten = self.unbeaten.trial_ids(optuna_ids.study_id(self.study))
        now = time.monotonic()
        self._unbeaten_since = {trial_id: self._unbeaten_since.get(trial_id, now)
                                for trial_id in unbeaten}
        storage = optuna_ids.storage_of(self.study)
        for trial_id, since in self._unbeaten_since.items():
            if now - since < self.spec.workers.grace_period:
                continue
            try:  # the reason first: a finished trial takes no attributes
                storage.set_trial_user_attr(
                    trial_id, Key.FAIL_REASON,
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
            # Trials stopped by Ctrl-C or SIGTERM run again first, from their checkpoints, and
            # so do trials a run's time budget ended before their first epoch.
            for trial in requeue_interrupted(self.study):
                logger.info("trial %d was %s: queued to run again", trial.number,
                            "interrupted"
                            if trial.user_attrs[Key.STOP_REASON] == StopReason.INTERRUPTED
                            else "cut by a run's time budget before its first epoch")
            # The budget is safe once the new trial is RUNNING in the storage: the lock goes
            # when the objective starts, before its first suggestion (Optuna samples a trial's
            # relative parameters then, not when it creates the trial).
            def created(trial: optuna.Trial) -> None:
                self.running = trial.number
                self.lock.release()

            # A stop while Optuna keeps the trial's books waits for them to be kept
            # (objectives.interrupts): no trial left running, no heartbeat thread left beating.
            with interrupts.deferred():
                self.study.optimize(
                    _with_worker(self.objective, created), n_trials=1,
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
    if disk_full(error):
        return None  # not waited out: said at once (WorkerLoop._out_of_space)
    return cause(error, lambda seen: isinstance(seen, STORAGE_ERRORS) or proxy_error(seen))


def disk_error(error: BaseException) -> BaseException:
    """The database's own error behind ``error``, to show."""
    return cause(error, lambda seen: isinstance(seen, SQLAlchemyError)) or error




def unreachable(spec: StudyFile) -> str:
    return f"the storage stayed unreachable for {spec.workers.storage_wait:g} s"
