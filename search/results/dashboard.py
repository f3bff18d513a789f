"""``hpsearch dashboard``: optuna-dashboard on the study's storage."""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any

import optuna

from search.errors import UserError

logger = logging.getLogger(__name__)


def serve(storage: optuna.storages.BaseStorage, *, host: str, port: int,
          artifact_store: Any = None, artifacts_shown: str | None = None) -> None:
    """Serve optuna-dashboard until Ctrl-C; an address in use is a user error, said at once.
    With an artifact store, each trial's page lists its plots, reports and model."""
    import optuna_dashboard

    from search.artifacts.dashboard_listing import dashboard_shows_listings

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except socket.gaierror as exc:
            raise UserError(f"--host {host}: no such host ({exc.strerror})") from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"address {host}:{port} is in use; pick another with --port"
                                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise UserError(f"--host {host}: not an address of this machine; pick one of "
                                "its own with --host (0.0.0.0: all of them)") from None
            if exc.errno == errno.EACCES:
                raise UserError(f"--port {port}: not allowed for this user (ports below 1024 "
                                "need root); pick another with --port") from None
            raise UserError(f"address {host}:{port} cannot be used ({exc.strerror})") from None
    shown = f"[{host}]" if ":" in host else host
    logger.info("optuna-dashboard at http://%s:%d/ (Ctrl-C to stop)", shown, port)
    if artifacts_shown:
        logger.info("artifacts from %s", artifacts_shown)
    dashboard_shows_listings()  # one warning where this optuna-dashboard does not
    try:
        optuna_dashboard.run_server(storage, host=host, port=port, artifact_store=artifact_store)
    except KeyboardInterrupt:
        logger.info("dashboard stopped")
