"""Real datasets: both on-disk formats, the stratified split, the cache and every bad input.

Each test builds its own tiny sources (CIFAR-10's pickled batches and an image-folder tree of
the same images), so nothing here needs a download or ../shared.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import objectives.data as data_module
from objectives.config import DataConfig
from objectives.data import CIFAR10_CLASSES, DatasetError, load_dataset
from objectives.sources import read_source

PER_CLASS_TRAIN, PER_CLASS_TEST = 10, 3


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "cache"
    monkeypatch.setenv("HPSEARCH_CACHE", str(folder))
    load_dataset.cache_clear()
    yield folder
    load_dataset.cache_clear()


def _images(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(10), n_per_class)
    rng.shuffle(labels)
    return rng.integers(0, 256, size=(len(labels), 32, 32, 3), dtype=np.uint8), labels


@pytest.fixture
def arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = _images(PER_CLASS_TRAIN, 0)
    x_test, y_test = _images(PER_CLASS_TEST, 1)
    return x, y, x_test, y_test


def write_batches(folder: Path, arrays: tuple[np.ndarray, ...]) -> Path:
    """CIFAR-10's own format: 5 training batches, a test batch and the class names."""
    x, y, x_test, y_test = arrays
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True)

    def dump(name: str, images: np.ndarray, labels: np.ndarray) -> None:
        flat = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)  # channel planes
        with (root / name).open("wb") as handle:
            pickle.dump({b"data": flat, b"labels": labels.tolist()}, handle)

    for i, (images, labels) in enumerate(zip(np.array_split(x, 5), np.array_split(y, 5))):
        dump(f"data_batch_{i + 1}", images, labels)
    dump("test_batch", x_test, y_test)
    with (root / "batches.meta").open("wb") as handle:
        pickle.dump({b"label_names": [n.encode() for n in CIFAR10_CLASSES]}, handle)
    return root


def write_folders(folder: Path, arrays: tuple[np.ndarray, ...], suffix: str = ".png") -> Path:
    """The same images as train/<class>/NNNNN.png and test/<class>/NNNNN.png."""
    x, y, x_test, y_test = arrays
    for split, images, labels in (("train", x, y), ("test", x_test, y_test)):
        for i, (image, label) in enumerate(zip(images, labels)):
            target = folder / split / CIFAR10_CLASSES[label] / f"{i:05d}{suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(target)
    return folder


def tar_gz(source: Path, target: Path) -> Path:
    with tarfile.open(target, "w:gz") as archive:
        archive.add(source, arcname=source.name)
    return target


