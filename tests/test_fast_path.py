"""The fast training path computes what the plain one computes: the input pipeline makes the
batches Keras makes, and the L2 gradients added in the fused update move the weights as
Keras's own L2 penalty does."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from objectives.config import TrainingConfig
from objectives.data import CIFAR10_CLASSES, Dataset
from objectives.feed import batches
from objectives.keras_setup import keras
from objectives.mlp import compiled_model
from objectives.between_trials import fresh_session

PARAMS = {"n_layers": 2, "units_l0": 64, "units_l1": 32, "activation": "relu",
          "batch_norm": True, "dropout": 0.0, "l2": 1e-2, "initializer": "he_normal",
          "optimizer": "adamw", "learning_rate": 1e-3, "weight_decay": 1e-4, "batch_size": 32}


def _epoch(dataset: Any) -> list[np.ndarray]:
    return [np.asarray(y) for _, y in dataset]


def test_batches_cover_every_sample_once_per_epoch_in_a_new_order() -> None:
    x = np.arange(10 * 3, dtype=np.uint8).reshape(10, 3)
    y = np.arange(10)
    keras.utils.set_random_seed(1)
    data = batches(x, y, 4, shuffle=True)
    first, second = _epoch(data), _epoch(data)
    assert [len(b) for b in first] == [4, 4, 2]  # full batches, then the partial one
    assert sorted(np.concatenate(first)) == list(range(10))
    assert sorted(np.concatenate(second)) == list(range(10))
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))
    for images, labels in data:  # images travel with their labels
        assert np.array_equal(np.asarray(images)[:, 0], np.asarray(labels) * 3)
    keras.utils.set_random_seed(1)
    assert np.array_equal(np.concatenate(_epoch(batches(x, y, 4, shuffle=True))),
                          np.concatenate(first))  # the same seed, the same order
    assert np.array_equal(np.concatenate(_epoch(batches(x, y, 4, shuffle=False))), y)
    assert data.cardinality().numpy() == 3


@pytest.mark.parametrize("x, y, message", [
    (np.zeros((3, 2)), np.zeros(2), "x has 3 samples but y has 2"),
    (np.zeros((0, 2)), np.zeros(0), "no samples"),
])
def test_batches_refuse_inputs_that_do_not_match(x: np.ndarray, y: np.ndarray,
                                                 message: str) -> None:
    with pytest.raises(ValueError, match=message):
        batches(x, y, 4, shuffle=False)


def _trained(fused: bool, l2: float, precision: str = "float32",
             seen: list[str] | None = None) -> tuple[keras.Model, list[float]]:
    """Four steps on the same stub batches from the same initial weights; ``seen`` collects
    the dtypes of the gradients the optimizer is given."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(128, 4, 4, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=128)
    dataset = Dataset(x, y, x, y, x, y, CIFAR10_CLASSES)
    training = TrainingConfig(precision=precision, steps_per_execution=1,
                              fused_optimizer=fused)
    with fresh_session():
        keras.utils.set_random_seed(3)
        model = compiled_model({**PARAMS, "l2": l2}, dataset, training).fitted
        if seen is not None:
            apply = model.optimizer.apply

            def spy(grads: Any, variables: Any = None) -> Any:
                seen.extend(str(g.dtype.name) for g in grads)
                return apply(grads, variables)

            model.optimizer.apply = spy
        history = model.fit(batches(x, y, 32, shuffle=False), epochs=1, verbose=0,
                            shuffle=False)
    return model, history.history["loss"]


def test_l2_gradients_in_the_fused_update_move_the_weights_as_keras_l2_does() -> None:
    fused, fused_loss = _trained(fused=True, l2=1e-2)
    plain, plain_loss = _trained(fused=False, l2=1e-2)
    unregularized, _ = _trained(fused=True, l2=0.0)
    for a, b, c in zip(fused.get_weights(), plain.get_weights(), unregularized.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    kernel = fused.get_layer("dense_l0").get_weights()[0]
    free = unregularized.get_layer("dense_l0").get_weights()[0]
    assert np.abs(kernel - free).max() > 1e-4  # the penalty did move the weights
    np.testing.assert_allclose(fused_loss, plain_loss, rtol=1e-5)  # the loss includes it
    # A saved model still describes Keras's own L2 regularizer.
    config = fused.get_layer("dense_l0").get_config()["kernel_regularizer"]
    assert config["class_name"] == "L2" and config["config"]["l2"] == pytest.approx(1e-2)


def test_bfloat16_gradients_reach_the_fused_update_and_move_the_weights_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under mixed_bfloat16 the fused update takes the weights' gradients in bfloat16 (as the
    matrix products make them) and widens them itself: the same weights as with TensorFlow's
    cast back to float32 first, and the same as Keras's own unfused optimizer."""
    from objectives import fast_path

    seen: list[str] = []
    narrow, narrow_loss = _trained(fused=True, l2=1e-2, precision="mixed_bfloat16", seen=seen)
    assert "bfloat16" in seen and "float32" in seen  # dense kernels; the float32 output layer
    monkeypatch.setattr(fast_path, "_keep_low_precision_gradients", lambda model: None)
    widened: list[str] = []
    wide, wide_loss = _trained(fused=True, l2=1e-2, precision="mixed_bfloat16", seen=widened)
    assert "bfloat16" not in widened
    for a, b in zip(narrow.get_weights(), wide.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(narrow_loss, wide_loss, rtol=1e-6)
    keras_own, keras_loss = _trained(fused=False, l2=1e-2, precision="mixed_bfloat16")
    for a, b in zip(narrow.get_weights(), keras_own.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(narrow_loss, keras_loss, rtol=1e-4)
