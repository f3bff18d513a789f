"""docker-compose.yml: Docker cannot run here, so the file is parsed and each hpsearch
service's command is run for real against the local PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
import yaml
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parent.parent
HPSEARCH = str(Path(sys.executable).parent / "hpsearch")


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME:-default} substitution."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}",
                  lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _service_env(service: dict[str, Any], url: str) -> dict[str, str]:
    env = {k: _interpolate(str(v), {}) for k, v in service["environment"].items()}
    assert env["HPSEARCH_STORAGE"].startswith("postgresql+psycopg://hpsearch@postgres:5432/")
    cache = env.pop("HPSEARCH_CACHE")
    assert cache == "/cache"
    return {**os.environ, **{k: v for k, v in env.items() if v}, "HPSEARCH_STORAGE": url}


def test_compose_file_describes_the_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "dashboard", "worker"}
    postgres = services["postgres"]
    assert postgres["healthcheck"]["test"][0] == "CMD-SHELL"
    assert "pg_isready" in postgres["healthcheck"]["test"][1]
    assert any(v.startswith("pgdata:") for v in postgres["volumes"])
    for name in ("dashboard", "worker"):
        service = services[name]
        assert service["build"] == "."
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pgdata" in compose["volumes"]
    assert "replicas" not in services["worker"].get("deploy", {})  # --scale decides
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["hpsearch"]' in dockerfile


def test_worker_service_command_runs_against_postgres(
    compose: dict[str, Any], postgres_url: str
) -> None:
    service = compose["services"]["worker"]
    command = [_interpolate(part, {"HPSEARCH_STUDY": "studies/smoke.toml"})
               for part in service["command"]]
    assert command[:2] == ["worker", "studies/smoke.toml"]
    done = subprocess.run([HPSEARCH, *command], cwd=REPO, env=_service_env(service, postgres_url),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="smoke", storage=postgres_url)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 4


def test_dashboard_service_command_serves_an_empty_database(
    compose: dict[str, Any], postgres_url: str
) -> None:
    service = compose["services"]["dashboard"]
    command = [_interpolate(part, {}) for part in service["command"]]
    assert command[0] == "dashboard" and command[command.index("--host") + 1] == "0.0.0.0"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command[command.index("--host") + 1] = "127.0.0.1"  # tests listen on loopback only
    command[command.index("--port") + 1] = str(port)
    server = subprocess.Popen([HPSEARCH, *command], cwd=REPO,
                              env=_service_env(service, postgres_url),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies",
                                            timeout=2) as response:
                    assert json.load(response)["study_summaries"] == []
                    break
            except OSError:
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline, "the dashboard did not answer"
                time.sleep(0.3)
    finally:
        server.terminate()
        server.communicate(timeout=30)
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.connect() as connection:
        assert sqlalchemy.inspect(connection).has_table("studies")
    engine.dispose()
