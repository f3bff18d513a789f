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
one step, with a fixed parallelism. Epoch ``e``'s order is a function of the order's seed and
``e`` alone, so a trial resumed from a checkpoint at epoch ``e`` (``objectives.checkpoints``)
sees the batches the uninterrupted trial would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

PREFETCH = 2  # batches gathered ahead of the step that needs them


def order_seed() -> int:
    """A seed for :func:`batches`' orders, from NumPy's global generator (which
    ``keras.utils.set_random_seed`` seeds)."""
    return int(np.random.randint(2**31 - 1))


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of ``n`` samples in epoch ``epoch`` (0-based) of an order seeded ``seed``."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool,
            seed: int | None = None, first_epoch: int = 0, flip: bool = False,
            shift: int = 0) -> tf.data.Dataset:
    """One epoch of ``(x, y)`` batches; with ``shuffle``, in a new order every time the
    dataset is iterated: the ``k``-th iteration is epoch ``first_epoch + k`` of the order
    seeded ``seed`` (by default :func:`order_seed`).

    With ``shuffle``, images (``x`` of shape (n, height, width, channels)) may also be
    augmented, each one independently: ``flip``, left to right with probability 1/2;
    ``shift``, moved by up to ``shift`` pixels each way, the border filled with zeros (padding,
    then a random crop). The flips and shifts of an epoch follow from the seed and the epoch
    alone, as the order does, so a resumed training sees the images of the uninterrupted one.

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
    augment = shuffle and (flip or shift > 0)
    if augment and x.ndim != 4:
        raise ValueError(f"augmentation needs images of shape (n, height, width, channels), "
                         f"but got {x.shape}")
    inputs = (tf.convert_to_tensor(x), tf.convert_to_tensor(y))

    def gather(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.gather(inputs[0], indices), tf.gather(inputs[1], indices)

    def gather_augmented(indices: tf.Tensor, flips: tf.Tensor,
                         offsets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # The cheapest way found on a CPU: a flip picks each image or its mirror with one
        # gather; a shift is a glimpse at integer offsets, zeros outside the image. On the
        # deep reference MLP flips and shifts of up to 4 pixels cost 15 % of an epoch
        # (benchmarks/train_throughput.py); Keras's random layers in the model cost 52 %.
        images = tf.gather(inputs[0], indices)
        if flip:
            count = tf.shape(images)[0]
            both = tf.concat([images, tf.reverse(images, axis=[2])], axis=0)
            images = tf.gather(both, tf.range(count) + count * tf.cast(flips, tf.int32))
        if shift > 0:
            moved = tf.image.extract_glimpse(
                tf.cast(images, tf.float32), tf.shape(images)[1:3], offsets, centered=False,
                normalized=False, noise="zero")
            images = tf.cast(moved, images.dtype)
        return images, tf.gather(inputs[1], indices)

    if shuffle:
        # A new order every iteration (epoch): Keras makes one iterator per epoch, in turn.
        orders = _EpochOrders(n, batch_size, order_seed() if seed is None else seed,
                              first_epoch, shift if augment else None)
        signature: Any = tf.TensorSpec([None], tf.int64)
        if augment:
            signature = (signature, tf.TensorSpec([None], tf.bool),
                         tf.TensorSpec([None, 2], tf.float32))
        order = tf.data.Dataset.from_generator(orders, output_signature=signature)
    else:
        order = tf.data.Dataset.range(n).batch(batch_size)
    n_batches = -(-n // batch_size)
    dataset = (order.map(gather_augmented if augment else gather, num_parallel_calls=1)
               .prefetch(PREFETCH)
               .apply(tf.data.experimental.assert_cardinality(n_batches)))
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.with_options(options)


class _EpochOrders:
    """The index batches of one epoch per call, epoch after epoch; with ``shift`` (not None),
    each with its images' flips and offsets (``-shift`` to ``shift`` pixels, rows and
    columns)."""

    def __init__(self, n: int, batch_size: int, seed: int, first_epoch: int,
                 shift: int | None = None) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, first_epoch
        self.shift = shift

    def __call__(self) -> Iterator[Any]:
        order = epoch_order(self.n, self.seed, self.epoch)
        if self.shift is not None:
            # its own stream, so that the order is the same with augmentation or without
            rng = np.random.default_rng([self.seed, self.epoch, 1])
            flips = rng.random(self.n) < 0.5
            offsets = rng.integers(-self.shift, self.shift + 1, size=(self.n, 2)).astype(
                np.float32)
        self.epoch += 1
        for start in range(0, self.n, self.batch_size):
            batch = order[start:start + self.batch_size]
            if self.shift is None:
                yield batch
            else:
                rows = slice(start, start + self.batch_size)
                yield batch, flips[rows], offsets[rows]
