"""The evaluation report: one self-contained HTML page (plots inline as base64 PNG, no external assets).

Plots are drawn on ``matplotlib.figure.Figure`` objects rendered by the Agg canvas chosen here in code:
pyplot (and its process-wide backend selection and figure registry) is never imported, so nothing depends
on ``MPLBACKEND`` or a display, and concurrent renders cannot share state.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline_core.stages.lineage import ColumnRow

# Small figures at a low dpi keep a report of a few hundred rows well under a second and under ~100 KB.
_FIGSIZE = (4.6, 3.6)
_DPI = 80
# A scatter of every row of a large test set costs seconds and shows nothing more than a sample does.
_MAX_SCATTER_POINTS = 5000
# Past this many classes, per-cell counts in the confusion matrix become unreadable.
_MAX_ANNOTATED_CLASSES = 15
_MAX_TICK_LABEL = 18


@dataclass(frozen=True)
class RocCurve:
    """A binary classifier's ROC curve for ``positive_label``."""

    positive_label: str
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


@dataclass(frozen=True)
class ClassificationView:
    """What the classification plots need: class labels, the confusion matrix (rows actual), a ROC curve."""

    labels: list[str]
    matrix: np.ndarray
    roc: RocCurve | None = None


@dataclass(frozen=True)
class RegressionView:
    """What the regression plots need: actual and predicted values and a residual summary."""

    y_true: np.ndarray
    y_pred: np.ndarray
    residual_summary: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ColumnTable:
    """Each column's role and why, and the rows left out of training by reason."""

    rows: Sequence[ColumnRow] = ()
    dropped_rows: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportInput:
    """Everything the report shows; every string in it is escaped when rendered."""

    title: str
    summary: Sequence[tuple[str, str]]
    target: str
    primary_metric: str
    test_metrics: Mapping[str, float]
    validation_metrics: Mapping[str, float | None]
    passed: bool
    reason: str
    view: ClassificationView | RegressionView
    columns: ColumnTable = field(default_factory=ColumnTable)


def roc_curve(y_positive: np.ndarray, score: np.ndarray, positive_label: str) -> RocCurve | None:
    """The ROC curve of ``score`` for the boolean truth ``y_positive``; None when one class is absent."""
    y = np.asarray(y_positive, dtype=bool)
    s = np.asarray(score, dtype=float)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0 or not np.all(np.isfinite(s)):
        return None
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # one point per distinct score, so tied scores do not draw a staircase
    last_of_each_score = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    true_positives = np.cumsum(y)[last_of_each_score]
    false_positives = last_of_each_score + 1 - true_positives
    tpr = np.r_[0.0, true_positives / positives]
    fpr = np.r_[0.0, false_positives / negatives]
    return RocCurve(positive_label, fpr, tpr, float(np.trapezoid(tpr, fpr)))


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _plot_text(label: str) -> str:
    """A label safe for matplotlib: '$' would start mathtext (and can raise), long labels are cut."""
    text = label if len(label) <= _MAX_TICK_LABEL else label[: _MAX_TICK_LABEL - 1] + "…"
    return text.replace("$", r"\$")


