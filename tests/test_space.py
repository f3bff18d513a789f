"""The search space becomes the expected ``trial.suggest_*`` calls with stable names."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution, FloatDistribution, IntDistribution,
)

from objectives.space import SearchSpace, layer_widths, suggest

SGD_CONFIG = {
    "n_layers": 2, "units_l0": 256, "units_l1": 64, "activation": "tanh", "batch_norm": False,
    "dropout": 0.2, "l2": 5e-5, "initializer": "glorot_uniform", "optimizer": "sgd",
    "learning_rate": 1e-2, "batch_size": 128, "momentum": 0.9, "nesterov": True,
}


def test_fixed_trial_gives_back_its_configuration() -> None:
    params = suggest(optuna.trial.FixedTrial(SGD_CONFIG), SearchSpace())
    assert params == SGD_CONFIG
    assert layer_widths(params) == [256, 64]


@pytest.mark.parametrize(
    ("optimizer", "own"),
    [("adam", []), ("adamw", ["weight_decay"]), ("sgd", ["momentum", "nesterov"]),
     ("rmsprop", ["rho"])],
)
def test_only_the_chosen_optimizer_parameters_are_sampled(optimizer: str, own: list[str]) -> None:
    space = SearchSpace.model_validate({"optimizer": optimizer})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    params = suggest(trial, space)
    optimizer_specific = {"weight_decay", "momentum", "nesterov", "rho"}
    assert sorted(optimizer_specific & set(params)) == sorted(own)
    assert set(trial.params) == set(params)


def test_distributions_follow_the_space() -> None:
    space = SearchSpace.model_validate({
        "n_layers": 3, "units": {"low": 32, "high": 1024, "log": True},
        "dropout": {"low": 0.0, "high": 0.5}, "activation": ["relu", "gelu"],
        "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "batch_size": [64, 128],
        "optimizer": "adamw", "batch_norm": True,
    })
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    suggest(trial, space)
    d = trial.distributions
    assert [f"units_l{i}" for i in range(3)] == [n for n in d if n.startswith("units_")]
    assert d["units_l2"] == IntDistribution(32, 1024, log=True)
    assert d["dropout"] == FloatDistribution(0.0, 0.5)
    assert d["learning_rate"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert d["activation"] == CategoricalDistribution(["relu", "gelu"])
    assert d["batch_size"] == CategoricalDistribution([64, 128])
    # a fixed value is still recorded under its name, so every trial shows it
    assert d["n_layers"] == CategoricalDistribution([3])
    assert d["optimizer"] == CategoricalDistribution(["adamw"])
    assert trial.params["batch_norm"] is True


def test_space_round_trips_through_its_json_form() -> None:
    space = SearchSpace.model_validate({"units": {"low": 8, "high": 64, "step": 8}})
    assert SearchSpace.model_validate(space.fingerprint()) == space


def test_reference_params_keep_only_what_the_space_holds() -> None:
    from objectives.space import REFERENCES, reference_trials

    assert reference_trials(SearchSpace()) == [(params, epochs) for params, epochs, _ in REFERENCES]
    narrow = SearchSpace.model_validate({"n_layers": {"low": 1, "high": 2},
                                         "activation": ["tanh", "gelu"],
                                         "optimizer": ["sgd", "adam"]})
    (start, _), (wide, _) = reference_trials(narrow)
    assert wide["batch_size"] == 256 and "units_l0" not in wide
    # depth out of the space takes its widths with it; the optimizer's own parameter goes too
    assert not {"n_layers", "units_l0", "units_l1", "units_l2", "activation", "optimizer",
                "weight_decay"} & set(start)
    assert start["batch_norm"] is True and start["learning_rate"] == 5e-4
    # references that the space makes equal are tried once
    same = SearchSpace.model_validate({"n_layers": 1, "batch_size": [64]})
    assert len(reference_trials(same)) == 1


def test_a_new_study_tries_the_reference_first_and_fixed_trials_replace_it(
        tmp_path: Path) -> None:
    from objectives.record import Key
    from objectives.space import REFERENCES
    from search.studies import open_study
    from search.studyfile import StudyFile

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'w.db'}")
    spec = StudyFile.model_validate({"study": {"name": "warm", "n_trials": 2}})
    study = open_study(spec, storage)
    # the hand-built experiment with its own epochs, the wide one with the study's
    for (reference, _, _), attrs in zip(REFERENCES, [{Key.MAX_EPOCHS: 18}, {}]):
        trial = study.ask()
        assert suggest(trial, spec.space) == reference
        assert trial.user_attrs == {Key.WARM_START: True, **attrs}
    assert open_study(spec, storage).get_trials(states=(optuna.trial.TrialState.WAITING,)) == []

    one = StudyFile.model_validate({"study": {"name": "one", "n_trials": 1}})
    assert len(open_study(one, storage).trials) == 1  # nothing left waiting past the budget

    cold = StudyFile.model_validate({"study": {"name": "cold", "n_trials": 2,
                                               "warm_start": False}})
    assert open_study(cold, storage).trials == []
    fixed = StudyFile.model_validate({"study": {"name": "fixed", "n_trials": 2},
                                      "fixed_trials": [{"label": "a", "dropout": 0.1}]})
    queued = open_study(fixed, storage).trials
    assert [t.user_attrs for t in queued] == [{"label": "a"}]
