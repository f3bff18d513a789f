"""The ``hpsearch`` command.

User mistakes end as one line on stderr per problem and a non-zero exit (2 for usage errors),
never a traceback; ``--debug`` shows the traceback of an unexpected error. Nothing here imports
TensorFlow: only ``run`` does, through the objective, once the study file has been validated.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import click

from search.errors import UserError

logger = logging.getLogger("search")

# What an interrupted command tells the user, after "interrupted" (set by the command).
ON_INTERRUPT = "on_interrupt"
STARTED = "started"  # time.monotonic() when the command started


def _what_the_stop_did() -> str:
    from objectives import interrupts

    failed = interrupts.failed_trials
    return (f"trial {', '.join(map(str, failed))} marked failed" if failed
            else "no trial was running")


def _resumable() -> str:
    """What a stopped run or worker did, and what to do next."""
    return f": {_what_the_stop_did()}; run the same command to resume the study"


def _worker_of_run() -> str:
    """What one of ``run --workers``'s workers did; the run itself says what to do next."""
    return f" (worker {os.getpid()}): {_what_the_stop_did()}"


WORKERS_STOPPED = ": every worker stopped; run the same command to resume the study"

STORAGE_HELP = "Storage URL (default: $HPSEARCH_STORAGE, else sqlite:///hpsearch.db)."


