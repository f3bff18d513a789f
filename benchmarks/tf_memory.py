"""What TensorFlow keeps from one trial to the next, in one process: the reproduction behind
search/workers/fresh_start.py.

Run: .venv/bin/python benchmarks/tf_memory.py MODE [--trials 30]
     TF_ENABLE_ONEDNN_OPTS=0 .venv/bin/python benchmarks/tf_memory.py MODE

MODE: ``fused`` (hpsearch's training path) or ``plain`` (Keras's own optimizer update), each
with new layer shapes every trial; ``fused-same`` and ``plain-same``, the same shapes every
trial. Each trial builds, compiles and fits an MLP for 2 epochs on 2,000 stub images inside
``objectives.between_trials.fresh_session`` (Keras's ``clear_session`` and the gradient-registry
cleanup), then collects garbage; prints the RSS after trials 1, 10, 20, 30 and the growth from
trial 10. ``--clear-kernel-cache`` also clears TensorFlow's eager kernel cache and
``--malloc-trim`` hands freed heap back to the system after every trial; ``--reset-context``
replaces TensorFlow's eager context (its devices and their resource managers) after every
trial.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["fused", "plain", "fused-same", "plain-same"])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--clear-kernel-cache", action="store_true")
    parser.add_argument("--malloc-trim", action="store_true")
    parser.add_argument("--reset-context", action="store_true")
    args = parser.parse_args()

    import psutil

    from objectives.config import TrainingConfig
    from objectives.data import CIFAR10_CLASSES, Dataset
    from objectives.feed import batches
    from objectives.mlp import compiled_model
    from objectives.between_trials import fresh_session

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(2000, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=2000)
    dataset = Dataset(x, y, x[:500], y[:500], x[:100], y[:100], CIFAR10_CLASSES)
    training = TrainingConfig(fused_optimizer=args.mode.startswith("fused"))
    process = psutil.Process()
    rss: list[float] = []
    for trial in range(args.trials):
        params: dict[str, Any] = {
            "n_layers": int(rng.integers(1, 5)), "activation": "relu", "batch_norm": True,
            "dropout": 0.1, "l2": 1e-5, "initializer": "he_normal",
            "optimizer": ["adam", "adamw", "sgd", "rmsprop"][trial % 4],
            "learning_rate": 1e-3, "weight_decay": 1e-4, "momentum": 0.9, "nesterov": False,
            "rho": 0.9, "batch_size": 128,
            **{f"units_l{layer}": int(rng.integers(32, 512)) for layer in range(4)}}
        if args.mode.endswith("same"):
            params.update(n_layers=3, units_l0=300, units_l1=200, units_l2=100,
                          optimizer="adam")
        with fresh_session():
            model = compiled_model(params, dataset, training).fitted
            model.fit(batches(x, y, 128, shuffle=True), epochs=2, verbose=0,
                      validation_data=batches(x[:500], y[:500], 1024, shuffle=False))
            del model
        if args.clear_kernel_cache:
            from tensorflow.python.eager import context

            context.context().clear_kernel_cache()
        if args.reset_context:
            from tensorflow.python.eager import context

            context._reset_context()
        gc.collect()
        if args.malloc_trim:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        rss.append(process.memory_info().rss / 2**20)
        if trial + 1 in (1, 10, 20, 30, 40, 60):
            print(f"{args.mode}: after trial {trial + 1:3d}: RSS {rss[-1]:7.1f} MB", flush=True)
    if len(rss) > 10:
        print(f"{args.mode}: growth from trial 10 to {len(rss)}: {rss[-1] - rss[9]:+.0f} MB")


if __name__ == "__main__":
    main()
