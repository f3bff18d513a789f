"""A worker that starts itself afresh once TensorFlow has kept too much memory.

TensorFlow keeps, for the life of the process, memory that no API gives back (measured with
``benchmarks/memory.py``, ``benchmarks/tf_memory.py`` and ``benchmarks/tf_retention.py``, a
reproduction in TensorFlow alone; figures in ``docs/benchmarks.md``):

- each XLA-compiled function stays in the device's compilation cache, which has no eviction
  (``tensorflow/compiler/jit/device_compilation_cache.h``, tensorflow/tensorflow#64170); the
  fused optimizer update compiles one per trial, about 10 MB a trial even when every trial has
  the same shapes. An update that compiles nothing (TensorFlow's fused training kernels) costs
  a third more time per epoch on the deep reference MLP (``benchmarks/update_kernels.py``);
- oneDNN's primitive caches keep entries per new layer shape, about 6 MB a trial of new
  shapes (none with the same shapes, none with ``TF_ENABLE_ONEDNN_OPTS=0``, which gives up
  oneDNN's bfloat16 and float32 matrix products).

Neither is reachable from Python (``clear_session``, garbage collection, clearing the eager
kernel cache and ``malloc_trim`` release none of it). So a worker watches its resident memory
and, once it has grown by ``[workers] max_memory_growth`` MB (default 256) since the end of its
first trial, starts no more trials and replaces itself with a fresh process of the same command
(``exec``: the same process id, terminal and arguments; about 3-5 s); the study, in the
storage, goes on.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

# Trials this command had run before it replaced itself, for its summary, and when its
# --timeout ends (time.monotonic(), which Linux keeps across exec) (internal).
RAN_BEFORE_ENV = "HPSEARCH_RAN_BEFORE_RESTART"
DEADLINE_ENV = "HPSEARCH_DEADLINE_BEFORE_RESTART"


def resident_mb(pid: int | str = "self") -> float | None:
    """A process's resident memory in MB (Linux's /proc; this one's by default); None where it
    cannot be read (not Linux, or the process is gone)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class MemoryWatch:
    """Whether this process has grown by more than ``limit_mb`` since its first trial ended
    (0: never)."""

    def __init__(self, limit_mb: float) -> None:
        self.limit_mb = limit_mb
        self.baseline: float | None = None
        self.grown = 0.0

    def after_trial(self) -> bool:
        """Call after each trial; True once the process should start afresh."""
        if self.limit_mb <= 0:
            return False
        now = resident_mb()
        if now is None:
            return False
        if self.baseline is None:
            self.baseline = now
            return False
        self.grown = now - self.baseline
        return self.grown > self.limit_mb


def hand_on_deadline(deadline: float | None) -> None:
    """Keep the timeout of this invocation for the fresh process (it is not a new one)."""
    if deadline is not None:
        os.environ[DEADLINE_ENV] = repr(deadline)


def deadline_before() -> float | None:
    """The deadline a replaced process handed on; None if there is none."""
    try:
        return float(os.environ[DEADLINE_ENV])
    except (KeyError, ValueError):
        return None


def ran_before() -> int:
    """Trials this command ran in the processes it replaced."""
    value = os.environ.get(RAN_BEFORE_ENV, "")
    return int(value) if value.isdigit() else 0


def restart(ran: int) -> None:
    """Replace this process with a fresh one running the same command; does not return."""
    os.environ[RAN_BEFORE_ENV] = str(ran)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "search.cli", *sys.argv[1:]])
