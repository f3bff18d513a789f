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
from pathlib import Path

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


def worker_process(variant: str, trials: int) -> dict[str, object]:
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


def compare_freeze(rounds: int, trials: int) -> None:
    cpu: dict[str, list[float]] = {"frozen": [], "thawed": []}
    for number in range(1, rounds + 1):
        results = {}
        order = ("frozen", "thawed") if number % 2 else ("thawed", "frozen")
        for variant in order:
            results[variant] = worker_process(variant, trials)
            cpu[variant].append(float(results[variant]["cpu"]))  # type: ignore[arg-type]
        same = results["frozen"]["values"] == results["thawed"]["values"]
        print(f"round {number}: " + ", ".join(
            f"{v} {results[v]['cpu']:.1f} CPU-s" for v in ("frozen", "thawed"))
            + f"; same values: {same}")
    frozen, thawed = statistics.median(cpu["frozen"]), statistics.median(cpu["thawed"])
    print(f"median of {rounds} rounds, a worker process of {trials} trials: frozen "
          f"{frozen:.1f} CPU-s, thawed {thawed:.1f} CPU-s: {1 - frozen / thawed:.0%} less "
          f"({(thawed - frozen) / trials:.2f} CPU-s a trial)")


def one(variant: str, trials: int) -> dict[str, object]:
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
        compare_freeze(args.rounds, args.trials)
        return
    cpu: dict[str, list[float]] = {"once": [], "twice": []}
    for number in range(1, args.rounds + 1):
        results = {}
        order = ("once", "twice") if number % 2 else ("twice", "once")
        for variant in order:
            results[variant] = one(variant, args.trials)
            cpu[variant].append(float(results[variant]["cpu"]))  # type: ignore[arg-type]
        same = results["once"]["values"] == results["twice"]["values"]
        print(f"round {number}: " + ", ".join(
            f"{v} {results[v]['cpu']:.1f} CPU-s ({results[v]['traced']} traces)"
            for v in ("once", "twice")) + f"; same values: {same}")
    once, twice = statistics.median(cpu["once"]), statistics.median(cpu["twice"])
    print(f"median of {args.rounds} rounds, {args.trials} trials: traced once {once:.1f} CPU-s "
          f"({once / args.trials:.2f} a trial), twice {twice:.1f} CPU-s "
          f"({twice / args.trials:.2f} a trial): {1 - once / twice:.0%} less")


if __name__ == "__main__":
    main()
