"""Reading datasets from where users keep them, into uint8 arrays.

Two on-disk formats are understood, each as a folder or as an archive (``.tar.gz``, ``.tgz``,
``.tar`` or ``.zip``):

- CIFAR-10's original pickled batches (``cifar-10-batches-py/data_batch_1`` ... ``test_batch``,
  ``batches.meta``), the format ``keras.datasets.cifar10`` downloads;
- an image-folder tree, ``train/<class>/*.png|jpg`` and ``test/<class>/...``, the layout
  ``keras.utils.image_dataset_from_directory`` reads. Class names come from the folder names in
  sorted order and must be the same in train and test.

Every problem with a source is a :class:`DatasetError` whose message names the file at fault.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
BATCH_NAMES = {f"data_batch_{i}" for i in range(1, 6)} | {"test_batch", "batches.meta"}


class DatasetError(Exception):
    """The dataset cannot be loaded: a user error, reported as one line."""


@dataclass(frozen=True)
class Arrays:
    """A decoded source: the training pool and the test split, uint8 images, integer labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every regular file of a folder or archive, in a stable order."""
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            yield file.relative_to(path).as_posix(), file.read_bytes()
        return
    name = path.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                for info in sorted(archive.infolist(), key=lambda i: i.filename):
                    if not info.is_dir():
                        yield info.filename, archive.read(info)
        elif name.endswith(ARCHIVE_SUFFIXES):
            with tarfile.open(path) as archive:
                for member in archive:
                    if member.isfile():
                        handle = archive.extractfile(member)
                        assert handle is not None
                        yield member.name, handle.read()
        else:
            raise DatasetError(
                f"{path}: unknown format; expected a folder or a .tar.gz, .tgz, .tar or .zip "
                "archive"
            )
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        raise DatasetError(f"{path}: archive is corrupt or truncated ({_reason(exc)})") from None


def detect_format(path: Path) -> str:
    """``"batches"`` or ``"images"``, from the names inside the folder or archive."""
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if not path.is_dir() and not _is_archive(path):
        raise DatasetError(
            f"{path}: unknown format; expected a folder or a .tar.gz, .tgz, .tar or .zip archive"
        )
    names = _names(path)
    if any(PurePosixPath(n).name == "data_batch_1" for n in names):
        return "batches"
    if any(_split_class(n) is not None for n in names):
        return "images"
    raise DatasetError(
        f"{path}: neither CIFAR-10 batches (data_batch_1 ...) nor an image-folder tree "
        "(train/<class>/..., test/<class>/...)"
    )


def _names(path: Path) -> list[str]:
    if path.is_dir():
        return [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                return [i.filename for i in archive.infolist() if not i.is_dir()]
        with tarfile.open(path) as archive:
            return [m.name for m in archive.getmembers() if m.isfile()]
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        raise DatasetError(f"{path}: archive is corrupt or truncated ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(":") if text else type(exc).__name__


def _split_class(name: str) -> tuple[str, str] | None:
    parts = PurePosixPath(name).parts
    if len(parts) >= 3 and parts[-3] in ("train", "test"):
        if PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES:
            return parts[-3], parts[-2]
    return None


def read_batches(path: Path) -> Arrays:
    """CIFAR-10's pickled batches from ``cifar-10-python.tar.gz`` or its extracted folder.

    The batches are Python pickles, as CIFAR-10 ships them: read only copies you trust.
    """
    batches: dict[str, dict[bytes, object]] = {}
    for name, data in _members(path):
        base = PurePosixPath(name).name
        if base in BATCH_NAMES:
            try:
                batches[base] = pickle.load(io.BytesIO(data), encoding="bytes")
            except Exception as exc:  # a damaged pickle raises many kinds
                raise DatasetError(
                    f"{path}: {name} is not a CIFAR-10 batch ({_reason(exc)})"
                ) from None
    missing = sorted(BATCH_NAMES - {"batches.meta"} - set(batches))
    if missing:
        raise DatasetError(f"{path}: CIFAR-10 batches missing: {', '.join(missing)}")

    def arrays(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for name in names:
            batch = batches[name]
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3072:
                raise DatasetError(f"{path}: {name} holds images of shape {data.shape[1:]}, "
                                   "not 3072 values")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
        return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)

    x_train, y_train = arrays(sorted(BATCH_NAMES - {"test_batch", "batches.meta"}))
    x_test, y_test = arrays(["test_batch"])
    meta = batches.get("batches.meta", {})
    raw_names = meta.get(b"label_names") if isinstance(meta, dict) else None
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    if isinstance(raw_names, list) and len(raw_names) >= n_classes:
        class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in raw_names)
    else:
        class_names = tuple(str(i) for i in range(n_classes))
    return Arrays(x_train, y_train, x_test, y_test, class_names)


def read_image_folders(path: Path) -> Arrays:
    """An image-folder tree (``train/<class>/...``, ``test/<class>/...``), folder or archive."""
    from PIL import Image, UnidentifiedImageError

    found: dict[str, list[tuple[str, str, bytes]]] = {"train": [], "test": []}
    for name, data in _members(path):
        where = _split_class(name)
        if where is not None:
            found[where[0]].append((where[1], name, data))
    classes = {split: sorted({c for c, _, _ in items}) for split, items in found.items()}
    for split in ("train", "test"):
        if not found[split]:
            raise DatasetError(f"{path}: no images under {split}/<class>/")
    if len(classes["train"]) < 2:
        raise DatasetError(f"{path}: train/ has one class ({classes['train'][0]}); a classifier "
                           "needs at least two")
    if classes["train"] != classes["test"]:
        only_train = sorted(set(classes["train"]) - set(classes["test"]))
        only_test = sorted(set(classes["test"]) - set(classes["train"]))
        raise DatasetError(f"{path}: train and test classes differ (only in train: "
                           f"{only_train or 'none'}; only in test: {only_test or 'none'})")
    index = {name: i for i, name in enumerate(classes["train"])}
    shape: tuple[int, ...] | None = None
    first = ""
    decoded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, items in found.items():
        images = []
        for _, name, data in items:
            try:
                with Image.open(io.BytesIO(data)) as image:
                    image.load()
                    array = np.asarray(image)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise DatasetError(f"{path}: cannot decode {name} ({_reason(exc)})") from None
            if array.ndim == 2:
                array = array[..., np.newaxis]
            if shape is None:
                shape, first = array.shape, name
            elif array.shape != shape:
                raise DatasetError(
                    f"{path}: {name} is {_describe_shape(array.shape)} but {first} is "
                    f"{_describe_shape(shape)}; all images must share size and channels"
                )
            images.append(array.astype(np.uint8, copy=False))
        labels = np.array([index[c] for c, _, _ in items], dtype=np.int64)
        decoded[split] = (np.stack(images), labels)
    return Arrays(*decoded["train"], *decoded["test"], tuple(classes["train"]))


def _describe_shape(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]} with {shape[2]} channel{'s' if shape[2] != 1 else ''}"


def read_source(path: Path) -> Arrays:
    """Decode the dataset at ``path``, whichever of the two formats it is in."""
    if detect_format(path) == "batches":
        return read_batches(path)
    return read_image_folders(path)
