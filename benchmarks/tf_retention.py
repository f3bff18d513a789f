"""A minimal reproduction, in TensorFlow alone, of what XLA keeps from each trial.

Run: .venv/bin/python benchmarks/tf_retention.py new [--rounds 200]
     .venv/bin/python benchmarks/tf_retention.py reused [--rounds 200]

Each round creates a float32 variable of the same shape (512x256) and updates it once with an
XLA-compiled function (``tf.function(jit_compile=True)``), then drops the variable and
collects garbage:

- ``new``: a new compiled function every round, closing over that round's variable, as each
  trial's fused optimizer update is (objectives/fast_path.py);
- ``reused``: one compiled function for every round, taking the variable as an argument.

Prints the resident memory every ``--rounds / 5`` rounds and the growth per round after the
first tenth (warm-up). ``new`` grows by a compilation every round, though every round has the
same shapes and nothing of an earlier round is reachable: TensorFlow's device compilation
cache (``tensorflow/compiler/jit/device_compilation_cache.h``) has no eviction, and a new
function is a new cache key (tensorflow/tensorflow#64170). ``reused`` stays level.
"""

from __future__ import annotations

import argparse
import gc
import os
from pathlib import Path


def resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["new", "reused"])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()

    import tensorflow as tf

    @tf.function(jit_compile=True)
    def shared_update(variable: tf.Variable, gradient: tf.Tensor) -> None:
        variable.assign_sub(0.01 * gradient + 1e-4 * variable)

    def one_round() -> None:
        variable = tf.Variable(tf.zeros([512, 256]))
        gradient = tf.ones([512, 256])
        if args.mode == "reused":
            shared_update(variable, gradient)
            return

        @tf.function(jit_compile=True)
        def update(gradient: tf.Tensor) -> None:
            variable.assign_sub(0.01 * gradient + 1e-4 * variable)

        update(gradient)

    warm = max(1, args.rounds // 10)
    start = 0.0
    for index in range(args.rounds):
        one_round()
        gc.collect()
        if index + 1 == warm:
            start = resident_mb()
        if (index + 1) % max(1, args.rounds // 5) == 0:
            print(f"{args.mode}: after round {index + 1:4d}: RSS {resident_mb():7.1f} MB",
                  flush=True)
    per_round = (resident_mb() - start) / (args.rounds - warm) * 1024
    print(f"{args.mode}: {per_round:+.0f} KB a round after round {warm}")


if __name__ == "__main__":
    main()
