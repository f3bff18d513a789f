"""Trials that survive, with real processes on SQLite and PostgreSQL: a worker killed with
SIGKILL, stopped with SIGTERM or Ctrl-C mid-trial has its trial carried on by the next worker
from the epoch its checkpoint holds, to the history of the same trial run in one go; the study
ends with exactly N finished trials and no checkpoint left."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import HPSEARCH, computed_once, interruptible, study_trials, wait_for

import optuna
import pytest
from optuna.trial import TrialState

from objectives.checkpoints import CheckpointError, TrainingState
from objectives.record import evaluations
from conftest import stub_study_text


# Every parameter fixed: every trial trains the same network, its seed set by its number (a
# retry's: its first try's), so trial 0 of any run of this file is the same training. A trial
# is stopped once its checkpoint holds 3 epochs: the rest leave the stop time to land.
EPOCHS = 8


def this_study(n_trials: int) -> dict[str, Any]:
    """This file's study, one fixed configuration of EPOCHS epochs: overrides of the stub
    study."""
    return dict(
        study={"name": "resume", "n_trials": n_trials, "seed": 5, "warm_start": False},
        sampler={"type": "random", "n_startup_trials": None}, data={"validation_fraction": None},
        training={"max_epochs": EPOCHS, "early_stopping_patience": EPOCHS, "precision": "float32",
                  "fused_optimizer": None}, artifacts=None,
        workers={"heartbeat_interval": 1, "grace_period": 4, "max_retry": 1,
                 "storage_wait": 60},
        space={"n_layers": 1, "units": 256, "activation": "relu", "batch_norm": True,
               "dropout": 0.1, "l2": 1e-5, "initializer": "he_normal", "optimizer": "adam",
               "learning_rate": 0.001, "batch_size": 64},
    )


def _env(url: str, artifacts: Path) -> dict[str, str]:
    return {**os.environ, "HPSEARCH_STORAGE": url, "HPSEARCH_ARTIFACTS": str(artifacts),
            "TF_CPP_MIN_LOG_LEVEL": "3"}



# What TensorFlow's bundled gRPC prints as it aborts a process (SIGABRT) whose epoll file
# descriptor went away.
GRPC_EPOLL_ABORT = "epoll_wait error: Bad file descriptor"


def _start(command: str, study_file: Path, url: str, artifacts: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(interruptible([HPSEARCH, command, str(study_file), "--threads", "1"]),
                            env=_env(url, artifacts), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen[str], seconds: float = 300) -> str:
    try:
        _, stderr = process.communicate(timeout=seconds)
    finally:
        process.kill()
    return stderr


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return study_trials(url, "resume")


def _checkpoint_epoch(path: Path) -> int:
    try:
        return TrainingState.from_bytes(path.read_bytes()).epoch
    except (OSError, CheckpointError):
        return 0


Reference = Callable[[], dict[str, list[float]]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """Trial 0's history, run in one go (once for every test process), asked for when a test
    compares with it: after the test's own processes, so that a test process does not sit idle
    while another computes it (the tests that need it start first on each process, together)."""

    def run() -> dict[str, list[float]]:
        folder = tmp_path_factory.mktemp("reference")
        study_file = folder / "study.toml"
        study_file.write_text(stub_study_text(**this_study(1)), encoding="utf-8")
        url = f"sqlite:///{folder / 'reference.db'}"
        process = _start("run", study_file, url, folder / "artifacts")
        errors = _finish(process)
        if _aborted_in_grpc(process, errors):
            process = _start("run", study_file, url, folder / "artifacts")
            errors = _finish(process)
        assert process.returncode == 0, errors
        (trial,) = _trials(url)
        return dict(trial.user_attrs["history"])

    return functools.cache(lambda: computed_once(tmp_path_factory,
                                                 f"resume-reference-{EPOCHS}", run))


def _aborted_in_grpc(process: subprocess.Popen[str], errors: str) -> bool:
    """TensorFlow's bundled gRPC aborted ``process`` as it started, before hpsearch said a word
    (2 of about 8 full runs of the suite, as the suite starts; likely the fork handlers a
    ``preexec_fn`` ran in the child, which ``conftest.interruptible`` no longer uses): a test
    whose point is what the process does next starts it once more, with a warning."""
    if process.returncode == -signal.SIGABRT and GRPC_EPOLL_ABORT in errors:
        warnings.warn(f"a process aborted in TensorFlow's gRPC: {errors.strip()}", stacklevel=2)
        return True
    return False


def _stop_mid_trial(start: Callable[[], subprocess.Popen[str]], checkpoint: Path,
                    how: signal.Signals, epochs: int = EPOCHS
                    ) -> tuple[subprocess.Popen[str], int, str]:
    """Start a process with ``start`` and stop it with ``how`` once trial 0's checkpoint holds 3
    epochs or more (of ``epochs``): the process, the epochs its checkpoint holds when it has
    ended, and its stderr. A process that ends before is told at once, with its stderr."""
    for _ in range(2):
        process = start()

        def training() -> bool:
            assert process.poll() is None, "the process ended"
            return _checkpoint_epoch(checkpoint) >= 3

        try:
            wait_for(training, 180, "a checkpoint of 3 epochs")
            break
        except AssertionError:
            process.kill()  # if it still runs
            errors = process.communicate(timeout=60)[1]
            if not _aborted_in_grpc(process, errors):
                raise AssertionError(f"no checkpoint of 3 epochs; stderr: {errors}") from None
    else:
        raise AssertionError("aborted in TensorFlow's gRPC twice")
    process.send_signal(how)
    errors = process.communicate(timeout=120)[1]
    epoch = _checkpoint_epoch(checkpoint)
    assert 3 <= epoch < epochs, "the trial ended before it could be stopped"
    return process, epoch, errors


def _assert_resumed(url: str, artifacts: Path, stopped: int, retry_of: int,
                    reference: Reference, n_trials: int) -> None:
    trials = _trials(url)
    assert trials[0].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.user_attrs.get("resumes") == retry_of]
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["first_try"] == 0
    assert retry.user_attrs["resumed_at_epoch"] == stopped
    assert retry.params == trials[0].params
    assert retry.user_attrs["history"] == reference()  # every epoch counted once
    assert retry.user_attrs["epochs_run"] == EPOCHS
    assert sorted(retry.intermediate_values) == list(range(EPOCHS))  # the whole curve
    assert sum(t.state == TrialState.COMPLETE for t in trials) == n_trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert list((artifacts / "checkpoints").rglob("*.npz")) == []


@pytest.mark.long(85)
def test_a_killed_worker_s_trial_resumes_from_its_last_checkpoint(
    stub_study: Callable[..., Path], storage_url: str, tmp_path: Path,
    reference: Reference,
) -> None:
    study_file = stub_study(**this_study(2))
    artifacts = tmp_path / "artifacts"
    checkpoint = artifacts / "checkpoints" / "resume" / "trial-0.npz"
    _, stopped, _ = _stop_mid_trial(
        lambda: _start("worker", study_file, storage_url, artifacts), checkpoint, signal.SIGKILL)
    (killed,) = _trials(storage_url)  # still running, as far as the storage knows
    status = subprocess.run([HPSEARCH, "status", "--storage", storage_url], capture_output=True,
                            text=True, timeout=60)
    assert f"running: trial 0 on {killed.user_attrs['worker']}, " in status.stdout
    survivor = _start("worker", study_file, storage_url, artifacts)
    errors = _finish(survivor)
    assert survivor.returncode == 0, errors
    retry = next(t for t in _trials(storage_url) if t.user_attrs.get("resumes") == 0)
    assert f"trial {retry.number} resumes trial 0 at epoch {stopped + 1} of {EPOCHS}" in errors
    _assert_resumed(storage_url, artifacts, stopped, 0, reference, 2)


@pytest.mark.long(74)
@pytest.mark.parametrize(("command", "how", "backend"), [
    ("worker", signal.SIGTERM, "sqlite"), ("run", signal.SIGINT, "postgresql")])
def test_a_trial_stopped_by_sigterm_or_ctrl_c_resumes_when_the_study_runs_again(
    stub_study: Callable[..., Path], tmp_path: Path, command: str, how: signal.Signals,
    backend: str, request: pytest.FixtureRequest, reference: Reference,
) -> None:
    url = (f"sqlite:///{tmp_path / 'studies.db'}" if backend == "sqlite"
           else request.getfixturevalue("postgres_url"))
    study_file = stub_study(**this_study(1))
    artifacts = tmp_path / "artifacts"
    checkpoint = artifacts / "checkpoints" / "resume" / "trial-0.npz"
    first, stopped, told = _stop_mid_trial(lambda: _start(command, study_file, url, artifacts),
                                           checkpoint, how)
    assert first.returncode == 128 + how, told  # 143, 130
    assert "Traceback" not in told
    (stopped_trial,) = _trials(url)  # marked failed, not left running
    assert stopped_trial.state == TrialState.FAIL
    assert stopped_trial.user_attrs["stop_reason"] == "interrupted"
    assert stopped_trial.user_attrs["fail_reason"] == (
        f"interrupted by {'SIGTERM' if how == signal.SIGTERM else 'Ctrl-C'}")
    assert told.strip().splitlines()[-1] == (
        "interrupted: trial 0 marked failed; run the same command to resume the study")
    again = _start(command, study_file, url, artifacts)
    errors = _finish(again)
    assert again.returncode == 0, errors
    assert "trial 0 was interrupted: queued to run again" in errors
    assert f"trial 1 resumes trial 0 at epoch {stopped + 1} of {EPOCHS}" in errors
    _assert_resumed(url, artifacts, stopped, 0, reference, 1)
    if backend == "sqlite":  # once: evaluate retrains the resumed trial as it was configured
        import hpsearch  # `hpsearch evaluate`'s own path, in this process

        hpsearch.Study(study_file, storage=url, artifacts=str(artifacts)).evaluate(
            1, output=tmp_path / "evaluated")
        retry = _trials(url)[1]
        study = optuna.load_study(study_name="resume", storage=url)
        assert evaluations(study)[1]["test_accuracy"] == pytest.approx(
            retry.user_attrs["test_accuracy"], abs=1e-6)