class HpsearchGroup(click.Group):
    """Turns user errors into one-line messages and Ctrl-C into a clean exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            from objectives import interrupts

            told = (ctx.obj or {}).get(ON_INTERRUPT, "")
            click.echo(f"interrupted{told() if callable(told) else told}", err=True)
            ctx.exit(interrupts.exit_code())
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise click.ClickException(
                f"internal error: {type(exc).__name__}: {exc} (run with --debug for the "
                "traceback)"
            ) from None


@click.group(cls=HpsearchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.option("-v", "--verbose", is_flag=True, help="Also show Optuna's and Keras's own logs.")
@click.version_option(package_name="hpsearch")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """hpsearch: hyperparameter search for Keras MLPs, on Optuna.

    Describe a study in a TOML file (see studies/), then `hpsearch run FILE`.
    """
    ctx.ensure_object(dict)
    ctx.obj[STARTED] = time.monotonic()
    ctx.obj["debug"] = debug
    _setup_logging(verbose or debug)


def _setup_logging(verbose: bool) -> None:
    """Our own lines at INFO; Optuna's (which repeat ours) and TensorFlow's only when verbose."""
    import os

    import optuna
    from rich.console import Console
    from rich.logging import RichHandler

    console = Console(stderr=True)
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, show_level=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("search", "objectives"):
        named = logging.getLogger(name)
        named.handlers[:] = [handler]
        named.setLevel(logging.DEBUG if verbose else logging.INFO)
        named.propagate = False
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.ERROR)
    # TensorFlow's Python warnings (retracing, one model per trial) are not the user's concern.
    logging.getLogger("tensorflow").setLevel(logging.NOTSET if verbose else logging.ERROR)
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")


def _stdout() -> Any:
    from rich.console import Console

    # A pipe gets full-width lines rather than rich's 80 columns.
    console = Console()
    return console if console.is_terminal else Console(width=10_000, soft_wrap=True)


study_file_arg = click.argument(
    "study_file", type=click.Path(path_type=Path, dir_okay=False, exists=False)
)
storage_opt = click.option("--storage", "storage_url", metavar="URL", help=STORAGE_HELP)
study_opt = click.option("--study", "study_name", metavar="NAME",
                         help="Study name (default: the only study in the storage).")
artifacts_opt = click.option(
    "--artifacts", metavar="DIR|s3://BUCKET", envvar="HPSEARCH_ARTIFACTS",
    help="Artifact store for plots, reports and models (default: the study file's [artifacts] "
         "store, else beside the SQLite file; also $HPSEARCH_ARTIFACTS).")


def _run_options(command: Any) -> Any:
    for option in reversed([
        storage_opt,
        click.option("--n-trials", type=click.IntRange(min=1),
                     help="Total finished trials the study should reach."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
                     metavar="SECONDS", help="Stop starting trials after this many seconds."),
        click.option("--data-path", metavar="PATH", envvar="HPSEARCH_DATA_PATH",
                     help="The dataset's local copy (overrides [data] path; also "
                          "$HPSEARCH_DATA_PATH)."),
        artifacts_opt,
    ]):
        command = option(command)
    return command


def _deadline(timeout: float | None) -> float | None:
    """When the time budget ends (``time.monotonic()``): counted from the command's start, as
    a user reads ``--timeout``, not from the first trial (importing TensorFlow, loading the
    data and opening the storage take seconds); a process that started afresh keeps the
    deadline it was handed."""
    from search import recycling

    handed_on = recycling.deadline_before()
    if handed_on is not None or timeout is None:
        return handed_on
    return float(click.get_current_context().find_root().obj[STARTED]) + timeout


def _load(study_file: Path, n_trials: int | None, timeout: float | None,
          data_path: str | None) -> Any:
    from search import studyfile

    return studyfile.load(study_file, {"study": {"n_trials": n_trials, "timeout": timeout},
                                       "data": {"path": data_path or None}})


@cli.command()
@study_file_arg
@_run_options
@click.option("--workers", default="1", show_default=True, metavar="K|auto",
              help="Worker processes on this machine (auto: one per core).")
@click.option("--threads", type=click.IntRange(min=1), metavar="T",
              help="TensorFlow threads per worker (default: cores / workers).")
def run(study_file: Path, storage_url: str | None, n_trials: int | None,
        timeout: float | None, data_path: str | None, artifacts: str | None, workers: str,
        threads: int | None) -> None:
    """Create the study of STUDY_FILE, or resume it, and run its trials."""
    from search import progress, recycling
    from search.storage import redact, resolve_url
    from search.workers import resolve_layout

    if workers != "auto" and not (workers.isdigit() and int(workers) >= 1):
        raise click.BadParameter(f"must be a whole number >= 1 or 'auto', not {workers!r}",
                                 param_hint="--workers")
    spec = _load(study_file, n_trials, timeout, data_path)
    url = resolve_url(storage_url)
    count, per_worker = resolve_layout(workers, threads)
    _on_stop_signals(_resumable)  # a terminated run ends like Ctrl-C
    if count == 1:
        if threads is not None:
            os.environ.setdefault("HPSEARCH_TF_THREADS", str(threads))
        from search.runner import run_study

        with progress.TrialProgress(spec.study.metric) as display:
            summary = run_study(spec, url, on_start=display.start, on_progress=display.update,
                                artifacts=artifacts, deadline=_deadline(spec.study.timeout))
        ran = recycling.ran_before() + summary.ran
        if summary.restart:
            recycling.restart(ran)
        progress.print_summary(summary.study, _stdout(), redact(url), ran=ran)
        return
    from search.runner import start
    from search.trial_report import ended
    from search.workers import run_workers

    _on_stop_signals(WORKERS_STOPPED)
    study, objective = start(spec, url, artifacts=artifacts)
    before = ended(study)
    if objective is not None:
        passed = [arg for flag, value in (("--n-trials", n_trials), ("--timeout", timeout),
                                          ("--data-path", data_path),
                                          ("--artifacts", artifacts)) if value is not None
                  for arg in (flag, str(value))]
        with progress.TrialProgress(spec.study.metric) as display:
            display.start(study, spec.study.n_trials)
            codes = run_workers(study_file, url, count, per_worker, extra_args=passed,
                                study=study, on_progress=display.update,
                                deadline=_deadline(spec.study.timeout))
        failed = [code for code in codes if code != 0]
        if failed:
            raise UserError(f"{len(failed)} of {count} workers failed (exit codes {failed}); "
                            "their errors are above")
    progress.print_summary(study, _stdout(), redact(url), ran=ended(study) - before)


@cli.command()
@study_file_arg
@_run_options
@click.option("--threads", type=click.IntRange(min=1), metavar="T",
              help="TensorFlow threads for this worker (default: TensorFlow's own choice).")
@click.option("--part-of-run", is_flag=True, hidden=True)  # started by `run --workers`
def worker(study_file: Path, storage_url: str | None, n_trials: int | None,
           timeout: float | None, data_path: str | None, artifacts: str | None,
           threads: int | None, part_of_run: bool) -> None:
    """Join the study of STUDY_FILE (creating it if needed) and run trials until its budget is
    spent across all workers. Start as many as you like, on any machines, on one storage."""
    from search import recycling
    from search.runner import run_study
    from search.storage import resolve_url

    if threads is not None:
        os.environ["HPSEARCH_TF_THREADS"] = str(threads)
    spec = _load(study_file, n_trials, timeout, data_path)
    _on_stop_signals(_worker_of_run if part_of_run else _resumable)
    if part_of_run:
        from search.workers import end_with_the_run

        end_with_the_run()
    summary = run_study(spec, resolve_url(storage_url), artifacts=artifacts,
                        deadline=_deadline(spec.study.timeout),
                        announce=not part_of_run)  # the run announced the study
    ran = recycling.ran_before() + summary.ran
    if summary.restart:
        recycling.restart(ran)
    logger.info("worker done: ran %d trials", ran)


def _on_stop_signals(told: str | Callable[[], str]) -> None:
    """SIGTERM, and Ctrl-C unless ignored, stop the command like Ctrl-C (``_interrupt``);
    ``told`` follows "interrupted"."""
    click.get_current_context().obj[ON_INTERRUPT] = told
    signal.signal(signal.SIGTERM, _interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not if ignored (nohup)
        signal.signal(signal.SIGINT, _interrupt)


def _interrupt(signum: int, frame: Any) -> None:
    """A stop signal: ``KeyboardInterrupt``, which the command turns into exit 128 + the signal
    (130 for Ctrl-C, 143 for SIGTERM; a run's running trial is failed first, the study stays
    resumable). While TensorFlow works, it
    stops at its next step rather than here (``objectives.interrupts``); a second signal stops
    at once."""
    from objectives import interrupts

    if not interrupts.request(signum):
        raise KeyboardInterrupt


@cli.command()
@study_file_arg
def validate(study_file: Path) -> None:
    """Check STUDY_FILE completely and print the resolved study and search space."""
    from rich.table import Table

    from search import studyfile

    spec = studyfile.load(study_file)
    if spec.data.path is not None and not Path(spec.data.path).expanduser().exists():
        raise UserError(f"{study_file}: data.path: {spec.data.path} does not exist on this "
                        "machine (run and worker take another with --data-path)")
    from search.samplers import make_pruner, make_sampler

    make_sampler(spec), make_pruner(spec)  # what run would refuse (a missing package)
    console = _stdout()
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
        console.print("budgets: " + ", ".join(f"{name} <= {limit:g}" for name, limit
                                               in goals.constraints.items())
                      + " (a trial over them is measured, not trained)", markup=False)
    for title, section in (("sampler", spec.sampler), ("pruner", spec.pruner),
                           ("data", spec.data), ("training", spec.training)):
        values = ", ".join(f"{k}={v}" for k, v in section.model_dump().items() if k != "type")
        kind = getattr(section, "type", "")
        console.print(f"{title}: {kind}{' ' if kind and values else ''}{values}", markup=False)
    if spec.fixed_trials:
        console.print("first trials: " + ", ".join(f.label for f in spec.fixed_trials),
                      markup=False)
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
    table = Table(title="search space")
    for column in ("parameter", "distribution", "sampled when"):
        table.add_column(column)
    for row in spec.space.describe():
        table.add_row(*row)
    console.print(table)


@cli.command()
@storage_opt
@study_opt
def status(storage_url: str | None, study_name: str | None) -> None:
    """The state of a study: trials by state, best value, running trials and their age."""
    from search.results import pick_study, print_status

    print_status(pick_study(_open(storage_url), study_name), _stdout())


@cli.command()
@storage_opt
@study_opt
@click.option("--format", "output_format", type=click.Choice(["table", "csv", "json"]),
              default="table", show_default=True)
def trials(storage_url: str | None, study_name: str | None, output_format: str) -> None:
    """A study's trials: state, value, metrics, parameters and how each ended."""
    from search.results import pick_study, print_trials

    print_trials(pick_study(_open(storage_url), study_name), _stdout(), output_format)


