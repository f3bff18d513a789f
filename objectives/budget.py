"""The end of a run's time budget (``[study] timeout``, ``--timeout``), as training sees it.

Optuna's own timeout only keeps new trials from starting: a trial still training when it passes
trains on to its end, however long that takes, and a run that must end then (a job's time
limit, a benchmark's budget) loses that trial whole, with every epoch it trained. Here the run
sets the moment its budget ends (:func:`end_at`, a little before it, so that what follows a
trial's training still fits), and a trial still training then stops at its next step
(``callbacks.StopAtBudgetEnd``): it is recorded as it stood at its best complete epoch, with
that epoch's value and weights (``StopReason.TIME_BUDGET``, ``objectives.record``); the
unfinished epoch counts for nothing. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import time

# What a trial does after its training (test evaluation, figures, the model, the storage)
# takes seconds; a run's trials stop this long before its budget ends, or a twentieth of the
# budget if that is less.
MARGIN_S = 20.0

_end: float | None = None  # time.monotonic() at which training stops; None: no budget


class BudgetSpent(Exception):
    """The run's time budget ended while a trial trained."""


def end_at(deadline: float | None, budget_s: float | None) -> None:
    """Stop training at ``deadline`` (``time.monotonic()``) less the margin for a budget of
    ``budget_s`` seconds; None: no time budget."""
    global _end
    if deadline is None or budget_s is None:
        _end = None
        return
    _end = deadline - min(MARGIN_S, budget_s / 20.0)


def spent() -> bool:
    return _end is not None and time.monotonic() >= _end
