"""Shared fixtures: study files on stub data (``stub_study``: the one stub study, with a
test's own overrides), and storages of every kind.

PostgreSQL tests use the server at ``HPSEARCH_TEST_POSTGRES`` (default: the local server on
127.0.0.1:5432 with trust auth), each in a fresh database that is dropped afterwards. Where no
server answers they are skipped, unless ``HPSEARCH_REQUIRE_POSTGRES=1`` (as in CI) makes that a
failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
import textwrap
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import tomli_w

# Under pytest-xdist (`make test` runs the suite on several test processes at once), each
# process and every hpsearch process it starts gets one TensorFlow thread and one BLAS thread
# unless a test says otherwise: the test processes share the machine's cores as `run --workers`
# shares them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("HPSEARCH_TF_THREADS", "1")


def pytest_configure(config: pytest.Config) -> None:
    """In each process that runs tests: TensorFlow and Keras imported once, and what the
    process holds then frozen out of Python's cyclic garbage collector (``gc.freeze``). Each
    trial begins with a full collection (``objectives.between_trials.fresh_session``, as
    Keras's ``clear_session`` does), which otherwise looked at those 450,000 objects again
    every time: a quarter of a second a trial, a fifth of a small one's CPU time. They live as
    long as the process anyway; only this test process's collector changes, not the code under
    test, and the processes the tests start collect as users' do."""
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        from objectives import keras_setup  # noqa: F401
        from search.workers.run import freeze_start_up

        freeze_start_up()  # as the command line's workers do


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests marked ``long`` (a minute or more each) start first, at the heads of the test
    processes' shares, balanced by their seconds: pytest-xdist hands each process a
    contiguous share of the collection in order (``--dist worksteal``) and steals from the
    shares' ends, so a long test left at the end of a share runs alone while the other
    processes sit idle (4 minutes of a full run did). Every process reorders the same
    collection the same way."""

    def seconds(item: pytest.Item) -> float:
        marker = item.get_closest_marker("long")
        return float(marker.args[0]) if marker is not None and marker.args else 0.0

    long = sorted((item for item in items if item.get_closest_marker("long")), key=seconds,
                  reverse=True)  # stable: the collection's order among equals
    if not long:
        return
    rest = [item for item in items if not item.get_closest_marker("long")]
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    shares: list[list[pytest.Item]] = [[] for _ in range(count)]
    for item in long:  # each to the share with the least long work so far
        min(shares, key=lambda share: sum(map(seconds, share))).append(item)
    pending = len(items)
    for index, share in enumerate(shares):  # the sizes xdist's first split gives each process
        size = pending // (count - index)
        pending -= size
        taken = max(0, size - len(share))
        share.extend(rest[:taken])
        del rest[:taken]
    shares[-1].extend(rest)
    items[:] = [item for share in shares for item in share]


# The installed command, for tests that run it as a real process.
HPSEARCH = str(Path(sys.executable).parent / "hpsearch")

POSTGRES_ADMIN_URL = os.environ.get(
    "HPSEARCH_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

# A study of 3 stub trials of 3 epochs: a few seconds. Its trials make no figures and update
# with Keras's own optimizer step (a fifth less work a trial): the tests of figures and of the
# fused update ask for them (tests/test_artifacts.py, test_fast_path.py, test_objective.py).
TINY_STUDY = """
[study]
name = "tiny"
n_trials = 3
seed = 3

[sampler]
type = "tpe"
n_startup_trials = 2

[pruner]
type = "none"

[data]
dataset = "stub"
validation_fraction = 0.2

[training]
max_epochs = 3
early_stopping_patience = 2
fused_optimizer = false

[artifacts]
figures = false

[space]
n_layers = {low = 1, high = 2}
units = {low = 16, high = 64, log = true}
activation = ["relu", "tanh"]
optimizer = ["adam", "sgd"]
batch_size = 128
"""


def stub_study_text(**sections: Any) -> str:
    """The stub study (:data:`TINY_STUDY`) with ``sections`` laid over it, as TOML.

    Each keyword is a section: a dict is merged into the stub's section key by key (a key set to
    None is removed), None removes the section, a list (``fixed_trials``) replaces it.
    ``stub_study_text(study={"n_trials": 5}, pruner=None)``.
    """
    document: dict[str, Any] = tomllib.loads(TINY_STUDY)
    for name, section in sections.items():
        if section is None:
            document.pop(name, None)
        elif isinstance(section, dict):
            merged = {**document.get(name, {}), **section}
            document[name] = {key: value for key, value in merged.items() if value is not None}
        else:
            document[name] = section
    return tomli_w.dumps(document)


@pytest.fixture
def stub_study(tmp_path: Path) -> Callable[..., Path]:
    """Write the stub study with a test's overrides (:func:`stub_study_text`) into the test's
    folder and return its path: ``stub_study(training={"max_epochs": 1}, name="a.toml")``."""

    def write(*, name: str = "study.toml", **sections: Any) -> Path:
        path = tmp_path / name
        path.write_text(stub_study_text(**sections), encoding="utf-8")
        return path

    return write


@pytest.fixture
def write_study(tmp_path: Path) -> Callable[..., Path]:
    """Write a study file into the test's folder and return its path."""

    def write(text: str = TINY_STUDY, name: str = "study.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


# The local PostgreSQL's connections (100 by default) are shared by the tests that run at once
# (test processes, and pytest runs beside each other). A test that needs nearly all of them
# (tests/test_connections.py: 90 workers) has the server to itself: a lock across processes,
# shared by every other test's database while the test runs, that such a test takes alone. The
# gate lets no newcomer in while one waits to be alone, so it is not starved; a process that
# already shares the server (a test with two databases) does not queue at the gate again.
_SERVER_LOCKS = Path(tempfile.gettempdir()) / "hpsearch-tests-postgres"
_sharing = 0  # this process's databases that share the server now


@contextlib.contextmanager
def _server_lock(alone: bool) -> Iterator[None]:
    global _sharing
    _SERVER_LOCKS.mkdir(exist_ok=True)
    with open(_SERVER_LOCKS / "gate", "a") as gate, open(_SERVER_LOCKS / "users", "a") as users:
        if alone:
            assert _sharing == 0, "a test alone on the server cannot share it as well"
            fcntl.flock(gate, fcntl.LOCK_EX)  # no newcomer from now on
            fcntl.flock(users, fcntl.LOCK_EX)  # those inside have left
            yield  # both released as the files close
            return
        if _sharing == 0:
            fcntl.flock(gate, fcntl.LOCK_SH)
        fcntl.flock(users, fcntl.LOCK_SH)
        fcntl.flock(gate, fcntl.LOCK_UN)
        _sharing += 1
        try:
            yield
        finally:
            _sharing -= 1


def _postgres_database(template: str | None = None, *,
                       lock: str = "shared") -> Iterator[str]:
    """A fresh database (a copy of ``template`` where given), dropped at the end. ``lock``:
    ``shared`` with the other tests' databases while it lives, ``alone`` on the server
    (:func:`_server_lock`), or ``none`` for a database no connection stays open to (a
    template, made once)."""
    if lock == "none":
        yield from _new_postgres_database(template)
        return
    with _server_lock(alone=lock == "alone"):
        yield from _new_postgres_database(template)


def _new_postgres_database(template: str | None) -> Iterator[str]:
    admin = sqlalchemy.create_engine(
        POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with admin.connect():
            pass
    except sqlalchemy.exc.OperationalError as exc:
        admin.dispose()
        message = f"no PostgreSQL server at {POSTGRES_ADMIN_URL}: {exc.orig}"
        if os.environ.get("HPSEARCH_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    name = f"hpsearch_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        copied = f' TEMPLATE "{template}"' if template else ""
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"{copied}')
    # A server database's default artifact store is ./hpsearch-artifacts: keep it out of the
    # working directory (the repository), for this test and the processes it starts.
    try:
        with pytest.MonkeyPatch.context() as patch, \
                tempfile.TemporaryDirectory(prefix="artifacts-") as artifacts:
            patch.setenv("HPSEARCH_ARTIFACTS", artifacts)
            yield sqlalchemy.engine.make_url(POSTGRES_ADMIN_URL).set(
                database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def computed_once(tmp_path_factory: pytest.TempPathFactory, name: str,
                  compute: Callable[[], Any]) -> Any:
    """``compute()``'s result (JSON), computed once per run of the suite: the test processes
    (pytest-xdist) that need it share it through a file beside their temporary folders, the
    first one computing it while the others wait."""
    import json

    if not os.environ.get("PYTEST_XDIST_WORKER"):  # one test process: nothing to share
        return compute()
    shared = tmp_path_factory.getbasetemp().parent  # the run's, above each process's own
    path = shared / f"{name}.json"
    with open(shared / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        value = compute()
        path.write_text(json.dumps(value), encoding="utf-8")
        return value


_SIGINT_THEN_EXEC = ("import os, signal, sys; "
                     "signal.signal(signal.SIGINT, getattr(signal, sys.argv[1])); "
                     "os.execv(sys.argv[2], sys.argv[2:])")


def interruptible(command: list[str], sigint: str = "SIG_DFL") -> list[str]:
    """``command`` with Ctrl-C as at a terminal (``sigint="SIG_IGN"``: ignored). A test run
    started in the background (``cmd &``, nohup) hands its processes SIGINT ignored, and
    hpsearch then rightly keeps ignoring it. A small Python process sets it and replaces itself
    with ``command`` (the same pid), rather than a ``preexec_fn``: Python code run between fork
    and exec in a test process with TensorFlow's and gRPC's threads can deadlock on a lock
    another thread held at the fork, and a child once never reached its exec."""
    return [sys.executable, "-c", _SIGINT_THEN_EXEC, sigint, *command]


_watched: dict[str, Any] = {}


def study_trials(url: str, study_name: str) -> list[Any]:
    """The trials of study ``study_name`` in the storage at ``url`` as they stand now (none
    before the study exists), for tests that poll a study while real processes run it. One
    storage per URL serves every call: making one (as ``optuna.load_study`` does) costs 30 ms
    of CPU, which, ten times a second, was a core's tenth taken from the processes under test.
    On a database server it connects per read (no pool), so that nothing holds a test's
    database open when it is dropped. It never writes: no SQLite file, no table, no version
    row; Optuna's storage is made only once the study is there, whose row a worker writes after
    the tables (a watcher that made the tables while a worker made them, outside hpsearch's
    schema lock, failed the worker, and the test waited for a trial that never came)."""
    import optuna
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    storage = _watched.get(url)
    if storage is None:
        server = not url.startswith("sqlite")
        if not server and not Path(url.removeprefix("sqlite:///")).exists():
            return []
        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                found = connection.execute(
                    sqlalchemy.text("SELECT 1 FROM studies WHERE study_name = :name"),
                    {"name": study_name}).first()
        except sqlalchemy.exc.DBAPIError:  # no tables yet
            found = None
        finally:
            engine.dispose()
        if found is None:
            return []
        storage = _watched[url] = optuna.storages.RDBStorage(
            url, engine_kwargs={"poolclass": NullPool} if server else {},
            skip_table_creation=True)
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return []
    return list(storage.get_all_trials(study_id, deepcopy=False))


def finished(url: str, study_name: str) -> int:
    """How many trials of study ``study_name`` have finished (complete or pruned) so far."""
    from optuna.trial import TrialState

    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               for t in study_trials(url, study_name))


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail after ``seconds``, naming what was awaited."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test."""
    yield from _postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh storage of each kind: a SQLite file, and a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'studies.db'}"
    else:
        yield from _postgres_database()
