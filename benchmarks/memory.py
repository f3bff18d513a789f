"""Resident memory of one ``hpsearch worker`` over a long study: it must stay bounded.

Run: .venv/bin/python benchmarks/memory.py [--trials 60] [--max-memory-growth MB]
         [--data-path PATH]
A real worker process (stub trials of 1-4 layers of 32-512 units, random sampler, 2 epochs
each; with --data-path, CIFAR-10 and the default study's space and epochs), its RSS read by
pid after every finished trial. Prints the RSS after trials 1, 10, 20, ..., the growth from
trial 10 to the last, the most it reached and how often the worker started afresh
(``[workers] max_memory_growth``; 0 never starts afresh and shows what TensorFlow keeps).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search.recycling import resident_mb

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
[workers]
max_memory_growth = {limit}
"""


def _finished(url: str) -> int:
    try:
        trials = optuna.load_study(study_name="memory", storage=url).get_trials(deepcopy=False)
    except KeyError:
        return 0
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--max-memory-growth", type=float, default=1024.0, metavar="MB")
    parser.add_argument("--data-path", help="CIFAR-10 with the default study's space")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        study = Path(folder) / "memory.toml"
        text = (CIFAR.format(trials=args.trials, limit=args.max_memory_growth,
                             path=Path(args.data_path).resolve()) if args.data_path
                else STUB.format(trials=args.trials, limit=args.max_memory_growth))
        study.write_text(text)
        url = f"sqlite:///{folder}/memory.db"
        worker = subprocess.Popen([HPSEARCH, "worker", str(study)], stderr=subprocess.PIPE,
                                  env={**os.environ, "HPSEARCH_STORAGE": url}, text=True)
        rss: dict[int, float] = {}
        while worker.poll() is None:
            done = _finished(url)
            if done and done not in rss:
                now = resident_mb(worker.pid)
                if now is None:  # it just ended
                    break
                rss[done] = now
                if done == 1 or done % 10 == 0:
                    print(f"after trial {done:3d}: RSS {rss[done]:7.1f} MB", flush=True)
            time.sleep(0.1)
        _, stderr = worker.communicate()
    if worker.returncode != 0:
        sys.exit(f"the worker failed:\n{stderr}")
    restarts = stderr.count("starts afresh to give back memory")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; max_memory_growth {args.max_memory_growth:g} MB")
    measured = [rss[n] for n in sorted(rss) if n >= 10]
    if measured:
        print(f"growth from trial 10 to {max(rss)}: {measured[-1] - measured[0]:+.1f} MB; "
              f"most above trial 10: {max(measured) - measured[0]:+.1f} MB; "
              f"{restarts} fresh starts")


if __name__ == "__main__":
    main()
