"""``hpsearch report``: a study as a self-contained HTML page and a Markdown table.

The page holds the comparison table of every trial (sortable by any column, hand-built
experiments marked), the optimization history, hyperparameter importances from Optuna's
evaluators, and the best trial's training curves, confusion matrix and classification report.
Images are embedded as data URIs, so the one file can be mailed.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.record import Key, evaluations, maximizes
from search.artifacts.dashboard_listing import artifacts_of, read_artifact
from search.results import fronts
from search.results.display import curves_png, img, png
from search.results.tables import trials_rows
from search.studies import STUDY_ATTR

logger = logging.getLogger(__name__)

TABLE_COLUMNS = ("number", "label", "state", "value", "train_accuracy", "train_loss",
                 "val_accuracy", "val_loss", "test_accuracy", "test_loss",
                 "evaluated_test_accuracy",
                 "n_params", "epochs", "seconds", Key.SECONDS_PER_EPOCH,
                 Key.PREDICTED_EPOCH_SECONDS, "ended", "resumes")


@dataclass(frozen=True)
class Report:
    html_path: Path
    markdown_path: Path
    figures: list[str]
    rows: int

    def _repr_html_(self) -> str:
        """The report as a notebook shows it: the page's body, its figures embedded."""
        from search.results.display import page_body

        return page_body(self.html_path.read_text(encoding="utf-8"))

    def __repr__(self) -> str:
        return f"Report({str(self.html_path)!r}, {self.rows} trials, {len(self.figures)} figures)"


def history_figure(study: optuna.Study) -> bytes | None:
    """Each complete trial's value, the best so far, and the hand-built experiments marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = [(t, value) for t in study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE,))
        if (value := fronts.metric_value(study, t)) is not None and math.isfinite(value)]
    if not complete:
        return None
    maximize = _maximize(study)
    figure, axis = plt.subplots(figsize=(9, 4))
    axis.scatter([t.number for t, _ in complete], [v for _, v in complete], s=18,
                 label="trial", color="tab:blue")
    best: float | None = None
    xs, ys = [], []
    for trial, value in sorted(complete, key=lambda pair: pair[0].number):
        if best is None or (value > best if maximize else value < best):
            best = value
        xs.append(trial.number)
        ys.append(best)
    axis.step(xs, ys, where="post", color="tab:red", label="best so far")
    hand = [(t, v) for t, v in complete if t.user_attrs.get(Key.LABEL)]
    if hand:
        axis.scatter([t.number for t, _ in hand], [v for _, v in hand], marker="*", s=140,
                     color="tab:orange", label="hand-built", zorder=3)
        for trial, value in hand:
            axis.annotate(str(trial.user_attrs[Key.LABEL]), (trial.number, value),
                          textcoords="offset points", xytext=(6, -10), fontsize=8)
    metric = _metric(study)
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("trial")
    axis.set_ylabel(str(metric))
    axis.set_title("optimization history")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return png(figure)


def _maximize(study: optuna.Study) -> bool:
    """Whether the validation metric is maximized."""
    return maximizes(study, fronts.metric_index(study))


def pareto_figure(study: optuna.Study) -> bytes | None:
    """Optuna's own Pareto-front plot of a study of two or three objectives."""
    import matplotlib
    import matplotlib.figure

    matplotlib.use("Agg")
    if not fronts.multi_objective(study) or len(study.directions) > 3 \
            or not fronts.complete_values(study):
        return None
    with warnings.catch_warnings():  # "experimental" in Optuna's matplotlib backend
        warnings.simplefilter("ignore")
        axis = optuna.visualization.matplotlib.plot_pareto_front(
            study, target_names=fronts.names(study))
    figure = axis.figure
    assert isinstance(figure, matplotlib.figure.Figure)
    figure.set_size_inches(8, 5)
    figure.tight_layout()
    return png(figure)


def importances(study: optuna.Study) -> dict[str, dict[str, float]]:
    """Parameter importances for the validation metric by evaluator name (fANOVA, PED-ANOVA);
    an evaluator that cannot judge this study (too few trials) is left out."""
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    found: dict[str, dict[str, float]] = {}
    index = fronts.metric_index(study)
    target = (lambda t: t.values[index]) if fronts.multi_objective(study) else None
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return found
    for name, evaluator in (("fANOVA", FanovaImportanceEvaluator(seed=0)),
                            ("PED-ANOVA", PedAnovaImportanceEvaluator())):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found[name] = dict(optuna.importance.get_param_importances(
                    study, evaluator=evaluator, target=target))
        except Exception as exc:  # an evaluator that cannot judge: the report goes on
            logger.debug("importances by %s: %s: %s", name, type(exc).__name__, exc)
    return found


