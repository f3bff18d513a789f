"""Real ``hpsearch`` processes: a run started with Ctrl-C ignored, and the dashboard answering
HTTP. (A run or worker stopped mid-trial by a real SIGTERM or Ctrl-C: tests/test_resume.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import HPSEARCH, free_port, interruptible, study_trials, wait_for

import optuna
from optuna.trial import TrialState


# This file's study, one trial of 12 epochs: overrides of the stub study.
SLOW_STUDY: dict[str, Any] = dict(
    study={"name": "slow", "n_trials": 1, "seed": 1}, sampler=None,
    data={"validation_fraction": None},
    training={"max_epochs": 12, "early_stopping_patience": 12},
    space={"n_layers": 1, "units": 64, "activation": None, "optimizer": "adam",
           "learning_rate": 1e-3, "batch_size": 64},
)


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return study_trials(url, "slow")



def test_a_run_started_with_ctrl_c_ignored_keeps_ignoring_it(
    stub_study: Callable[..., Path], tmp_path: Path
) -> None:
    """``nohup hpsearch run ... &``: the Ctrl-C of the terminal it was started from is not for
    it (SIGTERM still stops it: tests/test_resume.py)."""
    url = f"sqlite:///{tmp_path / 'slow.db'}"
    worker = subprocess.Popen(
        interruptible([HPSEARCH, "run", str(stub_study(**SLOW_STUDY)), "--storage", url],
                      sigint="SIG_IGN"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(t.state == TrialState.RUNNING and t.intermediate_values
                              for t in _trials(url)), 120, "a trial in the middle of training")
        worker.send_signal(signal.SIGINT)
        stdout, stderr = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert worker.returncode == 0, f"{stdout[-2000:]}\n{stderr}"
    assert [t.state for t in _trials(url)] == [TrialState.COMPLETE]  # trained to its end


def test_dashboard_answers_on_its_address(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    from test_cli import invoke

    url = f"sqlite:///{tmp_path / 'dash.db'}"  # a study to show, made in this process
    made = invoke("run", str(write_study()), "--storage", url, "--n-trials", "1")
    assert made.exit_code == 0, made.output
    port = free_port()
    server = subprocess.Popen(
        interruptible([HPSEARCH, "dashboard", "--storage", url, "--port", str(port)]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(answers, 60, "the dashboard")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
            studies = json.load(r)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["tiny"]

        busy = subprocess.run([HPSEARCH, "dashboard", "--storage", url, "--port", str(port)],
                              capture_output=True, text=True, timeout=60)
        assert busy.returncode == 1
        assert busy.stderr.strip() == (
            f"Error: address 127.0.0.1:{port} is in use; pick another with --port")
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    assert f"optuna-dashboard at http://127.0.0.1:{port}/" in stderr
