"""Where a study's checkpoints live: beside its artifacts, where every worker of the study
reaches them.

For a folder store (local, or shared over NFS), ``<store>/checkpoints/<study>/trial-<N>.npz``,
written to a temporary file in the same folder and renamed over the old one:
a worker killed while it writes leaves the previous checkpoint whole. For ``s3://bucket``, the
object ``checkpoints/<study>/trial-<N>.npz`` through Optuna's artifact store (an S3 object is
replaced whole or not at all). ``N`` is the number of the lineage's first try
(``search.workers.retries``): every retry of a trial carries on, and replaces, the same checkpoint.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import optuna

FOLDER = "checkpoints"


def _name(key: int) -> str:
    return f"trial-{key}.npz"


class FolderCheckpoints:
    """Checkpoints as files in one folder, replaced atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, key: int) -> Path:
        return self.folder / _name(key)

    def save(self, key: int, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=f".{_name(key)}.",
                                             suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            # Not flushed to the disk (fsync): that guards against the machine losing power, not
            # the process dying, and costs a third of a checkpoint's time; a checkpoint that
            # such a crash leaves torn is refused when read (objectives.checkpoints).
            os.replace(temporary, self.path(key))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def load(self, key: int) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def drop(self, key: int) -> None:
        self.path(key).unlink(missing_ok=True)

    def keys(self) -> list[int]:
        """The lineages that have a checkpoint here."""
        if not self.folder.is_dir():
            return []
        return sorted(int(p.stem.removeprefix("trial-")) for p in self.folder.glob("trial-*.npz")
                      if p.stem.removeprefix("trial-").isdigit())


class ArtifactCheckpoints:
    """Checkpoints as objects of an Optuna artifact store (S3)."""

    def __init__(self, store: Any, prefix: str) -> None:
        self.store, self.prefix = store, prefix

    def _id(self, key: int) -> str:
        return f"{self.prefix}/{_name(key)}"

    def save(self, key: int, data: bytes) -> None:
        self.store.write(self._id(key), io.BytesIO(data))

    def load(self, key: int) -> bytes | None:
        try:
            with self.store.open_reader(self._id(key)) as reader:
                return reader.read()
        except optuna.artifacts.exceptions.ArtifactNotFound:
            return None

    def drop(self, key: int) -> None:
        try:
            self.store.remove(self._id(key))
        except optuna.artifacts.exceptions.ArtifactNotFound:
            pass


def open_checkpoints(location: str, store: Any,
                     study_name: str) -> FolderCheckpoints | ArtifactCheckpoints:
    """The checkpoints of study ``study_name`` in the artifact store at ``location``
    (``store``: that store, opened)."""
    if location.startswith("s3://"):
        return ArtifactCheckpoints(store, f"{FOLDER}/{study_name}")
    return FolderCheckpoints(Path(location) / FOLDER / study_name)
