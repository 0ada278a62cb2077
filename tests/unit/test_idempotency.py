"""Powertools idempotency on the stages with side effects: a repeated invocation does not act again."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from pipeline_core.idempotency import run_once
from pipeline_core.models import IngestResult
from pipeline_core.stages import deploy_lease, rollout
from pipeline_core.stages.validate_input import build_run_config

from functions.ingest.app import lambda_handler as ingest_handler
from stepml.embedded.template import load_template
from tests.unit.test_ingest import iris_csv

REPO = Path(__file__).resolve().parents[2]

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


def _functions_using_run_once() -> set[str]:
    """Placeholders (``${<LogicalId>Arn}``) of the functions whose handler goes through ``run_once``."""
    template = load_template(REPO / "infra" / "template.yaml")["Resources"]
    using = set()
    for logical_id, resource in template.items():
        code_uri = resource.get("Properties", {}).get("CodeUri")
        if resource.get("Type") == "AWS::Serverless::Function" and isinstance(code_uri, str):
            app = REPO / "infra" / code_uri / "app.py"
            if app.exists() and "run_once(" in app.read_text():
                using.add(f"${{{logical_id}Arn}}")
    return using


def test_an_invocation_still_in_progress_is_an_error_the_state_machine_retries(aws: Any) -> None:
    event = _event(aws, "busy-1")
    started, release = threading.Event(), threading.Event()

    def slow_action(event: dict[str, Any]) -> dict[str, Any]:
        started.set()
        release.wait(10)
        return {"done": True}

    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(run_once, event, None, "execution_arn", slow_action)
        assert started.wait(10)
        # Lambda may deliver an invocation twice: the copy finds the first one's record still in progress.
        with pytest.raises(IdempotencyAlreadyInProgressError):
            run_once(event, None, "execution_arn", slow_action)
        release.set()
        assert first.result() == {"done": True}

    using = _functions_using_run_once()
    assert "${IngestFunctionArn}" in using and "${RegisterModelFunctionArn}" in using
    states = json.loads((REPO / "statemachine" / "pipeline.asl.json").read_text())["States"]
    tasks = {
        name: s
        for name, s in states.items()
        if s["Type"] == "Task"
        and s["Resource"] in using
        # RegisterModelFunction's actions (AcquireDeployLease takes its lease again, PrepareRollout puts its
        # alarms again) are dispatched before run_once: only Register's own event stores a result
        and "action" not in s.get("Parameters", {})
    }
    assert {"Ingest", "Register", "RegisterRejected"} <= set(tasks)
    exempt = {
        s["Parameters"]["action"]
        for s in states.values()
        if s["Type"] == "Task" and s["Resource"] in using and "action" in s.get("Parameters", {})
    }
    assert exempt <= {deploy_lease.ACTION, rollout.ACTION}, f"{exempt}: does a new action store its result?"
    for name, state in tasks.items():
        retried = [r for r in state["Retry"] if IdempotencyAlreadyInProgressError.__name__ in r["ErrorEquals"]]
        assert retried, f"{name} calls a function that may answer {IdempotencyAlreadyInProgressError.__name__}"
        assert retried[0]["MaxAttempts"] >= 2 and retried[0]["IntervalSeconds"] >= 1
