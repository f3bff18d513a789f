"""What the training device decides, with TensorFlow's device list faked (this machine has no
GPU): ``precision = "auto"`` on no GPU, on one GPU of each precision class and on two, and the
CPU-only fast path off on a GPU; and a float16 model that trains with Keras's loss scaling."""

from __future__ import annotations

import os
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
        for lister in ("list_physical_devices", "get_visible_devices"):
            monkeypatch.setattr(tf.config, lister,
                                lambda kind=None: listed if kind in (None, "GPU") else [])
        monkeypatch.setattr(tf.config.experimental, "get_device_details",
                            lambda device: details[device.name])
        devices.trains_on_gpu.cache_clear()
        devices.chosen_precision.cache_clear()
        devices.device_name.cache_clear()

    yield fake
    devices.trains_on_gpu.cache_clear()
    devices.chosen_precision.cache_clear()
    devices.device_name.cache_clear()


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
    assert outcome.attributes()["precision"] == "mixed_float16"  # recorded on the trial


def test_workers_auto_runs_one_worker_per_gpu_each_seeing_its_own(faked_gpus: Any) -> None:
    from search.errors import UserError
    from search.workers.processes import layout, parse_gpus, worker_environments

    faked_gpus([(8, 0), (8, 0), (7, 5), (7, 5)])
    assert layout("auto", None) == (4, max(1, (os.cpu_count() or 1) // 4),
                                    ["0", "1", "2", "3"])
    assert layout("auto", 3, [0, 2]) == (2, 3, ["0", "2"])  # --gpus 0,2 --threads 3
    assert layout("3", 1, [1]) == (3, 1, ["1", "1", "1"])  # more workers than GPUs: shared
    assert layout("1", None, [2])[2] == ["2"]
    assert layout("2", 1) == (2, 1, [None, None])  # a number of workers, no --gpus: by core
    with pytest.raises(UserError, match="--gpus: no GPU 7 on this machine"):
        layout("auto", None, [0, 7])
    with pytest.raises(UserError, match="--gpus: each GPU once"):
        layout("auto", None, [1, 1])
    assert parse_gpus("0, 2") == [0, 2] and parse_gpus(None) is None
    with pytest.raises(UserError, match="--gpus: GPU indices separated by commas"):
        parse_gpus("first")

    environments = worker_environments({"PATH": "/bin"}, 2, ["0", "2"])
    assert [env["CUDA_VISIBLE_DEVICES"] for env in environments] == ["0", "2"]
    assert worker_environments({"PATH": "/bin"}, 2, [None, None]) == [{"PATH": "/bin"}] * 2

    faked_gpus([])  # no GPU: auto is one worker per core, as before
    count, _, devices = layout("auto", None)
    assert count >= 1 and devices == [None] * count
    with pytest.raises(UserError, match=r"no GPU 0 on this machine \(it has none\)"):
        layout("auto", None, [0])
