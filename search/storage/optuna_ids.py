"""A study's storage and id, and a trial's id: the one place that reads them.

Optuna has no public accessor for them (optuna-dashboard reads the same attributes), so they
come from Optuna's private ``Study._storage``, ``Study._study_id`` and
``FrozenTrial._trial_id`` / ``Trial._trial_id``, as in Optuna 3 to 5.0 (the ``optuna<5.1``
bound in ``pyproject.toml``). :func:`supported` checks them once per process on an in-memory
study; where they are not as expected, one warning says so and what needs them falls back:
models and evaluations are not listed on the dashboard and the store's location is not
recorded on the study (the artifacts are still written), and trials that never beat are not
looked for; trials run as before. ``tests/test_fallbacks.py`` forces that fallback.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import optuna

logger = logging.getLogger(__name__)

# The attribute names read (a test renames them to force the fallback).
STORAGE, STUDY_ID, TRIAL_ID = "_storage", "_study_id", "_trial_id"


@functools.lru_cache(maxsize=1)
def supported() -> bool:
    """Whether this Optuna has the attributes read here; if not, says so once."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # no "A new study created" line
    try:
        study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
        trial = study.ask()
        storage = getattr(study, STORAGE)
        ok = (isinstance(storage, optuna.storages.BaseStorage)
              and storage.get_study_id_from_name(study.study_name) == getattr(study, STUDY_ID)
              and storage.get_trial(getattr(trial, TRIAL_ID)).number == trial.number
              and getattr(study.trials[0], TRIAL_ID) == getattr(trial, TRIAL_ID))
    except (AttributeError, KeyError, TypeError):
        ok = False
    finally:
        optuna.logging.set_verbosity(verbosity)
    if not ok:
        logger.warning("Optuna's study and trial ids are not where hpsearch expects them: "
                       "models and evaluations are not listed on the dashboard, and trials "
                       "whose worker stopped before its first heartbeat are not failed")
    return ok


def storage_of(study: optuna.Study) -> Any:
    return getattr(study, STORAGE)


def study_id(study: optuna.Study) -> int:
    return int(getattr(study, STUDY_ID))


def trial_id(trial: optuna.trial.FrozenTrial | optuna.trial.BaseTrial) -> int:
    return int(getattr(trial, TRIAL_ID))
