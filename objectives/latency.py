"""A model's inference time per image, measured the same way for every trial.

The model as it is saved (raw images in, its preprocessing included) is called in one
compiled ``tf.function`` on a batch of 1 and on a batch of :data:`LARGE_BATCH` zero images;
after warm-up calls, :data:`ROUNDS` rounds of calls are timed and the fastest round counts
(as ``timeit`` advises: slower rounds measure what else ran, not the model), divided by the
calls and the images. The time depends on the model's layers and shapes, not
on its weights, so it is measured before the trial trains (a trial over a latency constraint is
then never trained). It is this machine's time, with whatever else it runs at that moment
(other workers' training included): compare latencies measured in one study on one machine.
"""

from __future__ import annotations

import time

import numpy as np

from objectives.keras_setup import keras

LARGE_BATCH = 256
ROUNDS = 5
WARMUP_CALLS = 3


def _per_image_ms(call: object, batch: np.ndarray, calls: int) -> float:
    import tensorflow as tf

    x = tf.constant(batch)
    for _ in range(WARMUP_CALLS):
        call(x).numpy()  # type: ignore[operator]
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(calls):
            call(x).numpy()  # type: ignore[operator]
        rounds.append((time.perf_counter() - started) / calls)
    return min(rounds) * 1000.0 / len(batch)


def measure(model: keras.Model) -> dict[str, float]:
    """``latency_ms`` (per image at batch 1) and ``latency_ms_batch256`` (per image at batch
    256), in milliseconds, rounded to the microsecond."""
    import tensorflow as tf

    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    dtype = tf.dtypes.as_dtype(model.inputs[0].dtype).as_numpy_dtype
    return {
        "latency_ms": round(_per_image_ms(call, np.zeros((1, *shape), dtype), 20), 3),
        f"latency_ms_batch{LARGE_BATCH}": round(
            _per_image_ms(call, np.zeros((LARGE_BATCH, *shape), dtype), 2), 4),
    }
