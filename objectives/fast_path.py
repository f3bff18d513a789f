"""How a trial trains fast without learning anything different.

Measured on the deep reference MLP (benchmarks/train_throughput.py), plain ``model.fit`` on
float32 arrays spends much of each epoch outside the matrix products: one Python round trip
per step, a float32 copy of every batch, and Keras's optimizer updates, which pass over every
weight several times per step. hpsearch's trials therefore:

- feed uint8 images (the model scales them itself), a quarter of the bytes per batch, through
  their own input pipeline (``objectives.feed``: no autotuning stalls, a new order every
  epoch);
- run ``steps_per_execution`` steps per call into TensorFlow (callbacks act at epoch ends, so
  nothing waits for them);
- fuse each optimizer update into one XLA kernel per step (the same arithmetic, one pass over
  memory), while the model itself stays on TensorFlow's oneDNN kernels (XLA's CPU matrix
  products are slower);
- add the gradient of each L2 penalty, ``2 * l2 * w``, inside that fused update instead of
  through the loss, where TensorFlow spends six passes over every regularized weight per step
  on it (square, sum, broadcast, two products, a sum of gradients); the loss still includes
  the penalty, computed in one pass. The gradient the optimizer sees is the same sum;
- compute in bfloat16 with float32 weights (Keras's ``mixed_bfloat16``) where the CPU has
  native bfloat16 arithmetic (AVX512-BF16 or AMX), where it doubles the matrix-product rate;
  the softmax output and the loss stay float32. The weights' gradients reach the fused update
  in bfloat16, as the matrix products make them, and are widened there, instead of through a
  separate cast over every weight per step (the same float32 values; 10 % of an epoch on the
  deep reference MLP, A/B in alternating fresh processes).

The fused update relies on Keras and TensorFlow internals, all checked by
:func:`fused_update_supported` before the first trial of a process:

- ``keras.src.backend.common.variables.get_autocast_scope`` and a Keras variable's
  ``_autocast`` flag and ``_maybe_autocast`` method (replaced per weight, for the bfloat16
  gradients);
- the optimizer's ``apply(grads, trainable_variables)`` (replaced on the optimizer object by a
  compiled wrapper that calls the original) and a variable's ``path`` and ``regularizer``.

``pyproject.toml`` bounds Keras below its next minor version (``keras<3.16``), where
``keras.src`` may change. Where any of them is not as expected, one warning says so and every
trial trains with Keras's own optimizer update (``fused_optimizer = false``): slower, the same
results. ``tests/test_fallbacks.py`` forces that fallback.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

Precision = Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"]
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (Linux's CPU flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return any(flag in flags for flag in BF16_FLAGS)


def dtype_policy(precision: Precision) -> str | None:
    """The Keras dtype policy for the hidden layers; None for Keras's default (float32).
    ``auto`` goes by the device that trains (``objectives.devices``)."""
    if precision == "auto":
        from objectives.devices import chosen_precision

        precision = chosen_precision()  # type: ignore[assignment]  # one of Precision
    return None if precision == "float32" else precision


# Keras's function that tells the autocast scope a layer runs in (no public API tells it).
AUTOCAST_SCOPE = ("keras.src.backend.common.variables", "get_autocast_scope")


def _autocast_scope_getter() -> Any:
    """Keras's ``get_autocast_scope``; None where this Keras has no such function there."""
    module, name = AUTOCAST_SCOPE
    try:
        getter = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return getter if callable(getter) else None


def _fused_update_problem() -> str | None:
    """What of the internals :func:`fuse_updates` relies on is not as expected, or that
    training runs on a GPU (the fused update was built and measured for CPUs); None if all is
    as expected."""
    from objectives.devices import trains_on_gpu

    if trains_on_gpu():
        return "training runs on a GPU (the fused update is measured on CPUs only)"
    if _autocast_scope_getter() is None:
        return f"{'.'.join(AUTOCAST_SCOPE)} is gone"
    from objectives.keras_setup import keras

    if keras.backend.backend() != "tensorflow":
        return f"the Keras backend is {keras.backend.backend()}, not tensorflow"
    variable = keras.Variable(0.0, dtype="float32")
    for name in ("_autocast", "path", "regularizer"):
        if not hasattr(variable, name):
            return f"a Keras variable has no {name}"
    if not callable(getattr(variable, "_maybe_autocast", None)):
        return "a Keras variable has no _maybe_autocast method"
    parameters = list(inspect.signature(keras.optimizers.Adam().apply).parameters)
    if parameters[:2] != ["grads", "trainable_variables"]:
        return f"Keras's optimizer.apply takes {parameters}, not (grads, trainable_variables)"
    return None


