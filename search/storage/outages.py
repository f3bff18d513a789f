"""Storage errors worth waiting out: telling a dropped connection from one that can never work,
and trying an action again with backoff while the database is away."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy

from search.errors import UserError, database_error

logger = logging.getLogger(__name__)

T = TypeVar("T")


def cause(error: BaseException,
          match: Callable[[BaseException], bool]) -> BaseException | None:
    """``error``, or the first error behind it (its causes and contexts), that ``match``
    accepts; None if there is none."""
    seen: BaseException | None = error
    while seen is not None:
        if match(seen):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def lost_connection(error: BaseException) -> BaseException | None:
    """The error behind ``error``, if any, that says the database dropped a connection it had
    accepted (a server restarting, an administrator ending it) or refused one for want of free
    connections: worth trying again. A connection refused for any other reason, a wrong
    password or an unknown database are not."""
    return cause(error, lambda seen: (isinstance(seen, sqlalchemy.exc.DBAPIError)
                                      and _dropped(seen)) or _proxy_away(seen))


def proxy_error(error: BaseException) -> bool:
    """Whether ``error`` is an hpsearch proxy's (``grpc://``) failure to answer a request."""
    grpc = sys.modules.get("grpc")  # not imported: no proxy was asked anything
    return grpc is not None and isinstance(error, grpc.RpcError)


def _proxy_away(error: BaseException) -> bool:
    """A proxy that does not answer (stopped, restarting, unreachable), or that failed to
    answer: Optuna's proxy passes any error of its storage on as UNKNOWN, and the storage's
    errors are its database's (the proxy's log has each one's own words)."""
    if not proxy_error(error):
        return False
    import grpc

    return error.code() in (  # type: ignore[attr-defined]
        grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNKNOWN)


# SQLSTATE classes: operator intervention (terminated, shutting down, starting up) and
# connection exceptions; and too_many_connections (53300: the server's, a role's or a
# database's connection limit reached). A connection a new engine is still setting up carries
# no state and is not marked invalidated by SQLAlchemy, hence the server's own words too.
_DROPPED_STATES = ("57P", "08", "53300")
_DROPPED_TEXT = ("server closed the connection unexpectedly", "terminating connection",
                 "too many clients already", "too many connections for",
                 "remaining connection slots are reserved")


def _dropped(error: sqlalchemy.exc.DBAPIError) -> bool:
    if error.connection_invalidated:
        return True
    state = getattr(error.orig, "sqlstate", None) or ""
    return state.startswith(_DROPPED_STATES) or any(text in str(error.orig)
                                                    for text in _DROPPED_TEXT)


def retrying(action: Callable[[], T], wait: float, failure: str, *,
             transient: Callable[[BaseException], BaseException | None] = lost_connection,
             ) -> T:
    """``action()``, tried again with backoff for up to ``wait`` seconds while it fails with
    a ``transient`` database error (by default: the database dropped a connection); any other
    error is raised at once.

    Raises:
        UserError: ``failure`` and the database's message, once ``wait`` has passed.
    """
    deadline = time.monotonic() + wait
    backoff = 0.5
    while True:
        try:
            return action()
        except Exception as error:
            database = transient(error)
            if database is None:
                raise
            if time.monotonic() + backoff > deadline:
                raise UserError(f"{failure}: {database_error(database)}") from None
            logger.warning("storage error (%s); retrying in %.1f s", database_error(database),
                           backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, 8.0)
