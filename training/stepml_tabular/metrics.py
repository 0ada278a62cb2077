"""The contract's metrics (what metrics.json and the gate compare) as plain floats."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)
from stepml_tabular.errors import TrainingDataError

PROBLEM_TYPES = ("binary_classification", "multiclass_classification", "regression")
PRIMARY_METRIC = {
    "binary_classification": "f1_macro",
    "multiclass_classification": "f1_macro",
    "regression": "r2",
}


def compute_metrics(
    problem_type: str, y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None, classes: list[str]
) -> dict[str, float]:
    """The contract's metrics as plain floats."""
    if problem_type == "regression":
        return {
            "r2": float(r2_score(y_true, y_pred)),
            "rmse": float(math.sqrt(mean_squared_error(y_true, y_pred))),
            "mae": float(mean_absolute_error(y_true, y_pred)),
        }
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # zero_division=0: a class never predicted scores 0 instead of raising a warning and NaN.
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "precision_macro": float(precision_score(y_true, y_pred, average="macro", zero_division=0)),
        "recall_macro": float(recall_score(y_true, y_pred, average="macro", zero_division=0)),
    }
    if problem_type == "binary_classification" and proba is not None and set(y_true) == set(classes):
        positive = classes[1]
        metrics["roc_auc"] = float(roc_auc_score(y_true == positive, proba[:, 1]))
    return metrics


def check_finite(metrics: dict[str, float], split: str, n_rows: int) -> None:
    for name, value in metrics.items():
        if not math.isfinite(value):
            raise TrainingDataError(
                f"metric {name} on the {split} split is {value} ({n_rows} row(s)); "
                "the split is too small or degenerate to evaluate"
            )
