"""Per-trial artifacts in an Optuna artifact store, where optuna-dashboard shows them.

Every trial that trained leaves its training curves (PNG); a complete one also its confusion
matrix on the validation set (PNG) and classification report (text and JSON). The trained
model (``.keras``) is kept for the ``keep_models`` best trials only: a better trial's model
replaces the worst kept one, so disk use stays bounded.

Figures are trial artifacts (``optuna.artifacts.upload_artifact``). Models, and what
``hpsearch evaluate`` adds after a trial has finished, are listed on the trial's dashboard page
through the study's system attributes (``dashboard:artifacts:<trial_id>:<id>``, which
optuna-dashboard reads for a trial), because a finished trial's own attributes can no longer be
written and a replaced model must be unlisted as well as deleted.

The store is a folder (by default beside the SQLite file, ``<db stem>-artifacts``; for a server
database ``./hpsearch-artifacts``) or ``s3://bucket`` (boto3, configured the usual AWS way).
Where a study's store is, is recorded on the study, so that ``dashboard``, ``evaluate`` and
``report`` find it.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from search.errors import UserError

if TYPE_CHECKING:
    from objectives.data import Dataset
    from objectives.mlp import TrainingOutcome
    from search.studyfile import StudyFile

logger = logging.getLogger(__name__)

LOCATION_ATTR = "hpsearch:artifacts"  # study system attribute: where its store is
DASHBOARD_PREFIX = "dashboard:artifacts:"  # optuna-dashboard's study-level listing of a trial's
MODEL_SUFFIX = ".keras"


def default_location(storage_url: str) -> str:
    """Beside the SQLite file, or ``./hpsearch-artifacts`` for a database server."""
    url = make_url(storage_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        database = Path(url.database).resolve()
        return str(database.with_name(f"{database.stem}-artifacts"))
    return str(Path("hpsearch-artifacts").resolve())


def resolve_location(given: str | None, spec_store: str | None, storage_url: str) -> str:
    """The command line's store, else ``HPSEARCH_ARTIFACTS``, else the study file's, else the
    default for the storage."""
    chosen = given or os.environ.get("HPSEARCH_ARTIFACTS") or spec_store
    if chosen is None:
        return default_location(storage_url)
    return chosen if chosen.startswith("s3://") else str(Path(chosen).expanduser().resolve())


def open_store(location: str) -> optuna.artifacts._protocol.ArtifactStore:
    """The artifact store at ``location``, made if it is a folder that does not exist yet.

    Raises:
        UserError: the folder cannot be made or written, or S3 is asked for without boto3.
    """
    if location.startswith("s3://"):
        bucket = location.removeprefix("s3://").strip("/")
        if not bucket or "/" in bucket:
            raise UserError(f"artifact store {location!r}: give a bucket alone, s3://bucket")
        try:
            import boto3  # noqa: F401
        except ModuleNotFoundError:
            raise UserError(f"artifact store {location!r} needs boto3: pip install "
                            "'hpsearch[s3]'") from None
        return optuna.artifacts.Boto3ArtifactStore(bucket)
    folder = Path(location)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"artifact store {location}: cannot make the folder ({exc.strerror})"
                        ) from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"artifact store {location}: the folder is not writable")
    return optuna.artifacts.FileSystemArtifactStore(folder)


def _system_attrs(study: optuna.Study) -> dict[str, Any]:
    return study._storage.get_study_system_attrs(study._study_id)


def record_location(study: optuna.Study, location: str) -> None:
    if _system_attrs(study).get(LOCATION_ATTR) != location:
        study._storage.set_study_system_attr(study._study_id, LOCATION_ATTR, location)


def stored_location(study: optuna.Study) -> str | None:
    value = _system_attrs(study).get(LOCATION_ATTR)
    return value if isinstance(value, str) else None


def location_for(studies: list[optuna.Study], given: str | None, storage_url: str) -> str:
    """The store to read ``studies``' artifacts from: the one given, else the one they
    recorded, else the default for the storage."""
    if given or os.environ.get("HPSEARCH_ARTIFACTS"):
        return resolve_location(given, None, storage_url)
    recorded = {loc for loc in (stored_location(s) for s in studies) if loc}
    if len(recorded) > 1:
        logger.warning("studies keep artifacts in several stores %s; showing %s (choose with "
                       "--artifacts)", sorted(recorded), min(recorded))
    return min(recorded) if recorded else default_location(storage_url)


# -- listing, attaching and removing artifacts that outlive their trial's run -----------------

def attach_to_finished_trial(store: Any, study: optuna.Study, trial_id: int, path: Path,
                             *, filename: str | None = None) -> str:
    """Store ``path`` and list it on the trial's dashboard page (the trial may be finished)."""
    name = filename or path.name
    artifact_id = str(uuid.uuid4())
    meta = {"artifact_id": artifact_id, "filename": name,
            "mimetype": mimetypes.guess_type(name)[0] or "application/octet-stream",
            "encoding": None}
    with open(path, "rb") as handle:
        store.write(artifact_id, handle)
    study._storage.set_study_system_attr(
        study._study_id, f"{DASHBOARD_PREFIX}{trial_id}:{artifact_id}", json.dumps(meta))
    return artifact_id


