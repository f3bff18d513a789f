"""A stratified, seeded split of a dataset's indices: scikit-learn's ``train_test_split`` with
``stratify``, to the index, without importing scikit-learn.

Every worker splits its data when it starts; importing ``sklearn.model_selection`` (and SciPy
behind it) for that took 0.65 s of each process's start, more than anything else but
TensorFlow. The draws are those of scikit-learn's ``StratifiedShuffleSplit`` (its
``_iter_indices`` and ``utils.extmath._approximate_mode``, BSD-3-Clause, as of 1.9, the
version pinned in constraints.txt), so the studies made before keep their splits;
``tests/test_data.py`` holds the two to the same indices.
"""

from __future__ import annotations

import math

import numpy as np


def split(indices: np.ndarray, y: np.ndarray, *, seed: int, test_size: float | None = None,
          train_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``indices`` split in two with each class of ``y`` (their labels) in the same share on
    both sides: ``test_size`` (a fraction) to the second, or ``train_size`` (a count) to the
    first, the rest to the other. ``train_test_split(indices, test_size=..., train_size=...,
    stratify=y, random_state=seed)``, in the same order.

    Raises:
        ValueError: a class has a single member, or a side too few places for every class.
    """
    n = len(indices)
    if len(y) != n:
        raise ValueError(f"{n} indices but {len(y)} labels")
    if test_size is not None and train_size is None:
        n_test = math.ceil(test_size * n)
        n_train = n - n_test
    elif train_size is not None and test_size is None:
        n_train = int(train_size)
        n_test = n - n_train
    else:
        raise ValueError("give test_size or train_size")
    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"{n} samples leave {n_train} for training and {n_test} to test")
    classes, y_indices = np.unique(y, return_inverse=True)
    class_counts = np.bincount(y_indices)
    if class_counts.min() < 2:
        raise ValueError("the least populated class has only 1 member")
    if n_train < len(classes) or n_test < len(classes):
        raise ValueError(f"{n_train} and {n_test} places for {len(classes)} classes")
    class_indices = np.split(np.argsort(y_indices, kind="mergesort"),
                             np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(classes)):
        permutation = rng.permutation(class_counts[i])
        members = class_indices[i].take(permutation, mode="clip")
        train.extend(members[:n_i[i]])
        test.extend(members[n_i[i]:n_i[i] + t_i[i]])
    return indices[rng.permutation(train)], indices[rng.permutation(test)]


def _approximate_mode(class_counts: np.ndarray, n_draws: int,
                      rng: np.random.RandomState) -> np.ndarray:
    """How many of ``n_draws`` each class gets: its share rounded down, the places left given
    to the largest remainders, ties drawn at random."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            inds = rng.choice(inds, size=add_now, replace=False)
            floored[inds] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)
