"""Workers through ``hpsearch proxy`` (Optuna's gRPC storage proxy with hpsearch's heartbeats and
budget lock), with real processes on the local PostgreSQL: a worker killed mid-trial has its
trial resumed from its checkpoint, the proxy killed and started again mid-study is waited out,
the study ends with exactly N; the budget lock's lease; and bad input met with one line."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from conftest import HPSEARCH, free_port, wait_for
from search.errors import UserError
from search.storage import proxy_protocol as protocol
from search.storage.address import StorageAddress
from search.storage.locks import budget_lock
from search.storage.opening import open_storage
from search.storage.proxy_server import BudgetLeases
from test_outage import Relay, _through
from test_resume import _checkpoint_epoch, _finish, _start, _stop_mid_trial, _trials, this_study


EPOCHS = 12  # the killed trial's retry still trains when the proxy is killed and started again


def _proxy(database: str, port: int) -> subprocess.Popen[str]:
    """``hpsearch proxy`` on ``port``, once it listens."""
    process = subprocess.Popen([HPSEARCH, "proxy", "--storage", database, "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def listening() -> bool:
        assert process.poll() is None, process.communicate()[1]
        try:
            open_storage(f"grpc://127.0.0.1:{port}", create=True).close()
        except UserError:
            return False
        return True

    wait_for(listening, 60, "the proxy to listen")
    return process


@pytest.fixture
def proxies() -> Iterator[list[subprocess.Popen[str]]]:
    """The proxy processes a test starts, ended after it."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.kill()
        process.communicate()


