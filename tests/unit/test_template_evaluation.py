"""The embedded target's template evaluator beyond the function/table/state machine model: any resource's
evaluated properties (what the stack's CloudWatch, Logs and EventBridge resources are provisioned from)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stepml.embedded import template
from stepml.embedded.template import TemplateError, evaluated_resources, stack_model

ROOT = Path(__file__).parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
LOCAL = {"Target": "local"}
MONITORING = {"AWS::Logs::LogGroup", "AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard"}


def test_the_fast_loader_reads_the_template_as_the_pure_python_one_does() -> None:
    pure = yaml.load(TEMPLATE.read_text(), Loader=template._CfnLoader)
    assert template.load_template(TEMPLATE) == pure


def test_resources_whose_condition_fails_for_local_are_left_out() -> None:
    resources = evaluated_resources(TEMPLATE, "stepml-local", LOCAL, MONITORING)
    alarms = {r.logical_id for r in resources.values() if r.type == "AWS::CloudWatch::Alarm"}
    assert len(alarms) == 44  # 46 in the template; the endpoint's two need SageMaker (Condition UseSageMaker)
    assert not alarms & {"EndpointInvocation5XXErrorsAlarm", "EndpointModelLatencyAlarm"}
    groups = sorted(r.name for r in resources.values() if r.type == "AWS::Logs::LogGroup")
    # the WAF log group exists only where the edge is deployed (Target=aws, us-east-1)
    assert groups == [
        "/aws/vendedlogs/states/stepml-dev-batch-scoring",
        "/aws/vendedlogs/states/stepml-dev-pipeline",
        "/stepml/dev/functions",
        "/stepml/dev/inference-api-access",
    ]
    aws_alarms = evaluated_resources(TEMPLATE, "stepml", {"Target": "aws"}, {"AWS::CloudWatch::Alarm"})
    assert len(aws_alarms) == 46


def test_properties_are_evaluated_with_the_names_cloudformation_would_give() -> None:
    resources = evaluated_resources(TEMPLATE, "stepml-local", {**LOCAL, "Stage": "qa"}, MONITORING)
    queue_alarm = resources["StartPipelineDeadLetterAlarm"].properties
    assert queue_alarm["Dimensions"] == [{"Name": "QueueName", "Value": "stepml-local-StartPipelineDeadLetterQueue"}]
    assert queue_alarm["AlarmActions"] == ["arn:aws:sns:us-east-1:123456789012:stepml-local-NotificationTopic"]
    ingest = resources["IngestErrorsAlarm"]
    assert ingest.name == "stepml-local-IngestErrorsAlarm"
    assert ingest.properties["Dimensions"] == [{"Name": "FunctionName", "Value": "stepml-local-IngestFunction"}]
    dashboard = resources["Dashboard"]
    assert dashboard.name == "stepml-qa"  # DashboardName, not a made-up name
    body = dashboard.properties["DashboardBody"]
    assert "arn:aws:states:us-east-1:123456789012:stateMachine:stepml-local-PipelineStateMachine" in body
    assert "${" not in body


def test_functions_get_their_globals_merged_as_sam_does() -> None:
    functions = evaluated_resources(TEMPLATE, "stepml-local", LOCAL, {"AWS::Serverless::Function"})
    start = functions["StartPipelineFunction"].properties
    assert (start["Runtime"], start["Timeout"], start["MemorySize"]) == ("python3.12", 30, 256)
    assert start["LoggingConfig"] == {"LogFormat": "JSON", "LogGroup": "/stepml/dev/functions"}
    variables = start["Environment"]["Variables"]
    assert variables["DATA_BUCKET"] == "stepml-local-databucket"  # from Globals
    # the Ref to the alias AutoPublishAlias makes is the state machine itself: no versions on the embedded target
    assert variables["STATE_MACHINE_ARN"].endswith(":stateMachine:stepml-local-PipelineStateMachine")
    assert start["Events"]["S3Upload"]["Properties"]["RuleName"] == "stepml-dev-s3-upload"
    assert functions["ValidateInputFunction"].properties["Timeout"] == 30
    assert functions["InferenceFunction"].properties["MemorySize"] == 1024  # only in Globals


def test_stack_model_functions_carry_their_logging_config() -> None:
    model = stack_model(TEMPLATE, "stepml-local", LOCAL)
    ingest = model.functions["IngestFunction"]
    assert (ingest.log_group_name, ingest.log_format) == ("/stepml/dev/functions", "JSON")


def test_a_function_without_logging_config_logs_to_its_default_group(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        "Resources:\n"
        "  Fn:\n    Type: AWS::Serverless::Function\n    Properties: {CodeUri: ., Handler: app.handler}\n"
        "  Table:\n    Type: AWS::DynamoDB::Table\n    Properties:\n      TableName: !Sub '${AWS::StackName}-named'\n"
        "      KeySchema: [{AttributeName: id, KeyType: HASH}]\n"
        "      AttributeDefinitions: [{AttributeName: id, AttributeType: S}]\n"
        "  Machine:\n    Type: AWS::Serverless::StateMachine\n    Properties: {DefinitionUri: x.json}\n"
        "  Broken:\n    Type: AWS::CloudWatch::Alarm\n    Properties:\n      Threshold: !FindInMap [A, B, C]\n"
    )
    model = stack_model(path, "s", {})
    assert (model.functions["Fn"].log_group_name, model.functions["Fn"].log_format) == ("/aws/lambda/s-Fn", "Text")
    assert model.tables["Table"].name == "s-named"  # an explicit name is the physical name
    with pytest.raises(TemplateError, match="Fn::FindInMap"):
        evaluated_resources(path, "s", {}, {"AWS::CloudWatch::Alarm"})


def test_the_prediction_log_table_carries_its_features_index_to_the_embedded_target() -> None:
    """The Monitor function Queries the index; the local AWS creates the table with it (runtime.provision)."""
    table = stack_model(TEMPLATE, "stepml-local", LOCAL).tables["PredictionLogTable"]
    (index,) = table.global_secondary_indexes
    assert index["IndexName"] == "ModelFeatures"
    assert index["KeySchema"] == [
        {"AttributeName": "model_name", "KeyType": "HASH"},
        {"AttributeName": "features_at", "KeyType": "RANGE"},
    ]
    declared = {a["AttributeName"] for a in table.attribute_definitions}
    assert {"request_id", "model_name", "features_at"} == declared
    assert set(index["Projection"]["NonKeyAttributes"]) >= {"features", "model_version"}
