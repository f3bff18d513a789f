"""``hpsearch dashboard``: optuna-dashboard on the study's storage."""

from __future__ import annotations

import logging
from typing import Any

import optuna

from search.errors import UserError
from search.storage.address import StorageAddress

logger = logging.getLogger(__name__)


def open_for_dashboard(address: StorageAddress, artifacts: str | None
                       ) -> tuple[optuna.storages.BaseStorage, Any, str | None]:
    """The storage the dashboard shows (a database server may be empty still, its workers not
    started; a SQLite file must exist), its studies' artifact store, and where that is."""
    from search.artifacts.store import location_for, open_store
    from search.storage.opening import open_storage

    storage = open_storage(address, create=address.server)
    studies = [optuna.load_study(study_name=summary.study_name, storage=storage)
               for summary in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    location = location_for(studies, artifacts, address)
    return storage, open_store(location), location


def serve(storage: optuna.storages.BaseStorage, *, host: str, port: int,
          artifact_store: Any = None, artifacts_shown: str | None = None) -> None:
    """Serve optuna-dashboard until Ctrl-C; an address in use is a user error, said at once.
    With an artifact store, each trial's page lists its plots, reports and model."""
    import optuna_dashboard

    from search.artifacts.dashboard_listing import dashboard_shows_listings
    from search.listening import check_address

    check_address(host, port)
    shown = f"[{host}]" if ":" in host else host
    logger.info("optuna-dashboard at http://%s:%d/ (Ctrl-C to stop)", shown, port)
    if artifacts_shown:
        logger.info("artifacts from %s", artifacts_shown)
    dashboard_shows_listings()  # one warning where this optuna-dashboard does not
    try:
        optuna_dashboard.run_server(storage, host=host, port=port, artifact_store=artifact_store)
    except KeyboardInterrupt:
        logger.info("dashboard stopped")


class BackgroundDashboard:
    """optuna-dashboard served from a thread of this process (a notebook's kernel) until
    :meth:`stop` or the process ends. In Jupyter it shows itself inline (an IFrame) with its
    address."""

    def __init__(self, server: Any, thread: Any, url: str) -> None:
        self._server, self._thread, self.url = server, thread, url

    @property
    def running(self) -> bool:
        return bool(self._thread.is_alive())

    def stop(self) -> None:
        """Stop serving and free the port; stopping twice does nothing."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __repr__(self) -> str:
        return f"optuna-dashboard at {self.url} ({'running' if self.running else 'stopped'})"

    def _repr_html_(self) -> str:
        if not self.running:
            return f"<p>optuna-dashboard at {self.url}: stopped</p>"
        return (f'<p>optuna-dashboard at <a href="{self.url}" target="_blank">{self.url}</a> '
                f'(<code>.stop()</code> to stop)</p><iframe src="{self.url}" width="100%" '
                'height="640" style="border: 1px solid #ddd"></iframe>')


def serve_in_background(storage: optuna.storages.BaseStorage, *, host: str = "127.0.0.1",
                        port: int = 0, artifact_store: Any = None) -> BackgroundDashboard:
    """Start optuna-dashboard on ``storage`` in a daemon thread, on ``port`` (0: a free one);
    it stops when the process ends, or at :meth:`BackgroundDashboard.stop`.

    Raises:
        UserError: the address cannot be listened on.
    """
    import atexit
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    import optuna_dashboard

    from search.artifacts.dashboard_listing import dashboard_shows_listings

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # a line per request would fill the notebook

    dashboard_shows_listings()
    app = optuna_dashboard.wsgi(storage, artifact_store=artifact_store)
    try:
        server: WSGIServer = make_server(host, port, app, handler_class=QuietHandler)
    except OSError as exc:
        raise UserError(f"optuna-dashboard cannot listen on {host}:{port} ({exc.strerror})"
                        ) from None
    thread = threading.Thread(target=server.serve_forever, name="optuna-dashboard",
                              daemon=True)
    thread.start()
    shown = f"[{host}]" if ":" in host else host
    running = BackgroundDashboard(server, thread, f"http://{shown}:{server.server_port}/")
    atexit.register(running.stop)
    logger.info("optuna-dashboard at %s", running.url)
    return running
