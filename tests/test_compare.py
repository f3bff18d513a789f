"""`hpsearch compare` and the report's comparison: groups, numbers and the statements they
carry, on constructed studies (every number known) and on a real stub study."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from search.cli import cli
from search.results.compare import MIN_TRIALS, Comparison, Regularization, answers, epochs_to_95
from search.results.compare_view import rows

SPACE = {
    "optimizer": CategoricalDistribution(["adam", "sgd", "rmsprop"]),
    "batch_norm": CategoricalDistribution([True, False]),
    "n_layers": IntDistribution(1, 4),
    "units_l0": IntDistribution(16, 2048, log=True),
    "dropout": FloatDistribution(0.0, 0.5),
    "l2": FloatDistribution(1e-7, 1e-3, log=True),
}


def _trial(value: float, *, optimizer: str, batch_norm: bool, n_layers: int, units: int,
           dropout: float, gap: float, epochs: int = 10, max_epochs: int = 20) -> Any:
    curve = [value * min(1.0, (e + 1) / 4) for e in range(epochs)]  # 95 % reached at epoch 4
    return create_trial(
        state=TrialState.COMPLETE, value=value,
        params={"optimizer": optimizer, "batch_norm": batch_norm, "n_layers": n_layers,
                "units_l0": units, "dropout": dropout, "l2": 1e-5},
        distributions=SPACE,
        user_attrs={"history": {"val_accuracy": curve}, "val_accuracy": value,
                    "train_accuracy": value + gap, "epochs_run": epochs,
                    "max_epochs": max_epochs,
                    "stop_reason": "early_stopped" if epochs < max_epochs else "completed"})


def constructed() -> optuna.Study:
    """adam clearly ahead of sgd (6 trials each, no overlap); rmsprop 2 trials; BatchNorm on
    and off interleaved (no difference); more dropout, less gap."""
    study = optuna.create_study(direction="maximize")
    for i in range(6):
        study.add_trial(_trial(0.55 + 0.01 * i, optimizer="adam", batch_norm=i % 2 == 0,
                               n_layers=2, units=256, dropout=0.05 * i, gap=0.3 - 0.05 * i))
        study.add_trial(_trial(0.40 + 0.01 * i, optimizer="sgd", batch_norm=i % 2 == 1,
                               n_layers=3, units=1024, dropout=0.05 * i + 0.01,
                               gap=0.29 - 0.05 * i))
    for i in range(2):
        study.add_trial(_trial(0.5, optimizer="rmsprop", batch_norm=True, n_layers=1,
                               units=64, dropout=0.2, gap=0.1, epochs=20))
    return study


def _numbers(text: str) -> list[str]:
    return re.findall(r"\d+\.\d{4}", text)


def test_statements_say_what_the_table_carries() -> None:
    found = answers(constructed())
    by = {c.parameter: c for c in found.comparisons}
    assert set(by) == {"optimizer", "batch_norm", "depth", "width"}
    optimizer = by["optimizer"]
    table = {row[0]: row for row in rows(optimizer, maximize=True)}
    assert table["adam"][1:4] == ["6", "0.6000", "0.5750"]
    assert table["sgd"][1:4] == ["6", "0.4500", "0.4250"]
    assert table["rmsprop"][1] == "2"
    assert table["adam"][4] == "4"  # epochs to 95 % of its own best
    assert optimizer.statement.startswith("optimizer: adam did better than sgd, the next best")
    # every number the statement quotes is in the table, as the table shows it
    assert set(_numbers(optimizer.statement)) <= {cell for row in table.values() for cell in row}
    assert optimizer.p_value is not None and optimizer.p_value < 0.05
    assert "rmsprop" not in optimizer.statement  # 2 trials: never compared
    assert by["batch_norm"].statement.startswith(
        "batch_norm: no clear difference between")
    assert by["depth"].statement.startswith("depth: 2 layers did better than 3 layers")
    assert [g.label for g in by["width"].groups] == ["1-128 units", "129-512 units",
                                                     "513-1024 units"]
    dropout = next(r for r in found.regularization if r.parameter == "dropout")
    assert dropout.rho is not None and dropout.rho < 0
    assert "trials with more dropout overfit less" in dropout.statement
    l2 = next(r for r in found.regularization if r.parameter == "l2")
    assert "did not vary" in l2.statement
    assert found.savings is not None
    assert (found.savings.early_stopping, found.savings.early_stopped) == (12 * 10, 12)
    # Every test's p-value is adjusted for all the study's tests (Benjamini-Hochberg), and a
    # statement claims a difference exactly where the adjusted value is below 0.05.
    from scipy.stats import false_discovery_control

    every: list[Comparison | Regularization] = [*found.comparisons, *found.regularization]
    tested = [t for t in every if t.p_value is not None]
    expected = false_discovery_control([t.p_value for t in tested], method="bh")
    assert [t.adjusted_p for t in tested] == pytest.approx(list(expected))
    for test in tested:
        assert f"adjusted for the study's {len(tested)} tests" in test.statement
        claims = "did better" in test.statement or "overfit" in test.statement
        assert test.adjusted_p is not None and claims == (test.adjusted_p < 0.05), test.statement
    bn = by["batch_norm"]
    assert bn.p_value is not None and bn.adjusted_p is not None and bn.adjusted_p >= bn.p_value


def test_too_few_trials_say_so() -> None:
    study = optuna.create_study(direction="maximize")
    for i in range(MIN_TRIALS - 1):
        study.add_trial(_trial(0.5 + 0.01 * i, optimizer="adam", batch_norm=True, n_layers=2,
                               units=256, dropout=0.1, gap=0.1))
        study.add_trial(_trial(0.4, optimizer="sgd", batch_norm=True, n_layers=2, units=256,
                               dropout=0.1, gap=0.1))
    by = {c.parameter: c for c in answers(study).comparisons}
    assert by["optimizer"].statement == (
        f"optimizer: not enough trials to compare (each value needs {MIN_TRIALS} complete "
        f"trials; adam {MIN_TRIALS - 1}, sgd {MIN_TRIALS - 1})")


def test_epochs_to_95() -> None:
    assert epochs_to_95([0.1, 0.5, 0.96, 1.0], maximize=True) == 3
    assert epochs_to_95([3.0, 2.0, 1.04, 1.0], maximize=False) == 3
    assert epochs_to_95([], maximize=True) is None


def test_compare_and_the_report_on_a_stub_study(stub_study: Callable[..., Path],
                                                tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'compare.db'}"
    runner = CliRunner()
    ran = runner.invoke(cli, ["run", str(stub_study()), "--storage", url])
    assert ran.exit_code == 0, ran.output
    shown = runner.invoke(cli, ["compare", "--storage", url])
    assert shown.exit_code == 0, shown.output
    assert "study tiny: 3 complete trials compared by val_accuracy" in shown.stdout
    # three trials (the warm starts fix most choices) are too few for any statement
    statements = [line for line in shown.stdout.splitlines()
                  if re.match(r"^(depth|optimizer|activation): ", line)]
    assert len(statements) == 3, shown.stdout
    assert all(re.search(r": (not enough trials to compare|all 3 trials took \S+; nothing "
                         r"to compare)", line) for line in statements), statements
    assert "did better" not in shown.stdout and "no clear difference" not in shown.stdout
    report = runner.invoke(cli, ["report", "--storage", url, "--output", str(tmp_path / "r")])
    assert report.exit_code == 0, report.output
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<h2>What the trials say</h2>" in page
    assert all(line in page for line in statements)


# A study whose one trial diverges (a learning rate of 1e6): overrides of the stub study.
FAILING: dict[str, Any] = dict(
    study={"name": "diverges", "n_trials": 1, "seed": None, "warm_start": False},
    sampler=None, data={"validation_fraction": None}, training={"early_stopping_patience": None},
    space={"n_layers": 1, "units": 32, "activation": "relu", "batch_norm": False,
           "optimizer": "sgd", "momentum": 0.9, "nesterov": False, "learning_rate": 1e6},
)


def test_a_study_of_failed_trials_is_read_as_it_is(
    stub_study: Callable[..., Path], tmp_path: Path
) -> None:
    """Every trial diverged: compare counts the epochs they trained, the report embeds no
    empty Optuna plot, evaluate says the trial failed (it said "trial 0 is fail")."""
    url = f"sqlite:///{tmp_path / 'd.db'}"
    runner = CliRunner()
    ran = runner.invoke(cli, ["run", str(stub_study(**FAILING)), "--storage", url])
    assert ran.exit_code == 1 and "stopped after 5 failed trials in a row" in ran.stderr
    trials = optuna.load_study(study_name="diverges", storage=url).trials
    assert {t.state for t in trials} == {TrialState.FAIL}
    epochs = sum(t.user_attrs["epochs_run"] for t in trials)
    assert epochs >= len(trials)
    compared = runner.invoke(cli, ["compare", "--storage", url])
    assert compared.exit_code == 0, compared.output
    assert f"epochs trained: {epochs};" in compared.stdout
    report = runner.invoke(cli, ["report", "--storage", url, "--output",
                                 str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    assert "Optuna's" not in report.stdout
    assert "Optuna's" not in (tmp_path / "report" / "report.html").read_text()
    evaluated = runner.invoke(cli, ["evaluate", "--storage", url, "--trial", "0"])
    assert evaluated.exit_code == 1
    assert evaluated.stderr.strip() == (
        "Error: trial 0 failed: only a complete trial can be evaluated")