def class_major(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(y, kind="stable")  # the order an image-folder tree lists its files in
    return x[order], y[order]


def test_both_formats_and_their_archives_load_to_the_same_arrays(
    tmp_path: Path, arrays: tuple[np.ndarray, ...]
) -> None:
    batches = write_batches(tmp_path / "batches", arrays)
    folders = write_folders(tmp_path / "images", arrays)
    zipped = tmp_path / "images.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        for file in sorted(folders.rglob("*.png")):
            archive.write(file, file.relative_to(folders).as_posix())
    loaded = {
        "batches folder": read_source(batches),
        "batches archive": read_source(tar_gz(batches, tmp_path / "cifar-10-python.tar.gz")),
        "image folders": read_source(folders),
        "image archive": read_source(tar_gz(folders, tmp_path / "images.tar.gz")),
        "image zip": read_source(zipped),
    }
    x, y, x_test, y_test = arrays
    for name, got in loaded.items():
        assert got.class_names == CIFAR10_CLASSES, name
        train, test = (got.x_train, got.y_train), (got.x_test, got.y_test)
        if name.startswith("image"):
            expected_train, expected_test = class_major(x, y), class_major(x_test, y_test)
        else:
            expected_train, expected_test = (x, y), (x_test, y_test)
        for (a, b), (c, d) in ((train, expected_train), (test, expected_test)):
            assert a.dtype == np.uint8 and np.array_equal(a, c) and np.array_equal(b, d), name


def test_split_is_stratified_repeatable_and_keeps_test_apart(
    tmp_path: Path, arrays: tuple[np.ndarray, ...]
) -> None:
    source = write_batches(tmp_path, arrays)
    config = DataConfig(dataset="cifar10", path=str(source), validation_fraction=0.2)
    first = load_dataset(config, 0)
    assert np.bincount(first.y_val, minlength=10).tolist() == [2] * 10
    assert np.bincount(first.y_train, minlength=10).tolist() == [8] * 10
    assert np.array_equal(first.x_test, arrays[2])  # the test split is CIFAR-10's own
    load_dataset.cache_clear()
    again = load_dataset(config, 0)
    assert np.array_equal(first.x_val, again.x_val) and np.array_equal(first.y_val, again.y_val)
    other_seed = load_dataset(config, 1)
    assert not np.array_equal(first.x_val, other_seed.x_val)
    subset = load_dataset(config.model_copy(update={"train_subset": 30}), 0)
    assert np.bincount(subset.y_train, minlength=10).tolist() == [3] * 10


@pytest.mark.parametrize(("update", "setting"), [
    ({"validation_fraction": 0.05}, "data.validation_fraction = 0.05"),  # 5 for 10 classes
    ({"validation_fraction": 0.2, "validation_subset": 15}, "data.validation_subset = 15"),
])
def test_a_split_too_small_for_the_classes_names_its_setting(
    tmp_path: Path, arrays: tuple[np.ndarray, ...], update: dict[str, float], setting: str,
) -> None:
    """Said of the split and the setting that made it (scikit-learn's message spoke of a
    "test_size" for the validation split)."""
    source = write_batches(tmp_path, arrays)
    config = DataConfig(dataset="cifar10", path=str(source), **update)  # type: ignore[arg-type]
    with pytest.raises(DatasetError) as caught:
        load_dataset(config, 0)
    assert f"by class for {setting}: each side needs an image of every class" in str(
        caught.value)
    assert "test_size" not in str(caught.value)


def test_cache_is_reused_and_invalidated_when_the_source_changes(
    tmp_path: Path, arrays: tuple[np.ndarray, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tar_gz(write_folders(tmp_path / "images", arrays), tmp_path / "images.tar.gz")
    config = DataConfig(dataset="images", path=str(archive))
    decodes: list[Path] = []

    def counting(path: Path):  # type: ignore[no-untyped-def]
        decodes.append(path)
        return read_source(path)

    monkeypatch.setattr(data_module, "read_source", counting)
    first = load_dataset(config, 0)
    load_dataset.cache_clear()
    second = load_dataset(config, 0)
    assert len(decodes) == 1  # the second load read the cache, it did not decode
    assert isinstance(second.x_train, np.memmap)
    assert np.array_equal(first.x_train, second.x_train)

    changed = arrays[0].copy()
    changed[0] = 255 - changed[0]
    tar_gz(write_folders(tmp_path / "changed", (changed, *arrays[1:])), archive)
    load_dataset.cache_clear()
    load_dataset(config, 0)
    assert len(decodes) == 2


def test_a_damaged_cache_entry_is_rebuilt(
    tmp_path: Path, arrays: tuple[np.ndarray, ...], cache: Path
) -> None:
    source = write_batches(tmp_path, arrays)
    config = DataConfig(dataset="cifar10", path=str(source))
    expected = load_dataset(config, 0).x_train.copy()
    for npy in cache.rglob("x_train.npy"):
        npy.write_bytes(b"torn")
    load_dataset.cache_clear()
    assert np.array_equal(load_dataset(config, 0).x_train, expected)


def test_two_processes_loading_at_once_make_one_entry(
    tmp_path: Path, arrays: tuple[np.ndarray, ...], cache: Path
) -> None:
    archive = tar_gz(write_folders(tmp_path / "images", arrays), tmp_path / "images.tar.gz")
    script = (
        "import sys, numpy as np\n"
        "from objectives.config import DataConfig\n"
        "from objectives.data import load_dataset\n"
        f"d = load_dataset(DataConfig(dataset='images', path={str(archive)!r}), 0)\n"
        "print(int(np.asarray(d.x_train, dtype=np.int64).sum()), len(d.y_val))\n"
    )
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo)}
    workers = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert outputs[0][0] == outputs[1][0]
    entries = sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))
    assert len(entries) == 2  # the decoded source and its split, once each
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def _single_class(root: Path, arrays: tuple[np.ndarray, ...]) -> Path:
    for split in ("train", "test"):
        (root / split / "cat").mkdir(parents=True)
        Image.fromarray(arrays[0][0]).save(root / split / "cat" / "0.png")
    return root


def _mixed_sizes(root: Path, arrays: tuple[np.ndarray, ...]) -> Path:
    write_folders(root, arrays)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "train" / "dog" / "99999.png")
    return root


def _mixed_channels(root: Path, arrays: tuple[np.ndarray, ...]) -> Path:
    write_folders(root, arrays)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "test" / "frog" / "99999.png")
    return root


def _undecodable(root: Path, arrays: tuple[np.ndarray, ...]) -> Path:
    write_folders(root, arrays)
    (root / "train" / "ship" / "00007.png").write_bytes(b"not an image")
    return root


def _classes_differ(root: Path, arrays: tuple[np.ndarray, ...]) -> Path:
    write_folders(root, arrays)
    (root / "test" / "horse").rename(root / "test" / "pony")
    return root


def _corrupt(root: Path, arrays: tuple[np.ndarray, ...]) -> Path:
    target = root / "cifar-10-python.tar.gz"
    root.mkdir()
    target.write_bytes(os.urandom(4096))
    return target


