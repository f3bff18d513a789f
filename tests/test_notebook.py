"""hpsearch in a real Jupyter kernel: ``docs/notebook.ipynb`` runs from top to bottom on the stub
data with no error and shows its results as rich outputs (the progress line updated in place,
the trials table, the seed's figures, the comparison, the evaluation, the report, the
dashboard); the stop button (the kernel interrupted for real) stops a run mid-trial, records
the trial as interrupted, and the same kernel goes on to resume it."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from conftest import study_trials, wait_for

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "notebook.ipynb"
KERNEL = "hpsearch-test"


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A kernel spec of this Python (the environment's), found first, whatever other kernels
    the machine has; the kernel's files in the test's folder."""
    from ipykernel.kernelspec import write_kernel_spec

    jupyter = tmp_path / "jupyter"
    write_kernel_spec(jupyter / "kernels" / KERNEL)
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(jupyter / "runtime"))
    yield KERNEL


def _outputs(cell: Any) -> tuple[str, str, list[dict[str, Any]]]:
    """A code cell's stdout, stderr and rich outputs."""
    streams = {"stdout": "", "stderr": ""}
    rich = []
    for output in cell.outputs:
        if output.output_type == "stream":
            streams[output.name] += output.text
        elif output.output_type in ("execute_result", "display_data"):
            rich.append(output.data)
    return streams["stdout"], streams["stderr"], rich


def _html(rich: list[dict[str, Any]]) -> str:
    return "\n".join(data.get("text/html", "") for data in rich)


@pytest.mark.long(79)
def test_the_example_notebook_runs_in_a_real_kernel_and_shows_its_results(
        kernel: str, tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    work = tmp_path / "work"
    work.mkdir()
    nbclient.NotebookClient(notebook, timeout=600, kernel_name=kernel,
                            resources={"metadata": {"path": str(work)}}).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    errors = [output for cell in code for output in cell.outputs
              if output.output_type == "error"]
    assert not errors, errors
    by_source = {cell.source.splitlines()[0]: _outputs(cell) for cell in code}

    def cell(first_line: str) -> tuple[str, str, list[dict[str, Any]]]:
        (found,) = [v for k, v in by_source.items() if k.startswith(first_line)]
        return found

    for stdout, _, _ in by_source.values():  # TensorFlow's and Keras's own output stays silent
        assert "WARNING:tensorflow" not in stdout and "Epoch 1/" not in stdout, stdout

    _, stderr, rich = cell("study.run()")  # the three hand-built experiments
    assert "trial 0 complete: val_accuracy" in stderr and "trial 2 complete" in stderr
    table = _html(rich)
    assert all(label in table for label in ("baseline", "deep", "wide-tanh"))
    assert 'progress value="3" max="3"' in table  # the progress line, as it ended

    _, _, rich = cell("study.figures(trial=1)")
    figures = _html(rich)
    assert figures.count("<img") == 2 and "trial 1 (deep)" in figures  # curves, confusion
    assert "precision" in figures and "f1-score" in figures  # the classification report

    _, stderr, rich = cell("study.run(n_trials=")
    assert "trials 8/8" in rich[0]["text/plain"]  # updated in place: one display, the last
    assert "trial 7 complete" in stderr
    assert "{'complete': 8}" in rich[-1]["text/plain"]

    assert "What the trials say" in _html(cell("study.compare()")[2])
    stdout, _, rich = cell("best = study.best()")
    evaluation = _html(rich)
    assert "test split" in evaluation and evaluation.count("<img") == 2
    assert "test_accuracy" in evaluation and "f1-score" in evaluation
    report = _html(cell('study.report("course-report")')[2])
    assert "Study course-" in report and "<table" in report and "<script" not in report
    assert (work / "course-report" / "report.html").is_file()
    assert "<iframe" in _html(cell("board = study.dashboard()")[2])


def _execute(client: Any, code: str, timeout: float = 300) -> dict[str, Any]:
    """Run ``code`` in the kernel; its reply's content, once it has ended."""
    reply = client.execute_interactive(code, timeout=timeout,
                                       output_hook=lambda message: None)
    return dict(reply["content"])


def test_the_stop_button_stops_a_run_and_the_same_kernel_resumes_it(
        kernel: str, tmp_path: Path) -> None:
    from jupyter_client.manager import start_new_kernel

    url = f"sqlite:///{tmp_path / 'stop.db'}"
    manager, client = start_new_kernel(kernel_name=kernel, cwd=str(tmp_path),
                                       startup_timeout=120)
    try:
        assert _execute(client, f"""
import hpsearch
study = hpsearch.Study({{"study": {{"name": "stop", "n_trials": 1, "seed": 3}},
                         "data": {{"dataset": "stub"}},
                         "training": {{"max_epochs": 8, "early_stopping_patience": 8,
                                       "checkpoint_every": 1}},
                         "space": {{"n_layers": 1, "units": 128}}}}, storage={url!r})
""")["status"] == "ok"
        running = client.execute("ran = study.run()")

        def training() -> bool:
            try:  # a run that ended (an error in the kernel) is said at once, not waited for
                reply = client.get_shell_msg(timeout=0.01)
            except queue.Empty:
                pass
            else:
                assert reply["parent_header"].get("msg_id") != running, reply["content"]
            trials = study_trials(url, "stop")
            return any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials)

        wait_for(training, 180, "a trial that has trained an epoch")
        manager.interrupt_kernel()  # what the stop button does
        deadline = time.monotonic() + 120
        while True:
            reply = client.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == running:
                break
        assert reply["content"]["status"] == "ok"  # run returned: no traceback in the cell
        stopped = study_trials(url, "stop")[0]
        assert stopped.state == TrialState.FAIL
        assert stopped.user_attrs["stop_reason"] == "interrupted"

        # the same kernel, still alive, resumes the study from the trial's checkpoint
        assert _execute(client, "ran_again = study.run()\nassert ran_again == 1, ran_again"
                        )["status"] == "ok"
        trials = study_trials(url, "stop")
        (retry,) = [t for t in trials if t.user_attrs.get("resumes") == 0]
        assert retry.state == TrialState.COMPLETE
        assert retry.user_attrs["resumed_at_epoch"] >= 1
        assert retry.user_attrs["epochs_run"] == 8
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
