"""The end of a run's time budget (``[study] timeout``, ``--timeout``), as training sees it.

Optuna's own timeout only keeps new trials from starting: a trial still training when it passes
trains on to its end, however long that takes, and a run that must end then (a job's time
limit, a benchmark's budget) loses that trial whole, with every epoch it trained. Here the run
sets the moment its budget ends (:func:`end_at`, a little before it, so that what follows a
trial's training still fits), and a trial still training then stops at its next step
(``callbacks.StopAtBudgetEnd``): it is recorded as it stood at its best complete epoch, with
that epoch's value and weights (``StopReason.TIME_BUDGET``, ``objectives.record``); the
unfinished epoch counts for nothing.

No one trial takes more than a share of that budget unless it leads the study (``[study]
max_trial_share``, a quarter by default): past :func:`trial_limit` seconds since it started, a
trial whose best epoch so far is behind the study's best completed trial stops at its next step
(``callbacks.StopPastShare``), pruned (``StopReason.TIME_SHARE``). An epoch costs ten or thirty
times more in a wide MLP than in a narrow one, and a pruner that compares trials at equal epochs
lets such a trial run: in a 30-minute CIFAR-10 search three trials that never led took 12 of a
worker's 29 minutes each (docs/benchmarks.md). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import time

# What a trial does after its training (test evaluation, figures, the model, the storage)
# takes seconds; a run's trials stop this long before its budget ends, or a twentieth of the
# budget if that is less.
MARGIN_S = 20.0

_end: float | None = None  # time.monotonic() at which training stops; None: no budget
_trial_limit: float | None = None  # seconds a trial may take without leading; None: no limit


class BudgetSpent(Exception):
    """The run's time budget ended while a trial trained."""


def end_at(deadline: float | None, budget_s: float | None,
           trial_share: float | None = None) -> None:
    """Stop training at ``deadline`` (``time.monotonic()``) less the margin for a budget of
    ``budget_s`` seconds, and a trial that has taken ``trial_share`` of ``budget_s`` unless it
    leads; None: no time budget, or no share."""
    global _end, _trial_limit
    if deadline is None or budget_s is None:
        _end = _trial_limit = None
        return
    _end = deadline - min(MARGIN_S, budget_s / 20.0)
    _trial_limit = None if trial_share is None or trial_share >= 1 else trial_share * budget_s


def spent() -> bool:
    return _end is not None and time.monotonic() >= _end


def trial_limit() -> float | None:
    """The seconds a trial may take, from its start, before it must lead the study to go on;
    None: no limit."""
    return _trial_limit


def leads(own: float | None, best: float | None, maximize: bool) -> bool:
    """Whether a trial whose best value so far is ``own`` leads a study whose best completed
    (feasible) trial is ``best``: at least as good; with no completed trial yet, it leads;
    with no value of its own yet, it does not."""
    if best is None:
        return True
    if own is None:
        return False
    return own >= best if maximize else own <= best
