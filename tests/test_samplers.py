"""Every sampler and pruner a study file can name is built and drives a real study."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from objectives.space import SearchSpace, suggest
from search import studyfile
from search.errors import UserError
from search.samplers import make_pruner, make_sampler

SAMPLERS = ["tpe", "random", "cmaes", "gp", "qmc"]
PRUNERS = ["percentile", "median", "successive_halving", "hyperband", "wilcoxon", "none"]


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("pruner", PRUNERS)
def test_sampler_and_pruner_drive_a_study(
    write_study: Callable[..., Path], sampler: str, pruner: str
) -> None:
    spec = studyfile.load(write_study(
        f'[study]\nn_trials = 1\nseed = 1\n[sampler]\ntype = "{sampler}"\n'
        f'[pruner]\ntype = "{pruner}"\n[training]\nmax_epochs = 4\n'
    ))
    if sampler == "gp" and importlib.util.find_spec("torch") is None:
        with pytest.raises(UserError, match=r"^sampler.type 'gp' needs PyTorch: "):
            make_sampler(spec)
        return
    study = optuna.create_study(direction="maximize", sampler=make_sampler(spec),
                                pruner=make_pruner(spec))
    space = SearchSpace()
    for number in range(3):
        trial = study.ask()
        params = suggest(trial, space)
        assert params["n_layers"] in range(1, 5)
        for epoch in range(4):
            trial.report(0.1 * number + 0.01 * epoch, step=epoch)
            trial.should_prune()
        study.tell(trial, 0.1 * number + 0.03)
    assert len(study.trials) == 3


def test_the_default_pruner_stops_the_lowest_fifth_only(
    write_study: Callable[..., Path]
) -> None:
    """Against five completed trials at 0.40-0.60 at epoch 3, a trial at 0.465 (below their
    median) goes on; one at 0.43 (lowest fifth) stops. Nothing stops during the first two
    epochs, nor at an epoch that fewer than three completed trials reached (one trained a
    fourth)."""
    spec = studyfile.load(write_study("[study]\nn_trials = 9\n"))
    study = optuna.create_study(direction="maximize", pruner=make_pruner(spec))
    for value in (0.40, 0.45, 0.50, 0.55, 0.60):
        trial = study.ask()
        for epoch in range(3 if value < 0.60 else 4):
            trial.report(value - 0.1 * (2 - epoch), step=epoch)
        study.tell(trial, value)

    def stopped_at(value: float, fourth: float | None = None) -> int | None:
        trial = study.ask()
        for epoch in range(3):
            trial.report(value - (0.3 if epoch < 2 else 0.0), step=epoch)
            if trial.should_prune():
                return epoch
        if fourth is not None:
            trial.report(fourth, step=3)  # far below the one trial at epoch 4 (0.70)
            if trial.should_prune():
                return 3
        return None

    assert stopped_at(0.465, fourth=0.47) is None
    assert stopped_at(0.43) == 2
    first = study.trials[5]  # the 0.465 trial, at epoch 4
    assert optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2).prune(study, first)
    against_one = optuna.pruners.PercentilePruner(80.0, n_startup_trials=2, n_warmup_steps=2)
    assert against_one.prune(study, first)  # at epoch 4, against the single trial there