def importance_figure(found: dict[str, dict[str, float]]) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not found:
        return None
    names = sorted({p for values in found.values() for p in values},
                   key=lambda p: -max(values.get(p, 0.0) for values in found.values()))
    figure, axis = plt.subplots(figsize=(9, 0.35 * len(names) + 1.5))
    height = 0.8 / len(found)
    for i, (evaluator, values) in enumerate(found.items()):
        axis.barh(np.arange(len(names)) + i * height, [values.get(p, 0.0) for p in names],
                  height=height, label=evaluator)
    axis.set_yticks(np.arange(len(names)) + height * (len(found) - 1) / 2, names)
    axis.invert_yaxis()
    axis.set_xlabel("importance")
    axis.set_title("hyperparameter importances")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    return png(figure)


def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best feasible trial; of a Pareto front, its member of best validation metric."""
    best = fronts.best_trials(study)
    return best[0] if best else None


def best_trial_section(study: optuna.Study, store: Any) -> tuple[str, list[str]]:
    """The best trial's curves (from its recorded history), confusion matrix and report (from
    its artifacts), and the test figures of its evaluation if any."""
    best = _best_trial(study)
    if best is None:
        return "<p>No complete trial yet.</p>", []
    parts = [f"<h2>Best trial: {best.number}</h2>",
             "<p>" + ", ".join(f"<code>{html.escape(k)}={html.escape(_short(v))}</code>"
                               for k, v in best.params.items()) + "</p>"]
    figures = []
    curves = curves_png(best)
    if curves is not None:
        parts.append(img(curves, "training curves"))
        figures.append("training curves")
    metas = {m["filename"]: m for m in artifacts_of(study, best)} if store is not None else {}
    for filename, title in (("confusion_matrix.png", "confusion matrix (validation)"),
                            ("test_confusion_matrix.png", "confusion matrix (test, evaluated)")):
        if filename in metas:
            try:
                data = read_artifact(store, metas[filename]["artifact_id"])
            except Exception as exc:  # a store that lost a file: say so, keep the report
                parts.append(f"<p>{title}: not readable ({html.escape(str(exc))})</p>")
                continue
            parts.append(f"<h3>{title}</h3>" + img(data, title))
            figures.append(title)
    for filename, title in (("classification_report.txt", "classification report (validation)"),
                            ("test_classification_report.txt",
                             "classification report (test, evaluated)")):
        if filename in metas:
            try:
                text = read_artifact(store, metas[filename]["artifact_id"]).decode("utf-8")
            except Exception as exc:
                parts.append(f"<p>{title}: not readable ({html.escape(str(exc))})</p>")
                continue
            parts.append(f"<h3>{title}</h3><pre>{html.escape(text)}</pre>")
            figures.append(title)
    if "confusion matrix (validation)" not in figures:
        parts.append("<p>No confusion matrix stored for this trial (artifacts off, or another "
                     "store: pass --artifacts).</p>")
    return "\n".join(parts), figures


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


SCRIPT = """
const headers = document.querySelectorAll('table.trials th');
headers.forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const asc = th.dataset.order !== 'asc';
  th.closest('tr').querySelectorAll('th').forEach(h => delete h.dataset.order);
  th.dataset.order = asc ? 'asc' : 'desc';
  const key = r => { const t = r.cells[col].innerText.trim(); const n = parseFloat(t);
    return (t === '' || t === '-' || isNaN(n)) ? t : n; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    if (typeof x === typeof y) return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    return typeof x === 'number' ? -1 : 1; }).forEach(r => body.appendChild(r));
}));
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table.trials { border-collapse: collapse; font-size: 12px; }
table.trials th, table.trials td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
table.trials th { background: #f0f0f0; cursor: pointer; position: sticky; top: 0; }
table.trials th[data-order=asc]::after { content: " \\25B2"; }
table.trials th[data-order=desc]::after { content: " \\25BC"; }
tr.hand td { background: #fff4dc; }
tr.best td { background: #e3f6e3; font-weight: bold; }
.scroll { overflow-x: auto; max-height: 70vh; }
img { max-width: 100%; }
pre { background: #f7f7f7; padding: 1em; }
"""


def write_report(study: optuna.Study, store: Any, output: Path, *, storage_shown: str) -> Report:
    """Write ``report.html`` and ``report.md`` into ``output``; each file appears whole or not
    at all."""
    header, rows = trials_rows(study)
    best = _best_trial(study)
    front = {str(t.number) for t in fronts.best_trials(study)}
    objectives = fronts.names(study) if fronts.multi_objective(study) else []
    # several objectives lead, after number, label and state, by their own names
    leading = [c for c in TABLE_COLUMNS[:3]] + [c for c in objectives if c in header] + [
        c for c in TABLE_COLUMNS[3:] if c in header and c not in objectives]
    shown = leading + [c for c in header if c not in leading]
    index = [header.index(c) for c in shown]
    hand_numbers = {str(t.number) for t in study.get_trials(deepcopy=False)
                    if t.user_attrs.get(Key.LABEL)}
    body_rows = []
    for row in rows:
        classes = []
        if row[0] in hand_numbers:
            classes.append("hand")
        if row[0] in front:
            classes.append("best")
        cells = "".join(f"<td>{html.escape(row[i])}</td>" for i in index)
        body_rows.append(f'<tr class="{" ".join(classes)}">{cells}</tr>')
    figures: list[str] = []
    history = history_figure(study)
    pareto = pareto_figure(study)
    found = importances(study)
    importance = importance_figure(found)
    best_html, best_figures = best_trial_section(study, store)
    sections = []
    if pareto:
        sections.append(
            "<h2>Pareto front</h2><p>Trials that no other trial beats on every objective: "
            + ", ".join(f"trial {t.number} ({html.escape(fronts.values_text(study, t))})"
                        for t in fronts.best_trials(study)) + ".</p>"
            + img(pareto, "Pareto front"))
        figures.append("Pareto front")
    if history:
        sections.append("<h2>Optimization history</h2>" + img(history, "optimization history"))
        figures.append("optimization history")
    if importance:
        sections.append("<h2>Hyperparameter importances</h2>"
                        f"<p>Optuna's {' and '.join(found)} evaluators over the complete "
                        "trials.</p>" + img(importance, "hyperparameter importances"))
        figures.append("hyperparameter importances")
    else:
        sections.append("<h2>Hyperparameter importances</h2><p>Too few complete trials to "
                        "judge importances.</p>")
    figures += best_figures
    try:
        from search.results.compare_view import html_section

        compared, compared_figures = html_section(study)
        sections.append(compared)
        figures += compared_figures
    except Exception as exc:  # the comparison is an addition: the report stands without it
        logger.warning("the comparison section was left out: %s: %s", type(exc).__name__, exc)
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    now = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    best_kind = "the Pareto front's trials" if objectives else "the best trial"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>hpsearch report: {html.escape(study.study_name)}</title><style>{STYLE}</style></head>
<body>
<h1>Study {html.escape(study.study_name)}</h1>
<p>{html.escape(_goals(study))}; {len(rows)} trials ({summary});
storage <code>{html.escape(storage_shown)}</code>; written {now}.</p>
<h2>Trials</h2>
<p>Click a column to sort. <span style="background:#fff4dc">Hand-built experiments</span>
(fixed trials with a label) and <span style="background:#e3f6e3">{best_kind}</span> are
marked. <code>test_accuracy</code> is measured after each trial's training, never used to
select; <code>evaluated_test_accuracy</code> comes from <code>hpsearch evaluate</code>.</p>
<div class="scroll"><table class="trials"><thead><tr>
{"".join(f"<th>{html.escape(c)}</th>" for c in shown)}
</tr></thead><tbody>
{chr(10).join(body_rows)}
</tbody></table></div>
{chr(10).join(sections)}
{best_html}
<script>{SCRIPT}</script>
</body></html>
"""
    output.mkdir(parents=True, exist_ok=True)
    html_path, markdown_path = output / "report.html", output / "report.md"
    _write_atomic(html_path, page)
    _write_atomic(markdown_path, _markdown(study, shown, index, rows, best))
    return Report(html_path=html_path, markdown_path=markdown_path, figures=figures,
                  rows=len(rows))


def _goals(study: optuna.Study) -> str:
    """``maximize val_accuracy, minimize n_params``."""
    return ", ".join(f"{direction} {name}" for name, direction in fronts.summary(study).items())


def _metric(study: optuna.Study) -> str:
    stored = study.user_attrs.get(STUDY_ATTR, {})
    return str(stored.get("fingerprint", {}).get("metric", "value"))


def _markdown(study: optuna.Study, shown: list[str], index: list[int], rows: list[list[str]],
              best: FrozenTrial | None) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [f"# Study {study.study_name}", ""]
    if fronts.multi_objective(study):
        lines += ["Pareto front (" + _goals(study) + "): " + "; ".join(
            f"trial {t.number} ({fronts.values_text(study, t)})"
            for t in fronts.best_trials(study)) + ".", ""]
    elif best is not None:
        lines += [f"Best: trial {best.number}, {_metric(study)} {best.value:.4f}.", ""]
    evaluated = evaluations(study)
    for number, record in sorted(evaluated.items()):
        lines += [f"Trial {number} evaluated (retrained on {record['mode']}): test accuracy "
                  f"{record['test_accuracy']:.4f}, test loss {record['test_loss']:.4f}.", ""]
    lines += [line(shown), line(["---"] * len(shown))]
    lines += [line([row[i] for i in index]) for row in rows]
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o666 & ~umask)  # as a plain open() would have made it
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise

