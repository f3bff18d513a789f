"""A worker's storage through ``hpsearch proxy`` (``--storage grpc://host:port``): Optuna's
``GrpcStorageProxy``, with the heartbeats, stale-trial check and budget lock a direct worker
has, asked of the proxy (``search.storage.proxy_protocol``).

Heartbeats make Optuna's own machinery work as on a database: Optuna's optimize loop beats
from a thread and fails stale trials (``optuna.storages.fail_stale_trials``) on a storage that
implements ``optuna.storages._heartbeat.BaseHeartbeat``, which Optuna keeps in a private module
(only ``RDBStorage`` implements it). :func:`heartbeats_supported` checks it once per process,
within the ``optuna<5.1`` bound; where it is not as expected, one warning, and workers run
through the proxy without heartbeats: a killed worker's trial stays RUNNING (and holds its slot
of the budget) until ``hpsearch`` is pointed at the database directly.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import socket
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import GrpcStorageProxy
from optuna.trial import FrozenTrial

from search.errors import UserError, database_error
from search.storage import proxy_protocol as protocol
from search.storage.address import StorageAddress
from search.storage.locks import wait_for

logger = logging.getLogger(__name__)

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


# Where Optuna keeps its heartbeat interface (a test renames it to force the fallback).
HEARTBEAT_INTERFACE = ("optuna.storages._heartbeat", "BaseHeartbeat")
EXPECTED_METHODS = {"record_heartbeat", "_get_stale_trial_ids", "get_heartbeat_interval",
                    "get_heartbeat_stale_trial_callback"}


def _base_heartbeat() -> type | None:
    module, name = HEARTBEAT_INTERFACE
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    abstract = set(getattr(found, "__abstractmethods__", ()))
    return found if isinstance(found, type) and EXPECTED_METHODS <= abstract else None


@functools.cache
def heartbeats_supported() -> bool:
    """Whether Optuna's heartbeat interface is where hpsearch expects it; if not, says so
    once."""
    if _base_heartbeat() is None:
        logger.warning("Optuna's heartbeat interface is not where hpsearch expects it: workers "
                       "through a proxy record no heartbeats, and a killed worker's trial is not "
                       "run again")
        return False
    return True


class ProxyStorage(GrpcStorageProxy):
    """Optuna's gRPC proxy client on an :class:`StorageAddress` ``grpc://host:port``, with the
    budget lock and the heartbeat ages of ``hpsearch proxy``."""

    def __init__(self, address: StorageAddress, *, grace_period: float = 60.0) -> None:
        assert address.proxy is not None
        host, port = address.proxy
        with warnings.catch_warnings():  # "experimental" since Optuna 4.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(host=f"[{host}]" if ":" in host else host, port=port)
        self.address = address
        self.grace_period = grace_period

    def hello(self) -> None:
        """Whether an hpsearch proxy of this version answers.

        Raises:
            UserError: Optuna's own proxy (or another version of hpsearch's) answers.
            grpc.RpcError: nothing answers (worth waiting for: ``search.storage.outages``).
        """
        try:
            version = self.get_study_id_from_name(protocol.HELLO)
        except KeyError:
            raise UserError(
                f"storage {self.address.shown!r} is Optuna's own gRPC proxy, which keeps no "
                "heartbeats or budget: start hpsearch's in its place, `hpsearch proxy --storage "
                "DATABASE_URL`") from None
        if version != protocol.VERSION:
            raise UserError(f"storage {self.address.shown!r} is the proxy of another hpsearch "
                            f"version (protocol {version}, this one speaks {protocol.VERSION}): "
                            "run the same hpsearch on both sides")

    def heartbeat_ages(self, study_id: int) -> dict[int, float | None]:
        """{running trial id: seconds since its last heartbeat, or None}, by the database's
        clock."""
        ages = self.get_study_system_attrs(study_id).get(protocol.AGES, {})
        return {int(trial_id): age for trial_id, age in ages.items()}

    def budget_lock(self, study_name: str) -> ProxyLock:
        return ProxyLock(self, study_name, lease=self.grace_period)

    def unbeaten(self) -> _Unbeaten:
        return _Unbeaten(self)


class _Unbeaten:
    """The running trials that never beat, as the proxy sees them."""

    def __init__(self, storage: ProxyStorage) -> None:
        self._storage = storage

    def trial_ids(self, study_id: int) -> set[int]:
        if not heartbeats_supported():  # no trial beats: none may be taken for dead
            return set()
        return {trial_id for trial_id, age in self._storage.heartbeat_ages(study_id).items()
                if age is None}


class ProxyLock:
    """A study's budget lock, held in the proxy for this worker (``search.storage.locks`` has
    the lock's purpose); the same interface as a direct worker's ``StorageLock``. The proxy
    takes it back after ``lease`` seconds without a word from this worker (killed while it
    held it)."""

    def __init__(self, storage: ProxyStorage, study_name: str, *, lease: float) -> None:
        self._storage = storage
        self._request = protocol.LockRequest(
            study=study_name, holder=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            lease=lease)
        self._held = False

    def acquire(self) -> None:
        """Wait until the proxy holds the lock for this worker, tried as a lock on the
        database is (``search.storage.locks.wait_for``)."""
        wait_for(self.try_acquire)

    def try_acquire(self) -> bool:
        if not self._held:
            self._held = self._storage.get_study_id_from_name(
                self._request.encode(protocol.LOCK)) == 1
        return self._held

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        try:
            self._storage.get_study_id_from_name(self._request.encode(protocol.UNLOCK))
        except Exception as exc:  # the proxy is away: its leases went with it, or will expire
            logger.debug("budget lock not given back: %s", exc)

    def __enter__(self) -> ProxyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _beating_class() -> Any:
    BaseHeartbeat: Any = _base_heartbeat()  # noqa: N806 (a class)

    class BeatingProxyStorage(ProxyStorage, BaseHeartbeat):  # type: ignore[misc]
        """A :class:`ProxyStorage` with Optuna's heartbeats: beats recorded by the proxy, stale
        trials told by the ages it gives."""

        def __init__(self, address: StorageAddress, *, heartbeat_interval: int,
                     grace_period: int, callback: StaleCallback | None) -> None:
            super().__init__(address, grace_period=grace_period)
            self._interval = heartbeat_interval
            self._callback = callback

        def record_heartbeat(self, trial_id: int) -> None:
            try:
                self.set_trial_system_attr(trial_id, protocol.HEARTBEAT, None)
            except Exception as exc:  # Optuna's thread would die of it: tried at the next beat
                logger.warning("heartbeat of trial %d not recorded: %s", trial_id,
                               database_error(exc))

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            return [trial_id for trial_id, age in self.heartbeat_ages(study_id).items()
                    if age is not None and age > self.grace_period]

        def get_heartbeat_interval(self) -> int | None:
            return self._interval

        def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
            return self._callback

    return BeatingProxyStorage


def open_proxy(address: StorageAddress, *, create: bool,
               heartbeat: tuple[int, int, int] | None,
               callback: StaleCallback | None) -> ProxyStorage:
    """The proxy's storage, once an hpsearch proxy has answered (``hello``); with
    ``heartbeat`` (interval, grace period, retries) and where Optuna allows it
    (:func:`heartbeats_supported`), with heartbeats and the stale-trial ``callback``.

    Raises:
        UserError: as :meth:`ProxyStorage.hello`; with ``create=False``, the proxy's database
            holds no studies.
        grpc.RpcError: the proxy does not answer.
    """
    storage: ProxyStorage
    if heartbeat is not None and heartbeats_supported():
        interval, grace, _ = heartbeat
        storage = _beating_class()(address, heartbeat_interval=interval, grace_period=grace,
                                   callback=callback)
    else:
        storage = ProxyStorage(address, grace_period=heartbeat[1] if heartbeat else 60.0)
    try:
        storage.hello()
        if not create and not storage.get_all_studies():
            raise UserError(f"storage {address.shown!r} holds no studies")
    except BaseException:
        storage.close()
        raise
    return storage
