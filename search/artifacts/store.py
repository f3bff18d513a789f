"""Where a study's artifacts live: locating and opening its Optuna artifact store.

The store is a folder (by default beside the SQLite file, ``<db stem>-artifacts``; for a server
database ``./hpsearch-artifacts``) or ``s3://bucket`` (boto3, configured the usual AWS way).
Where a study's store is, is recorded on the study, so that ``dashboard``, ``evaluate`` and
``report`` find it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import optuna

from search.errors import UserError
from search.storage import optuna_ids
from search.storage.address import StorageAddress

logger = logging.getLogger(__name__)

LOCATION_ATTR = "hpsearch:artifacts"  # study system attribute: where its store is


def resolve_location(given: str | None, spec_store: str | None,
                     address: StorageAddress) -> str:
    """The command line's store, else ``HPSEARCH_ARTIFACTS``, else the study file's, else the
    default for the storage."""
    chosen = given or os.environ.get("HPSEARCH_ARTIFACTS") or spec_store
    if chosen is None:
        return str(address.default_artifacts())
    return chosen if chosen.startswith("s3://") else str(Path(chosen).expanduser().resolve())


class FolderArtifactStore(optuna.artifacts.FileSystemArtifactStore):
    """Optuna's folder store, whose files appear whole or not at all: each is written under a
    temporary name and renamed into place, and removed if the write fails. Optuna's own store
    writes in place: a full disk left truncated models and empty figures behind, which no
    trial could use and which kept the disk full."""

    def __init__(self, base_path: str | Path) -> None:
        super().__init__(base_path)
        self.folder = Path(base_path)

    def write(self, artifact_id: str, content_body: Any) -> None:
        if Path(artifact_id).name != artifact_id or artifact_id.startswith("."):
            raise ValueError(f"Invalid artifact_id: {artifact_id}")
        partial = f".{artifact_id}.partial"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)  # with the first artifact
            super().write(partial, content_body)
            os.replace(self.folder / partial, self.folder / artifact_id)
        except BaseException:
            (self.folder / partial).unlink(missing_ok=True)
            raise


def open_store(location: str) -> Any:
    """The artifact store at ``location``. A folder that does not exist yet is made with the
    first artifact written to it, not before: a command that only reads (``dashboard``,
    ``report``) or a study whose objective keeps no artifacts (a table's) leaves none behind.

    Raises:
        UserError: the folder could not be made or written, or S3 is asked for without boto3.
    """
    if location.startswith("s3://"):
        bucket = location.removeprefix("s3://").strip("/")
        if not bucket or "/" in bucket:
            raise UserError(f"artifact store {location!r}: give a bucket alone, s3://bucket")
        try:
            import boto3  # noqa: F401
        except ModuleNotFoundError:
            raise UserError(f"artifact store {location!r} needs boto3: pip install "
                            "'hpsearch[s3]'") from None
        return optuna.artifacts.Boto3ArtifactStore(bucket)
    folder = Path(location)
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        raise UserError(f"artifact store {location}: cannot make the folder ({existing} is not "
                        "a folder)")
    if not os.access(existing, os.W_OK):
        raise UserError(f"artifact store {location}: {existing} is not writable")
    return FolderArtifactStore(folder)


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    if not optuna_ids.supported():
        return {}
    return dict(optuna_ids.storage_of(study).get_study_system_attrs(optuna_ids.study_id(study)))


def record_location(study: optuna.Study, location: str) -> None:
    if optuna_ids.supported() and study_system_attrs(study).get(LOCATION_ATTR) != location:
        optuna_ids.storage_of(study).set_study_system_attr(optuna_ids.study_id(study),
                                                           LOCATION_ATTR, location)


def stored_location(study: optuna.Study) -> str | None:
    value = study_system_attrs(study).get(LOCATION_ATTR)
    return value if isinstance(value, str) else None


def location_for(studies: list[optuna.Study], given: str | None,
                 address: StorageAddress) -> str:
    """The store to read ``studies``' artifacts from: the one given, else the one they
    recorded, else the default for the storage."""
    if given or os.environ.get("HPSEARCH_ARTIFACTS"):
        return resolve_location(given, None, address)
    recorded = {loc for loc in (stored_location(s) for s in studies) if loc}
    if len(recorded) > 1:
        logger.warning("studies keep artifacts in several stores %s; showing %s (choose with "
                       "--artifacts)", sorted(recorded), min(recorded))
    return min(recorded) if recorded else str(address.default_artifacts())
