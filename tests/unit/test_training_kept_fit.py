"""training/stepml_tabular on large data: above REFIT_MAX_ROWS train+validation rows the model selection
fitted on the train split is kept (boosting stopped early on the validation loss), with no refit.

The threshold is lowered for these tests so that a few thousand rows count as large; each fits in seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from stepml_tabular import estimators

from training import train


@pytest.fixture
def large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(estimators, "REFIT_MAX_ROWS", 100)


def _split(frame: pd.DataFrame, n_train: int, n_validation: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    parts = (frame.iloc[:n_train], frame.iloc[n_train : n_train + n_validation], frame.iloc[n_train + n_validation :])
    return tuple(p.reset_index(drop=True) for p in parts)


def _classification(n: int, seed: int, signal: float = 2.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.choice(["x", "y", "z"], n)})
    score = signal * frame["a"] + frame["b"] * (frame["c"] == "x") + rng.normal(0, 1.0, n)
    frame["y"] = np.where(score > 0, "yes", "no")
    return frame


def _validation_score_of(outcome: train.TrainingOutcome, validation: pd.DataFrame) -> float:
    """The primary metric of the model in the bundle, scored on the validation rows."""
    pipeline = outcome.bundle["pipeline"]
    x = validation[outcome.bundle["feature_columns"]]
    proba = pipeline.predict_proba(x)
    predictions = pipeline.predict(x)
    metrics = train.compute_metrics(
        "binary_classification", validation["y"].to_numpy(), predictions, proba, outcome.bundle["class_labels"]
    )
    return float(metrics["f1_macro"])


@pytest.mark.parametrize("algorithm", ["gradient-boosting", "linear", "auto"])
def test_on_large_data_the_model_scored_on_validation_is_the_model_kept(large: None, algorithm: str) -> None:
    frame = _classification(2000, seed=1)
    tr, val, test = _split(frame, 1200, 400)
    outcome = train.train(tr, val, test, target="y", problem_type="binary_classification", algorithm=algorithm)

    selection = outcome.metrics["selection"]
    assert "kept without a refit (more than 100 train+validation rows)" in selection["method"]
    # a refit on train+validation would score its validation rows (now training rows) differently
    assert _validation_score_of(outcome, val) == pytest.approx(outcome.metrics["validation"]["f1_macro"])
    assert outcome.metrics["validation"]["f1_macro"] == pytest.approx(selection["scores"][selection["chosen"]])
    assert outcome.metrics["test"]["f1_macro"] > 0.8


def test_below_the_threshold_the_chosen_model_is_refit_on_train_and_validation() -> None:
    frame = _classification(2000, seed=1)
    tr, val, test = _split(frame, 1200, 400)
    outcome = train.train(tr, val, test, target="y", problem_type="binary_classification", algorithm="linear")

    assert "refit" not in outcome.metrics["selection"]["method"]
    assert _validation_score_of(outcome, val) != pytest.approx(outcome.metrics["validation"]["f1_macro"])


def test_large_data_boosting_stops_when_the_validation_loss_stops_improving(large: None) -> None:
    # a weak signal: the validation loss is least after a few iterations of 300 at a high learning rate
    frame = _classification(3000, seed=2, signal=0.3)
    tr, val, test = _split(frame, 1800, 600)
    outcome = train.train(
        tr, val, test, target="y", problem_type="binary_classification", algorithm="gradient-boosting",
        params={"max_iter": 300, "learning_rate": 0.5},
    )  # fmt: skip

    model = outcome.bundle["pipeline"].named_steps["model"]
    assert model.n_iter_ < 300
    assert outcome.bundle["chosen_params"]["max_iter"] == model.n_iter_
    best = int(np.argmax(model.validation_score_))
    assert model.n_iter_ == best + estimators.EARLY_STOPPING_ROUNDS
    detail = outcome.metrics["selection"]["details"]["gradient-boosting"]
    expected = f"stopped early after {model.n_iter_} of 300 iterations (least validation loss after {best})"
    assert detail.startswith(expected)


def test_large_data_regression_keeps_the_train_split_fit(large: None) -> None:
    """Train holds x in [0, 1], validation x in [1, 10]: a model fitted on train alone (kept, not refit)
    predicts at most about y(1) on test rows in [5, 10] (the refit test in test_training_roles sees > 20)."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(0, 1, 1200), rng.uniform(1, 10, 400), rng.uniform(5, 10, 200)])
    frame = pd.DataFrame({"x": x, "y": 3 * x + rng.normal(0, 0.1, len(x))})
    outcome = train.train(
        *_split(frame, 1200, 400), target="y", problem_type="regression", algorithm="gradient-boosting"
    )

    assert outcome.test_predictions["y_pred"].max() < 4
    assert "kept without a refit" in outcome.metrics["selection"]["method"]
