"""The inference API's contract at the handler: malformed requests get a 4xx with a clear JSON message (never a
500, a 502 or a storage detail), wrong methods a 405 with Allow, ``GET /model`` only what a client needs, and
an OpenAPI document that describes the statuses sent and the served model's features (issue 13)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from openapi_spec_validator import validate
from pipeline_core.aws.sagemaker import StandInEndpoints
from pipeline_core.standin.errors import ModelError

from functions.inference import app as inference_app
from tests.conftest import FakeAws
from tests.unit.test_inference_api import (
    CATEGORICAL,
    NUMERIC,
    get_event,
    predict_event,
    publish,
    rows,
)
from tests.unit.test_inference_api import api as api

# what no answer may carry: the account, the execution ARN, the buckets, the artifact and dataset URIs
SECRETS = ("123456789012", "arn:aws", "s3://", "stepml-test-data", "model.tar.gz")


def answer(event: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    """(status, headers, JSON body) of the handler's proxy response."""
    response = inference_app.lambda_handler(event, None)
    headers = {k: ", ".join(v) for k, v in (response.get("multiValueHeaders") or {}).items()}
    headers.update(response.get("headers") or {})
    assert headers["Content-Type"] == "application/json", response
    body = json.loads(response["body"])
    if response["statusCode"] >= 400:
        assert isinstance(body.get("message"), str) and body["message"], body
    assert not any(secret in response["body"] for secret in SECRETS), response["body"]
    return response["statusCode"], headers, body


def raw_event(raw: bytes, base64_encoded: bool = True) -> dict[str, Any]:
    event = predict_event(None, base64.b64encode(raw).decode() if base64_encoded else raw.decode())
    event["isBase64Encoded"] = base64_encoded
    return event


def method_event(method: str, path: str) -> dict[str, Any]:
    event = get_event(path)
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    return event


def test_a_body_that_is_not_utf8_is_400_and_a_base64_json_body_is_read(api: FakeAws) -> None:
    pipeline_rows = rows(2)
    publish(api, "run-a")
    status, _, body = answer(raw_event(b'{"instances": [{"sepal_length_cm": "\xff\xfe"}]}'))
    assert status == 400 and "UTF-8" in body["message"]
    status, _, body = answer(raw_event(b"\x80not base64 at all!"[1:], base64_encoded=False) | {"isBase64Encoded": True})
    assert status == 400 and "base64" in body["message"]
    # API Gateway base64-encodes a body it takes for binary; valid UTF-8 JSON is then read as usual
    status, _, body = answer(raw_event(json.dumps({"instances": pipeline_rows}).encode()))
    assert status == 200 and len(body["predictions"]) == 2


def test_a_lone_surrogate_escape_is_400(api: FakeAws) -> None:
    # valid JSON grammar, but not Unicode text: it failed the prediction log's hash (UnicodeEncodeError, 500)
    publish(api, "run-a")
    for key, value in (("extra", "\udc00"), ("\ud800x", "a")):
        instances = rows(2)
        instances[1][key] = value
        status, _, body = answer(predict_event({"instances": instances}))
        assert status == 400 and "surrogate" in body["message"], body
    instances = rows(1)
    instances[0]["emoji"] = "\U0001f600"  # a pair of escapes is one character: fine
    status, _, body = answer(predict_event({"instances": instances}))
    assert status == 200, body


def test_json_nested_too_deep_is_400(api: FakeAws) -> None:
    publish(api, "run-a")
    for depth in (10_000, 1_000):
        deep = "[" * depth + "]" * depth
        status, _, body = answer(predict_event(None, '{"instances": [{"sepal_length_cm": ' + deep + "}]}"))
        assert status == 400, body
        assert "nested" in body["message"] or "not valid JSON" in body["message"], body


