"""Coordination overhead of hpsearch's workers on PostgreSQL and SQLite, beside a plain Optuna loop.

Run: .venv/bin/python benchmarks/coordination.py [--trials 40] [--workers 1 2 4 8]
         [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--no-docs]

Each worker runs trials on the full 14-parameter conditional space (TPE, median pruner) with
an objective that sleeps 0.5 s in all, reporting 5 intermediate values between its sleeps, so
that only coordination varies. The overhead of a trial is its time beyond those sleeps:
ask (sampling, parameter writes), the reports, tell, and for hpsearch its budget lock and
stale-trial check. Side by side, for each storage and number of workers:

- hpsearch: its own worker loop (budget lock, heartbeats, stale-trial retry, the storage of
  search/storage/opening.py);
- plain Optuna: ``study.optimize(objective, n_trials=1)`` in a loop on Optuna's RDB storage,
  no heartbeat, until the study has N finished trials (``MaxTrialsCallback``'s rule).

Prints trials per minute, the median and 95th percentile of the overhead per trial, and on
PostgreSQL the most connections the workers held at once (``pg_stat_activity``).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any
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


def _objective(space: Any, sleeps: list[float]) -> Any:
    from objectives.space import suggest

    def objective(trial: Any) -> float:
        params = suggest(trial, space)
        slept = 0.0
        for step in range(5):
            started = time.perf_counter()
            time.sleep(0.1)
            slept += time.perf_counter() - started
            trial.report(params["learning_rate"] * step, step)
        sleeps.append(slept)
        return float(params["learning_rate"])

    return objective


def worker(kind: str, study_file: str, url: str, out: str) -> None:
    import optuna

    from search import studyfile

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    Path(out).write_text(json.dumps(run_loop(kind, studyfile.load(study_file), url)))


def run_loop(kind: str, spec: Any, storage: Any) -> list[float]:
    """One worker's loop on ``storage`` (hpsearch: a URL; plain Optuna: a URL or a storage
    object) until the study has its N finished trials; the overhead of each trial it ran."""
    import optuna

    sleeps: list[float] = []
    overheads: list[float] = []
    objective = _objective(spec.space, sleeps)
    if kind == "optuna":
        study = optuna.load_study(study_name=spec.name, storage=storage,
                                  sampler=optuna.samplers.TPESampler(
                                      seed=os.getpid(), multivariate=True, group=True),
                                  pruner=optuna.pruners.MedianPruner(n_startup_trials=5))
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        while len(study.get_trials(deepcopy=False, states=finished)) < (spec.study.n_trials or 0):
            before, started = len(sleeps), time.perf_counter()
            study.optimize(objective, n_trials=1, gc_after_trial=False)
            if len(sleeps) > before:
                overheads.append(time.perf_counter() - started - sleeps[-1])
    else:
        from search.workers.run import prepare
        from search.workers.outcomes import TrialReporter
        from search.workers.loop import WorkerLoop
        from search.studies import open_study

        opened, existing, _ = prepare(spec, storage)
        study = existing or open_study(spec, opened)
        loop = WorkerLoop(spec, opened, study, objective, TrialReporter("val_accuracy", None))
        one_trial = loop._one_trial

        def timed(target: int | None) -> bool:
            before, started = len(sleeps), time.perf_counter()
            more = one_trial(target)
            if len(sleeps) > before:
                overheads.append(time.perf_counter() - started - sleeps[-1])
            return more

        loop._one_trial = timed  # type: ignore[method-assign]
        loop.run()
    return overheads


class PeakConnections:
    """The most connections to a PostgreSQL database at any 50-ms look (``pg_stat_activity``),
    from a connection of its own to the server's ``postgres`` database; 0 for SQLite."""

    def __init__(self, url: str, admin_url: str) -> None:
        import threading

        import sqlalchemy

        self.most = 0
        self.database = (sqlalchemy.engine.make_url(url).database
                         if url.startswith("postgresql") else None)
        self.admin_url = admin_url
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.admin_url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as connection:
                while not self.stop.is_set():
                    now = connection.exec_driver_sql(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                        (self.database,)).scalar() or 0
                    self.most = max(self.most, int(now))
                    connection.rollback()
                    time.sleep(0.05)
        finally:
            engine.dispose()

    def __enter__(self) -> PeakConnections:
        if self.database is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(10)


