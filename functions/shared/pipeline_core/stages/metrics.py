"""The quality gate's metrics, computed by Evaluate from a trainer's ``test_predictions.csv``.

Any trainer that writes ``y_true``, ``y_pred`` (and ``proba_<label>`` columns) is measured the same way, so
``metrics.json`` is optional and a trainer cannot grade itself. numpy only (no scikit-learn in the Lambda);
the definitions are scikit-learn's: macro averages over the labels that occur in ``y_true`` or ``y_pred``,
a precision or recall with nothing to divide by is 0, ROC AUC from average ranks (ties share their rank),
R² of constant truth is 1 for a perfect fit and 0 otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

CLASSIFICATION_METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro")
REGRESSION_METRICS = ("r2", "rmse", "mae")


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    safe = np.where(denominator > 0, denominator, 1)
    return np.where(denominator > 0, numerator / safe, 0.0)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """accuracy and the macro-averaged f1, precision and recall of string labels."""
    labels = np.union1d(y_true, y_pred)
    truth = y_true[:, None] == labels[None, :]
    predicted = y_pred[:, None] == labels[None, :]
    tp = (truth & predicted).sum(axis=0).astype(float)
    fp = (~truth & predicted).sum(axis=0).astype(float)
    fn = (truth & ~predicted).sum(axis=0).astype(float)
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "f1_macro": float(np.mean(_ratio(2 * tp, 2 * tp + fp + fn))),
        "precision_macro": float(np.mean(_ratio(tp, tp + fp))),
        "recall_macro": float(np.mean(_ratio(tp, tp + fn))),
    }


def roc_auc(is_positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U over average ranks); None if it is undefined (one class
    only, or a score that is not a finite number)."""
    positives = int(is_positive.sum())
    negatives = len(is_positive) - positives
    if positives == 0 or negatives == 0 or not np.all(np.isfinite(scores)):
        return None
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    u = ranks[is_positive].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """r2, rmse and mae."""
    residuals = y_true - y_pred
    ss_res = float(np.sum(residuals**2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    r2 = (1.0 if ss_res == 0 else 0.0) if ss_tot == 0 else 1.0 - ss_res / ss_tot
    return {
        "r2": r2,
        "rmse": math.sqrt(ss_res / len(y_true)),
        "mae": float(np.mean(np.abs(residuals))),
    }
