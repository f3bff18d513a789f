"""The input preprocessing recipe: computed on the training split and built into the model.

``preprocessing`` (a ``[space]`` entry) is one of:

- ``scale`` (the default, and the seed's way): pixels scaled to [-1, 1];
- ``standardize``: each colour channel less its mean, over its standard deviation (both over
  the training split);
- ``pca``: PCA whitening onto the ``pca_components`` directions of most variance of the
  training images (pixels in [0, 1], less their mean), each divided by the square root of its
  variance plus ``whitening_epsilon``. It replaces 3,072 inputs by fewer, decorrelated ones;
- ``zca``: ZCA whitening, the same with every direction and rotated back onto the pixels.

Whichever it is, the model does it itself (a ``Normalization`` layer, or a fixed,
non-trainable ``Dense`` layer holding the whitening matrix), so the saved model takes raw uint8
images and nothing computed outside it is needed at inference. The eigendecomposition of the
training images' covariance is computed once per training split, and reused by every trial
whatever its epsilon and components: once per machine for a split of the decoded-array cache
(``objectives.cache``, where it is kept beside the split), else once per process.

Images' statistics are those of the training split together with its mirror images (each
flipped left to right): natural images are as likely mirrored, and it makes the ZCA matrix
commute with the flip, so that flipping a whitened image is whitening the flipped image. That
is what lets a ZCA trial train on images whitened once (:func:`whiten`) rather than in the
model at every step: ZCA's fixed 3072x3072 product costs more than the whole MLP's, per step,
which doubled an epoch of the deep reference MLP (``benchmarks/train_throughput.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from objectives.cache import derived_key, load_or_build
from objectives.entries import Categorical, Entries, Numeric, Positive, Width
from objectives.recipes.base import Recipe

if TYPE_CHECKING:
    from objectives.space import SearchSpace

logger = logging.getLogger(__name__)

Preprocessing = Literal["scale", "standardize", "pca", "zca"]


class PreprocessingEntries(Entries):
    """``preprocessing``, and the whitening's epsilon and PCA's components."""

    preprocessing: Categorical[Preprocessing] = Categorical[Preprocessing](value="scale")
    whitening_epsilon: Numeric[Positive] = Numeric[Positive](low=1e-3, high=1e-1, log=True)
    pca_components: Numeric[Width] = Numeric[Width](low=128, high=1024, log=True)


class InputPreprocessing(Recipe):
    """Pixels scaled (the seed's), standardized per channel, or PCA- or ZCA-whitened."""

    entries = PreprocessingEntries
    conditions = {
        "whitening_epsilon": ("preprocessing", ("pca", "zca")),
        "pca_components": ("preprocessing", ("pca",)),
    }
    # ZCA with the rest of the reference recipe: the wide reference 0.616 where scaling gave
    # 0.596 on CIFAR-10 (benchmarks/recipe_ablation.py; ZCA alone gave 0.545)
    reference = {"preprocessing": "zca", "whitening_epsilon": 0.01}

    def inputs(self, params: dict[str, Any], x_train: np.ndarray) -> dict[str, Any] | None:
        return input_layers(params, x_train)

    def check_data(self, space: SearchSpace, input_shape: tuple[int, ...]) -> list[str]:
        """PCA keeps at most one direction per value of an image: ``pca_components`` past
        that would be recorded on trials that never used them."""
        kinds, components = space.preprocessing, space.pca_components
        if "pca" not in ([kinds.value] if kinds.value is not None else kinds.choices or []):
            return []
        dimension = int(np.prod(input_shape))
        largest = max([v for v in (components.value, components.high) if v is not None]
                      + list(components.choices or []))
        if largest <= dimension:
            return []
        return [f"space.pca_components: reaches {largest}, but the data's images hold "
                f"{dimension} values each (PCA keeps at most {dimension} directions)"]


@dataclass(frozen=True)
class Spectrum:
    """The training images' mean and covariance eigendecomposition (pixels in [0, 1])."""

    mean: np.ndarray  # (d,)
    values: np.ndarray  # (d,) eigenvalues, largest first
    vectors: np.ndarray  # (d, d) eigenvectors in columns, in the same order


_spectra: dict[int, tuple[weakref.ref[np.ndarray], Spectrum]] = {}
SPECTRUM_VERSION = 2  # of the cached spectrum: 2, with the mirror images


def spectrum(x_train: np.ndarray) -> Spectrum:
    """The spectrum of ``x_train`` (uint8 images, or flat rows), computed once per array and
    process; for images (``(n, height, width, channels)``), of ``x_train`` with its mirror
    images. A split from the decoded-array cache (memory-mapped) has its spectrum cached
    beside it, computed once per machine: every worker, and every fresh start of one
    (``search.workers.fresh_start``), reads it back instead of taking 20 s of a core for it."""
    cached = _spectra.get(id(x_train))
    if cached is not None and cached[0]() is x_train:
        return cached[1]
    filename = getattr(x_train, "filename", None)
    if isinstance(x_train, np.memmap) and filename:
        key = derived_key("spectrum", SPECTRUM_VERSION, str(filename), x_train.shape)
        arrays, _ = load_or_build(key, lambda: (dataclasses.asdict(_decompose(x_train)), {}))
        result = Spectrum(**arrays)
    else:
        result = _decompose(x_train)
    _spectra.clear()  # one training split per process at a time
    _spectra[id(x_train)] = (weakref.ref(x_train), result)
    return result


def _decompose(x_train: np.ndarray) -> Spectrum:
    started = time.perf_counter()
    flat = x_train.reshape(len(x_train), -1)
    mean = flat.mean(axis=0, dtype=np.float64) / 255.0
    # Covariance in float64 accumulated over float32 chunks: (X - m)^T (X - m) / n.
    covariance = np.zeros((flat.shape[1], flat.shape[1]), dtype=np.float64)
    for start in range(0, len(flat), 4096):
        chunk = flat[start:start + 4096].astype(np.float32) / 255.0 - mean.astype(np.float32)
        covariance += (chunk.T @ chunk).astype(np.float64)
    covariance /= len(flat)
    if x_train.ndim == 4:
        # With the mirror images: the mean of both halves, and their covariance about it,
        # (C + P C P) / 2 + d d^T with P the flip's permutation and d = (m - P m) / 2.
        mirror = np.arange(flat.shape[1]).reshape(x_train.shape[1:])[:, ::-1, :].ravel()
        half = (mean - mean[mirror]) / 2.0
        covariance = ((covariance + covariance[np.ix_(mirror, mirror)]) / 2.0
                      + np.outer(half, half))
        mean = (mean + mean[mirror]) / 2.0
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1]
    logger.info("input whitening: covariance of %d training images of %d values "
                "decomposed in %.1f s", len(flat), flat.shape[1], time.perf_counter() - started)
    return Spectrum(mean=mean.astype(np.float32),
                    values=np.maximum(values[order], 0.0).astype(np.float32),
                    vectors=vectors[:, order].astype(np.float32))


