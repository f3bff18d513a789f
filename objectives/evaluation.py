"""What a trained model gets right and wrong on one split: accuracy, loss, the confusion matrix
and the per-class classification report (precision, recall, F1, with class names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix

from objectives.callbacks import StopOnRequest
from objectives.keras_setup import keras

PREDICT_BATCH = 1024


@dataclass(frozen=True)
class Evaluation:
    """One model on one split."""

    split: str
    accuracy: float
    loss: float
    confusion: np.ndarray  # rows: true class, columns: predicted class
    report: dict[str, Any]  # sklearn's classification_report(output_dict=True)
    report_text: str
    class_names: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        """The figures worth keeping as JSON."""
        return {
            "split": self.split,
            "accuracy": round(self.accuracy, 6),
            "loss": round(self.loss, 6),
            "macro_f1": round(float(self.report["macro avg"]["f1-score"]), 6),
            "confusion_matrix": self.confusion.tolist(),
            "class_names": list(self.class_names),
            "classification_report": self.report,
        }


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, class_names: tuple[str, ...],
             split: str) -> Evaluation:
    """Predict ``x`` once and derive every figure from those predictions."""
    probabilities = np.asarray(model.predict(x, batch_size=PREDICT_BATCH, verbose=0,
                                             callbacks=[StopOnRequest()]))
    predicted = probabilities.argmax(axis=1)
    labels = list(range(len(class_names)))
    picked = np.clip(probabilities[np.arange(len(y)), y], 1e-7, 1.0)
    report = classification_report(y, predicted, labels=labels, target_names=list(class_names),
                                   output_dict=True, zero_division=0)
    text = classification_report(y, predicted, labels=labels, target_names=list(class_names),
                                 digits=4, zero_division=0)
    return Evaluation(
        split=split,
        accuracy=float(np.mean(predicted == y)),
        loss=float(-np.mean(np.log(picked))),
        confusion=confusion_matrix(y, predicted, labels=labels),
        report=report,  # type: ignore[arg-type]
        report_text=str(text),
        class_names=class_names,
    )
