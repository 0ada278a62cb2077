"""The SageMaker stand-in's CreateTransformJob, on a moto account, with the batch ASL's own Transform request and
a model train.py trained: SageMaker's validation, MultiRecord batching, the .out it writes, failures and retries."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pipeline_core.errors import TransformJobFailedError
from pipeline_core.standin import endpoints, transform
from pipeline_core.standin.errors import ResourceInUse, ValidationException
from pipeline_core.standin.runtime import LoadedModel, invoke_endpoint
from pipeline_core.standin.store import RecordStore

from tests.conftest import FakeAws
from tests.unit.test_standin import deploy, deploy_requests, iris_splits, publish_model, upload_source

ROOT = Path(__file__).resolve().parents[2]
BATCH_ASL = json.loads((ROOT / "statemachine" / "batch.asl.json").read_text())
ENDPOINT = "stepml-test-iris-ep"


def transform_request(fake: FakeAws, job: str, model: str) -> dict[str, Any]:
    """The request the batch state machine's Transform state sends, for a plan naming ``job`` and ``model``."""
    prep = {
        "transform_job_name": job,
        "sagemaker_model_name": model,
        "transform_input_prefix": f"s3://{fake.bucket}/batch/{job}/transform-input/",
        "transform_output_prefix": f"s3://{fake.bucket}/batch/{job}/transform-output/",
    }
    text = json.dumps(BATCH_ASL["States"]["Transform"]["Parameters"]).replace(
        "${BatchTransformInstanceType}", "ml.m5.large"
    )

    def resolve(node: Any) -> Any:
        if isinstance(node, list):
            return [resolve(item) for item in node]
        if not isinstance(node, dict):
            return node
        resolved = {}
        for key, value in node.items():
            if key.endswith(".$"):
                resolved[key[:-2]] = job if value == "$$.Execution.Name" else prep[value.removeprefix("$.prep.")]
            else:
                resolved[key] = resolve(value)
        return resolved

    request: dict[str, Any] = resolve(json.loads(text))
    return request


@pytest.fixture
def store(aws: FakeAws) -> RecordStore:
    return RecordStore(aws.bucket, aws.s3)


@pytest.fixture
def model(aws: FakeAws, store: RecordStore) -> str:
    """A SageMaker model (and an endpoint serving it) of train.py's model on iris; its name."""
    upload_source(aws)
    url, _ = publish_model(aws, "model-a")
    deploy(store, aws, "run-a", url)
    return str(deploy_requests(aws, "run-a", url)["CreateModel"]["ModelName"])


def records(count: int) -> list[dict[str, Any]]:
    """``count`` iris rows (the 150 repeated) as the batch's records: feature columns only."""
    features = iris_splits()
    frame = next(iter(features.values())).drop(columns="species")
    rows = frame.to_dict(orient="records")
    return [rows[i % len(rows)] for i in range(count)]


def put_lines(fake: FakeAws, job: str, lines: list[str], name: str = "records.jsonl") -> None:
    fake.put(f"batch/{job}/transform-input/{name}", ("\n".join(lines) + "\n").encode())


def out_lines(fake: FakeAws, job: str, name: str = "records.jsonl") -> list[str]:
    return fake.get(f"batch/{job}/transform-output/{name}.out").decode().splitlines()


# --- a job run to the end -------------------------------------------------------------------------------


