"""Many workers on one study: 16, 64 and 200 worker processes on PostgreSQL directly and through
a gRPC storage proxy, hpsearch beside a plain Optuna loop.

Run: .venv/bin/python benchmarks/scale.py [--workers 16 64 200] [--routes direct proxy]
         [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--no-docs]

Each worker runs trials of an objective that sleeps 0.5 s in all and reports 5 intermediate
values, on the full 14-parameter conditional space (TPE, median pruner), as
``benchmarks/coordination.py`` does: only coordination varies, and the machine's cores are not
spent on training. The workers are forked from one process that imported everything once (no
TensorFlow), so that 200 of them fit in memory. Each study has N = 2 trials per worker.

Side by side, on a fresh database each:

- hpsearch: its own worker loop (budget lock, heartbeats, stale-trial check), directly on the
  database (``--storage postgresql+psycopg://...``) or through ``hpsearch proxy``
  (``--storage grpc://...``);
- plain Optuna: ``study.optimize(objective, n_trials=1)`` in a loop until the study has N
  finished trials (``MaxTrialsCallback``'s rule), no heartbeat, on Optuna's ``RDBStorage``
  directly or through Optuna's own proxy (``run_grpc_proxy_server`` on ``get_storage``, its
  default thread pool, and ``GrpcStorageProxy`` in each worker).

Prints, for each: trials per minute (N over the wall clock from the first fork to the last
worker's exit), the overhead per trial beyond its sleeps (median, 95th percentile), the most
connections to the study's database at once (``pg_stat_activity``), the database server's CPU
per finished trial (all PostgreSQL processes, from ``/proc``), the finished trials, and the
workers lost (that exited with an error).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from coordination import STUDY, PeakConnections, drop_postgres, fresh_postgres, run_loop  # noqa: E402,I001

HPSEARCH = str(Path(sys.executable).parent / "hpsearch")


def postgres_cpu_seconds() -> float:
    """CPU seconds used so far by the PostgreSQL server on this machine: its live processes,
    and the children its postmaster has reaped (a closed connection's backend)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if name != "postgres" and not name.startswith("postgres"):
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[1] is ppid; utime, stime, cutime, cstime are fields 14-17 of stat (1-based)
        utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
        total += utime + stime
        if fields[1] == "1" or not _is_postgres(int(fields[1])):  # the postmaster
            total += cutime + cstime
    return total / tick


def _is_postgres(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.index("(") + 1:stat.rindex(")")].startswith("postgres")


def _child(kind: str, route: str, spec: Any, target: str, out: Path) -> None:
    """One worker's loop (``coordination.run_loop``) on the route's storage; writes the
    overhead of each trial it ran."""
    storage: Any = target
    if kind == "optuna" and route == "proxy":
        import optuna

        host, port = target.rsplit(":", 1)
        storage = optuna.storages.GrpcStorageProxy(host=host, port=int(port))
    out.write_text(json.dumps(run_loop(kind, spec, storage)))


def run_workers(kind: str, route: str, study_file: str, target: str, count: int,
                folder: str) -> None:
    """This process (started by :func:`measure`): import once, make the study, fork ``count``
    workers, wait; prints one JSON line: the seconds from the first fork to the last exit, and
    the exit statuses."""
    import optuna

    from search import studyfile
    from search.cli.console import setup_logging

    setup_logging(False)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = studyfile.load(Path(study_file))
    import search.studies  # noqa: F401  (imported before the fork, as the children use them)
    import search.workers.loop  # noqa: F401
    import search.workers.run  # noqa: F401
    import search.storage.proxy_client  # noqa: F401
    assert "tensorflow" not in sys.modules
    started = time.perf_counter()
    children = []
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _child(kind, route, spec, target, Path(folder) / f"out-{index}.json")
                code = 0
            except BaseException as error:  # noqa: BLE001 - said in one line, counted as lost
                print(f"worker {index}: {type(error).__name__}: "
                      f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}",
                      file=sys.stderr, flush=True)
            finally:
                os._exit(code)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    print(json.dumps({"seconds": time.perf_counter() - started, "codes": codes}), flush=True)


