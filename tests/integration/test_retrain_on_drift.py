"""The drift alarm closes the loop: drift measured for the monitored model raises its alarm, the alarm notifies
and its move to ALARM starts a retraining run, on the embedded target as on AWS (CloudWatch -> EventBridge ->
StartPipeline -> Step Functions)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from stepml.embedded.runtime import wait_until
from tests.integration.harness import IRIS, Finished, Harness, Job, embedded_harness

MODEL = "iris"  # the template's MonitoredModelName: the model its drift alarm watches


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    yield from embedded_harness()


@pytest.fixture(scope="module")
def champion(harness: Harness) -> Finished:
    dataset = harness.upload("datasets/drift/iris.csv", IRIS)
    run = harness.run(Job("drift-champion", {"dataset": dataset, "model_name": MODEL}))
    assert run.status == "SUCCEEDED", run.describe()
    return run


def _notifications(harness: Harness) -> tuple[Any, str]:
    """An SQS queue subscribed to the stack's notification topic (how a test reads what SNS sent)."""
    sqs, sns = harness.aws.client("sqs"), harness.aws.client("sns")
    url = sqs.create_queue(QueueName="drift-notifications")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = harness.aws.stack.topics["NotificationTopic"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    return sqs, url


def _drifted_features(harness: Harness, count: int) -> None:
    # TODO(monitor): the Monitor function publishes this from a shifted file once it lands.
    harness.aws.client("cloudwatch").put_metric_data(
        Namespace="stepml/Monitoring",
        MetricData=[
            {
                "MetricName": "DriftedFeatures",
                "Dimensions": [{"Name": "ModelName", "Value": MODEL}],
                "Value": count,
                "Unit": "Count",
                "Timestamp": datetime.now(UTC),
            }
        ],
    )


def _retraining_runs(harness: Harness) -> list[dict[str, Any]]:
    return [e for e in harness.executions() if e["name"].startswith(f"retrain-{MODEL}-")]


def test_drift_alarm_notifies_and_starts_a_retraining_run(harness: Harness, champion: Finished) -> None:
    alarm = f"{harness.aws.stack.stack_name}-MonitorDriftAlarm"
    # the first evaluation moves every other alarm from INSUFFICIENT_DATA to OK, which notifies too (OKActions)
    harness.aws.evaluate_alarms()
    sqs, queue = _notifications(harness)
    assert _retraining_runs(harness) == []

    _drifted_features(harness, 2)
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
    alarm_messages = [m for m in messages if m.get("AlarmName") == alarm]
    assert [m["NewStateValue"] for m in alarm_messages] == ["ALARM"]

    # no drift any more: the alarm goes back to OK, which starts nothing
    _drifted_features(harness, 0)
    harness.aws.evaluate_alarms()
    assert len(_retraining_runs(harness)) == 1
