"""Datasets for the Keras MLP objective: loaded once per process, decoded once per machine.

Images stay uint8 (N, 32, 32, 3); scaling to [-1, 1] happens inside the model, so a saved
model takes raw images. The validation split is stratified by class and seeded; the test
split is kept apart and never seen by the sampler, the pruner or early stopping.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.model_selection import train_test_split

from objectives import recipes
from objectives.cache import derived_key, load_or_build, source_key
from objectives.config import TABULAR, DataConfig
from objectives.sources import DatasetError, read_source

if TYPE_CHECKING:
    from objectives.space import SearchSpace

__all__ = ["CIFAR10_CLASSES", "Dataset", "DatasetError", "check_study_data", "load_dataset",
           "make_stub"]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
IMAGE_SHAPE = (32, 32, 3)


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


def _download_cifar10() -> tuple[dict[str, np.ndarray], dict[str, object]]:
    from objectives.keras_setup import keras  # only here: validating a study needs no Keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as exc:  # urllib raises several kinds; all mean the same to the user
        raise DatasetError(
            f"cannot download CIFAR-10 ({type(exc).__name__}: {exc}); this machine may be "
            "offline: set [data] path (or --data-path) to a local cifar-10-python.tar.gz (or "
            "its cifar-10-batches-py folder) or to an image-folder tree train/<class>/, "
            "test/<class>/"
        ) from None
    arrays = {"x_pool": x_train, "y_pool": y_train.reshape(-1).astype(np.int64),
              "x_test": x_test, "y_test": y_test.reshape(-1).astype(np.int64)}
    return arrays, {"class_names": list(CIFAR10_CLASSES), "source": "keras download"}


def _decode(path: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    decoded = read_source(path)
    arrays = {"x_pool": decoded.x_train, "y_pool": decoded.y_train,
              "x_test": decoded.x_test, "y_test": decoded.y_test}
    return arrays, {"class_names": list(decoded.class_names), "source": str(path)}


def _source(config: DataConfig) -> tuple[str, dict[str, np.ndarray], tuple[str, ...]]:
    """The decoded source (key, arrays, class names): from the cache, else decoded into it."""
    if config.path is None:
        key = derived_key("keras-cifar10", "v1")
        arrays, meta = load_or_build(key, _download_cifar10)
    else:
        path = Path(config.path).expanduser()
        if not path.exists():
            raise DatasetError(f"{path}: no such file or folder")
        key = source_key(path)
        arrays, meta = load_or_build(key, lambda: _decode(path))
    names = meta["class_names"]
    assert isinstance(names, list)
    return key, arrays, tuple(str(n) for n in names)


def _split_indices(y: np.ndarray, config: DataConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices into the pool: stratified, seeded, subsets stratified too."""
    def too_small(indices: np.ndarray, what: str) -> DatasetError:
        # scikit-learn's own message speaks of test_size where this is the validation split
        counts = np.bincount(y[indices])
        present = counts[counts > 0]
        return DatasetError(
            f"cannot split {len(indices)} images of {len(present)} classes (the smallest with "
            f"{present.min()}) by class for {what}: each side needs an image of every class; "
            "give more images or change that setting")

    try:
        train, val = train_test_split(
            np.arange(len(y)), test_size=config.validation_fraction, stratify=y,
            random_state=seed,
        )
    except ValueError:
        raise too_small(np.arange(len(y)), "data.validation_fraction = "
                        f"{config.validation_fraction:g}") from None
    if config.train_subset is not None and config.train_subset < len(train):
        try:
            train, _ = train_test_split(train, train_size=config.train_subset,
                                        stratify=y[train], random_state=seed)
        except ValueError:
            raise too_small(train, f"data.train_subset = {config.train_subset}") from None
    if config.validation_subset is not None and config.validation_subset < len(val):
        try:
            val, _ = train_test_split(val, train_size=config.validation_subset,
                                      stratify=y[val], random_state=seed)
        except ValueError:
            raise too_small(val, f"data.validation_subset = {config.validation_subset}"
                            ) from None
    return np.sort(train), np.sort(val)


def check_study_data(*, space: SearchSpace, data: DataConfig, seed: int) -> Dataset:
    """The study's dataset (:func:`load_dataset`), checked against what ``space`` asks of it
    before any storage is written: what the Keras MLP's objective loads when it is made, and
    what every process of a study loads before it knows whether trials are left (``run
    --workers`` fills this machine's data cache for its workers), without importing TensorFlow
    (``search.registry.DATA_CHECKS``).

    Raises:
        DatasetError: the data cannot be read, or cannot give what the space asks.
    """
    dataset = load_dataset(data, seed)
    problems = recipes.check_data(space, dataset.input_shape)
    if problems:
        raise DatasetError("; ".join(problems))
    return dataset


@functools.lru_cache(maxsize=2)
def load_dataset(config: DataConfig, seed: int) -> Dataset:
    """Load and split the configured dataset.

    Real datasets are decoded into the cache on first use and the split is cached as well, so
    every array is memory-mapped and shared by all worker processes of a machine; within a
    process the result is kept, so trials never reload it.

    Raises:
        DatasetError: the source is missing, corrupt or inconsistent, cannot be downloaded,
            or the cache cannot be written; the message names what is wrong.
    """
    if config.dataset in TABULAR:
        raise DatasetError(f"dataset {config.dataset!r} is a table of results for the "
                           "tabular-mlp objective, not data to train on")
    if config.dataset == "stub":
        x, y, x_test, y_test = make_stub(seed)
        train, val = _split_indices(y, config, seed)
        return Dataset(x[train], y[train], x[val], y[val], x_test, y_test, CIFAR10_CLASSES)
    key, source, class_names = _source(config)

    def build_split() -> tuple[dict[str, np.ndarray], dict[str, object]]:
        y = np.asarray(source["y_pool"])
        train, val = _split_indices(y, config, seed)
        x = source["x_pool"]
        return {"x_train": x[train], "y_train": y[train], "x_val": x[val], "y_val": y[val]}, {}

    split_key = derived_key(key, config.validation_fraction, config.train_subset,
                            config.validation_subset, seed)
    split, _ = load_or_build(split_key, build_split)
    return Dataset(split["x_train"], split["y_train"], split["x_val"], split["y_val"],
                   source["x_test"], source["y_test"], class_names)
