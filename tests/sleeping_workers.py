"""Many real hpsearch worker processes on one study, cheaply: this process imports the worker
loop once (no TensorFlow), then forks N children; each opens the storage itself and runs
hpsearch's worker loop (budget lock, heartbeats, stale-trial check) with an objective that
sleeps instead of training, as benchmarks/coordination.py does.

    python tests/sleeping_workers.py STUDY_FILE STORAGE_URL N_WORKERS

Prints one JSON line: each child's exit status and the trials it ran; exits 0 only if every
child did.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402

from objectives.space import suggest  # noqa: E402
from search import studyfile  # noqa: E402
from search.cli.console import setup_logging  # noqa: E402
from search.errors import UserError  # noqa: E402
from search.studies import open_study  # noqa: E402
from search.workers.loop import WorkerLoop  # noqa: E402
from search.workers.outcomes import TrialReporter  # noqa: E402
from search.workers.run import prepare  # noqa: E402

SLEEP_S = 0.1  # per reported step; three steps a trial


def _objective(space: Any) -> Any:
    def objective(trial: optuna.trial.Trial) -> float:
        params = suggest(trial, space)
        for step in range(3):
            time.sleep(SLEEP_S)
            trial.report(float(params["learning_rate"]) * step, step)
        return float(params["learning_rate"])

    return objective


def child(spec: studyfile.StudyFile, url: str) -> int:
    """One worker: its own storage, engine and loop; the trials it ran."""
    storage, existing, _ = prepare(spec, url)
    study = existing or open_study(spec, storage)
    reporter = TrialReporter(spec.study.metric, None)
    WorkerLoop(spec, storage, study, _objective(spec.space), reporter).run()
    return reporter.ran


def main() -> None:
    study_file, url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    setup_logging(False)
    # Opened once here, then closed, so that every module a worker needs is imported before
    # the fork (each child then opens the storage and the study itself, as a worker does).
    spec = studyfile.load(Path(study_file))
    storage, existing, _ = prepare(spec, url)
    if existing is None:
        open_study(spec, storage)
    storage.engine.dispose()
    assert "tensorflow" not in sys.modules  # the point: a worker loop without the training
    children: dict[int, int] = {}
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the child: never returns into the parent's code
            code = 1
            try:
                ran = child(spec, url)
                Path(f"{study_file}.{index}.ran").write_text(str(ran))
                code = 0
            except UserError as error:  # one line, as hpsearch worker says it
                print(f"worker {index}: {error}", file=sys.stderr, flush=True)
            except BaseException:  # anything else: the whole story
                traceback.print_exc()
                sys.stderr.flush()
            finally:
                os._exit(code)
        children[pid] = index
    statuses: dict[int, int] = {}
    for pid, index in children.items():
        _, status = os.waitpid(pid, 0)
        statuses[index] = os.waitstatus_to_exitcode(status)
    ran = {index: int(Path(f"{study_file}.{index}.ran").read_text())
           for index in statuses if statuses[index] == 0}
    print(json.dumps({"exit_codes": [statuses[i] for i in sorted(statuses)],
                      "ran": [ran.get(i) for i in sorted(statuses)]}), flush=True)
    sys.exit(0 if all(code == 0 for code in statuses.values()) else 1)


if __name__ == "__main__":
    main()
