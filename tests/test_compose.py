"""docker-compose.yml: Docker cannot run here, so the file is parsed and each hpsearch
service's command is run for real against the local PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from conftest import HPSEARCH, free_port

import optuna
import pytest
import sqlalchemy
import yaml
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parent.parent


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME:-default} substitution."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}",
                  lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _service_env(service: dict[str, Any], url: str, artifacts: Path) -> dict[str, str]:
    """The service's environment here: the local database (or the proxy in front of it), and
    the folder ``artifacts`` for the shared volume the service mounts at its
    HPSEARCH_ARTIFACTS."""
    env = {k: _interpolate(str(v), {}) for k, v in service["environment"].items()}
    assert env["HPSEARCH_STORAGE"] in ("postgresql+psycopg://hpsearch@postgres:5432/hpsearch",
                                       "grpc://proxy:13000")
    cache = env.pop("HPSEARCH_CACHE")
    assert cache == "/cache"
    assert env.pop("HPSEARCH_ARTIFACTS") == "/artifacts"
    assert "artifacts:/artifacts" in service["volumes"]  # the named volume, not the container
    return {**os.environ, **{k: v for k, v in env.items() if v}, "HPSEARCH_STORAGE": url,
            "HPSEARCH_ARTIFACTS": str(artifacts)}


def test_compose_file_describes_the_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "proxy", "dashboard", "worker"}
    postgres = services["postgres"]
    assert postgres["healthcheck"]["test"][0] == "CMD-SHELL"
    assert "pg_isready" in postgres["healthcheck"]["test"][1]
    assert any(v.startswith("pgdata:") for v in postgres["volumes"])
    for name in ("proxy", "dashboard", "worker"):
        service = services[name]
        assert service["build"] == "."
        (needed,) = service["depends_on"]
        assert service["depends_on"][needed]["condition"] == "service_healthy"
        assert needed == ("proxy" if name == "worker" else "postgres")
    assert services["worker"]["environment"]["HPSEARCH_STORAGE"] == "grpc://proxy:13000"
    assert "PGPASSWORD" not in services["worker"]["environment"]  # no database of its own
    assert services["proxy"]["command"][services["proxy"]["command"].index("--port") + 1] \
        == "13000"
    assert "grpc.channel_ready_future" in services["proxy"]["healthcheck"]["test"][-1]
    assert "pgdata" in compose["volumes"] and "artifacts" in compose["volumes"]
    assert "replicas" not in services["worker"].get("deploy", {})  # --scale decides
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["hpsearch"]' in dockerfile


def _get(url: str, server: subprocess.Popen[str], seconds: float = 60) -> bytes:
    """GET ``url`` from the dashboard, waiting for it to answer."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bytes(response.read())
        except OSError:
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, f"the dashboard did not answer {url}"
            time.sleep(0.3)


def _dashboard(compose: dict[str, Any], url: str, artifacts: Path
               ) -> tuple[subprocess.Popen[str], int]:
    service = compose["services"]["dashboard"]
    command = [_interpolate(part, {}) for part in service["command"]]
    assert command[0] == "dashboard" and command[command.index("--host") + 1] == "0.0.0.0"
    port = free_port()
    command[command.index("--host") + 1] = "127.0.0.1"  # tests listen on loopback only
    command[command.index("--port") + 1] = str(port)
    server = subprocess.Popen([HPSEARCH, *command], cwd=REPO,
                              env=_service_env(service, url, artifacts),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return server, port


def _proxy(compose: dict[str, Any], url: str) -> tuple[subprocess.Popen[str], int]:
    """The proxy service's command on the local database, on loopback and a free port."""
    service = compose["services"]["proxy"]
    command = [_interpolate(part, {}) for part in service["command"]]
    assert command[0] == "proxy" and command[command.index("--host") + 1] == "0.0.0.0"
    port = free_port()
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    env = {k: _interpolate(str(v), {}) for k, v in service["environment"].items()}
    proxy = subprocess.Popen([HPSEARCH, *command], cwd=REPO,
                             env={**os.environ, **env, "HPSEARCH_STORAGE": url},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # the healthcheck's look
        grpc.channel_ready_future(channel).result(timeout=60)
    return proxy, port


def test_workers_and_the_dashboard_share_one_artifact_store(
    compose: dict[str, Any], postgres_url: str, tmp_path: Path
) -> None:
    """The worker service's trials, through the proxy service, leave their figures in the
    shared volume, and the dashboard service lists and serves them from there."""
    volume = tmp_path / "artifacts-volume"
    service = compose["services"]["worker"]
    command = [_interpolate(part, {"HPSEARCH_STUDY": "studies/smoke.toml"})
               for part in service["command"]]
    assert command[:2] == ["worker", "studies/smoke.toml"]
    proxy, port = _proxy(compose, postgres_url)
    try:
        done = subprocess.run([HPSEARCH, *command, "--n-trials", "2"], cwd=REPO,
                              env=_service_env(service, f"grpc://127.0.0.1:{port}", volume),
                              capture_output=True, text=True, timeout=300)
    finally:
        proxy.terminate()
        proxy.communicate(timeout=30)
    assert done.returncode == 0, done.stderr
    assert proxy.returncode == 0  # SIGTERM: stopped cleanly
    study = optuna.load_study(study_name="smoke", storage=postgres_url)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 2
    assert any(volume.iterdir())

    server, port = _dashboard(compose, postgres_url, volume)
    try:
        base = f"http://127.0.0.1:{port}"
        (summary,) = json.loads(_get(f"{base}/api/studies", server))["study_summaries"]
        detail = json.loads(_get(f"{base}/api/studies/{summary['study_id']}", server))
        trial = next(t for t in detail["trials"] if t["artifacts"])
        names = {a["filename"] for a in trial["artifacts"]}
        assert "curves.png" in names
        curves = next(a for a in trial["artifacts"] if a["filename"] == "curves.png")
        image = _get(f"{base}/artifacts/{summary['study_id']}/{trial['trial_id']}/"
                     f"{curves['artifact_id']}", server)
        assert image.startswith(b"\x89PNG")
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_dashboard_service_command_serves_an_empty_database(
    compose: dict[str, Any], postgres_url: str, tmp_path: Path
) -> None:
    server, port = _dashboard(compose, postgres_url, tmp_path / "artifacts-volume")
    try:
        body = _get(f"http://127.0.0.1:{port}/api/studies", server)
        assert json.loads(body)["study_summaries"] == []
    finally:
        server.terminate()
        server.communicate(timeout=30)
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.connect() as connection:
        assert sqlalchemy.inspect(connection).has_table("studies")
    engine.dispose()
