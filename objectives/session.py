"""A fresh Keras session per trial, so that memory does not grow trial after trial.

``keras.utils.clear_session`` alone is not enough with TensorFlow: every traced training step
registers its ``tf.custom_gradient`` functions under a unique name ("CustomGradient-<n>") in
TensorFlow's global gradient registry and never removes them. Those entries hold the traced
graphs, so each trial leaked 10 to 20 MB (keras-team/keras#17458, tensorflow#61791). The names
are unique to the trace that made them, so once a trial is over nothing will look them up again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from objectives.keras_setup import keras


def _gradient_registry() -> dict[str, object]:
    try:
        from tensorflow.python.framework import ops

        return ops._gradient_registry._registry  # type: ignore[attr-defined,no-any-return]
    except (ImportError, AttributeError):  # another backend, or TensorFlow fixed it
        return {}


@contextlib.contextmanager
def fresh_session() -> Iterator[None]:
    """Clear Keras's state, run the block, then drop the gradient functions it registered."""
    registry = _gradient_registry()
    before = set(registry)
    keras.utils.clear_session(free_memory=True)
    try:
        yield
    finally:
        for name in [n for n in registry if n not in before]:
            if name.startswith("CustomGradient-"):
                del registry[name]
