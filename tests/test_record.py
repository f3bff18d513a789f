"""The trial record has one home (``objectives/record.py``): no other module spells its keys or
stop reasons, and what it reads back is what the objective and Optuna wrote."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from objectives.record import (Key, StopReason, evaluation_key, evaluations, lineage,
                               maximizes, stop_reason, trial_seed)
from search.workers.retries import first_try, requeue

ROOT = Path(__file__).resolve().parents[1]
# keys and values that mean nothing but the record (plain words like "label" or "pruned" are
# also column titles and states, and are not looked for)
RECORD_ONLY = ["stop_reason", "fail_reason", "first_try", "resumed_at_epoch", "epochs_run",
               "seconds_per_epoch", "artifact_error", "epoch_values", "early_stopped",
               "time_budget", "evaluation:"]


def test_no_module_but_the_record_spells_its_keys() -> None:
    pattern = re.compile(r"""["'](%s)["']""" % "|".join(map(re.escape, RECORD_ONLY)))
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for folder in ("search", "objectives")
             for path in sorted((ROOT / folder).rglob("*.py"))
             if path.name != "record.py"
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if pattern.search(line) and not line.lstrip().startswith("#")]
    assert found == []


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_retry_reads_back_through_optuna_s_own_readers() -> None:
    study = optuna.create_study(direction="minimize")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(trial, state=TrialState.FAIL)
    failed = study.trials[0]
    requeue(study, failed)
    retry = study.trials[1]
    assert retry.state == TrialState.WAITING
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(retry) == [0]
    assert first_try(retry) == 0 and lineage(retry) == 0
    assert retry.user_attrs[Key.RESUMES] == 0
    assert trial_seed(7, retry) == 7  # trained from its first try's seed
    assert not maximizes(study)


def test_stop_reasons_are_stored_as_their_plain_text() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(create_trial(value=0.5, user_attrs={Key.STOP_REASON: StopReason.TIME_BUDGET}))
    (trial,) = study.trials
    assert trial.user_attrs[Key.STOP_REASON] == "time_budget"
    assert stop_reason(trial) is StopReason.TIME_BUDGET
    study.set_user_attr(evaluation_key(0), {"test_accuracy": 0.5})
    assert evaluations(study) == {0: {"test_accuracy": 0.5}}
    assert maximizes(study)