def test_numbers_beyond_a_double_are_400_naming_the_field(api: FakeAws) -> None:
    publish(api, "run-a")
    for exponent in (5000, 400, 309):
        instances = rows(2)
        instances[1]["sepal_width_cm"] = "@"
        raw = json.dumps({"instances": instances}).replace('"@"', "1" + "0" * exponent)
        status, _, body = answer(predict_event(None, raw))
        assert status == 400, (exponent, body)
        assert "sepal_width_cm" in body["message"] or "digits" in body["message"], body
    # finite, but too large for the model (found by schemathesis: 1.8e308 made the fitted scaler overflow, 502)
    instances = rows(2)
    instances[1]["petal_length_cm"] = 1.7976931348623157e308
    instances[0]["sepal_length_cm"] = -3.5e38
    status, _, body = answer(predict_event({"instances": instances}))
    assert status == 400, body
    assert [(e["row"], e["field"]) for e in body["errors"]] == [(0, "sepal_length_cm"), (1, "petal_length_cm")]
    assert "within ±3.4e38" in body["errors"][0]["message"]
    instances[0]["sepal_length_cm"] = -3.4e38  # the largest the API takes is answered
    instances[1]["petal_length_cm"] = 1e38
    status, _, body = answer(predict_event({"instances": instances}))
    assert status == 200, body
    # a categorical feature takes a number as a label, but not one beyond that either
    instances = rows(1)
    instances[0][CATEGORICAL] = "@"
    status, _, body = answer(predict_event(None, json.dumps({"instances": instances}).replace('"@"', "9" * 400)))
    assert status == 400 and CATEGORICAL in body["message"], body


def test_a_model_failure_is_502_without_storage_details(api: FakeAws, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(api, "run-a")

    def fail(self: Any, endpoint: str, records: Any) -> Any:
        raise ModelError("could not load s3://stepml-test-data/models/x/model.tar.gz for arn:aws:sagemaker:x")

    monkeypatch.setattr(StandInEndpoints, "predict", fail)
    status, _, body = answer(predict_event({"instances": rows(1)}))
    assert status == 502 and "request id" in body["message"], body


def test_wrong_methods_on_known_paths_are_405_with_allow(api: FakeAws) -> None:
    cases = [
        ("GET", "/predict", "POST"),
        ("PUT", "/predict", "POST"),
        ("DELETE", "/model", "GET"),
        ("POST", "/health", "GET"),
        ("PATCH", "/openapi.json", "GET"),
        ("TRACE", "/predict", "POST"),
        ("TRACE", "/health", "GET"),
        ("QUERY", "/model", "GET"),
        ("OPTIONS", "/predict", "POST"),
    ]
    for method, path, allowed in cases:
        status, headers, body = answer(method_event(method, path))
        assert status == 405, (method, path, body)
        assert headers.get("Allow") == allowed, (method, path, headers)
        assert f"{method} {path}" in body["message"] and allowed in body["message"]
    for method in ("GET", "TRACE", "POST"):
        status, headers, body = answer(method_event(method, "/nowhere"))
        assert status == 404 and "Allow" not in headers, (method, body)


def test_model_returns_what_a_client_needs_and_no_account_or_storage_detail(api: FakeAws) -> None:
    publish(api, "run-a")
    status, _, body = answer(get_event("/model"))
    assert status == 200
    assert body["model_name"] == "iris" and body["version"] == 1
    assert body["problem_type"] == "multiclass_classification" and body["target"] == "species"
    assert body["class_labels"] == ["setosa", "versicolor", "virginica"]
    assert body["metrics"] == {"f1_macro": 0.95} and body["primary_metric"] == "f1_macro"
    assert body["feature_columns"] == [*NUMERIC, CATEGORICAL]
    assert body["feature_kinds"] == {**dict.fromkeys(NUMERIC, "numeric"), CATEGORICAL: "categorical"}
    for hidden in ("execution_arn", "model_artifact", "dataset_uri", "endpoint_name", "training_job_name",
                   "evaluation_uri", "report_uri", "code_uri", "image", "baseline_uri"):  # fmt: skip
        assert hidden not in body, hidden


def test_the_openapi_document_describes_the_served_models_features_and_the_statuses_sent(api: FakeAws) -> None:
    response = inference_app.lambda_handler(get_event("/openapi.json"), None)
    generic = json.loads(response["body"])
    validate(generic)
    assert "422" not in json.dumps(generic["paths"]), "422 is never sent"
    publish(api, "run-a")
    document = json.loads(inference_app.lambda_handler(get_event("/openapi.json"), None)["body"])
    validate(document)
    predict = document["paths"]["/predict"]["post"]
    assert set(predict["responses"]) == {"200", "400", "413", "415", "429", "500", "502", "503"}
    assert set(document["paths"]["/model"]["get"]["responses"]) == {"200", "429", "500", "503"}
    row = document["components"]["schemas"]["PredictRequest"]["properties"]["instances"]["items"]
    assert row["required"] == [*NUMERIC, CATEGORICAL]
    assert row["properties"]["sepal_length_cm"]["type"] == ["number", "null"]
    assert set(row["properties"][CATEGORICAL]["type"]) == {"string", "number", "boolean", "null"}
    assert "iris v1" in document["info"]["description"]
    assert "422" not in json.dumps(document["paths"])
