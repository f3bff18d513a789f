"""Create or resume a study and run its trials until the budget is spent.

``n_trials`` is the study's total: a resumed study runs only what is missing, counting complete
and pruned trials (failed ones are run again). ``timeout`` bounds one invocation.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass

import optuna

from objectives.data import DatasetError
from objectives.record import Key
from search.artifacts.store import record_location
from search.artifacts.trial_hooks import hooks_for
from search.errors import UserError
from search.registry import checked_objective
from search.samplers import make_pruner, make_sampler
from search.storage.address import StorageAddress
from search.storage.disk_space import keep_reserve
from search.storage.opening import Storage, check_storage, open_storage
from search.storage.outages import retrying
from search.studies import find_study, open_study
from search.studyfile import StudyFile
from search.workers.loop import ObjectiveFn, WorkerLoop, unreachable
from search.workers.outcomes import FINISHED, MAX_CONSECUTIVE_FAILURES, TrialReporter, count_states

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    study: optuna.Study
    ran: int
    restart: bool = False  # this process should start afresh and go on (search.workers.fresh_start)


def prepare(spec: StudyFile, storage: str | StorageAddress, *,
            drop_checkpoint: Callable[[int], None] | None = None) -> tuple[
    Storage, optuna.Study | None, int
]:
    """Check everything that can be checked before trials run: sampler, pruner, storage,
    stored space. Returns the storage, the existing study (if any) and its finished trials.
    ``drop_checkpoint`` deletes the checkpoint of a dead worker's trial that is not retried."""
    sampler, pruner = make_sampler(spec), make_pruner(spec)
    workers = spec.workers
    # A database that drops connections while a worker starts (a restart) is waited for, as
    # during the search; one that cannot be reached at all is reported at once.
    opened = open_storage(
        storage, create=True,
        heartbeat=(workers.heartbeat_interval, workers.grace_period, workers.max_retry),
        wait=workers.storage_wait, drop_checkpoint=drop_checkpoint,
    )

    def stored() -> tuple[optuna.Study | None, int]:
        existing = find_study(spec, opened, sampler=sampler, pruner=pruner)
        if existing is None:
            return None, 0
        return existing, sum(count_states(existing.get_trials(deepcopy=False))[s]
                             for s in FINISHED)

    existing, finished = retrying(stored, workers.storage_wait, unreachable(spec))
    return opened, existing, finished


@dataclass(frozen=True)
class Started:
    """A study created or resumed, before its trials run."""

    study: optuna.Study
    storage: Storage  # the storage it is on
    left: bool  # whether trials are left to run
    objective: ObjectiveFn | None  # ready when trials are left and it was built


def start(
    spec: StudyFile, storage: str | StorageAddress, *, artifacts: str | None = None,
    announce: bool = True, build: bool = True,
) -> Started:
    """Create or resume the study, with its objective ready when trials are left. A process
    that runs no trial itself (``run --workers``) passes ``build=False``. The objective is built
    only once trials are known to be left: the Keras MLP's data is loaded and checked first
    without TensorFlow (``search.registry.checked_objective``), so a command that finds the
    study's budget spent, or starts workers and trains nothing itself, never imports it.

    Everything that can be checked is checked before anything is written (no storage file, no
    table, no artifact folder): the sampler and pruner are built, the storage is reached, the
    data loaded (which also fills this machine's data cache for every worker), and the stored
    space (if any) compared.
    """
    # A sampler or pruner that cannot be made (a missing package) is one line before anything.
    make_sampler(spec), make_pruner(spec)
    address = StorageAddress.of(storage)
    check_storage(address, spec.name, wait=spec.workers.storage_wait)
    hooks = hooks_for(spec, address, artifacts)  # its store is checked by open(), below
    try:
        build_objective = checked_objective(
            spec.study.objective, space=spec.space, data=spec.data, training=spec.training,
            metric=spec.study.metric, seed=spec.study.seed, goals=spec.goals, hooks=hooks)
    except DatasetError as exc:
        raise UserError(str(exc)) from None
    hooks.open()
    checkpoints = hooks.checkpoints()
    opened, existing, finished = prepare(
        spec, address,
        drop_checkpoint=None if checkpoints is None else checkpoints.drop)
    keep_reserve(address)  # room to record a trial's failure should the disk fill up
    target = spec.study.n_trials
    if existing is not None and target is not None and finished >= target:
        logger.info("study %r already has %d finished trials; nothing to run", spec.name,
                    finished)
        return Started(existing, opened, left=False, objective=None)
    study = existing or retrying(
        lambda: open_study(spec, opened, sampler=make_sampler(spec),
                           pruner=make_pruner(spec)),
        spec.workers.storage_wait, unreachable(spec))
    retrying(lambda: record_location(study, hooks.location), spec.workers.storage_wait,
             unreachable(spec))
    logger.log(
        logging.INFO if announce else logging.DEBUG,
        "study %r on %s: %s trials finished, %s", spec.name, address.describe(), finished,
        f"running up to {target}" if target else f"running for {spec.study.timeout:g} s",
    )
    return Started(study, opened, left=True, objective=build_objective() if build else None)


def run_study(
    spec: StudyFile,
    storage: str | StorageAddress,
    *,
    on_start: Callable[[optuna.Study, int | None], None] | None = None,
    on_progress: Callable[[optuna.Study], None] | None = None,
    artifacts: str | None = None,
    announce: bool = True,
    deadline: float | None = None,
    own_process: bool = False,
) -> RunSummary:
    """Create or resume ``spec``'s study on ``storage`` (a URL or its address) and run trials in
    this process until the study's budget is spent (also when other workers run trials of the
    same study). ``deadline`` (``time.monotonic()``) is when the time budget ends, if the command
    counted it from its own start; else it counts from when the trials begin. ``own_process``:
    the process is the command line's own, not a caller's (:func:`freeze_start_up`)."""
    started = start(spec, storage, artifacts=artifacts, announce=announce)
    study, objective = started.study, started.objective
    if objective is None:  # nothing left to run
        return RunSummary(study=study, ran=0)
    if own_process:
        freeze_start_up()
    goals = spec.study.goals
    reporter = TrialReporter(spec.study.metric, on_progress,
                             list(goals.objectives) if goals.multi else None)
    if on_start is not None:
        on_start(study, spec.study.n_trials)
    loop = WorkerLoop(spec, started.storage, study, objective, reporter, deadline=deadline)
    loop.run()
    if reporter.stopped_by_failures:
        last = study.get_trials(deepcopy=False)[-1]
        raise UserError(
            f"stopped after {MAX_CONSECUTIVE_FAILURES} failed trials in a row; the last one: "
            f"{last.user_attrs.get(Key.FAIL_REASON, 'no reason recorded')}"
        )
    return RunSummary(study=study, ran=reporter.ran, restart=loop.restart)


def freeze_start_up() -> None:
    """Leave what a worker process holds once its objective is ready (TensorFlow, Keras and the
    rest of its imports, some 450,000 objects, and the data) out of Python's cyclic garbage
    collector for the rest of the process (``gc.freeze``), after one collection.

    Those objects live as long as the process anyway; yet every full collection went through
    them again: Keras's ``clear_session`` runs one before each trial, and tracing a trial's
    training step allocates enough to set off more. A worker process of 12 small trials took 22.8
    CPU-s without the freeze and 18.9 with it (``benchmarks/trial_overhead.py --freeze``), the
    trials' values the same. Only the command line's processes freeze: a notebook's kernel holds
    the user's objects too, whose reference cycles must stay collectable.
    """
    gc.collect()
    gc.freeze()
