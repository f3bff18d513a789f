"""Several worker processes on this machine: ``hpsearch run FILE --workers K``.

Each worker is an ``hpsearch worker`` process on the same study and storage; the storage
coordinates them. TensorFlow's thread pools are sized so that K workers x T threads do not
exceed the cores unless told otherwise. The storage URL reaches the workers through the
environment, so a password in it never shows in a process list.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from search.workers.fresh_start import DEADLINE_ENV

if TYPE_CHECKING:
    from search.storage.address import StorageAddress
    from search.studyfile import StudyFile

logger = logging.getLogger(__name__)

THREADS_ENV = "HPSEARCH_TF_THREADS"
RUN_PID_ENV = "HPSEARCH_RUN_PID"  # the run a worker belongs to, which it ends with


def end_with_the_run() -> None:
    """A worker of ``run --workers`` gets SIGTERM (and stops as on Ctrl-C) when its run's
    process ends, however it ends: it has a process group of its own, so nothing else tells
    it. Linux only (``prctl``); elsewhere the run's own stop reaches it."""
    run_pid = os.environ.get(RUN_PID_ENV, "")
    if sys.platform != "linux" or not run_pid.isdigit():
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(run_pid):  # the run ended before this worker asked
        os.kill(os.getpid(), signal.SIGTERM)


# What one worker holds resident: about 1.1-1.3 GB after ten stub trials (benchmarks/memory.py),
# TensorFlow and the model; the decoded data is shared between the workers of one machine.
WORKER_MEMORY = 1.5 * 2**30


