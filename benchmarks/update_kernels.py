"""Why the fused optimizer update stays one XLA compilation per trial: the alternative that
compiles nothing (TensorFlow's own fused training kernels) beside it, in one run.

Run: .venv/bin/python benchmarks/update_kernels.py [--rounds 2] [--epochs 4]

Each XLA compilation of a trial's fused update stays in TensorFlow's compilation cache for the
life of the process (benchmarks/tf_retention.py), so a worker grows with each trial. An update
that compiles nothing would not grow that way: TensorFlow's fused training kernels
(``ResourceApplyAdam``, one pass over a weight), fed the
same gradients (the bfloat16 gradient widened and the L2 gradient added by TensorFlow ops
first, AdamW's decay by Keras). Contenders, each in a fresh process, in turn for ``--rounds``
rounds, on the deep reference MLP (``benchmarks/train_throughput.py``) with a study's default
training settings:

- ``xla``: hpsearch's training path (``fused_optimizer = true``);
- ``kernels``: the same with the update through TensorFlow's training kernels;
- ``keras``: Keras's own update (``fused_optimizer = false``);

each for AdamW with L2 1e-4 (the reference) and for Adam without L2 (the update alone, with no
passes for the penalty or the decay). Prints the median seconds per epoch (the first epoch of
each run, which traces, not counted). Only for this measurement: the kernels update is not
part of hpsearch (it is written for Adam and AdamW, the two cases, only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from train_throughput import PARAMS, _data, run_one  # noqa: E402  (the same MLP, data, runs)

CONTENDERS = ("xla", "kernels", "keras")
CASES = {"adamw, l2 1e-4": {}, "adam, no l2": {"optimizer": "adam", "l2": 0.0}}


def kernels_update(optimizer: Any, model: Any) -> Any:
    """``objectives.fast_path.fuse_updates``'s work without XLA: the same gradients, then one of
    TensorFlow's fused training kernels per weight."""
    import tensorflow as tf

    from objectives import fast_path

    slopes = fast_path._move_l2_gradients(model)
    fast_path._keep_low_precision_gradients(model)
    original = optimizer.apply
    if type(optimizer).__name__ not in ("Adam", "AdamW"):  # the two CASES below
        raise ValueError(f"the kernels update is written for Adam and AdamW only, not "
                         f"{type(optimizer).__name__}")

    def apply(grads: Any, trainable_variables: Any = None) -> Any:
        variables = list(trainable_variables)
        gradients = []
        for gradient, variable in zip(grads, variables):
            if gradient is not None:
                gradient = tf.cast(gradient, variable.value.dtype)
                if slopes.get(variable.path):
                    gradient = gradient + slopes[variable.path] * variable.value
            gradients.append(gradient)
        return original(gradients, variables)

    def update_step(gradient: Any, variable: Any, learning_rate: Any) -> None:
        dtype = variable.dtype
        index = optimizer._get_variable_index(variable)
        step = tf.cast(optimizer.iterations + 1, dtype)
        beta_1 = tf.cast(optimizer.beta_1, dtype)
        beta_2 = tf.cast(optimizer.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=optimizer._momentums[index].handle,
            v=optimizer._velocities[index].handle, beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, dtype), beta1=beta_1,
            beta2=beta_2, epsilon=tf.cast(optimizer.epsilon, dtype), grad=gradient)

    optimizer.apply = apply
    optimizer.update_step = update_step
    return optimizer


def train_epochs(contender: str, epochs: int, path: str | None, case: str) -> list[float]:
    import objectives.mlp as mlp
    from objectives.config import TrainingConfig
    from objectives.keras_setup import keras

    if contender == "kernels":
        mlp.fuse_updates = kernels_update
    keras.utils.set_random_seed(0)
    training = TrainingConfig(max_epochs=epochs, early_stopping_patience=epochs,
                              reduce_lr_patience=epochs, fused_optimizer=contender != "keras")
    params = {**PARAMS, **CASES[case]}
    outcome = mlp.train(params, _data(path), training, "val_accuracy")  # type: ignore[arg-type]
    return outcome.recorder.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run, the first "
                        "(tracing) not counted")
    parser.add_argument("--data-path")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--case", choices=list(CASES), default=next(iter(CASES)),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps({"seconds": train_epochs(args.one, args.epochs, args.data_path,
                                                  args.case)}))
        return

    from _docs import machine
    from objectives.fast_path import dtype_policy

    print(f"machine: {machine()}; hidden layers compute in {dtype_policy('auto') or 'float32'}")
    epochs: dict[tuple[str, str], list[float]] = {}
    for round_number in range(args.rounds):
        for case in CASES:
            for contender in CONTENDERS:
                result: Any = run_one(contender, args.epochs, args.data_path, script=__file__,
                                      extra=["--case", case])
                measured = [float(s) for s in result["seconds"]][1:]
                epochs.setdefault((case, contender), []).extend(measured)
                print(f"  round {round_number + 1}: {case:<15} {contender:<8} "
                      + " ".join(f"{s:.2f}" for s in measured) + " s/epoch", flush=True)
    print(f"\n{'':<16}" + "".join(f"{c:>10}" for c in CONTENDERS) + "   kernels vs xla")
    for case in CASES:
        medians = [statistics.median(epochs[(case, c)]) for c in CONTENDERS]
        print(f"{case:<16}" + "".join(f"{m:>10.2f}" for m in medians)
              + f"   {(medians[1] / medians[0] - 1) * 100:+.0f} %")


if __name__ == "__main__":
    main()
