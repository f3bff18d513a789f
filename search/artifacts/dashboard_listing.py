"""optuna-dashboard's convention for artifacts listed on a trial's page after the trial ended.

Figures are trial artifacts (``optuna.artifacts.upload_artifact``), which the dashboard lists by
itself. Models, and what ``hpsearch evaluate`` adds after a trial has finished, are listed
through the study's system attributes (``dashboard:artifacts:<trial_id>:<id>``, which
optuna-dashboard 0.17 to 0.21 reads for a trial: the ``optuna-dashboard<0.22`` bound), because a
finished trial's own attributes can no longer be written and a replaced model must be unlisted
as well as deleted. The listing is also hpsearch's own record of a trial's models (``report``,
``evaluate``); :func:`dashboard_shows_listings` checks, when the dashboard starts, that the
installed optuna-dashboard still shows it, and says so in one warning where it does not.
"""

from __future__ import annotations

import functools
import json
import logging
import mimetypes
import uuid
import wsgiref.util
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts.exceptions import ArtifactNotFound

from search.artifacts.store import study_system_attrs
from search.storage import optuna_ids

logger = logging.getLogger(__name__)

DASHBOARD_PREFIX = "dashboard:artifacts:"  # optuna-dashboard's study-level listing of a trial's


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
    if optuna_ids.supported():
        optuna_ids.storage_of(study).set_study_system_attr(
            optuna_ids.study_id(study), f"{DASHBOARD_PREFIX}{trial_id}:{artifact_id}",
            json.dumps(meta))
    return artifact_id


def detach(store: Any, study: optuna.Study, key: str) -> None:
    """Delete one study-listed artifact and unlist it; gone already is fine (another worker)."""
    artifact_id = key.rsplit(":", 1)[1]
    try:
        store.remove(artifact_id)
    except ArtifactNotFound:
        pass
    if optuna_ids.supported():
        optuna_ids.storage_of(study).set_study_system_attr(optuna_ids.study_id(study), key,
                                                           json.dumps(None))


def listed(study: optuna.Study) -> dict[int, list[tuple[str, dict[str, Any]]]]:
    """Study-listed artifacts by trial id: (attribute key, meta)."""
    found: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for key, value in study_system_attrs(study).items():
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
    if not optuna_ids.supported():
        return []
    own = [{"artifact_id": m.artifact_id, "filename": m.filename, "mimetype": m.mimetype}
           for m in optuna.artifacts.get_all_artifact_meta(
               trial, storage=optuna_ids.storage_of(study))]
    return own + [meta for _, meta in listed(study).get(optuna_ids.trial_id(trial), [])]


def read_artifact(store: Any, artifact_id: str) -> bytes:
    with store.open_reader(artifact_id) as reader:
        return bytes(reader.read())


@functools.cache
def dashboard_shows_listings() -> bool:
    """Whether the installed optuna-dashboard shows an artifact listed as
    :func:`attach_to_finished_trial` lists it on its trial; checked once per process, on a
    study in memory, through the dashboard's own WSGI app and the JSON its pages read."""
    listed_id = str(uuid.uuid4())
    verbosity = optuna.logging.get_verbosity()
    try:
        import optuna_dashboard

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created"
        study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
        study.add_trial(optuna.trial.create_trial(value=0.0))
        storage, study_id = optuna_ids.storage_of(study), optuna_ids.study_id(study)
        meta = {"artifact_id": listed_id, "filename": "model.keras",
                "mimetype": "application/octet-stream", "encoding": None}
        storage.set_study_system_attr(
            study_id, f"{DASHBOARD_PREFIX}{optuna_ids.trial_id(study.trials[0])}:{listed_id}",
            json.dumps(meta))
        environ: dict[str, Any] = {"PATH_INFO": f"/api/studies/{study_id}"}
        wsgiref.util.setup_testing_defaults(environ)
        body = b"".join(optuna_dashboard.wsgi(storage)(environ, lambda *args: None))
        shown = json.loads(body)["trials"][0]["artifacts"]
        ok = any(artifact.get("artifact_id") == listed_id for artifact in shown)
    except Exception:
        ok = False
    finally:
        optuna.logging.set_verbosity(verbosity)
    if not ok:
        logger.warning("this optuna-dashboard does not show the models and evaluations "
                       "hpsearch lists on a finished trial (%s...); `hpsearch report` still "
                       "shows them", DASHBOARD_PREFIX)
    return ok
