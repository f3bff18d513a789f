"""Keras, imported quietly: the one place the objectives import it from.

TensorFlow prints oneDNN and CUDA notices through absl before ``TF_CPP_MIN_LOG_LEVEL`` takes
effect, on every start of every worker. Unless the user set ``TF_CPP_MIN_LOG_LEVEL`` themselves
(``hpsearch -v`` sets it to 0), those lines are dropped; import errors still raise as usual.
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


if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
    import keras
else:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    with _stderr_silenced():
        import keras

__all__ = ["keras"]
