"""Retrain on an alarm: the drift alarm's move to ALARM starts one run of the model, as its champion was trained."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.stages.retrain import RetrainResult, retrain_execution_name, retrain_on_alarm

from functions.start_pipeline import app as start_app
from tests.conftest import REGION, FakeAws, load_event, registry_item

PASS_DEFINITION = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})
CHAMPION_INPUT = {
    "dataset": "s3://stepml-test-data/incoming/iris.csv",
    "model_name": "iris",
    "trainer": {"name": "linear"},
    "hyperparameters": {"C": 0.5},
    "approval": "manual",
    "no_cache": True,
    "resume_of": "iris-first",
    "trigger": "upload of s3://stepml-test-data/incoming/iris.csv",
}


class Pipeline:
    """A moto state machine standing in for the pipeline, and the model registry beside it."""

    def __init__(self, aws: FakeAws, monkeypatch: pytest.MonkeyPatch) -> None:
        self.aws = aws
        self.sfn = boto3.client("stepfunctions", region_name=REGION)
        self.arn = self.sfn.create_state_machine(
            name="stepml-pipeline", definition=PASS_DEFINITION, roleArn="arn:aws:iam::123456789012:role/r"
        )["stateMachineArn"]
        monkeypatch.setenv("STATE_MACHINE_ARN", self.arn)
        self.registry = ModelRegistry(aws.registry_table, aws.dynamodb)

    def champion_run(self, name: str, execution_input: dict[str, Any], status: str = "approved") -> str:
        """Start (and so record) the execution that trained a version; register that version."""
        arn = self.sfn.start_execution(stateMachineArn=self.arn, name=name, input=json.dumps(execution_input))[
            "executionArn"
        ]
        item = registry_item(self.aws, name, "iris", status)
        assert item["execution_arn"] == arn  # the version names the execution that trained it
        self.registry.register_model(item)
        return arn

    def executions(self) -> list[dict[str, Any]]:
        return list(self.sfn.list_executions(stateMachineArn=self.arn)["executions"])

    def input_of(self, execution_arn: str) -> Any:
        return json.loads(self.sfn.describe_execution(executionArn=execution_arn)["input"])

    def retrain(self, event: dict[str, Any], environ: dict[str, str] | None = None) -> RetrainResult:
        return retrain_on_alarm(event, sfn=self.sfn, registry=self.registry, environ=environ)


@pytest.fixture
def pipeline(aws: FakeAws, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    yield Pipeline(aws, monkeypatch)


def alarm_event(state: str = "ALARM", dimensions: dict[str, str] | None = None) -> dict[str, Any]:
    event = copy.deepcopy(load_event("cloudwatch_alarm_state_change"))
    event["detail"]["state"]["value"] = state
    if dimensions is not None:
        event["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]["dimensions"] = dimensions
    return event


def test_drift_alarm_starts_one_run_with_the_champions_input(pipeline: Pipeline) -> None:
    pipeline.champion_run("iris-old", {"dataset": "s3://stepml-test-data/incoming/old.csv", "model_name": "iris"})
    champion = pipeline.champion_run("iris-champion", CHAMPION_INPUT)
    pipeline.champion_run("iris-rejected", {"dataset": "s3://x/y.csv"}, status="rejected")
    event = alarm_event()

    result = pipeline.retrain(event)

    assert (result.status, result.model_name, result.champion_version) == ("started", "iris", 2)
    started = pipeline.input_of(str(result.execution_arn))
    alarm, at = event["detail"]["alarmName"], event["detail"]["state"]["timestamp"]
    # the champion's settings carry over; what belonged to its own run does not
    assert started == {
        "dataset": CHAMPION_INPUT["dataset"],
        "model_name": "iris",
        "trainer": {"name": "linear"},
        "hyperparameters": {"C": 0.5},
        "approval": "manual",
        "trigger": f"alarm {alarm} went to ALARM at {at}",
    }
    assert result.execution_name == retrain_execution_name("iris", alarm, at)
    assert str(result.execution_name).startswith("retrain-iris-") and len(str(result.execution_name)) <= 80
    assert champion != result.execution_arn


def test_a_repeated_event_starts_nothing_more(pipeline: Pipeline) -> None:
    pipeline.champion_run("iris-champion", CHAMPION_INPUT)
    first = pipeline.retrain(alarm_event())
    again = pipeline.retrain(alarm_event())
    assert (first.status, again.status) == ("started", "already_started")
    assert again.execution_arn == first.execution_arn
    assert len(pipeline.executions()) == 2  # the champion's and one retraining
    later = alarm_event()
    later["detail"]["state"]["timestamp"] = "2026-12-01T03:04:40.985+0000"
    assert pipeline.retrain(later).status == "started", "a later move to ALARM is another retraining"


@pytest.mark.parametrize(
    ("event", "environ", "reason"),
    [
        (alarm_event("OK"), None, "the alarm went to OK, not ALARM"),
        (alarm_event(dimensions={"EndpointName": "x"}), None, "has no ModelName dimension"),
        (alarm_event(), {"RETRAIN_ON_ALARM": "false"}, "retraining on alarms is turned off"),
        (alarm_event(dimensions={"ModelName": "penguins"}), None, "model penguins has no approved version"),
    ],
)
def test_other_changes_start_nothing_and_say_why(
    pipeline: Pipeline, event: dict[str, Any], environ: dict[str, str] | None, reason: str
) -> None:
    pipeline.champion_run("iris-champion", CHAMPION_INPUT)
    result = pipeline.retrain(event, environ={"STATE_MACHINE_ARN": pipeline.arn, **(environ or {})})
    assert result.status == "ignored" and reason in str(result.reason)
    assert len(pipeline.executions()) == 1


def test_a_champion_whose_execution_is_gone_is_named(pipeline: Pipeline, aws: FakeAws) -> None:
    pipeline.champion_run("iris-champion", CHAMPION_INPUT)
    [record] = pipeline.registry.versions("iris")
    gone = record.execution_arn.replace("iris-champion", "iris-expired")
    aws.dynamodb.update_item(
        TableName=aws.registry_table,
        Key={"model_name": {"S": "iris"}, "version": {"N": "1"}},
        UpdateExpression="SET execution_arn = :a",
        ExpressionAttributeValues={":a": {"S": gone}},
    )
    result = pipeline.retrain(alarm_event())
    assert result.status == "ignored" and gone in str(result.reason) and "90 days" in str(result.reason)


def test_the_start_function_hands_alarm_events_to_retraining(pipeline: Pipeline, aws: FakeAws) -> None:
    pipeline.champion_run("iris-champion", CHAMPION_INPUT)
    answer = start_app.lambda_handler(alarm_event(), None)
    assert answer["status"] == "started" and answer["model_name"] == "iris"
    assert answer["execution_name"].startswith("retrain-iris-")
