"""``build_model``: the Keras MLP that every trial trains."""

from __future__ import annotations

from typing import Any

from objectives.keras_setup import keras

from objectives.space import layer_widths

WHITENED = "whitened"  # the layer whose output is a ZCA-whitened image


def build_model(
    params: dict[str, Any], input_shape: tuple[int, ...], n_classes: int,
    dtype_policy: str | None = None, preprocess: dict[str, Any] | None = None,
) -> keras.Model:
    """Build the MLP described by ``params`` (the names of ``objectives.space``).

    The model takes raw uint8 images: it flattens them and scales them to [-1, 1] itself, so a
    saved model needs no preprocessing. ``preprocess``
    (``objectives.recipes.preprocessing.input_layers``) replaces that scaling by a per-channel
    standardization or a fixed whitening layer computed on the training split. (Augmentation
    is the training input pipeline's, ``objectives.feed``: the model never sees it.) Each
    hidden layer is Dense, then BatchNorm (when ``batch_norm``), then the activation, then
    Dropout (when ``dropout > 0``); the output layer is a softmax over ``n_classes``.
    ``dtype_policy`` (e.g. ``"mixed_bfloat16"``) sets the hidden layers' computation; the
    output layer always computes in float32.

    Example:
        >>> model = build_model({"n_layers": 2, "units_l0": 32, "units_l1": 32,
        ...     "activation": "relu", "batch_norm": False, "dropout": 0.0, "l2": 0.0,
        ...     "initializer": "glorot_uniform"}, (32, 32, 3), 10)
    """
    l2 = float(params.get("l2", 0.0))
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    batch_norm = bool(params.get("batch_norm", False))
    dropout = float(params.get("dropout", 0.0))
    initializer = params.get("initializer", "glorot_uniform")

    policy: dict[str, Any] = {"dtype": dtype_policy} if dtype_policy else {}
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    kind = (preprocess or {}).get("kind", "scale")
    if kind == "standardize":
        assert preprocess is not None
        x = keras.layers.Normalization(axis=-1, mean=preprocess["mean"],
                                       variance=preprocess["variance"], name="standardize")(x)
    x = keras.layers.Flatten(**policy)(x)
    whiten = None
    if kind in ("pca", "zca"):
        assert preprocess is not None
        x = keras.layers.Rescaling(1.0 / 255.0, name="scale", **policy)(x)
        whiten = keras.layers.Dense(preprocess["kernel"].shape[1], trainable=False,
                                    name=f"whiten_{kind}", **policy)
        x = whiten(x)
        if kind == "zca":
            # The whitened image in the image's shape: the model trained on images whitened
            # beforehand starts here (``objectives.mlp.compiled_model``).
            x = keras.layers.Reshape(input_shape, name=WHITENED, **policy)(x)
            x = keras.layers.Flatten(**policy)(x)
    elif kind == "scale":
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale", **policy)(x)
    for i, width in enumerate(layer_widths(params)):
        x = keras.layers.Dense(
            width,
            use_bias=not batch_norm,  # BatchNorm's own offset makes a bias redundant
            kernel_initializer=initializer,
            kernel_regularizer=regularizer,
            name=f"dense_l{i}",
            **policy,
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"batch_norm_l{i}", **policy)(x)
        x = keras.layers.Activation(params["activation"], name=f"activation_l{i}", **policy)(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"dropout_l{i}", **policy)(x)
    outputs = keras.layers.Dense(
        n_classes, activation="softmax", kernel_regularizer=regularizer, name="classes",
        dtype="float32",
    )(x)
    model = keras.Model(inputs, outputs, name="mlp")
    if whiten is not None:
        assert preprocess is not None
        whiten.set_weights([preprocess["kernel"], preprocess["bias"]])
    return model
