"""Pruning in studies of several objectives, where Optuna refuses intermediate values
(optuna#3450) and so none of its pruners can work.

What a trial costs (its parameters, its latency) is known before it trains
(``objectives.goals``), so a trial can be judged against the completed trials that cost no more
on every cost objective: at an epoch, it is stopped when its best value so far is outside the
top ``percentile`` % of their values at that epoch: Optuna's percentile rule (the median rule
is ``percentile = 50``), with its startup trials, warm-up epochs, interval and minimum number
of trials, applied to cheaper-or-equal trials only. A trial cheaper than every completed one
is never stopped: none of them could make it redundant. Epoch values come from the user
attribute each trial records (``epoch_values``, ``objectives.record``). Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Peer:
    """A completed trial as the rule sees it: its costs and its metric per epoch."""

    costs: Mapping[str, float]
    values: Sequence[float | None]


@dataclass(frozen=True)
class CostAwareRule:
    percentile: float = 80.0
    n_startup_trials: int = 2
    n_warmup_steps: int = 2
    interval_steps: int = 1
    n_min_trials: int = 3

    def threshold(self, step: int, costs: Mapping[str, float], peers: Sequence[Peer], *,
                  maximize: bool) -> float | None:
        """The value a trial of ``costs`` must reach by epoch ``step`` (0-based) to go on;
        None when the rule does not judge it there."""
        if len(peers) < max(self.n_startup_trials, 1) or step < self.n_warmup_steps:
            return None
        if (step - self.n_warmup_steps) % self.interval_steps:
            return None
        values = [float(v) for peer in peers if no_costlier(peer.costs, costs)
                  and len(peer.values) > step and (v := peer.values[step]) is not None
                  and math.isfinite(float(v))]
        if len(values) < self.n_min_trials:
            return None
        return float(np.percentile(values, 100 - self.percentile if maximize
                                   else self.percentile))

    def prunes(self, step: int, values: Sequence[float | None], costs: Mapping[str, float],
               peers: Sequence[Peer], *, maximize: bool) -> bool:
        """Whether a trial whose metric per epoch so far is ``values`` stops at ``step``."""
        bar = self.threshold(step, costs, peers, maximize=maximize)
        if bar is None:
            return False
        finite = [float(v) for v in values[:step + 1] if v is not None and math.isfinite(v)]
        if not finite:
            return True  # as Optuna's rule: no finite value at all is pruned
        best = max(finite) if maximize else min(finite)
        return best < bar if maximize else best > bar


def no_costlier(peer: Mapping[str, float], own: Mapping[str, float]) -> bool:
    """Whether the peer costs no more than ``own`` on every cost ``own`` has."""
    return all(name in peer and float(peer[name]) <= float(value) for name, value in own.items())


def peer_of(attrs: Mapping[str, Any], cost_names: Sequence[str], metric: str,
            values_attr: str) -> Peer | None:
    """A completed trial's costs and epoch values from its user attributes; None when it
    recorded them not."""
    costs = {name: attrs[name] for name in cost_names if isinstance(attrs.get(name), (int, float))}
    if len(costs) != len(cost_names):
        return None
    values = attrs.get(values_attr)
    if not isinstance(values, list):
        history = attrs.get("history")
        values = history.get(metric) if isinstance(history, dict) else None
    if not isinstance(values, list):
        return None
    return Peer(costs=costs, values=values)
