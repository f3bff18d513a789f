"""The ``hpsearch`` command's commands and options.

User mistakes end as one line on stderr per problem and a non-zero exit (2 for usage errors),
never a traceback; ``--debug`` shows the traceback of an unexpected error. Nothing here imports
TensorFlow: only ``run`` does, through the objective, once the study file has been validated.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from search.cli.console import (
    STARTED,
    WORKERS_STOPPED,
    HpsearchGroup,
    on_stop_signals,
    resumable,
    setup_logging,
    stdout,
    worker_of_run,
)
from search.errors import UserError

if TYPE_CHECKING:  # imported where used: `validate` and `--help` import no storage code
    from search.storage.address import StorageAddress
    from search.storage.opening import Storage

logger = logging.getLogger("search")

STORAGE_HELP = "Storage URL (default: $HPSEARCH_STORAGE, else sqlite:///hpsearch.db)."


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
    setup_logging(verbose or debug)


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
    from search.workers import fresh_start

    handed_on = fresh_start.deadline_before()
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
              help="TensorFlow and BLAS threads per worker (default: cores / workers).")
@click.option("--gpus", metavar="I,J,...",
              help="The GPUs to train on, by index (default: all; with --workers auto, one "
                   "worker each).")
def run(study_file: Path, storage_url: str | None, n_trials: int | None,
        timeout: float | None, data_path: str | None, artifacts: str | None, workers: str,
        threads: int | None, gpus: str | None) -> None:
    """Create the study of STUDY_FILE, or resume it, and run its trials."""
    from search.workers import fresh_start, progress
    from search.workers.processes import layout, parse_gpus

    if workers != "auto" and not (workers.isdigit() and int(workers) >= 1):
        raise click.BadParameter(f"must be a whole number >= 1 or 'auto', not {workers!r}",
                                 param_hint="--workers")
    chosen_gpus = parse_gpus(gpus)
    spec = _load(study_file, n_trials, timeout, data_path)
    address = _address(storage_url)
    count, per_worker, devices = layout(workers, threads, chosen_gpus)
    on_stop_signals(resumable)  # a terminated run ends like Ctrl-C
    if count == 1:
        if threads is not None:
            os.environ.setdefault("HPSEARCH_TF_THREADS", str(threads))
        from objectives.devices import train_on
        from search.workers.run import run_study

        train_on(devices[0])

        with progress.TrialProgress(spec.study.metric) as display:
            summary = run_study(spec, address, on_start=display.start, on_progress=display.update,
                                artifacts=artifacts, deadline=_deadline(spec.study.timeout),
                                own_process=True)
        ran = fresh_start.ran_before() + summary.ran
        if summary.restart:
            fresh_start.restart(ran)
        progress.print_summary(summary.study, stdout(), address.shown, ran=ran)
        return
    from search.workers.processes import run_with_workers

    on_stop_signals(WORKERS_STOPPED)
    study, ran = run_with_workers(
        spec, study_file, address, count=count, threads=per_worker, devices=devices,
        options={"--n-trials": n_trials, "--timeout": timeout, "--data-path": data_path,
                 "--artifacts": artifacts},
        artifacts=artifacts, deadline=_deadline(spec.study.timeout))
    progress.print_summary(study, stdout(), address.shown, ran=ran)


@cli.command()
@study_file_arg
@_run_options
@click.option("--threads", type=click.IntRange(min=1), metavar="T",
              help="TensorFlow and BLAS threads for this worker (default: their own choice).")
@click.option("--part-of-run", is_flag=True, hidden=True)  # started by `run --workers`
def worker(study_file: Path, storage_url: str | None, n_trials: int | None,
           timeout: float | None, data_path: str | None, artifacts: str | None,
           threads: int | None, part_of_run: bool) -> None:
    """Join the study of STUDY_FILE (creating it if needed) and run trials until its budget is
    spent across all workers. Start as many as you like, on any machines, on one storage."""
    from search.workers import fresh_start
    from search.workers.run import run_study

    if threads is not None:
        os.environ["HPSEARCH_TF_THREADS"] = str(threads)
    spec = _load(study_file, n_trials, timeout, data_path)
    on_stop_signals(worker_of_run if part_of_run else resumable)
    if part_of_run:
        from search.workers.processes import end_with_the_run

        end_with_the_run()
    summary = run_study(spec, _address(storage_url), artifacts=artifacts,
                        deadline=_deadline(spec.study.timeout),
                        announce=not part_of_run,  # the run announced the study
                        own_process=True)
    ran = fresh_start.ran_before() + summary.ran
    if summary.restart:
        fresh_start.restart(ran)
    logger.info("worker done: ran %d trials", ran)


@cli.command()
@study_file_arg
def validate(study_file: Path) -> None:
    """Check STUDY_FILE completely and print the resolved study and search space."""
    from search.cli.validation import print_validation

    print_validation(study_file, stdout())


@cli.command()
@storage_opt
@study_opt
def status(storage_url: str | None, study_name: str | None) -> None:
    """The state of a study: trials by state, best value, running trials and their age."""
    from search.results.tables import pick_study, print_status

    print_status(pick_study(_open(storage_url), study_name), stdout())


@cli.command()
@storage_opt
@study_opt
@click.option("--format", "output_format", type=click.Choice(["table", "csv", "json"]),
              default="table", show_default=True)
def trials(storage_url: str | None, study_name: str | None, output_format: str) -> None:
    """A study's trials: state, value, metrics, parameters and how each ended."""
    from search.results.tables import pick_study, print_trials

    print_trials(pick_study(_open(storage_url), study_name), stdout(), output_format)


