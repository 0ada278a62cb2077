"""Shared fixtures: a moto-backed AWS with the pipeline's bucket and tables, and sample events."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

EVENTS = Path(__file__).parent / "events"
REGION = "us-east-1"


def load_event(name: str) -> dict[str, Any]:
    """A sample event from tests/events/<name>.json."""
    return json.loads((EVENTS / f"{name}.json").read_text())


class FakeAws:
    """Names and clients of the resources the unit tests' moto account holds."""

    bucket = "stepml-test-data"
    registry_table = "stepml-test-registry"
    runs_table = "stepml-test-runs"
    idempotency_table = "stepml-test-idempotency"

    def __init__(self) -> None:
        self.s3 = boto3.client("s3", region_name=REGION)
        self.dynamodb = boto3.client("dynamodb", region_name=REGION)
        self.s3.create_bucket(Bucket=self.bucket)
        self.dynamodb.create_table(
            TableName=self.registry_table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "model_name", "AttributeType": "S"},
                {"AttributeName": "version", "AttributeType": "N"},
            ],
            KeySchema=[
                {"AttributeName": "model_name", "KeyType": "HASH"},
                {"AttributeName": "version", "KeyType": "RANGE"},
            ],
        )
        self.dynamodb.create_table(
            TableName=self.runs_table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "run_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "run_id", "KeyType": "HASH"}],
        )
        self.dynamodb.create_table(
            TableName=self.idempotency_table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        )

    def put(self, key: str, data: bytes) -> str:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        return f"s3://{self.bucket}/{key}"

    def get(self, key: str) -> bytes:
        body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def env(self) -> dict[str, str]:
        """The environment infra/template.yaml gives every function, pointed at these resources."""
        return {
            "DATA_BUCKET": self.bucket,
            "MODEL_REGISTRY_TABLE": self.registry_table,
            "RUNS_TABLE": self.runs_table,
            "IDEMPOTENCY_TABLE": self.idempotency_table,
            "ENDPOINT_NAME_PREFIX": "stepml-test",
            "SAGEMAKER_BACKEND": "standin",
            "POWERTOOLS_SERVICE_NAME": "stepml-test",
            "POWERTOOLS_METRICS_NAMESPACE": "stepml-test",
            "POWERTOOLS_TRACE_DISABLED": "true",
            # Ingest's size routing, as the template's defaults set it (LargeDatasetThresholdBytes, ...)
            "LARGE_DATASET_THRESHOLD_BYTES": str(200 * 1024 * 1024),
            "DATA_STAGE_MEMORY_MB": "2048",
            "DATA_STAGE_MEMORY_FACTOR": "9.5",
        }


_DYNAMODB_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items")


def make_dynamodb_writes_atomic(monkeypatch: pytest.MonkeyPatch) -> None:
    """DynamoDB applies a conditional write atomically; moto checks and writes without a lock, so two
    threads can both pass ``attribute_not_exists``. Serialise moto's writes as DynamoDB does."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    for name in _DYNAMODB_WRITES:
        original = getattr(DynamoDBBackend, name)

        def locked(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return _original(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, locked)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAws]:
    """A fresh moto account with the pipeline's bucket and tables; function env vars set."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    make_dynamodb_writes_atomic(monkeypatch)
    with mock_aws():
        fake = FakeAws()
        for key, value in fake.env().items():
            monkeypatch.setenv(key, value)
        # clients are cached per process; a new moto account needs new clients, and Powertools objects
        # built under another test's environment (e.g. without a metrics namespace) must be built again
        from pipeline_core.aws.clients import client
        from pipeline_core.observability import reset_observability

        client.cache_clear()
        reset_observability()
        yield fake
        client.cache_clear()
        reset_observability()


@pytest.fixture
def moto_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh moto account and ``client(service)`` giving one cached boto3 client per service in it."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        made: dict[str, Any] = {}

        def client(service: str) -> Any:
            if service not in made:
                made[service] = session.client(service)
            return made[service]

        yield client


# The ARN of pipeline execution {run} (the state machine name the unit tests give it).
EXECUTION_ARN = "arn:aws:states:us-east-1:123456789012:execution:stepml-pipeline:{}"


def registry_item(fake: FakeAws, run: str, model: str, status: str) -> dict[str, Any]:
    """A registry version of model ``model`` that execution ``run`` of the pipeline registered."""
    job = f"stepml-{run}"
    return {
        "model_name": model,
        "status": status,
        "problem_type": "multiclass_classification",
        "target": "species",
        "feature_columns": ["a", "b"],
        "metrics": {"f1_macro": 0.9},
        "primary_metric": "f1_macro",
        "model_artifact": f"s3://{fake.bucket}/models/{job}/output/model.tar.gz",
        "dataset_uri": f"s3://{fake.bucket}/raw/{run}/iris.csv",
        "dataset_sha256": "0" * 64,
        "training_job_name": job,
        "endpoint_name": "stepml-test-iris-ep" if status == "approved" else None,
        "endpoint_config_name": job if status == "approved" else None,
        "execution_arn": EXECUTION_ARN.format(run),
        "evaluation_uri": f"s3://{fake.bucket}/models/{job}/evaluation/evaluation.json",
        "report_uri": f"s3://{fake.bucket}/models/{job}/evaluation/report.html",
        "created_at": "2026-11-01T00:00:00+00:00",
        "gate_reason": "superseded while waiting for the deploy lease" if status == "rejected" else "passed",
    }
