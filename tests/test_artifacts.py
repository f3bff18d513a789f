"""Per-trial artifacts, ``hpsearch evaluate`` and ``hpsearch report`` on a small stub study."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from click.testing import CliRunner, Result
from matplotlib import image as mpimg
from optuna.trial import TrialState

from objectives.data import CIFAR10_CLASSES
from search.artifacts.store import open_store
from search.artifacts.dashboard_listing import artifacts_of, listed, read_artifact
from search.cli import cli
from objectives.record import evaluations

from conftest import stub_study_text

# This file's study, with artifacts kept: overrides of the stub study.
STUDY: dict[str, Any] = dict(
    study={"name": "arts", "n_trials": 6, "seed": 11},
    sampler={"type": "random", "n_startup_trials": None},
    pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
    training={"max_epochs": 4, "fused_optimizer": None},
    artifacts={"keep_models": 2, "tensorboard": True, "figures": None},
    space={"optimizer": ["adam", "rmsprop"]},
    fixed_trials=[{"label": "baseline", "n_layers": 1, "units_l0": 32, "activation": "relu",
                   "optimizer": "adam"}],
)


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


@dataclass(frozen=True)
class Ran:
    folder: Path
    url: str
    store_path: Path

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name="arts", storage=self.url)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    folder = tmp_path_factory.mktemp("artifacts")
    study_file = folder / "arts.toml"
    study_file.write_text(stub_study_text(**STUDY), encoding="utf-8")
    url = f"sqlite:///{folder / 'studies.db'}"
    result = invoke("run", str(study_file), "--storage", url)
    assert result.exit_code == 0, result.output
    return Ran(folder, url, folder / "studies-artifacts")


def _png_size(data: bytes) -> tuple[int, int]:
    pixels = mpimg.imread(io.BytesIO(data), format="png")
    return pixels.shape[1], pixels.shape[0]


def test_each_trial_has_its_figures_and_report(ran: Ran) -> None:
    study = ran.study()
    store = open_store(str(ran.store_path))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert len(complete) >= 3
    for trial in complete:
        metas = {m["filename"]: m for m in artifacts_of(study, trial)}
        assert {"curves.png", "confusion_matrix.png", "classification_report.txt",
                "classification_report.json"} <= set(metas), trial.number
        width, height = _png_size(read_artifact(store, metas["curves.png"]["artifact_id"]))
        assert width >= 600 and height >= 300
        width, height = _png_size(read_artifact(store,
                                                metas["confusion_matrix.png"]["artifact_id"]))
        assert width >= 400 and height >= 400
        text = read_artifact(store, metas["classification_report.txt"]["artifact_id"]).decode()
        assert all(name in text for name in CIFAR10_CLASSES)
        report = json.loads(read_artifact(store,
                                          metas["classification_report.json"]["artifact_id"]))
        matrix = np.array(report["confusion_matrix"])
        assert matrix.shape == (10, 10)
        # the matrix is of the model the trial kept: its accuracy is the trial's value
        assert matrix.trace() / matrix.sum() == pytest.approx(trial.value, abs=1e-6)
    for trial in pruned:  # a pruned trial keeps its curves, nothing that needs a whole run
        names = {m["filename"] for m in artifacts_of(study, trial)}
        assert "curves.png" in names and "confusion_matrix.png" not in names


def test_only_the_best_models_remain(ran: Ran) -> None:
    study = ran.study()
    complete = sorted(study.get_trials(states=(TrialState.COMPLETE,)),
                      key=lambda t: t.value, reverse=True)
    by_id = {t._trial_id: t.number for t in study.get_trials()}
    kept = {by_id[tid] for tid, entries in listed(study).items()
            for _, meta in entries if meta["filename"].endswith(".keras")}
    assert kept == {t.number for t in complete[:2]}
    model_files = [p for p in ran.store_path.iterdir()
                   if p.is_file() and p.read_bytes()[:2] == b"PK"]  # .keras files are zips
    assert len(model_files) == 2


def test_tensorboard_logs_one_folder_per_trial(ran: Ran) -> None:
    logs = ran.store_path / "tensorboard" / "arts"
    trained = [t for t in ran.study().get_trials()
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    folders = sorted(p.name for p in logs.iterdir())
    assert folders == [f"trial-{t.number:04d}" for t in trained]
    assert list((logs / folders[0]).rglob("events.out.tfevents.*"))


def test_evaluate_records_test_figures_and_saves_a_model_that_reloads(ran: Ran) -> None:
    from objectives.data import load_dataset
    from objectives.config import DataConfig
    from objectives.keras_setup import keras

    out = ran.folder / "evaluated"
    result = invoke("evaluate", "--storage", ran.url, "--output", str(out))
    assert result.exit_code == 0, result.output
    study = ran.study()
    best = study.best_trial
    match = re.search(r"test accuracy (\d\.\d+), test loss (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    recorded = evaluations(study)[best.number]
    assert recorded["test_accuracy"] == pytest.approx(float(match.group(1)), abs=1e-4)
    assert all(name in result.stdout for name in CIFAR10_CLASSES)  # matrix and report
    # retrained from the trial's seed, as the search trained it: the same test accuracy
    assert recorded["test_accuracy"] == pytest.approx(best.user_attrs["test_accuracy"],
                                                      abs=0.02)

    model = keras.models.load_model(out / "model.keras", safe_mode=True)
    data = load_dataset(DataConfig(dataset="stub", validation_fraction=0.2), 11)
    assert data.x_test.dtype == np.uint8
    predicted = model.predict(data.x_test, verbose=0).argmax(axis=1)
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.array_equal(
        np.array(metrics["confusion_matrix"]),
        np.bincount(data.y_test * 10 + predicted, minlength=100).reshape(10, 10))
    names = {m["filename"] for m in artifacts_of(study, best)}
    assert {f"evaluated-trial-{best.number}.keras", "test_confusion_matrix.png"} <= names

    again = invoke("evaluate", "--storage", ran.url, "--trial", str(best.number),
                   "--full-train", "--output", str(out))
    assert again.exit_code == 0 and "retrained on train+validation" in again.stdout
    names = [m["filename"] for m in artifacts_of(ran.study(), best)]
    assert names.count("test_confusion_matrix.png") == 1  # replaced, not piled up


def test_evaluate_refuses_what_it_cannot_evaluate(ran: Ran) -> None:
    study = ran.study()
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    if pruned:
        result = invoke("evaluate", "--storage", ran.url, "--trial", str(pruned[0].number))
        assert result.exit_code == 1
        assert result.stderr.strip() == (
            f"Error: trial {pruned[0].number} is pruned: only a complete trial can be evaluated")
    result = invoke("evaluate", "--storage", ran.url, "--trial", "99")
    assert result.exit_code == 1 and "has no trial 99" in result.stderr
    blocker = ran.folder / "a-file"
    blocker.write_text("")
    result = invoke("evaluate", "--storage", ran.url, "--output", str(blocker))
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_evaluate_never_empties_a_folder_it_did_not_write(ran: Ran, tmp_path: Path) -> None:
    """``--output`` on a folder of the user's (the study's own, a home folder) is refused before
    anything trains, and the folder is left as it was; an earlier evaluation's folder has only
    evaluate's own files replaced, in place, with the folder's mode kept."""
    for mine in (ran.folder, tmp_path / "precious"):
        mine.mkdir(exist_ok=True)
        (mine / "notes.txt").write_text("mine")
        before = sorted(p.name for p in mine.iterdir())
        result = invoke("evaluate", "--storage", ran.url, "--output", str(mine))
        assert result.exit_code == 1, result.output
        assert result.stderr.count("\n") == 1 and "did not write" in result.stderr
        assert sorted(p.name for p in mine.iterdir()) == before
        assert (mine / "notes.txt").read_text() == "mine"
    assert "(notes.txt)" in result.stderr
    # the study is still there and readable
    assert len(ran.study().get_trials()) >= 6

    out = tmp_path / "evaluated"
    out.mkdir(mode=0o755)
    out.chmod(0o755)
    first = invoke("evaluate", "--storage", ran.url, "--output", str(out))
    assert first.exit_code == 0, first.output
    written = {p.name for p in out.iterdir()}
    assert written == {"model.keras", "curves.png", "confusion_matrix.png",
                       "classification_report.txt", "metrics.json"}
    assert out.stat().st_mode & 0o777 == 0o755
    assert json.loads((out / "metrics.json").read_text())["written_by"] == "hpsearch evaluate"
    again = invoke("evaluate", "--storage", ran.url, "--output", str(out))  # replaces its own
    assert again.exit_code == 0, again.output
    assert {p.name for p in out.iterdir()} == written  # no staging folder left behind
    (out / "extra.txt").write_text("someone's")
    refused = invoke("evaluate", "--storage", ran.url, "--output", str(out))
    assert refused.exit_code == 1 and "extra.txt" in refused.stderr
    assert (out / "extra.txt").read_text() == "someone's"


def test_report_holds_every_trial_and_figure(ran: Ran) -> None:
    out = ran.folder / "report"
    result = invoke("report", "--storage", ran.url, "--output", str(out))
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    trials = ran.study().get_trials()
    rows = re.findall(r"<tr class=\"([^\"]*)\"><td>(\d+)</td>", page)
    assert sorted(int(number) for _, number in rows) == [t.number for t in trials]
    hand = [number for classes, number in rows if "hand" in classes.split()]
    assert hand == ["0"]  # the fixed trial "baseline"
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    assert {"optimization history", "hyperparameter importances", "training curves",
            "confusion matrix (validation)"} <= set(images)
    assert "classification report (validation)" in page
    assert not re.search(r'src="(?!data:)', page)  # self-contained: nothing fetched
    markdown = (out / "report.md").read_text().splitlines()
    table = [line for line in markdown if line.startswith("| ") and line[2].isdigit()]
    assert len(table) == len(trials)


def test_a_failing_store_costs_the_figures_not_the_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: object, artifact_id: str, content_body: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(optuna.artifacts.FileSystemArtifactStore, "write", refuse)
    study_file = tmp_path / "full.toml"
    study_file.write_text(stub_study_text(**{
        **STUDY, "study": {**STUDY["study"], "n_trials": 2},
        "artifacts": {**STUDY["artifacts"], "tensorboard": False}}))
    url = f"sqlite:///{tmp_path / 'full.db'}"
    result = invoke("run", str(study_file), "--storage", url)
    assert result.exit_code == 0, result.output
    assert "artifacts not stored: OSError: [Errno 28] No space left on device" in result.stderr
    trials = optuna.load_study(study_name="arts", storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert all("No space left" in t.user_attrs["artifact_error"] for t in trials)


def test_a_store_s_folder_is_made_with_its_first_artifact(tmp_path: Path) -> None:
    """Opening a store (a command that reads, a study that keeps nothing) makes no folder; the
    first artifact written makes it, whole."""
    store = open_store(str(tmp_path / "new" / "store"))
    assert list(tmp_path.iterdir()) == []
    store.write("figure.png", io.BytesIO(b"png"))
    assert (tmp_path / "new" / "store" / "figure.png").read_bytes() == b"png"
    with store.open_reader("figure.png") as reader:
        assert reader.read() == b"png"


def test_bad_artifact_stores_are_one_line_errors(tmp_path: Path) -> None:
    study_file = tmp_path / "bad.toml"
    study_file.write_text(stub_study_text(**{
        **STUDY, "artifacts": {**STUDY["artifacts"], "keep_models": -1, "store": "ftp://host/x"}}))
    result = invoke("validate", str(study_file))
    assert result.exit_code == 1
    assert "artifacts.keep_models: Input should be greater than or equal to 0" in result.stderr
    assert "artifacts.store: a folder or s3://bucket, but got 'ftp://host/x'" in result.stderr
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    good = tmp_path / "good.toml"
    good.write_text(stub_study_text(**STUDY))
    result = invoke("run", str(good), "--storage", f"sqlite:///{tmp_path / 'x.db'}",
                    "--artifacts", str(blocker / "inside"))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: artifact store {blocker / 'inside'}: cannot make")
    assert not (tmp_path / "x.db").exists() or not optuna.get_all_study_names(
        f"sqlite:///{tmp_path / 'x.db'}")