@cli.command()
@storage_opt
@study_opt
def best(storage_url: str | None, study_name: str | None) -> None:
    """The best trial of a study with its parameters and metrics (with several objectives,
    their Pareto front; with constraints, the best trial within them)."""
    from search.results.tables import pick_study, print_best

    print_best(pick_study(_open(storage_url), study_name), stdout())


@cli.command()
@storage_opt
@study_opt
def compare(storage_url: str | None, study_name: str | None) -> None:
    """What the trials say of each choice: per optimizer, activation, BatchNorm, schedule, ...,
    depth and width band, the best and median validation metric, convergence and overfitting,
    with a plain statement of what the numbers carry."""
    from search.results.compare_view import print_answers
    from search.results.tables import pick_study

    print_answers(pick_study(_open(storage_url), study_name), stdout())


@cli.command()
@storage_opt
@artifacts_opt
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
def dashboard(storage_url: str | None, artifacts: str | None, host: str, port: int) -> None:
    """Start optuna-dashboard on the storage, with the studies' artifact store, and print its
    address."""
    from search.results.dashboard import open_for_dashboard, serve

    storage, store, location = open_for_dashboard(_address(storage_url), artifacts)
    serve(storage, host=host, port=port, artifact_store=store,
          artifacts_shown=location)


@cli.command()
@click.option("--storage", "storage_url", metavar="URL",
              help="The database the proxy serves (default: $HPSEARCH_STORAGE, else "
                   "sqlite:///hpsearch.db).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: all of this machine's).")
@click.option("--port", default=13000, show_default=True, type=click.IntRange(1, 65535))
def proxy(storage_url: str | None, host: str, port: int) -> None:
    """Serve a database to workers through Optuna's gRPC storage proxy, with hpsearch's
    heartbeats and trial budget: workers, and every other command, then take
    --storage grpc://HOST:PORT and need no database connection of their own."""
    from search.storage.proxy_server import serve

    on_stop_signals("")
    serve(_address(storage_url), host=host, port=port)


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
    from search.results.evaluate import evaluate_trial
    from search.results.tables import pick_study, print_evaluation

    on_stop_signals(": run the same command to evaluate again")
    address = _address(storage_url)
    study = pick_study(_open(address), study_name)
    run = evaluate_trial(study, trial_number, address=address, output=output,
                         full_train=full_train, data_path=data_path, artifacts=artifacts)
    print_evaluation(run, stdout())


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
    from search.artifacts.store import location_for, open_store
    from search.results.output_folders import writable_folder
    from search.results.report import write_report
    from search.results.tables import pick_study

    address = _address(storage_url)
    study = pick_study(_open(address), study_name)
    store = open_store(location_for([study], artifacts, address))
    folder = writable_folder(output or Path(f"hpsearch-report-{study.study_name}"), "--output")
    try:
        written = write_report(study, store, folder, storage_shown=address.shown)
    except OSError as exc:  # e.g. the disk filled up while writing
        raise UserError(f"--output {folder}: cannot write the report ({exc.strerror})"
                        ) from None
    console = stdout()
    console.print(f"report of {study.study_name}: {written.rows} trials; figures: "
                  f"{', '.join(written.figures) or 'none'}", markup=False)
    console.print(f"  {written.html_path}\n  {written.markdown_path}", markup=False)


def _address(storage_url: str | None) -> StorageAddress:
    """The storage given (``--storage``, else ``HPSEARCH_STORAGE``, else the default), parsed."""
    from search.storage.address import StorageAddress, resolve_url

    return StorageAddress.parse(resolve_url(storage_url))


def _open(storage: str | None | StorageAddress, *, create: bool = False) -> Storage:
    """The storage given as ``--storage`` (or its address), opened; reading commands do not
    create one."""
    from search.storage.opening import open_storage

    address = storage if storage is not None and not isinstance(storage, str) \
        else _address(storage)
    return open_storage(address, create=create)


def main() -> None:
    # Should TensorFlow's native code crash, the report shows where each Python thread was.
    faulthandler.enable()
    cli(obj={})

