"""Studies in the storage: created from a study file, or resumed only if they were made from
the same search space (resuming must never silently mix two spaces)."""

from __future__ import annotations

import time
import warnings
from typing import Any

import optuna

from objectives.record import Key
from objectives.space import reference_trials
from search.errors import UserError
from search.studyfile import StudyFile

STUDY_ATTR = "hpsearch"  # study user attribute: the fingerprint and the study file it came from
CREATION_WAIT_S = 10.0  # how long an empty study may lack the record of its study file


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def fingerprint_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The keys on which two study fingerprints differ, as ``key: stored X, file Y``."""
    old, new = _flatten(stored), _flatten(wanted)
    return [
        f"{key}: stored {old.get(key, '(absent)')!r}, file {new.get(key, '(absent)')!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def open_study(
    spec: StudyFile, storage: optuna.storages.BaseStorage, *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create the study, or load it if it exists and was made from the same search space.

    Raises:
        UserError: a study of that name exists with another space, metric or objective (resuming
            must not silently mix two spaces), or was not created by hpsearch.
    """
    kwargs: dict[str, Any] = dict(
        study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner
    )
    existing = find_study(spec, storage, sampler=sampler, pruner=pruner)
    if existing is not None:
        return existing
    try:
        study = optuna.create_study(directions=spec.study.goals.directions, **kwargs)
    except optuna.exceptions.DuplicatedStudyError:  # another worker created it meanwhile
        study = optuna.load_study(**kwargs)
        _check_same_study(spec, study)
        return study
    if spec.study.multi_objective:  # the dashboard and Optuna's plots name the axes
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(spec.study.goals.objectives))
    study.set_user_attr(STUDY_ATTR, {
        "fingerprint": spec.fingerprint(),
        "study_file": spec.model_dump(mode="json"),  # resolved, every default shown
        "study_file_given": spec.model_dump(mode="json", exclude_unset=True),  # to rebuild it
    })
    for fixed in spec.fixed_trials:  # only by the process that created the study
        attrs: dict[str, Any] = {Key.LABEL: fixed.label}
        if fixed.max_epochs is not None:
            attrs[Key.MAX_EPOCHS] = fixed.max_epochs
        study.enqueue_trial(fixed.params(), user_attrs=attrs)
    for start, epochs in warm_starts(spec):
        marks: dict[str, Any] = {Key.WARM_START: True}
        if epochs < spec.training.max_epochs:
            marks[Key.MAX_EPOCHS] = epochs
        study.enqueue_trial(start, user_attrs=marks)
    return study


def warm_starts(spec: StudyFile) -> list[tuple[dict[str, Any], int]]:
    """The reference trials a new study of ``spec`` tries first, with the epochs each trains:
    none with fixed trials, ``warm_start = false`` or a table's objective (the references are
    Keras MLPs), and none past the study's budget."""
    if spec.fixed_trials or not spec.study.warm_start or spec.tabular:
        return []
    starts = [(params, min(epochs or spec.training.max_epochs, spec.training.max_epochs))
              for params, epochs in reference_trials(spec.space)]
    return starts if spec.study.n_trials is None else starts[:spec.study.n_trials]


def find_study(
    spec: StudyFile, storage: optuna.storages.BaseStorage, *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study | None:
    """The stored study of ``spec``'s name, checked against ``spec``; None if there is none."""
    try:
        study = optuna.load_study(
            study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner
        )
    except KeyError:
        return None
    _check_same_study(spec, study)
    return study


def _check_same_study(spec: StudyFile, study: optuna.Study) -> None:
    stored = study.user_attrs.get(STUDY_ATTR)
    # Another worker may have created the study a moment ago and not yet recorded what it
    # came from (Optuna creates a study and its attributes in separate transactions): an
    # empty study without the record gets a few seconds to receive it.
    waited = 0.0
    while not isinstance(stored, dict) and waited < CREATION_WAIT_S and not study.trials:
        time.sleep(0.2)
        waited += 0.2
        stored = study.user_attrs.get(STUDY_ATTR)
    if not isinstance(stored, dict) or "fingerprint" not in stored:
        raise UserError(
            f"study {spec.name!r} exists in this storage but was not created by hpsearch; "
            "choose another [study] name"
        )
    differences = fingerprint_differences(stored["fingerprint"], spec.fingerprint())
    if differences:
        shown = "; ".join(differences[:5]) + ("; ..." if len(differences) > 5 else "")
        raise UserError(
            f"study {spec.name!r} exists with a different search space ({shown}): resuming "
            "would mix two spaces; give the study another name"
        )