def _memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def most_workers(cores: int, memory: int) -> int:
    """How many workers this machine holds: one per core, as many as its memory holds."""
    return max(1, min(cores, int(memory // WORKER_MEMORY)))


def resolve_layout(workers: str, threads: int | None, cores: int | None = None,
                   memory: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker): ``auto`` is one worker per core, one thread each, the
    layout benchmarks/study_throughput.py found best (2x1 ran 43 % more CIFAR-10 trials per
    hour than 1x2 on a 2-core machine: one thread per worker wastes nothing on
    synchronisation, and one worker's Python and storage time overlaps another's training).
    More workers than the machine holds (cores, memory) only slow each other down, or run it
    out of memory: they are capped, with one warning."""
    cores = cores or os.cpu_count() or 1
    memory = memory or _memory()
    most = most_workers(cores, memory)
    count = most if workers == "auto" else int(workers)
    if count > most:
        logger.warning("--workers %d: this machine holds %d (%d cores, %.0f GiB of memory, "
                       "about %.1f GiB a worker); starting %d", count, most, cores,
                       memory / 2**30, WORKER_MEMORY / 2**30, most)
        count = most
    return count, threads if threads is not None else max(1, cores // count)


def parse_gpus(text: str | None) -> list[int] | None:
    """``--gpus 0,2`` as indices; None when not given.

    Raises:
        UserError: not a list of whole numbers.
    """
    from search.errors import UserError

    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        raise UserError(f"--gpus: GPU indices separated by commas (0,2), not {text!r}")
    return [int(part) for part in parts]


def layout(workers: str, threads: int | None,
           gpus: list[int] | None = None) -> tuple[int, int, list[str | None]]:
    """(workers, threads per worker, each worker's GPU or None) for ``--workers``,
    ``--threads`` and ``--gpus``: by GPU (:func:`gpu_layout`) where the machine has GPUs and
    ``auto`` or ``--gpus`` asks for them, else by core (:func:`resolve_layout`)."""
    from objectives.devices import visible_gpus

    machine = list(range(len(visible_gpus()))) if workers == "auto" or gpus else []
    if machine or gpus:
        count, per_worker, devices = gpu_layout(workers, machine, chosen=gpus)
        return count, threads if threads is not None else per_worker, devices
    count, per_worker = resolve_layout(workers, threads)
    return count, per_worker, [None] * count


def gpu_layout(workers: str, gpus: list[int], *, chosen: list[int] | None = None,
               cores: int | None = None) -> tuple[int, int, list[str | None]]:
    """(workers, threads per worker, each worker's ``CUDA_VISIBLE_DEVICES``) on a machine whose
    GPUs are ``gpus`` (indices; none: no GPU), of which ``chosen`` (``--gpus``; default all)
    train. ``auto`` is one worker per chosen GPU, each seeing only its own, the CPU's cores
    divided among them; more workers than GPUs share them in turn.

    Raises:
        UserError: ``chosen`` names a GPU this machine does not have, or one twice.
    """
    from search.errors import UserError

    if chosen is not None:
        unknown = [index for index in chosen if index not in gpus]
        if unknown:
            have = ", ".join(map(str, gpus)) if gpus else "none"
            raise UserError(f"--gpus: no GPU {', '.join(map(str, unknown))} on this machine "
                            f"(it has {have})")
        if len(set(chosen)) != len(chosen):
            raise UserError(f"--gpus: each GPU once, but got {','.join(map(str, chosen))}")
    use = chosen if chosen is not None else gpus
    if not use:
        raise UserError("--gpus: this machine has no GPU")
    cores = cores or os.cpu_count() or 1
    count = len(use) if workers == "auto" else int(workers)
    return count, max(1, cores // count), [str(use[i % len(use)]) for i in range(count)]


def run_with_workers(spec: StudyFile, study_file: Path, address: StorageAddress, *,
                     count: int, threads: int, devices: list[str | None],
                     options: dict[str, object | None], artifacts: str | None,
                     deadline: float | None) -> tuple[optuna.Study, int]:
    """Create or resume ``spec``'s study in this process, then run it on ``count`` worker
    processes of ``study_file``, each given ``options`` (``{"--n-trials": 5, ...}``, None
    left out) as the command line gave them, with a progress display; ``run --workers`` and
    ``hpsearch.Study.run``. Returns the study and how many of its trials ended meanwhile.

    Raises:
        UserError: a worker failed (its own error is above).
    """
    from search.errors import UserError
    from search.workers import progress
    from search.workers.outcomes import ended
    from search.workers.run import start

    started = start(spec, address, artifacts=artifacts, build=False)  # no TensorFlow here
    study = started.study
    before = ended(study)
    if started.left:
        passed = [arg for flag, value in options.items() if value is not None
                  for arg in (flag, str(value))]
        with progress.TrialProgress(spec.study.metric) as display:
            display.start(study, spec.study.n_trials)
            codes = run_workers(study_file, address.url, count, threads, extra_args=passed,
                                study=study, on_progress=display.update, deadline=deadline,
                                devices=devices)
        failed = [code for code in codes if code != 0]
        if failed:
            raise UserError(f"{len(failed)} of {count} workers failed (exit codes {failed}); "
                            "their errors are above")
    return study, ended(study) - before


def run_workers(
    study_file: Path, storage_url: str, count: int, threads: int, *, extra_args: list[str],
    study: optuna.Study, on_progress: Callable[[optuna.Study], None],
    deadline: float | None = None, devices: list[str | None] | None = None,
) -> list[int]:
    """Start ``count`` workers, show their combined progress, wait for them; their exit codes.

    Ctrl-C or SIGTERM is passed on to every worker at once, once (as SIGTERM, which each
    handles as Ctrl-C even where SIGINT is ignored): it fails its running trial and exits,
    leaving the study resumable. The workers have a process group of their own, so a Ctrl-C at
    the terminal reaches the run alone and no worker is signalled twice (a second signal stops
    a worker at once, before it records its trial); they end with the run
    (:func:`end_with_the_run`).
    """
    env = {**os.environ, "HPSEARCH_STORAGE": storage_url, THREADS_ENV: str(threads),
           RUN_PID_ENV: str(os.getpid())}
    if deadline is not None:  # the run's time budget, counted from the run's start
        env[DEADLINE_ENV] = repr(deadline)
    command = [sys.executable, "-m", "search.cli", "worker", str(study_file), "--part-of-run",
               *extra_args]
    processes = [subprocess.Popen(command, env=worker_env, process_group=0)
                 for worker_env in worker_environments(env, count, devices)]
    logger.info("started %d workers x %d TensorFlow threads (pids %s)%s", count, threads,
                ", ".join(str(p.pid) for p in processes),
                f", GPUs {', '.join(str(d) for d in devices)}" if devices and any(devices)
                else "")

    def on_sigterm(signum: int, frame: Any) -> None:
        from objectives import interrupts

        interrupts.request(signum)  # for the exit status
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        while any(p.poll() is None for p in processes):
            on_progress(study)
            time.sleep(1.0)
    except KeyboardInterrupt:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    on_progress(study)
    return [p.returncode for p in processes]


def worker_environments(env: dict[str, str], count: int,
                        devices: list[str | None] | None) -> list[dict[str, str]]:
    """Each worker's environment: ``env``, and where a GPU is assigned to it, that GPU alone
    (``CUDA_VISIBLE_DEVICES``)."""
    devices = devices or [None] * count
    return [{**env, "CUDA_VISIBLE_DEVICES": device} if device is not None else dict(env)
            for device in devices[:count]]
