"""Coordination overhead of hpsearch's workers on PostgreSQL and SQLite.

Run: .venv/bin/python benchmarks/coordination.py [--trials 40] [--workers 1 2 4 8]
         [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

Each worker runs hpsearch's own worker loop (budget lock, stale-trial check, ask, tell,
heartbeat) on the full 14-parameter conditional space, with an objective that reports 5
intermediate values and sleeps 0.5 s in all, so that only coordination varies. Prints trials
per minute and the median and 95th percentile of the storage overhead per trial: the time a
trial takes in the worker loop beyond the objective itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

STUDY = """
[study]
name = "coordination"
n_trials = {trials}
seed = 0
[pruner]
type = "median"
n_startup_trials = 5
[workers]
heartbeat_interval = 5
grace_period = 30
"""


def worker(study_file: str, url: str, out: str) -> None:
    import optuna

    from objectives.space import suggest
    from search import studyfile
    from search.runner import TrialReporter, WorkerLoop, prepare
    from search.studies import open_study

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = studyfile.load(study_file)
    storage, existing, _ = prepare(spec, url, seed_offset=os.getpid())
    study = existing or open_study(spec, storage)
    objective_seconds: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, spec.space)
        started = time.perf_counter()
        for step in range(5):
            time.sleep(0.1)
            trial.report(params["learning_rate"] * step, step)
        objective_seconds.append(time.perf_counter() - started)
        return float(params["learning_rate"])

    loop = WorkerLoop(spec, url, study, objective, TrialReporter("val_accuracy", None))
    overheads: list[float] = []
    one_trial = loop._one_trial

    def timed(target: int | None) -> bool:
        before = len(objective_seconds)
        started = time.perf_counter()
        more = one_trial(target)
        if len(objective_seconds) > before:
            overheads.append(time.perf_counter() - started - objective_seconds[-1])
        return more

    loop._one_trial = timed  # type: ignore[method-assign]
    loop.run()
    Path(out).write_text(json.dumps(overheads))


def measure(url: str, n_workers: int, trials: int, folder: Path) -> tuple[float, list[float]]:
    study_file = folder / f"study-{uuid.uuid4().hex[:6]}.toml"
    study_file.write_text(STUDY.format(trials=trials))
    outputs = [folder / f"out-{i}-{uuid.uuid4().hex[:6]}.json" for i in range(n_workers)]
    started = time.perf_counter()
    processes = [subprocess.Popen([sys.executable, __file__, "--worker", str(study_file), url,
                                   str(out)]) for out in outputs]
    for process in processes:
        process.wait()
    seconds = time.perf_counter() - started
    overheads = [value for out in outputs for value in json.loads(out.read_text())]
    return trials / seconds * 60, overheads


def fresh_postgres(admin_url: str) -> tuple[str, object]:
    import sqlalchemy

    name = f"hpsearch_bench_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sqlalchemy.engine.make_url(admin_url).set(database=name)
    return url.render_as_string(hide_password=False), (admin, name)


def drop_postgres(handle: object) -> None:
    admin, name = handle  # type: ignore[misc]
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--postgres",
                        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {args.trials} trials of 0.5 s, 5 reports each")
    print(f"{'storage':<11}{'workers':>8}{'trials/min':>12}{'p50 ms':>9}{'p95 ms':>9}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for backend in ("postgresql", "sqlite"):
            for n_workers in args.workers:
                if backend == "postgresql":
                    url, handle = fresh_postgres(args.postgres)
                else:
                    url, handle = f"sqlite:///{folder / uuid.uuid4().hex}.db", None
                try:
                    rate, overheads = measure(url, n_workers, args.trials, folder)
                finally:
                    if handle is not None:
                        drop_postgres(handle)
                p50 = statistics.median(overheads) * 1000
                p95 = statistics.quantiles(overheads, n=20)[-1] * 1000
                print(f"{backend:<11}{n_workers:>8}{rate:>12.1f}{p50:>9.0f}{p95:>9.0f}",
                      flush=True)
                rows.append(f"| {backend} | {n_workers} | {rate:.1f} | {p50:.0f} | {p95:.0f} |")
    from _docs import command, machine, write_section

    body = "\n".join([
        "## Coordination overhead of workers (`benchmarks/coordination.py`)", "",
        f"Command: `{command()}`  ", f"Machine: {machine()}", "",
        f"{args.trials} trials per study of a fixed 0.5 s objective with 5 reports, on the full "
        "14-parameter conditional space; the overhead is a trial's time in hpsearch's worker "
        "loop (budget lock, stale-trial check, ask, tell, heartbeat) beyond the objective.", "",
        "| storage | workers | trials/min | p50 ms | p95 ms |", "| --- | --- | --- | --- | --- |",
        *rows,
    ])
    print(f"written to {write_section('coordination', body)}")


if __name__ == "__main__":
    main()
