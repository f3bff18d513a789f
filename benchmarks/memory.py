"""Resident memory of one process over 30 stub trials: it must not grow trial after trial.

Run: .venv/bin/python benchmarks/memory.py [--trials 30]
Prints the RSS after trials 1, 10, 20 and 30 and the growth from trial 10 to 30
(target: under 150 MB).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import optuna
import psutil

from search import studyfile
from search.runner import run_study

STUDY = """
[study]
name = "memory"
n_trials = {trials}
seed = 0

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
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    process = psutil.Process()
    marks = {1, 10, 20, args.trials}
    rss: dict[int, float] = {}

    def measure(study: optuna.Study) -> None:
        done = len(study.trials)
        if done in marks:
            rss[done] = process.memory_info().rss / 2**20
            print(f"after trial {done:3d}: RSS {rss[done]:7.1f} MB", flush=True)

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "memory.toml"
        path.write_text(STUDY.format(trials=args.trials))
        run_study(studyfile.load(path), f"sqlite:///{folder}/memory.db", on_progress=measure)
    print(f"machine: {platform.machine()}, {psutil.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    if 10 in rss and args.trials in rss:
        growth = rss[args.trials] - rss[10]
        verdict = "OK" if growth < 150 else "TOO MUCH"
        print(f"growth from trial 10 to {args.trials}: {growth:+.1f} MB ({verdict}, "
              "target < 150 MB)")


if __name__ == "__main__":
    main()
