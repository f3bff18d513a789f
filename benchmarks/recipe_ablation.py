"""What each training recipe of the larger space adds to the warm start's reference MLPs on
CIFAR-10, one recipe at a time and together: the evidence for the references and defaults of a
study that searches the recipes (issue 16).

Run: .venv/bin/python benchmarks/recipe_ablation.py \
         --data-path ../shared/data/cifar10-jpeg.tar.gz [--variants NAME ...] [--seed 0]
         [--keep DIR [--resume]] [--no-docs]
     .venv/bin/python benchmarks/recipe_ablation.py --dataset images \
         --data-path digits.tar.gz --section recipe_ablation_digits [...]
(the second: the same on another image dataset, here the archive benchmarks/digits.py makes)

With ``--keep DIR --resume``, the variants already trained in DIR are read back and only the
others are trained (as another study of the same database).

Every variant is a fixed trial of one ``hpsearch run`` (``[[fixed_trials]]``, no pruner, the
study's default training settings: at most 40 epochs, early stopping after 5 without
improvement, best weights restored), so each trains exactly as a trial of a real study would,
on the same training/validation split. Printed (and written to docs/benchmarks.md): each
variant's best validation accuracy, the epoch it was reached at, the epochs run, seconds per
epoch and the test accuracy of the trained model (measured once, after training).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
HPSEARCH = Path(sys.executable).parent / "hpsearch"

# The seed's recipe, given in full: a fixed trial leaves what it does not give to the sampler,
# so a variant that named only its own recipe trained with the others drawn at random (the
# runs of this script before 2026-12-07, CIFAR-10's table among them, did).
PLAIN: dict[str, Any] = {"lr_schedule": "plateau", "label_smoothing": 0.0,
                         "augment_flip": False, "augment_shift": 0, "preprocessing": "scale"}
DEEP: dict[str, Any] = {
    "hidden_layers": [512, 256, 128], "activation": "relu", "batch_norm": True, "dropout": 0.3,
    "l2": 1e-5, "initializer": "he_normal", "optimizer": "adamw", "learning_rate": 5e-4,
    "weight_decay": 1e-4, "batch_size": 128, **PLAIN,
}
WIDE: dict[str, Any] = {**DEEP, "hidden_layers": [1024, 512, 256], "batch_size": 256}
COSINE = {"lr_schedule": "cosine", "final_lr_fraction": 0.0}
AUGMENT = {"augment_flip": True, "augment_shift": 2}
PCA = {"preprocessing": "pca", "pca_components": 256, "whitening_epsilon": 0.01}
ZCA = {"preprocessing": "zca", "whitening_epsilon": 0.01}
ALL = {**COSINE, **AUGMENT, "label_smoothing": 0.1, **PCA}
VARIANTS: dict[str, dict[str, Any]] = {
    "deep": DEEP,
    "deep + flip": {**DEEP, "augment_flip": True},
    "deep + flip, shift 2": {**DEEP, **AUGMENT},
    "deep + flip, shift 4": {**DEEP, "augment_flip": True, "augment_shift": 4},
    "deep + cosine": {**DEEP, **COSINE},
    "deep + smoothing 0.1": {**DEEP, "label_smoothing": 0.1},
    "deep + standardize": {**DEEP, "preprocessing": "standardize"},
    "deep + pca 256": {**DEEP, **PCA},
    "deep + zca": {**DEEP, **ZCA},
    "deep + all (pca)": {**DEEP, **ALL},
    "deep + all (zca)": {**DEEP, **ALL, **ZCA, "pca_components": None},
    "wide": WIDE,
    "wide + flip": {**WIDE, "augment_flip": True},
    "wide + standardize": {**WIDE, "preprocessing": "standardize"},
    "wide + pca 256": {**WIDE, **PCA},
    "wide + zca": {**WIDE, **ZCA},
    "wide + all (pca)": {**WIDE, **ALL},
    "wide + all (zca)": {**WIDE, **ALL, **ZCA, "pca_components": None},
}

SPACE = """
[space]
n_layers = {low = 1, high = 4}
units = {low = 32, high = 4096, log = true}
optimizer = ["adam", "adamw"]
lr_schedule = ["plateau", "cosine"]
label_smoothing = {low = 0.0, high = 0.2}
augment_flip = [true, false]
augment_shift = [0, 2, 4]
preprocessing = ["scale", "standardize", "pca", "zca"]
"""


def study_file(name: str, names: list[str], seed: int, data_path: str,
               dataset: str = "cifar10") -> str:
    lines = [f'[study]\nname = "{name}"\nseed = {seed}\nn_trials = {len(names)}\n',
             '[pruner]\ntype = "none"\n',
             f'[data]\ndataset = "{dataset}"\npath = {json.dumps(data_path)}\n',
             # PCA's 256 components are CIFAR-10's: other images may hold fewer values
             SPACE if dataset == "cifar10" else SPACE.replace('"pca", ', "")]
    for name in names:
        lines.append(f"[[fixed_trials]]\nlabel = {json.dumps(name)}")
        for key, value in VARIANTS[name].items():
            if value is not None:
                lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)


def drawn(params: dict[str, Any], variant: dict[str, Any]) -> list[str]:
    """The parameters of a trained variant that it did not give (the sampler drew them)."""
    given = {k: v for k, v in variant.items() if k != "hidden_layers" and v is not None}
    for i, units in enumerate(variant.get("hidden_layers") or []):
        given[f"units_l{i}"] = units
    if "hidden_layers" in variant:
        given["n_layers"] = len(variant["hidden_layers"])
    return sorted(name for name, value in params.items() if given.get(name, object()) != value)


def _trained(url: str) -> dict[str, Any]:
    """The complete trials of every study in ``url`` by their variant's label."""
    import optuna

    found: dict[str, Any] = {}
    try:
        names = optuna.get_all_study_names(url)
    except Exception:  # no database yet
        return found
    for name in names:
        for trial in optuna.load_study(study_name=name, storage=url).get_trials(
                states=(optuna.trial.TrialState.COMPLETE,)):
            found[trial.user_attrs["label"]] = trial
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", required=True)
    parser.add_argument("--dataset", choices=["cifar10", "images"], default="cifar10",
                        help="images: an image-folder archive of other data "
                             "(benchmarks/digits.py makes one)")
    parser.add_argument("--section", default="recipe_ablation",
                        help="the section of docs/benchmarks.md to write")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="keep the study, its log and models here")
    parser.add_argument("--resume", action="store_true",
                        help="with --keep: train only the variants not yet trained there")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    if args.resume and not args.keep:
        parser.error("--resume needs --keep DIR, the folder of the run to resume")
    import optuna

    from _docs import command, machine, write_section

    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="recipe-ablation-") as tmp:
        folder = args.keep.resolve() if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        database = folder / "recipes.db"
        if not args.resume:
            database.unlink(missing_ok=True)
        url = f"sqlite:///{database}"
        done = _trained(url)
        missing = [name for name in args.variants if name not in done]
        if missing:
            name = "recipes" if not done else f"recipes-{len(optuna.get_all_study_names(url))}"
            path = folder / f"{name}.toml"
            path.write_text(study_file(name, missing, args.seed,
                                       str(Path(args.data_path).resolve()), args.dataset))
            with (folder / f"{name}.log").open("w") as log:
                subprocess.run([str(HPSEARCH), "run", str(path), "--storage", url,
                                "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
                               check=True, env={**os.environ,
                                                "HPSEARCH_ARTIFACTS": str(folder / "artifacts")})
        trained = _trained(url)
    rows = ["| variant | best val_accuracy | best epoch | epochs run | s/epoch | test accuracy |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name in args.variants:
        if extra := drawn(trained[name].params, VARIANTS[name]):
            raise SystemExit(f"variant {name!r} trained with parameters it did not give: "
                             f"{extra}")
        attrs = trained[name].user_attrs
        rows.append(f"| {attrs.get('label')} | {attrs.get('val_accuracy', float('nan')):.4f} | "
                    f"{attrs.get('best_epoch')} | {attrs.get('epochs_run')} | "
                    f"{attrs.get('seconds_per_epoch', float('nan')):.2f} | "
                    f"{attrs.get('test_accuracy', float('nan')):.4f} |")
    print("\n".join(rows))
    if not args.no_docs:
        body = "\n".join([
            "## Training recipes on the reference MLPs"
            + ("" if args.dataset == "cifar10" else f" ({Path(args.data_path).name})")
            + " (`benchmarks/recipe_ablation.py`)", "",
            f"Command: `{command()}`  ", f"Machine: {machine()}", "",
            "Each variant one fixed trial of one study, trained as any trial (at most 40 "
            "epochs, early stopping after 5, best weights restored, no pruner); `deep` is the "
            "hand-built deep experiment (3 ReLU layers of 512, 256, 128, BatchNorm, Dropout "
            "0.3, L2 1e-5, AdamW 5e-4, weight decay 1e-4, batch 128), `wide` the same twice as "
            "wide with batches of 256; every recipe a variant does not name is the seed's "
            "(plateau reductions, no smoothing, no flips or shifts, scaling); `all (pca)` is "
            "flips, shifts of 2 pixels, cosine decay to 0, label smoothing 0.1 and PCA onto "
            "256 components (epsilon 0.01), `all (zca)` the same with ZCA whitening instead "
            "of PCA.", "", *rows])
        print(f"written to {write_section(args.section, body)}")


if __name__ == "__main__":
    main()
