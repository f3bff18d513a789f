"""Trials run again after their worker died or was stopped: queued with their own parameters
before the sampler proposes anything new, to carry on from their checkpoint.

A retry is a WAITING trial with the parameters and distributions of the trial it carries on,
the user attributes it was queued with (label, warm start, epochs), ``resumes`` (that trial's
number) and ``first_try`` (the lineage's first trial, whose seed and checkpoint every retry
uses), and Optuna's own system attributes of a retry (``failed_trial``, ``retry_history``), so
that ``optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number`` and
``retry_history`` read it as Optuna's retries.

Two kinds of failed trials are retried:

- a trial whose worker stopped beating (killed, preempted, cut off from the database): by
  :class:`RetryStaleTrials`, the storage's heartbeat callback, up to ``max_retry`` times;
  past that its checkpoint is deleted;
- a trial stopped by Ctrl-C or SIGTERM (``StopReason.INTERRUPTED``), or by the run's
  time budget before its first epoch: by :func:`requeue_interrupted` when a worker of the
  study next looks for a trial, as often as it is stopped (a stop is the user's or the run's,
  not the trial's).
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.record import QUEUED, STOPPED_FROM_OUTSIDE, Key, lineage

logger = logging.getLogger(__name__)

# Optuna's own readers of a retry's system attributes, which requeue() writes as Optuna's
# callback does (Optuna has no public writer: the attribute names are its callback's
# convention, within the optuna<5.1 bound). "Experimental" since Optuna 2.8 and 3.0: the notice
# on every read says nothing a user can act on.
_RETRIES = optuna.storages.RetryHeartbeatStaleTrialCallback
FAILED_TRIAL, RETRY_HISTORY = "failed_trial", "retry_history"


def _read(reader: Callable[[FrozenTrial], Any], trial: FrozenTrial) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return reader(trial)


@functools.cache
def optuna_reads_retries() -> bool:
    """Whether Optuna's retry readers read back what :func:`requeue` writes; checked once per
    process. Where they do not (a later Optuna), one warning, and retries are told by
    hpsearch's own attributes (``first_try``, ``resumes``) alone."""
    probe = optuna.trial.create_trial(
        state=TrialState.FAIL, system_attrs={FAILED_TRIAL: 3, RETRY_HISTORY: [3, 5]})
    try:
        ok = (_read(_RETRIES.retried_trial_number, probe) == 3
              and list(_read(_RETRIES.retry_history, probe)) == [3, 5])
    except Exception:
        ok = False
    if not ok:
        logger.warning("Optuna does not read retries back as hpsearch writes them (%r, %r): "
                       "retries are told by hpsearch's own trial attributes, and Optuna's own "
                       "tools do not see them as retries", FAILED_TRIAL, RETRY_HISTORY)
    return ok


def _retry_history(trial: FrozenTrial, study: optuna.Study | None = None) -> list[int]:
    """The numbers of the tries before ``trial`` in its lineage, first try first."""
    if optuna_reads_retries():
        return list(_read(_RETRIES.retry_history, trial))
    if study is None or Key.RESUMES not in trial.user_attrs:
        return []
    trials = study.get_trials(deepcopy=False)
    before = trials[int(trial.user_attrs[Key.RESUMES])]
    return [*_retry_history(before, study), before.number]


def first_try(trial: FrozenTrial) -> int:
    """The number of the first trial of ``trial``'s lineage (itself if it is no retry)."""
    if not optuna_reads_retries():
        return lineage(trial)
    value = _read(_RETRIES.retried_trial_number, trial)
    return int(value) if isinstance(value, int) else trial.number


def requeue(study: optuna.Study, failed: FrozenTrial) -> None:
    """Queue a retry of ``failed``, before anything the sampler proposes."""
    first = first_try(failed)
    user_attrs: dict[str, Any] = {k: failed.user_attrs[k] for k in QUEUED
                                  if k in failed.user_attrs}
    user_attrs.update({Key.RESUMES: failed.number, Key.FIRST_TRY: first})
    history = [*_retry_history(failed, study), failed.number]
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=failed.params, distributions=failed.distributions,
        user_attrs=user_attrs,
        system_attrs={FAILED_TRIAL: first, RETRY_HISTORY: history},
    ))


class RetryStaleTrials:
    """The storage's heartbeat callback: a trial whose worker stopped beating is queued again
    up to ``max_retry`` times (as ``optuna.storages.RetryHeartbeatStaleTrialCallback``);
    past that, ``drop`` deletes its lineage's checkpoint."""

    def __init__(self, max_retry: int, drop: Callable[[int], None] | None = None) -> None:
        self.max_retry = max_retry
        self.drop = drop

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if len(_retry_history(trial, study)) < self.max_retry:
            requeue(study, trial)
        elif self.drop is not None:
            try:
                self.drop(first_try(trial))
            except Exception as exc:  # a store that fails leaves a file, not a broken search
                logger.warning("checkpoint of trial %d not deleted: %s: %s", first_try(trial),
                               type(exc).__name__, exc)


def stopped_before_their_time(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The failed trials of ``trials`` that were stopped by the user or the run, not by
    anything of their own, and have no retry yet: stopped by Ctrl-C or SIGTERM
    (``StopReason.INTERRUPTED``), or by the run's time budget before their first epoch
    (``StopReason.TIME_BUDGET``; one later in training is complete)."""
    retried = {int(trial.user_attrs[Key.RESUMES]) for trial in trials
               if Key.RESUMES in trial.user_attrs}
    if optuna_reads_retries():
        retried |= {number for trial in trials for number in _retry_history(trial)}
    return [trial for trial in trials
            if trial.state == TrialState.FAIL and trial.number not in retried
            and trial.user_attrs.get(Key.STOP_REASON) in STOPPED_FROM_OUTSIDE]


def requeue_interrupted(study: optuna.Study) -> list[FrozenTrial]:
    """Queue a retry of every trial :func:`stopped_before_their_time`; the trials queued
    again. Call it under the study's budget lock."""
    queued = stopped_before_their_time(study.get_trials(deepcopy=False))
    for trial in queued:
        requeue(study, trial)
    return queued
