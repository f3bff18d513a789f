"""Accuracy against size or speed: studies of several objectives (their Pareto front, read back
by Optuna's own CLI and optuna-dashboard) and studies with a size or latency constraint (trials over
it measured, never trained)."""

from __future__ import annotations

import json
import subprocess
import sys
import wsgiref.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner, Result
from optuna.trial import TrialState

from conftest import stub_study_text
from objectives.goals import Goals
from objectives.record import Key
from search import studyfile
from search.cli import cli
from search.errors import UserError

BIN = Path(sys.executable).parent

OBJECTIVES = ["val_accuracy", "n_params"]


def two_objectives(sampler: str = "tpe", **study: Any) -> str:
    """The stub study with two objectives, accuracy against size (``study`` overrides its
    section)."""
    return stub_study_text(
        study={"name": "pareto", "objectives": OBJECTIVES, **study},
        sampler={"type": sampler, "n_startup_trials": None}, pruner=None,
        training={"max_epochs": 2, "early_stopping_patience": None},
        space={"optimizer": "adam"})


# Two fixed trials on either side of a budget of 100,000 parameters (CIFAR-shaped stub data:
# 3,072 inputs, 10 classes; no BatchNorm): [16] has 49,338, [64, 64] has 201,482.
SMALL_AND_LARGE = [{"label": "small", "hidden_layers": [16]},
                   {"label": "large", "hidden_layers": [64, 64]}]


def constrained(constraints: dict[str, float], n_trials: int = 2) -> str:
    """The stub study with ``constraints`` and the two fixed trials of SMALL_AND_LARGE."""
    return stub_study_text(
        study={"name": "budget", "n_trials": n_trials, "constraints": constraints},
        sampler=None, training={"max_epochs": 2, "early_stopping_patience": None},
        space={"units": {"low": 16, "high": 64}, "batch_norm": False, "optimizer": "adam"},
        fixed_trials=SMALL_AND_LARGE)


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def _problems(write_study: Callable[..., Path], text: str) -> str:
    with pytest.raises(UserError) as caught:
        studyfile.load(write_study(text))
    return str(caught.value)


# --- the study file --------------------------------------------------------------------------


def test_objectives_and_constraints_validate_with_one_line_each(
        write_study: Callable[..., Path]) -> None:
    spec = studyfile.load(write_study(two_objectives()))
    assert spec.study.goals == Goals(("val_accuracy", "n_params"))
    assert spec.study.goals.directions == ["maximize", "minimize"]
    assert spec.study.metric == "val_accuracy" and spec.study.multi_objective

    message = _problems(write_study, two_objectives(objectives=["val_accuracy", "n_parms"]))
    assert "study.objectives[1]" in message and "did you mean 'n_params'?" in message
    message = _problems(write_study, two_objectives(objectives=["n_params", "latency_ms"]))
    assert "exactly one validation metric" in message
    message = _problems(write_study, two_objectives(objectives=["val_accuracy"] * 2))
    assert "each name once" in message
    message = _problems(write_study, two_objectives(metric="val_loss"))
    assert "leave metric out" in message
    message = _problems(write_study, two_objectives(direction="maximize"))
    assert "direction" in message
    message = _problems(write_study, two_objectives("cmaes"))
    assert message.endswith("sampler.type: 'cmaes' takes one objective, but the study has 2 "
                            "(['val_accuracy', 'n_params']); take tpe, nsga2, nsga3, gp or "
                            "random")
    for sampler in ("nsga2", "nsga3", "random", "tpe"):
        studyfile.load(write_study(two_objectives(sampler)))

    budget = constrained({"n_params": 100_000})
    assert studyfile.load(write_study(budget)).study.goals.constraints == {"n_params": 100_000}
    message = _problems(write_study, constrained({"n_param": 3}))
    assert "study.constraints.n_param: " in message and "did you mean 'n_params'?" in message
    message = _problems(write_study, constrained({"n_params": 0}))
    assert "study.constraints.n_params: Input should be greater than 0" in message


def test_a_plain_study_keeps_its_fingerprint(write_study: Callable[..., Path],
                                              stub_study: Callable[..., Path]) -> None:
    """Studies made before objectives and constraints existed resume unchanged."""
    assert set(studyfile.load(stub_study()).fingerprint()) == {
        "objective", "metric", "space"}
    spec = studyfile.load(write_study(two_objectives()))
    assert spec.fingerprint()["objectives"] == ["val_accuracy", "n_params"]


def test_goals_order_values_and_measure_violations() -> None:
    goals = Goals(("n_params", "val_loss", "latency_ms"))
    assert goals.metric == "val_loss" and goals.multi
    assert goals.measures == ("n_params", "latency_ms")
    assert goals.values(0.7, {"n_params": 10.0, "latency_ms": 0.5}) == [10.0, 0.7, 0.5]
    budget = Goals(("val_accuracy",), {"n_params": 100.0})
    assert not budget.multi and budget.measures == ("n_params",)
    assert budget.violations({"n_params": 150.0}) == {"n_params": 0.5}
    assert budget.violations({"n_params": 100.0}) == {"n_params": 0.0}  # at the budget: feasible
    assert Goals().measures == ()
    with pytest.raises(ValueError):
        Goals(("n_params",))


