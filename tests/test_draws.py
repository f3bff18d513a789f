"""A study's draws depend on its seed and each trial's number, never on the process: the same
study file run in one go repeats its trials exactly, and no resumed run, fresh process or
second worker draws a configuration that another already drew (issue 26, item 2)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import HPSEARCH, interruptible, study_trials, wait_for

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import FrozenTrial, TrialState

from search import studyfile
from search.cli import cli
from search.samplers import TrialSeededSampler, draw_seed, make_sampler
from conftest import stub_study_text


def this_study(n_trials: int, sampler: str, epochs: int) -> dict[str, Any]:
    """This file's study, a space of many configurations: overrides of the stub study."""
    return dict(
        study={"name": "draws", "n_trials": n_trials, "seed": 7, "warm_start": False},
        sampler={"type": sampler, "n_startup_trials": None}, data={"validation_fraction": None},
        training={"max_epochs": epochs, "early_stopping_patience": 2, "precision": "float32"},
        workers={"heartbeat_interval": 1, "grace_period": 3},
        space={"n_layers": {"low": 1, "high": 3}, "units": {"low": 8, "high": 64, "log": True},
               "activation": ["relu", "tanh", "elu"], "batch_norm": [True, False],
               "optimizer": ["adam", "sgd", "rmsprop"], "batch_size": [32, 64, 128]},
    )


def _configurations(trials: list[FrozenTrial]) -> dict[int, tuple[tuple[str, object], ...]]:
    """Each lineage's configuration: a retry carries on its first try with its parameters. A
    try killed while it drew them (or before: right after it was created) holds part of them,
    and its retry draws the rest; such a lineage is counted by its whole configuration."""
    seen: dict[int, dict[str, object]] = {}
    for trial in trials:
        lineage = int(trial.user_attrs.get("first_try", trial.number))
        known = seen.setdefault(lineage, {})
        shared = known.keys() & trial.params.keys()
        assert {k: known[k] for k in shared} == {k: trial.params[k] for k in shared}, trial
        known.update(trial.params)
    return {lineage: tuple(sorted(params.items()))
            for lineage, params in seen.items() if params}


def _assert_no_repeats(trials: list[FrozenTrial]) -> None:
    configurations = list(_configurations(trials).values())
    assert len(set(configurations)) == len(configurations), configurations


def _run(study_file: Path, url: str, *extra: str) -> None:
    result = CliRunner().invoke(cli, ["run", str(study_file), "--storage", url, *extra],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("sampler", ["tpe"])  # its first trials are its random sampler's
def test_a_study_run_in_pieces_draws_what_it_draws_in_one_go(
    tmp_path: Path, sampler: str
) -> None:
    """One run of 4 trials, and the same study file run as 2 then 4: the same trials, in
    order (the old per-process seed drew trials 0 and 1 again as 2 and 3)."""
    study_file = tmp_path / "draws.toml"
    study_file.write_text(stub_study_text(**this_study(4, sampler, 1)))
    whole, pieces = f"sqlite:///{tmp_path / 'whole.db'}", f"sqlite:///{tmp_path / 'pieces.db'}"
    _run(study_file, whole)
    _run(study_file, pieces, "--n-trials", "2")
    _run(study_file, pieces, "--n-trials", "4")
    in_one_go = optuna.load_study(study_name="draws", storage=whole).trials
    in_pieces = optuna.load_study(study_name="draws", storage=pieces).trials
    assert [t.params for t in in_one_go] == [t.params for t in in_pieces]
    _assert_no_repeats(in_one_go)


def _seeded_draws(seed: int, numbers: range) -> list[dict[str, object]]:
    sampler = TrialSeededSampler(lambda s: optuna.samplers.RandomSampler(seed=s), seed)
    study = optuna.create_study(sampler=sampler)
    draws = []
    for _ in numbers:
        trial = study.ask()
        draws.append({"x": trial.suggest_float("x", 0, 1),
                      "k": trial.suggest_categorical("k", ["a", "b", "c", "d"])})
        study.tell(trial, 0.0)
    return draws


def test_draw_seeds_follow_the_study_seed_and_the_number() -> None:
    assert draw_seed(7, 3) == draw_seed(7, 3)
    assert len({draw_seed(7, n) for n in range(1000)}) == 1000
    assert draw_seed(7, 3) != draw_seed(8, 3)
    assert _seeded_draws(7, range(5)) == _seeded_draws(7, range(5))  # two processes alike
    assert _seeded_draws(7, range(5)) != _seeded_draws(8, range(5))
    assert len({d["x"] for d in _seeded_draws(7, range(50))}) == 50


def test_make_sampler_builds_the_configured_kind(stub_study: Callable[..., Path]) -> None:
    spec = studyfile.load(stub_study(**this_study(2, "qmc", 1)))
    sampler = make_sampler(spec)
    assert isinstance(sampler, TrialSeededSampler)
    assert sampler.kind is optuna.samplers.QMCSampler


def _start(study_file: Path, url: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "HPSEARCH_STORAGE": url, "TF_CPP_MIN_LOG_LEVEL": "3",
           "HPSEARCH_ARTIFACTS": str(study_file.parent / "artifacts")}
    return subprocess.Popen(interruptible([HPSEARCH, "run", str(study_file), "--threads", "1",
                                           *extra]),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finished(url: str) -> int:
    return sum(t.state.is_finished() for t in study_trials(url, "draws"))


@pytest.mark.long(77)
def test_runs_stopped_by_sigkill_and_ctrl_c_never_draw_a_configuration_again(
    tmp_path: Path,
) -> None:
    """Real processes: a run killed with SIGKILL after two trials, the next stopped with Ctrl-C
    after two more, a third to the end: every configuration drawn once (a retry of the killed
    or interrupted trial keeps its first try's, as it must)."""
    study_file = tmp_path / "draws.toml"
    study_file.write_text(stub_study_text(**this_study(7, "random", 3)))
    url = f"sqlite:///{tmp_path / 'draws.db'}"
    for stop, after in ((signal.SIGKILL, 2), (signal.SIGINT, 4)):
        process = _start(study_file, url)
        try:
            wait_for(lambda: _finished(url) >= after, 240, f"{after} finished trials")
            process.send_signal(stop)
            process.communicate(timeout=120)
        finally:
            process.kill()
    last = _start(study_file, url)
    try:
        _, errors = last.communicate(timeout=300)
    finally:
        last.kill()
    assert last.returncode == 0, errors
    trials = optuna.load_study(study_name="draws", storage=url).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 7
    _assert_no_repeats(trials)
    assert len(_configurations(trials)) >= 7
