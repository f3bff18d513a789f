"""A fresh Keras session per trial, so that memory does not grow trial after trial.

``keras.utils.clear_session`` alone is not enough with TensorFlow: every traced training step
registers its ``tf.custom_gradient`` functions under a unique name ("CustomGradient-<n>") in
TensorFlow's global gradient registry and never removes them. Those entries hold the traced
graphs, so each trial leaked 10 to 20 MB (keras-team/keras#17458, tensorflow#61791). The names
are unique to the trace that made them, so once a trial is over nothing will look them up again.

That registry is TensorFlow's internal ``tensorflow.python.framework.ops._gradient_registry``
(a ``Registry`` whose ``_registry`` is a dict), as in TensorFlow 2.16 to 2.21; ``pyproject.toml``
bounds TensorFlow below its next minor version (``tensorflow<2.22``). Where it is not there as
a dict, one warning says so and the entries are left alone: trials run as before, and a worker's
memory grows with each trial. ``tests/test_fallbacks.py`` forces that fallback.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
from collections.abc import Iterator

from objectives.keras_setup import keras

logger = logging.getLogger(__name__)


# Where the registry's dict is: a module, then the attributes to follow from it.
REGISTRY_PATH = ("tensorflow.python.framework.ops", "_gradient_registry", "_registry")


@functools.lru_cache(maxsize=1)
def _gradient_registry() -> dict[str, object]:
    if keras.backend.backend() != "tensorflow":
        return {}
    module, *attributes = REGISTRY_PATH
    try:
        found: object = importlib.import_module(module)
        for attribute in attributes:
            found = getattr(found, attribute)
    except (ImportError, AttributeError):
        found = None
    if not isinstance(found, dict):
        logger.warning("TensorFlow's gradient registry is not where hpsearch expects it: the "
                       "gradient functions of each trial are kept, and a worker's memory grows "
                       "with each trial")
        return {}
    return found


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