def _start_proxy(kind: str, url: str, port: int) -> subprocess.Popen[bytes]:
    if kind == "hpsearch":
        command = [HPSEARCH, "proxy", "--storage", url, "--port", str(port)]
    else:
        command = [sys.executable, "-c",
                   "import optuna, sys; optuna.storages.run_grpc_proxy_server("
                   "optuna.storages.get_storage(sys.argv[1]), host='127.0.0.1', "
                   "port=int(sys.argv[2]))", url, str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
    return process


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def measure(kind: str, route: str, admin_url: str, workers: int, trials: int) -> dict[str, Any]:
    import optuna
    from optuna.trial import TrialState

    url, handle = fresh_postgres(admin_url)
    proxy = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            study_file = folder / "study.toml"
            study_file.write_text(STUDY.format(trials=trials))
            target = url
            if route == "proxy":
                port = _free_port()
                proxy = _start_proxy(kind, url, port)
                target = (f"grpc://127.0.0.1:{port}" if kind == "hpsearch"
                          else f"127.0.0.1:{port}")
            if kind == "optuna":
                optuna.create_study(study_name="coordination", storage=url,
                                    direction="maximize")
            cpu_before = postgres_cpu_seconds()
            with PeakConnections(url, admin_url) as peak:
                done = subprocess.run(
                    [sys.executable, __file__, "--run", kind, route, str(study_file), target,
                     str(workers), str(folder)], capture_output=True, text=True)
            cpu = postgres_cpu_seconds() - cpu_before
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-3000:])
            result = json.loads(done.stdout.strip().splitlines()[-1])
            overheads = [value for out in folder.glob("out-*.json")
                         for value in json.loads(out.read_text())]
            storage = optuna.storages.RDBStorage(url)
            trials_now = storage.get_all_trials(storage.get_study_id_from_name("coordination"),
                                                deepcopy=False)
            finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                           for t in trials_now)
            storage.engine.dispose()
            lost_lines = [line for line in done.stderr.splitlines()
                          if line.startswith("worker ")]
            return {
                "rate": trials / result["seconds"] * 60,
                "p50": statistics.median(overheads) * 1000 if overheads else float("nan"),
                "p95": (statistics.quantiles(overheads, n=20)[-1] * 1000
                        if len(overheads) > 1 else float("nan")),
                "connections": peak.most,
                "cpu_ms": cpu / max(finished, 1) * 1000,
                "finished": finished,
                "lost": sum(code != 0 for code in result["codes"]),
                "why": lost_lines[0].split(": ", 1)[1][:120] if lost_lines else "",
            }
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(30)
        drop_postgres(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[16, 64, 200])
    parser.add_argument("--routes", nargs="+", default=["direct", "proxy"],
                        choices=["direct", "proxy"])
    parser.add_argument("--kinds", nargs="+", default=["hpsearch", "optuna"],
                        choices=["hpsearch", "optuna"])
    parser.add_argument("--postgres",
                        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--run", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        kind, route, study_file, target, count, folder = args.run
        run_workers(kind, route, study_file, target, int(count), folder)
        return
    from _docs import command, machine, write_section

    print(f"machine: {machine()}")
    print("N = 2 trials per worker of 0.5 s with 5 reports; overhead per trial in ms; database "
          "CPU in ms per finished trial")
    header = (f"{'route':<7}{'workers':>8}  {'who':<13}{'trials/min':>11}{'p50':>8}{'p95':>8}"
              f"{'conns':>7}{'db cpu':>8}{'finished':>10}{'lost':>6}")
    print(header)
    rows = []
    for route in args.routes:
        for workers in args.workers:
            trials = 2 * workers
            for kind in args.kinds:
                who = "hpsearch" if kind == "hpsearch" else "plain Optuna"
                r = measure(kind, route, args.postgres, workers, trials)
                exact = "exactly" if r["finished"] == trials else f"of {trials}"
                print(f"{route:<7}{workers:>8}  {who:<13}{r['rate']:>11.1f}{r['p50']:>8.0f}"
                      f"{r['p95']:>8.0f}{r['connections']:>7}{r['cpu_ms']:>8.1f}"
                      f"{r['finished']:>6} {exact:<8}{r['lost']:>3}"
                      + (f"  ({r['why']})" if r["why"] else ""), flush=True)
                rows.append(f"| {route} | {workers} | {who} | {r['rate']:.1f} | {r['p50']:.0f} "
                            f"| {r['p95']:.0f} | {r['connections']} | {r['cpu_ms']:.1f} "
                            f"| {r['finished']} of {trials} | {r['lost']} | {r['why']} |")
    if args.no_docs:
        return
    body = "\n".join([
        "## Many workers on one study (`benchmarks/scale.py`)", "",
        f"Command: `{command()}`  ", f"Machine: {machine()}", "",
        "Worker processes forked from one process (no TensorFlow) run trials of an objective "
        "that sleeps 0.5 s in all and reports 5 intermediate values, on the full 14-parameter "
        "conditional space (TPE, median pruner); each study has N = 2 trials per worker, on a "
        "fresh database of the local PostgreSQL (`max_connections` 100). hpsearch's worker loop "
        "directly on the database and through `hpsearch proxy`; beside it in the same run, a "
        "plain Optuna loop (`study.optimize(n_trials=1)` until N finished, no heartbeat) on "
        "Optuna's `RDBStorage` and through Optuna's own proxy (`run_grpc_proxy_server` with its "
        "default 10 threads).", "",
        "Trials per minute: N over the wall clock from the first fork to the last worker's "
        "exit. Overhead: a trial's time beyond its sleeps. Connections: the most to the study's "
        "database at any 50-ms look at `pg_stat_activity`. Database CPU: all PostgreSQL "
        "processes' CPU time over the run per finished trial. Lost: workers that exited with an "
        "error (the first one's line shown).", "",
        "| route | workers | who | trials/min | p50 ms | p95 ms | connections | database CPU "
        "ms/trial | finished | workers lost | first error |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ])
    print(f"written to {write_section('scale', body)}")


if __name__ == "__main__":
    main()
