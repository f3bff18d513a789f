"""What the training device decides, with TensorFlow's device list faked (this machine has no
GPU): ``precision = "auto"`` on no GPU, on one GPU of each precision class and on two, and the
CPU-only fast path off on a GPU; and a float16 model that trains with Keras's loss scaling."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from objectives import devices, fast_path
from objectives.devices import Gpu, auto_precision


def _gpu(model: str, capability: tuple[int, int] | None, index: int = 0) -> Gpu:
    return Gpu(name=f"/physical_device:GPU:{index}", model=model,
               compute_capability=capability)


H100, A100 = _gpu("NVIDIA H100 80GB HBM3", (9, 0)), _gpu("NVIDIA A100-SXM4-40GB", (8, 0))
T4, V100 = _gpu("Tesla T4", (7, 5)), _gpu("Tesla V100-SXM2-16GB", (7, 0))
P100, UNKNOWN = _gpu("Tesla P100-PCIE-16GB", (6, 0)), _gpu("some GPU", None)


@pytest.mark.parametrize(("gpus", "cpu_bf16", "expected"), [
    ([], True, "mixed_bfloat16"),  # a CPU with AVX-512 BF16 or AMX
    ([], False, "float32"),
    ([H100], False, "mixed_bfloat16"),
    ([A100], False, "mixed_bfloat16"),
    ([T4], True, "mixed_float16"),  # the GPU decides, not the CPU
    ([V100], False, "mixed_float16"),
    ([P100], True, "float32"),
    ([UNKNOWN], True, "float32"),
    ([H100, T4], True, "mixed_float16"),  # two GPUs: the least capable decides
    ([A100, H100], False, "mixed_bfloat16"),
], ids=["cpu-bf16", "cpu", "h100", "a100", "t4", "v100", "p100", "unknown", "h100+t4",
        "a100+h100"])
def test_auto_precision_goes_by_the_device_that_trains(gpus: list[Gpu], cpu_bf16: bool,
                                                       expected: str) -> None:
    assert auto_precision(gpus, cpu_bf16) == expected


@pytest.fixture
def faked_gpus(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """TensorFlow's device list as a machine with the GPUs given would have it."""
    import tensorflow as tf

    def fake(capabilities: list[tuple[int, int]]) -> None:
        listed = [tf.config.PhysicalDevice(name=f"/physical_device:GPU:{i}", device_type="GPU")
                  for i in range(len(capabilities))]
        details = {device.name: {"device_name": f"GPU {i}", "compute_capability": capability}
                   for i, (device, capability) in enumerate(zip(listed, capabilities))}
        monkeypatch.setattr(tf.config, "list_physical_devices",
                            lambda kind=None: listed if kind in (None, "GPU") else [])
        monkeypatch.setattr(tf.config.experimental, "get_device_details",
                            lambda device: details[device.name])
        devices.trains_on_gpu.cache_clear()
        devices.chosen_precision.cache_clear()

    yield fake
    devices.trains_on_gpu.cache_clear()
    devices.chosen_precision.cache_clear()


def test_a_worker_on_a_gpu_chooses_its_precision_and_leaves_the_cpu_fast_path(
        faked_gpus: Any, caplog: pytest.LogCaptureFixture) -> None:
    faked_gpus([(7, 5)])
    assert devices.visible_gpus() == [Gpu("/physical_device:GPU:0", "GPU 0", (7, 5))]
    with caplog.at_level("INFO", logger="objectives.devices"):
        assert fast_path.dtype_policy("auto") == "mixed_float16"
        assert fast_path.dtype_policy("auto") == "mixed_float16"
    said = [r.getMessage() for r in caplog.records if r.name == "objectives.devices"]
    assert said == ["precision auto: mixed_float16 on GPU 0 (compute capability 7.5)"]  # once
    assert fast_path.dtype_policy("float32") is None  # what the study file says wins
    assert "GPU" in (fast_path._fused_update_problem() or "")

    faked_gpus([(8, 0), (9, 0)])
    assert fast_path.dtype_policy("auto") == "mixed_bfloat16"
    faked_gpus([])
    assert not devices.trains_on_gpu()
    assert fast_path.dtype_policy("auto") == (
        "mixed_bfloat16" if fast_path.cpu_has_bf16() else None)


def test_a_float16_model_trains_with_keras_s_loss_scaling() -> None:
    from objectives.config import TrainingConfig
    from objectives.data import CIFAR10_CLASSES, Dataset, make_stub
    from objectives.keras_setup import keras
    from objectives.mlp import compiled_model, train

    x, y, x_test, y_test = make_stub(0, n_train=600, n_test=50)
    dataset = Dataset(x[:500], y[:500], x[500:], y[500:], x_test, y_test, CIFAR10_CLASSES)
    params = {"n_layers": 1, "units_l0": 32, "activation": "relu", "batch_norm": True,
              "dropout": 0.0, "l2": 1e-5, "initializer": "he_normal", "optimizer": "adam",
              "learning_rate": 3e-3, "batch_size": 50}
    training = TrainingConfig(max_epochs=2, early_stopping_patience=2,
                              precision="mixed_float16")
    compiled = compiled_model(params, dataset, training)
    assert isinstance(compiled.fitted.optimizer, keras.optimizers.LossScaleOptimizer)
    outcome = train(params, dataset, training, "val_accuracy")
    assert outcome.recorder.epochs == 2
    assert np.isfinite(outcome.best_value)
