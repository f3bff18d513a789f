"""Trials per hour of a whole study on this machine, for K workers x T TensorFlow threads.

Run: .venv/bin/python benchmarks/study_throughput.py --data-path ../shared/data/cifar10-jpeg.tar.gz
         [--minutes 4] [--layouts 1x2 2x1] [--no-docs]

Each layout runs ``hpsearch run --workers K --threads T`` for ``--minutes`` on CIFAR-10 (a
fresh SQLite study each), every trial the same configuration (the deep reference MLP, 3
epochs, no pruning), so that only the layout varies. Counted: finished trials and epochs per
hour of wall time, from the start of the command until its last trial ends. The best layout
is what ``hpsearch run --workers auto`` should choose on a machine like this one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
HPSEARCH = Path(sys.executable).parent / "hpsearch"

STUDY = """
[study]
name = "throughput"
n_trials = 1000
seed = 0
[pruner]
type = "none"
[data]
dataset = "cifar10"
[training]
max_epochs = 3
early_stopping_patience = 3
[space]
n_layers = 3
units = 512
activation = "relu"
batch_norm = true
dropout = 0.3
l2 = 1e-4
initializer = "he_normal"
optimizer = "adamw"
learning_rate = 1e-3
weight_decay = 1e-4
batch_size = 128
[artifacts]
figures = false
keep_models = 0
"""


def measure(layout: str, minutes: float, data_path: str, folder: Path) -> tuple[int, int, float]:
    import optuna

    workers, threads = layout.split("x")
    study_file = folder / f"throughput-{layout}.toml"
    study_file.write_text(STUDY)
    url = f"sqlite:///{folder / f'{layout}.db'}"
    started = time.perf_counter()
    subprocess.run([str(HPSEARCH), "run", str(study_file), "--storage", url, "--workers",
                    workers, "--threads", threads, "--timeout", str(minutes * 60),
                    "--data-path", data_path], check=True, capture_output=True,
                   env={**os.environ, "HPSEARCH_ARTIFACTS": str(folder / "artifacts")})
    seconds = time.perf_counter() - started
    trials = [t for t in optuna.load_study(study_name="throughput", storage=url).trials
              if t.state == optuna.trial.TrialState.COMPLETE]
    epochs = sum(int(t.user_attrs.get("epochs_run", 0)) for t in trials)
    return len(trials), epochs, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", required=True)
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--layouts", nargs="+", default=["1x2", "2x1"])
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    from _docs import command, machine, write_section

    print(f"machine: {machine()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        for layout in args.layouts:
            trials, epochs, seconds = measure(layout, args.minutes, args.data_path, Path(tmp))
            per_hour, epochs_per_hour = trials / seconds * 3600, epochs / seconds * 3600
            print(f"{layout:>6} workers x threads: {trials} trials, {epochs} epochs in "
                  f"{seconds:.0f} s: {per_hour:.0f} trials/h, {epochs_per_hour:.0f} epochs/h",
                  flush=True)
            rows.append(f"| {layout} | {trials} | {seconds:.0f} | {per_hour:.0f} | "
                        f"{epochs_per_hour:.0f} |")
    if not args.no_docs:
        body = "\n".join([
            "## Study throughput by layout (`benchmarks/study_throughput.py`)", "",
            f"Command: `{command()}`  ", f"Machine: {machine()}", "",
            "The deep reference MLP for 3 epochs per trial on CIFAR-10, no pruning, "
            f"{args.minutes:g} minutes per layout (workers x TensorFlow threads).", "",
            "| layout | trials | seconds | trials/h | epochs/h |",
            "| --- | --- | --- | --- | --- |",
            *rows,
        ])
        print(f"written to {write_section('study_throughput', body)}")


if __name__ == "__main__":
    main()
