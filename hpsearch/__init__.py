"""hpsearch from Python: a notebook's way in, the same studies as the command line's.

A study is described by a study file or by the same settings as a dict; it lives in a
storage (SQLite by default, ``sqlite:///hpsearch.db``, PostgreSQL, or ``grpc://host:port``
through ``hpsearch proxy``), where the command line, the dashboard and other workers see it
too. Each method is named as the command that does the same (``hpsearch run``, ``best``,
``trials``, ``status``, ``evaluate``, ``report``, ``compare``)::

    import hpsearch

    study = hpsearch.Study("studies/smoke.toml")       # or a dict of the file's tables
    study.run(n_trials=8)                              # creates the study, or resumes it
    study.best()                                       # the best trial (or the Pareto front)
    study.trials()                                     # a pandas DataFrame, one row per trial
    study.evaluate()                                   # retrain the best, test it once

A bad study raises :class:`StudyFileError` naming every problem, before anything is written.
A run stopped (Ctrl-C, a notebook's stop button) records its running trial as interrupted and
keeps its checkpoint; running the study again resumes it. The study itself is a plain
``optuna.Study``: :attr:`Study.optuna`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.errors import UserError
from search.studyfile import StudyFile, StudyFileError

if TYPE_CHECKING:
    import optuna
    import pandas
    from optuna.trial import FrozenTrial

    from search.results.compare import Answers
    from search.results.dashboard import BackgroundDashboard
    from search.results.display import Figures
    from search.results.evaluate import EvaluationRun
    from search.results.report import Report
    from search.storage.address import StorageAddress
    from search.storage.opening import Storage

__all__ = ["Study", "StudyFileError", "UserError", "dashboard"]

logger = logging.getLogger("search")


class Study:
    """One study: its settings, validated, and the storage it lives in.

    Args:
        source: a study file's path, or its tables as a dict (``{"study": {"name": ...,
            "n_trials": ...}, "space": {...}, ...}``); both are validated alike.
        storage: the storage URL (default: ``$HPSEARCH_STORAGE``, else
            ``sqlite:///hpsearch.db``), as ``--storage`` takes it.
        artifacts: the artifact store (default: the study's ``[artifacts] store``, else
            beside the SQLite file), as ``--artifacts`` takes it.
        data_path: the dataset's local copy, overriding ``[data] path``.
        verbose: also show Optuna's, TensorFlow's and Keras's own logs (as ``-v``); by
            default only hpsearch's lines.

    Raises:
        StudyFileError: the settings break rules; its ``problems`` name every one.
        UserError: the file is missing or not TOML, or the storage URL is malformed.

    Example:
        >>> study = Study({"study": {"name": "tiny", "n_trials": 2},
        ...                "data": {"dataset": "stub"}, "training": {"max_epochs": 2}},
        ...               storage="sqlite:///tiny.db")
        >>> study.name
        'tiny'
    """

    def __init__(self, source: str | Path | Mapping[str, Any], *, storage: str | None = None,
                 artifacts: str | None = None, data_path: str | None = None,
                 verbose: bool = False) -> None:
        from search.cli.console import setup_logging
        from search.storage.address import StorageAddress, resolve_url

        setup_logging(verbose)

        self.source: Path | None = None
        self._settings: dict[str, Any] | None = None
        self._data_path = data_path
        if isinstance(source, Mapping):
            self._settings = {key: dict(value) if isinstance(value, Mapping) else value
                              for key, value in source.items()}
            study = self._settings.get("study")
            if not (isinstance(study, dict) and study.get("name")):
                raise StudyFileError("study", ["study.name: give the study a name "
                                               "({\"study\": {\"name\": ...}})"])
        else:
            self.source = Path(source)
        self.spec: StudyFile = self._load()
        self.address: StorageAddress = StorageAddress.parse(resolve_url(storage))
        self.artifacts = artifacts
        self._storage: Storage | None = None

    def _load(self, n_trials: int | None = None, timeout: float | None = None) -> StudyFile:
        """The study's settings, validated, with a run's budget over the study's own."""
        from search import studyfile

        overrides: dict[str, dict[str, Any]] = {
            "study": {"n_trials": n_trials, "timeout": timeout},
            "data": {"path": self._data_path}}
        if self._settings is not None:
            return studyfile.from_dict(self._settings, overrides)
        assert self.source is not None
        return studyfile.load(self.source, overrides)

    def __repr__(self) -> str:
        return f"Study({self.name!r}, storage={self.address.shown!r})"

    @property
    def name(self) -> str:
        """The study's name in its storage."""
        return self.spec.name

    @property
    def optuna(self) -> optuna.Study:
        """The study as Optuna keeps it, once it has been created (by :meth:`run`, here or
        by any worker).

        Raises:
            UserError: the storage holds no study of this name yet.
        """
        from search.results.tables import pick_study
        from search.storage.opening import open_storage

        if self._storage is None:  # opened once, when there is something to read
            self._storage = open_storage(self.address, create=False)
        return pick_study(self._storage, self.name)

    def run(self, n_trials: int | None = None, *, timeout: float | None = None,
            workers: int | str = 1, threads: int | None = None,
            gpus: list[int] | None = None) -> int:
        """Create the study, or resume it, and run trials until its budget is spent, as
        ``hpsearch run`` does. ``n_trials`` (the study's total finished trials) and
        ``timeout`` (seconds, counted from this call) override the study's budget;
        ``workers`` processes share the trials (``"auto"``: one per core, or one per GPU;
        several read the study from its file, so a study given as a dict runs in this
        process); ``threads`` are TensorFlow's per worker; ``gpus`` the GPUs to train on, by
        index (default: all), as ``--workers``, ``--threads`` and ``--gpus`` take them.

        A stop (``KeyboardInterrupt``: Ctrl-C, a notebook's stop button) ends the run at the
        running trial's next step, records that trial as interrupted with its checkpoint
        kept, and returns: running again resumes the study.

        Returns:
            How many trials this call ran to an end (complete, pruned or failed).
        """
        import os

        from objectives import interrupts
        from search.workers import progress

        from search.workers.processes import layout

        started = time.monotonic()
        before = self._ended()
        if not (workers == "auto" or (isinstance(workers, int) and workers >= 1)):
            raise UserError(f"workers: a whole number >= 1 or 'auto', not {workers!r}")
        spec = self._load(n_trials, timeout)
        deadline = None if spec.study.timeout is None else started + spec.study.timeout
        count, per_worker, devices = layout(str(workers), threads, gpus)
        if count > 1 and self.source is None:
            logger.warning("workers: %d asked, but worker processes read the study from its "
                           "file; a study given as a dict runs in this process", count)
            count, devices = 1, devices[:1]
        with interrupts.handled():
            try:
                if count > 1:
                    from search.workers.processes import run_with_workers

                    assert self.source is not None
                    return run_with_workers(
                        spec, self.source, self.address, count=count, threads=per_worker,
                        devices=devices, artifacts=self.artifacts, deadline=deadline,
                        options={"--n-trials": n_trials, "--timeout": timeout,
                                 "--data-path": self._data_path,
                                 "--artifacts": self.artifacts})[1]
                if threads is not None:
                    os.environ["HPSEARCH_TF_THREADS"] = str(threads)
                from objectives.devices import train_on
                from search.workers.run import run_study

                train_on(devices[0])

                with progress.TrialProgress(spec.study.metric) as display:
                    summary = run_study(spec, self.address, on_start=display.start,
                                        on_progress=display.update, artifacts=self.artifacts,
                                        deadline=deadline)
            except KeyboardInterrupt:
                logger.warning("interrupted: the running trial is recorded as such, its "
                               "checkpoint kept; run the study again to resume it")
                return self._ended() - before
        if summary.restart:  # a kernel is not started afresh: its memory stays as it is
            logger.info("this process has grown by more than [workers] max_memory_growth; "
                        "run again to go on")
        return summary.ran

    def _ended(self) -> int:
        """How many of the study's trials have ended (0 before it exists)."""
        from search.workers.outcomes import ended

        try:
            return ended(self.optuna)
        except UserError:
            return 0

    def best(self) -> FrozenTrial | list[FrozenTrial]:
        """The best trial, as ``hpsearch best`` shows it: within the constraints where the
        study has any; with several objectives, the Pareto front (a list).

        Raises:
            UserError: no trial has finished yet.
        """
        from search.results import fronts

        study = self.optuna
        if fronts.multi_objective(study):
            return fronts.best_trials(study)
        found = fronts.best_trials(study)
        if not found:
            raise UserError(f"study {self.name!r} has no finished trial yet")
        return found[0]

    def trials(self) -> pandas.DataFrame:
        """The trials as a DataFrame: Optuna's ``trials_dataframe`` (``params_*``,
        ``user_attrs_*``, ``state``, ``value`` or ``values_*``), one row per trial."""
        return self.optuna.trials_dataframe(multi_index=False)

    def status(self) -> dict[str, int]:
        """Trials by state (``complete``, ``pruned``, ``fail``, ``running``, ...)."""
        counts: dict[str, int] = {}
        for trial in self.optuna.get_trials(deepcopy=False):
            state = trial.state.name.lower()
            counts[state] = counts.get(state, 0) + 1
        return counts

    def figures(self, trial: int | None = None) -> Figures:
        """A trial's figures (default: the best trial's) as a notebook shows them: its
        training curves, and the confusion matrix and classification report of the validation
        split that its training left in the artifact store, with its numbers and parameters.
        (:meth:`evaluate`'s result shows the same of the test split.)

        Raises:
            UserError: no such trial, or no finished trial yet.
        """
        from search.artifacts.store import location_for, open_store
        from search.results.display import of_trial

        study = self.optuna
        if trial is None:
            best = self.best()
            if isinstance(best, list):
                raise UserError(f"study {self.name!r} has several objectives: pick a trial of "
                                "its Pareto front, figures(trial=N)")
            picked = best
        else:
            trials = study.get_trials(deepcopy=False)
            if not 0 <= trial < len(trials):
                raise UserError(f"study {self.name!r} has no trial {trial} (it has "
                                f"{len(trials)} trials)")
            picked = trials[trial]
        location = location_for([study], self.artifacts, self.address)
        # only read: a store folder that is not there is not made (the curves are drawn)
        missing = not location.startswith("s3://") and not Path(location).is_dir()
        return of_trial(study, picked, None if missing else open_store(location))

    def evaluate(self, trial: int | None = None, *, full_train: bool = False,
                 output: str | Path | None = None) -> EvaluationRun:
        """Retrain a trial's configuration from its seed (default: the best) and measure it
        once on the test split, as ``hpsearch evaluate`` does: the model and figures go to
        ``output`` (default ``hpsearch-evaluations/STUDY-trial-N``), the test figures onto the
        trial. ``full_train`` trains on training plus validation for its best epochs."""
        from search.results.evaluate import evaluate_trial

        return evaluate_trial(self.optuna, trial, address=self.address,
                              output=None if output is None else Path(output),
                              full_train=full_train, data_path=self.spec.data.path,
                              artifacts=self.artifacts)

    def report(self, output: str | Path | None = None) -> Report:
        """Write the study's report (``report.html``, images embedded, and ``report.md``)
        into ``output`` (default ``hpsearch-report-STUDY``), as ``hpsearch report`` does.

        Returns:
            The report written: ``html_path``, ``markdown_path``; a notebook shows it inline.
        """
        from search.artifacts.store import location_for, open_store
        from search.results.output_folders import writable_folder
        from search.results.report import write_report

        study = self.optuna
        store = open_store(location_for([study], self.artifacts, self.address))
        folder = writable_folder(Path(output or f"hpsearch-report-{self.name}"), "output")
        return write_report(study, store, folder, storage_shown=self.address.shown)

    def compare(self) -> Answers:
        """What the trials say of each choice (optimizer, activation, depth, ...), as
        ``hpsearch compare`` shows it: per choice, the best and median metric, with tests."""
        from search.results.compare import answers

        return answers(self.optuna)

    def dashboard(self, *, host: str = "127.0.0.1", port: int = 0) -> BackgroundDashboard:
        """optuna-dashboard on this study's storage and artifacts, as :func:`dashboard`."""
        return dashboard(self.address.url, artifacts=self.artifacts, host=host, port=port)


def dashboard(storage: str | None = None, *, artifacts: str | None = None,
              host: str = "127.0.0.1", port: int = 0) -> BackgroundDashboard:
    """Start optuna-dashboard on ``storage`` (default as ``--storage``) in the background of
    this process, as ``hpsearch dashboard`` serves it (each trial's figures and reports
    listed), on ``port`` (default: a free one). In a notebook the result shows the dashboard
    inline with its address; ``.stop()`` stops it, as the kernel's end does.

    Example:
        >>> board = hpsearch.dashboard("sqlite:///hpsearch.db")  # doctest: +SKIP
        >>> board.url, board.stop()  # doctest: +SKIP
    """
    from search.results.dashboard import open_for_dashboard, serve_in_background
    from search.storage.address import StorageAddress, resolve_url

    opened, store, _ = open_for_dashboard(StorageAddress.parse(resolve_url(storage)), artifacts)
    return serve_in_background(opened, host=host, port=port, artifact_store=store)
