"""The decoded-array cache: decode once per machine, share the pages between worker processes.

An entry is a folder of ``.npy`` files plus ``meta.json``, named by a key derived from the
source's content. It is written into a temporary folder and renamed into place, so a reader
never sees a torn entry; a lock file makes concurrent loaders of one key decode it only once.
Entries are opened memory-mapped, so several processes on one machine share the same pages.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from objectives.sources import DatasetError

FORMAT_VERSION = "1"  # bump when the layout of an entry changes


def cache_root() -> Path:
    """``$HPSEARCH_CACHE``, else ``$XDG_CACHE_HOME/hpsearch``, else ``~/.cache/hpsearch``."""
    if os.environ.get("HPSEARCH_CACHE"):
        return Path(os.environ["HPSEARCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hpsearch"


def source_key(path: Path) -> str:
    """A key that changes whenever the source changes.

    An archive is hashed whole. A folder is keyed by every file's relative path, size and
    modification time, so that a changed file, a new file or a removed file gives a new key
    without reading 60,000 images on every start.
    """
    digest = hashlib.sha256(f"v{FORMAT_VERSION}".encode())
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = file.stat()
            digest.update(f"{file.relative_to(path).as_posix()}\0{stat.st_size}\0"
                          f"{stat.st_mtime_ns}\n".encode())
    else:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:32]


def derived_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


ArrayMap = dict[str, np.ndarray]


def _open(entry: Path) -> tuple[ArrayMap, dict[str, object]] | None:
    meta_file = entry / "meta.json"
    if not meta_file.exists():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r") for name in meta["arrays"]}
    except (OSError, ValueError, KeyError):
        return None  # damaged: rebuilt by the caller
    return arrays, meta


def load_or_build(
    key: str, build: Callable[[], tuple[ArrayMap, dict[str, object]]]
) -> tuple[ArrayMap, dict[str, object]]:
    """The cached arrays of ``key``, memory-mapped; ``build`` makes them when they are absent.

    Raises:
        DatasetError: the cache folder cannot be created or written.
    """
    root = cache_root()
    entry = root / key
    found = _open(entry)
    if found is not None:
        return found
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / f"{key}.lock", "w")  # noqa: SIM115 - held for the whole build
    except OSError as exc:
        raise DatasetError(
            f"cache folder {root} cannot be written ({exc.strerror}); set HPSEARCH_CACHE to a "
            "writable folder"
        ) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building this very entry
        found = _open(entry)
        if found is not None:
            return found
        if entry.exists():
            shutil.rmtree(entry)  # damaged entry
        arrays, meta = build()
        temporary = root / f".{key}.{uuid.uuid4().hex}.tmp"
        try:
            temporary.mkdir()
            for name, array in arrays.items():
                np.save(temporary / f"{name}.npy", np.ascontiguousarray(array))
            (temporary / "meta.json").write_text(json.dumps({**meta, "arrays": list(arrays)}))
            os.rename(temporary, entry)
        except OSError as exc:
            shutil.rmtree(temporary, ignore_errors=True)
            raise DatasetError(
                f"cache folder {root} cannot be written ({exc.strerror}); set HPSEARCH_CACHE "
                "to a writable folder"
            ) from None
    opened = _open(entry)
    assert opened is not None
    return opened
