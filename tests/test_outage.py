"""A database that goes away in the middle of a study, simulated on loopback: the worker talks
to PostgreSQL through a TCP relay that the test cuts (every connection dropped, new ones
refused) and restores. The real server is never stopped."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from conftest import HPSEARCH, finished, wait_for


def this_study(storage_wait: int) -> dict[str, Any]:
    """This file's study: overrides of the stub study."""
    return dict(
        study={"name": "outage", "n_trials": 4, "seed": 2}, sampler=None,
        data={"validation_fraction": None},
        training={"max_epochs": 6, "early_stopping_patience": 6},
        workers={"heartbeat_interval": 1, "grace_period": 8, "storage_wait": storage_wait},
        space={"n_layers": 1, "units": 64, "activation": None, "optimizer": "adam",
               "batch_size": 64},
    )


class Relay:
    """A loopback TCP relay to PostgreSQL that can be cut and restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._open: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            if self._listener is not None:
                try:  # wakes the thread blocked in accept(), which would accept on otherwise
                    self._listener.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._listener.close()
                self._listener = None
            for connection in self._open:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                connection.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self._lock:
                self._open += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    (b if source is a else a).sendall(data)
        except (OSError, ValueError):
            return


def _through(relay: Relay, url: str) -> str:
    return sqlalchemy.engine.make_url(url).set(host="127.0.0.1", port=relay.port).render_as_string(
        hide_password=False)


def _finished(url: str) -> int:
    return finished(url, "outage")


def _start(stub_study: Callable[..., Path], url: str, storage_wait: int) -> subprocess.Popen[str]:
    study_file = stub_study(**this_study(storage_wait))
    return subprocess.Popen([HPSEARCH, "worker", str(study_file), "--threads", "1"],
                            env={**os.environ, "HPSEARCH_STORAGE": url},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_worker_carries_on_after_the_database_comes_back(
    stub_study: Callable[..., Path], postgres_url: str
) -> None:
    relay = Relay(("127.0.0.1", sqlalchemy.engine.make_url(postgres_url).port or 5432))
    worker = _start(stub_study, _through(relay, postgres_url), storage_wait=60)
    try:
        wait_for(lambda: _finished(postgres_url) >= 1, 120, "a first finished trial")
        relay.cut()
        time.sleep(4)
        relay.restore()
        _, stderr = worker.communicate(timeout=300)
    finally:
        worker.kill()
        relay.cut()
    assert worker.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert _finished(postgres_url) == 4


def test_a_database_that_stays_down_ends_the_worker_with_one_line(
    stub_study: Callable[..., Path], postgres_url: str
) -> None:
    relay = Relay(("127.0.0.1", sqlalchemy.engine.make_url(postgres_url).port or 5432))
    worker = _start(stub_study, _through(relay, postgres_url), storage_wait=5)
    try:
        wait_for(lambda: _finished(postgres_url) >= 1, 120, "a first finished trial")
        relay.cut()
        started = time.monotonic()
        _, stderr = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert worker.returncode == 1
    assert time.monotonic() - started < 60  # a bounded wait, not a hang
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1
    assert errors[0].startswith("Error: the storage stayed unreachable for 5 s")


def test_a_connection_dropped_while_a_worker_checks_the_storage_is_tried_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The check before the data is loaded (search.storage.opening.check_storage) met an
    # administrator's pg_terminate_backend once and ended the worker with a traceback; it waits
    # within storage_wait, as opening the storage does.
    from search.errors import UserError
    from search.storage import opening

    calls: list[bool] = []

    def dropped_once(address: Any, *, create: bool) -> bool:
        calls.append(create)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError(
                "SELECT 1", {}, Exception("terminating connection due to administrator command"))
        return True

    monkeypatch.setattr(opening, "_inspect", dropped_once)
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/db"
    opening.check_storage(url, "study", wait=5)
    assert calls == [True, True]
    calls.clear()
    with pytest.raises(UserError, match="cannot reach storage .*: terminating connection"):
        opening.check_storage(url, "study", wait=0)  # no wait: one line, no traceback
