"""Reading a stored study for people: its state, its trials as a table, its best trial."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from objectives.record import Key, evaluations
from search.errors import UserError, shown
from search.results import fronts

if TYPE_CHECKING:
    from search.results.evaluate import EvaluationRun

METRIC_ATTRS = ("train_accuracy", "train_loss", "val_accuracy", "val_loss", "test_accuracy",
                "test_loss")
LATENCY_ATTRS = ("latency_ms", "latency_ms_batch256")  # measured where a study needs them


def pick_study(storage: optuna.storages.BaseStorage, name: str | None) -> optuna.Study:
    """The study called ``name``, or the only study in the storage when no name is given."""
    names = optuna.study.get_all_study_names(storage)
    if name is None:
        if len(names) == 1:
            name = names[0]
        elif not names:
            raise UserError("the storage holds no studies")
        else:
            raise UserError(f"the storage holds several studies; name one with --study: {names}")
    elif name not in names:
        held = ", ".join(shown(n) for n in names[:10]) + (
            f", and {len(names) - 10} more" if len(names) > 10 else "")
        raise UserError(f"no study {shown(name)} in the storage; it holds [{held}]")
    return optuna.load_study(study_name=name, storage=storage)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value.is_integer() and abs(value) >= 1000:  # a count: n_params as an objective
            return str(int(value))
        return f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


def _age(trial: FrozenTrial) -> str:
    if trial.datetime_start is None:
        return "-"
    start = trial.datetime_start
    end = trial.datetime_complete or dt.datetime.now()
    return f"{(end - start).total_seconds():.1f}"


def _how_ended(trial: FrozenTrial) -> str:
    if trial.state == TrialState.PRUNED:
        return "pruned"
    return str(trial.user_attrs.get(Key.STOP_REASON, trial.state.name.lower()))


def _resumed(attrs: dict[str, Any]) -> str:
    """``9@12``: this trial carried on trial 9 from the 12 epochs its checkpoint held (``9@0``:
    it started over); empty for a trial that carried nothing on."""
    if Key.RESUMES not in attrs:
        return ""
    return f"{attrs[Key.RESUMES]}@{attrs.get(Key.RESUMED_AT, 0)}"


def trials_rows(study: optuna.Study) -> tuple[list[str], list[list[str]]]:
    """The trials table: one row per trial, every parameter and recorded metric."""
    trials = study.get_trials(deepcopy=False)
    param_names: list[str] = []
    for trial in trials:
        for name in trial.params:
            if name not in param_names:
                param_names.append(name)
    evaluated = evaluations(study)
    # Optuna's one value; several objectives are the columns of their own names (the
    # validation metric, n_params, latency_ms), recorded on every trial
    objectives = [] if fronts.multi_objective(study) else ["value"]
    costs = [name for name in LATENCY_ATTRS if any(name in t.user_attrs for t in trials)]
    header = ["number", "label", "state", *objectives, *METRIC_ATTRS,
              "evaluated_test_accuracy", "n_params", *costs, "epochs", "seconds",
              Key.SECONDS_PER_EPOCH, Key.PREDICTED_EPOCH_SECONDS, "ended", "resumes",
              *param_names]
    rows = []
    for trial in trials:
        attrs = trial.user_attrs
        rows.append([
            str(trial.number), str(trial.user_attrs.get(Key.LABEL, "")), trial.state.name.lower(),
            *(_fmt(trial.value) for _ in objectives),
            *(_fmt(attrs.get(name)) for name in METRIC_ATTRS),
            _fmt(evaluated.get(trial.number, {}).get("test_accuracy")),
            _fmt(attrs.get("n_params")), *(_fmt(attrs.get(name)) for name in costs),
            _fmt(attrs.get(Key.EPOCHS_RUN)), _age(trial),
            _fmt(attrs.get(Key.SECONDS_PER_EPOCH)), _fmt(attrs.get(Key.PREDICTED_EPOCH_SECONDS)),
            _how_ended(trial), _resumed(attrs),
            *(_fmt(trial.params.get(name)) for name in param_names),
        ])
    return header, rows


def print_trials(study: optuna.Study, console: Console, output_format: str) -> None:
    header, rows = trials_rows(study)
    if output_format == "json":
        console.print_json(json.dumps([dict(zip(header, row)) for row in rows]))
        return
    if output_format == "csv":
        for line in [header, *rows]:
            console.print(",".join(line), soft_wrap=True, markup=False, highlight=False)
        return
    table = Table(title=f"study {study.study_name}")
    for name in header:
        table.add_column(name, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_status(study: optuna.Study, console: Console) -> None:
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    goals = ", ".join(f"{direction} {name}" for name, direction in fronts.summary(study).items())
    console.print(f"study {study.study_name} ({goals}): {len(trials)} trials", markup=False)
    console.print("  " + ", ".join(f"{state} {n}" for state, n in sorted(counts.items())),
                  markup=False)
    best = fronts.best_trials(study)
    if best and fronts.multi_objective(study):
        console.print(f"  Pareto front: trials {', '.join(str(t.number) for t in best)}",
                      markup=False)
    elif best:
        console.print(f"  best: trial {best[0].number}, value {_fmt(best[0].value)}",
                      markup=False)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    for trial in running:
        worker = trial.user_attrs.get(Key.WORKER, "?")
        console.print(f"  running: trial {trial.number} on {worker}, {_age(trial)} s",
                      markup=False)


def print_best(study: optuna.Study, console: Console) -> None:
    """The best feasible trial in full, or the Pareto front as a table."""
    front = fronts.best_trials(study)
    if not front:
        feasible = "feasible " if any(t.constraints for t in study.get_trials(
            deepcopy=False)) else ""
        raise UserError(f"study {study.study_name!r} has no complete {feasible}trial yet")
    if fronts.multi_objective(study):
        _print_front(study, front, console)
        return
    best = front[0]
    console.print(f"best trial of {study.study_name}: trial {best.number}, value "
                  f"{_fmt(best.value)}", markup=False)
    console.print("parameters:", markup=False)
    for name, value in best.params.items():
        console.print(f"  {name} = {_fmt(value, 6)}", markup=False)
    console.print("metrics:", markup=False)
    for name in (*METRIC_ATTRS, Key.N_PARAMS, *LATENCY_ATTRS, Key.BEST_EPOCH, Key.EPOCHS_RUN,
                 Key.SECONDS_PER_EPOCH, Key.PREDICTED_EPOCH_SECONDS, Key.SIMULATED_SECONDS,
                 Key.CONFIGURATION, Key.STOP_REASON):
        if name in best.user_attrs:
            console.print(f"  {name} = {_fmt(best.user_attrs[name])}", markup=False)
    evaluation = evaluations(study).get(best.number)
    if evaluation is not None:
        console.print(f"evaluated (hpsearch evaluate, retrained on {evaluation['mode']}): test "
                      f"accuracy {_fmt(evaluation['test_accuracy'])}, loss "
                      f"{_fmt(evaluation['test_loss'])}, in {evaluation['folder']}", markup=False)


def _print_front(study: optuna.Study, front: list[FrozenTrial], console: Console) -> None:
    """The Pareto front: one row per trial, best validation metric first."""
    names = fronts.names(study)
    goals = ", ".join(f"{direction} {name}" for name, direction in fronts.summary(study).items())
    table = Table(title=f"Pareto front of {study.study_name} ({goals}): {len(front)} trials "
                        "that no other trial beats on every objective")
    params = [name for name in front[0].params if all(name in t.params for t in front)]
    for column in ("trial", *names, "test_accuracy", "epochs", *params):
        table.add_column(column, no_wrap=True)
    for trial in front:
        table.add_row(str(trial.number), *(_fmt(v) for v in trial.values),
                      _fmt(trial.user_attrs.get("test_accuracy")),
                      _fmt(trial.user_attrs.get(Key.EPOCHS_RUN)),
                      *(_fmt(trial.params[name]) for name in params))
    console.print(table)
    console.print("each one's parameters in full: hpsearch trials; retrain one: hpsearch "
                  "evaluate --trial N", markup=False)


def print_evaluation(run: EvaluationRun, console: Console) -> None:
    """The test figures of one evaluation: accuracy and loss, confusion matrix, report."""
    result = run.result
    console.print(f"trial {run.trial.number} retrained on {run.mode} ({run.epochs} epochs, "
                  f"{run.seconds:.1f} s), evaluated once on the test split:", markup=False)
    console.print(f"  test accuracy {result.accuracy:.4f}, test loss {result.loss:.4f} "
                  f"({len(result.confusion.sum(axis=1))} classes, "
                  f"{int(result.confusion.sum())} images)", markup=False)
    table = Table(title="confusion matrix (rows: true, columns: predicted)")
    table.add_column("")
    for name in result.class_names:
        table.add_column(name[:6], justify="right")
    for name, row in zip(result.class_names, result.confusion):
        table.add_row(name, *(str(int(v)) for v in row))
    console.print(table)
    console.print(result.report_text, markup=False, highlight=False)
    console.print(f"saved: {run.folder} (model.keras, curves.png, confusion_matrix.png, "
                  "classification_report.txt, metrics.json)", markup=False)
