"""How a trial trains fast without learning anything different.

Measured on the deep reference MLP (benchmarks/train_throughput.py), plain ``model.fit`` on
float32 arrays spends much of each epoch outside the matrix products: one Python round trip
per step, a float32 copy of every batch, and Keras's optimizer updates, which pass over every
weight several times per step. hpsearch's trials therefore:

- feed uint8 images (the model scales them itself), a quarter of the bytes per batch;
- run ``steps_per_execution`` steps per call into TensorFlow (callbacks act at epoch ends, so
  nothing waits for them);
- fuse each optimizer update into one XLA kernel per step (the same arithmetic, one pass over
  memory), while the model itself stays on TensorFlow's oneDNN kernels (XLA's CPU matrix
  products are slower);
- compute in bfloat16 with float32 weights (Keras's ``mixed_bfloat16``) where the CPU has
  native bfloat16 arithmetic (AVX512-BF16 or AMX), where it doubles the matrix-product rate;
  the softmax output and the loss stay float32.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

Precision = Literal["auto", "float32", "mixed_bfloat16"]
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
    """The Keras dtype policy for the hidden layers; None for Keras's default (float32)."""
    if precision == "auto":
        return "mixed_bfloat16" if cpu_has_bf16() else None
    return None if precision == "float32" else precision


def fuse_updates(optimizer: Any) -> Any:
    """Compile ``optimizer``'s update with XLA, as one fused kernel per training step.

    The optimizer object is unchanged (its class and configuration, and so a saved model, are
    the same); only its ``apply`` runs compiled. Keras builds the optimizer's variables before
    the first step, so the compiled function only updates them.
    """
    import tensorflow as tf

    original = optimizer.apply
    compiled: dict[str, Any] = {}

    def apply(grads: Any, trainable_variables: Any = None) -> Any:
        if "update" not in compiled:
            variables = trainable_variables
            compiled["update"] = tf.function(lambda g: original(g, variables),
                                             jit_compile=True)
        return compiled["update"](grads)

    optimizer.apply = apply
    return optimizer
