"""training/inference.py's application/jsonlines, what SageMaker Batch Transform sends (SplitType Line, MultiRecord
mini-batches of several lines): the same predictions as a JSON request and as the endpoint's records, one answer
line per request line; and the quicker paths batches take (uniform records, plain numbers) equal the general ones."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from stepml_tabular.columns import coerce_column

from tests.unit.test_inference_fast_path import awkward_records, mixed_frame, split3
from training import inference, train


@pytest.fixture(scope="module", params=["gradient-boosting", "linear"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A multiclass model of numeric, categorical and boolean features with gaps (the tree walk's plan for
    gradient boosting, the whole pipeline for the linear model), loaded as the container loads it."""
    frame = mixed_frame().drop(columns=["churn", "spend"])
    tr, val, test = split3(frame)
    outcome = train.train(
        tr, val, test, target="tier", problem_type="multiclass_classification", seed=0, algorithm=request.param
    )
    directory = tmp_path_factory.mktemp(request.param)
    train.write_outputs(outcome, directory, directory)
    bundle = inference.model_fn(str(directory))
    records = awkward_records(bundle, test[bundle["feature_columns"]].to_dict("records"))
    # JSON has no NaN: a missing value is null
    records = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in records]
    return {"bundle": bundle, "records": [{**r, "id": f"row-{i}"} for i, r in enumerate(records)]}


def answer(bundle: dict[str, Any], body: str | bytes, content_type: str, accept: str) -> str:
    text, _ = inference.output_fn(inference.predict_fn(inference.input_fn(body, content_type), bundle), accept)
    return text


def test_json_lines_get_the_predictions_of_a_json_request_one_line_each(served: dict[str, Any]) -> None:
    bundle, records = served["bundle"], served["records"]
    online = inference.predict_records(bundle, records)  # what the endpoint stand-in answers
    as_json = json.loads(answer(bundle, json.dumps({"instances": records}), "application/json", "application/json"))
    # a MultiRecord mini-batch: lines, a blank one between, no newline after the last
    body = "\n".join(json.dumps(r) for r in records[:5]) + "\n\n" + "\n".join(json.dumps(r) for r in records[5:])
    lines = answer(bundle, body.encode(), "application/jsonlines", "application/jsonlines").splitlines()
    assert [json.loads(line)["prediction"] for line in lines] == as_json["predictions"] == online
    assert len(set(online)) > 1  # the rows are not all one class: a shifted line would show


def test_json_lines_records_may_differ_in_their_fields_and_a_missing_feature_is_named(served: dict[str, Any]) -> None:
    bundle, records = served["bundle"], served["records"]
    reordered = [
        records[0],
        dict(reversed(list(records[1].items()))),
        {k: v for k, v in records[2].items() if k != "id"},
    ]
    lines = answer(bundle, "\n".join(map(json.dumps, reordered)), "application/jsonl", "application/jsonlines")
    assert [json.loads(line)["prediction"] for line in lines.splitlines()] == inference.predict_records(
        bundle, reordered
    )
    feature = bundle["feature_columns"][0]
    lacking = [records[0], {k: v for k, v in records[1].items() if k != feature}]
    with pytest.raises(ValueError, match=rf"row 1: missing feature column\(s\) \['{feature}'\]"):
        answer(bundle, "\n".join(map(json.dumps, lacking)), "application/jsonlines", "application/jsonlines")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"a": 1}\n{"a": \n', "line 2 of the application/jsonlines body is not valid JSON"),
        ('{"a": 1}\n\n{"a": 1}{"a": 2}\n', "line 3 of the application/jsonlines body is not valid JSON"),
        ("\n \n", "request body is empty"),
        ("[1, 2]\n", "instance 0 must be a JSON object"),
    ],
)
def test_a_bad_json_lines_body_is_named_by_line(body: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        inference.input_fn(body, "application/jsonlines")


def test_the_json_lines_answer_is_json_dumps_of_each_prediction() -> None:
    predictions: list[Any] = ["setosa", 'a "quoted", \\ label', "naïve ☃", 1.5, -0.0, 1e-300, 3, float("nan"), None]
    text, content_type = inference.output_fn(predictions, "application/jsonlines; charset=utf-8")
    assert content_type == "application/jsonlines"
    assert text == "".join(json.dumps({"prediction": p}) + "\n" for p in predictions)


def test_uniform_records_make_the_frame_the_general_path_makes() -> None:
    records = [{"a": 1, "b": "x", "c": None}, {"a": 2.5, "b": None, "c": True}, {"a": None, "b": "y", "c": False}]
    quick = inference._records_frame(records)
    general = inference._records_frame([*records, {"b": "z", "a": 3}])  # one record in another order, lacking c
    pd.testing.assert_frame_equal(quick, general.iloc[:3])
    assert {str(dtype) for dtype in quick.dtypes} == {"object"}
    assert quick.attrs["stepml_absent_fields"] == {} and general.attrs["stepml_absent_fields"] == {"c": [3]}


@pytest.mark.parametrize(
    "values",
    [
        [1, 2.5, -0.0, 2**60 + 1, 10**20, 1e308, -7],
        [1, None, 2.5],  # None: the general path
        ["1.5", 2, float("nan")],  # text: the general path
        [True, 1.0],  # a boolean is not a plain number here
    ],
)
def test_plain_numbers_convert_as_each_value_would(values: list[Any]) -> None:
    expected = np.array([inference_number(v) for v in values], dtype="float64")
    np.testing.assert_array_equal(coerce_column(values, "numeric", "x"), expected)


def inference_number(value: Any) -> float:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    return float(value)


def test_the_bring_your_model_example_answers_batch_scoring_too() -> None:
    """docs/examples/text-classifier's serving functions take JSON Lines and answer a line per row."""
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).parents[2] / "docs" / "examples" / "text-classifier"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location("text_classifier_example", folder / "train.py")
        assert spec is not None and spec.loader is not None
        example = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(example)
    finally:
        sys.path.remove(str(folder))
    frame = example.input_fn(b'{"review": "great"}\n\n{"review": "awful"}\n', "application/jsonlines")
    assert frame.to_dict("records") == [{"review": "great"}, {"review": "awful"}]
    text, content_type = example.output_fn(["pos", "neg"], "application/jsonlines")
    assert (text, content_type) == ('{"prediction": "pos"}\n{"prediction": "neg"}\n', "application/jsonlines")
