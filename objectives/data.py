"""Datasets for the Keras MLP objective, loaded once per process.

Images stay uint8 (N, 32, 32, 3); scaling to [-1, 1] happens inside the model, so a saved
model takes raw images. The validation split is stratified by class and seeded; the test
split is kept apart and never seen by the sampler, the pruner or early stopping.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from objectives.config import DataConfig

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
IMAGE_SHAPE = (32, 32, 3)


class DatasetError(Exception):
    """The dataset cannot be loaded: a user error, reported as one line."""


@dataclass(frozen=True)
class Dataset:
    """Train, validation and test splits as uint8 images and integer labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def make_stub(seed: int = 0, *, n_train: int = 3000, n_test: int = 600) -> tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray
]:
    """A small CIFAR-10-shaped dataset that an MLP learns above chance in a few epochs.

    Each class is a smooth random colour pattern (4x4 blocks of 8x8 pixels). An image is its
    class pattern at a random contrast, under a random brightness, blocky noise of the same
    scale as the pattern and pixel noise, so the classes overlap: a linear model reaches about
    half accuracy and training improves over several epochs. Generated in about 0.1 s.
    """
    rng = np.random.default_rng(seed)
    n_classes = len(CIFAR10_CLASSES)
    patterns = rng.standard_normal((n_classes, 4, 4, 3), dtype=np.float32)

    def blocks(coarse: np.ndarray) -> np.ndarray:
        return coarse.repeat(8, axis=1).repeat(8, axis=2)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % n_classes
        rng.shuffle(labels)
        contrast = rng.uniform(4.0, 12.0, size=(n, 1, 1, 1)).astype(np.float32)
        brightness = rng.normal(128.0, 20.0, size=(n, 1, 1, 1)).astype(np.float32)
        coarse = contrast * patterns[labels] + 30.0 * rng.standard_normal(
            (n, 4, 4, 3), dtype=np.float32
        )
        images = blocks(brightness + coarse).astype(np.int16)
        images += rng.integers(-87, 88, size=images.shape, dtype=np.int16)  # uniform, std 50
        return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return x_train, y_train, x_test, y_test


def _load_cifar10() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from objectives.keras_setup import keras  # only here: validating a study needs no Keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as exc:  # urllib raises several kinds; all mean the same to the user
        raise DatasetError(
            f"cannot download CIFAR-10 ({type(exc).__name__}: {exc}); this machine may be "
            "offline"
        ) from exc
    return x_train, y_train.reshape(-1), x_test, y_test.reshape(-1)


def stratified_subset(
    x: np.ndarray, y: np.ndarray, size: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``size`` examples of ``x, y`` with the class proportions kept."""
    if size is None or size >= len(y):
        return x, y
    keep, _ = train_test_split(np.arange(len(y)), train_size=size, stratify=y, random_state=seed)
    keep.sort()
    return x[keep], y[keep]


def split(
    x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    config: DataConfig, seed: int, class_names: tuple[str, ...],
) -> Dataset:
    """Split the training pool into train and validation, stratified by class and seeded."""
    train_idx, val_idx = train_test_split(
        np.arange(len(y)), test_size=config.validation_fraction, stratify=y, random_state=seed
    )
    x_train, y_train = stratified_subset(x[train_idx], y[train_idx], config.train_subset, seed)
    x_val, y_val = stratified_subset(x[val_idx], y[val_idx], config.validation_subset, seed)
    return Dataset(x_train, y_train, x_val, y_val, x_test, y_test, class_names)


@functools.lru_cache(maxsize=2)
def load_dataset(config: DataConfig, seed: int) -> Dataset:
    """Load and split the configured dataset; cached, so each process loads it once."""
    if config.dataset == "stub":
        x, y, x_test, y_test = make_stub(seed)
    else:
        x, y, x_test, y_test = _load_cifar10()
    return split(x, y, x_test, y_test, config, seed, CIFAR10_CLASSES)
