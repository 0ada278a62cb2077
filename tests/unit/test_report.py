"""The HTML evaluation report: inline PNG plots, escaping, and the ROC curve against scikit-learn's."""

from __future__ import annotations

import base64
import re
import struct

import numpy as np
import pytest
from pipeline_core.stages.report import (
    ClassificationView,
    RegressionView,
    ReportInput,
    render_report,
    roc_curve,
)
from sklearn import datasets, metrics
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def images(page: str) -> list[bytes]:
    """The PNGs inlined in ``page`` as data URIs."""
    return [base64.b64decode(data) for data in re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)]


def png_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk follows the signature
    return width, height


def report(view: ClassificationView | RegressionView, **overrides: object) -> ReportInput:
    fields: dict[str, object] = {
        "title": "stepml evaluation: test",
        "summary": [("model", "test")],
        "target": "y",
        "primary_metric": "f1_macro",
        "test_metrics": {"f1_macro": 0.9, "accuracy": 0.91},
        "validation_metrics": {"f1_macro": 0.88, "accuracy": None},
        "passed": True,
        "reason": "f1_macro 0.9000 ≥ threshold 0.6000",
        "view": view,
    }
    return ReportInput(**{**fields, **overrides})


@pytest.fixture(scope="module")
def cancer_scores() -> tuple[np.ndarray, np.ndarray]:
    x, y = datasets.load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x[::2], y[::2])
    # rounding creates tied scores, which a ROC curve must treat as one threshold
    return y[1::2] == 1, np.round(model.predict_proba(x[1::2])[:, 1], 2)


def test_roc_curve_matches_scikit_learn(cancer_scores: tuple[np.ndarray, np.ndarray]) -> None:
    truth, scores = cancer_scores
    roc = roc_curve(truth, scores, "benign")
    assert roc is not None
    fpr, tpr, _ = metrics.roc_curve(truth, scores, drop_intermediate=False)
    np.testing.assert_allclose(roc.fpr, fpr)
    np.testing.assert_allclose(roc.tpr, tpr)
    assert roc.auc == pytest.approx(metrics.roc_auc_score(truth, scores))


def test_roc_curve_needs_both_classes_and_finite_scores() -> None:
    assert roc_curve(np.array([True, True]), np.array([0.2, 0.9]), "a") is None
    assert roc_curve(np.array([True, False]), np.array([np.nan, 0.9]), "a") is None


def test_classification_report_with_roc(cancer_scores: tuple[np.ndarray, np.ndarray]) -> None:
    truth, scores = cancer_scores
    predicted = scores >= 0.5
    matrix = metrics.confusion_matrix(truth, predicted)
    view = ClassificationView(["malignant", "benign"], matrix, roc_curve(truth, scores, "benign"))
    page = render_report(report(view))
    pngs = images(page)
    assert len(pngs) == 2
    assert all(png_size(png) == (368, 288) for png in pngs)  # 4.6 x 3.6 inches at 80 dpi
    assert 'alt="confusion matrix"' in page and 'alt="ROC curve"' in page
    # per-class table from the matrix: support of "benign" is the number of true positives + false negatives
    assert f"<th>benign</th><td>{int(truth.sum())}</td>" in page
    assert "<td>n/a</td>" in page  # validation accuracy was None


def test_many_classes_and_mathtext_characters_render() -> None:
    labels = [f"${i} & <{i}>" for i in range(25)]
    matrix = np.random.default_rng(0).integers(0, 9, size=(25, 25))
    page = render_report(report(ClassificationView(labels, matrix), target="price in $"))
    assert len(images(page)) == 1
    assert "&lt;3&gt;" in page and "<3>" not in page


def test_everything_caller_provided_is_escaped() -> None:
    hostile = '<script>alert("x")</script>'
    view = RegressionView(np.arange(20.0), np.arange(20.0) + 0.5, {hostile: 1.0})
    page = render_report(
        report(
            view,
            title=hostile,
            summary=[(hostile, hostile)],
            target=hostile,
            primary_metric=hostile,
            test_metrics={hostile: 0.5},
            validation_metrics={},
            passed=False,
            reason=hostile,
        )
    )
    assert "<script>" not in page
    assert page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") >= 6
    assert 'class="gate rejected"' in page


def test_large_regression_is_sampled_for_the_scatter() -> None:
    rng = np.random.default_rng(1)
    actual = rng.normal(size=50_000)
    view = RegressionView(actual, actual + rng.normal(scale=0.1, size=actual.size))
    page = render_report(report(view, primary_metric="r2", test_metrics={"r2": 0.99}, validation_metrics={}))
    pngs = images(page)
    assert len(pngs) == 2 and all(png_size(png) == (368, 288) for png in pngs)