# --- studies that run ------------------------------------------------------------------------


def _dashboard_front(url: str) -> list[int]:
    """The best trials optuna-dashboard's own API serves for the only study."""
    import optuna_dashboard

    app = optuna_dashboard.wsgi(optuna.storages.get_storage(url))

    def get(path: str) -> Any:
        environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
        wsgiref.util.setup_testing_defaults(environ)
        status: list[str] = []
        body = b"".join(app(environ, lambda code, headers, *rest: status.append(code)))
        assert status[0].startswith("200"), status
        return json.loads(body)

    (summary,) = get("/api/studies")["study_summaries"]
    detail = get(f"/api/studies/{summary['study_id']}")
    return sorted(trial["number"] for trial in detail["best_trials"])


def test_a_two_objective_study_end_to_end(write_study: Callable[..., Path], storage_url: str,
                                          tmp_path: Path) -> None:
    result = invoke("run", str(write_study(two_objectives())), "--storage", storage_url)
    assert result.exit_code == 0, result.output
    assert "Pareto front:" in result.stdout

    study = optuna.load_study(study_name="pareto", storage=storage_url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_accuracy", "n_params"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3
    for trial in complete:  # the values are what the trial recorded
        assert trial.values[0] == pytest.approx(trial.user_attrs["val_accuracy"], abs=1e-6)
        assert trial.values[1] == trial.user_attrs["n_params"]
        # each epoch's value is visible, since Optuna refuses intermediate values here
        assert trial.user_attrs[Key.EPOCH_VALUES] == trial.user_attrs["history"]["val_accuracy"]
        assert not trial.intermediate_values
    front = sorted(t.number for t in study.best_trials)

    cli_front = subprocess.run(
        [BIN / "optuna", "best-trials", "--storage", storage_url, "--study-name", "pareto",
         "-f", "json"], capture_output=True, text=True, timeout=120)
    assert cli_front.returncode == 0, cli_front.stderr
    assert sorted(t["number"] for t in json.loads(cli_front.stdout)) == front
    assert _dashboard_front(storage_url) == front

    best = invoke("best", "--storage", storage_url)
    assert best.exit_code == 0, best.output
    assert f"Pareto front of pareto (maximize val_accuracy, minimize n_params): {len(front)}" \
        in best.stdout
    shown = [int(line.split()[1]) for line in best.stdout.splitlines()
             if line.startswith("│ ") and line.split()[1].isdigit()]
    assert sorted(shown) == front
    status = invoke("status", "--storage", storage_url)
    assert "(maximize val_accuracy, minimize n_params)" in status.stdout
    rows = json.loads(invoke("trials", "--storage", storage_url, "--format", "json").stdout)
    assert [row["n_params"] for row in rows] == [str(t.user_attrs["n_params"]) for t in
                                                 study.trials]
    refused = invoke("evaluate", "--storage", storage_url, "--output", str(tmp_path / "e"))
    assert refused.exit_code == 1
    assert "pick a trial of its Pareto front with --trial N" in refused.output
    report = invoke("report", "--storage", storage_url, "--output", str(tmp_path / "report"))
    assert report.exit_code == 0, report.output
    assert "Pareto front" in report.stdout
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "Pareto front (maximize val_accuracy, minimize n_params): " in markdown


def test_a_budget_study_never_trains_a_trial_over_it(write_study: Callable[..., Path],
                                                     tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'budget.db'}"
    path = write_study(constrained({"n_params": 100_000}))
    result = invoke("run", str(path), "--storage", url)
    assert result.exit_code == 0, result.output
    assert "trial 1 not trained: over the study's constraints (n_params 201482 > 100000)" \
        in result.stderr
    small, large = optuna.load_study(study_name="budget", storage=url).trials
    assert small.state == TrialState.COMPLETE and small.user_attrs["n_params"] == 49338
    assert small.constraints["n_params"] < 0
    assert large.state == TrialState.PRUNED
    assert large.user_attrs["stop_reason"] == "infeasible"
    assert large.user_attrs["epochs_run"] == 0 and "history" not in large.user_attrs
    assert large.constraints["n_params"] == pytest.approx((201482 - 100000) / 100000)
    best = invoke("best", "--storage", url)
    assert "best trial of budget: trial 0," in best.stdout

    # over a latency constraint no trial is feasible: none is trained, and `best` says so
    url = f"sqlite:///{tmp_path / 'fast.db'}"
    result = invoke("run", str(write_study(constrained({"latency_ms": 1e-9}), name="fast.toml")),
                    "--storage", url)
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="budget", storage=url).trials
    assert [t.user_attrs["stop_reason"] for t in trials] == ["infeasible"] * 2
    assert all(t.user_attrs["latency_ms"] > 0 and t.user_attrs["latency_ms_batch256"] > 0
               for t in trials)
    none = invoke("best", "--storage", url)
    assert none.exit_code == 1
    assert "has no complete feasible trial yet" in none.output