def _truncated(root: Path, arrays: tuple[np.ndarray, ...]) -> Path:
    whole = tar_gz(write_batches(root / "src", arrays), root / "whole.tar.gz")
    target = root / "cifar-10-python.tar.gz"
    target.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return target


def _unknown_format(root: Path, arrays: tuple[np.ndarray, ...]) -> Path:
    root.mkdir()
    (root / "cifar.rar").write_bytes(b"Rar!")
    return root / "cifar.rar"


def _missing(root: Path, arrays: tuple[np.ndarray, ...]) -> Path:
    return root / "nowhere" / "cifar-10-python.tar.gz"


BAD_SOURCES = [
    (_missing, "{path}: no such file or folder"),
    (_corrupt, "{path}: archive is corrupt or truncated ("),
    (_truncated, "{path}: archive is corrupt or truncated ("),
    (_unknown_format, "{path}: unknown format; expected a folder or a .tar.gz, .tgz, .tar or "
                      ".zip archive"),
    (_single_class, "{path}: train/ has one class (cat); a classifier needs at least two"),
    (_mixed_sizes, "{path}: train/dog/99999.png is 16x16 with 3 channels but "
                   "{first} is 32x32 with 3 channels; all images must share size and channels"),
    (_mixed_channels, "{path}: test/frog/99999.png is 32x32 with 1 channel but "
                      "{first} is 32x32 with 3 channels"),
    (_undecodable, "{path}: cannot decode train/ship/00007.png ("),
    (_classes_differ, "{path}: train and test classes differ (only in train: ['horse']; only "
                      "in test: ['pony'])"),
]


@pytest.mark.parametrize(("make", "message"), BAD_SOURCES, ids=[m.__name__ for m, _ in BAD_SOURCES])
def test_bad_sources_say_what_is_wrong(
    tmp_path: Path, arrays: tuple[np.ndarray, ...], make, message: str  # type: ignore[no-untyped-def]
) -> None:
    path = make(tmp_path / "source", arrays)
    with pytest.raises(DatasetError) as caught:
        load_dataset(DataConfig(dataset="images", path=str(path)), 0)
    airplanes = path / "train" / "airplane"
    first = min(airplanes.iterdir()).relative_to(path).as_posix() if airplanes.exists() else ""
    assert str(caught.value).startswith(message.format(path=path, first=first))
    assert "\n" not in str(caught.value)


def test_offline_download_names_the_local_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    from objectives.keras_setup import keras

    def offline() -> None:
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(DatasetError) as caught:
        load_dataset(DataConfig(dataset="cifar10"), 0)
    message = str(caught.value)
    assert message.startswith("cannot download CIFAR-10 (OSError: [Errno -3] Temporary failure")
    assert "cifar-10-python.tar.gz" in message and "image-folder tree" in message


def test_an_unwritable_cache_folder_is_a_clear_error(
    tmp_path: Path, arrays: tuple[np.ndarray, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HPSEARCH_CACHE", str(blocker / "cache"))
    source = write_batches(tmp_path, arrays)
    with pytest.raises(DatasetError) as caught:
        load_dataset(DataConfig(dataset="cifar10", path=str(source)), 0)
    assert str(caught.value) == (
        f"cache folder {blocker / 'cache'} cannot be written (Not a directory); set "
        "HPSEARCH_CACHE to a writable folder")


def test_run_with_a_bad_dataset_fails_before_any_trial(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from search.cli import cli

    study = tmp_path / "study.toml"
    study.write_text('[study]\nn_trials = 1\n[data]\ndataset = "images"\npath = "x"\n')
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = CliRunner().invoke(cli, ["run", str(study), "--storage", url, "--data-path",
                                      str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: {tmp_path / 'missing'}: no such file or folder"
    import optuna

    assert optuna.study.get_all_study_names(url) == []  # nothing written


def test_the_digits_archive_is_an_image_folder_dataset_of_its_own(tmp_path: Path) -> None:
    """benchmarks/digits.py: scikit-learn's digits as the image-folder archive that the
    defaults are also judged on: every image once, the test split stratified, grayscale 8x8,
    read back by hpsearch's own reader; an existing file is left alone."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from digits import write_digits

    archive = tmp_path / "digits.tar.gz"
    assert write_digits(archive) == {"train": 1437, "test": 360}
    read = read_source(archive)
    assert read.class_names == tuple(str(d) for d in range(10))
    assert read.x_train.shape == (1437, 8, 8, 1) and read.x_test.shape == (360, 8, 8, 1)
    assert read.x_train.max() == 255 and read.x_train.dtype == np.uint8
    assert set(np.bincount(read.y_test)) <= {35, 36, 37}  # about 36 of each digit
    split = load_dataset(DataConfig(dataset="images", path=str(archive)), 0)
    assert split.input_shape == (8, 8, 1) and split.n_classes == 10
    with pytest.raises(FileExistsError):
        write_digits(archive)
    assert read_source(archive).x_train.shape == (1437, 8, 8, 1)
