"""Resident memory of one ``hpsearch worker`` over a long study: it must stay bounded.

Run: .venv/bin/python benchmarks/memory.py [--trials 60] [--max-memory-growth MB]
         [--data-path PATH [--epochs N]]
A real worker process (stub trials of 1-4 layers of 32-512 units, random sampler, 2 epochs
each; with --data-path, CIFAR-10 and the default study's space, its epochs or ``--epochs``),
its RSS read by pid after every finished trial (once the next trial has started, so that a
fresh start is over). Prints the RSS after trials 1, 10, 20, ...,
the growth from trial 10 to the last, the most it reached, how often the worker started afresh
(``[workers] max_memory_growth``; 0 never starts afresh and shows what TensorFlow keeps) and
what a fresh start cost: the median pause between one trial's end and the next one's start
(both as stored) across a fresh start, beside the median pause otherwise.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search.workers.fresh_start import resident_mb
from search.studyfile import WorkersSection

HPSEARCH = str(Path(sys.executable).parent / "hpsearch")

STUB = """
[study]
name = "memory"
n_trials = {trials}
seed = 0
warm_start = false
[sampler]
type = "random"
[pruner]
type = "none"
[data]
dataset = "stub"
[training]
max_epochs = 2
[space]
n_layers = {{low = 1, high = 4}}
units = {{low = 32, high = 512, log = true}}
[workers]
max_memory_growth = {limit}
"""

CIFAR = """
[study]
name = "memory"
n_trials = {trials}
seed = 0
[sampler]
type = "random"
[data]
dataset = "cifar10"
path = "{path}"
{epochs}
[workers]
max_memory_growth = {limit}
"""


def _pauses(url: str, restarted_after: set[int]) -> tuple[list[float], list[float]]:
    """Seconds from each finished trial's end to the next trial's start: those across a fresh
    start (after a trial number in ``restarted_after``) and the others."""
    trials = sorted(optuna.load_study(study_name="memory", storage=url).get_trials(),
                    key=lambda t: t.number)
    across: list[float] = []
    others: list[float] = []
    for before, after in zip(trials, trials[1:]):
        if before.datetime_complete is None or after.datetime_start is None:
            continue
        pause = (after.datetime_start - before.datetime_complete).total_seconds()
        (across if before.number in restarted_after else others).append(pause)
    return across, others


def _counts(url: str) -> tuple[int, int]:
    """Trials finished, and trials started (running ones included)."""
    try:
        trials = optuna.load_study(study_name="memory", storage=url).get_trials(deepcopy=False)
    except KeyError:
        return 0, 0
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    return finished, sum(t.state != TrialState.WAITING for t in trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--max-memory-growth", type=float, metavar="MB",
                        default=WorkersSection.model_fields["max_memory_growth"].default,
                        help="the study file's [workers] max_memory_growth (default: its "
                        "default, %(default)g)")
    parser.add_argument("--data-path", help="CIFAR-10 with the default study's space")
    parser.add_argument("--epochs", type=int, help="with --data-path: epochs per trial "
                        "(default: the default study's)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        study = Path(folder) / "memory.toml"
        epochs = f"[training]\nmax_epochs = {args.epochs}" if args.epochs else ""
        text = (CIFAR.format(trials=args.trials, limit=args.max_memory_growth,
                             path=Path(args.data_path).resolve(), epochs=epochs)
                if args.data_path
                else STUB.format(trials=args.trials, limit=args.max_memory_growth))
        study.write_text(text)
        url = f"sqlite:///{folder}/memory.db"
        worker = subprocess.Popen([HPSEARCH, "worker", str(study)], stderr=subprocess.PIPE,
                                  env={**os.environ, "HPSEARCH_STORAGE": url}, text=True)
        rss: dict[int, float] = {}
        clock = time.monotonic()
        while worker.poll() is None:
            done, started = _counts(url)
            # Read once the next trial has started (a fresh start after trial N is then over),
            # or at the last trial.
            if done and done not in rss and (started > done or done == args.trials):
                now = resident_mb(worker.pid)
                if now is None:  # it just ended
                    break
                rss[done] = now
                if done == 1 or done % 10 == 0:
                    print(f"after trial {done:3d}: RSS {rss[done]:7.1f} MB", flush=True)
            time.sleep(0.1)
        _, stderr = worker.communicate()
        seconds = time.monotonic() - clock
        if worker.returncode != 0:
            sys.exit(f"the worker failed:\n{stderr}")
        # "... starts afresh to give back memory after trial N: ..." (search/workers/loop.py)
        marker = "starts afresh to give back memory after trial "
        restarted_after = {int(line.split(marker, 1)[1].split(":")[0]) for line in
                           stderr.splitlines() if marker in line}
        across, others = _pauses(url, restarted_after)
    restarts = len(restarted_after)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; max_memory_growth {args.max_memory_growth:g} MB")
    measured = [rss[n] for n in sorted(rss) if n >= 10]
    if measured:
        print(f"growth from trial 10 to {max(rss)}: {measured[-1] - measured[0]:+.1f} MB; "
              f"most above trial 10: {max(measured) - measured[0]:+.1f} MB; "
              f"{restarts} fresh starts; {seconds:.0f} s in all")
    if across and others:
        print(f"pause between trials: {statistics.median(others):.2f} s (median), "
              f"{statistics.median(across):.2f} s across a fresh start (median of "
              f"{len(across)})")


if __name__ == "__main__":
    main()