def test_a_transform_job_answers_every_line_in_order_as_the_endpoint_does(
    aws: FakeAws, store: RecordStore, model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = records(2500)
    put_lines(aws, "job-1", [json.dumps(r) for r in rows])
    requests: list[int] = []
    invoke = LoadedModel.invoke

    def counted(self: LoadedModel, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        requests.append(body.count(b"\n"))
        return invoke(self, body, content_type, accept)

    monkeypatch.setattr(LoadedModel, "invoke", counted)
    request = transform_request(aws, "job-1", model)
    response = transform.create_transform_job(store, request)

    online = invoke_endpoint(ENDPOINT, rows, store=store, refresh_seconds=0)
    assert [json.loads(line) for line in out_lines(aws, "job-1")] == [{"prediction": p} for p in online]
    assert requests == [2500]  # MultiRecord: every line fits one 6 MB request
    assert response["TransformJobStatus"] == "Completed"
    assert response["TransformJobArn"] == "arn:aws:sagemaker:us-east-1:000000000000:transform-job/job-1"
    assert response["StandInProgress"]["RecordsTotal"] == response["StandInProgress"]["RecordsProcessed"] == 2500
    assert response["TransformStartTime"] <= response["TransformEndTime"]
    assert {k: response[k] for k in request if k != "Tags"} == {k: v for k, v in request.items() if k != "Tags"}
    assert json.loads(aws.get("_sagemaker/transform-jobs/job-1.json")) == response  # DescribeTransformJob's answer
    assert transform.describe_transform_job(store, {"TransformJobName": "job-1"}) == response


def test_single_record_sends_one_line_per_request_and_blank_lines_are_not_records(
    aws: FakeAws, store: RecordStore, model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = records(5)
    put_lines(aws, "job-2", [json.dumps(rows[0]), "", json.dumps(rows[1]), "  ", *map(json.dumps, rows[2:])])
    sent: list[bytes] = []
    invoke = LoadedModel.invoke

    def recorded(self: LoadedModel, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        sent.append(body)
        return invoke(self, body, content_type, accept)

    monkeypatch.setattr(LoadedModel, "invoke", recorded)
    request = {**transform_request(aws, "job-2", model), "BatchStrategy": "SingleRecord"}
    transform.create_transform_job(store, request)
    assert sent == [json.dumps(r).encode() + b"\n" for r in rows]
    assert len(out_lines(aws, "job-2")) == 5


def test_mini_batches_hold_as_many_records_as_fit_in_max_payload() -> None:
    lines = [b"x" * 99] * 25  # 100 bytes each with its newline
    batches = list(transform._batches(lines, "MultiRecord", 1000, "s3://b/k"))
    assert [(start, len(batch)) for start, batch in batches] == [(0, 10), (10, 10), (20, 5)]
    assert [len(b) for _, b in transform._batches(lines, "SingleRecord", 1000, "s3://b/k")] == [1] * 25
    with pytest.raises(TransformJobFailedError, match=r"record 3 of s3://b/k has 2000 bytes, more than MaxPayloadInMB"):
        list(transform._batches([b"a", b"b", b"c" * 2000], "MultiRecord", 1000, "s3://b/k"))


def test_every_object_under_the_prefix_gets_its_out_file_where_sagemaker_puts_it(
    aws: FakeAws, store: RecordStore, model: str
) -> None:
    rows = records(3)
    put_lines(aws, "job-3", [json.dumps(rows[0])], "a.jsonl")
    put_lines(aws, "job-3", [json.dumps(r) for r in rows[1:]], "part/b.jsonl")
    response = transform.create_transform_job(store, transform_request(aws, "job-3", model))
    assert len(out_lines(aws, "job-3", "a.jsonl")) == 1 and len(out_lines(aws, "job-3", "part/b.jsonl")) == 2
    assert sorted(response["StandInOutputs"]) == [
        f"s3://{aws.bucket}/batch/job-3/transform-output/a.jsonl.out",
        f"s3://{aws.bucket}/batch/job-3/transform-output/part/b.jsonl.out",
    ]
    assert transform.output_uri("s3://b/in", "s3://b/in/x/data.jsonl", "s3://b/out/") == "s3://b/out/x/data.jsonl.out"


# --- validation --------------------------------------------------------------------------------------


def _without(request: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in request.items() if k != key}


def _with(request: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(request)
    node = changed
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return changed


INVALID = {
    "no resources": (lambda r: _without(r, "TransformResources"), "Missing required parameter.*TransformResources"),
    "unknown field": (lambda r: {**r, "Speed": "fast"}, 'Unknown parameter in input: "Speed"'),
    "bad name": (lambda r: {**r, "TransformJobName": "bad_name"}, "transform-job name 'bad_name' must match"),
    "manifest": (
        lambda r: _with(r, "TransformInput.DataSource.S3DataSource.S3DataType", "ManifestFile"),
        "supports S3DataType S3Prefix, not ManifestFile",
    ),
    "gzip": (lambda r: _with(r, "TransformInput.CompressionType", "Gzip"), "CompressionType None only"),
    "recordio": (lambda r: _with(r, "TransformInput.SplitType", "RecordIO"), "SplitType Line or None, not RecordIO"),
    "join": (lambda r: {**r, "DataProcessing": {"JoinSource": "Input"}}, "does not apply DataProcessing"),
    "payload": (
        lambda r: {**r, "MaxPayloadInMB": 60, "MaxConcurrentTransforms": 2},
        r"MaxPayloadInMB \(60\) x MaxConcurrentTransforms \(2\) must not exceed 100",
    ),
    "no model": (lambda r: {**r, "ModelName": "stepml-nothing"}, 'Could not find model ".*model/stepml-nothing"'),
}


@pytest.mark.parametrize("case", INVALID)
def test_requests_sagemaker_would_refuse_are_refused_before_anything_runs(
    aws: FakeAws, store: RecordStore, model: str, case: str
) -> None:
    change, message = INVALID[case]
    put_lines(aws, "job-4", [json.dumps(records(1)[0])])
    with pytest.raises(ValidationException, match=message):
        transform.create_transform_job(store, change(transform_request(aws, "job-4", model)))
    assert store.get("transform-jobs", "job-4") is None


# --- failures and retries -----------------------------------------------------------------------------


def test_a_model_failure_fails_the_job_naming_the_records_and_writes_no_out(
    aws: FakeAws, store: RecordStore, model: str
) -> None:
    rows = records(4)
    column = list(rows[0])[-1]  # petal width (cm)
    bad = {**rows[2], column: "wide"}
    put_lines(aws, "job-5", [json.dumps(r) for r in [*rows[:2], bad, rows[3]]])
    with pytest.raises(
        TransformJobFailedError, match=rf"records 1-4 of s3://.*/records.jsonl.*row 2.*{re.escape(column)}"
    ):
        transform.create_transform_job(store, transform_request(aws, "job-5", model))
    record = store.get("transform-jobs", "job-5")
    assert record is not None and record["TransformJobStatus"] == "Failed"
    assert column in record["FailureReason"] and len(record["FailureReason"]) <= 1024
    assert not aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix="batch/job-5/transform-output/").get("Contents")


def test_no_input_objects_and_no_time_left_fail_the_job(aws: FakeAws, store: RecordStore, model: str) -> None:
    with pytest.raises(TransformJobFailedError, match=r"no S3 objects found under S3 URL .*/batch/job-6/"):
        transform.create_transform_job(store, transform_request(aws, "job-6", model))
    put_lines(aws, "job-7", [json.dumps(records(1)[0])])
    with pytest.raises(TransformJobFailedError, match="ran out of time after 0 of 1 records"):
        transform.create_transform_job(store, transform_request(aws, "job-7", model), time_budget_seconds=-1)


def test_a_retry_returns_the_completed_job_and_another_request_under_its_name_is_refused(
    aws: FakeAws, store: RecordStore, model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_lines(aws, "job-8", [json.dumps(r) for r in records(3)])
    request = transform_request(aws, "job-8", model)
    first = transform.create_transform_job(store, request)
    monkeypatch.setattr(LoadedModel, "invoke", lambda *a: pytest.fail("a completed job ran again"))
    assert transform.create_transform_job(store, request) == first
    with pytest.raises(ResourceInUse, match="job-8"):
        transform.create_transform_job(store, {**request, "MaxPayloadInMB": 1})


def test_serving_code_without_input_fn_cannot_answer_a_transform(
    aws: FakeAws, store: RecordStore, model: str, tmp_path: Path
) -> None:
    upload_source(
        aws, {"inference.py": "def model_fn(d):\n    return {}\n\ndef predict_fn(x, m):\n    return x\n"}, tmp_path
    )
    url, _ = publish_model(aws, "model-b")
    requests = deploy_requests(aws, "run-b", url)
    endpoints.create_model(store, requests["CreateModel"])
    put_lines(aws, "job-9", [json.dumps(records(1)[0])])
    with pytest.raises(TransformJobFailedError, match="defines no input_fn, output_fn"):
        transform.create_transform_job(store, transform_request(aws, "job-9", requests["CreateModel"]["ModelName"]))
    record = store.get("transform-jobs", "job-9")
    assert record is not None
    assert "the scikit-learn container's defaults read JSON, CSV and NPY only" in record["FailureReason"]
