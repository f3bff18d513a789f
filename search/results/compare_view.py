"""``hpsearch compare`` and the report's "What the trials say": the answers of
``search.results.compare`` as terminal tables, and as an HTML section with its plots (each group's
best validation curve overlaid, the gap against dropout and L2, and Optuna's own slice,
contour, rank and parallel-coordinate plots)."""

from __future__ import annotations

import html
import logging
import warnings
from typing import Any

import optuna
from rich.console import Console
from rich.table import Table

from search.results import fronts
from search.results.compare import MIN_TRIALS, Answers, Comparison, answers
from search.results.display import img, png

logger = logging.getLogger(__name__)

HEADER = ("value", "trials", "best", "median", "epochs to 95 % (median)",
          "gap at best epoch (median)")


def rows(comparison: Comparison, maximize: bool) -> list[list[str]]:
    """A comparison's table rows, as both views show them."""
    def fmt(value: float | None, pattern: str) -> str:
        return "-" if value is None else format(value, pattern)

    return [[group.label, str(group.n), fmt(group.best(maximize), ".4f"),
             fmt(group.median, ".4f"), fmt(group.median_to_95, "g"),
             fmt(group.median_gap, "+.4f")] for group in comparison.groups]


def _savings_text(found: Answers) -> str:
    saved = found.savings
    if saved is None:
        return ""
    return (f"epochs trained: {saved.trained}; early stopping saved {saved.early_stopping} "
            f"(of {saved.early_stopped} trials' budgets), pruning saved {saved.pruning} (of "
            f"{saved.pruned} trials')")


def print_answers(study: optuna.Study, console: Console) -> None:
    found = answers(study)
    console.print(f"study {study.study_name}: {found.complete} complete trials compared by "
                  f"{found.metric} (a group needs {MIN_TRIALS} complete trials to be compared)",
                  markup=False, highlight=False)
    for comparison in found.comparisons:
        table = Table(title=comparison.parameter)
        for column in HEADER:
            table.add_column(column, no_wrap=True)
        for row in rows(comparison, found.maximize):
            table.add_row(*row)
        console.print(table)
        console.print(comparison.statement, markup=False, highlight=False)
    for item in found.regularization:
        console.print(item.statement, markup=False, highlight=False)
    console.print(_savings_text(found), markup=False, highlight=False)


def _curves_figure(comparison: Comparison, metric: str, maximize: bool) -> Any:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.5))
    for group in comparison.groups:
        best = group.best_trial(maximize)
        curve = best.user_attrs.get("history", {}).get(metric, [])
        if curve:
            axis.plot(range(1, len(curve) + 1), curve,
                      label=f"{group.label} (trial {best.number})")
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel(metric)
    axis.set_title(f"{comparison.parameter}: each value's best trial")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def _gap_figure(found: Answers) -> Any:
    import matplotlib.pyplot as plt

    items = [item for item in found.regularization if item.points]
    if not items:
        return None
    figure, axes = plt.subplots(1, len(items), figsize=(4.5 * len(items), 3.5), squeeze=False)
    for axis, item in zip(axes[0], items):
        axis.scatter([x for x, _ in item.points], [g for _, g in item.points], s=14)
        if item.parameter == "l2":
            axis.set_xscale("log")
        axis.set_xlabel(item.parameter)
        axis.set_ylabel("train - validation accuracy")
        axis.grid(alpha=0.3)
        axis.set_title(f"gap against {item.parameter}")
    figure.tight_layout()
    return figure


def _optuna_figures(study: optuna.Study) -> list[tuple[str, Any]]:
    """Optuna's own plots of the validation metric; one that cannot be drawn is left out."""
    import optuna.visualization.matplotlib as plots

    index = fronts.metric_index(study)
    several = fronts.multi_objective(study)
    target = (lambda t: t.values[index]) if several else None
    name = fronts.names(study)[index]
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:  # Optuna would draw them empty
        return []
    present = {p for t in complete for p in t.params}
    wanted: tuple[str, ...] = ("learning_rate", "units_l0", "dropout", "n_layers")
    key = [p for p in wanted if p in present][:3]
    found: list[tuple[str, Any]] = []
    for title, draw in (
            ("slice", lambda: plots.plot_slice(study, target=target, target_name=name)),
            ("contour", lambda: plots.plot_contour(study, params=key, target=target,
                                                   target_name=name)),
            ("rank", lambda: plots.plot_rank(study, params=key, target=target,
                                             target_name=name)),
            ("parallel coordinates", lambda: plots.plot_parallel_coordinate(
                study, target=target, target_name=name))):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                drawn = draw()
        except Exception as exc:  # too few trials or parameters for this plot
            logger.debug("Optuna's %s plot: %s: %s", title, type(exc).__name__, exc)
            continue
        axis = drawn.flat[0] if hasattr(drawn, "flat") else drawn
        found.append((title, axis.figure))
    return found


def html_section(study: optuna.Study) -> tuple[str, list[str]]:
    """The report's section and the names of its figures."""
    import matplotlib

    matplotlib.use("Agg")
    parts, figures = _answers_parts(answers(study))
    optuna_figures = _optuna_figures(study)
    if optuna_figures:
        parts.append("<h3>Optuna's plots</h3>")
        for title, figure in optuna_figures:
            parts.append(f"<h4>{title}</h4>" + img(png(figure), f"Optuna's {title} plot"))
            figures.append(f"Optuna's {title} plot")
    return "\n".join(parts), figures


def _answers_parts(found: Answers) -> tuple[list[str], list[str]]:
    """The answers as HTML (tables, statements, each value's best curves, the gap plot), and
    the names of the figures drawn."""
    parts = ["<h2>What the trials say</h2>",
             f"<p>{found.complete} complete trials compared by {html.escape(found.metric)}; "
             f"a group needs {MIN_TRIALS} complete trials to be compared, and a difference is "
             "stated only where a Mann-Whitney test finds it (p &lt; 0.05).</p>"]
    figures: list[str] = []
    for comparison in found.comparisons:
        cells = "".join(f"<th>{html.escape(c)}</th>" for c in HEADER)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in rows(comparison, found.maximize))
        parts.append(f"<h3>{html.escape(comparison.parameter)}</h3>"
                     f'<table class="trials"><tr>{cells}</tr>{body}</table>'
                     f"<p>{html.escape(comparison.statement)}</p>")
        if len(comparison.groups) > 1:
            title = f"{comparison.parameter}: best curves"
            parts.append(img(png(_curves_figure(comparison, found.metric, found.maximize)),
                             title))
            figures.append(title)
    if found.regularization:
        parts.append("<h3>Generalization gap against dropout and L2</h3>" + "".join(
            f"<p>{html.escape(item.statement)}</p>" for item in found.regularization))
        gap = _gap_figure(found)
        if gap is not None:
            parts.append(img(png(gap), "gap against dropout and L2"))
            figures.append("gap against dropout and L2")
    parts.append(f"<p>{html.escape(_savings_text(found))}</p>")
    return parts, figures


def answers_html(found: Answers) -> str:
    """``hpsearch compare``'s answers as a notebook shows them, with the report's plots of
    each value's best curves and of the gap."""
    import matplotlib

    matplotlib.use("Agg")
    return "<div>" + "\n".join(_answers_parts(found)[0]) + "</div>"