@functools.lru_cache(maxsize=1)
def fused_update_supported() -> bool:
    """Whether this Keras is as :func:`fuse_updates` expects it; if not, says so once."""
    problem = _fused_update_problem()
    if problem is not None:
        logger.warning("the fused optimizer update is off: %s; trials train with Keras's own "
                       "update (slower, the same results)", problem)
    return problem is None


def fuse_updates(optimizer: Any, model: Any) -> Any:
    """Compile ``optimizer``'s update of ``model`` with XLA, as one fused kernel per training
    step, with the gradients of the model's L2 penalties added inside it.

    The optimizer object is unchanged (its class and configuration, and so a saved model, are
    the same); only its ``apply`` runs compiled. Keras builds the optimizer's variables before
    the first step, so the compiled function only updates them. The layers keep their L2
    regularizers (a saved model's configuration is the same); their weights compute the
    penalty's value only (:class:`PenaltyValue`).
    """
    import tensorflow as tf

    slopes = _move_l2_gradients(model)
    _keep_low_precision_gradients(model)
    original = optimizer.apply
    compiled: dict[str, Any] = {}

    def apply(grads: Any, trainable_variables: Any = None) -> Any:
        if "update" not in compiled:
            variables = list(trainable_variables)
            factors = [slopes.get(variable.path, 0.0) for variable in variables]

            def update(gradients: list[Any]) -> Any:
                # A bfloat16 gradient (see _keep_low_precision_gradients) is widened here,
                # inside the fused kernel.
                gradients = [g if g is None else tf.cast(g, variable.value.dtype)
                             for g, variable in zip(gradients, variables)]
                gradients = [g if g is None or not factor else g + factor * variable.value
                             for g, factor, variable in zip(gradients, factors, variables)]
                return original(gradients, variables)

            compiled["update"] = tf.function(update, jit_compile=True)
        return compiled["update"](list(grads))

    optimizer.apply = apply
    return optimizer


def _keep_low_precision_gradients(model: Any) -> None:
    """Let the gradient of each float32 weight that a layer reads in bfloat16 stay bfloat16.

    Under ``mixed_bfloat16`` a layer casts its float32 weight to bfloat16 at every step, and
    TensorFlow casts the (bfloat16) gradient back: a pass over every weight that writes twice
    the bytes it reads, and that the update then reads again. The gradient is already rounded
    to bfloat16 by the matrix product, so widening it inside the fused update instead gives
    the same float32 values.
    """
    import tensorflow as tf

    get_autocast_scope = _autocast_scope_getter()

    @tf.custom_gradient
    def narrowed(value: Any) -> Any:
        return tf.cast(value, tf.bfloat16), lambda upstream: upstream

    for variable in model.trainable_weights:
        if variable.dtype != "float32" or not getattr(variable, "_autocast", False):
            continue
        default = variable._maybe_autocast

        def autocast(value: Any, default: Any = default) -> Any:
            scope = get_autocast_scope()
            if scope is not None and scope.dtype == "bfloat16":
                return narrowed(tf.convert_to_tensor(value))
            return default(value)

        variable._maybe_autocast = autocast


def _move_l2_gradients(model: Any) -> dict[str, float]:
    """Give each weight regularized by a plain L2 penalty a :class:`PenaltyValue`; return the
    slope ``2 * l2`` of each such weight's penalty gradient, by the weight's path."""
    from objectives.keras_setup import keras

    slopes: dict[str, float] = {}
    for variable in model.trainable_weights:
        regularizer = variable.regularizer
        if type(regularizer) is keras.regularizers.L2:
            variable.regularizer = PenaltyValue(float(regularizer.l2))
            slopes[variable.path] = 2.0 * float(regularizer.l2)
    return slopes


class PenaltyValue:
    """An L2 penalty ``l2 * sum(w ** 2)`` as a value without a gradient, in one pass over the
    weight (its gradient is added in the fused update, see :func:`fuse_updates`)."""

    def __init__(self, l2: float) -> None:
        self.l2 = l2

    def __call__(self, weight: Any) -> Any:
        import tensorflow as tf

        return (2.0 * self.l2) * tf.nn.l2_loss(tf.stop_gradient(weight))
