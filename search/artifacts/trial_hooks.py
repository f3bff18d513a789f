"""The objective's hooks that leave each trial's artifacts in the study's store.

Every trial that trained leaves its training curves (PNG); a complete one also its confusion
matrix on the validation set (PNG) and classification report (text and JSON). The trained
model (``.keras``) is kept for the ``keep_models`` best trials only: a better trial's model
replaces the worst kept one, so disk use stays bounded.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from objectives.record import PRUNED_REASONS
from search.artifacts.checkpoints import open_checkpoints
from search.artifacts.dashboard_listing import attach_to_finished_trial, detach, listed
from search.artifacts.store import open_store, resolve_location
from search.results import fronts
from search.storage import optuna_ids
from search.storage.address import StorageAddress

if TYPE_CHECKING:
    from objectives.checkpoints import CheckpointStore
    from objectives.data import Dataset
    from objectives.mlp import TrainingOutcome
    from search.studyfile import StudyFile

MODEL_SUFFIX = ".keras"


class TrialArtifacts:
    """The objective's hooks that store each trial's figures and keep the best models; the
    store is opened (checked; its folder is made with the first artifact) by :meth:`open`,
    before the first trial."""

    def __init__(self, spec: StudyFile, location: str) -> None:
        self.spec = spec
        self.store: Any = None
        self.location = location
        self._checkpoints: CheckpointStore | None = None
        self.keep_models = spec.artifacts.keep_models
        self.maximize = spec.study.resolved_direction == "maximize"

    def open(self) -> None:
        """Open the store (:func:`open_store`).

        Raises:
            UserError: as :func:`open_store`.
        """
        self.store = open_store(self.location)

    def checkpoints(self) -> CheckpointStore | None:
        """The study's checkpoints, beside its artifacts (``search.artifacts.checkpoints``); None
        when ``checkpoint_every = 0``."""
        if not self.spec.training.checkpoint_every:
            return None
        if self._checkpoints is None:
            self._checkpoints = open_checkpoints(self.location, self.store, self.spec.name)
        return self._checkpoints

    def tensorboard_dir(self) -> Path:
        """One folder per study, a subfolder per trial: ``tensorboard --logdir`` on it shows
        the whole study."""
        configured = self.spec.artifacts.tensorboard_dir
        if configured is not None:
            base = Path(configured).expanduser()
        elif self.location.startswith("s3://"):
            base = Path("tensorboard")
        else:
            base = Path(self.location) / "tensorboard"
        return base.resolve() / self.spec.name

    def callbacks(self, trial: optuna.trial.Trial) -> list[Any]:
        if not self.spec.artifacts.tensorboard:
            return []
        from objectives.keras_setup import keras

        log_dir = self.tensorboard_dir() / f"trial-{trial.number:04d}"
        return [keras.callbacks.TensorBoard(log_dir=str(log_dir), histogram_freq=0,
                                            write_graph=False)]

    def after_training(self, trial: optuna.trial.Trial, outcome: TrainingOutcome,
                       dataset: Dataset, params: dict[str, Any]) -> None:
        complete = outcome.stop_reason not in PRUNED_REASONS
        with tempfile.TemporaryDirectory(prefix="hpsearch-artifacts-") as tmp:
            folder = Path(tmp)
            if self.spec.artifacts.figures:
                for path in self._figures(trial, outcome, dataset, folder, complete=complete):
                    optuna.artifacts.upload_artifact(artifact_store=self.store,
                                                     file_path=str(path), study_or_trial=trial)
            if complete and self.keep_models > 0:
                self._keep_if_among_best(trial, outcome, folder)

    def _figures(self, trial: optuna.trial.Trial, outcome: TrainingOutcome, dataset: Dataset,
                 folder: Path, *, complete: bool) -> list[Path]:
        from objectives.evaluation import evaluate
        from objectives.figures import write_figures

        result = None if not complete else evaluate(
            outcome.model, dataset.x_val, dataset.y_val, dataset.class_names, "validation")
        paths = write_figures(folder, outcome.recorder.history, outcome.best_index, result,
                              title=f"trial {trial.number}",
                              heading=f"trial {trial.number}, validation split")
        if result is None:
            return paths
        (folder / "classification_report.json").write_text(
            json.dumps(result.summary(), indent=1), encoding="utf-8")
        paths.append(folder / "classification_report.json")
        outcome.extra["val_macro_f1"] = round(float(result.report["macro avg"]["f1-score"]), 6)
        return paths

    def _keep_if_among_best(self, trial: optuna.trial.Trial, outcome: TrainingOutcome,
                            folder: Path) -> None:
        """Save this trial's model if it is among the best ``keep_models`` complete trials, and
        drop the models of those it pushes out (models of running trials are left alone)."""
        if not optuna_ids.supported():
            return
        study, own = trial.study, optuna_ids.trial_id(trial)
        ranked: dict[int, float] = {}
        for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            value = fronts.metric_value(study, other)
            if value is not None:
                ranked[optuna_ids.trial_id(other)] = value
        ranked[own] = outcome.best_value
        order = sorted(ranked, key=lambda tid: ranked[tid], reverse=self.maximize)
        best = set(order[: self.keep_models])
        if own in best:
            path = folder / f"model-trial-{trial.number}{MODEL_SUFFIX}"
            outcome.model.save(path)
            attach_to_finished_trial(self.store, study, own, path)
        running = {optuna_ids.trial_id(t) for t in study.get_trials(
            deepcopy=False, states=(TrialState.RUNNING,))} - {own}
        for trial_id, entries in listed(study).items():
            if trial_id in best or trial_id in running:
                continue
            for key, meta in entries:
                if str(meta.get("filename", "")).endswith(MODEL_SUFFIX) \
                        and meta.get("filename", "").startswith("model-trial-"):
                    detach(self.store, study, key)


def hooks_for(spec: StudyFile, address: StorageAddress,
              given: str | None = None) -> TrialArtifacts:
    return TrialArtifacts(spec, resolve_location(given, spec.artifacts.store, address))
