"""The inference API handler on API Gateway proxy events: a real model trained by train.py, registered in the
(moto) registry and served by the SageMaker stand-in; the prediction log; the OpenAPI document."""

from __future__ import annotations

import functools
import io
import json
import logging
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from openapi_spec_validator import validate
from pipeline_core.aws.prediction_log import PredictionLog, input_sha256
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.errors import TransientStoreError
from pipeline_core.stages import inference_api
from pipeline_core.stages.inference_api import ServedModelCache
from pipeline_core.stages.inference_api_contract import MAX_BODY_BYTES, MAX_ROWS
from pipeline_core.standin.runtime import reset_model_cache
from pipeline_core.standin.store import RecordStore
from sklearn.datasets import load_iris

from functions.inference import app as inference_app
from tests.conftest import FakeAws, load_event
from tests.unit.test_standin import deploy, upload_source

LOG_TABLE = "stepml-test-predictions"
ENDPOINT = "stepml-test-iris-ep"  # the endpoint test_standin's deploy() creates


# --- a real model: iris (the bundled dataset's column names), optionally with a categorical feature ---

NUMERIC = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
CATEGORICAL = "sepal_shape"


def iris_frame(categorical: bool = True) -> pd.DataFrame:
    iris = load_iris(as_frame=True)
    frame = iris.frame.drop(columns="target")
    frame.columns = NUMERIC
    if categorical:  # derived from the data, so it carries signal like a real categorical column
        frame[CATEGORICAL] = ["wide" if w > 3.0 else "narrow" for w in frame["sepal_width_cm"]]
    frame["species"] = [str(iris.target_names[i]) for i in iris.target]
    return frame.sample(frac=1.0, random_state=11).reset_index(drop=True)


def features(categorical: bool = True) -> list[str]:
    return [*NUMERIC, CATEGORICAL] if categorical else list(NUMERIC)


@functools.cache
def trained(max_iter: int, categorical: bool = True) -> tuple[bytes, Any]:
    """(model.tar.gz bytes, fitted pipeline) of train.py's own train() on the iris frame."""
    from training.train import train, write_outputs

    frame = iris_frame(categorical)
    outcome = train(
        frame.iloc[:90], frame.iloc[90:120], frame.iloc[120:],
        target="species", problem_type="multiclass_classification", params={"max_iter": max_iter},
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as temp:
        model_dir = Path(temp) / "model"
        write_outputs(outcome, model_dir, Path(temp) / "data")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in sorted(model_dir.iterdir()):
                tar.add(path, arcname=path.name)
    return buffer.getvalue(), outcome.bundle["pipeline"]


def rows(count: int, start: int = 120) -> list[dict[str, Any]]:
    frame = iris_frame().drop(columns="species").iloc[start : start + count]
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in frame.to_dict("records")]


def own_predictions(pipeline: Any, instances: list[dict[str, Any]], categorical: bool = True) -> list[str]:
    frame = pd.DataFrame(instances, columns=features(categorical))
    return [str(p) for p in pipeline.predict(frame)]


def registry_record(
    version_tag: str, artifact: str, status: str = "approved", categorical: bool = True
) -> dict[str, Any]:
    return {
        "model_name": "iris",
        "status": status,
        "problem_type": "multiclass_classification",
        "target": "species",
        "feature_columns": features(categorical),
        "class_labels": ["setosa", "versicolor", "virginica"],
        "metrics": {"f1_macro": 0.95},
        "primary_metric": "f1_macro",
        "model_artifact": artifact,
        "dataset_uri": "s3://stepml-test-data/raw/run/iris.csv",
        "dataset_sha256": "0" * 64,
        "training_job_name": f"stepml-{version_tag}",
        "endpoint_name": ENDPOINT if status == "approved" else None,
        "endpoint_config_name": f"stepml-{version_tag}" if status == "approved" else None,
        "execution_arn": f"arn:aws:states:us-east-1:123456789012:execution:stepml:{version_tag}",
        "evaluation_uri": "s3://stepml-test-data/models/x/evaluation/evaluation.json",
        "report_uri": "s3://stepml-test-data/models/x/evaluation/report.html",
        "created_at": "2026-11-14T09:00:00+00:00",
    }


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def api(aws: FakeAws, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAws]:
    """The moto account plus the prediction log table and the inference function's environment."""
    aws.dynamodb.create_table(
        TableName=LOG_TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "request_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "request_id", "KeyType": "HASH"}],
    )
    monkeypatch.setenv("MODEL_NAME", "iris")
    monkeypatch.setenv("PREDICTION_LOG_TABLE", LOG_TABLE)
    monkeypatch.setenv("REGISTRY_CACHE_SECONDS", "0")  # the cache has its own test; here every call reads
    reset_model_cache()
    inference_app._app.cache_clear()
    yield aws
    inference_app._app.cache_clear()
    reset_model_cache()


