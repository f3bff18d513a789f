"""Results as a notebook shows them: the seed's figures (training curves, confusion matrix,
classification report) and the report's page as HTML with the images embedded, and as plain
text wherever HTML is not shown. Jupyter calls ``_repr_html_``; nothing here is written to disk.
"""

from __future__ import annotations

import base64
import html
import io
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from objectives.record import Key

# The files a trained model leaves (objectives/figures.py), in the order they are shown.
IMAGES = (("training curves", "curves.png"), ("confusion matrix", "confusion_matrix.png"))
TEXTS = (("classification report", "classification_report.txt"),)


def png(figure: Any) -> bytes:
    """A matplotlib figure as PNG bytes (100 dpi); the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def img(data: bytes, alt: str) -> str:
    """An ``<img>`` holding the PNG ``data`` itself."""
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


@dataclass(frozen=True)
class Figures:
    """One trained model's figures: a table of its numbers, its images and its texts."""

    title: str
    numbers: dict[str, str] = field(default_factory=dict)
    images: list[tuple[str, bytes]] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                       f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
                       for k, v in self.numbers.items())
        parts = [f"<h4>{html.escape(self.title)}</h4>"]
        if rows:
            parts.append(f"<table>{rows}</table>")
        parts += [img(data, caption) for caption, data in self.images]
        parts += [f"<pre>{html.escape(text)}</pre>" for _, text in self.texts]
        return "<div>" + "\n".join(parts) + "</div>"

    def __repr__(self) -> str:
        lines = [self.title] + [f"  {k}: {v}" for k, v in self.numbers.items()]
        lines += [f"  [{caption}: a PNG image, shown in a notebook]" for caption, _ in self.images]
        for _, text in self.texts:
            lines += ["", text.rstrip()]
        return "\n".join(lines)


def _shown(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def from_folder(title: str, folder: Path, numbers: dict[str, Any]) -> Figures:
    """The figures a trained model left in ``folder`` (those that are there)."""
    return Figures(
        title=title, numbers={k: _shown(v) for k, v in numbers.items()},
        images=[(caption, (folder / name).read_bytes()) for caption, name in IMAGES
                if (folder / name).is_file()],
        texts=[(caption, (folder / name).read_text(encoding="utf-8")) for caption, name in TEXTS
               if (folder / name).is_file()])


# A trial's numbers worth a glance: its last metrics (named as Keras names them) and record.
TRIAL_NUMBERS = ("train_accuracy", "val_accuracy", "val_loss", Key.TEST_ACCURACY, Key.N_PARAMS,
                 Key.EPOCHS_RUN, Key.BEST_EPOCH, Key.SECONDS_PER_EPOCH, Key.PREDICTED_EPOCH_SECONDS,
                 Key.STOP_REASON)


def of_trial(study: optuna.Study, trial: FrozenTrial, store: Any | None) -> Figures:
    """A search trial's figures: those its training left in the artifact store (validation
    split), or, where the store holds none, its curves drawn from the recorded history."""
    from search.artifacts.dashboard_listing import artifacts_of, read_artifact

    numbers = {"state": trial.state.name.lower(),
               **{key: trial.user_attrs[key] for key in TRIAL_NUMBERS if key in trial.user_attrs},
               **{f"param {name}": value for name, value in trial.params.items()}}
    title = f"study {study.study_name}, trial {trial.number}"
    if trial.user_attrs.get(Key.LABEL):
        title += f" ({trial.user_attrs[Key.LABEL]})"
    stored = {meta.get("filename"): meta.get("artifact_id") for meta in
              (artifacts_of(study, trial) if store is not None else [])}
    with tempfile.TemporaryDirectory(prefix="hpsearch-figures-") as scratch:
        folder = Path(scratch)
        for _, name in (*IMAGES, *TEXTS):
            if stored.get(name):
                try:
                    (folder / name).write_bytes(read_artifact(store, str(stored[name])))
                except (OSError, KeyError, optuna.exceptions.OptunaError):
                    pass  # removed from the store since: drawn below where it can be
        if not (folder / "curves.png").exists():
            drawn = curves_png(trial)
            if drawn is not None:
                (folder / "curves.png").write_bytes(drawn)
        return from_folder(title, folder, numbers)


def curves_png(trial: FrozenTrial) -> bytes | None:
    """A trial's training curves drawn from its recorded history; None without one."""
    history = trial.user_attrs.get(Key.HISTORY)
    if not (isinstance(history, dict) and history.get("loss")):
        return None
    from objectives.figures import plot_curves

    best = trial.user_attrs.get(Key.BEST_EPOCH)
    with tempfile.TemporaryDirectory(prefix="hpsearch-curves-") as scratch:
        return plot_curves(history, Path(scratch) / "curves.png",
                           best_epoch=best if isinstance(best, int) else None,
                           title=f"trial {trial.number}").read_bytes()


_SCRIPT = re.compile(r"<script\b.*?</script>", re.S | re.I)
_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.S | re.I)


def page_body(page: str) -> str:
    """An HTML page's body without its scripts: what a notebook shows of the report (its
    styles and sorting script belong to the page, not to the notebook around it)."""
    found = _BODY.search(page)
    return "<div>" + _SCRIPT.sub("", found.group(1) if found else page) + "</div>"