@cli.command()
@storage_opt
@study_opt
def best(storage_url: str | None, study_name: str | None) -> None:
    """The best trial of a study with its parameters and metrics (with several objectives,
    their Pareto front; with budgets, the best trial within them)."""
    from search.results import pick_study, print_best

    print_best(pick_study(_open(storage_url), study_name), _stdout())


@cli.command()
@storage_opt
@study_opt
def compare(storage_url: str | None, study_name: str | None) -> None:
    """What the trials say of each choice: per optimizer, activation, BatchNorm, schedule, ...,
    depth and width band, the best and median validation metric, convergence and overfitting,
    with a plain statement of what the numbers carry."""
    from search.compare_view import print_answers
    from search.results import pick_study

    print_answers(pick_study(_open(storage_url), study_name), _stdout())


@cli.command()
@storage_opt
@artifacts_opt
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
def dashboard(storage_url: str | None, artifacts: str | None, host: str, port: int) -> None:
    """Start optuna-dashboard on the storage, with the studies' artifact store, and print its
    address."""
    import optuna

    from search.artifact_store import location_for, open_store
    from search.dashboard import serve
    from search.storage import resolve_url

    # A database server may be empty still (workers not started yet); a SQLite file must exist.
    url = resolve_url(storage_url)
    storage = _open(url, create=not url.startswith("sqlite"))
    studies = [optuna.load_study(study_name=s.study_name, storage=storage)
               for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    location = location_for(studies, artifacts, url)
    serve(storage, host=host, port=port, artifact_store=open_store(location),
          artifacts_shown=location)


@cli.command()
@storage_opt
@study_opt
@artifacts_opt
@click.option("--trial", "trial_number", type=click.IntRange(min=0), metavar="N",
              help="The trial to evaluate (default: the best).")
@click.option("--full-train", is_flag=True,
              help="Retrain on training plus validation for the trial's best number of epochs "
                   "(default: as the search trained it, on the training split).")
@click.option("--output", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
              help="Where to save the model and figures (default: "
                   "hpsearch-evaluations/STUDY-trial-N).")
@click.option("--data-path", metavar="PATH", envvar="HPSEARCH_DATA_PATH",
              help="The dataset's local copy on this machine (default: the study's).")
def evaluate(storage_url: str | None, study_name: str | None, artifacts: str | None,
             trial_number: int | None, full_train: bool, output: Path | None,
             data_path: str | None) -> None:
    """Retrain a trial's configuration from its seed and measure it once on the test split."""
    from search.evaluate import evaluate_trial
    from search.results import pick_study, print_evaluation
    from search.storage import resolve_url

    _on_stop_signals(": run the same command to evaluate again")
    url = resolve_url(storage_url)
    study = pick_study(_open(url), study_name)
    run = evaluate_trial(study, trial_number, storage_url=url, output=output,
                         full_train=full_train, data_path=data_path, artifacts=artifacts)
    print_evaluation(run, _stdout())


@cli.command()
@storage_opt
@study_opt
@artifacts_opt
@click.option("--output", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
              help="Folder for report.html and report.md (default: hpsearch-report-STUDY).")
def report(storage_url: str | None, study_name: str | None, artifacts: str | None,
           output: Path | None) -> None:
    """Write a study's comparison table, history, importances and best trial as one HTML
    file (images embedded) and a Markdown table."""
    from search.artifact_store import location_for, open_store
    from search.outputs import writable_folder
    from search.report import write_report
    from search.results import pick_study
    from search.storage import redact, resolve_url

    url = resolve_url(storage_url)
    study = pick_study(_open(url), study_name)
    store = open_store(location_for([study], artifacts, url))
    folder = writable_folder(output or Path(f"hpsearch-report-{study.study_name}"), "--output")
    try:
        written = write_report(study, store, folder, storage_shown=redact(url))
    except OSError as exc:  # e.g. the disk filled up while writing
        raise UserError(f"--output {folder}: cannot write the report ({exc.strerror})"
                        ) from None
    console = _stdout()
    console.print(f"report of {study.study_name}: {written.rows} trials; figures: "
                  f"{', '.join(written.figures) or 'none'}", markup=False)
    console.print(f"  {written.html_path}\n  {written.markdown_path}", markup=False)


def _open(storage_url: str | None, *, create: bool = False) -> Any:
    from search.storage import open_storage, resolve_url

    return open_storage(resolve_url(storage_url), create=create)


def main() -> None:
    # Should TensorFlow's native code crash, the report shows where each Python thread was.
    faulthandler.enable()
    cli(obj={})


if __name__ == "__main__":
    main()
