"""Static checks of batch scoring's state machine (statemachine/batch.asl.json) and its block of the template:
placeholders, the ASL schema, the failure path of every Task, the SageMaker API shape of the Transform request,
the stand-in locally and Batch Transform on AWS, least privilege, alarms and the stack output."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pipeline_core.standin.store import validate_request

from tests.unit.test_template import (
    ACCOUNT,
    PLACEHOLDER,
    REGION,
    ROOT,
    TARGETS,
    Evaluator,
    asl_template,
    lint_errors,
    resources,
    statements,
    transitions,
)

BATCH_ASL = ROOT / "statemachine" / "batch.asl.json"
MACHINE = "BatchScoringStateMachine"


def batch_substitutions(template: dict[str, Any]) -> dict[str, Any]:
    return dict(template["Resources"][MACHINE]["Properties"]["DefinitionSubstitutions"])


def resolved(template: dict[str, Any], target: str) -> dict[str, Any]:
    values = Evaluator(template, target).value(batch_substitutions(template))
    return dict(json.loads(PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), BATCH_ASL.read_text())))


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    from tests.unit.test_template import load_template

    return load_template()


def test_placeholders_match_the_substitutions(template: dict[str, Any]) -> None:
    assert set(PLACEHOLDER.findall(BATCH_ASL.read_text())) == set(batch_substitutions(template))


@pytest.mark.parametrize("target", TARGETS)
def test_the_definition_passes_the_asl_schema(template: dict[str, Any], target: str) -> None:
    assert lint_errors(asl_template(resolved(template, target))) == []


def test_every_state_is_reachable_and_every_task_retries_and_records_its_failure() -> None:
    definition = json.loads(BATCH_ASL.read_text())
    states = definition["States"]
    seen, todo = set(), [definition["StartAt"]]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(transitions(states[name]))
    assert seen == set(states)
    for name, state in states.items():
        if state["Type"] != "Task":
            continue
        assert state.get("Retry") and state.get("TimeoutSeconds"), name
        [catch] = state["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"], name
        if name == "NotifyBatchFailure":
            assert catch["Next"] == "BatchFailed"
            continue
        assert catch == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": f"{name}Failed"}
        failed = states[f"{name}Failed"]
        assert failed["Parameters"]["state"] == name and failed["Next"] == "NotifyBatchFailure"
    assert states["BatchFailed"] == {"Type": "Fail", "ErrorPath": "$.failure.error", "CausePath": "$.failure.cause"}
    assert states["AssembleBatch"]["OutputPath"] == "$.result" and states["Scored"] == {"Type": "Succeed"}


def test_the_transform_request_is_one_sagemaker_accepts() -> None:
    """The Parameters with every path filled: boto3's own validation of CreateTransformJob passes."""
    parameters = json.loads(BATCH_ASL.read_text())["States"]["Transform"]["Parameters"]
    text = json.dumps(parameters).replace("${BatchTransformInstanceType}", "ml.m5.large")
    filled = {
        "$.prep.transform_job_name": "stepml-dev-batch-x-12345678",
        "$.prep.sagemaker_model_name": "stepml-run-12345678",
        "$.prep.transform_input_prefix": "s3://bucket/batch/x/transform-input/",
        "$.prep.transform_output_prefix": "s3://bucket/batch/x/transform-output/",
        "$$.Execution.Name": "batch-x",
    }

    def fill(node: Any) -> Any:
        if isinstance(node, list):
            return [fill(n) for n in node]
        if isinstance(node, dict):
            return {k.removesuffix(".$"): filled[v] if k.endswith(".$") else fill(v) for k, v in node.items()}
        return node

    request = fill(json.loads(text))
    validate_request("CreateTransformJob", request)
    # what keeps one output line per input line, in order: Line split and assembly, one request at a time
    assert request["TransformInput"]["SplitType"] == request["TransformOutput"]["AssembleWith"] == "Line"
    assert request["BatchStrategy"] == "MultiRecord" and request["MaxConcurrentTransforms"] == 1
    assert request["TransformInput"]["ContentType"] == request["TransformOutput"]["Accept"] == "application/jsonlines"


@pytest.mark.parametrize("target", TARGETS)
def test_the_transform_is_the_stand_in_locally_and_batch_transform_on_aws(
    template: dict[str, Any], target: str
) -> None:
    values = Evaluator(template, target).value(batch_substitutions(template))
    resource = values["CreateTransformJobResource"]
    if target == "aws":
        assert resource == "arn:aws:states:::sagemaker:createTransformJob.sync"
        return
    function = resource.rsplit(":", 1)[-1]
    assert resource == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}"
    assert template["Resources"][function]["Properties"]["Environment"]["Variables"]["STANDIN_ACTION"] == (
        "CreateTransformJob"
    )