def measure(kind: str, url: str, n_workers: int, trials: int, folder: Path
            ) -> tuple[float, list[float]]:
    study_file = folder / f"study-{uuid.uuid4().hex[:6]}.toml"
    study_file.write_text(STUDY.format(trials=trials))
    if kind == "optuna":  # made once, before its workers start
        import optuna

        optuna.create_study(study_name="coordination", storage=url, direction="maximize")
    outputs = [folder / f"out-{i}-{uuid.uuid4().hex[:6]}.json" for i in range(n_workers)]
    started = time.perf_counter()
    processes = [subprocess.Popen([sys.executable, __file__, "--worker", kind, str(study_file),
                                   url, str(out)]) for out in outputs]
    for process in processes:
        process.wait()
    seconds = time.perf_counter() - started
    overheads = [value for out in outputs if out.exists()
                 for value in json.loads(out.read_text())]
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
    parser.add_argument("--backends", nargs="+", default=["postgresql", "sqlite"],
                        choices=["postgresql", "sqlite"])
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    from _docs import command, machine, write_section

    print(f"machine: {machine()}")
    print(f"{args.trials} trials of 0.5 s with 5 reports; overhead per trial in ms")
    print(f"{'storage':<11}{'workers':>8}  {'hpsearch: trials/min  p50  p95 conns':>37}  "
          f"{'plain Optuna: trials/min  p50  p95 conns':>41}  (trials run by each)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for backend in args.backends:
            for n_workers in args.workers:
                cells = []
                for kind in ("hpsearch", "optuna"):
                    if backend == "postgresql":
                        url, handle = fresh_postgres(args.postgres)
                    else:
                        url, handle = f"sqlite:///{folder / uuid.uuid4().hex}.db", None
                        if kind == "optuna":  # a lock timeout, as any user of SQLite sets
                            url += "?timeout=60"
                    try:
                        with PeakConnections(url, args.postgres) as peak:
                            rate, overheads = measure(kind, url, n_workers, args.trials,
                                                      folder)
                    finally:
                        if handle is not None:
                            drop_postgres(handle)
                    p50 = statistics.median(overheads) * 1000
                    p95 = statistics.quantiles(overheads, n=20)[-1] * 1000
                    cells.append((rate, p50, p95, len(overheads), peak.most))
                (hr, h50, h95, hn, hc), (orate, o50, o95, on, oc) = cells
                hc_shown, oc_shown = ((str(hc), str(oc)) if backend == "postgresql"
                                      else ("-", "-"))
                print(f"{backend:<11}{n_workers:>8}  {hr:>20.1f}{h50:>5.0f}{h95:>5.0f}"
                      f"{hc_shown:>6}  {orate:>24.1f}{o50:>5.0f}{o95:>5.0f}{oc_shown:>6}  "
                      f"(trials run: {hn}, {on})", flush=True)
                rows.append(f"| {backend} | {n_workers} | {hr:.1f} | {h50:.0f} | **{h95:.0f}** "
                            f"| {hc_shown} | {orate:.1f} | {o50:.0f} | {o95:.0f} | {oc_shown} "
                            f"| {on} |")
    if args.no_docs:
        return
    body = "\n".join([
        "## Coordination overhead of workers (`benchmarks/coordination.py`)", "",
        f"Command: `{command()}`  ", f"Machine: {machine()}", "",
        f"{args.trials} trials per study of an objective that sleeps 0.5 s in all and reports 5 "
        "intermediate values, on the full 14-parameter conditional space (TPE, median pruner). "
        "The overhead is a trial's time beyond the sleeps: sampling and parameter writes, the "
        "reports, tell, and for hpsearch its budget lock, stale-trial check and heartbeat. "
        "hpsearch's worker loop beside a plain Optuna loop (`study.optimize(n_trials=1)` on "
        "Optuna's RDB storage without heartbeats) in the same run. Both write through Optuna's "
        "own RDB storage (`search/storage/opening.py` changes only how a failed heartbeat is "
        "handled).", "",
        "Trials per minute count the study's N trials over the wall clock until every worker "
        "has exited. The plain loop checks the count before each trial, so its workers run past "
        "N (last column); hpsearch's end with exactly N, the idle ones polling every second "
        "for a running trial that might still fail and free its slot, which costs trials per "
        "minute at the end of a study this short.", "",
        "Connections: the most to the study's database at any 50-ms look at "
        "`pg_stat_activity` while the workers ran (PostgreSQL only).", "",
        "| storage | workers | hpsearch trials/min | p50 ms | p95 ms | connections "
        "| plain Optuna trials/min | p50 ms | p95 ms | connections | plain Optuna trials run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ])
    print(f"written to {write_section('coordination', body)}")


if __name__ == "__main__":
    main()
