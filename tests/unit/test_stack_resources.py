"""What the template deploys besides the pipeline's own resources is there, through the AWS APIs, in moto:
functions, log groups, alarms, the dashboard and EventBridge rules (stepml/embedded/stack_resources.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stepml.embedded.stack_resources import provision_stack_resources
from stepml.embedded.template import stack_model

ROOT = Path(__file__).parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
REGION = "us-east-1"
STACK = "stepml-local"
LOCAL = {"Target": "local"}

Clients = Callable[[str], Any]


@pytest.fixture
def clients(moto_clients: Clients) -> Clients:
    return moto_clients


def _all(client: Any, operation: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    return [item for page in client.get_paginator(operation).paginate(**kwargs) for item in page[key]]


def test_the_stack_is_visible_as_after_a_deploy(clients: Clients) -> None:
    made = provision_stack_resources(clients, TEMPLATE, STACK, LOCAL)
    model = stack_model(TEMPLATE, STACK, LOCAL)

    functions = {f["FunctionName"]: f for f in _all(clients("lambda"), "list_functions", "Functions")}
    assert set(functions) == {spec.name for spec in model.functions.values()} == set(made.functions)
    # with the tuning stand-ins, StepCache, Monitor, BatchScoring and its stand-in, SplitDataset, ValidateShard,
    # PlanSplit, PreprocessShard, WriteSplits
    assert len(functions) == 27
    ingest_spec = model.functions["IngestFunction"]
    ingest = clients("lambda").get_function(FunctionName=ingest_spec.name)["Configuration"]
    assert ingest["FunctionArn"] == ingest_spec.arn
    assert (ingest["Handler"], ingest["Runtime"]) == ("app.lambda_handler", "python3.12")
    assert (ingest["Timeout"], ingest["MemorySize"]) == (300, 1024)
    assert ingest["Environment"]["Variables"] == ingest_spec.environment  # what the workers run it with
    assert ingest["TracingConfig"] == {"Mode": "Active"}

    groups = {g["logGroupName"]: g for g in _all(clients("logs"), "describe_log_groups", "logGroups")}
    assert set(groups) == {
        "/stepml/dev/functions",  # where every function logs (Globals LoggingConfig)
        "/aws/vendedlogs/states/stepml-dev-pipeline",
        "/aws/vendedlogs/states/stepml-dev-batch-scoring",
        "/stepml/dev/inference-api-access",
    }
    assert {g.get("retentionInDays") for g in groups.values()} == {90}

    alarms = {a["AlarmName"]: a for a in _all(clients("cloudwatch"), "describe_alarms", "MetricAlarms")}
    assert len(alarms) == 44 and set(alarms) == set(made.alarms)
    assert f"{STACK}-EndpointModelLatencyAlarm" not in alarms  # Condition UseSageMaker: not on local targets
    errors = alarms[f"{STACK}-IngestErrorsAlarm"]
    assert (errors["Namespace"], errors["MetricName"], errors["Statistic"]) == ("AWS/Lambda", "Errors", "Sum")
    assert errors["Dimensions"] == [{"Name": "FunctionName", "Value": ingest_spec.name}]
    assert (errors["Period"], errors["EvaluationPeriods"], errors["Threshold"]) == (300, 1, 0.0)
    assert (errors["ComparisonOperator"], errors["TreatMissingData"]) == ("GreaterThanThreshold", "notBreaching")
    assert errors["AlarmActions"] == [model.topics["NotificationTopic"]]
    latency = alarms[f"{STACK}-InferenceApiLatencyAlarm"]
    assert (latency["ExtendedStatistic"], latency["Threshold"]) == ("p99", 1000.0)

    body = json.loads(clients("cloudwatch").get_dashboard(DashboardName="stepml-dev")["DashboardBody"])
    assert len(body["widgets"]) == 6
    assert body["widgets"][0]["properties"]["metrics"][0][3] == model.state_machine_arn

    rules = _all(clients("events"), "list_rules", "Rules")
    names = ["stepml-dev-drift-retrain", "stepml-dev-s3-upload"]
    assert sorted(r["Name"] for r in rules) == names == sorted(made.rules)
    by_name = {r["Name"]: r for r in rules}
    patterns = [json.loads(by_name[name]["EventPattern"]) for name in names]
    declared = model.functions["StartPipelineFunction"].event_patterns
    assert sorted(patterns, key=json.dumps) == sorted(declared, key=json.dumps)
    assert {r["State"] for r in rules} == {"ENABLED"}
    (target,) = clients("events").list_targets_by_rule(Rule="stepml-dev-s3-upload")["Targets"]
    assert target["Id"] == "StartPipelineFunctionS3UploadLambdaTarget"
    assert target["Arn"] == model.functions["StartPipelineFunction"].arn
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 8, "MaximumEventAgeInSeconds": 3600}


def test_provisioning_again_leaves_one_of_each(clients: Clients) -> None:
    provision_stack_resources(clients, TEMPLATE, STACK, LOCAL)
    provision_stack_resources(clients, TEMPLATE, STACK, LOCAL)
    assert len(_all(clients("lambda"), "list_functions", "Functions")) == 27
    assert len(_all(clients("cloudwatch"), "describe_alarms", "MetricAlarms")) == 44


def test_rules_and_metric_math_alarms_declared_as_resources(clients: Clients, tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        """
Parameters:
  Stage: {Type: String, Default: dev}
Resources:
  Nightly:
    Type: AWS::Events::Rule
    Properties:
      Name: !Sub "nightly-${Stage}"
      ScheduleExpression: cron(0 3 * * ? *)
      Targets:
        - {Id: topic, Arn: !Ref Topic, Input: '{"k": 1}'}
  Topic:
    Type: AWS::SNS::Topic
  ErrorRate:
    Type: AWS::CloudWatch::Alarm
    Properties:
      EvaluationPeriods: 3
      DatapointsToAlarm: 2
      Threshold: "5"
      ComparisonOperator: GreaterThanOrEqualToThreshold
      Metrics:
        - Id: rate
          Expression: 100 * errors / invocations
          ReturnData: true
        - Id: errors
          ReturnData: false
          MetricStat:
            Metric: {Namespace: AWS/Lambda, MetricName: Errors}
            Period: "60"
            Stat: Sum
        - Id: invocations
          ReturnData: false
          MetricStat:
            Metric: {Namespace: AWS/Lambda, MetricName: Invocations}
            Period: 60
            Stat: Sum
"""
    )
    made = provision_stack_resources(clients, template, "s", {})
    assert made.rules == ["nightly-dev"] and made.alarms == ["s-ErrorRate"] and not made.functions
    rule = clients("events").describe_rule(Name="nightly-dev")
    assert rule["ScheduleExpression"] == "cron(0 3 * * ? *)" and "EventPattern" not in rule
    (target,) = clients("events").list_targets_by_rule(Rule="nightly-dev")["Targets"]
    assert target == {"Id": "topic", "Arn": "arn:aws:sns:us-east-1:123456789012:s-Topic", "Input": '{"k": 1}'}
    (alarm,) = clients("cloudwatch").describe_alarms(AlarmNames=["s-ErrorRate"])["MetricAlarms"]
    assert (alarm["Threshold"], alarm["DatapointsToAlarm"]) == (5.0, 2)
    queries = {q["Id"]: q for q in alarm["Metrics"]}
    assert queries["rate"]["Expression"] == "100 * errors / invocations"
    assert queries["errors"]["MetricStat"]["Period"] == 60
