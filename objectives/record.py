"""The trial record: what a trial and its study hold beside Optuna's own fields, written by the
objective and the service and read by every view. Each key, each stop reason, a retry's lineage
and seed, the metric's direction and the evaluations' record live here and nowhere else.

Trial user attributes (keys of :class:`Key`): ``n_params``, ``epochs_run``, ``best_epoch``
(1-based), ``train_accuracy``, ``train_loss``, ``val_accuracy`` and ``val_loss`` at the best
epoch, ``history`` (per-epoch lists), ``seconds_per_epoch``, and before it trains ``epoch_work``,
``trained_on`` and ``predicted_epoch_seconds`` (``objectives.cost``), ``stop_reason`` (a
:class:`StopReason`), ``fail_reason`` when it failed, ``test_accuracy`` / ``test_loss``
measured after training (never used for selection); ``latency_ms``, ``latency_ms_batch256``,
``infeasible`` and ``epoch_values`` in studies with several objectives or constraints; ``label``,
``warm_start`` and ``max_epochs`` for trials queued before the sampler's; ``resumes``,
``first_try`` and ``resumed_at_epoch`` for a retry; ``worker`` and ``artifact_error``.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

import optuna


class StopReason(StrEnum):
    """Why a trial's training ended (``stop_reason``); a ``str``, so stored and compared as the
    plain text it always was."""

    COMPLETED = "completed"  # trained its epochs
    EARLY_STOPPED = "early_stopped"
    PRUNED = "pruned"
    # pruned: it took more than its share of the run's time budget without leading the study
    # (objectives.budget)
    TIME_SHARE = "time_share"
    NAN = "nan"  # the loss diverged: failed
    TIME_BUDGET = "time_budget"  # the run's time budget ended: recorded at its best epoch
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM: failed, run again first
    INFEASIBLE = "infeasible"  # over the study's size or latency constraint: never trained
    ERROR = "error"  # anything else that failed the trial (out of memory, ...)


# Pruned: stopped while it trained, kept as it stood, never run again.
PRUNED_REASONS = (StopReason.PRUNED, StopReason.TIME_SHARE)

# Stopped by the user or the run, not by anything of their own: run again first, from their
# checkpoint, when the study next runs (search.workers.retries).
STOPPED_FROM_OUTSIDE = (StopReason.INTERRUPTED, StopReason.TIME_BUDGET)


class Key:
    """The trial user attribute keys."""

    N_PARAMS = "n_params"
    EPOCHS_RUN = "epochs_run"
    BEST_EPOCH = "best_epoch"
    HISTORY = "history"
    SECONDS_PER_EPOCH = "seconds_per_epoch"
    # before it trains: its epoch's work and the seconds that work is predicted to take
    # (objectives.cost)
    EPOCH_WORK = "epoch_work"
    PREDICTED_EPOCH_SECONDS = "predicted_epoch_seconds"
    TRAINED_ON = "trained_on"  # host, threads, device, precision
    STOP_REASON = "stop_reason"
    PRECISION = "precision"  # the dtype policy it trained with ("auto" resolved)
    FAIL_REASON = "fail_reason"
    TEST_ACCURACY = "test_accuracy"
    TEST_LOSS = "test_loss"
    INFEASIBLE = "infeasible"
    EPOCH_VALUES = "epoch_values"
    VAL_MACRO_F1 = "val_macro_f1"
    # queued with a trial before the sampler proposes (search.studies, search.workers.retries)
    LABEL = "label"
    WARM_START = "warm_start"
    # this many epochs instead of the study's `max_epochs` (the hand-built experiments')
    MAX_EPOCHS = "max_epochs"
    # a retry (search.workers.retries): the trial it carries on, its lineage's first try (whose
    # seed and checkpoint it uses) and the epoch it resumed at (0: from the start)
    RESUMES = "resumes"
    FIRST_TRY = "first_try"
    RESUMED_AT = "resumed_at_epoch"
    WORKER = "worker"
    ARTIFACT_ERROR = "artifact_error"
    # the tabular objective's (objectives.tabular): the configuration looked up and the
    # seconds the table says it trained for
    CONFIGURATION = "configuration"
    SIMULATED_SECONDS = "simulated_seconds"


# The attributes a trial is queued with; a retry keeps them, the rest are results.
QUEUED = (Key.LABEL, Key.WARM_START, Key.MAX_EPOCHS)

# Study user attributes: what ``hpsearch evaluate`` measured, one per evaluated trial number.
EVALUATION_PREFIX = "evaluation:"


class _Numbered(Protocol):
    @property
    def number(self) -> int: ...

    @property
    def user_attrs(self) -> dict[str, Any]: ...


def stop_reason(trial: _Numbered) -> StopReason | None:
    """The trial's stop reason, if it recorded one."""
    value = trial.user_attrs.get(Key.STOP_REASON)
    try:
        return StopReason(value) if value is not None else None
    except ValueError:
        return None


def lineage(trial: _Numbered) -> int:
    """The number of the first try of ``trial``'s lineage: itself, or for a retry the trial
    whose seed and checkpoint it carries on."""
    return int(trial.user_attrs.get(Key.FIRST_TRY, trial.number))


def trial_seed(study_seed: int, trial: _Numbered) -> int:
    """The Keras seed a trial trains with, and ``evaluate`` retrains it with: the study's seed
    plus its lineage's first number, so a retry trains as its first try did."""
    return study_seed + lineage(trial)


def maximizes(study: optuna.Study, index: int = 0) -> bool:
    """Whether the study's objective ``index`` is maximized."""
    return study.directions[index] == optuna.study.StudyDirection.MAXIMIZE


def evaluations(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """What ``hpsearch evaluate`` recorded on the study, by trial number."""
    return {int(key[len(EVALUATION_PREFIX):]): value for key, value in study.user_attrs.items()
            if key.startswith(EVALUATION_PREFIX) and isinstance(value, dict)}


def evaluation_key(number: int) -> str:
    return f"{EVALUATION_PREFIX}{number}"