def channel_statistics(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each colour channel's mean and variance over ``x_train`` (uint8 images), summed in
    chunks so that no float copy of the whole split is made."""
    channels = x_train.reshape(-1, x_train.shape[-1])
    total = np.zeros(channels.shape[1])
    squares = np.zeros(channels.shape[1])
    for start in range(0, len(channels), 1 << 20):
        chunk = channels[start:start + (1 << 20)].astype(np.float64)
        total += chunk.sum(axis=0)
        squares += np.square(chunk).sum(axis=0)
    mean = total / len(channels)
    return mean, squares / len(channels) - np.square(mean)


def input_layers(params: dict[str, Any], x_train: np.ndarray) -> dict[str, Any]:
    """What ``build_model`` needs to preprocess as ``params`` asks: ``{"kind": "scale"}``,
    per-channel ``mean``/``variance`` for ``standardize``, or the whitening ``kernel`` and
    ``bias`` (inputs in [0, 1]) for ``pca`` and ``zca``."""
    kind = params.get("preprocessing", "scale")
    if kind == "scale":
        return {"kind": kind}
    if kind == "standardize":
        mean, variance = channel_statistics(x_train)
        return {"kind": kind, "mean": mean.tolist(), "variance": variance.tolist()}
    if kind not in ("pca", "zca"):
        raise ValueError(f"preprocessing must be one of scale, standardize, pca, zca, but got "
                         f"{kind!r}")
    found = spectrum(x_train)
    epsilon = float(params.get("whitening_epsilon", 0.01))
    keep = (min(int(params.get("pca_components", 512)), len(found.values)) if kind == "pca"
            else len(found.values))
    scale = 1.0 / np.sqrt(found.values[:keep] + epsilon)
    kernel = found.vectors[:, :keep] * scale  # (d, keep): project, then whiten
    if kind == "zca":
        kernel = kernel @ found.vectors.T  # rotate back onto the pixels
    kernel = kernel.astype(np.float32)
    return {"kind": kind, "kernel": kernel, "bias": -(found.mean @ kernel)}


def whitened_in_training(params: dict[str, Any]) -> bool:
    """Whether a configuration's model is trained on images whitened beforehand
    (:func:`whiten`, ZCA) rather than on raw ones."""
    return params.get("preprocessing", "scale") == "zca"


def whiten(x: np.ndarray, layers: dict[str, Any], dtype: Any = np.float32) -> np.ndarray:
    """``x`` (uint8 images) whitened as the model's ``whiten_zca`` layer of ``layers``
    (:func:`input_layers`) does it, in ``x``'s shape, as ``dtype``: computed in float32 in
    chunks, so that no float32 copy of the whole split is made when ``dtype`` is narrower."""
    if layers["kind"] != "zca":
        raise ValueError(f"only ZCA whitening keeps the images' shape, not {layers['kind']!r}")
    started = time.perf_counter()
    flat = x.reshape(len(x), -1)
    kernel, bias = layers["kernel"], layers["bias"].astype(np.float32)
    out = np.empty(flat.shape, dtype=dtype)
    for start in range(0, len(flat), 4096):
        chunk = flat[start:start + 4096].astype(np.float32) / np.float32(255.0)
        out[start:start + 4096] = chunk @ kernel + bias
    logger.info("input whitening: %d images whitened in %.1f s", len(flat),
                time.perf_counter() - started)
    return out.reshape(x.shape)
