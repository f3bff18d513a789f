"""``hpsearch evaluate``: retrain one trial's configuration and measure it once on the test split.

The trial is retrained from its own seed (the study's seed plus the trial number, or for a retry
its first try's number, as the search trained it), either as the search did (training split,
early stopping on validation), or with ``--full-train`` on training plus validation for the
number of epochs the trial chose, with its learning rate replayed epoch by epoch. The test split
is used once, at the end. The figures are recorded on the study (``evaluation:<trial number>``,
which ``trials``, ``best`` and ``report`` show) and the files listed on the trial's dashboard
page; everything is also written to a folder: the model (``model.keras``, which takes raw uint8
images), the curves, the confusion matrix, the classification report and ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from objectives.record import Key, StopReason, evaluation_key, trial_seed
from search.artifacts.dashboard_listing import attach_to_finished_trial, detach, listed
from search.artifacts.store import location_for, open_store
from search.errors import UserError
from search.results import fronts
from search.results.output_folders import writable_folder
from search.storage import optuna_ids
from search.storage.address import StorageAddress
from search.studies import STUDY_ATTR
from search.studyfile import StudyFile

logger = logging.getLogger(__name__)

# What ``evaluate`` writes into its output folder, and nothing else: a folder that holds
# anything more is someone else's and is never written into.
OUTPUT_FILES = frozenset({"model.keras", "curves.png", "confusion_matrix.png",
                          "classification_report.txt", "metrics.json"})
WRITTEN_BY = "hpsearch evaluate"  # metrics.json's "written_by": the folder is one of ours
STAGING_PREFIX = ".hpsearch-evaluate-"


@dataclass(frozen=True)
class EvaluationRun:
    trial: FrozenTrial
    mode: str
    epochs: int
    seconds: float
    folder: Path
    result: Any  # objectives.evaluation.Evaluation

    def record(self) -> dict[str, Any]:
        return {
            "test_accuracy": round(self.result.accuracy, 6),
            "test_loss": round(self.result.loss, 6),
            "test_macro_f1": round(float(self.result.report["macro avg"]["f1-score"]), 6),
            "mode": self.mode,
            "epochs": self.epochs,
            "seconds": round(self.seconds, 1),
            "folder": str(self.folder),
        }

    def figures(self) -> Any:
        """The test figures, curves, confusion matrix and classification report as a
        notebook shows them (``search.results.display.Figures``)."""
        from search.results.display import from_folder

        return from_folder(f"trial {self.trial.number} retrained on {self.mode}, test split",
                           self.folder, self.record())

    def _repr_html_(self) -> str:
        return str(self.figures()._repr_html_())

    def __repr__(self) -> str:
        return (f"EvaluationRun(trial {self.trial.number}, trained on {self.mode} for "
                f"{self.epochs} epochs, test accuracy {self.result.accuracy:.4f}, "
                f"folder {str(self.folder)!r})")


def stored_spec(study: optuna.Study, data_path: str | None) -> StudyFile:
    """The study file the study was created from, as stored with it.

    Its resolved form comes first, every default as it was when the study was created, so a
    later version of hpsearch with other defaults (pruner, epochs, precision) still retrains a
    trial as its search trained it. Only if that no longer validates (a setting since renamed
    or removed) is the file rebuilt from what its author wrote, with today's defaults.
    """
    stored = study.user_attrs.get(STUDY_ATTR)
    if not isinstance(stored, dict) or "study_file_given" not in stored:
        raise UserError(f"study {study.study_name!r} was not created by this version of "
                        "hpsearch: its configuration cannot be read back")
    errors = 0
    for key in ("study_file", "study_file_given"):
        if not isinstance(stored.get(key), dict):
            continue
        raw = dict(stored[key])
        if data_path:
            raw["data"] = {**raw.get("data", {}), "path": data_path}
        try:
            return StudyFile.model_validate(raw)
        except ValidationError as exc:
            errors = errors or exc.error_count()
    raise UserError(f"study {study.study_name!r}: its stored configuration no longer "
                    f"validates ({errors} problems); was it made by another version of "
                    "hpsearch?")


def pick_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if number is None:
        best = fronts.best_trials(study)
        if not complete or not best:
            raise UserError(f"study {study.study_name!r} has no complete trial to evaluate")
        if fronts.multi_objective(study):
            raise UserError(
                f"study {study.study_name!r} has several objectives: pick a trial of its Pareto "
                f"front with --trial N (trials {', '.join(str(t.number) for t in best)}; "
                "hpsearch best shows them)")
        return best[0]
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise UserError(f"study {study.study_name!r} has no trial {number} (it has "
                        f"{len(trials)} trials)")
    trial = trials[number]
    if trial.state != TrialState.COMPLETE:
        state = {TrialState.FAIL: "failed", TrialState.RUNNING: "is still running",
                 TrialState.WAITING: "is waiting to run"}.get(trial.state,
                                                               f"is {trial.state.name.lower()}")
        raise UserError(f"trial {number} {state}: only a complete trial can be evaluated")
    return trial


def evaluate_trial(study: optuna.Study, number: int | None, *, address: StorageAddress,
                   output: Path | None, full_train: bool, data_path: str | None,
                   artifacts: str | None) -> EvaluationRun:
    """Retrain, test once, save and record. Everything the user could get wrong is checked
    before training starts."""
    spec = stored_spec(study, data_path)
    if spec.tabular:
        raise UserError(f"study {study.study_name!r} looks its trials up in the "
                        f"{spec.data.dataset} table: it trained no model to retrain and test "
                        "(evaluate retrains Keras MLP trials)")
    trial = pick_trial(study, number)
    folder = writable_folder(
        output or Path("hpsearch-evaluations") / f"{study.study_name}-trial-{trial.number}",
        "--output")
    check_output_folder(folder)
    store = open_store(location_for([study], artifacts, address))
    epochs = int(trial.user_attrs.get(Key.BEST_EPOCH) or 0)
    if full_train and epochs < 1:
        raise UserError(f"trial {trial.number} recorded no best epoch; evaluate it without "
                        "--full-train")

    from objectives import interrupts
    from objectives.between_trials import fresh_session
    from objectives.data import DatasetError, load_dataset
    from objectives.keras_setup import keras
    from objectives.mlp import train, train_on_all
    from objectives.space import suggest

    try:
        dataset = load_dataset(spec.data, spec.study.seed)
    except DatasetError as exc:
        raise UserError(str(exc)) from None
    params = suggest(optuna.trial.FixedTrial(trial.params), spec.space)
    started = time.perf_counter()
    with interrupts.deferred(), fresh_session():  # Ctrl-C ends training at its next step
        keras.utils.set_random_seed(trial_seed(spec.study.seed, trial))  # as the search did
        if full_train:
            history = trial.user_attrs.get(Key.HISTORY, {})
            outcome = train_on_all(params, dataset, spec.training, epochs=epochs,
                                   learning_rates=list(history.get("learning_rate", []))[:epochs],
                                   planned_epochs=trial.user_attrs.get(Key.MAX_EPOCHS))
            mode = "train+validation"
        else:
            outcome = train(params, dataset, spec.training, spec.study.metric,
                            max_epochs=trial.user_attrs.get(Key.MAX_EPOCHS))
            if outcome.stop_reason == StopReason.NAN:
                raise UserError(f"retraining trial {trial.number} diverged: "
                                f"{outcome.fail_reason}")
            mode = "train"
        seconds = time.perf_counter() - started
        run = _test_and_save(outcome, dataset, trial, folder, mode, seconds)
    _record(study, store, run)
    return run


def _test_and_save(outcome: Any, dataset: Any, trial: FrozenTrial, folder: Path, mode: str,
                   seconds: float) -> EvaluationRun:
    from objectives.evaluation import evaluate
    from objectives.figures import write_figures

    result = evaluate(outcome.model, dataset.x_test, dataset.y_test, dataset.class_names, "test")
    run = EvaluationRun(trial=trial, mode=mode, epochs=outcome.recorder.epochs, seconds=seconds,
                        folder=folder, result=result)
    # Written to a staging folder inside the output folder, then each file moved into place: an
    # interrupted evaluation leaves no half-written file, and nothing else in the folder is
    # touched.
    check_output_folder(folder)  # again: training took minutes, the folder may have changed
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    try:
        outcome.model.save(staging / "model.keras")
        write_figures(staging, outcome.recorder.history, outcome.best_index, result,
                      title=f"trial {trial.number} retrained ({mode})",
                      heading=f"trial {trial.number}, retrained on {mode}, test split")
        (staging / "metrics.json").write_text(json.dumps(
            {**run.record(), "trial": trial.number, "params": trial.params,
             **{k: v for k, v in result.summary().items() if k != "split"},
             "written_by": WRITTEN_BY}, indent=1),
            encoding="utf-8")
        # metrics.json last: it is what marks the folder as an evaluation's
        for written in sorted(staging.iterdir(), key=lambda path: path.name == "metrics.json"):
            os.replace(written, folder / written.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return run


def check_output_folder(folder: Path) -> None:
    """Refuse an output folder that holds anything but an earlier output of ``evaluate``.

    A new or empty folder is written into; one that holds an earlier evaluation has only the
    files ``evaluate`` writes replaced. Anything else (a study's database, a user's notes, a
    home folder) is never written into, let alone emptied.

    Raises:
        UserError: the folder holds files that ``evaluate`` did not write.
    """
    if not folder.is_dir():
        return
    entries = {entry for entry in os.listdir(folder) if not entry.startswith(STAGING_PREFIX)}
    if not entries:
        return
    foreign = sorted(entries - OUTPUT_FILES)
    if not foreign and _written_by_evaluate(folder / "metrics.json"):
        return
    shown = foreign or sorted(entries)
    listed = ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")
    raise UserError(f"--output {folder}: the folder holds files that hpsearch evaluate did not "
                    f"write ({listed}); give a new or empty folder")


def _written_by_evaluate(metrics: Path) -> bool:
    """Whether ``metrics`` is the ``metrics.json`` of an earlier evaluation (before
    ``written_by`` was written: its trial, mode and test accuracy)."""
    try:
        record = json.loads(metrics.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and (
        record.get("written_by") == WRITTEN_BY
        or {"trial", "mode", "test_accuracy"} <= record.keys())


def _record(study: optuna.Study, store: Any, run: EvaluationRun) -> None:
    """The figures on the study, the files on the trial's dashboard page."""
    number = run.trial.number
    files = (("model.keras", f"evaluated-trial-{number}.keras"),
             ("confusion_matrix.png", "test_confusion_matrix.png"),
             ("classification_report.txt", "test_classification_report.txt"),
             ("metrics.json", "test_metrics.json"))
    shown_names = {shown for _, shown in files}
    if optuna_ids.supported():
        trial_id = optuna_ids.trial_id(run.trial)
        for key, meta in listed(study).get(trial_id, []):  # an earlier evaluation's
            if meta.get("filename") in shown_names:
                detach(store, study, key)
        for name, shown in files:
            attach_to_finished_trial(store, study, trial_id, run.folder / name, filename=shown)
    study.set_user_attr(evaluation_key(number), run.record())
