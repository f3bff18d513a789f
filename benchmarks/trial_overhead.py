"""The CPU time of small trials with each training step traced once (hpsearch: the optimizer's,
loss's and metrics' variables built before ``fit``, ``objectives.mlp.build_training_state``)
against twice (Keras's TensorFlow trainer left to build them in its first trace, which makes
``tf.function`` trace again), side by side in alternating rounds.

Run: .venv/bin/python benchmarks/trial_overhead.py [--rounds 3] [--trials 8]

With ``--freeze``: the CPU time of whole ``hpsearch worker`` processes (the same stub study, 3
epochs) that freeze what they hold once their objective is ready out of Python's cyclic garbage
collector, as the command line does (``search.workers.run.freeze_start_up``), against the same
command with that freeze left out; each variant a fresh process, alternating rounds.

Each round runs each variant in a fresh process: the stub study of the test suite
(``tests/conftest.py``: 1-2 layers of 16-64 units, 2 epochs here), its trials in that process
after TensorFlow is imported; prints the CPU seconds of the trials, how many times the training
step was traced, and whether the trials' values are the same in both variants (they must be:
building the variables early draws no random number). Medians over the rounds at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

ROUND = """
import json, os, sys, tempfile, time, tomllib
sys.path[:0] = [{root!r}, {tests!r}]
os.environ.setdefault("HPSEARCH_TF_THREADS", "1")
from conftest import stub_study_text
import hpsearch
from objectives import mlp
from objectives.keras_setup import keras

traced = [0]
def counting(compiled_model):
    def wrapped(*args, **kwargs):
        compiled = compiled_model(*args, **kwargs)
        step = compiled.fitted.train_step
        def count(data):
            traced[0] += 1
            return step(data)
        compiled.fitted.train_step = count
        return compiled
    return wrapped
if {variant!r} == "twice":
    mlp.build_training_state = lambda model, labels: None  # Keras's own: built as it traces
mlp.compiled_model = counting(mlp.compiled_model)
settings = tomllib.loads(stub_study_text(
    study={{"n_trials": {trials}, "seed": 5, "warm_start": False}}, training={{"max_epochs": 2}}))
study = hpsearch.Study(settings, storage=f"sqlite:///{{tempfile.mkdtemp()}}/b.db")
started = time.process_time()
study.run()
print(json.dumps({{"cpu": time.process_time() - started, "traced": traced[0],
                  "values": [t.value for t in study.optuna.trials]}}))
"""


# `hpsearch worker` on a stub study, as the command line runs it; "thawed" leaves the freeze out.
WORKER = """
import sys
sys.path[:0] = [{root!r}]
from search.workers import run
if {variant!r} == "thawed":
    run.freeze_start_up = lambda: None
from search.cli import cli
sys.argv = ["hpsearch", "worker", {study!r}, "--threads", "1"]
cli()
"""


def worker_process(variant: str, trials: int) -> dict[str, Any]:
    """One ``hpsearch worker`` process's CPU seconds (its whole life) and its trials' values."""
    import os
    import resource
    import tempfile

    import optuna

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import stub_study_text

    folder = Path(tempfile.mkdtemp())
    study = folder / "study.toml"
    study.write_text(stub_study_text(study={"n_trials": trials, "warm_start": False}))
    url = f"sqlite:///{folder / 'b.db'}"
    code = WORKER.format(root=str(ROOT), variant=variant, study=str(study))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                   env={**os.environ, "HPSEARCH_STORAGE": url})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    trials_run = optuna.load_study(study_name="tiny", storage=url).trials
    return {"cpu": cpu, "values": [t.value for t in trials_run]}


def alternate(variants: tuple[str, str], run: Callable[[str], dict[str, Any]], rounds: int,
              detail: Callable[[dict[str, Any]], str] = lambda result: "") -> list[float]:
    """Run ``variants`` in alternating order, ``rounds`` times; print each round (CPU seconds,
    ``detail``, whether the trials' values agree); return each variant's median CPU seconds."""
    cpu: dict[str, list[float]] = {variant: [] for variant in variants}
    for number in range(1, rounds + 1):
        results = {}
        for variant in variants if number % 2 else variants[::-1]:
            results[variant] = run(variant)
            cpu[variant].append(float(results[variant]["cpu"]))
        same = results[variants[0]]["values"] == results[variants[1]]["values"]
        print(f"round {number}: " + ", ".join(
            f"{v} {results[v]['cpu']:.1f} CPU-s{detail(results[v])}" for v in variants)
            + f"; same values: {same}")
    return [statistics.median(cpu[variant]) for variant in variants]


def one(variant: str, trials: int) -> dict[str, Any]:
    code = ROUND.format(root=str(ROOT), tests=str(ROOT / "tests"), variant=variant,
                        trials=trials)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--freeze", action="store_true",
                        help="whole worker processes with and without the start-up freeze")
    args = parser.parse_args()
    if args.freeze:
        frozen, thawed = alternate(("frozen", "thawed"),
                                   lambda v: worker_process(v, args.trials), args.rounds)
        print(f"median of {args.rounds} rounds, a worker process of {args.trials} trials: "
              f"frozen {frozen:.1f} CPU-s, thawed {thawed:.1f} CPU-s: "
              f"{1 - frozen / thawed:.0%} less ({(thawed - frozen) / args.trials:.2f} CPU-s "
              "a trial)")
        return
    once, twice = alternate(("once", "twice"), lambda v: one(v, args.trials), args.rounds,
                            lambda result: f" ({result['traced']} traces)")
    print(f"median of {args.rounds} rounds, {args.trials} trials: traced once {once:.1f} CPU-s "
          f"({once / args.trials:.2f} a trial), twice {twice:.1f} CPU-s "
          f"({twice / args.trials:.2f} a trial): {1 - once / twice:.0%} less")

if __name__ == "__main__":
    main()
