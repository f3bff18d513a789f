"""``import hpsearch``: the Python way in, on stub data. A study from a file and from a dict
validates alike; a bad one raises one exception naming every problem and writes nothing; a
study runs, resumes, and reads back as the commands read it; a stop mid-trial (a real SIGINT,
as a notebook's stop button sends) leaves the trial interrupted and the study resumable, in a
process that goes on."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from conftest import stub_study_text

import hpsearch
from objectives.record import Key, evaluations
from search import studyfile


def _settings(**sections: Any) -> dict[str, Any]:
    return tomllib.loads(stub_study_text(**sections))


def test_a_dict_and_a_file_validate_alike(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(stub_study_text(), encoding="utf-8")
    from_file = hpsearch.Study(path, storage=f"sqlite:///{tmp_path / 'a.db'}")
    from_dict = hpsearch.Study(_settings(), storage=f"sqlite:///{tmp_path / 'a.db'}")
    assert from_file.spec == from_dict.spec
    assert from_file.name == from_dict.name == "tiny"

    bad = {"study": {"name": "bad", "n_trials": 0, "seed": 1},
           "sampler": {"type": "nope"}, "data": {"dataset": "stub"},
           "space": {"n_layers": {"low": 5, "high": 2}, "momentum": 0.5,
                     "optimizer": "adam"}}
    with pytest.raises(hpsearch.StudyFileError) as raised:
        hpsearch.Study(bad, storage=f"sqlite:///{tmp_path / 'bad.db'}")
    bad_file = tmp_path / "bad.toml"
    import tomli_w

    bad_file.write_text(tomli_w.dumps(bad), encoding="utf-8")
    with pytest.raises(hpsearch.StudyFileError) as from_a_file:
        studyfile.load(bad_file)
    # every problem, as `hpsearch validate` prints them for the same file
    assert raised.value.problems == from_a_file.value.problems
    assert len(raised.value.problems) == 4, raised.value.problems
    assert str(raised.value).splitlines() == [f"study: {p}" for p in raised.value.problems]
    with pytest.raises(hpsearch.StudyFileError, match="study.name: give the study a name"):
        hpsearch.Study({"study": {"n_trials": 2}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml", "tiny.toml"]  # no storage


def test_run_resume_and_read_back_as_the_commands_do(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    monkeypatch.chdir(tmp_path)
    study = hpsearch.Study(_settings(study={"n_trials": 1}), storage="sqlite:///api.db")
    with pytest.raises(hpsearch.UserError):
        study.best()  # nothing stored yet: one clear error
    monkeypatch.setattr(gc, "freeze", lambda: pytest.fail("a caller's objects were frozen"))
    assert study.run() == 1  # a caller's objects stay collectable, unlike those of the command
    # line's own process (search.workers.run.freeze_start_up)
    assert study.run() == 0  # its budget is spent
    assert study.run(n_trials=2) == 1  # the total, as --n-trials: one more
    assert study.status() == {"complete": 2}
    assert study.optuna.study_name == "tiny"

    best = study.best()
    assert not isinstance(best, list)
    assert best.value == max(t.value for t in study.optuna.trials if t.value is not None)
    frame = study.trials()
    assert len(frame) == 2
    assert {"number", "value", "state", "params_n_layers", "user_attrs_stop_reason",
            "user_attrs_val_accuracy", "user_attrs_seconds_per_epoch"} <= set(frame.columns)

    answers = study.compare()
    assert answers.comparisons  # the choices the trials say something of
    assert "What the trials say" in answers._repr_html_()  # as a notebook shows it
    report = study.report(tmp_path / "report")
    assert report.html_path.name == "report.html"
    assert "tiny" in report.html_path.read_text(encoding="utf-8")
    shown = report._repr_html_()  # the page's body, its figures in it, without its script
    assert "Study tiny" in shown and "<img" in shown and "<script" not in shown
    # The best trial's figures: the stub study keeps none in its artifact store ([artifacts]
    # figures = false), so its curves are drawn from its recorded history (the notebook's
    # test shows those a trial's training left).
    figures = study.figures()
    assert [caption for caption, _ in figures.images] == ["training curves"]
    assert figures._repr_html_().count("<img") == 1 and f"trial {best.number}" in repr(figures)
    with pytest.raises(hpsearch.UserError, match="no trial 7"):
        study.figures(trial=7)

    board = study.dashboard()  # in the background of this process, on a free port
    try:
        with urllib.request.urlopen(f"{board.url}api/studies", timeout=10) as response:
            (summary,) = json.loads(response.read())["study_summaries"]
        assert summary["study_name"] == "tiny"
        assert board.url in board._repr_html_() and "<iframe" in board._repr_html_()
    finally:
        board.stop()
    assert not board.running
    with pytest.raises(OSError):  # stopped: nothing answers there any more
        urllib.request.urlopen(f"{board.url}api/studies", timeout=2)

    run = study.evaluate(output=tmp_path / "evaluated")
    assert run.trial.number == best.number
    assert (tmp_path / "evaluated").is_dir()
    assert run.result.split == "test" and 0.0 <= run.result.accuracy <= 1.0
    assert best.number in evaluations(study.optuna)  # recorded as `evaluate` records it
    shown = run._repr_html_()  # the test split's figures, as a notebook shows them
    assert "test split" in shown and shown.count("<img") == 2 and "f1-score" in shown


def test_a_stop_mid_trial_leaves_it_interrupted_and_the_next_run_resumes(
        tmp_path: Path) -> None:
    study = hpsearch.Study(_settings(study={"n_trials": 2},
                                     training={"max_epochs": 8, "early_stopping_patience": 8,
                                               "checkpoint_every": 1}),
                           storage=f"sqlite:///{tmp_path / 'stop.db'}")
    # Ctrl-C as Python has it by default, and as a notebook's kernel has it while a cell runs
    # (test processes of pytest-xdist ignore it)
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous = signal.getsignal(signal.SIGINT)

    def stop_when_training() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                trials = study.optuna.get_trials(deepcopy=False)
            except hpsearch.UserError:
                trials = []
            if any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials):
                os.kill(os.getpid(), signal.SIGINT)  # as a notebook's stop button does
                return
            time.sleep(0.2)

    stopper = threading.Thread(target=stop_when_training, daemon=True)
    stopper.start()
    try:
        assert study.run() == 1  # the interrupted trial, failed with its reason
        stopper.join()
        assert signal.getsignal(signal.SIGINT) is previous  # the process's own handler is back
    finally:
        signal.signal(signal.SIGINT, ignored)
    stopped, *queued = study.optuna.trials
    assert [t.state for t in queued] in ([], [TrialState.WAITING])  # its retry, if queued now
    assert stopped.state == TrialState.FAIL
    assert stopped.user_attrs[Key.STOP_REASON] == "interrupted"
    assert stopped.user_attrs[Key.FAIL_REASON] == "interrupted by Ctrl-C"

    # the process goes on: the same study, run again, resumes the trial where it stopped
    assert study.run() == 2  # the second warm-start reference, queued first, then the retry
    retried = [t for t in study.optuna.trials if t.user_attrs.get(Key.RESUMES) == 0]
    assert retried and retried[0].state == TrialState.COMPLETE
    assert retried[0].user_attrs[Key.RESUMED_AT] >= 1  # from its checkpoint, not epoch 1


def test_a_stop_while_optuna_starts_a_trial_s_heartbeat_leaves_no_thread_beating(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C just as Optuna has started a trial's heartbeat thread: raised there, it skipped
    the thread's stop, and the thread (not a daemon) beat on and kept the process from ever
    exiting (a run hung after "interrupted: no trial was running"). The stop waits for Optuna's
    bookkeeping and ends the trial at its first training step instead."""
    from optuna.storages._heartbeat import HeartbeatThread

    from objectives import interrupts

    for name, value in (("_requested", False), ("_signal", signal.SIGINT),
                        ("failed_trials", [])):  # put back as they were after the test
        monkeypatch.setattr(interrupts, name, value)
    started = HeartbeatThread.start
    beating: list[HeartbeatThread] = []

    def start_then_ctrl_c(self: HeartbeatThread) -> None:
        started(self)
        beating.append(self)
        signal.raise_signal(signal.SIGINT)  # its handler runs here, in this thread

    monkeypatch.setattr(HeartbeatThread, "start", start_then_ctrl_c)
    study = hpsearch.Study(_settings(study={"n_trials": 1, "warm_start": False},
                                     workers={"heartbeat_interval": 1, "grace_period": 3}),
                           storage=f"sqlite:///{tmp_path / 'beat.db'}")
    before = set(threading.enumerate())
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a kernel
    try:
        assert study.run() == 1
        left = [t for t in set(threading.enumerate()) - before
                if not t.daemon and t.is_alive()]
        assert left == []
    finally:
        signal.signal(signal.SIGINT, ignored)
        for thread in beating:  # were it left beating, this test would fail, not hang
            assert thread._stop_event is not None
            thread._stop_event.set()
    [trial] = study.optuna.trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[Key.STOP_REASON] == "interrupted"


def test_best_of_a_two_objective_study_is_its_pareto_front(tmp_path: Path) -> None:
    """Read back as ``hpsearch best`` reads it: with several objectives, every trial that no
    other beats on both (trials stored through Optuna, as any worker stores them)."""
    import warnings

    import optuna
    from optuna.distributions import IntDistribution
    from optuna.trial import create_trial

    url = f"sqlite:///{tmp_path / 'front.db'}"
    stored = optuna.create_study(study_name="tiny", storage=url,
                                 directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        stored.set_metric_names(["val_accuracy", "n_params"])
    for values in ([0.5, 100], [0.6, 200], [0.4, 300]):  # the last is beaten by both others
        stored.add_trial(create_trial(values=values, params={"n_layers": 1},
                                      distributions={"n_layers": IntDistribution(1, 3)}))
    study = hpsearch.Study(_settings(), storage=url)
    front = study.best()
    assert isinstance(front, list)
    assert sorted(t.number for t in front) == [0, 1]
    with pytest.raises(hpsearch.UserError, match="several objectives"):
        study.figures()  # which of the front: the caller says
