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
PRUNERS = ["median", "successive_halving", "hyperband", "wilcoxon", "none"]


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
