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
    if augment:
        # The images are augmented where the order is drawn, in NumPy (see ``Augment``).
        orders = _EpochOrders(n, batch_size, order_seed() if seed is None else seed,
                              first_epoch, Augment(x, y, flip=flip, shift=shift))
        dataset = tf.data.Dataset.from_generator(orders, output_signature=(
            tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype)),
            tf.TensorSpec((None, *y.shape[1:]), tf.as_dtype(y.dtype))))
        return _finish(dataset, -(-n // batch_size))
    inputs = (tf.convert_to_tensor(x), tf.convert_to_tensor(y))

    def gather(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.gather(inputs[0], indices), tf.gather(inputs[1], indices)

    if shuffle:
        # A new order every iteration (epoch): Keras makes one iterator per epoch, in turn.
        orders = _EpochOrders(n, batch_size, order_seed() if seed is None else seed,
                              first_epoch)
        order = tf.data.Dataset.from_generator(
            orders, output_signature=tf.TensorSpec([None], tf.int64))
    else:
        order = tf.data.Dataset.range(n).batch(batch_size)
    return _finish(order.map(gather, num_parallel_calls=1), -(-n // batch_size))


def _finish(dataset: tf.data.Dataset, n_batches: int) -> tf.data.Dataset:
    """``dataset`` prefetched, its length known, tf.data's autotuning off."""
    import tensorflow as tf

    dataset = (dataset.prefetch(PREFETCH)
               .apply(tf.data.experimental.assert_cardinality(n_batches)))
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.with_options(options)


class Augment:
    """Batches of images of ``x`` (n, height, width, channels), each flipped left to right
    (where ``flips`` says) and then moved by its offsets (rows, columns), the border filled
    with zeros: pixel ``(i, j)`` of the result is pixel ``(i + dy, j + dx)`` of the flipped
    image, or zero outside it.

    The cheapest way found on a CPU: one slice of each image copied into a batch of zeros, by
    slices worked out once per offset; flips alone are one gather and one reversed copy.
    TensorFlow's ops gather such images pixel by pixel: ``tf.image.extract_glimpse`` (the feed
    before this) took 5 times as long per batch, a gather of the pixels' indices 2.5 times
    (``benchmarks/augment_feed.py``). It runs in the feed's thread, beside the training step
    (``benchmarks/train_throughput.py``: what it costs an epoch).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, *, flip: bool, shift: int) -> None:
        self.x, self.y, self.flip, self.shift = x, y, flip, shift
        height, width = x.shape[1:3]
        # for each offset d in -shift..shift: where the moved image lands, where it comes
        # from, and where it comes from in the flipped image
        self._rows = [_moved(d, height) for d in range(-shift, shift + 1)]
        self._cols = [_moved(d, width) for d in range(-shift, shift + 1)]
        self._flipped_cols = [(to, _reversed(source, width)) for to, source in self._cols]

    def __call__(self, rows: np.ndarray, flips: np.ndarray,
                 offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The images of ``rows`` (indices into ``x``), augmented, and their labels."""
        if self.shift == 0:
            images = self.x[rows]
            if self.flip:
                images[flips] = images[flips, :, ::-1]
            return images, self.y[rows]
        images = np.zeros((len(rows), *self.x.shape[1:]), self.x.dtype)
        flips = flips if self.flip else np.zeros(len(rows), bool)
        x, shift = self.x, self.shift
        for k, (row, flipped, dy, dx) in enumerate(zip(
                rows.tolist(), flips.tolist(), offsets[:, 0].tolist(), offsets[:, 1].tolist())):
            to_rows, from_rows = self._rows[dy + shift]
            to_cols, from_cols = (self._flipped_cols if flipped else self._cols)[dx + shift]
            images[k, to_rows, to_cols] = x[row, from_rows, from_cols]
        return images, self.y[rows]


def _moved(offset: int, size: int) -> tuple[slice, slice]:
    """Along one axis of ``size`` pixels, result pixel ``i`` is source pixel ``i + offset``:
    the result's pixels that have one, and theirs."""
    return (slice(max(0, -offset), size - max(0, offset)),
            slice(max(0, offset), size + min(0, offset)))


def _reversed(source: slice, size: int) -> slice:
    """``source`` of an axis read in reverse: ``a[::-1][source]`` as one slice of ``a``."""
    start, stop, _ = source.indices(size)
    last = size - stop  # the reversed range's last index, exclusive, counting from the start
    return slice(size - 1 - start, last - 1 if last > 0 else None, -1)


class _EpochOrders:
    """The index batches of one epoch per call, epoch after epoch; with ``augment``, the
    batches themselves, each image flipped or not and moved by up to ``augment.shift`` pixels
    each way (rows and columns) as drawn for it."""

    def __init__(self, n: int, batch_size: int, seed: int, first_epoch: int,
                 augment: Augment | None = None) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, first_epoch
        self.augment = augment

    def __call__(self) -> Iterator[Any]:
        order = epoch_order(self.n, self.seed, self.epoch)
        if self.augment is not None:
            # its own stream, so that the order is the same with augmentation or without
            rng = np.random.default_rng([self.seed, self.epoch, 1])
            flips = rng.random(self.n) < 0.5
            shift = self.augment.shift
            offsets = rng.integers(-shift, shift + 1, size=(self.n, 2))
        self.epoch += 1
        for start in range(0, self.n, self.batch_size):
            batch = order[start:start + self.batch_size]
            if self.augment is None:
                yield batch
            else:
                rows = slice(start, start + self.batch_size)
                yield self.augment(batch, flips[rows], offsets[rows])
