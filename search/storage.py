"""Where studies live: resolving, checking and opening an Optuna RDB storage.

The default is a SQLite file in the working directory (``HPSEARCH_STORAGE`` overrides it); a
PostgreSQL URL (``postgresql+psycopg://user@host/db``) serves workers on several machines. A
password never appears in what we print: use :func:`redact` on any URL shown to a user.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from search.errors import UserError

DEFAULT_STORAGE = "sqlite:///hpsearch.db"
CONNECT_TIMEOUT_S = 10


def resolve_url(given: str | None) -> str:
    """The storage URL to use: the command line's, else ``HPSEARCH_STORAGE``, else the default."""
    return given or os.environ.get("HPSEARCH_STORAGE") or DEFAULT_STORAGE


def redact(url: str) -> str:
    """The URL as it may be shown: the password, if any, replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<malformed URL>"


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(
            f"malformed storage URL {redact(url)!r}: expected e.g. sqlite:///hpsearch.db or "
            "postgresql+psycopg://user@host:5432/db"
        ) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql", "mysql"):
        raise UserError(
            f"unsupported storage {parsed.get_backend_name()!r} in {redact(url)!r}: use sqlite "
            "or postgresql"
        )
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg2":
        raise UserError(
            f"storage {redact(url)!r}: use the psycopg 3 driver, postgresql+psycopg://..."
        )
    return parsed


def _engine_kwargs(parsed: URL) -> dict[str, object]:
    if parsed.get_backend_name() == "sqlite":
        # Several workers on one machine wait for the write lock instead of failing at once.
        return {"connect_args": {"timeout": 60}}
    return {
        "pool_pre_ping": True,  # a restarted server's dead connections are replaced, not used
        "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S},
    }


def _sqlite_path(parsed: URL) -> Path | None:
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database)


def open_storage(url: str, *, create: bool) -> optuna.storages.RDBStorage:
    """Open the storage at ``url`` after checking that it can be reached.

    With ``create=False`` (reading commands) a storage that does not exist yet is an error
    rather than being created empty.

    Raises:
        UserError: the URL is malformed, names an unknown driver, or the database cannot be
            reached or holds no Optuna studies; the message never shows a password.
    """
    parsed = _parse(url)
    shown = redact(url)
    path = _sqlite_path(parsed)
    if path is not None:
        if not create and not path.exists():
            raise UserError(f"no storage at {shown!r}: the file {path} does not exist")
        if create and not path.parent.exists():
            raise UserError(f"storage {shown!r}: the folder {path.parent} does not exist")
    kwargs = _engine_kwargs(parsed)
    try:
        engine = sqlalchemy.create_engine(parsed, **kwargs)  # type: ignore[arg-type]
        with engine.connect() as connection:
            has_tables = sqlalchemy.inspect(connection).has_table("studies")
        engine.dispose()
    except NoSuchModuleError:
        raise UserError(f"storage {shown!r}: no database driver for this URL") from None
    except ModuleNotFoundError as exc:
        raise UserError(f"storage {shown!r}: its driver is not installed ({exc.name})") from None
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise UserError(f"cannot reach storage {shown!r}: {reason}") from None
    if not create and not has_tables:
        raise UserError(f"storage {shown!r} holds no studies")
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise UserError(f"cannot open storage {shown!r}: {reason}") from None
