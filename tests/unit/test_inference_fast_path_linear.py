"""The linear family's fast path (stepml_tabular.fast_path with a scaler): the plan's rows are the
ColumnTransformer's (scaled numbers, one-hot categories, sparse or not) and the estimator answers them as the
pipeline answers the records, one row at a time and in batches, gaps and unseen categories included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stepml_tabular import fast_path

from tests.unit.test_inference_fast_path import awkward_records, dataset, pipeline_predictions, split3
from training import inference, train

# the mixed frame's bool column takes the boolean transformer, which the plan does not read: dropped here
LINEAR_DATASETS = ["iris", "breast_cancer", "diabetes", "mixed_churn", "mixed_tier", "mixed_spend"]


@pytest.fixture(scope="module", params=LINEAR_DATASETS)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    frame, target, problem_type = dataset(request.param)
    frame = frame.drop(columns=[c for c in ("member",) if c in frame.columns])
    tr, val, test = split3(frame)
    outcome = train.train(tr, val, test, target=target, problem_type=problem_type, seed=0, algorithm="linear")
    directory = tmp_path_factory.mktemp(request.param)
    train.write_outputs(outcome, directory, directory)
    bundle = inference.model_fn(str(directory))
    return {"bundle": bundle, "records": test[bundle["feature_columns"]].to_dict("records")}


def same(bundle: dict[str, Any], got: list[Any], expected: list[Any]) -> bool:
    if bundle["problem_type"] == "regression":
        return bool(np.allclose(got, expected, rtol=1e-9, atol=0.0))
    return got == expected


def test_a_linear_model_gets_a_scaling_plan(served: dict[str, Any]) -> None:
    plan = served["bundle"]["_fast_plan"]
    assert plan is not None and plan.shift is not None and plan.scale is not None
    assert type(plan.estimator).__name__ in ("LogisticRegression", "Ridge") and plan.forest is None
    # the estimator's predict is replaced by its own product, checked when the model loaded
    assert plan.linear is not None


def test_the_product_answers_exactly_as_the_estimator(served: dict[str, Any]) -> None:
    # bit for bit on the plan's rows of the test split and of random rows far outside the training range
    plan = served["bundle"]["_fast_plan"]
    rows = np.vstack(
        [
            fast_path.plan_rows(plan, awkward_records(served["bundle"], served["records"])),
            np.random.default_rng(1).normal(0.0, 50.0, size=(500, plan.width)),
        ]
    )
    assert np.array_equal(plan.linear.predict(rows), plan.estimator.predict(rows))


def test_a_product_with_other_coefficients_does_not_agree(served: dict[str, Any]) -> None:
    plan = served["bundle"]["_fast_plan"]
    rows = fast_path.plan_rows(plan, awkward_records(served["bundle"], served["records"]))
    wrong = fast_path.Linear(-plan.linear.coef, plan.linear.intercept, plan.linear.classes)
    assert not wrong.agrees(plan.estimator, rows)


def test_one_row_at_a_time_equals_the_pipeline(served: dict[str, Any]) -> None:
    bundle = served["bundle"]
    records = awkward_records(bundle, served["records"])
    got = [inference.predict_records(bundle, [record])[0] for record in records]
    assert same(bundle, got, pipeline_predictions(bundle, records))


def test_a_batch_equals_the_pipeline(served: dict[str, Any]) -> None:
    bundle = served["bundle"]
    records = awkward_records(bundle, served["records"]) * 3
    assert same(bundle, inference.predict_records(bundle, records), pipeline_predictions(bundle, records))


def test_a_plan_whose_estimator_disagrees_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame, target, problem_type = dataset("iris")
    tr, val, test = split3(frame)
    outcome = train.train(tr, val, test, target=target, problem_type=problem_type, seed=0, algorithm="linear")
    train.write_outputs(outcome, tmp_path, tmp_path)
    # a scaler read wrongly (every mean off by one) must be caught when the model loads
    real = fast_path._numeric_steps

    def off_by_one(transformer: Any, linear: bool) -> tuple[Any, Any]:
        imputer, scaler = real(transformer, linear)
        wrong = type(scaler)().fit(np.zeros((2, len(scaler.mean_))))
        wrong.mean_, wrong.scale_ = scaler.mean_ + 1.0, scaler.scale_
        return imputer, wrong

    monkeypatch.setattr(fast_path, "_numeric_steps", off_by_one)
    bundle = inference.model_fn(str(tmp_path))
    assert bundle["_fast_plan"] is None
    records = test[bundle["feature_columns"]].to_dict("records")
    assert inference.predict_records(bundle, records) == pipeline_predictions(bundle, records)
