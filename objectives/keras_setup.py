"""Keras, imported quietly: the one place the objectives import it from.

TensorFlow prints oneDNN and CUDA notices through absl before ``TF_CPP_MIN_LOG_LEVEL`` takes
effect, on every start of every worker. Unless ``TF_CPP_MIN_LOG_LEVEL`` is 0 (``hpsearch -v``
sets it so), those lines are dropped; import errors still raise as usual. (Any other level is
quiet too: a process that imported this module hands level 3 on to the processes it starts.)
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
    import keras
else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _stderr_silenced():
        import keras

def _size_thread_pools() -> None:
    """``HPSEARCH_TF_THREADS`` (set by ``hpsearch run --workers``) sizes TensorFlow's pools and
    numpy's BLAS pool (the whitening's covariance and eigendecomposition), so several workers
    on one machine do not oversubscribe its cores."""
    threads = os.environ.get("HPSEARCH_TF_THREADS")
    if not threads:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(threads), user_api="blas")  # for the rest of the process
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(min(int(threads), 2))


_size_thread_pools()
if keras.backend.backend() == "tensorflow":
    from objectives.devices import grow_gpu_memory

    grow_gpu_memory()

__all__ = ["keras"]
