"""Powertools idempotency on the stages with side effects: a repeated invocation does not act again."""

from __future__ import annotations

from typing import Any

from pipeline_core.models import IngestResult
from pipeline_core.stages.validate_input import build_run_config

from functions.ingest.app import lambda_handler as ingest_handler
from tests.unit.test_ingest import iris_csv

EXECUTION_ARN = "arn:aws:states:us-east-1:123456789012:execution:stepml:once-1"


def _event(aws: Any, run_id: str) -> dict[str, Any]:
    source = aws.put("incoming/iris.csv", iris_csv())
    config = build_run_config({"dataset": source}, run_id, aws.bucket, "stepml-test")
    return {"config": config.model_dump(mode="json"), "execution_arn": EXECUTION_ARN.replace("once-1", run_id)}


def test_a_repeated_ingest_returns_the_first_result_without_copying_again(aws: Any) -> None:
    event = _event(aws, "once-1")
    first = IngestResult.model_validate(ingest_handler(event, None))
    raw_key = first.raw_uri.removeprefix(f"s3://{aws.bucket}/")
    aws.s3.delete_object(Bucket=aws.bucket, Key=raw_key)  # if the second call acted, it would copy again

    second = IngestResult.model_validate(ingest_handler(event, None))

    assert second == first
    assert aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix=raw_key).get("KeyCount", 0) == 0
    stored = aws.dynamodb.scan(TableName=aws.idempotency_table)["Items"]
    assert len(stored) == 1 and stored[0]["status"]["S"] == "COMPLETED"


def test_another_execution_is_not_deduplicated(aws: Any) -> None:
    first = IngestResult.model_validate(ingest_handler(_event(aws, "once-1"), None))
    second = IngestResult.model_validate(ingest_handler(_event(aws, "once-2"), None))
    assert first.raw_uri != second.raw_uri
    assert len(aws.dynamodb.scan(TableName=aws.idempotency_table)["Items"]) == 2
