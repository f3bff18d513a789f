"""Folders the commands write into (``evaluate --output``, ``report --output``), checked before
any work starts: minutes of retraining must not end in a folder that cannot be written."""

from __future__ import annotations

import os
from pathlib import Path

from search.errors import UserError


def writable_folder(folder: Path, option: str) -> Path:
    """``folder`` resolved, once it is known that it is, or can be made as, a writable folder.

    Raises:
        UserError: it is a file, or it (or the nearest folder above it that exists) cannot be
            written.
    """
    folder = folder.expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{option} {folder}: exists and is not a folder")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == folder else f" ({existing} is not writable)"
        raise UserError(f"{option} {folder}: cannot write there{where}")
    return folder
