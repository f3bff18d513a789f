"""The GPU check: one short run, on a machine with NVIDIA GPUs, of what hpsearch decides there and
how fast it trains.

Run: .venv/bin/python benchmarks/gpu_check.py [--rounds 2] [--epochs 3] [--cpu]

It prints, in this order:

- the GPUs TensorFlow sees (model, compute capability) and what ``precision = "auto"`` chose,
  whether the fused optimizer update is on (off on a GPU: it was built and measured for CPUs);
- the limit of that precision: a 4096x4096 matrix product in it, TensorFlow on the first GPU;
- s/epoch of the deep reference MLP (3072-512-256-128-10, 45,000 random images), ``hpsearch``
  (a trial's training) beside plain ``model.fit``, each in a fresh process, alternating for
  ``--rounds`` rounds, medians of the epochs after the first (benchmarks/train_throughput.py's
  contenders and clock);
- the GPU's idle share during an epoch of hpsearch's training (``nvidia-smi``'s utilization
  sampled every 100 ms within each run's last epoch: the share of samples at 0 %, and the
  mean utilization);
- a stub study of 3 trials per GPU run with ``--workers auto``: one worker per GPU, each
  seeing only its own, and the precision each trial recorded.

Without a GPU it says so and stops (exit 2); ``--cpu`` runs the same steps on the CPU, to check
the script itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import train_throughput  # noqa: E402  (the reference MLP, its contenders and their clock)


def matmul_rate(dtype: str, size: int = 4096) -> float:
    """GFLOP/s of a ``size`` square matrix product in ``dtype`` on TensorFlow's default device."""
    import tensorflow as tf

    a = tf.random.normal((size, size), dtype=tf.float32)
    a = tf.cast(a, {"mixed_bfloat16": tf.bfloat16, "mixed_float16": tf.float16}.get(
        dtype, tf.float32))
    product = tf.function(lambda m: tf.matmul(m, m))
    for _ in range(3):
        product(a).numpy()
    times = []
    for _ in range(10):
        started = time.perf_counter()
        product(a).numpy()  # .numpy() waits for the device
        times.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(times) / 1e9


class Utilization:
    """``nvidia-smi``'s GPU utilization, sampled every 100 ms while in the ``with``, each
    sample with its time (``time.monotonic``)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.process: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None

    def __enter__(self) -> Utilization:
        if shutil.which("nvidia-smi") is None:
            return self
        self.process = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
             "-lms", "100"], stdout=subprocess.PIPE, text=True)

        def read() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                first = line.strip().split(",")[0]
                if first.isdigit():
                    self.samples.append((time.monotonic(), float(first)))

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)



def utilization_said(samples: list[float]) -> str:
    if not samples:
        return "no nvidia-smi: not measured"
    idle = sum(s == 0 for s in samples) / len(samples)
    return (f"idle {idle:.0%} of {len(samples)} samples, mean utilization "
            f"{statistics.mean(samples):.0f} %")


def watched_epochs(contender: str, epochs: int) -> dict[str, list[float]]:
    """One contender's epochs, and the GPU's utilization within its last epoch."""
    with Utilization() as watched:
        seconds = train_throughput.train_epochs(contender, epochs, None)
        ended = time.monotonic()
    last = [u for t, u in watched.samples if t >= ended - seconds[-1]]
    return {"seconds": seconds, "utilization": last}


def study_per_gpu(gpus: int) -> None:
    """A stub study of 3 trials per GPU with ``--workers auto``; each trial's worker and
    precision."""
    import optuna

    trials = 3 * max(gpus, 1)
    with tempfile.TemporaryDirectory(prefix="hpsearch-gpu-check-") as folder:
        url = f"sqlite:///{folder}/check.db"
        started = time.perf_counter()
        done = subprocess.run(
            [str(REPO / ".venv" / "bin" / "hpsearch"), "run", str(REPO / "studies" / "smoke.toml"),
             "--workers", "auto", "--n-trials", str(trials), "--storage", url,
             "--artifacts", f"{folder}/artifacts"],
            capture_output=True, text=True, timeout=1800)
        seconds = time.perf_counter() - started
        print(f"stub study, {trials} trials, --workers auto: exit {done.returncode} in "
              f"{seconds:.0f} s")
        if done.returncode != 0:
            print(done.stderr[-2000:])
            return
        study = optuna.load_study(study_name="smoke", storage=url)
        for trial in study.trials:
            print(f"  trial {trial.number}: {trial.state.name.lower()}, worker "
                  f"{trial.user_attrs.get('worker')}, precision "
                  f"{trial.user_attrs.get('precision')}, "
                  f"{trial.user_attrs.get('seconds_per_epoch')} s/epoch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (checks the script)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # one contender's run, in its own process
        print(json.dumps(watched_epochs(args.one, args.epochs)))
        return

    from objectives.devices import chosen_precision, visible_gpus
    from objectives.fast_path import fused_update_supported

    gpus = visible_gpus()
    if not gpus and not args.cpu:
        print("no GPU visible to TensorFlow: nothing to check (--cpu runs the steps on the CPU)")
        raise SystemExit(2)
    from _docs import machine

    print(f"machine: {machine()}")
    for gpu in gpus:
        print(f"GPU: {gpu.model}, compute capability {gpu.compute_capability}")
    precision = chosen_precision()
    print(f"precision auto: {precision}; fused optimizer update "
          f"{'on' if fused_update_supported() else 'off'}")
    print(f"limit: 4096x4096 matmul in {precision}: {matmul_rate(precision):.0f} GFLOP/s")

    flops = train_throughput.epoch_flops()
    epochs: dict[str, list[float]] = {"plain fit": [], "hpsearch": []}
    utilization: dict[str, list[float]] = {contender: [] for contender in epochs}
    for round_number in range(args.rounds):
        for contender in epochs:
            result = train_throughput.run_one(contender, args.epochs, None, script=__file__)
            utilization[contender] += result["utilization"]  # type: ignore[arg-type]
            measured = [float(s) for s in result["seconds"]][1:]  # type: ignore[union-attr]
            epochs[contender] += measured
            print(f"  round {round_number + 1}: {contender:<10} "
                  + " ".join(f"{s:.2f}" for s in measured) + " s/epoch", flush=True)
    for contender, values in epochs.items():
        seconds = statistics.median(values)
        print(f"{contender:<10} {seconds:.2f} s/epoch, {flops / seconds / 1e9:.0f} GFLOP/s")
    print(f"speed-up of hpsearch over plain fit: "
          f"{statistics.median(epochs['plain fit']) / statistics.median(epochs['hpsearch']):.2f}x")
    for contender, samples in utilization.items():
        print(f"GPU during the last epoch, {contender}: {utilization_said(samples)}")
    study_per_gpu(len(gpus))


if __name__ == "__main__":
    main()
