"""A worker killed mid-trial, and its trial carried on by the next worker: what the checkpoint
saved, against the same trial run in one go, in one run.

Run: .venv/bin/python benchmarks/resume.py [--data-path ../shared/data/cifar10-jpeg.tar.gz]
         [--kill-at 8]

The study's first trial (on CIFAR-10 the default study's first warm-start reference, the deep
hand-built MLP for 18 epochs; on stub data a small network for 12) is run three ways, each by
real ``hpsearch worker`` processes on a SQLite file of its own: in one go; by a worker killed
with SIGKILL once the trial's checkpoint holds ``--kill-at`` epochs; and by the next worker,
which fails the dead worker's trial after the grace period and retries it. Printed: the
epoch the retry resumed at, the epochs it trained, the epochs (and seconds) the checkpoint
saved, and whether the resumed trial's history equals the uninterrupted one's.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from objectives.checkpoints import CheckpointError, TrainingState  # noqa: E402

HPSEARCH = str(Path(sys.executable).parent / "hpsearch")
WORKERS = """
[workers]
heartbeat_interval = 2
grace_period = 10
"""
STUB = """
[study]
name = "resume"
n_trials = 1
seed = 3
warm_start = false
[pruner]
type = "none"
[data]
dataset = "stub"
[training]
max_epochs = 12
early_stopping_patience = 12
[space]
n_layers = 2
units = 512
batch_size = 64
"""


def _study_file(folder: Path, data_path: str | None) -> Path:
    if data_path:
        text = (REPO / "studies" / "cifar10-mlp.toml").read_text()
        text = text.replace("n_trials = 60", "n_trials = 1").replace(
            'dataset = "cifar10"', f'dataset = "cifar10"\npath = "{Path(data_path).resolve()}"')
        text = text.replace("[study]", '[study]\nname = "resume"')
    else:
        text = STUB
    path = folder / "study.toml"
    path.write_text(text + WORKERS)
    return path


def _worker(study: Path, url: str, artifacts: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([HPSEARCH, "worker", str(study)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HPSEARCH_STORAGE": url,
                                 "HPSEARCH_ARTIFACTS": str(artifacts)})


def _epochs_held(path: Path) -> int:
    try:
        return TrainingState.from_bytes(path.read_bytes()).epoch
    except (OSError, CheckpointError):
        return 0


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="resume", storage=url).trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path")
    parser.add_argument("--kill-at", type=int, default=8)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="hpsearch-resume-") as tmp:
        folder = Path(tmp)
        study = _study_file(folder, args.data_path)

        started = time.perf_counter()
        whole_url = f"sqlite:///{folder / 'whole.db'}"
        whole = _worker(study, whole_url, folder / "whole-artifacts")
        _, errors = whole.communicate()
        if whole.returncode != 0:
            sys.exit(f"the uninterrupted run failed:\n{errors}")
        whole_seconds = time.perf_counter() - started
        (reference,) = _trials(whole_url)
        print(f"in one go: {reference.user_attrs['epochs_run']} epochs, "
              f"{reference.user_attrs['seconds_per_epoch']:.2f} s/epoch, "
              f"{args.data_path and 'val_accuracy' or 'value'} {reference.value:.4f}, "
              f"{whole_seconds:.0f} s", flush=True)

        url = f"sqlite:///{folder / 'killed.db'}"
        artifacts = folder / "artifacts"
        checkpoint = artifacts / "checkpoints" / "resume" / "trial-0.npz"
        started = time.perf_counter()
        victim = _worker(study, url, artifacts)
        while _epochs_held(checkpoint) < args.kill_at and victim.poll() is None:
            time.sleep(0.1)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        held = _epochs_held(checkpoint)
        print(f"killed with SIGKILL {time.perf_counter() - started:.0f} s in, its checkpoint "
              f"holding {held} epochs", flush=True)
        survivor = _worker(study, url, artifacts)
        _, errors = survivor.communicate()
        if survivor.returncode != 0:
            sys.exit(f"the next worker failed:\n{errors}")
        total = time.perf_counter() - started
        lines = [line for line in errors.splitlines() if "resumes" in line]
        retry = next(t for t in _trials(url) if "resumes" in t.user_attrs)
        history = retry.user_attrs["history"]
        same = history == reference.user_attrs["history"]
        trained = retry.user_attrs["epochs_run"] - retry.user_attrs["resumed_at_epoch"]
        per_epoch = reference.user_attrs["seconds_per_epoch"]
        print(f"the next worker: {lines[0] if lines else 'no resume line'}")
        print(f"retry: trial {retry.number}, resumed at epoch "
              f"{retry.user_attrs['resumed_at_epoch']},"
              f" trained {trained} more epochs ({retry.user_attrs['epochs_run']} in all), "
              f"value {retry.value:.4f}; history equal to the uninterrupted run's: {same}")
        print(f"saved: {retry.user_attrs['resumed_at_epoch']} epochs, about "
              f"{retry.user_attrs['resumed_at_epoch'] * per_epoch:.0f} s of training; kill to "
              f"end {total:.0f} s (with the grace period and two worker starts)")
        left = list((artifacts / "checkpoints").rglob("*.npz"))
        print(f"checkpoints left: {len(left)}")
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}")


if __name__ == "__main__":
    main()
