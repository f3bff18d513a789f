"""The device a worker trains on, and what it decides: the compute precision of
``precision = "auto"``, and whether the CPU-measured fast path applies.

On a CPU, ``auto`` is bfloat16 where the CPU computes it natively (``fast_path.cpu_has_bf16``),
float32 elsewhere. On an NVIDIA GPU it goes by the GPU's compute capability, as NVIDIA's and
Keras's mixed-precision guides do: ``mixed_bfloat16`` from 8.0 (Ampere on), where bfloat16 runs
on the tensor cores at float16's rate without loss scaling; ``mixed_float16`` from 7.0 (Volta,
Turing), where only float16 is fast (``objectives.mlp`` then wraps the optimizer in Keras's
``LossScaleOptimizer``: Keras does not for a per-layer policy); float32 below. With several
GPUs visible, the least capable decides.

The fused optimizer update (``objectives.fast_path``) was built and measured on CPUs only
(XLA's CPU kernels): on a GPU it is off, and Keras's own update runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache

logger = logging.getLogger(__name__)

BF16_FROM = (8, 0)  # compute capability where bfloat16 is native (Ampere)
FP16_FROM = (7, 0)  # where float16 has tensor cores (Volta)


@dataclass(frozen=True)
class Gpu:
    """One GPU as TensorFlow sees it."""

    name: str  # TensorFlow's device name, /physical_device:GPU:0
    model: str  # what the driver calls it, "NVIDIA H100 80GB HBM3"
    compute_capability: tuple[int, int] | None  # None where TensorFlow does not say


def visible_gpus() -> list[Gpu]:
    """The GPUs TensorFlow can use in this process (none on a CPU-only build or machine)."""
    import tensorflow as tf

    found = []
    for device in tf.config.get_visible_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capability = details.get("compute_capability")
        found.append(Gpu(name=device.name, model=str(details.get("device_name", device.name)),
                         compute_capability=tuple(capability) if capability else None))
    return found


def auto_precision(gpus: list[Gpu], cpu_bf16: bool) -> str:
    """``precision = "auto"`` on a machine with ``gpus`` (none: the CPU trains) whose CPU
    computes bfloat16 natively or not: ``mixed_bfloat16``, ``mixed_float16`` or ``float32``."""
    if not gpus:
        return "mixed_bfloat16" if cpu_bf16 else "float32"
    capabilities = [gpu.compute_capability or (0, 0) for gpu in gpus]
    least = min(capabilities)
    if least >= BF16_FROM:
        return "mixed_bfloat16"
    if least >= FP16_FROM:
        return "mixed_float16"
    return "float32"


@cache
def device_name() -> str:
    """What this process trains on, as a trial records it: its GPUs' models, else ``CPU``."""
    gpus = visible_gpus()
    return ", ".join(gpu.model for gpu in gpus) if gpus else "CPU"


@cache
def trains_on_gpu() -> bool:
    """Whether this process's training runs on a GPU."""
    return bool(visible_gpus())


@cache
def chosen_precision() -> str:
    """``auto``'s choice in this process, said once."""
    from objectives.fast_path import cpu_has_bf16

    gpus = visible_gpus()
    choice = auto_precision(gpus, cpu_has_bf16())
    where = (", ".join(f"{gpu.model} (compute capability "
                       f"{'.'.join(map(str, gpu.compute_capability or ())) or 'unknown'})"
                       for gpu in gpus) if gpus else "the CPU")
    logger.info("precision auto: %s on %s", choice, where)
    return choice


def train_on(device: str | None) -> None:
    """Let this process see only GPU ``device`` (an index, as ``CUDA_VISIBLE_DEVICES`` takes
    it), before TensorFlow first uses a GPU; None leaves every GPU visible."""
    if device is None:
        return
    import tensorflow as tf

    listed = tf.config.list_physical_devices("GPU")
    tf.config.set_visible_devices([listed[int(device)]], "GPU")
    trains_on_gpu.cache_clear()
    chosen_precision.cache_clear()


def grow_gpu_memory() -> None:
    """Each GPU's memory taken as it is needed, not all at once, so that several workers (or
    a worker and a notebook) can share one."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialized: too late, and harmless
            pass
