"""Preprocess: cleaned, seeded, (stratified) train/validation/test CSV splits for the SageMaker channels."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.models import DataProfile, IngestResult, PreprocessResult, RunConfig
from pipeline_core.stages.data_validation import Limits, validate_data
from pipeline_core.stages.preprocess import preprocess, split_rows
from sklearn.datasets import load_diabetes

from functions.ingest.app import lambda_handler as ingest_handler
from functions.preprocess.app import lambda_handler as preprocess_handler
from functions.validate_data.app import lambda_handler as validate_data_handler
from functions.validate_input.app import lambda_handler as validate_input_handler
from tests.unit.test_data_validation import aws, csv_bytes, iris_frame, raw_key, run_ingest

__all__ = ["aws"]  # the module-scoped moto account, used here by name

SPLITS = ("train", "validation", "test")


def run(
    aws: Any, name: str, data: bytes, **given: Any
) -> tuple[RunConfig, IngestResult, DataProfile, PreprocessResult]:
    config, ingested = run_ingest(aws, name, data, **given)
    store = ObjectStore(aws.s3)
    profile = validate_data(config, ingested, store, Limits())
    return config, ingested, profile, preprocess(config, ingested, profile, store, Limits())


def read_split(aws: Any, prefix: str, name: str) -> pd.DataFrame:
    assert prefix.endswith(f"/{name}/")
    body = aws.get(prefix.removeprefix(f"s3://{aws.bucket}/") + f"{name}.csv")
    # Only an empty cell is missing: "None" and "NA" in a text column are categories (pandas' default reads
    # them as NaN, so a trainer must read the splits this way too).
    return pd.read_csv(io.BytesIO(body), keep_default_na=False, na_values=[""])


def splits(aws: Any, result: PreprocessResult) -> dict[str, pd.DataFrame]:
    uris = {"train": result.train_uri, "validation": result.validation_uri, "test": result.test_uri}
    return {name: read_split(aws, uris[name], name) for name in SPLITS}


def test_iris_splits_are_stratified_complete_and_typed(aws: Any) -> None:
    frame = iris_frame()
    config, _, profile, result = run(aws, "iris.csv", csv_bytes(frame), seed=7)
    parts = splits(aws, result)

    assert result.train_uri == f"{config.processed_prefix}train/"
    assert result.validation_uri == f"{config.processed_prefix}validation/"
    assert result.test_uri == f"{config.processed_prefix}test/"
    assert (result.n_train, result.n_validation, result.n_test) == (90, 30, 30)
    assert {name: len(part) for name, part in parts.items()} == {"train": 90, "validation": 30, "test": 30}
    assert result.dropped_rows == 0
    assert result.feature_columns == profile.feature_columns
    for part in parts.values():
        assert list(part.columns) == list(frame.columns)  # header row, target included
        assert all(pd.api.types.is_float_dtype(part[c]) for c in result.feature_columns)
        # stratified: each class keeps its share (1/3) in every split
        assert part["species"].value_counts().to_dict() == dict.fromkeys(profile.class_labels, len(part) // 3)
    # together the splits are exactly the dataset's rows (as a multiset: iris has duplicate rows)
    together = pd.concat(parts.values()).sort_values(list(frame.columns)).reset_index(drop=True)
    assert together.equals(frame.sort_values(list(frame.columns)).reset_index(drop=True))


def test_hyperparameters_are_all_strings_with_target_problem_type_and_seed(aws: Any) -> None:
    _, _, _, result = run(
        aws, "iris.csv", csv_bytes(iris_frame()), seed=11, hyperparameters={"max_iter": 50, "learning_rate": 0.1}
    )
    assert result.hyperparameters == {
        "target": "species",
        "problem_type": "multiclass_classification",
        "seed": "11",
        "max_iter": "50",
        "learning_rate": "0.1",
    }


def test_a_builtin_trainer_gets_its_algorithm_and_a_user_trainer_none(aws: Any) -> None:
    data = csv_bytes(iris_frame())
    linear = run(aws, "iris.csv", data, trainer="linear", hyperparameters={"C": 2})[3]
    assert (linear.hyperparameters["algorithm"], linear.hyperparameters["C"]) == ("linear", "2.0")

    own = {"source": f"s3://{aws.bucket}/code/trainers/abc.tar.gz"}
    custom = run(aws, "iris2.csv", data, trainer=own, hyperparameters={"ngram_max": 2, "lowercase": True})[3]
    assert custom.hyperparameters == {
        "target": "species",
        "problem_type": "multiclass_classification",
        "seed": "42",
        "ngram_max": "2",
        "lowercase": "true",
    }


def test_the_split_depends_on_the_seed_only(aws: Any) -> None:
    data = csv_bytes(iris_frame())
    first = splits(aws, run(aws, "iris.csv", data, seed=3)[3])
    again = splits(aws, run(aws, "iris.csv", data, seed=3)[3])
    other = splits(aws, run(aws, "iris.csv", data, seed=4)[3])

    for name in SPLITS:
        assert first[name].equals(again[name])
    assert not first["test"].equals(other["test"])


def test_empty_targets_are_dropped_and_text_is_cleaned(aws: Any) -> None:
    frame = iris_frame().astype(str)
    frame.loc[[0, 60, 120], "species"] = ["", "null", "  "]
    frame.loc[5, "sepal_length"] = "  6.25 "
    frame.loc[6, "sepal_width"] = "?"
    frame["colour"] = np.where(np.arange(150) % 2 == 0, " red", "blue ")
    frame = frame[["sepal_length", "sepal_width", "petal_length", "petal_width", "colour", "species"]]

    _, _, profile, result = run(aws, "iris.csv", csv_bytes(frame))
    parts = splits(aws, result)
    together = pd.concat(parts.values())

    assert result.dropped_rows == 3
    assert result.dropped_rows_by_reason == {"empty target": 3}
    assert profile.dropped_rows == {"empty target": 3}
    assert result.n_train + result.n_validation + result.n_test == 147 == len(together)
    assert set(together["species"]) == {"setosa", "versicolor", "virginica"}
    assert set(together["colour"]) == {"red", "blue"}
    assert 6.25 in set(together["sepal_length"])
    assert together["sepal_width"].isna().sum() == 1  # "?" is a missing value, written as an empty cell
    assert next(c for c in profile.columns if c.name == "colour").dtype == "categorical"


def test_regression_split_is_plain_with_float_target(aws: Any) -> None:
    frame = load_diabetes(as_frame=True, scaled=False).frame
    _, _, profile, result = run(aws, "diabetes.csv", csv_bytes(frame), test_size=0.1, validation_size=0.15)
    parts = splits(aws, result)

    assert profile.problem_type == "regression"
    assert (result.n_train, result.n_validation, result.n_test) == (332, 66, 44)  # 442 rows: round(44.2), round(66.3)
    assert result.hyperparameters["problem_type"] == "regression"
    assert sorted(pd.concat(parts.values())["target"]) == sorted(frame["target"])


def test_integer_class_labels_are_written_as_the_profiled_labels(aws: Any) -> None:
    frame = iris_frame()
    frame["species"] = frame["species"].map({"setosa": "0.0", "versicolor": "1.0", "virginica": "2.0"})
    _, _, profile, result = run(aws, "iris.csv", csv_bytes(frame))
    test = read_split(aws, result.test_uri, "test")

    assert profile.class_labels == ["0", "1", "2"]
    assert sorted(test["species"].astype(str).unique()) == profile.class_labels


def test_stratification_falls_back_to_plain_when_a_class_is_too_small() -> None:
    labels = pd.Series(["a"] * 43 + ["b"] * 2)  # b has fewer than min_rows_per_class (3) rows
    split = split_rows(45, 0.2, 0.2, seed=1, labels=labels)

    assert not split.stratified
    assert split.reason == "plain (not stratified): classes b have fewer than 3 rows"
    positions = np.concatenate([split.train, split.validation, split.test])
    assert sorted(positions) == list(range(45))
    assert (len(split.train), len(split.validation), len(split.test)) == (27, 9, 9)

    balanced = pd.Series(["a"] * 30 + ["b"] * 15)
    stratified = split_rows(45, 0.2, 0.2, seed=1, labels=balanced)
    assert stratified.stratified
    assert balanced.iloc[stratified.test].value_counts().to_dict() == {"a": 6, "b": 3}
    assert balanced.iloc[stratified.train].value_counts().to_dict() == {"a": 18, "b": 9}


def test_a_class_of_min_rows_gets_a_test_row_and_two_for_training() -> None:
    labels = pd.Series(["a"] * 40 + ["b"] * 3)  # b has exactly min_rows_per_class(0.2, 0.2) rows
    split = split_rows(43, 0.2, 0.2, seed=1, labels=labels)

    assert split.stratified
    assert (labels.iloc[split.test] == "b").sum() == 1
    assert (labels.iloc[np.concatenate([split.train, split.validation])] == "b").sum() == 2


def test_the_four_handlers_chain_like_the_state_machine(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline_core import observability

    if observability.metrics.provider.namespace is None:
        monkeypatch.setattr(observability.metrics.provider, "namespace", "stepml-test")
    data = csv_bytes(iris_frame())
    source = aws.put("incoming/chain/iris.csv", data)
    name = "chain-run-0001"
    arn = f"arn:aws:states:us-east-1:123456789012:execution:stepml:{name}"

    state: dict[str, Any] = validate_input_handler(
        {"input": {"dataset": source}, "execution_name": name, "execution_arn": arn, "start_time": "now"}, None
    )
    state["ingest"] = ingest_handler({"config": state["config"], "execution_arn": arn}, None)
    state["data"] = validate_data_handler({"config": state["config"], "ingest": state["ingest"]}, None)
    state["prep"] = preprocess_handler(
        {"config": state["config"], "ingest": state["ingest"], "data": state["data"]}, None
    )

    prep = PreprocessResult.model_validate(state["prep"])
    assert prep.n_train + prep.n_validation + prep.n_test == 150
    assert all(isinstance(v, str) for v in prep.hyperparameters.values())
    assert aws.get(raw_key(IngestResult.model_validate(state["ingest"]))) == data
    assert aws.get("incoming/chain/iris.csv") == data


# --- retried after its writes ---------------------------------------------------------------------------


def _versions(aws: Any, uri: str) -> list[dict[str, Any]]:
    key = uri.removeprefix(f"s3://{aws.bucket}/")
    answer = aws.s3.list_object_versions(Bucket=aws.bucket, Prefix=key)
    return [v for v in answer.get("Versions", []) if v["Key"] == key]


def test_a_retried_preprocess_writes_nothing_new(aws: Any) -> None:
    """Preprocess retried after its writes went through (its response lost) leaves one version of each
    split: the seeded split gives the same bytes, and the conditional write skips them."""
    aws.s3.put_bucket_versioning(Bucket=aws.bucket, VersioningConfiguration={"Status": "Enabled"})
    config, ingested, profile, first = run(aws, "retried.csv", csv_bytes(iris_frame()), seed=5)
    uris = [f"{first.train_uri}train.csv", f"{first.validation_uri}validation.csv", f"{first.test_uri}test.csv"]
    uris += [f"{prefix}columns.json" for prefix in (first.train_uri, first.validation_uri, first.test_uri)]
    written = {uri: _versions(aws, uri) for uri in uris}

    second = preprocess(config, ingested, profile, ObjectStore(aws.s3), Limits())

    assert second == first
    for uri in uris:
        assert len(written[uri]) == 1, uri
        assert _versions(aws, uri) == written[uri], f"{uri} was written again"


def test_put_if_changed_replaces_different_bytes_only(aws: Any) -> None:
    aws.s3.put_bucket_versioning(Bucket=aws.bucket, VersioningConfiguration={"Status": "Enabled"})
    store, uri = ObjectStore(aws.s3), f"s3://{aws.bucket}/processed/put-once/a.csv"
    assert store.put_if_changed(uri, b"a\n1\n", "text/csv") is True
    assert store.put_if_changed(uri, b"a\n1\n", "text/csv") is False
    assert len(_versions(aws, uri)) == 1
    # different bytes under the key: the object must hold what the caller goes on with
    assert store.put_if_changed(uri, b"a\n2\n", "text/csv") is True
    assert store.read_bytes(uri) == b"a\n2\n" and len(_versions(aws, uri)) == 2


# --- the data contract with trainers (columns.json and normalised values) -----------------------------


def _mixed_frame(n: int = 60) -> pd.DataFrame:
    days = pd.date_range("2024-01-01", periods=n, freq="D")
    return pd.DataFrame(
        {
            "id": [f"row-{i:03d}" for i in range(n)],
            "price": [f"{1000 + 7 * i:,}" for i in range(n)],  # "1,000", "1,007", ...
            "day": days.strftime("%m/%d/%Y"),
            "paid": ["TRUE" if i % 3 else "False" for i in range(n)],
            "smoker": ["None" if i % 2 else "Heavy" for i in range(n)],
            "same": ["x"] * n,
            "note": [f"free text number {i} about the row" for i in range(n)],
            "label": ["None" if i % 2 else "Strong" for i in range(n)],
        }
    )


def _columns_json(aws: Any, prefix: str) -> Any:
    return json.loads(aws.get(prefix.removeprefix(f"s3://{aws.bucket}/") + "columns.json"))


def test_splits_hold_features_then_target_normalised_and_columns_json(aws: Any) -> None:
    _, _, profile, result = run(aws, "mixed.csv", csv_bytes(_mixed_frame()), exclude_columns=["note"])
    parts = splits(aws, result)
    together = pd.concat(parts.values()).reset_index(drop=True)

    features = ["price", "day", "paid", "smoker"]
    assert profile.feature_columns == result.feature_columns == features
    for name, part in parts.items():
        assert list(part.columns) == [*features, "label"], name
        assert _columns_json(aws, getattr(result, f"{name}_uri")) == {
            "format": 1,
            "target": "label",
            "problem_type": "binary_classification",
            "roles": {"price": "numeric", "day": "datetime", "paid": "boolean", "smoker": "categorical"},
            "class_labels": ["None", "Strong"],
        }
    assert sorted(together["price"]) == [1000 + 7 * i for i in range(60)]
    assert "2024-01-31" in set(together["day"])
    assert set(together["paid"].astype(str).str.lower()) == {"true", "false"}
    assert set(together["smoker"]) == {"None", "Heavy"}  # a category, not a missing value
    assert set(together["label"]) == {"None", "Strong"}
    assert result.column_roles == {
        "id": "identifier",
        "price": "numeric",
        "day": "datetime",
        "paid": "boolean",
        "smoker": "categorical",
        "same": "constant",
        "note": "excluded",
        "label": "target",
    }
    assert set(result.excluded_columns) == {"id", "same", "note"}
    assert result.excluded_columns["note"].startswith("excluded: excluded in the input")
    assert (result.dropped_rows, result.dropped_rows_by_reason) == (0, {})


def _rare_frame() -> pd.DataFrame:
    labels = ["a"] * 30 + ["b"] * 30 + ["c"] * 2 + ["d"] + [""] * 2
    return pd.DataFrame({"x": np.arange(len(labels)) * 0.5, "y": labels})


def test_rare_classes_drop_is_counted_and_applied(aws: Any) -> None:
    _, _, profile, result = run(aws, "rare.csv", csv_bytes(_rare_frame()), rare_classes="drop")
    together = pd.concat(splits(aws, result).values())

    assert profile.class_labels == ["a", "b"] and profile.problem_type == "binary_classification"
    assert profile.dropped_rows == {"empty target": 2, "rare class (dropped)": 3}
    assert result.dropped_rows_by_reason == profile.dropped_rows and result.dropped_rows == 5
    assert together["y"].value_counts().to_dict() == {"a": 30, "b": 30}


def test_rare_classes_merge_relabels_them_other(aws: Any) -> None:
    _, _, profile, result = run(aws, "rare.csv", csv_bytes(_rare_frame()), rare_classes="merge")
    parts = splits(aws, result)

    assert profile.class_labels == ["(other)", "a", "b"] and profile.merged_classes == {"c": 2, "d": 1}
    assert result.dropped_rows_by_reason == {"empty target": 2}
    assert pd.concat(parts.values())["y"].value_counts().to_dict() == {"a": 30, "b": 30, "(other)": 3}
    assert (parts["test"]["y"] == "(other)").sum() == 1  # the merged class is stratified like the others
