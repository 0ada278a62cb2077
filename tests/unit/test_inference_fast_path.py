"""training/inference.py's fast path: records -> rows (_Plan) -> all trees walked at once (_Forest).

Every test compares with scikit-learn's own answer for the same rows (the fitted pipeline's or
estimator's predict, decision_function), never with stored results, and asserts the fast path was
actually taken, so a comparison of the pipeline with itself cannot pass for one of the fast path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.model_selection import train_test_split
from stepml_tabular import estimators, fast_path

from training import inference, train


def split3(frame: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rest, test = train_test_split(frame, test_size=0.2, random_state=seed)
    tr, val = train_test_split(rest, test_size=0.25, random_state=seed)
    return tr.reset_index(drop=True), val.reset_index(drop=True), test.reset_index(drop=True)


def mixed_frame(n: int = 600, seed: int = 5) -> pd.DataFrame:
    """Numeric and categorical features with gaps, a bool, and targets for all three problem types."""
    rng = np.random.default_rng(seed)
    city = rng.choice(["paris", "oslo", "rome", "lima", "kyiv"], size=n)
    plan = rng.choice(["free", "pro", "team"], size=n, p=[0.5, 0.3, 0.2])
    age = rng.normal(40, 12, size=n)
    income = rng.lognormal(10, 0.5, size=n)
    score = (
        (city == "oslo") * 2.0 + (plan == "pro") * 1.5 - (plan == "team") + (age - 40) / 10 + rng.normal(0, 0.5, size=n)
    )
    frame = pd.DataFrame(
        {
            "city": pd.Series(city, dtype=object),
            "plan": pd.Series(plan, dtype=object),
            "age": age,
            "income": income,
            "member": rng.random(n) < 0.4,
            "churn": np.where(score > 1.0, "yes", "no"),
            "tier": np.select([score < 0, score < 2], ["low", "mid"], "high"),
            "spend": score * 100 + income / 1000,
        }
    )
    frame.loc[frame.index % 7 == 0, "age"] = np.nan
    frame.loc[frame.index % 13 == 0, "income"] = np.nan
    frame.loc[frame.index % 11 == 0, "city"] = None
    frame.loc[frame.index % 17 == 0, "plan"] = None
    return frame


MIXED_TARGETS = {"churn": "binary_classification", "tier": "multiclass_classification", "spend": "regression"}


def dataset(name: str) -> tuple[pd.DataFrame, str, str]:
    """(frame, target, problem type) for a real dataset or the mixed one."""
    if name == "iris":
        frame = load_iris(as_frame=True).frame
        frame["target"] = [str(load_iris().target_names[i]) for i in frame["target"]]
        return frame, "target", "multiclass_classification"
    if name == "breast_cancer":
        return load_breast_cancer(as_frame=True).frame, "target", "binary_classification"
    if name == "diabetes":
        return load_diabetes(as_frame=True).frame, "target", "regression"
    target = name.removeprefix("mixed_")
    frame = mixed_frame().drop(columns=[t for t in MIXED_TARGETS if t != target])
    return frame, target, MIXED_TARGETS[target]


DATASETS = ["iris", "breast_cancer", "diabetes", *(f"mixed_{t}" for t in MIXED_TARGETS)]


@pytest.fixture(scope="module", params=DATASETS)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A model trained by train.py, saved and loaded back through model_fn as the serving container does;
    with the frame's held-out rows as records."""
    frame, target, problem_type = dataset(request.param)
    tr, val, test = split3(frame)
    outcome = train.train(
        tr, val, test, target=target, problem_type=problem_type, seed=0, algorithm="gradient-boosting"
    )
    directory = tmp_path_factory.mktemp(request.param)
    train.write_outputs(outcome, directory, directory)
    bundle = inference.model_fn(str(directory))
    features = bundle["feature_columns"]
    return {"name": request.param, "bundle": bundle, "records": test[features].to_dict("records")}


def pipeline_predictions(bundle: dict[str, Any], records: list[dict[str, Any]]) -> list[Any]:
    """What the whole scikit-learn pipeline answers, in predict_records' output types."""
    frame = inference._prepare_frame(pd.DataFrame(records, columns=bundle["feature_columns"]), bundle)
    predictions = bundle["pipeline"].predict(frame)
    if bundle["problem_type"] == "regression":
        return [float(p) for p in predictions]
    return [str(p) for p in predictions]


