"""The input pipeline that feeds a trial's model: the batches ``model.fit`` would make from
NumPy arrays, without two faults of Keras's own pipeline.

- **A stall.** ``model.fit`` on arrays builds a tf.data pipeline whose batch gathering and
  prefetching tf.data autotunes. On these 2-core machines that cost some epochs, at random,
  1.5 to 2.5 s before their first step (about one epoch in two on the deep reference MLP,
  whose epochs otherwise take 3.5 to 4 s); with autotuning off the stall is gone.
- **The same order every epoch.** That pipeline draws each epoch's permutation with
  ``tf.random.shuffle`` in a dataset function, which starts from the same seed for each new
  iterator: once ``keras.utils.set_random_seed`` has been called (every trial calls it), every
  epoch sees the samples in the same order. Here the order is new every epoch and still
  reproducible from the seed.

:func:`batches` makes full batches and then the partial one, each gathered from the arrays in
one step, with a fixed parallelism.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

PREFETCH = 2  # batches gathered ahead of the step that needs them


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool) -> tf.data.Dataset:
    """One epoch of ``(x, y)`` batches; with ``shuffle``, in a new order every time the
    dataset is iterated.

    Example:
        >>> data = batches(np.zeros((10, 2), np.uint8), np.arange(10), 4, shuffle=False)
        >>> [len(batch_y) for _, batch_y in data]
        [4, 4, 2]
    """
    import tensorflow as tf

    n = len(x)
    if n != len(y):
        raise ValueError(f"x has {n} samples but y has {len(y)}")
    if n == 0:
        raise ValueError("no samples to feed")
    inputs = (tf.convert_to_tensor(x), tf.convert_to_tensor(y))

    def gather(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.gather(inputs[0], indices), tf.gather(inputs[1], indices)

    order = tf.data.Dataset.range(n)
    if shuffle:  # a new order every iteration (epoch), from the seed of keras.utils
        order = order.shuffle(n, reshuffle_each_iteration=True)
    dataset = order.batch(batch_size).map(gather, num_parallel_calls=1).prefetch(PREFETCH)
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.with_options(options)
