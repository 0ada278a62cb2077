"""Monitoring closes the loop: the daily schedule runs the Monitor function, drift it measures for the monitored
model raises the drift alarm, the alarm notifies and its move to ALARM starts a retraining run — on the embedded
target as on AWS (Scheduler -> Lambda, CloudWatch -> EventBridge -> StartPipeline -> Step Functions)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pandas as pd
import pytest

from stepml.embedded.runtime import wait_until
from tests.integration.harness import IRIS, Finished, Harness, Job, embedded_harness

MODEL = "iris"  # the template's MonitoredModelName: the model its drift alarm and schedule watch


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    yield from embedded_harness()


@pytest.fixture(scope="module")
def champion(harness: Harness) -> Finished:
    dataset = harness.upload("datasets/drift/iris.csv", IRIS)
    run = harness.run(Job("drift-champion", {"dataset": dataset, "model_name": MODEL}))
    assert run.status == "SUCCEEDED", run.describe()
    return run


def _invocations(harness: Harness, function: str, since: int) -> list[Any]:
    name = harness.aws.stack.functions[function].name
    return [e for e in harness.aws.runner.log.entries[since:] if e.function_name == name]


def _notifications(harness: Harness) -> tuple[Any, str]:
    """An SQS queue subscribed to the stack's notification topic (how a test reads what SNS sent)."""
    sqs, sns = harness.aws.client("sqs"), harness.aws.client("sns")
    url = sqs.create_queue(QueueName="drift-notifications")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = harness.aws.stack.topics["NotificationTopic"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    return sqs, url


def _monitor(harness: Harness, key: str, frame: pd.DataFrame) -> dict[str, Any]:
    """Run the Monitor function on ``frame`` (uploaded as a CSV), as `stepml monitor --data` does."""
    uri = harness.upload(key, frame.to_csv(index=False).encode())
    result = harness.aws.invoke("MonitorFunction", {"model_name": MODEL, "data": uri})
    assert not result.failed, result.payload
    return dict(result.payload)


def _retraining_runs(harness: Harness) -> list[dict[str, Any]]:
    return [e for e in harness.executions() if e["name"].startswith(f"retrain-{MODEL}-")]


def test_the_daily_schedule_skips_a_model_not_deployed_yet(harness: Harness) -> None:
    seen = len(harness.aws.runner.log.entries)
    fired = harness.aws.scheduler.tick(harness.aws.scheduler.started + timedelta(days=1, seconds=1))
    assert [schedule.name for schedule, _ in fired] == ["stepml-dev-monitor"]
    assert wait_until(lambda: bool(_invocations(harness, "MonitorFunction", seen)), timeout=60)
    [invocation] = _invocations(harness, "MonitorFunction", seen)
    assert not invocation.failed and invocation.payload["skipped"] is True, invocation.payload
    assert f"no model named '{MODEL}'" in invocation.payload["reason"]


def test_drift_alarm_notifies_and_starts_a_retraining_run(harness: Harness, champion: Finished) -> None:
    alarm = f"{harness.aws.stack.stack_name}-MonitorDriftAlarm"
    # the first evaluation moves every other alarm from INSUFFICIENT_DATA to OK, which notifies too (OKActions)
    harness.aws.evaluate_alarms()
    sqs, queue = _notifications(harness)
    iris = pd.read_csv(io.BytesIO(IRIS))

    shifted = iris.assign(petal_length_cm=iris["petal_length_cm"] + 3.0)
    report = _monitor(harness, "monitoring-inputs/shifted.csv", shifted)
    assert report["drifted_features"] == ["petal_length_cm"], report["message"]
    [evaluation] = [e for e in harness.aws.evaluate_alarms() if e.name == alarm]
    assert evaluation.state == "ALARM", evaluation

    assert wait_until(lambda: bool(_retraining_runs(harness)), timeout=60), "no retraining run started"
    [started] = _retraining_runs(harness)
    retrain = harness.wait(Job(started["name"], {}), started["executionArn"])
    assert retrain.status == "SUCCEEDED", retrain.describe()
    record = harness.run_record(started["name"])
    assert record is not None and record["trigger"].startswith(f"alarm {alarm} went to ALARM at ")
    # the champion's input, so the same data: every step is reused and the champion stays the model
    assert set(record.get("reused_steps", {})) == {"Preprocess", "Training", "Evaluate"}, retrain.describe()
    assert retrain.output_of("Register")["registration"]["reused_version"] is True
    assert [v.version for v in harness.model_versions(MODEL)] == [1]

    messages = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]]
    assert [m["NewStateValue"] for m in messages if m.get("AlarmName") == alarm] == ["ALARM"]

    # the training's own data: no drift, and the alarm, already in ALARM, starts nothing more
    fresh = _monitor(harness, "monitoring-inputs/fresh.csv", iris)
    assert fresh["drifted_features"] == [], fresh["message"]
    harness.aws.evaluate_alarms()
    assert len(_retraining_runs(harness)) == 1