def awkward_records(bundle: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Held-out records plus every value missing, each feature missing alone, and unseen categories."""
    kinds: dict[str, str] = bundle["feature_kinds"]
    base = records[0]
    result = [*records, dict.fromkeys(kinds)]
    result += [{**base, column: None} for column in kinds]
    result += [{**base, column: np.nan} for column, kind in kinds.items() if kind == "numeric"]
    unseen = {column: "never-seen-in-training" for column, kind in kinds.items() if kind == "categorical"}
    if unseen:
        result += [{**base, **unseen}, {**records[1], **unseen}]
    return result


# --- the fast path equals the pipeline -----------------------------------------------------------------


def test_model_fn_builds_the_tree_walk(served: dict[str, Any]) -> None:
    plan = served["bundle"]["_fast_plan"]
    assert plan is not None
    assert plan.forest is not None  # without it the tests below would compare scikit-learn with itself
    estimator = served["bundle"]["pipeline"].named_steps["model"]
    assert plan.forest.roots.size == estimator.n_iter_ * estimator.n_trees_per_iteration_


def test_one_row_at_a_time_equals_the_pipeline(served: dict[str, Any]) -> None:
    bundle = served["bundle"]
    records = awkward_records(bundle, served["records"])
    expected = pipeline_predictions(bundle, records)
    assert [inference.predict_records(bundle, [record])[0] for record in records] == expected


def test_batches_equal_the_pipeline_on_both_sides_of_the_size_limit(served: dict[str, Any]) -> None:
    bundle = served["bundle"]
    records = awkward_records(bundle, served["records"])
    records = (records * (1 + 3 * fast_path.FOREST_MAX_ROWS // len(records)))[: 3 * fast_path.FOREST_MAX_ROWS]
    for size in (fast_path.FOREST_MAX_ROWS, fast_path.FOREST_MAX_ROWS + 1, len(records)):
        assert inference.predict_records(bundle, records[:size]) == pipeline_predictions(bundle, records[:size])


def test_raw_scores_are_the_estimators_bit_for_bit(served: dict[str, Any]) -> None:
    """Not only the labels: the per-class scores (which probabilities come from) and regression values are
    the same floats, so the leaves are summed in scikit-learn's order."""
    bundle = served["bundle"]
    plan = bundle["_fast_plan"]
    rows = fast_path.plan_rows(plan, awkward_records(bundle, served["records"]))
    estimator = plan.estimator
    raw = plan.forest.raw_predict(rows)
    if bundle["problem_type"] == "regression":
        assert np.array_equal(plan.forest.predict(rows), estimator.predict(rows))
    else:
        assert np.array_equal(raw.reshape(-1) if raw.shape[1] == 1 else raw, estimator.decision_function(rows))
        assert np.array_equal(plan.forest.predict(rows), estimator.predict(rows))


def test_values_on_and_next_to_every_threshold(served: dict[str, Any]) -> None:
    """For every split of every tree, a real row with that feature set to the threshold (goes left), the
    float just above (right), just below, and missing, so every comparison is made on its edge."""
    bundle = served["bundle"]
    plan = bundle["_fast_plan"]
    estimator = plan.estimator
    base = fast_path.plan_rows(plan, served["records"])
    rows: list[np.ndarray] = []
    for iteration in estimator._predictors:
        for predictor in iteration:
            for node in predictor.nodes[predictor.nodes["is_leaf"] == 0]:
                row = base[len(rows) % len(base)].copy()
                threshold = node["num_threshold"]
                for value in (threshold, np.nextafter(threshold, np.inf), np.nextafter(threshold, -np.inf), np.nan):
                    row[node["feature_idx"]] = value
                    rows.append(row.copy())
    probes = np.array(rows)
    assert np.array_equal(plan.forest.predict(probes), estimator.predict(probes))


def test_the_containers_csv_and_json_requests_take_the_fast_path(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """input_fn -> predict_fn, as the SageMaker container calls them: CSV cells arrive as text (an empty
    cell is missing), JSON values as parsed; both answer what the pipeline answers, through the tree walk."""
    bundle = served["bundle"]
    records = awkward_records(bundle, served["records"])
    expected = pipeline_predictions(bundle, records)
    walked: list[int] = []
    walk = fast_path.Forest.predict

    def counted(forest: Any, rows: np.ndarray) -> np.ndarray:
        walked.append(len(rows))
        return walk(forest, rows)

    monkeypatch.setattr(fast_path.Forest, "predict", counted)
    # Both print floats in their shortest round-trip form, so the service reads back the same floats
    # (pandas' to_json would round to 10 digits).
    csv_body = pd.DataFrame(records, columns=bundle["feature_columns"]).to_csv(index=False)
    json_body = json.dumps({"instances": records})
    for body, content_type in ((csv_body, "text/csv"), (json_body, "application/json")):
        assert inference.predict_fn(inference.input_fn(body, content_type), bundle) == expected
    assert walked == [len(records), len(records)]


# --- missing values the estimator itself learned, native categorical features --------------------------


@pytest.mark.parametrize("estimator_class", [HistGradientBoostingClassifier, HistGradientBoostingRegressor])
def test_missing_values_seen_in_training_follow_the_learned_side(estimator_class: type) -> None:
    """Behind train.py's imputer the trees never see NaN; a bare estimator trained with NaN learns per split
    which side missing values take (missing_go_to_left), and the walk must follow it."""
    data = load_breast_cancer()
    rng = np.random.default_rng(1)
    x = data.data.copy()
    x[rng.random(x.shape) < 0.2] = np.nan
    # regression: the (complete) mean texture, which feature 1 holds where it is not missing
    y = data.target if estimator_class is HistGradientBoostingClassifier else data.data[:, 1]
    estimator = estimator_class(max_iter=30, random_state=0).fit(x, y)
    forest = fast_path.build_forest(estimator, x.shape[1])
    assert forest is not None
    assert forest.missing_left.any() and not forest.missing_left.all()  # both sides occur
    assert np.array_equal(forest.predict(x), estimator.predict(x))
    all_missing = np.full((1, x.shape[1]), np.nan)
    assert np.array_equal(forest.predict(all_missing), estimator.predict(all_missing))


def test_native_categorical_features_keep_scikit_learns_predict() -> None:
    """An estimator with categorical_features re-encodes its input before the trees; the walk does not, so
    it is not built and predict_records answers through the estimator, still equal to the pipeline."""
    frame, target, problem_type = dataset("mixed_churn")
    tr, _, test = split3(frame)
    kinds = train.feature_kinds(tr, [c for c in tr.columns if c != target])
    pipeline = estimators.build_pipeline(kinds, "gradient-boosting", problem_type, 0, train.DEFAULT_PARAMS, len(tr))
    # The ColumnTransformer puts the numeric features first: the first one-hot column comes after them.
    first_one_hot = sum(kind == "numeric" for kind in kinds.values())
    pipeline.set_params(model__categorical_features=[first_one_hot])
    features = list(kinds)
    x = train.prepare_features(tr, features, kinds, "train")
    pipeline.fit(x, train.prepare_target(tr, target, problem_type, "train"))
    bundle: dict[str, Any] = {
        "pipeline": pipeline,
        "feature_columns": features,
        "feature_kinds": kinds,
        "problem_type": problem_type,
        "class_labels": [str(c) for c in pipeline.classes_],
    }
    estimator = pipeline.named_steps["model"]
    assert estimator.is_categorical_ is not None and estimator.is_categorical_.any()
    assert fast_path.build_forest(estimator, 100) is None
    plan = fast_path.build_plan(bundle)
    assert plan is not None and plan.forest is None
    bundle["_fast_plan"] = plan
    records = test[features].to_dict("records")
    assert inference.predict_records(bundle, records) == pipeline_predictions(bundle, records)


# --- the load-time check and the path taken ------------------------------------------------------------


def test_a_walk_that_disagrees_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check at load catches a walk one float off on one threshold (the first tree's root, which every
    row passes), and the model is then served by scikit-learn, still correctly."""
    frame, target, problem_type = dataset("breast_cancer")
    outcome = train.train(
        *split3(frame), target=target, problem_type=problem_type, seed=0, algorithm="gradient-boosting"
    )
    train.write_outputs(outcome, tmp_path, tmp_path)
    build = fast_path.build_forest

    def off_by_one_float(estimator: Any, width: int) -> Any:
        forest = build(estimator, width)
        assert forest is not None
        forest.threshold[forest.roots[0]] = np.nextafter(forest.threshold[forest.roots[0]], -np.inf)
        return forest

    monkeypatch.setattr(fast_path, "build_forest", off_by_one_float)
    bundle = inference.model_fn(str(tmp_path))
    plan = bundle["_fast_plan"]
    assert plan is not None and plan.forest is None
    records = frame.drop(columns=target).head(20).to_dict("records")
    assert inference.predict_records(bundle, records) == pipeline_predictions(bundle, records)

    monkeypatch.setattr(fast_path, "build_forest", build)
    assert inference.model_fn(str(tmp_path))["_fast_plan"].forest is not None  # the intact walk passes


def test_small_batches_walk_the_trees_and_large_ones_use_the_estimator(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = served["bundle"]
    calls: list[int] = []
    walk = fast_path.Forest.predict

    def counted(forest: Any, rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        return walk(forest, rows)

    monkeypatch.setattr(fast_path.Forest, "predict", counted)
    records = (served["records"] * (2 + fast_path.FOREST_MAX_ROWS // len(served["records"])))[
        : fast_path.FOREST_MAX_ROWS + 1
    ]
    inference.predict_records(bundle, records[:1])
    inference.predict_records(bundle, records[: fast_path.FOREST_MAX_ROWS])
    inference.predict_records(bundle, records)
    assert calls == [1, fast_path.FOREST_MAX_ROWS]
