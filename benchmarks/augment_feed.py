"""Milliseconds per batch of the feed's flips and shifts, side by side with the ways TensorFlow
does them, in one run.

Run: .venv/bin/python benchmarks/augment_feed.py [--rounds 5] [--batch 128] [--shift 4]
         [--no-docs]

Each contender makes the same augmented batch of CIFAR-10-shaped uint8 images (random pixels,
45,000 of them, a random flip and random offsets of up to ``--shift`` pixels each way per
image) and is timed over 200 batches, in turn, for ``--rounds`` rounds; the medians are
compared. All give identical batches (checked first):

- ``gather only``: the images of the batch, not augmented (what every batch costs anyway);
- ``numpy slices``: ``objectives.feed.Augment``, hpsearch's way: one slice copy per image;
- ``tf glimpse``: the feed before it: a flip by one gather from the batch and its mirror, a
  shift by ``tf.image.extract_glimpse`` on float32 copies (a compiled ``tf.function``);
- ``tf pixel gather``: one gather of every pixel's index into the padded images (compiled).

The feed makes its batches in its own thread beside the training step, so a millisecond here
is a millisecond of CPU the training step does not get on a 2-core machine:
``benchmarks/train_throughput.py`` measures what that costs an epoch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

N, SIZE, CHANNELS = 45_000, 32, 3
BATCHES = 200

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # indices, flips, offsets


def contenders(x: np.ndarray, shift: int) -> dict[str, Callable[[Batch], np.ndarray]]:
    import tensorflow as tf

    from objectives.feed import Augment

    y = np.zeros(len(x), np.int64)
    augment = Augment(x, y, flip=True, shift=shift)
    images = tf.convert_to_tensor(x)
    padded = tf.reshape(tf.convert_to_tensor(
        np.pad(x, [(0, 0), (shift, shift), (shift, shift), (0, 0)])), [-1, CHANNELS])
    side = SIZE + 2 * shift

    @tf.function
    def gather(indices: tf.Tensor) -> tf.Tensor:
        return tf.gather(images, indices)

    @tf.function
    def glimpse(indices: tf.Tensor, flips: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
        batch = tf.gather(images, indices)
        count = tf.shape(batch)[0]
        both = tf.concat([batch, tf.reverse(batch, axis=[2])], axis=0)
        batch = tf.gather(both, tf.range(count) + count * tf.cast(flips, tf.int32))
        moved = tf.image.extract_glimpse(
            tf.cast(batch, tf.float32), tf.shape(batch)[1:3], tf.cast(offsets, tf.float32),
            centered=False, normalized=False, noise="zero")
        return tf.cast(moved, batch.dtype)

    @tf.function
    def pixels(indices: tf.Tensor, flips: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
        offsets = tf.cast(offsets, tf.int32)
        rows = tf.range(SIZE)[None, :] + offsets[:, :1] + shift
        cols = tf.range(SIZE)[None, :] + offsets[:, 1:] + shift
        cols = tf.where(flips[:, None], (side - 1) - cols, cols)
        flat = (tf.cast(indices, tf.int32)[:, None, None] * side * side
                + rows[:, :, None] * side + cols[:, None, :])
        return tf.gather(padded, flat)

    return {
        "gather only": lambda b: gather(b[0]).numpy(),
        "numpy slices": lambda b: augment(*b)[0],
        "tf glimpse": lambda b: glimpse(*b).numpy(),
        "tf pixel gather": lambda b: pixels(*b).numpy(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--shift", type=int, default=4)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(N, SIZE, SIZE, CHANNELS), dtype=np.uint8)
    batches: list[Batch] = [
        (rng.permutation(N)[:args.batch], rng.random(args.batch) < 0.5,
         rng.integers(-args.shift, args.shift + 1, size=(args.batch, 2)))
        for _ in range(BATCHES)]
    runs = contenders(x, args.shift)
    expected = runs["numpy slices"](batches[0])
    for name, run in runs.items():  # the same batch from each (and each traced once)
        if name != "gather only":
            assert np.array_equal(run(batches[0]), expected), name
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(args.rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            for batch in batches:
                run(batch)
            times[name].append((time.perf_counter() - started) / BATCHES * 1e3)
            print(f"  round {round_ + 1}: {name:16} {times[name][-1]:.3f} ms/batch", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    ours = medians["numpy slices"]
    lines = ["| contender | ms per batch | vs numpy slices |", "| --- | --- | --- |"]
    lines += [f"| {name} | {value:.3f} | {value / ours:.1f}x |" for name, value in medians.items()]
    print("\n".join(lines))
    if not args.no_docs:
        from _docs import command, machine, write_section

        body = "\n".join([
            "## Augmentation in the feed (`benchmarks/augment_feed.py`)", "",
            f"Command: `{command()}`  ", f"Machine: {machine()}", "",
            f"A batch of {args.batch} CIFAR-10-shaped uint8 images, each flipped at random "
            f"and moved by up to {args.shift} pixels each way, identical from every contender; "
            f"medians of {args.rounds} alternating rounds of {BATCHES} batches. 'gather only' is "
            "the batch's images taken and not augmented, for scale.", "",
            *lines])
        print(f"written to {write_section('augment_feed', body)}")


if __name__ == "__main__":
    main()
