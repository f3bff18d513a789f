"""The figures people look at after training: training curves and a confusion matrix, as PNG.

Drawn with matplotlib's Agg backend (no display needed), small enough to store per trial.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only: workers have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

if TYPE_CHECKING:
    from objectives.evaluation import Evaluation

DPI = 100


def lr_reductions(learning_rates: list[float]) -> list[int]:
    """The 1-based epochs that trained at a lower learning rate than the epoch before."""
    return [i + 1 for i in range(1, len(learning_rates))
            if math.isfinite(learning_rates[i]) and learning_rates[i] < learning_rates[i - 1]]


def plot_curves(history: dict[str, list[float]], path: Path, *, best_epoch: int | None,
                title: str) -> Path:
    """Accuracy and loss per epoch, train and validation, with the best epoch and the
    learning-rate reductions marked."""
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=DPI)
    for axis, metric in zip(axes, ("accuracy", "loss")):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            values = history.get(key, [])
            if values:
                axis.plot(epochs[: len(values)], values, marker="o", markersize=3, label=label)
        if best_epoch is not None:
            axis.axvline(best_epoch, color="tab:green", linestyle="--", linewidth=1,
                         label=f"best epoch {best_epoch}")
        for n, epoch in enumerate(lr_reductions(history.get("learning_rate", []))):
            axis.axvline(epoch - 0.5, color="tab:red", linestyle=":", linewidth=1,
                         label="learning rate reduced" if n == 0 else None)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_confusion(matrix: np.ndarray, class_names: tuple[str, ...], path: Path, *,
                   title: str) -> Path:
    """The confusion matrix with counts in each cell, rows true and columns predicted."""
    n = len(class_names)
    size = max(5.0, 0.55 * n + 2)
    figure, axis = plt.subplots(figsize=(size, size * 0.9), dpi=DPI)
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    axis.set_xticks(range(n), class_names, rotation=45, ha="right")
    axis.set_yticks(range(n), class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    if n <= 20:
        for i in range(n):
            for j in range(n):
                axis.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                          color="white" if matrix[i, j] > threshold else "black")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def write_figures(folder: Path, history: dict[str, list[float]], best_index: int | None,
                  evaluation: Evaluation | None, *, title: str, heading: str) -> list[Path]:
    """What one trained model leaves for people: ``curves.png`` and, with an evaluation,
    ``confusion_matrix.png`` and ``classification_report.txt``, titled ``title`` (the curves)
    and ``heading`` (the evaluation's split and run)."""
    paths = [plot_curves(history, folder / "curves.png",
                         best_epoch=None if best_index is None else best_index + 1, title=title)]
    if evaluation is None:
        return paths
    paths.append(plot_confusion(evaluation.confusion, evaluation.class_names,
                                folder / "confusion_matrix.png",
                                title=f"{heading}: accuracy {evaluation.accuracy:.4f}"))
    report = folder / "classification_report.txt"
    report.write_text(f"{heading}\n\n{evaluation.report_text}", encoding="utf-8")
    return [*paths, report]
