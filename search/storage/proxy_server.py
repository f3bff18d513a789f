"""``hpsearch proxy``: Optuna's gRPC storage proxy in front of a study's database, with what
Optuna's proxy lacks for hpsearch's workers (``search.storage.proxy_protocol``): heartbeats by
the database's clock, the heartbeat ages the stale-trial check needs, and the study's budget
lock, which lives in the database as for workers connected to it directly (a PostgreSQL
advisory lock, a file lock beside a SQLite file), so workers on the database and workers
through any number of proxies share one budget.

The proxy is Optuna's own server (``optuna.storages.run_grpc_proxy_server``) on an
:class:`ProxyBackend`: an :class:`HpsearchStorage` whose three overridden methods answer the
protocol's requests and pass everything else to Optuna. It holds at most ``THREADS`` database
connections for its requests (a pool of that size) and one per budget lock held, whatever the
number of workers.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy

from search.errors import UserError, database_error
from search.storage import proxy_protocol as protocol
from search.storage.address import StorageAddress
from search.storage.heartbeats import HeartbeatAges
from search.storage.locks import StorageLock, budget_lock
from search.storage.opening import HpsearchStorage, open_storage
from search.storage.outages import cause

logger = logging.getLogger(__name__)

THREADS = 16  # requests served at once, and the database connections they use at most


@dataclass
class _Lease:
    holder: str
    lock: StorageLock
    seconds: float  # the lease asked for
    until: float  # time.monotonic()


class BudgetLeases:
    """The budget locks the proxy holds for its workers: at most one per study, each taken in
    the database (``search.storage.locks``) and held for a worker until it gives it back or
    its lease runs out (a worker killed while it held the lock stalls the others for its lease,
    the study's grace period, and no longer)."""

    def __init__(self, address: StorageAddress) -> None:
        self._address = address
        # one connection per lock held, kept while it is held (none on SQLite: a file lock)
        self._engine = sqlalchemy.create_engine(
            address.parsed, pool_size=1, max_overflow=8, **address.engine_kwargs()
        ) if address.backend == "postgresql" else None
        self._held: dict[str, _Lease] = {}
        self._guard = threading.Lock()

    def take(self, request: protocol.LockRequest) -> bool:
        with self._guard:
            now = time.monotonic()
            lease = self._held.get(request.study)
            if lease is not None:
                if lease.holder == request.holder:
                    lease.until = now + request.lease
                    return True
                if now < lease.until:
                    return False
                logger.warning("budget lock of study %r taken back from %s: it held it for "
                               "its lease of %g s without a word", request.study, lease.holder,
                               lease.seconds)
                del self._held[request.study]
                lease.lock.release()
            lock = budget_lock(self._address, request.study, self._engine)  # type: ignore[arg-type]
            if not lock.try_acquire():
                return False
            self._held[request.study] = _Lease(request.holder, lock, request.lease,
                                               now + request.lease)
            return True

    def give_back(self, request: protocol.LockRequest) -> None:
        with self._guard:
            lease = self._held.get(request.study)
            if lease is not None and lease.holder == request.holder:
                del self._held[request.study]
                lease.lock.release()

    def close(self) -> None:
        with self._guard:
            for lease in self._held.values():
                lease.lock.release()
            self._held.clear()
        if self._engine is not None:
            self._engine.dispose()


class ProxyBackend(HpsearchStorage):
    """The database behind ``hpsearch proxy``: Optuna's RDB storage, which also answers
    ``search.storage.proxy_protocol``'s requests."""

    POOL = (THREADS, 0)

    def __init__(self, address: StorageAddress, **options: Any) -> None:
        super().__init__(address, **options)
        self.leases = BudgetLeases(address)
        self.ages = HeartbeatAges(self.engine)

    def get_study_id_from_name(self, study_name: str) -> int:
        if not study_name.startswith(protocol.PREFIX):
            return super().get_study_id_from_name(study_name)
        if study_name == protocol.HELLO:
            return protocol.VERSION
        if study_name.startswith(protocol.LOCK):
            return int(self.leases.take(protocol.LockRequest.decode(study_name, protocol.LOCK)))
        if study_name.startswith(protocol.UNLOCK):
            self.leases.give_back(protocol.LockRequest.decode(study_name, protocol.UNLOCK))
            return 1
        raise KeyError(f"no such request {study_name!r}")

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if key == protocol.HEARTBEAT:
            self.record_heartbeat(trial_id)
            return
        super().set_trial_system_attr(trial_id, key, value)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        attrs = super().get_study_system_attrs(study_id)
        attrs[protocol.AGES] = {str(trial_id): age
                                for trial_id, age in self.ages.of(study_id).items()}
        return attrs


class _OneLineGrpcErrors(logging.Filter):
    """gRPC logs a request that failed in the storage (its database away) with a traceback:
    one line of hpsearch's instead; the worker that sent it waits it out and says so."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            database = cause(error, lambda seen: isinstance(seen, sqlalchemy.exc.SQLAlchemyError))
            logger.warning("a request failed: %s", database_error(database or error))
            return False
        return True


def open_backend(address: StorageAddress) -> ProxyBackend:
    """The proxy's database, reached (and Optuna's tables made if it has none) before the proxy
    listens.

    Raises:
        UserError: ``address`` is itself a proxy, or its database cannot be opened (as
            ``open_storage`` says, without a password).
    """
    if address.proxy is not None:
        raise UserError(f"--storage {address.shown}: give the proxy the database's own URL "
                        "(sqlite:///... or postgresql+psycopg://...), not another proxy")
    storage = open_storage(address, create=True, storage_class=ProxyBackend)
    assert isinstance(storage, ProxyBackend)
    return storage


def serve(address: StorageAddress, *, host: str, port: int) -> None:
    """Run the proxy on ``host:port`` until Ctrl-C or SIGTERM.

    Raises:
        UserError: the database cannot be opened, or the address cannot be listened on.
    """
    from search.listening import check_address

    check_address(host, port)
    backend = open_backend(address)
    logging.getLogger("grpc._server").addFilter(_OneLineGrpcErrors())
    shown = f"[{host}]" if ":" in host else host
    logger.info("hpsearch proxy for %s at grpc://%s:%d (Ctrl-C to stop)", address.describe(),
                shown, port)
    try:
        with warnings.catch_warnings():  # "experimental" since Optuna 4.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.run_grpc_proxy_server(
                optuna.storages.get_storage(backend), host=host, port=port,
                thread_pool=ThreadPoolExecutor(max_workers=THREADS))
    except KeyboardInterrupt:
        logger.info("proxy stopped")
    finally:
        backend.leases.close()
        backend.engine.dispose()