def test_latency_is_measured_on_the_saved_model_form() -> None:
    """Raw images in (the preprocessing included), per image, at batch 1 and at batch 256."""
    from objectives.data import make_stub
    from objectives.latency import LARGE_BATCH, measure
    from objectives.model import build_model

    x, _, _, _ = make_stub(0, n_train=10, n_test=10)
    params = {"n_layers": 1, "units_l0": 32, "activation": "relu", "batch_norm": False,
              "dropout": 0.0, "l2": 0.0, "initializer": "he_normal"}
    model = build_model(params, x.shape[1:], 10)
    measured = measure(model)
    assert set(measured) == {"latency_ms", f"latency_ms_batch{LARGE_BATCH}"}
    assert all(value > 0 for value in measured.values())
    # The same measure of a model with 40 times the work reads slower at both batch sizes
    # (the fastest round of each: what else runs on the machine only adds to slower rounds).
    larger = build_model({**params, "n_layers": 2, "units_l0": 1024, "units_l1": 1024},
                         x.shape[1:], 10)
    assert larger.count_params() > 40 * model.count_params()
    assert all(slower > faster for slower, faster in zip(
        measure(larger).values(), measured.values())), (measure(larger), measured)


# --- pruning by cost -------------------------------------------------------------------------


def test_the_cost_aware_rule_judges_a_trial_only_against_trials_that_cost_no_more() -> None:
    from objectives.pruning import CostAwareRule, Peer

    rule = CostAwareRule(percentile=50.0, n_startup_trials=2, n_warmup_steps=1, n_min_trials=2)
    # a constructed study: three small trials learn well, one large trial learned little
    small = [Peer({"n_params": 100}, [0.3, 0.5, 0.6]), Peer({"n_params": 120}, [0.35, 0.55, 0.6]),
             Peer({"n_params": 150}, [0.3, 0.45, 0.5])]
    large = Peer({"n_params": 1000}, [0.2, 0.3, 0.35])
    peers = [*small, large]
    # a clearly dominated trial: costlier than the small ones and far behind them
    assert rule.prunes(1, [0.1, 0.12], {"n_params": 900}, peers, maximize=True)
    # the same curve at a lower cost than every completed trial: nothing costs no more
    assert not rule.prunes(1, [0.1, 0.12], {"n_params": 50}, peers, maximize=True)
    # in the warm-up, and below the minimum of comparable trials, nothing is judged
    assert not rule.prunes(0, [0.1], {"n_params": 900}, peers, maximize=True)
    assert not rule.prunes(1, [0.1, 0.12], {"n_params": 110}, peers, maximize=True)
    # a trial of the final front (the cheapest good one) is never stopped on the way
    for step in range(3):
        assert not rule.prunes(step, small[0].values[:step + 1], small[0].costs, peers,
                               maximize=True)
    # losses: lower is better
    losses = [Peer({"n_params": 1}, [2.0, 1.5]), Peer({"n_params": 1}, [2.1, 1.4])]
    assert rule.prunes(1, [2.3, 2.2], {"n_params": 5}, losses, maximize=False)
    assert not rule.prunes(1, [2.0, 1.3], {"n_params": 5}, losses, maximize=False)


# Two small trials that learn and a large one that cannot, accuracy against size.
DOMINATED = stub_study_text(
    study={"name": "budget", "n_trials": 3, "objectives": OBJECTIVES},
    sampler=None, pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
    training={"max_epochs": 4, "early_stopping_patience": 4},
    space={"units": {"low": 16, "high": 64}, "batch_norm": False, "optimizer": "adam",
           "learning_rate": {"low": 1e-8, "high": 1e-2, "log": True}},
    fixed_trials=[{"label": "small-2", "hidden_layers": [20], "learning_rate": 0.003},
                  {"label": "small", "hidden_layers": [16], "learning_rate": 0.003},
                  {"label": "large", "hidden_layers": [64, 64], "learning_rate": 1e-7}])


def test_a_two_objective_study_prunes_a_dominated_trial(write_study: Callable[..., Path],
                                                        tmp_path: Path) -> None:
    """Two small trials that learn, then a large one that cannot (a learning rate of 1e-7):
    stopped after its warm-up, against the smaller trials only."""
    text = DOMINATED
    url = f"sqlite:///{tmp_path / 'pruned.db'}"
    result = invoke("run", str(write_study(text)), "--storage", url)
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="budget", storage=url).trials
    assert [t.user_attrs["label"] for t in trials] == ["small-2", "small", "large"]
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE,
                                         TrialState.PRUNED]
    large = trials[2]
    assert large.user_attrs["stop_reason"] == "pruned"
    assert large.user_attrs["epochs_run"] == 2  # judged from its second epoch on
    assert len(large.user_attrs[Key.EPOCH_VALUES]) == 2
    assert "trial 2 pruned at epoch 2" in result.stderr