@pytest.mark.long(106)
def test_workers_through_a_proxy_survive_a_killed_worker_and_a_proxy_restart(
    stub_study: Callable[..., Path], postgres_url: str, tmp_path: Path,
    proxies: list[subprocess.Popen[str]],
) -> None:
    """Three stub workers through a real proxy: the first is killed (SIGKILL) mid-trial, the
    proxy is killed and started again while another trains the killed trial's retry; the study
    ends with exactly N finished trials, the killed trial resumed from its checkpoint."""
    port, n_trials = free_port(), 2
    proxies.append(_proxy(postgres_url, port))
    grpc = f"grpc://127.0.0.1:{port}"
    # a grace period longer than the proxy's restart: its workers' trials are not taken for
    # dead while it is away (a database restart asks the same of the grace period)
    settings = this_study(n_trials)
    # and as a database restart does, it costs the trials whose records it cut off (their
    # storage writes failed): they are retried, the killed trial's retry among them
    settings["workers"] = {**settings["workers"], "grace_period": 8, "max_retry": 3}
    settings["training"] = {**settings["training"], "max_epochs": EPOCHS,
                            "early_stopping_patience": EPOCHS}
    study_file = stub_study(**settings)
    artifacts = tmp_path / "artifacts"
    checkpoint = artifacts / "checkpoints" / "resume" / "trial-0.npz"
    _, stopped, _ = _stop_mid_trial(lambda: _start("worker", study_file, grpc, artifacts),
                                 checkpoint, signal.SIGKILL, EPOCHS)
    survivors = [_start("worker", study_file, grpc, artifacts) for _ in range(2)]
    # once a survivor trains the killed trial's retry, the proxy goes away
    wait_for(lambda: any(t.user_attrs.get("resumes") == 0 and t.state == TrialState.RUNNING
                         for t in _trials(postgres_url)), 180, "the killed trial's retry")
    proxies[0].kill()
    proxies[0].communicate()
    time.sleep(1)
    proxies.append(_proxy(postgres_url, port))
    told = [_finish(worker) for worker in survivors]
    for worker, errors in zip(survivors, told):
        assert worker.returncode == 0, errors
        assert "Traceback" not in errors
    assert any("not recorded" in errors or "storage error" in errors for errors in told), told
    trials = _trials(postgres_url)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == n_trials, [
        (t.number, t.state, t.user_attrs.get("resumes"), t.user_attrs.get("fail_reason"))
        for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    (retry,) = [t for t in trials if t.user_attrs.get("first_try") == 0
                and t.state == TrialState.COMPLETE]
    assert retry.user_attrs["resumed_at_epoch"] >= stopped  # a later checkpoint, if the
    assert retry.user_attrs["epochs_run"] == EPOCHS  # killed worker wrote one as it died
    assert sorted(retry.intermediate_values) == list(range(EPOCHS))
    assert list((artifacts / "checkpoints").rglob("*.npz")) == []
    assert _checkpoint_epoch(checkpoint) == 0
    _read_back_through(grpc, artifacts, tmp_path, retry.number)


def _read_back_through(grpc: str, artifacts: Path, tmp_path: Path, number: int) -> None:
    """Every reading command, and the dashboard, on the study through the proxy."""
    import json
    import urllib.request

    from search.results.dashboard import open_for_dashboard, serve_in_background
    from test_cli import invoke

    assert "complete 2" in invoke("status", "--storage", grpc).stdout
    assert invoke("trials", "--storage", grpc, "--format", "csv").stdout.count(",complete,") == 2
    assert "best trial of resume: trial " in invoke("best", "--storage", grpc).stdout
    assert invoke("compare", "--storage", grpc).exit_code == 0
    report = invoke("report", "--storage", grpc, "--artifacts", str(artifacts), "--output",
                    str(tmp_path / "report"))
    assert report.exit_code == 0 and (tmp_path / "report" / "report.html").exists()
    evaluated = invoke("evaluate", "--storage", grpc, "--artifacts", str(artifacts),
                       "--trial", str(number), "--output", str(tmp_path / "evaluated"))
    assert evaluated.exit_code == 0, evaluated.output
    assert f"trial {number} retrained on" in evaluated.stdout
    storage, store, _ = open_for_dashboard(StorageAddress.parse(grpc), str(artifacts))
    dashboard = serve_in_background(storage, artifact_store=store)
    try:
        with urllib.request.urlopen(f"{dashboard.url}api/studies", timeout=30) as answer:
            (summary,) = json.loads(answer.read())["study_summaries"]
        assert summary["study_name"] == "resume"
    finally:
        dashboard.stop()


def test_the_budget_lock_through_a_proxy_is_the_database_s_and_its_lease_runs_out(
    storage_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """The proxy holds a study's budget lock in the database for one worker at a time: a
    direct worker waits for it too; a holder that says nothing for its lease (killed) loses it
    to the next worker, with one warning."""
    address = StorageAddress.parse(storage_url)
    leases = BudgetLeases(address)
    engine = sqlalchemy.create_engine(address.parsed, poolclass=sqlalchemy.pool.NullPool)
    direct = budget_lock(address, "s", engine)
    first, second = (protocol.LockRequest("s", holder, lease=1.0) for holder in ("a", "b"))
    try:
        assert leases.take(first) and leases.take(first)  # taken; taken again: a longer lease
        assert not leases.take(second)
        assert not direct.try_acquire()
        assert leases.take(protocol.LockRequest("other", "b", lease=1.0))  # another study's
        time.sleep(1.2)
        assert leases.take(second)
        (warning,) = [r for r in caplog.records if "taken back" in r.getMessage()]
        assert "study 's' taken back from a" in warning.getMessage()
        leases.give_back(first)  # no longer its holder: nothing given back
        assert not direct.try_acquire()
        leases.give_back(second)
        assert direct.try_acquire()
        assert not leases.take(first)  # the direct worker holds it now
        direct.release()
    finally:
        direct.release()
        leases.close()
        engine.dispose()


@pytest.mark.parametrize(("url", "told"), [
    ("grpc://", "names no host"),
    ("grpc://proxy:notaport", "malformed storage URL"),
    ("grpc://user:secret@proxy:13000", "a proxy URL is only a host and a port"),
    ("grpc://proxy:13000/db", "a proxy URL is only a host and a port"),
    ("grpc+tls://proxy:13000", "e.g. grpc://proxy-host:13000"),
])
def test_a_malformed_proxy_url_is_one_line(url: str, told: str) -> None:
    with pytest.raises(UserError, match=told) as raised:
        StorageAddress.parse(url)
    assert "secret" not in str(raised.value)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_proxy_that_does_not_answer_or_is_optuna_s_own_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(UserError, match=rf"cannot reach storage 'grpc://127.0.0.1:{port}': "):
        open_storage(f"grpc://127.0.0.1:{port}", create=False)
    storage = optuna.storages.get_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    threading.Thread(target=optuna.storages.run_grpc_proxy_server, args=(storage,),
                     kwargs={"host": "127.0.0.1", "port": port}, daemon=True).start()
    with pytest.raises(UserError, match="is Optuna's own gRPC proxy.*hpsearch proxy --storage"):
        open_storage(f"grpc://127.0.0.1:{port}", create=True, wait=30)


def test_the_proxy_refuses_a_database_it_cannot_reach_without_showing_the_password() -> None:
    unreachable = f"postgresql+psycopg://hp:secret@127.0.0.1:{free_port()}/studies"
    done = subprocess.run([HPSEARCH, "proxy", "--storage", unreachable, "--port",
                           str(free_port())], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: cannot reach storage 'postgresql+psycopg://hp:***@127.0.0.1")
    assert "secret" not in done.stderr + done.stdout


def test_a_proxy_whose_database_goes_away_is_waited_for_then_one_line(
    postgres_url: str, proxies: list[subprocess.Popen[str]],
) -> None:
    """The database behind the proxy is cut off (a TCP relay the test cuts): a command through
    the proxy tries for its wait, then says so in one line; restored within the wait, it
    goes on."""
    relay = Relay(("127.0.0.1", sqlalchemy.engine.make_url(postgres_url).port or 5432))
    port = free_port()
    try:
        proxies.append(_proxy(_through(relay, postgres_url), port))
        grpc = f"grpc://127.0.0.1:{port}"
        optuna.create_study(study_name="away", storage=postgres_url)
        relay.cut()
        began = time.monotonic()
        with pytest.raises(UserError, match=f"cannot reach storage '{grpc}': ") as raised:
            open_storage(grpc, create=False, wait=3)
        assert time.monotonic() - began >= 1.4  # tried again (after 0.5 s, 1 s), not given up
        assert len(str(raised.value).splitlines()) == 1
        threading.Timer(2, relay.restore).start()
        assert open_storage(grpc, create=False, wait=30).get_all_studies()[0].study_name == "away"
    finally:
        relay.cut()
