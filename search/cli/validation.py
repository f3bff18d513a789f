"""What ``hpsearch validate`` prints: the study file checked completely, then the resolved
study, its sections and its search space."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from search.errors import UserError


def print_validation(study_file: Path, console: Any) -> None:
    """Check ``study_file`` as ``run`` would before anything runs, and print what it resolves to.

    Raises:
        UserError: every problem of the file, or a data path missing on this machine, or a
            sampler or pruner that cannot be made here.
    """
    from rich.table import Table

    from search import studyfile

    spec = studyfile.load(study_file)
    if spec.data.path is not None and not Path(spec.data.path).expanduser().exists():
        raise UserError(f"{study_file}: data.path: {spec.data.path} does not exist on this "
                        "machine (run and worker take another with --data-path)")
    from search.samplers import make_pruner, make_sampler

    make_sampler(spec), make_pruner(spec)  # what run would refuse (a missing package)
    study = spec.study
    budget = " and ".join(
        part for part in (f"{study.n_trials} trials" if study.n_trials else "",
                          f"{study.timeout:g} s" if study.timeout else "") if part
    )
    console.print(f"{study_file}: valid", markup=False)
    goals = study.goals
    aims = ", ".join(f"{direction} {name}"
                     for name, direction in zip(goals.objectives, goals.directions))
    console.print(
        f"study {spec.name}: {aims}, budget {budget}, seed {study.seed}, objective "
        f"{study.objective}", markup=False)
    if goals.multi:
        rule = spec.goals.pruning
        pruning = (f"trials pruned by the {spec.pruner.type} rule among completed trials of no "
                   f"larger {' and '.join(goals.cost_objectives)} (Optuna's own pruners cannot "
                   "take several objectives)" if rule is not None else "no pruning")
        console.print(f"several objectives: the study keeps their Pareto front (hpsearch best); "
                      f"{pruning}", markup=False)
    if goals.constraints:
        console.print("constraints: " + ", ".join(f"{name} <= {limit:g}" for name, limit
                                               in goals.constraints.items())
                      + " (a trial over them is measured, not trained)", markup=False)
    sections: list[tuple[str, Any]] = [("sampler", spec.sampler), ("pruner", spec.pruner),
                                       ("data", spec.data)]
    if not spec.tabular:  # a table's trials do not train
        sections.append(("training", spec.training))
    for title, section in sections:
        values = ", ".join(f"{k}={v}" for k, v in section.model_dump().items() if k != "type")
        kind = getattr(section, "type", "")
        console.print(f"{title}: {kind}{' ' if kind and values else ''}{values}", markup=False)
    if spec.fixed_trials:
        console.print("first trials: " + ", ".join(f.label for f in spec.fixed_trials),
                      markup=False)
    elif spec.tabular:
        console.print("first trials: sampled (the reference configurations are the Keras "
                      "MLP's)", markup=False)
    elif study.warm_start:
        from search.studies import warm_starts

        starts = warm_starts(spec)
        if not starts:
            console.print("first trials: sampled (the space holds none of the reference "
                          "configurations)", markup=False)
        for start, epochs in starts:
            console.print(f"first trials: a reference configuration (warm_start, {epochs} "
                          "epochs), " + ", ".join(f"{k}={v}" for k, v in start.items()),
                          markup=False)
    table = Table(title="search space" + (f" (the {spec.data.dataset} table's)"
                                          if spec.tabular else ""))
    for column in ("parameter", "distribution", "sampled when"):
        table.add_column(column)
    if spec.tabular:
        from objectives.tabular import describe

        rows = describe(spec.data.dataset)
    else:
        rows = spec.space.describe()
    for row in rows:
        table.add_row(*row)
    console.print(table)
