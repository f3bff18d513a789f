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
from typing import Any

import optuna

from search.workers.fresh_start import DEADLINE_ENV

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


def run_workers(
    study_file: Path, storage_url: str, count: int, threads: int, *, extra_args: list[str],
    study: optuna.Study, on_progress: Callable[[optuna.Study], None],
    deadline: float | None = None,
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
    processes = [subprocess.Popen(command, env=env, process_group=0) for _ in range(count)]
    logger.info("started %d workers x %d TensorFlow threads (pids %s)", count, threads,
                ", ".join(str(p.pid) for p in processes))

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
