"""hpsearch's storage held to Optuna's own storage test suite, as Optuna holds third-party ones.

Every test of ``optuna.testing.pytest_storages.StorageTestCase`` runs on the storage that
``search.storage.opening.open_storage`` returns, raw and wrapped in Optuna's cached storage (as
``optuna.create_study`` and ``optuna.load_study`` wrap it), on SQLite and on a fresh
PostgreSQL database per test: none skipped, none overridden. Each test's database is a copy of
one that ``open_storage`` made Optuna's empty tables in, once per test process (making them
again for each of the 236 tests was most of their time).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from conftest import _postgres_database
from optuna.storages import BaseStorage, _CachedStorage
from optuna.testing.pytest_storages import StorageTestCase

from search.storage.opening import HpsearchStorage, open_storage


@pytest.fixture(scope="session")
def empty_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file holding Optuna's tables and nothing else, made by ``open_storage``."""
    path = tmp_path_factory.mktemp("contract") / "empty.db"
    open_storage(f"sqlite:///{path}", create=True).engine.dispose()
    return path


@pytest.fixture(scope="session")
def empty_postgres() -> Iterator[str]:
    """A PostgreSQL database holding Optuna's tables and nothing else, made by
    ``open_storage``: the template of each test's database."""
    for url in _postgres_database(lock="none"):  # no connection stays open to it
        open_storage(url, create=True).engine.dispose()
        yield sqlalchemy.engine.make_url(url).database or ""


@pytest.fixture(params=["sqlite", "sqlite-cached", "postgresql", "postgresql-cached"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BaseStorage]:
    kind = str(request.param)
    if kind.startswith("sqlite"):
        shutil.copyfile(request.getfixturevalue("empty_sqlite"), tmp_path / "contract.db")
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path / 'contract.db'}"])
    else:
        urls = _postgres_database(template=request.getfixturevalue("empty_postgres"))
    url = next(urls)
    opened = open_storage(url, create=True)
    assert type(opened) is HpsearchStorage
    try:
        yield _CachedStorage(opened) if kind.endswith("cached") else opened
    finally:
        opened.engine.dispose()
        for _ in urls:  # the PostgreSQL database is dropped when its generator ends
            pass


class TestOptunaStorageContract(StorageTestCase):
    """Optuna's 46 storage tests, on each of the four storages above."""