def detach(store: Any, study: optuna.Study, key: str) -> None:
    """Delete one study-listed artifact and unlist it; gone already is fine (another worker)."""
    artifact_id = key.rsplit(":", 1)[1]
    try:
        store.remove(artifact_id)
    except ArtifactNotFound:
        pass
    study._storage.set_study_system_attr(study._study_id, key, json.dumps(None))


def listed(study: optuna.Study) -> dict[int, list[tuple[str, dict[str, Any]]]]:
    """Study-listed artifacts by trial id: (attribute key, meta)."""
    found: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for key, value in _system_attrs(study).items():
        if not key.startswith(DASHBOARD_PREFIX) or not isinstance(value, str):
            continue
        meta = json.loads(value)
        if meta is None:
            continue
        trial_id = int(key[len(DASHBOARD_PREFIX):].split(":", 1)[0])
        found.setdefault(trial_id, []).append((key, meta))
    return found


def artifacts_of(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> list[dict[str, Any]]:
    """Every artifact of one trial, as (JSON) metas: its own and the study-listed ones."""
    own = [{"artifact_id": m.artifact_id, "filename": m.filename, "mimetype": m.mimetype}
           for m in optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)]
    return own + [meta for _, meta in listed(study).get(trial._trial_id, [])]


def read_artifact(store: Any, artifact_id: str) -> bytes:
    with store.open_reader(artifact_id) as reader:
        return bytes(reader.read())


# -- the objective's hooks ----------------------------------------------------------------------

class TrialArtifacts:
    """The objective's hooks that store each trial's figures and keep the best models; the
    store is opened (a folder made) by :meth:`open`, before the first trial."""

    def __init__(self, spec: StudyFile, location: str) -> None:
        self.spec = spec
        self.store: Any = None
        self.location = location
        self.keep_models = spec.artifacts.keep_models
        self.maximize = spec.study.resolved_direction == "maximize"

    def open(self) -> None:
        """Open (or make) the store.

        Raises:
            UserError: as :func:`open_store`.
        """
        self.store = open_store(self.location)

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
        complete = outcome.stop_reason != "pruned"
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
        study = trial.study
        value = outcome.best_value
        ranked = {t._trial_id: t.value for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None}
        ranked[trial._trial_id] = value
        order = sorted(ranked, key=lambda tid: ranked[tid], reverse=self.maximize)
        best = set(order[: self.keep_models])
        if trial._trial_id in best:
            path = folder / f"model-trial-{trial.number}{MODEL_SUFFIX}"
            outcome.model.save(path)
            attach_to_finished_trial(self.store, study, trial._trial_id, path)
        running = {t._trial_id for t in study.get_trials(
            deepcopy=False, states=(TrialState.RUNNING,))} - {trial._trial_id}
        for trial_id, entries in listed(study).items():
            if trial_id in best or trial_id in running:
                continue
            for key, meta in entries:
                if str(meta.get("filename", "")).endswith(MODEL_SUFFIX) \
                        and meta.get("filename", "").startswith("model-trial-"):
                    detach(self.store, study, key)


def hooks_for(spec: StudyFile, storage_url: str, given: str | None = None) -> TrialArtifacts:
    return TrialArtifacts(spec, resolve_location(given, spec.artifacts.store, storage_url))
