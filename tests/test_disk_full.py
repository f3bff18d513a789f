"""A full disk under a SQLite storage (issue 26, item 4), on a real small filesystem (a tmpfs,
mounted as root): refused before anything is written when it is full already; when it fills
during a trial, said at once in one line with that trial recorded failed, none left RUNNING."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from conftest import HPSEARCH, study_trials, wait_for

import optuna
import pytest
from optuna.trial import TrialState

from search.storage.disk_space import disk_full



@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MB filesystem of its own."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * (1 << 16))
                handle.flush()
        except OSError:
            pass


def _run(study_file: Path, url: str, tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "HPSEARCH_ARTIFACTS": str(tmp_path / "artifacts")}
    return subprocess.Popen([HPSEARCH, "run", str(study_file), "--storage", url, "--n-trials",
                             "20"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_a_disk_that_fills_mid_trial_ends_the_run_at_once_with_the_trial_failed(
    stub_study: Callable[..., Path], tmp_path: Path, small_disk: Path
) -> None:
    study_file = stub_study(training={"max_epochs": 60, "early_stopping_patience": 60})
    url = f"sqlite:///{small_disk / 'studies.db'}"

    def running() -> bool:
        return any(t.state == TrialState.RUNNING and t.intermediate_values
                   for t in study_trials(url, "tiny"))

    process = _run(study_file, url, tmp_path)
    try:
        wait_for(running, 120, "a trial mid-training")
        _fill(small_disk)
        filled = time.monotonic()
        _, errors = process.communicate(timeout=120)
        took = time.monotonic() - filled
    finally:
        process.kill()
    assert process.returncode == 1, errors
    lines = [line for line in errors.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "the disk is full (database or disk is full)" in lines[0]
    assert "Traceback" not in errors
    assert took < 30, took  # not two minutes of retries
    (small_disk / "filler").unlink()
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert TrialState.RUNNING not in [t.state for t in trials]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"] == (
        "the storage's disk was full")
    assert f"trial {failed[0].number} recorded failed" in lines[0]


def test_a_full_disk_is_refused_before_anything_is_written(
    write_study: Callable[..., Path], tmp_path: Path, small_disk: Path
) -> None:
    _fill(small_disk)
    url = f"sqlite:///{small_disk / 'studies.db'}"
    process = _run(write_study(), url, tmp_path)
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 1
    assert errors.strip().splitlines() == [
        f"Error: storage '{url}': the disk holding {small_disk / 'studies.db'} is full (0.0 MB "
        "free; hpsearch needs 8 MB to record trials): free some space, then run the same "
        "command"]
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_postgresql_s_disk_full_is_told_from_other_errors() -> None:
    class PgError(Exception):
        sqlstate = "53100"

    assert disk_full(RuntimeError("commit failed")) is False
    wrapped = RuntimeError("commit failed")
    wrapped.__cause__ = PgError("could not extend file")
    assert disk_full(wrapped)
    assert disk_full(OSError(28, "No space left on device"))


def test_a_full_artifact_store_keeps_no_partial_file(
    stub_study: Callable[..., Path], tmp_path: Path, small_disk: Path
) -> None:
    """The store's disk fills while trials write their figures and models: the trials complete
    with ``artifact_error`` recorded, and every file left in the store is whole and listed (a
    truncated model and empty figures stayed behind, unlisted, keeping the disk full)."""
    from search.artifacts.store import open_store
    from search.artifacts.dashboard_listing import artifacts_of

    study_file = stub_study(study={"n_trials": 2}, artifacts={"keep_models": 2, "figures": True})
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    store = small_disk / "store"
    store.mkdir()
    _fill(small_disk)
    filler = small_disk / "filler"
    os.truncate(filler, filler.stat().st_size - 40_000)  # 40 kB left: a figure, not a model
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HPSEARCH_ARTIFACTS": str(store)}
    done = subprocess.run([HPSEARCH, "run", str(study_file), "--storage", url], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "artifacts not stored" in done.stderr
    study = optuna.load_study(study_name="tiny", storage=url)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert any("artifact_error" in t.user_attrs for t in trials)
    listed = {meta["artifact_id"] for t in trials for meta in artifacts_of(study, t)}
    files = [p for p in store.iterdir() if p.is_file()]
    assert not [p.name for p in files if p.name.startswith(".")]  # no partial write left
    assert {p.name for p in files} <= listed
    readable = open_store(str(store))
    for path in files:
        with readable.open_reader(path.name) as reader:
            assert reader.read(1)  # not empty


def test_a_file_of_the_reserve_s_name_that_hpsearch_did_not_write_is_left_alone(
    tmp_path: Path,
) -> None:
    from search.storage.address import StorageAddress
    from search.storage.disk_space import give_up_reserve, keep_reserve

    url = StorageAddress.parse(f"sqlite:///{tmp_path / 'studies.db'}")
    (tmp_path / "studies.db").write_bytes(b"")
    mine = tmp_path / "studies.db.reserve"
    mine.write_text("someone's notes")
    keep_reserve(url)
    assert not give_up_reserve(url)
    assert mine.read_text() == "someone's notes"
    mine.unlink()
    keep_reserve(url)  # hpsearch's own: made, and given up
    assert mine.stat().st_size == 1 << 20
    assert give_up_reserve(url) and not mine.exists()
