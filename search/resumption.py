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

import logging
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.record import QUEUED, STOPPED_FROM_OUTSIDE, Key

logger = logging.getLogger(__name__)

# Optuna's own readers of a retry's system attributes, which requeue() writes as Optuna's
# callback does (it has no public writer). "Experimental" since Optuna 2.8 and 3.0: the notice
# on every read says nothing a user can act on.
_RETRIES = optuna.storages.RetryHeartbeatStaleTrialCallback


def _retry_history(trial: FrozenTrial) -> list[int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return list(_RETRIES.retry_history(trial))


def first_try(trial: FrozenTrial) -> int:
    """The number of the first trial of ``trial``'s lineage (itself if it is no retry)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        value = _RETRIES.retried_trial_number(trial)
    return int(value) if isinstance(value, int) else trial.number


def requeue(study: optuna.Study, failed: FrozenTrial) -> None:
    """Queue a retry of ``failed``, before anything the sampler proposes."""
    first = first_try(failed)
    user_attrs: dict[str, Any] = {k: failed.user_attrs[k] for k in QUEUED
                                  if k in failed.user_attrs}
    user_attrs.update({Key.RESUMES: failed.number, Key.FIRST_TRY: first})
    history = [*_retry_history(failed), failed.number]
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=failed.params, distributions=failed.distributions,
        user_attrs=user_attrs,
        system_attrs={"failed_trial": first, "retry_history": history},
    ))


class RetryStaleTrials:
    """The storage's heartbeat callback: a trial whose worker stopped beating is queued again
    up to ``max_retry`` times (as ``optuna.storages.RetryHeartbeatStaleTrialCallback``);
    past that, ``drop`` deletes its lineage's checkpoint."""

    def __init__(self, max_retry: int, drop: Callable[[int], None] | None = None) -> None:
        self.max_retry = max_retry
        self.drop = drop

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if len(_retry_history(trial)) < self.max_retry:
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
    retried = {number for trial in trials for number in _retry_history(trial)}
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
