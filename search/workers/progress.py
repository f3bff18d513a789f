"""What a run shows while it runs (a progress bar on a terminal) and the summary at the end."""

from __future__ import annotations

import html
import math
import sys
import time
from types import TracebackType
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from objectives.record import maximizes
from search.results import fronts
from search.workers.outcomes import FINISHED, count_states
from search.workers.retries import stopped_before_their_time


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (where output cells show rich displays)."""
    if "ipykernel" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and "IPKernelApp" in shell.config


class _ProgressLine:
    """A notebook's progress display: one line, replaced in place as trials end."""

    def __init__(self, done: int, target: int | None, detail: str, seconds: float) -> None:
        self.done, self.target, self.detail, self.seconds = done, target, detail, seconds

    def _elapsed(self) -> str:
        minutes, seconds = divmod(int(self.seconds), 60)
        return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"

    def __repr__(self) -> str:
        total = "?" if self.target is None else str(self.target)
        return f"trials {self.done}/{total}  {self.detail}  {self._elapsed()}"

    def _repr_html_(self) -> str:
        bar = ("" if self.target is None else
               f'<progress value="{self.done}" max="{self.target}" '
               'style="width:16em;vertical-align:middle"></progress> ')
        return f"<div><code>{bar}{html.escape(repr(self))}</code></div>"


class TrialProgress:
    """A progress display of finished trials with pruned, failed and best-so-far counts.

    On a terminal a progress bar; in a Jupyter notebook one line updated in place; in a pipe
    or a log file nothing, since the per-trial log lines say the same.
    """

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.console = Console(stderr=True)
        self.progress: Progress | None = None
        self.task: Any = None
        self.cell: Any = None  # the notebook's display handle
        self.target: int | None = None
        self.started = time.monotonic()

    def __enter__(self) -> TrialProgress:
        return self

    def start(self, study: optuna.Study, target: int | None) -> None:
        self.target = target
        if in_notebook():
            from IPython.display import display

            self.cell = display(_ProgressLine(0, target, "", 0.0), display_id=True)
            self.update(study)
            return
        if not self.console.is_terminal:
            return
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
            console=self.console, transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("trials", total=target, detail="")
        self.update(study)

    def update(self, study: optuna.Study) -> None:
        if self.progress is None and self.cell is None:
            return
        counts = count_states(study.get_trials(deepcopy=False))
        finished = sum(counts[state] for state in FINISHED)
        best = _best_value(study)
        detail = (f"pruned {counts[TrialState.PRUNED]}  failed {counts[TrialState.FAIL]}  "
                  f"best {self.metric} {'-' if best is None else f'{best:.4f}'}")
        if self.cell is not None:
            self.cell.update(_ProgressLine(finished, self.target, detail,
                                           time.monotonic() - self.started))
            return
        assert self.progress is not None
        self.progress.update(self.task, completed=finished, detail=detail)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.progress is not None:
            self.progress.stop()


def _best_value(study: optuna.Study) -> float | None:
    """The best feasible validation metric so far (also of a multi-objective study)."""
    best = fronts.best_trials(study)
    values = [fronts.metric_value(study, trial) for trial in best]
    finite = [v for v in values if v is not None]
    if not finite:
        return None
    index = fronts.metric_index(study)
    maximize = maximizes(study, index)
    return max(finite) if maximize else min(finite)


def print_summary(study: optuna.Study, console: Console, storage: str, *, ran: int) -> None:
    trials = study.get_trials(deepcopy=False)
    counts = count_states(trials)
    stopped = stopped_before_their_time(trials)
    console.print(
        f"study {study.study_name}: ran {ran} trials; {counts[TrialState.COMPLETE]} complete, "
        f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed in all"
        + (f" ({len(stopped)} stopped by the user or the time budget, to run again first "
           "when the study next runs)" if stopped else ""),
        markup=False, highlight=False,
    )
    best = fronts.best_trials(study)
    if not best or any(math.isnan(v) for v in best[0].values):
        console.print("no complete trial yet", markup=False)
    elif fronts.multi_objective(study):
        console.print(f"Pareto front: {len(best)} trials (hpsearch best shows them):",
                      markup=False, highlight=False)
        for trial in best:
            console.print(f"  trial {trial.number}: {fronts.values_text(study, trial)}",
                          markup=False, highlight=False)
    else:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in best[0].params.items())
        console.print(f"best: trial {best[0].number}, value {best[0].values[0]:.4f}: {params}",
                      markup=False, highlight=False)
    console.print(f"storage: {storage}  (hpsearch dashboard --storage '{storage}')",
                  markup=False, highlight=False)
    sys.stdout.flush()
