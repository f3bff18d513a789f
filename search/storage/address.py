"""A storage URL, parsed once: which backend it is, the SQLite file and the files hpsearch
keeps beside it, the engine options, and how the URL may be shown.

Everything that differs between SQLite and PostgreSQL and needs no connection is answered here;
the rest of hpsearch passes a :class:`StorageAddress` along instead of the URL. A password never
appears in what is shown: :attr:`StorageAddress.shown` (and :func:`redact` for a URL that does
not parse) hides it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from search.errors import UserError

DEFAULT_STORAGE = "sqlite:///hpsearch.db"
CONNECT_TIMEOUT_S = 10

PROXY_PORT = 13000  # Optuna's own default for its gRPC storage proxy

Backend = Literal["sqlite", "postgresql", "grpc"]


def resolve_url(given: str | None) -> str:
    """The storage URL to use: the command line's, else ``HPSEARCH_STORAGE``, else the default."""
    return given or os.environ.get("HPSEARCH_STORAGE") or DEFAULT_STORAGE


def redact(url: str) -> str:
    """The URL as it may be shown: the password, if any, replaced by ``***`` (also in a URL
    that does not parse, where whatever stands between ``user:`` and ``@`` is hidden)."""
    try:
        parsed = make_url(url)
        # as given where there is nothing to hide (SQLAlchemy would escape ':memory:' and such)
        return url if parsed.password is None else parsed.render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(//[^/:@]*:)[^@]*@", r"\1***@", url)


@dataclass(frozen=True)
class StorageAddress:
    """A storage URL that hpsearch accepts, parsed once (:meth:`parse`)."""

    url: str
    parsed: URL

    @classmethod
    def parse(cls, url: str) -> StorageAddress:
        """Raises:
            UserError: the URL is malformed, names another backend than SQLite or PostgreSQL
                (or psycopg 2), is a SQLite database in memory, or a server URL without a
                database; the message never shows a password.
        """
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):  # ValueError: a port that is not a number
            raise UserError(
                f"malformed storage URL {redact(url)!r}: expected e.g. sqlite:///hpsearch.db, "
                "postgresql+psycopg://user@host:5432/db or grpc://proxy-host:13000"
            ) from None
        backend = parsed.get_backend_name()
        if backend == "grpc":
            _check_proxy(url, parsed)
            return cls(url=url, parsed=parsed)
        if backend not in ("sqlite", "postgresql"):
            raise UserError(f"unsupported storage {backend!r} in {redact(url)!r}: use sqlite, "
                            "postgresql or grpc (an hpsearch proxy)")
        if backend == "postgresql" and parsed.get_driver_name() == "psycopg2":
            raise UserError(
                f"storage {redact(url)!r}: use the psycopg 3 driver, postgresql+psycopg://...")
        if backend == "sqlite" and _in_memory(parsed):
            # Each process (each worker) would have a database of its own, gone when it ends.
            raise UserError(
                f"storage {redact(url)!r} is a SQLite database in memory: nothing would be kept "
                "and workers could not share it; give a file, e.g. sqlite:///hpsearch.db")
        if backend == "postgresql" and not parsed.database:
            # libpq would pick the local socket and a database named after the user.
            raise UserError(f"storage {redact(url)!r} names no database: e.g. "
                            "postgresql+psycopg://user@host:5432/db")
        return cls(url=url, parsed=parsed)

    @classmethod
    def of(cls, storage: str | StorageAddress) -> StorageAddress:
        """``storage`` itself, or parsed where it is a URL."""
        return storage if isinstance(storage, StorageAddress) else cls.parse(storage)

    @property
    def backend(self) -> Backend:
        name = self.parsed.get_backend_name()
        return name if name in ("sqlite", "grpc") else "postgresql"  # type: ignore[return-value]

    @property
    def proxy(self) -> tuple[str, int] | None:
        """The host and port of an hpsearch proxy (``grpc://host:port``); None for a
        database."""
        if self.backend != "grpc":
            return None
        return self.parsed.host or "", self.parsed.port or PROXY_PORT

    @property
    def server(self) -> bool:
        """Whether the storage is a database server (which may still be empty while workers
        have not started), not a file beside this process."""
        return self.backend != "sqlite"

    @property
    def shown(self) -> str:
        """The URL as it may be shown (no password)."""
        return redact(self.url)

    @property
    def sqlite_file(self) -> Path | None:
        """The database file of a SQLite storage; None for a server."""
        return Path(self.parsed.database or "") if self.backend == "sqlite" else None

    def beside(self, suffix: str) -> Path | None:
        """The file ``<database><suffix>`` that hpsearch keeps beside a SQLite database (locks,
        the disk reserve); None for a server, whose workers share no folder."""
        path = self.sqlite_file
        return None if path is None else path.with_name(f"{path.name}{suffix}")

    def describe(self) -> str:
        """Where a study lives, for the first line of a run: the file, or the database and the
        server (the local socket where the URL names no host); never a password."""
        if self.sqlite_file is not None:
            return f"the SQLite file {self.sqlite_file.resolve()}"
        if self.proxy is not None:
            return "the hpsearch proxy at {}:{}".format(*self.proxy)
        server = (f"{self.parsed.host}:{self.parsed.port or 5432}" if self.parsed.host
                  else "this machine's local socket")
        return f"database {self.parsed.database!r} on the PostgreSQL server at {server}"

    def engine_kwargs(self, *, worker: bool = False) -> dict[str, object]:
        """The SQLAlchemy engine options hpsearch uses: Optuna's storage is opened with them.

        A ``worker``'s engine on a database server keeps one connection: its storage, budget
        lock and stale-trial check share it, and a second is opened only while two of them need
        one at once (the budget lock's holder writing its new trial; a heartbeat beside a
        report) and closed after. So as many workers as the server has connections for can run
        on one study (90 on a stock PostgreSQL's 100)."""
        if self.backend == "grpc":
            raise ValueError("a proxy's workers open no database engine")
        if self.backend == "sqlite":
            # Several workers on one machine wait for the write lock instead of failing at once.
            return {"connect_args": {"timeout": 60}}
        options: dict[str, object] = {
            "pool_pre_ping": True,  # a restarted server's dead connections are replaced, not used
            "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S},
        }
        if worker:
            options.update(pool_size=1, max_overflow=1)
        return options

    def scratch_engine(self, *, one_kept: bool = False) -> sqlalchemy.Engine:
        """An engine for a look before Optuna's storage is open (whether it holds Optuna's
        tables; the lock on creating them); dispose of it after. It keeps no connection, or with
        ``one_kept`` exactly one, reused by each of its uses (a lock tried again and again)."""
        if one_kept:
            return sqlalchemy.create_engine(self.parsed, pool_size=1, max_overflow=0,
                                            **self.engine_kwargs())  # type: ignore[arg-type]
        return sqlalchemy.create_engine(self.parsed, poolclass=sqlalchemy.pool.NullPool,
                                        **self.engine_kwargs())  # type: ignore[arg-type]

    def default_artifacts(self) -> Path:
        """Where a study's artifacts go unless told: beside the SQLite file
        (``<stem>-artifacts``), or ``./hpsearch-artifacts`` for a database server."""
        path = self.sqlite_file
        if path is None:
            return Path("hpsearch-artifacts").resolve()
        database = path.resolve()
        return database.with_name(f"{database.stem}-artifacts")


def _check_proxy(url: str, parsed: URL) -> None:
    """A proxy URL is ``grpc://host[:port]``: no user, password, database or options (the
    proxy holds the database's)."""
    example = "e.g. grpc://proxy-host:13000 (started with `hpsearch proxy`)"
    if not parsed.host:
        raise UserError(f"storage {redact(url)!r} names no host: {example}")
    if parsed.username or parsed.password or parsed.database or parsed.query:
        raise UserError(f"storage {redact(url)!r}: a proxy URL is only a host and a port "
                        f"(the proxy holds the database's own URL), {example}")
    if "+" in parsed.drivername:
        raise UserError(f"storage {redact(url)!r}: {example}")


def _in_memory(parsed: URL) -> bool:
    database = parsed.database or ""
    return (database in ("", ":memory:") or database.startswith("file::memory:")
            or parsed.query.get("mode") == "memory" or "mode=memory" in database)