def _new_figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=_FIGSIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _png_data_uri(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def confusion_matrix_png(view: ClassificationView, target: str) -> str:
    """The confusion matrix (counts, actual on rows, predicted on columns) as a PNG data URI."""
    figure, axes = _new_figure()
    matrix = view.matrix
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    ticks = range(len(view.labels))
    names = [_plot_text(label) for label in view.labels]
    axes.set_xticks(ticks, names, rotation=45 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center")
    axes.set_yticks(ticks, names)
    axes.set_xlabel(f"predicted {_plot_text(target)}")
    axes.set_ylabel(f"actual {_plot_text(target)}")
    axes.set_title("Confusion matrix (test set)")
    if len(view.labels) <= _MAX_ANNOTATED_CLASSES:
        high = matrix.max() if matrix.size else 0
        for (row, column), count in np.ndenumerate(matrix):
            colour = "white" if high and count > high / 2 else "black"
            axes.text(column, row, str(int(count)), ha="center", va="center", color=colour, fontsize=9)
    return _png_data_uri(figure)


def roc_png(roc: RocCurve) -> str:
    """The ROC curve with the chance diagonal as a PNG data URI."""
    figure, axes = _new_figure()
    axes.plot(roc.fpr, roc.tpr, drawstyle="default", label=f"AUC {roc.auc:.3f}")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(f"ROC, positive class {_plot_text(roc.positive_label)}")
    axes.legend(loc="lower right")
    return _png_data_uri(figure)


def _sample(view: RegressionView) -> tuple[np.ndarray, np.ndarray]:
    if view.y_true.size <= _MAX_SCATTER_POINTS:
        return view.y_true, view.y_pred
    keep = np.random.default_rng(0).choice(view.y_true.size, _MAX_SCATTER_POINTS, replace=False)
    return view.y_true[keep], view.y_pred[keep]


def predicted_vs_actual_png(view: RegressionView, target: str) -> str:
    """Predicted against actual values with the y = x line as a PNG data URI."""
    figure, axes = _new_figure()
    actual, predicted = _sample(view)
    axes.scatter(actual, predicted, s=10, alpha=0.6, edgecolors="none")
    low = float(min(actual.min(), predicted.min()))
    high = float(max(actual.max(), predicted.max()))
    axes.plot([low, high], [low, high], color="crimson", linewidth=1, label="y = x")
    axes.set_xlabel(f"actual {_plot_text(target)}")
    axes.set_ylabel(f"predicted {_plot_text(target)}")
    title = "Predicted vs actual (test set)"
    if actual.size < view.y_true.size:
        title += f", {actual.size} of {view.y_true.size} points"
    axes.set_title(title)
    axes.legend(loc="upper left")
    return _png_data_uri(figure)


def residual_histogram_png(view: RegressionView) -> str:
    """A histogram of residuals (actual - predicted) as a PNG data URI."""
    figure, axes = _new_figure()
    residuals = view.y_true - view.y_pred
    axes.hist(residuals, bins=min(40, max(10, int(math.sqrt(residuals.size)))), color="steelblue")
    axes.axvline(0, color="crimson", linewidth=1)
    axes.set_xlabel("residual (actual - predicted)")
    axes.set_ylabel("rows")
    axes.set_title("Residuals (test set)")
    return _png_data_uri(figure)


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.4f}"


def _metrics_table(primary: str, test: Mapping[str, float], validation: Mapping[str, float | None]) -> str:
    names = list(test) + [name for name in validation if name not in test]
    rows = []
    for name in names:
        css = ' class="primary"' if name == primary else ""
        rows.append(
            f"<tr{css}><th>{_e(name)}</th><td>{_number(test.get(name))}</td>"
            f"<td>{_number(validation.get(name))}</td></tr>"
        )
    return (
        "<table><thead><tr><th>metric</th><th>test</th><th>validation</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _per_class_table(view: ClassificationView) -> str:
    matrix = view.matrix
    rows = []
    for index, label in enumerate(view.labels):
        support = int(matrix[index].sum())
        predicted = int(matrix[:, index].sum())
        correct = int(matrix[index, index])
        recall = correct / support if support else float("nan")
        precision = correct / predicted if predicted else float("nan")
        rows.append(
            f"<tr><th>{_e(label)}</th><td>{support}</td><td>{_number(precision)}</td><td>{_number(recall)}</td></tr>"
        )
    return (
        "<table><thead><tr><th>class</th><th>test rows</th><th>precision</th><th>recall</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _columns_section(columns: ColumnTable) -> str:
    if not columns.rows:
        return ""
    rows = "".join(
        f"<tr><td>{_e(row.name)}</td><td>{_e(row.role)}</td><td>{_e(row.reason)}</td>"
        f"<td>{'' if row.missing is None else row.missing}</td></tr>"
        for row in columns.rows
    )
    dropped = (
        "<ul>" + "".join(f"<li>{_e(reason)}: {count}</li>" for reason, count in columns.dropped_rows.items()) + "</ul>"
        if columns.dropped_rows
        else "<p>none</p>"
    )
    return (
        "<h2>Columns</h2><table><thead><tr><th>column</th><th>role</th><th>why</th><th>missing</th></tr></thead>"
        f"<tbody>{rows}</tbody></table><h3>Rows dropped</h3>{dropped}"
    )


def _image(uri: str, alt: str) -> str:
    return f'<figure><img src="{uri}" alt="{_e(alt)}"></figure>'


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}th,td{padding:.25rem .75rem;border-bottom:1px solid #eee;text-align:left}
td{font-variant-numeric:tabular-nums}tr.primary{font-weight:bold;background:#f4f8ff}
.gate{padding:.75rem 1rem;border-radius:.4rem}.passed{background:#e7f6ea;border:1px solid #7c7}
.rejected{background:#fdecea;border:1px solid #e88}figure{display:inline-block;margin:.5rem}
"""


def render_report(report: ReportInput) -> str:
    """The report as a complete HTML document; every caller-provided string is HTML-escaped."""
    summary_rows = "".join(f"<tr><th>{_e(key)}</th><td>{_e(value)}</td></tr>" for key, value in report.summary)
    decision = "passed" if report.passed else "rejected"
    plots: list[str] = []
    details = ""
    view = report.view
    if isinstance(view, ClassificationView):
        plots.append(_image(confusion_matrix_png(view, report.target), "confusion matrix"))
        if view.roc is not None:
            plots.append(_image(roc_png(view.roc), "ROC curve"))
        details = f"<h2>Per class</h2>{_per_class_table(view)}"
    else:
        plots.append(_image(predicted_vs_actual_png(view, report.target), "predicted vs actual"))
        plots.append(_image(residual_histogram_png(view), "residual histogram"))
        residual_rows = "".join(
            f"<tr><th>{_e(key)}</th><td>{_number(value)}</td></tr>" for key, value in view.residual_summary.items()
        )
        details = f"<h2>Residuals</h2><table><tbody>{residual_rows}</tbody></table>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(report.title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_e(report.title)}</h1>"
        f"<table><tbody>{summary_rows}</tbody></table>"
        f'<h2>Quality gate</h2><p class="gate {decision}"><strong>{decision}</strong>: {_e(report.reason)}</p>'
        f"<h2>Metrics</h2>{_metrics_table(report.primary_metric, report.test_metrics, report.validation_metrics)}"
        f"{_columns_section(report.columns)}"
        f"<h2>Plots</h2>{''.join(plots)}"
        f"{details}"
        "</body></html>\n"
    )
