"""Training recipes beyond the seed's: learning-rate schedules, label smoothing, Nadam and
Lion, augmentation. Sampled only where they apply, trained for real on stub data, replayed by
``--full-train``, saved in models that load and predict raw images without any of it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from objectives.config import TrainingConfig
from objectives.data import CIFAR10_CLASSES, Dataset, make_stub
from objectives.keras_setup import keras
from objectives.mlp import train, train_on_all
from objectives.recipes.schedule import learning_rate
from objectives.between_trials import fresh_session
from objectives.space import SearchSpace, suggest

PARAMS: dict[str, Any] = {
    "n_layers": 2, "units_l0": 64, "units_l1": 32, "activation": "relu", "batch_norm": True,
    "dropout": 0.1, "l2": 1e-5, "initializer": "he_normal", "optimizer": "adam",
    "learning_rate": 3e-3, "batch_size": 100,
}


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    x, y, x_test, y_test = make_stub(0, n_train=1500, n_test=100)
    return Dataset(x[:1200], y[:1200], x[1200:], y[1200:], x_test, y_test, CIFAR10_CLASSES)


def _rate(schedule: Any, step: int) -> float:
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_each_schedule_has_its_shape() -> None:
    peak = 0.01
    base = {"learning_rate": peak, "final_lr_fraction": 0.1, "warmup_epochs": 2}
    assert learning_rate({**base, "lr_schedule": "plateau"}, steps_per_epoch=10, epochs=10) == peak
    cosine = learning_rate({**base, "lr_schedule": "cosine"}, steps_per_epoch=10, epochs=10)
    assert _rate(cosine, 0) == pytest.approx(peak)
    assert _rate(cosine, 50) == pytest.approx(peak * 0.55)  # halfway: between peak and final
    assert _rate(cosine, 100) == pytest.approx(peak * 0.1)
    warm = learning_rate({**base, "lr_schedule": "warmup_cosine"}, steps_per_epoch=10,
                         epochs=10)
    assert _rate(warm, 0) == pytest.approx(0.0)
    assert _rate(warm, 10) == pytest.approx(peak / 2)  # linear warm-up
    assert _rate(warm, 20) == pytest.approx(peak)
    assert _rate(warm, 100) == pytest.approx(peak * 0.1)
    cycle = learning_rate({**base, "lr_schedule": "one_cycle"}, steps_per_epoch=10, epochs=10)
    assert _rate(cycle, 0) == pytest.approx(peak / 25)
    assert _rate(cycle, 20) == pytest.approx(peak)
    assert _rate(cycle, 100) == pytest.approx(peak * 0.1)
    # a warm-up as long as the training still leaves a step of decay
    long = learning_rate({**base, "lr_schedule": "one_cycle", "warmup_epochs": 50},
                         steps_per_epoch=10, epochs=10)
    assert _rate(long, 99) == pytest.approx(peak)


@pytest.mark.parametrize(("schedules", "own"), [
    ("plateau", set()),
    ("cosine", {"lr_schedule", "final_lr_fraction"}),
    ("warmup_cosine", {"lr_schedule", "warmup_epochs", "final_lr_fraction"}),
    ("one_cycle", {"lr_schedule", "warmup_epochs", "final_lr_fraction"}),
])
def test_a_schedule_s_parameters_are_sampled_only_with_it(schedules: str,
                                                           own: set[str]) -> None:
    # plateau alone is the default: nothing about schedules is sampled or recorded
    space = SearchSpace.model_validate({"lr_schedule": schedules})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    params = suggest(trial, space)
    assert {"lr_schedule", "warmup_epochs", "final_lr_fraction"} & set(params) == own
    assert set(trial.params) == set(params)
    assert "label_smoothing" not in params
    smoothing = SearchSpace.model_validate({"label_smoothing": {"low": 0.0, "high": 0.2}})
    assert 0.0 <= suggest(study.ask(), smoothing)["label_smoothing"] <= 0.2


def test_a_study_stored_before_the_schedules_existed_still_matches() -> None:
    from objectives.space import ENTRIES_ADDED_LATER
    from search.studies import fingerprint_differences

    stored = SearchSpace().fingerprint()
    assert not set(ENTRIES_ADDED_LATER) & set(stored)  # as a study stored before them has it
    assert fingerprint_differences(stored, SearchSpace().fingerprint()) == []
    other = SearchSpace.model_validate({"lr_schedule": ["plateau", "cosine"]}).fingerprint()
    assert [d.split(":")[0] for d in fingerprint_differences(stored, other)] == [
        "lr_schedule.choices"]  # a schedule searched is another space
    assert SearchSpace.model_validate(other) == SearchSpace.model_validate(
        {"lr_schedule": ["plateau", "cosine"]})


@pytest.mark.parametrize("change", [
    {"lr_schedule": "cosine", "final_lr_fraction": 0.0},
    {"lr_schedule": "warmup_cosine", "warmup_epochs": 1, "final_lr_fraction": 0.05},
    {"lr_schedule": "one_cycle", "warmup_epochs": 2, "final_lr_fraction": 0.0},
    {"label_smoothing": 0.1},
    {"optimizer": "nadam"},
    {"optimizer": "lion", "learning_rate": 3e-4},
    {"augment_flip": True, "augment_shift": 2},
    {"preprocessing": "standardize"},
    {"preprocessing": "pca", "pca_components": 64, "whitening_epsilon": 0.01},
    {"preprocessing": "zca", "whitening_epsilon": 0.1},
], ids=["cosine", "warmup_cosine", "one_cycle", "label_smoothing", "nadam", "lion",
        "augmentation", "standardize", "pca", "zca"])
def test_each_new_dimension_learns_and_the_rate_follows_its_schedule(
        dataset: Dataset, change: dict[str, Any]) -> None:
    params = {**PARAMS, **change}
    training = TrainingConfig(max_epochs=6, early_stopping_patience=6)
    with fresh_session():
        keras.utils.set_random_seed(3)
        outcome = train(params, dataset, training, "val_accuracy")
    history = outcome.recorder.history
    assert outcome.recorder.epochs == 6
    assert max(history["val_accuracy"]) > 0.2, history["val_accuracy"]  # chance is 0.1
    assert math.isfinite(outcome.extra["test_accuracy"])
    if "lr_schedule" in change:  # step by step, and no plateau reduction beside it
        steps = -(-len(dataset.x_train) // params["batch_size"])
        schedule = learning_rate(params, steps_per_epoch=steps, epochs=6)
        expected = [_rate(schedule, steps * (epoch + 1)) for epoch in range(6)]
        assert history["learning_rate"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("schedule", ["cosine", "warmup_cosine", "one_cycle"])
def test_full_train_replays_the_schedule_epoch_for_epoch(dataset: Dataset,
                                                         schedule: str) -> None:
    params = {**PARAMS, "lr_schedule": schedule, "warmup_epochs": 1, "final_lr_fraction": 0.1}
    training = TrainingConfig(max_epochs=8, early_stopping_patience=8)
    with fresh_session():
        keras.utils.set_random_seed(3)
        trial = train(params, dataset, training, "val_accuracy")
    with fresh_session():
        keras.utils.set_random_seed(3)
        # 5 of the trial's 8 planned epochs, on train + validation (more steps an epoch)
        full = train_on_all(params, dataset, training, epochs=5,
                            learning_rates=trial.recorder.history["learning_rate"],
                            planned_epochs=8)
    assert full.recorder.history["learning_rate"] == pytest.approx(
        trial.recorder.history["learning_rate"][:5], rel=1e-4)


@pytest.mark.parametrize("whitening", [
    {"preprocessing": "pca", "pca_components": 48, "whitening_epsilon": 0.05},
    {"preprocessing": "zca", "whitening_epsilon": 0.05},
    {"preprocessing": "standardize"},
], ids=["pca", "zca", "standardize"])
def test_a_saved_model_with_every_recipe_loads_in_safe_mode_and_predicts_as_trained(
        dataset: Dataset, tmp_path: Path, whitening: dict[str, Any]) -> None:
    params = {**PARAMS, "lr_schedule": "one_cycle", "warmup_epochs": 1,
              "final_lr_fraction": 0.0, "label_smoothing": 0.1, "augment_flip": True,
              "augment_shift": 3, **whitening}
    with fresh_session():
        keras.utils.set_random_seed(3)
        outcome = train(params, dataset, TrainingConfig(max_epochs=2), "val_accuracy")
        expected = outcome.model.predict(dataset.x_test, verbose=0)
        outcome.model.save(tmp_path / "model.keras")
    with fresh_session():
        model = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
        predicted = model.predict(dataset.x_test, verbose=0)
    assert np.allclose(predicted, expected, atol=1e-6)
    # the test accuracy the trial recorded is the saved model's on raw uint8 images
    accuracy = float(np.mean(predicted.argmax(axis=1) == dataset.y_test))
    assert accuracy == pytest.approx(outcome.extra["test_accuracy"], abs=1e-6)


def test_zca_trains_on_images_whitened_once_as_the_model_whitens_them(
        dataset: Dataset) -> None:
    from objectives.mlp import compiled_model
    from objectives.model import WHITENED
    from objectives.recipes.preprocessing import whiten

    params = {**PARAMS, "preprocessing": "zca", "whitening_epsilon": 0.05}
    with fresh_session():
        compiled = compiled_model(params, dataset, TrainingConfig(precision="float32"))
        assert compiled.fitted is not compiled.model
        assert "whiten_zca" not in [layer.name for layer in compiled.fitted.layers]
        assert compiled.fitted.count_params() == compiled.model.count_params() - 3072 * 3073
        inner = keras.Model(compiled.model.input, compiled.model.get_layer(WHITENED).output)
        in_model = inner.predict(dataset.x_val, verbose=0)
        beforehand = compiled.inputs(dataset.x_val)
    assert beforehand.shape == dataset.x_val.shape and beforehand.dtype == np.float32
    assert np.allclose(beforehand, in_model, atol=1e-4)
    # Flipping a whitened image is whitening the flipped image, so flips can come after.
    flipped = whiten(dataset.x_val[:, :, ::-1, :], compiled.preprocess)
    assert np.allclose(flipped, beforehand[:, :, ::-1, :], atol=1e-4)
    # PCA and the other kinds train on raw images
    for kind in ("scale", "pca"):
        with fresh_session():
            other = compiled_model({**params, "preprocessing": kind}, dataset, TrainingConfig())
            assert other.fitted is other.model and other.inputs(dataset.x_val) is dataset.x_val


def test_augmentation_changes_training_batches_only_and_repeats_by_seed_and_epoch() -> None:
    from objectives.feed import batches

    x, y, _, _ = make_stub(1, n_train=200, n_test=1)

    def epochs(dataset: Any, count: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        return [[(np.asarray(bx), np.asarray(by)) for bx, by in dataset] for _ in range(count)]

    plain = epochs(batches(x, y, 64, shuffle=True, seed=5), 2)
    augmented = epochs(batches(x, y, 64, shuffle=True, seed=5, flip=True, shift=3), 2)
    for epoch_plain, epoch_augmented in zip(plain, augmented):
        for (images, labels), (changed, same_labels) in zip(epoch_plain, epoch_augmented):
            assert np.array_equal(labels, same_labels)  # the same order, augmented or not
            assert changed.shape == images.shape and changed.dtype == np.uint8
            assert not np.array_equal(changed, images)
            # each image is its original, flipped or not, shifted by at most 3 pixels
            for original, result in zip(images[:8], changed[:8]):
                candidates = [original, original[:, ::-1]]
                assert any(_is_shift(c, result, 3) for c in candidates)
    # the same seed gives the same augmented epochs; a resumed feed carries on where it was
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(
        augmented[1], epochs(batches(x, y, 64, shuffle=True, seed=5, flip=True, shift=3,
                                     first_epoch=1), 1)[0]))
    # validation and test batches (shuffle=False) are never augmented
    (unshuffled,), = [epochs(batches(x, y, 64, shuffle=False, flip=True, shift=3), 1)]
    assert np.array_equal(np.concatenate([b for b, _ in unshuffled]), x)


@pytest.mark.parametrize("flip,shift", [(True, 0), (False, 2), (True, 3)])
def test_each_image_is_flipped_then_moved_by_exactly_its_offsets(flip: bool, shift: int) -> None:
    from objectives.feed import Augment

    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, size=(40, 9, 7, 3), dtype=np.uint8)  # not square: rows != columns
    y = np.arange(40)
    rows = rng.permutation(40)[:25]
    flips = rng.random(25) < 0.5
    offsets = rng.integers(-shift, shift + 1, size=(25, 2))
    images, labels = Augment(x, y, flip=flip, shift=shift)(rows, flips, offsets)
    assert np.array_equal(labels, y[rows])
    for image, row, flipped, (dy, dx) in zip(images, rows, flips, offsets):
        # pixel (i, j) is pixel (i + dy, j + dx) of the flipped image, zero outside it
        source = x[row][:, ::-1] if flip and flipped else x[row]
        padded = np.pad(source, ((shift, shift), (shift, shift), (0, 0)))
        assert np.array_equal(image, padded[shift + dy:shift + dy + 9, shift + dx:shift + dx + 7])


def _is_shift(original: np.ndarray, result: np.ndarray, most: int) -> bool:
    size = original.shape[0]
    padded = np.pad(original, ((most, most), (most, most), (0, 0)))
    return any(np.array_equal(padded[r:r + size, c:c + size], result)
               for r in range(2 * most + 1) for c in range(2 * most + 1))


def test_whitening_decorrelates_the_training_images_inside_the_model(dataset: Dataset) -> None:
    from objectives.model import build_model
    from objectives.recipes.preprocessing import input_layers, spectrum

    for kind, width in (("pca", 40), ("zca", 3072)):
        params = {**PARAMS, "preprocessing": kind, "pca_components": 40,
                  "whitening_epsilon": 1e-6}
        with fresh_session():
            model = build_model(params, dataset.input_shape, dataset.n_classes,
                                preprocess=input_layers(params, dataset.x_train))
            layer = model.get_layer(f"whiten_{kind}")
            assert not layer.trainable and layer.units == width
            inner = keras.Model(model.input, layer.output)
            # the training images' statistics, those of the split and its mirror images
            mirrored = np.concatenate([dataset.x_train, dataset.x_train[:, :, ::-1, :]])
            white = inner.predict(mirrored, verbose=0).astype(np.float64)
        assert np.allclose(white.mean(axis=0), 0.0, atol=1e-3)
        if kind == "zca":  # rotated back onto the pixels: look along the top directions
            white = white @ spectrum(dataset.x_train).vectors[:, :40].astype(np.float64)
        covariance = np.cov(white[:, :40], rowvar=False, bias=True)
        assert np.allclose(covariance, np.eye(40), atol=2e-2)  # the top 40 directions


def test_a_cached_split_s_spectrum_is_computed_once_per_machine(
        dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from objectives.recipes import preprocessing
    from objectives.cache import load_or_build

    monkeypatch.setenv("HPSEARCH_CACHE", str(tmp_path))
    arrays, _ = load_or_build("split", lambda: ({"x_train": dataset.x_train}, {}))
    split = arrays["x_train"]
    assert isinstance(split, np.memmap)
    first = preprocessing.spectrum(split)
    # another process (or a fresh start) on the same split reads it back, decomposing nothing
    preprocessing._spectra.clear()

    def refuse(x: np.ndarray) -> None:
        raise AssertionError("decomposed again")

    monkeypatch.setattr(preprocessing, "_decompose", refuse)
    again = preprocessing.spectrum(np.load(split.filename, mmap_mode="r"))
    assert np.array_equal(again.values, first.values)
    assert np.array_equal(again.vectors, first.vectors)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2  # the split, its spectrum


def test_standardizing_uses_the_training_split_per_channel(dataset: Dataset) -> None:
    from objectives.recipes.preprocessing import input_layers

    found = input_layers({"preprocessing": "standardize"}, dataset.x_train)
    channels = dataset.x_train.reshape(-1, 3).astype(np.float64)
    assert np.allclose(found["mean"], channels.mean(axis=0))
    assert np.allclose(found["variance"], channels.var(axis=0))


@pytest.mark.parametrize(("kind", "own"), [
    ("standardize", set()), ("pca", {"whitening_epsilon", "pca_components"}),
    ("zca", {"whitening_epsilon"})])
def test_whitening_parameters_are_sampled_only_with_it(kind: str, own: set[str]) -> None:
    space = SearchSpace.model_validate({"preprocessing": ["scale", kind]})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(6):
        params = suggest(study.ask(), space)
        expected = own if params["preprocessing"] == kind else set()
        assert {"whitening_epsilon", "pca_components"} & set(params) == expected


def test_the_references_span_the_seed_s_recipe_and_cifar10_s_where_the_space_searches_them(
        ) -> None:
    from objectives.space import REFERENCE, REFERENCE_RECIPE, REFERENCE_WIDE, reference_trials

    space = SearchSpace.model_validate({
        "lr_schedule": ["plateau", "cosine"], "label_smoothing": {"low": 0.0, "high": 0.2},
        "augment_flip": [True, False], "augment_shift": [0, 2],
        "preprocessing": ["scale", "zca"]})
    (start, epochs), (wide, wide_epochs) = reference_trials(space)
    assert (epochs, wide_epochs) == (18, None)
    # the deep one as the seed trained it, every recipe entry at its default
    assert start == {**REFERENCE, "lr_schedule": "plateau", "label_smoothing": 0.0,
                     "augment_flip": False, "augment_shift": 0, "preprocessing": "scale"}
    # the wide one with CIFAR-10's recipe, whose own parameters come with their choice
    assert wide == {**REFERENCE_WIDE, **REFERENCE_RECIPE}
    assert wide["final_lr_fraction"] == 0.0 and wide["whitening_epsilon"] == 0.01
    assert not space.check(start) and not space.check(wide)  # the study-file form validates
    # where the space leaves out the recipe's value, the seed's (the default) where it holds
    # that, else the sampler's choice
    _, (wide, _) = reference_trials(SearchSpace.model_validate({
        "preprocessing": ["scale", "pca"], "augment_shift": [0, 4],
        "lr_schedule": ["one_cycle", "warmup_cosine"]}))
    assert wide["preprocessing"] == "scale" and wide["augment_shift"] == 0
    assert not {"lr_schedule", "whitening_epsilon", "pca_components", "final_lr_fraction",
                "warmup_epochs"} & set(wide)
    # a space that does not search the recipes: the references as the seed trained them
    (start, _), (wide, _) = reference_trials(SearchSpace())
    assert (start, wide) == (REFERENCE, REFERENCE_WIDE)


@pytest.mark.parametrize("space", [
    {}, {"optimizer": "adam"}, {"lr_schedule": "cosine"}, {"preprocessing": ["scale", "zca"]},
], ids=["defaults", "adam-only", "cosine-only", "no-pca"])
def test_a_resolved_study_file_validates_again(space: dict[str, Any]) -> None:
    """``evaluate`` reads a study back from its resolved form, every default written out: the
    defaults of parameters whose optimizer, schedule or preprocessing the space leaves out are
    not a request for them."""
    from search.studyfile import StudyFile

    spec = StudyFile.model_validate({"study": {"name": "s", "n_trials": 1}, "space": space})
    assert StudyFile.model_validate(spec.model_dump(mode="json")) == spec


def test_every_recipe_is_one_module_wired_into_the_space_and_off_at_its_defaults() -> None:
    # What a new recipe (mixup, say) is held to: its entries are the space's, after the MLP's
    # and in RECIPES' order; its conditions and reference values are its own entries'; and at
    # its defaults it trains as the seed did (a study stored before it resumes unchanged).
    from objectives import recipes
    from objectives.space import MlpEntries

    assert list(SearchSpace.model_fields) == [*MlpEntries.model_fields, *recipes.ENTRIES]
    n = 4
    y = np.arange(n) % 3
    seed_params = suggest(optuna.trial.FixedTrial({**PARAMS, "batch_size": 128}), SearchSpace())
    assert not set(seed_params) & set(recipes.ENTRIES)  # at their defaults, not even recorded
    for recipe in recipes.RECIPES:
        own = list(recipe.entries.model_fields)
        assert own and issubclass(SearchSpace, recipe.entries), type(recipe).__name__
        for name, (owner, choices) in recipe.conditions.items():
            assert name in own and owner in own and own.index(owner) < own.index(name)
            SearchSpace.model_validate({owner: list(choices)})  # choices the owner has
        assert set(recipe.reference) <= set(own)
        assert SearchSpace.model_validate(recipe.reference).check(recipe.reference) == []
        assert not any(recipe.feed(seed_params).values())
        assert recipe.labels(seed_params, y, 3) is y
        assert recipe.loss(seed_params) is None
        assert recipe.learning_rate(seed_params, steps_per_epoch=10, epochs=3) in (
            None, seed_params["learning_rate"])
        assert recipe.inputs(seed_params, np.zeros((2, 4, 4, 3), np.uint8)) in (
            None, {"kind": "scale"})
        assert recipe.check_data(SearchSpace(), (32, 32, 3)) == []


def test_the_recipes_effects_reach_training_through_one_place() -> None:
    from objectives import recipes

    params = {**PARAMS, "lr_schedule": "cosine", "final_lr_fraction": 0.0,
              "label_smoothing": 0.1, "augment_flip": True, "augment_shift": 2,
              "preprocessing": "standardize"}
    assert recipes.feed_options(params) == {"flip": True, "shift": 2}
    assert recipes.labels(params, np.array([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    assert recipes.loss(params).get_config()["label_smoothing"] == pytest.approx(0.1)
    schedule = recipes.learning_rate(params, steps_per_epoch=10, epochs=2)
    assert _rate(schedule, 0) == pytest.approx(3e-3) and _rate(schedule, 20) == pytest.approx(0)
    assert recipes.inputs(params, np.full((2, 4, 4, 3), 7, np.uint8))["kind"] == "standardize"
    assert recipes.loss(PARAMS) == "sparse_categorical_crossentropy"
    assert recipes.learning_rate(PARAMS, steps_per_epoch=10, epochs=2) == 3e-3
    assert recipes.check_data(SearchSpace.model_validate(
        {"preprocessing": "pca", "pca_components": 64}), (4, 4, 3)) == [
        "space.pca_components: reaches 64, but the data's images hold 48 values each (PCA "
        "keeps at most 48 directions)"]


def test_each_recipe_ablation_variant_gives_its_whole_recipe() -> None:
    """benchmarks/recipe_ablation.py: a fixed trial leaves what it does not give to the
    sampler, so each variant gives every recipe entry its space searches (the seed's where it
    is not the variant's own), and the script refuses a result with anything drawn."""
    import sys
    import tomllib

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import recipe_ablation

    searched = set(tomllib.loads(recipe_ablation.SPACE)["space"])
    recipe = {"lr_schedule", "label_smoothing", "augment_flip", "augment_shift",
              "preprocessing"}
    assert recipe <= searched
    for name, variant in recipe_ablation.VARIANTS.items():
        assert recipe <= {k for k, v in variant.items() if v is not None}, name
    deep = recipe_ablation.VARIANTS["deep + zca"]
    trained = {"n_layers": 3, "units_l0": 512, "units_l1": 256, "units_l2": 128,
               **{k: v for k, v in deep.items() if k != "hidden_layers"}}
    assert recipe_ablation.drawn(trained, deep) == []
    assert recipe_ablation.drawn({**trained, "label_smoothing": 0.07}, deep) == [
        "label_smoothing"]
    assert recipe_ablation.drawn({**trained, "warmup_epochs": 2}, deep) == ["warmup_epochs"]