@pytest.mark.parametrize("target", TARGETS)
def test_the_batch_role_invokes_exactly_the_functions_its_definition_names(
    template: dict[str, Any], target: str
) -> None:
    definition = resolved(template, target)
    named = {s["Resource"] for s in definition["States"].values() if ":lambda:" in s.get("Resource", "")}
    [invoke] = [
        s
        for n, s in statements(template, target)
        if n == "BatchScoringStateMachineRole" and s["Action"] == "lambda:InvokeFunction"
    ]
    assert set(invoke["Resource"]) == named


def test_batch_permissions_name_the_batch_prefix_and_the_pipelines_sagemaker_names(template: dict[str, Any]) -> None:
    role = [
        s
        for n, s in statements(template, "aws")
        if n == "BatchScoringStateMachineRole" and "sagemaker" in str(s).lower()
    ]
    resources_ = {r for s in role for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])}
    assert resources_ == {
        f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:transform-job/stepml-dev-batch-*",
        f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/stepml-dev-*",
        f"arn:aws:events:{REGION}:{ACCOUNT}:rule/StepFunctionsGetEventsForSageMakerTransformJobsRule",
    }
    assert not [s for n, s in statements(template, "aws") if n == "BatchScoringStateMachineRole" and "iam:" in str(s)]
    function = [s for n, s in statements(template, "aws") if n == "BatchScoringFunction"]
    written = {
        r
        for s in function
        if {"s3:PutObject", "s3:DeleteObject"} & set(_list(s["Action"]))
        for r in _list(s["Resource"])
    }
    assert written and all(re.fullmatch(r"arn:aws:s3:::databucket/batch/.*", r) for r in written), written
    assert "sagemaker:DescribeModel" in str(function)
    # the model's role may read the transform input and write its output, nothing else under batch/
    policy = template["Resources"]["BatchTransformDataPolicy"]["Properties"]
    assert policy["Roles"] == [{"Ref": "SageMakerExecutionRole"}]
    document = Evaluator(template, "aws").value(policy["PolicyDocument"])
    granted = {(s["Action"], r) for s in document["Statement"] for r in _list(s["Resource"])}
    assert granted == {
        ("s3:GetObject", "arn:aws:s3:::databucket/batch/*/transform-input/*"),
        ("s3:PutObject", "arn:aws:s3:::databucket/batch/*/transform-output/*"),
        ("s3:ListBucket", "arn:aws:s3:::databucket"),
    }


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_batch_scoring_is_watched_like_the_pipeline_and_named_in_the_outputs(template: dict[str, Any]) -> None:
    alarms = resources(template, "AWS::CloudWatch::Alarm").values()
    on_machine = {
        a["Properties"]["MetricName"] for a in alarms if a["Properties"]["Dimensions"][0]["Value"] == {"Ref": MACHINE}
    }
    assert on_machine == {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionThrottled"}
    logging = template["Resources"][MACHINE]["Properties"]["Logging"]
    assert logging["Level"] == "ALL" and logging["IncludeExecutionData"] is False
    assert logging["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"] == {
        "Fn::GetAtt": ["BatchScoringStateMachineLogGroup", "Arn"]
    }
    assert template["Outputs"]["BatchScoringStateMachineArn"]["Value"] == {"Ref": MACHINE}
    rules = template["Resources"]["DataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    [expiry] = [r for r in rules if r.get("Prefix") == "batch/"]
    assert expiry["ExpirationInDays"] == {"Ref": "BatchRetentionDays"}


def test_the_embedded_target_provisions_both_state_machines() -> None:
    from stepml.embedded.template import stack_model

    model = stack_model(ROOT / "infra" / "template.yaml", "stepml-local", {"Target": "local"})
    assert set(model.state_machines) == {"PipelineStateMachine", MACHINE}
    assert model.state_machine_name == "stepml-local-PipelineStateMachine"  # the pipeline stays the one runs start
    batch = model.state_machines[MACHINE]
    assert batch.definition == BATCH_ASL
    assert batch.substitutions["CreateTransformJobResource"].endswith(
        ":function:stepml-local-LocalSageMakerCreateTransformJobFunction"
    )