def publish(fake: FakeAws, run: str, max_iter: int = 30, status: str = "approved", categorical: bool = True) -> Any:
    """Upload a trained model, deploy it on the stand-in and register it; returns its fitted pipeline."""
    data, pipeline = trained(max_iter, categorical)
    url = fake.put(f"models/stepml-{run}/output/model.tar.gz", data)
    if status == "approved":
        if not fake.s3.list_objects_v2(Bucket=fake.bucket, Prefix="code/").get("KeyCount"):
            upload_source(fake)
        store = RecordStore(fake.bucket, fake.s3)
        deploy(store, fake, run, url, update=store.get("endpoints", ENDPOINT) is not None)
    ModelRegistry(fake.registry_table, fake.dynamodb).register_model(registry_record(run, url, status, categorical))
    return pipeline


def call(event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    answer = inference_app.lambda_handler(event, None)
    assert answer["multiValueHeaders"]["Content-Type"] == ["application/json"]
    return answer["statusCode"], json.loads(answer["body"])


def predict_event(body: Any, raw: str | None = None) -> dict[str, Any]:
    event = load_event("apigw_predict")
    event["body"] = raw if raw is not None else json.dumps(body)
    return event


def get_event(path: str) -> dict[str, Any]:
    event = load_event("apigw_health")
    event["path"] = event["resource"] = path
    return event


def log_items(fake: FakeAws) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = fake.dynamodb.scan(TableName=LOG_TABLE)["Items"]
    return items


# --- predictions ------------------------------------------------------------------------------------


def test_predict_answers_the_models_own_predictions_and_logs_the_request(api: FakeAws) -> None:
    pipeline = publish(api, "run-a")
    instances = rows(30)
    status, body = call(predict_event({"instances": instances}))

    assert status == 200, body
    assert body == {"predictions": own_predictions(pipeline, instances), "model_version": 1, "model_name": "iris"}
    assert set(body["predictions"]) <= {"setosa", "versicolor", "virginica"}

    (item,) = log_items(api)
    assert item["request_id"] == {"S": load_event("apigw_predict")["requestContext"]["requestId"]}
    assert item["model_name"] == {"S": "iris"} and item["model_version"] == {"N": "1"}
    assert item["n_rows"] == {"N": "30"}
    assert item["input_sha256"] == {"S": input_sha256(instances)}
    assert float(item["latency_ms"]["N"]) >= float(item["model_latency_ms"]["N"]) > 0
    assert int(item["expires_at"]["N"]) - int(pd.Timestamp(item["timestamp"]["S"]).timestamp()) == 30 * 86_400


def test_the_sample_event_is_answered_by_a_model_of_the_bundled_iris_data(api: FakeAws) -> None:
    pipeline = publish(api, "run-a", categorical=False)
    event = load_event("apigw_predict")
    status, body = call(event)
    assert status == 200, body
    sent = json.loads(event["body"])["instances"]
    assert body["predictions"] == own_predictions(pipeline, sent, categorical=False)
    assert body["predictions"] == ["setosa", "virginica"]  # two textbook flowers


def test_a_newly_registered_version_is_served(api: FakeAws) -> None:
    publish(api, "run-a", max_iter=30)
    second = publish(api, "run-b", max_iter=5)
    instances = rows(30)
    status, body = call(predict_event({"instances": instances}))
    assert status == 200
    assert body["model_version"] == 2
    assert body["predictions"] == own_predictions(second, instances)


def test_health_and_model(api: FakeAws) -> None:
    status, body = call(load_event("apigw_health"))
    assert (status, body) == (200, {"status": "ok", "model_name": "iris"})

    status, body = call(get_event("/model"))
    assert status == 503 and "no approved version of model 'iris'" in body["message"]

    publish(api, "run-a")
    status, body = call(get_event("/model"))
    assert status == 200
    assert body["version"] == 1 and "endpoint_name" not in body
    assert body["feature_columns"] == [*NUMERIC, CATEGORICAL]
    assert body["feature_kinds"] == {**dict.fromkeys(NUMERIC, "numeric"), CATEGORICAL: "categorical"}


def test_no_approved_model_is_503(api: FakeAws) -> None:
    status, body = call(predict_event({"instances": rows(1)}))
    assert status == 503
    assert "no approved version of model 'iris' is deployed yet" in body["message"]

    publish(api, "run-r", status="rejected")
    status, body = call(predict_event({"instances": rows(1)}))
    assert status == 503 and "no approved version" in body["message"]
    assert log_items(api) == []


def test_an_approved_model_without_its_endpoint_is_503(api: FakeAws) -> None:
    data, _ = trained(30)
    url = api.put("models/stepml-run-x/output/model.tar.gz", data)
    ModelRegistry(api.registry_table, api.dynamodb).register_model(registry_record("run-x", url))
    status, body = call(predict_event({"instances": rows(1)}))
    assert status == 503
    assert f"its endpoint {ENDPOINT} is not available" in body["message"]


# --- invalid input ----------------------------------------------------------------------------------


def problems(body: dict[str, Any]) -> list[tuple[Any, Any]]:
    return [(e.get("row"), e.get("field")) for e in body["errors"]]


def test_rows_with_missing_columns_and_wrong_types_are_400_naming_each(api: FakeAws) -> None:
    publish(api, "run-a")
    instances = rows(5)
    del instances[1]["petal_width_cm"]
    del instances[2][CATEGORICAL], instances[2]["sepal_width_cm"]
    instances[3]["petal_length_cm"] = "long"
    instances[4]["sepal_length_cm"] = True
    instances[0][CATEGORICAL] = 3  # a number in a categorical feature is fine: it is a label
    status, body = call(predict_event({"instances": instances}))

    assert status == 400
    assert problems(body) == [
        (1, "petal_width_cm"),
        (2, None),
        (3, "petal_length_cm"),
        (4, "sepal_length_cm"),
    ]
    messages = [e["message"] for e in body["errors"]]
    assert "row 2: missing feature column(s) ['sepal_width_cm', 'sepal_shape']" in messages
    assert "expected a number or null, got 'long' (a string)" in messages[2]
    assert "got True (a boolean)" in messages[3]
    assert body["message"].startswith("invalid request: 4 problems, the first: row 1: missing feature")
    assert log_items(api) == []


def test_null_is_a_missing_value_and_extra_fields_are_ignored(api: FakeAws) -> None:
    pipeline = publish(api, "run-a")
    instances = rows(3)
    instances[0]["petal_width_cm"] = None
    instances[1][CATEGORICAL] = None
    instances[2]["id"] = "not a feature"
    status, body = call(predict_event({"instances": instances}))
    assert status == 200, body
    assert body["predictions"] == own_predictions(pipeline, instances)


MALFORMED: list[tuple[Any, str | None, list[tuple[Any, Any]], str]] = [
    (None, '{"instances": [', [(None, None)], "the body is not valid JSON"),
    (["not", "an object"], None, [(None, None)], 'the body must be a JSON object {"instances": [...]}'),
    ({"rows": []}, None, [(None, "instances"), (None, "rows")], "the body needs 'instances'"),
    ({"instances": []}, None, [(None, "instances")], "instances is empty: send 1 to 1000 rows"),
    ({"instances": {"a": 1}}, None, [(None, "instances")], "instances must be a list of row objects"),
    ({"instances": [7]}, None, [(0, None)], "row 0: must be an object of feature: value, got 7"),
    (
        {"instances": [{"sepal_length_cm": [5.1]}]},
        None,
        [(0, "sepal_length_cm")],
        "row 0: feature 'sepal_length_cm' must be a number, string, boolean or null, got [5.1]",
    ),
]


def test_malformed_bodies_are_400(api: FakeAws) -> None:
    # one test, not one per case: each would pay for a new moto account
    for body, raw, where, message in MALFORMED:
        status, answer = call(predict_event(body, raw))
        assert status == 400, (body, answer)
        assert problems(answer) == where, body
        assert message in answer["errors"][0]["message"], body


def test_a_body_that_is_not_json_is_415_and_curls_form_default_is_read_as_json(api: FakeAws) -> None:
    pipeline = publish(api, "run-a")
    event = predict_event({"instances": rows(2)})
    event["headers"]["Content-Type"] = event["multiValueHeaders"]["Content-Type"][0] = "text/csv"
    status, body = call(event)
    assert status == 415 and "Content-Type: application/json" in body["message"]

    event["headers"]["Content-Type"] = "application/x-www-form-urlencoded"
    event["multiValueHeaders"]["Content-Type"] = ["application/x-www-form-urlencoded"]
    status, body = call(event)
    assert status == 200 and body["predictions"] == own_predictions(pipeline, rows(2))


def test_non_finite_numbers_are_400(api: FakeAws) -> None:
    publish(api, "run-a")
    instances = rows(3)
    instances[1]["sepal_width_cm"] = float("inf")
    instances[2]["petal_width_cm"] = float("nan")
    # Python's json writes Infinity/NaN, which JSON does not have but Python's parser accepts
    status, body = call(predict_event(None, json.dumps({"instances": instances})))
    assert status == 400
    assert problems(body) == [(1, "sepal_width_cm"), (2, "petal_width_cm")]
    assert "must be a finite number (null marks a missing value), got inf" in body["errors"][0]["message"]


def test_too_many_rows_or_bytes_is_413(api: FakeAws) -> None:
    publish(api, "run-a")
    status, body = call(predict_event({"instances": rows(1) * (MAX_ROWS + 1)}))
    assert status == 413
    assert body["message"] == f"too many rows: at most {MAX_ROWS} per request"

    padding = "x" * (MAX_BODY_BYTES + 1)
    status, body = call(predict_event({"instances": [{**rows(1)[0], "padding": padding}]}))
    assert status == 413
    assert f"at most {MAX_BODY_BYTES} bytes" in body["message"]

    # exactly the maximum number of rows is fine
    status, body = call(predict_event({"instances": rows(1) * MAX_ROWS}))
    assert status == 200 and len(body["predictions"]) == MAX_ROWS


def test_unknown_route_is_404(api: FakeAws) -> None:
    status, body = call(get_event("/nothing"))
    assert status == 404 and "use POST /predict" in body["message"]


# --- the prediction log -----------------------------------------------------------------------------


def test_a_failing_log_table_does_not_fail_the_request(
    api: FakeAws, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = publish(api, "run-a")
    api.dynamodb.delete_table(TableName=LOG_TABLE)
    instances = rows(4)
    status, body = call(predict_event({"instances": instances}))
    assert status == 200
    assert body["predictions"] == own_predictions(pipeline, instances)
    assert "could not write the prediction log" in caplog.text
    assert '"PredictionLogFailures":[1.0]' in capsys.readouterr().out  # the EMF metric line


def test_a_request_line_is_logged_for_refused_requests_not_for_answered_ones(
    api: FakeAws, caplog: pytest.LogCaptureFixture
) -> None:
    # the stage's access log has every request and the metrics count them: a line per 2xx costs a request a
    # sixth of its time (and CloudWatch Logs ingestion on AWS)
    publish(api, "run-a")
    with caplog.at_level(logging.INFO):
        assert call(predict_event({"instances": rows(1)}))[0] == 200
        assert [r for r in caplog.records if r.getMessage() == "request"] == []
        assert call(predict_event({"instances": [{"nope": 1}]}))[0] == 400
    lines = [r for r in caplog.records if r.getMessage() == "request"]
    assert len(lines) == 1 and lines[0].__dict__["status"] == 400


def test_sampling_rate_zero_logs_nothing(api: FakeAws, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(api, "run-a")
    monkeypatch.setenv("PREDICTION_LOG_SAMPLE_RATE", "0")
    status, _ = call(predict_event({"instances": rows(2)}))
    assert status == 200
    assert log_items(api) == []


def test_a_logged_request_keeps_its_rows_for_monitoring_unless_the_feature_sample_leaves_them(
    api: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(api, "run-a")
    instances = rows(5)
    assert call(predict_event({"instances": instances}))[0] == 200
    (item,) = log_items(api)
    assert json.loads(item["features"]["S"]) == instances
    assert item["features_rows"] == {"N": "5"} and item["features_truncated"] == {"BOOL": False}
    assert item["features_at"] == item["timestamp"]  # the sort key of the ModelFeatures index

    api.dynamodb.delete_item(TableName=LOG_TABLE, Key={"request_id": item["request_id"]})
    monkeypatch.setenv("PREDICTION_LOG_FEATURE_SAMPLE_RATE", "0")
    inference_app._app.cache_clear()
    assert call(predict_event({"instances": instances}))[0] == 200
    (item,) = log_items(api)
    assert "features" not in item and "features_at" not in item  # logged, but outside the sparse index


def test_background_mode_keeps_the_rows_too(api: FakeAws) -> None:
    from pipeline_core.aws.prediction_log import PredictionRecord

    log = PredictionLog(LOG_TABLE, dynamodb_client=api.dynamodb, mode="background")
    instances = rows(3)
    assert log.record(PredictionRecord("req-rows", "iris", 1, 2.0, 1.0, 3, "0" * 64, rows=instances)) is None
    log.flush()
    (item,) = log_items(api)
    assert json.loads(item["features"]["S"]) == instances and "features_at" in item


def test_sampling_and_ttl_settings_are_checked() -> None:
    env = {"PREDICTION_LOG_TABLE": "t"}
    assert PredictionLog.from_env({**env, "PREDICTION_LOG_SAMPLE_RATE": "0.25"}).sample_rate == 0.25
    log = PredictionLog("t", sample_rate=0.25, sampler=iter([0.1, 0.3]).__next__)
    assert [log.sampled(), log.sampled()] == [True, False]
    for bad in ("1.5", "-0.1", "often"):
        with pytest.raises(Exception, match="PREDICTION_LOG_SAMPLE_RATE must be a number from 0 to 1"):
            PredictionLog.from_env({**env, "PREDICTION_LOG_SAMPLE_RATE": bad})
    with pytest.raises(Exception, match="PREDICTION_LOG_FEATURE_SAMPLE_RATE must be a number from 0 to 1"):
        PredictionLog.from_env({**env, "PREDICTION_LOG_FEATURE_SAMPLE_RATE": "2"})
    assert PredictionLog.from_env({**env, "PREDICTION_LOG_FEATURE_SAMPLE_RATE": "0.5"}).feature_sample_rate == 0.5
    with pytest.raises(Exception, match="PREDICTION_LOG_TTL_DAYS"):
        PredictionLog.from_env({**env, "PREDICTION_LOG_TTL_DAYS": "0"})
    with pytest.raises(Exception, match="PREDICTION_LOG_TABLE is not set"):
        PredictionLog.from_env({})


def test_background_mode_writes_in_batches_and_reports_failures(api: FakeAws) -> None:
    from pipeline_core.aws.prediction_log import PredictionRecord

    log = PredictionLog(LOG_TABLE, dynamodb_client=api.dynamodb, mode="background")
    records = [PredictionRecord(f"req-{i}", "iris", 1, 2.0, 1.0, 1, "0" * 64) for i in range(60)]
    assert all(log.record(r) is None for r in records)
    log.flush()
    assert len(log_items(api)) == 60
    api.dynamodb.delete_table(TableName=LOG_TABLE)
    assert log.record(records[0]) is None  # queued: the request is not held up
    log.flush()
    (failure,) = log.take_failures()
    assert "1 prediction log item(s) lost: ResourceNotFoundException" in failure
    with pytest.raises(Exception, match="PREDICTION_LOG_MODE must be one of sync, background"):
        PredictionLog.from_env({"PREDICTION_LOG_TABLE": "t", "PREDICTION_LOG_MODE": "later"})


def test_the_input_hash_is_canonical() -> None:
    assert input_sha256([{"a": 1, "b": "x"}]) == input_sha256(json.loads('[{"b": "x",   "a": 1}]'))
    assert input_sha256([{"a": 1}]) != input_sha256([{"a": 2}])


# --- the registry cache -----------------------------------------------------------------------------


def test_the_champion_is_cached_for_the_ttl_and_a_failed_refresh_keeps_it(api: FakeAws) -> None:
    publish(api, "run-a")
    registry = ModelRegistry(api.registry_table, api.dynamodb)
    now = [0.0]
    reads: list[str] = []

    def kinds(artifact: str) -> dict[str, str]:
        reads.append(artifact)
        return {}

    cache = ServedModelCache("iris", registry, kinds, ttl_seconds=5, clock=lambda: now[0])
    first = cache.get()
    assert first is not None and first.record.version == 1
    publish(api, "run-b", max_iter=5)
    now[0] = 4.9
    assert cache.get() is first
    now[0] = 5.0
    second = cache.get()
    assert second is not None and second.record.version == 2
    now[0] = 10.0
    assert cache.get() == second  # re-read from the registry, same version
    assert len(reads) == 2  # feature kinds read once per artifact

    def broken(model_name: str) -> None:
        raise TransientStoreError("throttled")

    registry.champion = broken
    now[0] = 20.0
    assert cache.get() == second  # the version already known, not an error


def test_registry_outage_without_a_known_model_is_503(api: FakeAws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_REGISTRY_TABLE", "no-such-table")
    monkeypatch.setattr(
        ModelRegistry, "champion", lambda self, name: (_ for _ in ()).throw(TransientStoreError("unavailable"))
    )
    answer = inference_app.lambda_handler(predict_event({"instances": rows(1)}), None)
    assert answer["statusCode"] == 503
    assert answer["multiValueHeaders"].get("Retry-After") == ["1"]
    assert "the model registry is unavailable" in json.loads(answer["body"])["message"]


# --- the OpenAPI document ---------------------------------------------------------------------------


def test_the_openapi_document_is_valid_and_describes_the_api(api: FakeAws) -> None:
    status, document = call(get_event("/openapi.json"))
    assert status == 200
    validate(document)  # raises on an invalid OpenAPI document
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    assert set(paths) == {"/predict", "/health", "/model"}
    predict = paths["/predict"]["post"]
    assert {"200", "400", "413", "502", "503"} <= set(predict["responses"])
    schemas = document["components"]["schemas"]
    instances = schemas["PredictRequest"]["properties"]["instances"]
    assert (instances["minItems"], instances["maxItems"]) == (1, MAX_ROWS)
    assert set(schemas["PredictResponse"]["required"]) == {"predictions", "model_version", "model_name"}
    assert "feature_columns" in schemas["ServedModel"]["properties"]


def test_the_module_reads_no_environment_at_import() -> None:
    # create_app needs a service; building one without the environment fails loudly, naming the variable
    with pytest.raises(Exception, match="MODEL_NAME is not set"):
        inference_api.InferenceService.from_env({})


def test_the_sample_events_have_the_rest_proxy_shape() -> None:
    for name, method in (("apigw_predict", "POST"), ("apigw_health", "GET")):
        event = load_event(name)
        keys = {"resource", "path", "httpMethod", "headers", "multiValueHeaders", "queryStringParameters",
                "multiValueQueryStringParameters", "pathParameters", "stageVariables", "requestContext", "body",
                "isBase64Encoded"}  # fmt: skip
        assert keys <= set(event), name
        context = event["requestContext"]
        assert {"requestId", "stage", "resourcePath", "httpMethod", "identity", "apiId", "path"} <= set(context)
        assert event["httpMethod"] == context["httpMethod"] == method
        assert context["path"] == f"/{context['stage']}{event['path']}"
