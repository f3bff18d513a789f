"""``get_optimizer``: the Keras optimizer a configuration asks for."""

from __future__ import annotations

from typing import Any

from objectives.keras_setup import keras


def get_optimizer(params: dict[str, Any], learning_rate: Any = None) -> keras.optimizers.Optimizer:
    """Build the optimizer named by ``params["optimizer"]`` with its own parameters.

    ``adamw`` reads ``weight_decay``; ``sgd`` reads ``momentum`` and ``nesterov``;
    ``rmsprop`` reads ``rho``; ``nadam`` and ``lion`` take Keras's defaults beside the learning
    rate. Each falls back to Keras's default when its parameter is absent. ``learning_rate``
    (a number or a Keras schedule, see ``objectives.recipes.schedule``) replaces
    ``params["learning_rate"]`` when given.
    """
    name = params["optimizer"]
    lr = float(params["learning_rate"]) if learning_rate is None else learning_rate
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    if name == "adamw":
        return keras.optimizers.AdamW(
            learning_rate=lr, weight_decay=float(params.get("weight_decay", 0.004))
        )
    if name == "sgd":
        return keras.optimizers.SGD(
            learning_rate=lr,
            momentum=float(params.get("momentum", 0.0)),
            nesterov=bool(params.get("nesterov", False)),
        )
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr, rho=float(params.get("rho", 0.9)))
    if name == "nadam":
        return keras.optimizers.Nadam(learning_rate=lr)
    if name == "lion":
        return keras.optimizers.Lion(learning_rate=lr)
    raise ValueError("optimizer must be one of adam, adamw, sgd, rmsprop, nadam, lion, but got "
                     f"{name!r}")
