"""The searches hpsearch is compared with in ``search_efficiency.py``, written the way their
users write them: Keras ``model.fit`` on float32 NumPy arrays, nothing of hpsearch's training
path. Run by ``search_efficiency.py`` as one process each:

    python benchmarks/_others.py {plain-optuna,kerastuner,hand-built} --data-path P --out F
        --t0 EPOCH_SECONDS --budget SECONDS [--seed N]

Each finished trial is appended to ``--out`` as one JSON line: seconds since ``--t0``, its
validation accuracy (as that tool scores a trial), its parameters under hpsearch's names and
the epochs it trained and, where the tool scores an earlier epoch than its last, that epoch
(``best_epoch``), so that ``hpsearch evaluate`` can retrain the best one, also on training plus
validation for the epochs the tool chose.

- plain-optuna: Optuna's own Keras example (``optuna-examples/keras``): TPE and the median
  pruner with their defaults, ``KerasPruningCallback`` on ``val_accuracy``, 20 epochs, the
  score is the validation accuracy after the last epoch.
- kerastuner: KerasTuner's Hyperband (``max_epochs=15``, ``factor=3``, one iteration); a
  trial's score is its best epoch's validation accuracy, as KerasTuner scores it.
- hand-built: the three experiments of the course report (the fixed trials of
  ``studies/seed-experiments.toml``), one after the other, with EarlyStopping restoring the
  best weights as the report did.

The search space is hpsearch's benchmark space (``search_efficiency.SPACE``) with the same
parameter names, sampled through each tool's own API.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

OPTIMIZER_PARAMS = {"adamw": ("weight_decay",), "sgd": ("momentum", "nesterov"),
                    "rmsprop": ("rho",), "adam": ()}
EPOCHS_PLAIN = 20
HYPERBAND_MAX_EPOCHS = 15

SEED_EXPERIMENTS = REPO / "studies" / "seed-experiments.toml"  # the hand-built experiments


def load_arrays(data_path: str, seed: int) -> tuple[np.ndarray, ...]:
    """hpsearch's train and validation split (so every method sees the same images), as the
    float32 arrays a hand-written script feeds to ``model.fit``, scaled to [-1, 1] as the
    course report (and hpsearch's model) scale them: with [0, 1] the reference MLP reached
    0.44 validation accuracy after 4 epochs instead of 0.49, a handicap that is not theirs."""
    from objectives.config import DataConfig
    from objectives.data import load_dataset

    data = load_dataset(DataConfig(dataset="cifar10", path=data_path), seed)

    def flat(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32).reshape(len(x), -1) / 127.5 - 1.0

    return (flat(data.x_train), np.asarray(data.y_train), flat(data.x_val),
            np.asarray(data.y_val))


def build_model(params: dict[str, Any]) -> Any:
    import keras

    reg = keras.regularizers.l2(params["l2"]) if params["l2"] > 0 else None
    model = keras.Sequential([keras.Input((3072,))])
    for i in range(params["n_layers"]):
        model.add(keras.layers.Dense(params[f"units_l{i}"],
                                     kernel_initializer=params["initializer"],
                                     kernel_regularizer=reg))
        if params["batch_norm"]:
            model.add(keras.layers.BatchNormalization())
        model.add(keras.layers.Activation(params["activation"]))
        if params["dropout"] > 0:
            model.add(keras.layers.Dropout(params["dropout"]))
    model.add(keras.layers.Dense(10, activation="softmax"))
    name, lr = params["optimizer"], params["learning_rate"]
    optimizer = {
        "adam": lambda: keras.optimizers.Adam(lr),
        "adamw": lambda: keras.optimizers.AdamW(lr, weight_decay=params["weight_decay"]),
        "sgd": lambda: keras.optimizers.SGD(lr, momentum=params["momentum"],
                                            nesterov=params["nesterov"]),
        "rmsprop": lambda: keras.optimizers.RMSprop(lr, rho=params["rho"]),
    }[name]()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


class Log:
    def __init__(self, out: Path, t0: float) -> None:
        self.out, self.t0 = out, t0

    def trial(self, value: float, params: dict[str, Any], epochs: int, **extra: Any) -> None:
        record = {"seconds": round(time.time() - self.t0, 2), "value": float(value),
                  "params": params, "epochs": int(epochs), **extra}
        with self.out.open("a") as file:
            file.write(json.dumps(record) + "\n")


def plain_optuna(arrays: tuple[np.ndarray, ...], log: Log, budget: float, seed: int) -> None:
    import keras
    import optuna
    from optuna_integration import KerasPruningCallback

    from objectives.space import suggest
    sys.path.insert(0, str(REPO / "benchmarks"))
    from search_efficiency import space

    x_train, y_train, x_val, y_val = arrays
    search_space = space()

    def objective(trial: optuna.Trial) -> float:
        keras.backend.clear_session()
        params = suggest(trial, search_space)
        model = build_model(params)
        history = model.fit(x_train, y_train, validation_data=(x_val, y_val),
                            batch_size=params["batch_size"], epochs=EPOCHS_PLAIN, verbose=0,
                            callbacks=[KerasPruningCallback(trial, "val_accuracy")])
        score = model.evaluate(x_val, y_val, verbose=0)[1]
        log.trial(score, params, len(history.epoch))  # scored after its last epoch
        return score

    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner())
    study.optimize(objective, timeout=budget)


class _BudgetSpent(Exception):
    pass


def kerastuner(arrays: tuple[np.ndarray, ...], log: Log, budget: float, seed: int,
               folder: Path) -> None:
    import keras
    import keras_tuner

    x_train, y_train, x_val, y_val = arrays

    class MLP(keras_tuner.HyperModel):
        def build(self, hp: keras_tuner.HyperParameters) -> Any:
            params: dict[str, Any] = {"n_layers": hp.Int("n_layers", 1, 4)}
            for i in range(params["n_layers"]):
                params[f"units_l{i}"] = hp.Int(f"units_l{i}", 32, 1024, sampling="log")
            params["activation"] = hp.Choice("activation", ["relu", "tanh", "gelu"])
            params["batch_norm"] = hp.Boolean("batch_norm")
            params["dropout"] = hp.Float("dropout", 0.0, 0.5)
            params["l2"] = hp.Float("l2", 1e-7, 1e-3, sampling="log")
            params["initializer"] = hp.Choice("initializer",
                                              ["glorot_uniform", "he_normal", "lecun_normal"])
            params["optimizer"] = hp.Choice("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
            params["learning_rate"] = hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")
            with hp.conditional_scope("optimizer", ["adamw"]):
                wd = hp.Float("weight_decay", 1e-6, 1e-2, sampling="log")
            with hp.conditional_scope("optimizer", ["sgd"]):
                momentum = hp.Float("momentum", 0.0, 0.99)
                nesterov = hp.Boolean("nesterov")
            with hp.conditional_scope("optimizer", ["rmsprop"]):
                rho = hp.Float("rho", 0.8, 0.99)
            params.update(weight_decay=wd, momentum=momentum, nesterov=nesterov, rho=rho)
            return build_model(params)

        def fit(self, hp: keras_tuner.HyperParameters, model: Any, *args: Any,
                **kwargs: Any) -> Any:
            return model.fit(*args, batch_size=hp.Choice("batch_size", [64, 128, 256]),
                             **kwargs)

    def hpsearch_params(values: dict[str, Any]) -> dict[str, Any]:
        params = {k: v for k, v in values.items() if not k.startswith("tuner/")
                  and not k.startswith("units_l") and k not in
                  ("weight_decay", "momentum", "nesterov", "rho")}
        for i in range(values["n_layers"]):
            params[f"units_l{i}"] = values[f"units_l{i}"]
        for name in OPTIMIZER_PARAMS[values["optimizer"]]:
            params[name] = values[name]
        return params

    class Tuner(keras_tuner.Hyperband):
        def on_trial_begin(self, trial: Any) -> None:
            if time.time() - log.t0 > budget:
                raise _BudgetSpent
            super().on_trial_begin(trial)

        def on_trial_end(self, trial: Any) -> None:
            super().on_trial_end(trial)
            ended = self.oracle.get_trial(trial.trial_id)
            if ended.score is not None:
                values = ended.hyperparameters.values
                best_step = getattr(ended, "best_step", None)  # the epoch it is scored by
                log.trial(ended.score, hpsearch_params(values),
                          values.get("tuner/epochs", HYPERBAND_MAX_EPOCHS),
                          **({} if best_step is None else {"best_epoch": int(best_step) + 1}))

    tuner = Tuner(MLP(), objective="val_accuracy", max_epochs=HYPERBAND_MAX_EPOCHS, factor=3,
                  hyperband_iterations=1, seed=seed, directory=str(folder),
                  project_name="hyperband", overwrite=True)
    try:
        tuner.search(x_train, y_train, validation_data=(x_val, y_val), verbose=0)
    except _BudgetSpent:
        pass
    keras.backend.clear_session()


def hand_built(arrays: tuple[np.ndarray, ...], log: Log, budget: float, seed: int) -> None:
    import keras

    from search import studyfile

    x_train, y_train, x_val, y_val = arrays
    for fixed in studyfile.load(SEED_EXPERIMENTS).fixed_trials:
        label, epochs, params = fixed.label, fixed.max_epochs or EPOCHS_PLAIN, fixed.params()
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        model = build_model(params)
        stop = keras.callbacks.EarlyStopping("val_accuracy", patience=5,
                                             restore_best_weights=True)
        history = model.fit(x_train, y_train, validation_data=(x_val, y_val),
                            batch_size=params["batch_size"], epochs=epochs, verbose=0,
                            callbacks=[stop])
        scores = history.history["val_accuracy"]
        log.trial(max(scores), params, epochs, label=label,
                  best_epoch=scores.index(max(scores)) + 1)  # the weights it restored


def main() -> None:
    parser = argparse.ArgumentParser(description="one of the searches hpsearch is compared with")
    parser.add_argument("method", choices=["plain-optuna", "kerastuner", "hand-built"])
    parser.add_argument("--data-path", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--t0", type=float, required=True)
    parser.add_argument("--budget", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    arrays = load_arrays(args.data_path, args.seed)
    log = Log(args.out, args.t0)
    runs: dict[str, Callable[..., None]] = {
        "plain-optuna": plain_optuna, "hand-built": hand_built,
        "kerastuner": lambda *a: kerastuner(*a, folder=args.out.parent / "kerastuner"),
    }
    runs[args.method](arrays, log, args.budget, args.seed)


if __name__ == "__main__":
    main()
