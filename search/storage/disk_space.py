"""A full disk under a SQLite storage: said at once, before a trial starts where possible, and
never leaving a trial RUNNING.

SQLite appends every write to its write-ahead log; on a full disk each write fails with
"database or disk is full", which SQLAlchemy and Optuna wrap as a commit that failed "e.g.
exceeding max length". Waited out like a dropped connection, it cost two minutes and left the
running trial RUNNING, since recording its failure is a write too. So:

- before a run writes anything, and before each new trial, the disk must have
  :data:`MIN_FREE_MB` free (a trial's records, and the log growing to its checkpoint size, fit);
- beside the database hpsearch keeps a small reserve file (``<database>.reserve``, hpsearch's
  own); when a write fails for want of space, the reserve is given up, which leaves room to
  record the running trial as failed, and the command ends with one line. The next run makes
  the reserve again.

PostgreSQL's disk is the server's: its "disk full" error (SQLSTATE 53100) ends the command
with one line as well, without waiting.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

from search.errors import UserError
from search.storage.address import StorageAddress
from search.storage.outages import cause

MIN_FREE_MB = 8.0
RESERVE_SUFFIX = ".reserve"
RESERVE_BYTES = 1 << 20
# The reserve's first line: a file of that name without it is someone else's and is left alone.
RESERVE_MARK = b"hpsearch reserve: room to record a trial's failure on a full disk\n"
SQLITE_FULL = 13
POSTGRES_DISK_FULL = "53100"


class DiskFull(UserError):
    """A write to the storage failed for want of disk space."""


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or an error behind it) says the storage's disk is full."""
    def full(seen: BaseException) -> bool:
        if isinstance(seen, sqlite3.Error):
            return (getattr(seen, "sqlite_errorcode", None) == SQLITE_FULL
                    or "database or disk is full" in str(seen))
        if isinstance(seen, OSError):
            return seen.errno == errno.ENOSPC
        return getattr(seen, "sqlstate", None) == POSTGRES_DISK_FULL

    return cause(error, full) is not None


def check_free_space(address: StorageAddress) -> None:
    """Refuse to write to a SQLite storage whose disk has less than :data:`MIN_FREE_MB` free
    (the reserve, where there is one, counts as free).

    Raises:
        DiskFull: with the free space and what to do.
    """
    path, reserve = address.sqlite_file, address.beside(RESERVE_SUFFIX)
    if path is None or reserve is None:
        return
    folder = path.parent if path.parent.exists() else Path.cwd()
    free = shutil.disk_usage(folder).free + _reserve_size(reserve)
    if free < MIN_FREE_MB * 2**20:
        raise DiskFull(f"storage {address.shown!r}: the disk holding {path} is full "
                       f"({free / 2**20:.1f} MB free; hpsearch needs {MIN_FREE_MB:g} MB to "
                       "record trials): free some space, then run the same command")


def keep_reserve(address: StorageAddress) -> None:
    """Make the reserve beside a SQLite database, if it is not there and the disk has room."""
    reserve = address.beside(RESERVE_SUFFIX)
    if reserve is None or not reserve.parent.is_dir():
        return
    if _reserve_size(reserve) >= RESERVE_BYTES or (reserve.exists() and not _ours(reserve)):
        return
    try:
        if shutil.disk_usage(reserve.parent).free < MIN_FREE_MB * 2**20:
            return
        # hpsearch's own, checked above, or absent: then made here, never over a file that
        # appeared meanwhile
        handle = open(reserve, "wb" if reserve.exists() else "xb")
    except OSError:
        return
    try:
        with handle:  # written, not sparse: the blocks are taken
            handle.write(RESERVE_MARK + b"\0" * (RESERVE_BYTES - len(RESERVE_MARK)))
    except OSError:
        reserve.unlink(missing_ok=True)  # the file this call opened, half written


def give_up_reserve(address: StorageAddress) -> bool:
    """Delete the reserve: room for the writes that record a failure. Whether there was one."""
    reserve = address.beside(RESERVE_SUFFIX)
    if reserve is None or not _ours(reserve):
        return False
    try:
        os.unlink(reserve)
    except OSError:
        return False
    return True


def _reserve_size(reserve: Path) -> int:
    """The size of ``reserve`` if it is hpsearch's own (0: none of ours)."""
    try:
        return reserve.stat().st_size if _ours(reserve) else 0
    except OSError:
        return 0


def _ours(reserve: Path) -> bool:
    """Whether ``reserve`` is a reserve hpsearch wrote: only those are replaced or deleted."""
    try:
        with open(reserve, "rb") as handle:
            return handle.read(len(RESERVE_MARK)) == RESERVE_MARK
    except OSError:
        return False
