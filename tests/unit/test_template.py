"""Static checks of what deploys to AWS and LocalStack (no Docker, no account, no network).

- infra/template.yaml: cfn-lint clean; checkov finds nothing that is not skipped with a written reason; the
  SAM transform succeeds for Target=aws and Target=local and its output passes cfn-lint.
- statemachine/pipeline.asl.json: linted on its own (cfn-lint does not read DefinitionUri files) against
  cfn-lint's bundled ASL schema, with the template's substitutions filled in for each target.
- The substitutions and the ASL's ${placeholders} match exactly; under Target=local every SageMaker
  resource is the stand-in function for that API, under Target=aws a Step Functions SageMaker integration.
- IAM: "*" resources only for actions AWS cannot scope; the state machine may invoke exactly its functions.
- docker-compose.yml: valid against the Compose Specification schema (a vendored copy) and wired as
  documented (auth token required, Docker socket and ready hook mounted).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest
import yaml
from cfnlint.api import ManualArgs, lint
from cfnlint.decode import decode
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

ROOT = Path(__file__).parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
ASL = ROOT / "statemachine" / "pipeline.asl.json"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec" / "compose_spec.json"
READY_HOOK = ROOT / "infra" / "localstack" / "ready.d" / "deploy.sh"
UPLOAD_SCRIPT = ROOT / "infra" / "upload_training_source.sh"

REGION = "us-east-1"
ACCOUNT = "123456789012"
TARGETS = ("aws", "local")
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
# Intrinsic functions the embedded runtime evaluates (function Environment, DefinitionSubstitutions, and
# the Conditions an Fn::If there names) - stepml/embedded/template.py. It follows only the taken Fn::If branch.
EMBEDDED_INTRINSICS = {"Ref", "Fn::GetAtt", "Fn::Sub", "Fn::If", "Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or"}
# SageMaker resources of the ASL and the API each one calls (the stand-in's STANDIN_ACTION).
SAGEMAKER_RESOURCES = {
    "CreateTrainingJobResource": "CreateTrainingJob",
    "CreateTuningJobResource": "CreateHyperParameterTuningJob",
    "DescribeTrainingJobResource": "DescribeTrainingJob",
    "CreateModelResource": "CreateModel",
    "CreateEndpointConfigResource": "CreateEndpointConfig",
    "ListEndpointsResource": "ListEndpoints",
    "CreateEndpointResource": "CreateEndpoint",
    "UpdateEndpointResource": "UpdateEndpoint",
    "UpdateEndpointWithRolloutResource": "UpdateEndpoint",
    "DescribeEndpointResource": "DescribeEndpoint",
}
# Actions with no resource-level permissions (or, for ListEndpoints, none that this use could name).
UNSCOPABLE_ACTIONS = {
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "sagemaker:ListEndpoints",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
}


# ------------------------------------------------------------------ helpers


def load_template() -> dict[str, Any]:
    template, matches = decode(str(TEMPLATE))
    assert template is not None and not matches, [str(m) for m in matches]
    return json.loads(json.dumps(template))  # plain dicts and lists, no cfn-lint node types


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


NO_VALUE = object()  # AWS::NoValue: the element or property disappears
ALIAS = "live"
ALIAS_RESOURCE = f"PipelineStateMachineAlias{ALIAS}"  # the logical id SAM gives the alias AutoPublishAlias makes


class Evaluator:
    """Resolves the intrinsic functions the template uses, with a fake account (Target chosen by the test)."""

    def __init__(self, template: dict[str, Any], target: str, region: str = REGION, **parameters: str) -> None:
        self.template = template
        self.parameters = {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()}
        self.parameters.update(parameters, Target=target)
        self.region = region
        self.pseudo = {
            "AWS::Region": region,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }

    def condition(self, name: str) -> bool:
        return bool(self.value(self.template["Conditions"][name]))

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name == ALIAS_RESOURCE:  # generated by the SAM transform (AutoPublishAlias); Ref gives the alias ARN
            return f"arn:aws:states:{self.region}:{ACCOUNT}:stateMachine:PipelineStateMachine:{ALIAS}"
        kind = self.template["Resources"][name]["Type"]
        if kind == "AWS::SNS::Topic":
            return f"arn:aws:sns:{self.region}:{ACCOUNT}:{name}"
        if kind == "AWS::Serverless::StateMachine":
            return f"arn:aws:states:{self.region}:{ACCOUNT}:stateMachine:{name}"
        return name.lower()

    def get_att(self, name: str, attribute: str) -> str:
        resource = self.template["Resources"][name]
        if "Condition" in resource:
            assert self.condition(resource["Condition"]), f"{name} is referenced but not created"
        kind = resource["Type"]
        if kind == "AWS::Serverless::Function" and attribute == "Arn":
            return f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{name}"
        if kind == "AWS::IAM::Role" and attribute == "Arn":
            return f"arn:aws:iam::{ACCOUNT}:role/{name}"
        return f"arn:aws:fake:{self.region}:{ACCOUNT}:{name}.{attribute}"

    def sub(self, text: str, variables: dict[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(self.value(variables[name]))
            if "." in name:
                return self.get_att(*name.split(".", 1))
            return self.ref(name)

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.value(item) for item in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((fn, arg),) = node.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::GetAtt":
                name, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(name, attribute)
            if fn == "Fn::Sub":
                return self.sub(arg, {}) if isinstance(arg, str) else self.sub(arg[0], arg[1])
            if fn == "Fn::If":
                return self.value(arg[1] if self.condition(arg[0]) else arg[2])
            if fn == "Fn::Equals":
                return self.value(arg[0]) == self.value(arg[1])
            if fn == "Fn::Not":
                return not self.value(arg[0])
            if fn == "Fn::And":
                return all(self.value(a) for a in arg)
            if fn == "Fn::Or":
                return any(self.value(a) for a in arg)
            if fn == "Fn::FindInMap":
                name, key, attribute = (self.value(a) for a in arg)
                return self.template["Mappings"][name][key][attribute]
            if fn == "Fn::Select":
                index, items = self.value(arg[0]), self.value(arg[1])
                return items[int(index)]
            if fn == "Fn::Split":
                return str(self.value(arg[1])).split(arg[0])
            if fn == "Condition":
                return self.condition(arg)
        return {k: self.value(v) for k, v in node.items()}


def intrinsics_evaluated(node: Any, evaluator: Evaluator) -> Iterator[str]:
    """The intrinsic functions evaluating ``node`` calls, following only the Fn::If branch its condition
    takes (as the embedded runtime does), and the functions of the conditions it consults."""
    if isinstance(node, list):
        for value in node:
            yield from intrinsics_evaluated(value, evaluator)
    elif isinstance(node, dict):
        if len(node) == 1 and next(iter(node)) in ("Fn::If", "Condition"):
            ((key, arg),) = node.items()
            name = arg[0] if key == "Fn::If" else arg
            yield key
            yield from intrinsics_evaluated(evaluator.template["Conditions"][name], evaluator)
            if key == "Fn::If":
                yield from intrinsics_evaluated(arg[1] if evaluator.condition(name) else arg[2], evaluator)
            return
        for key, value in node.items():
            if key == "Ref" or key.startswith("Fn::"):
                yield key
            yield from intrinsics_evaluated(value, evaluator)


def substitutions(template: dict[str, Any]) -> dict[str, Any]:
    props = template["Resources"]["PipelineStateMachine"]["Properties"]
    return dict(props["DefinitionSubstitutions"])


def resolved_definition(template: dict[str, Any], target: str) -> dict[str, Any]:
    """The ASL with the template's substitutions for ``target`` filled in (what SAM deploys)."""
    values = Evaluator(template, target).value(substitutions(template))
    text = PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), ASL.read_text())
    return dict(json.loads(text))


def lint_errors(template_text: str, levels: str = "EWI") -> list[str]:
    matches = lint(template_text, config=ManualArgs(regions=[REGION]))
    return [f"{m.rule.id} {m.message} ({m.path_string})" for m in matches if m.rule.id[0] in levels]


def sam_transform(template: dict[str, Any], target: str) -> dict[str, Any]:
    """The SAM transform as `sam deploy` has it run: code locations already uploaded to S3."""
    packaged = copy.deepcopy(template)
    for name, resource in packaged["Resources"].items():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            if isinstance(props.get(key), str):
                props[key] = f"s3://stepml-artifacts/{name}/{key}.zip"
    session = boto3.Session(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    translator = Translator({}, Parser(), boto_session=session)
    # No managed policy is referenced by name, so the loader that would ask IAM is never needed.
    output: dict[str, Any] = translator.translate(
        packaged, parameter_values={"Target": target}, get_managed_policy_map=lambda: {}
    )
    return output


# ------------------------------------------------------------------ cfn-lint and checkov


def test_cfn_lint_finds_nothing() -> None:
    assert lint_errors(TEMPLATE.read_text()) == []


def checkov_executable() -> str:
    """checkov pins boto3 1.35, which the project cannot share, so it lives in its own virtualenv."""
    candidates = [os.environ.get("STEPML_CHECKOV", ""), str(ROOT / ".venv" / "checkov" / "bin" / "checkov")]
    candidates.append(shutil.which("checkov") or "")
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail(
        "checkov is not installed. Install it in its own virtualenv (it pins boto3==1.35.49):\n"
        "  python3 -m venv .venv/checkov && .venv/checkov/bin/pip install checkov==3.3.30\n"
        "or point STEPML_CHECKOV at a checkov executable."
    )


def template_for(target: str, directory: Path) -> Path:
    """infra/template.yaml as checkov should scan it for ``target`` (checkov evaluates conditions with
    the parameters' defaults, so the stand-in functions exist for it only when Target defaults to local)."""
    if target == "aws":
        return TEMPLATE
    text = TEMPLATE.read_text()
    switched = re.sub(r"(\n  Target:\n    Type: String\n    Default: )aws\n", rf"\g<1>{target}\n", text)
    assert switched != text, "the Target parameter's default is no longer where this test looks for it"
    path = directory / "template.yaml"
    path.write_text(switched)
    return path


@pytest.mark.parametrize("target", TARGETS)
def test_checkov_fails_nothing_that_is_not_skipped_with_a_reason(
    template: dict[str, Any], target: str, tmp_path: Path
) -> None:
    # --skip-download: no network (checkov otherwise fetches guidelines from its vendor's API).
    run = subprocess.run(
        [
            checkov_executable(),
            *("--file", str(template_for(target, tmp_path)), "--framework", "cloudformation"),
            *("--skip-download", "--output", "json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.stdout.strip(), f"checkov printed nothing; stderr:\n{run.stderr[-2000:]}"
    report = json.loads(run.stdout)
    results = report["results"]
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in results["failed_checks"]]
    assert failed == [], "\n".join(failed)
    assert report["summary"]["parsing_errors"] == 0
    assert results["passed_checks"], "checkov passed nothing: did it scan the template at all?"
    evaluator = Evaluator(template, target)
    enabled = [r for r in template["Resources"].values() if "Condition" not in r or evaluator.condition(r["Condition"])]
    assert report["summary"]["resource_count"] >= len(enabled)
    # Every skip checkov applied carries the justification written next to the resource.
    unexplained = [
        f"{c['check_id']} {c['resource']}"
        for c in results["skipped_checks"]
        if len(c["check_result"].get("suppress_comment", "").split()) < 5
    ]
    assert unexplained == []
    for name, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), f"{name}: {skip}"
            assert len(skip.get("comment", "").split()) >= 5, f"{name} skips {skip['id']} without a reason"


# ------------------------------------------------------------------ the SAM transform


@pytest.fixture(scope="module", params=TARGETS)
def transformed(request: pytest.FixtureRequest, template: dict[str, Any]) -> dict[str, Any]:
    return sam_transform(template, request.param)


def test_sam_transform_succeeds_and_its_output_passes_cfn_lint(transformed: dict[str, Any]) -> None:
    kinds = {r["Type"] for r in transformed["Resources"].values()}
    assert not any(kind.startswith("AWS::Serverless::") for kind in kinds)
    assert {"AWS::Lambda::Function", "AWS::StepFunctions::StateMachine", "AWS::Events::Rule"} <= kinds
    # Warnings are left out: SAM copies Globals into conditional functions, where cfn-lint calls the
    # other branch of SAGEMAKER_BACKEND's Fn::If unreachable (W1028), which is true and harmless.
    assert lint_errors(json.dumps(transformed), levels="E") == []


def _rule(transformed: dict[str, Any], source: str) -> dict[str, Any]:
    [rule] = [r for r in resources(transformed, "AWS::Events::Rule").values()
              if r["Properties"]["EventPattern"]["source"] == [source]]  # fmt: skip
    return rule


def test_upload_rule_sends_incoming_objects_to_the_start_function(transformed: dict[str, Any]) -> None:
    rule = _rule(transformed, "aws.s3")
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.s3"] and pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["object"]["key"] == [{"prefix": "incoming/"}]
    [target] = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["StartPipelineFunction", "Arn"]}
    assert "DeadLetterConfig" in target and "RetryPolicy" in target
    bucket = transformed["Resources"]["DataBucket"]["Properties"]
    assert bucket["NotificationConfiguration"]["EventBridgeConfiguration"]["EventBridgeEnabled"] is True


def test_drift_alarm_rule_sends_its_move_to_alarm_to_the_start_function(transformed: dict[str, Any]) -> None:
    rule = _rule(transformed, "aws.cloudwatch")
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["detail-type"] == ["CloudWatch Alarm State Change"]
    assert pattern["detail"] == {"alarmName": [{"Ref": "MonitorDriftAlarm"}], "state": {"value": ["ALARM"]}}
    [target] = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["StartPipelineFunction", "Arn"]}
    assert "DeadLetterConfig" in target and "RetryPolicy" in target
    alarm = transformed["Resources"]["MonitorDriftAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("stepml/Monitoring", "DriftedFeatures")
    assert alarm["Dimensions"] == [{"Name": "ModelName", "Value": {"Ref": "MonitoredModelName"}}]


def test_retrain_schedule_exists_only_when_asked_for(transformed: dict[str, Any]) -> None:
    schedule = transformed["Resources"]["RetrainSchedule"]
    assert schedule["Condition"] == "HasRetrainSchedule"
    target = schedule["Properties"]["Target"]
    # through the alias, like every other start, so the run records the published version it ran
    assert target["Arn"] == {"Ref": "PipelineStateMachineAliaslive"}
    assert target["Input"] == {"Ref": "RetrainScheduleInput"}
    assert transformed["Resources"]["RetrainScheduleRole"]["Condition"] == "HasRetrainSchedule"


# ------------------------------------------------------------------ the state machine definition


def test_substitutions_and_asl_placeholders_match_exactly(template: dict[str, Any]) -> None:
    placeholders = set(PLACEHOLDER.findall(ASL.read_text()))
    assert set(substitutions(template)) == placeholders


@pytest.mark.parametrize("target", TARGETS)
def test_sagemaker_resources_are_the_stand_in_locally_and_sagemaker_on_aws(
    template: dict[str, Any], target: str
) -> None:
    values = Evaluator(template, target).value(substitutions(template))
    for key, action in SAGEMAKER_RESOURCES.items():
        if target == "local":
            function = values[key].rsplit(":", 1)[-1]
            env = template["Resources"][function]["Properties"]["Environment"]["Variables"]
            assert values[key] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}"
            assert env["STANDIN_ACTION"] == action, f"{key} resolves to the stand-in for {env['STANDIN_ACTION']}"
        else:
            assert values[key].startswith(("arn:aws:states:::sagemaker:", "arn:aws:states:::aws-sdk:sagemaker:"))
            assert values[key].split(":")[-1].lower().removesuffix(".sync") == action.lower()
    assert {k for k in values if k.endswith("Resource")} == set(SAGEMAKER_RESOURCES)


@pytest.mark.parametrize("target", TARGETS)
def test_definition_passes_the_asl_schema(template: dict[str, Any], target: str) -> None:
    assert lint_errors(asl_template(resolved_definition(template, target))) == []


def asl_template(definition: dict[str, Any]) -> str:
    return json.dumps(
        {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Resources": {
                "StateMachine": {
                    "Type": "AWS::StepFunctions::StateMachine",
                    "Properties": {"RoleArn": f"arn:aws:iam::{ACCOUNT}:role/states", "Definition": definition},
                }
            },
        }
    )


def test_asl_lint_catches_a_broken_definition(template: dict[str, Any]) -> None:
    """The ASL check is live: a state with an unknown field and a Choice without Choices are reported."""
    broken = resolved_definition(template, "aws")
    broken["States"]["QualityGate"].pop("Choices")
    broken["States"]["Ingest"]["Retries"] = broken["States"]["Ingest"].pop("Retry")
    errors = lint_errors(asl_template(broken))
    assert any("Choices" in e for e in errors) and any("Retries" in e for e in errors), errors


def transitions(state: dict[str, Any]) -> Iterator[str]:
    for key in ("Next", "Default"):
        if key in state:
            yield state[key]
    for branch in state.get("Choices", []) + state.get("Catch", []):
        yield branch["Next"]


def test_every_transition_target_exists_and_every_state_is_reachable() -> None:
    definition = json.loads(ASL.read_text())
    states = definition["States"]
    for name, state in states.items():
        for target in transitions(state):
            assert target in states, f"{name} goes to unknown state {target}"
    seen, todo = set(), [definition["StartAt"]]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(transitions(states[name]))
    assert seen == set(states), f"unreachable: {sorted(set(states) - seen)}"


# ------------------------------------------------------------------ what the embedded runtime reads


def test_embedded_runtime_reads_only_intrinsics_it_evaluates(template: dict[str, Any]) -> None:
    local = Evaluator(template, "local")
    used = set(intrinsics_evaluated(substitutions(template), local))
    used |= set(intrinsics_evaluated(template["Globals"]["Function"]["Environment"], local))
    for resource in resources(template, "AWS::Serverless::Function").values():
        used |= set(intrinsics_evaluated(resource["Properties"].get("Environment", {}), local))
    assert used <= EMBEDDED_INTRINSICS, used - EMBEDDED_INTRINSICS
    # The check follows Fn::If like the runtime: the AWS branch may use the region mapping, local may not.
    assert "Fn::FindInMap" in set(intrinsics_evaluated(substitutions(template), Evaluator(template, "aws")))


def test_start_function_starts_runs_through_the_alias(template: dict[str, Any]) -> None:
    env = template["Resources"]["StartPipelineFunction"]["Properties"]["Environment"]["Variables"]
    assert env["STATE_MACHINE_ARN"] == {"Ref": ALIAS_RESOURCE}
    [start] = [s for _, s in statements(template, "aws") if s["Action"] == "states:StartExecution"]
    # authorized against the unqualified ARN, limited to the alias by the qualifier condition
    assert start["Resource"] == f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:PipelineStateMachine"
    assert start["Condition"] == {"StringEquals": {"states:StateMachineQualifier": ALIAS}}
    assert template["Outputs"]["StateMachineAliasArn"]["Value"] == {"Ref": ALIAS_RESOURCE}


def test_each_deploy_publishes_a_version_and_points_the_alias_at_it(transformed: dict[str, Any]) -> None:
    [version] = resources(transformed, "AWS::StepFunctions::StateMachineVersion").values()
    [(alias_id, alias)] = resources(transformed, "AWS::StepFunctions::StateMachineAlias").items()
    assert alias_id == ALIAS_RESOURCE and alias["Properties"]["Name"] == ALIAS
    assert version["Properties"]["StateMachineArn"] == {"Ref": "PipelineStateMachine"}
    # an earlier version outlives its replacement, so the alias can be pointed back at it
    assert version["DeletionPolicy"] == "Retain" and version["UpdateReplacePolicy"] == "Retain"
    preference = alias["Properties"]["DeploymentPreference"]
    assert preference["StateMachineVersionArn"] == {"Ref": "PipelineStateMachineVersion"}


def test_ingest_may_learn_which_version_its_execution_runs(template: dict[str, Any]) -> None:
    actions = {
        action
        for name, s in statements(template, "aws")
        if name == "IngestFunction"
        for action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    assert {"states:DescribeExecution", "states:DescribeStateMachineForExecution"} <= actions


# ------------------------------------------------------------------ least privilege


def statements(
    template: dict[str, Any], target: str, region: str = REGION, **parameters: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every inline IAM statement of the template (roles and SAM function policies) under ``target``."""
    evaluator = Evaluator(template, target, region, **parameters)
    for name, resource in template["Resources"].items():
        if "Condition" in resource and not evaluator.condition(resource["Condition"]):
            continue
        props = resource.get("Properties", {})
        documents = [p["PolicyDocument"] for p in props.get("Policies", []) if "PolicyDocument" in p]
        documents += [p for p in props.get("Policies", []) if "Statement" in p]
        for document in documents:
            for statement in document["Statement"]:
                resolved = evaluator.value(statement)
                if resolved is not NO_VALUE:
                    yield name, resolved


@pytest.mark.parametrize("target", TARGETS)
def test_star_resources_only_for_actions_aws_cannot_scope(template: dict[str, Any], target: str) -> None:
    for name, statement in statements(template, target):
        resource = statement["Resource"]
        if resource == "*" or (isinstance(resource, list) and "*" in resource):
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert set(actions) <= UNSCOPABLE_ACTIONS, f"{name} {statement.get('Sid')}: {actions} on '*'"
        for action in statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]:
            assert not action.endswith("*") or action.startswith("kms:"), f"{name}: wildcard action {action}"


def every_state(definition: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The definition's states, with those of its Map item processors and Parallel branches."""
    for state in definition["States"].values():
        yield state
        for nested in [state.get("ItemProcessor") or state.get("Iterator"), *state.get("Branches", [])]:
            if nested:
                yield from every_state(nested)


@pytest.mark.parametrize("target", TARGETS)
def test_state_machine_invokes_exactly_the_functions_its_definition_names(
    template: dict[str, Any], target: str
) -> None:
    definition = resolved_definition(template, target)
    named = set()
    for state in every_state(definition):
        resource = state.get("Resource", "")
        if resource.startswith("arn:aws:states:::lambda:invoke"):
            named.add(state["Parameters"]["FunctionName"])  # the service integration (e.g. .waitForTaskToken)
        elif ":lambda:" in resource:
            named.add(resource)
    assert any(
        r.startswith("arn:aws:states:::lambda:invoke")
        for r in (s.get("Resource", "") for s in definition["States"].values())
    )
    [invoke] = [
        s for n, s in statements(template, target) if n == "StateMachineRole" and s["Action"] == "lambda:InvokeFunction"
    ]
    assert set(invoke["Resource"]) == named


def test_sagemaker_permissions_are_scoped_to_the_pipelines_names(template: dict[str, Any]) -> None:
    sagemaker = [s for n, s in statements(template, "aws") if n == "StateMachineRole" and "sagemaker" in str(s)]
    for statement in sagemaker:
        resources_ = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for resource in resources_:
            text = json.dumps(resource)
            assert resource == "*" or "/stepml-dev-*" in text or ":role/" in text, statement
    assert not [s for n, s in statements(template, "local") if "sagemaker:" in json.dumps(s.get("Action"))]
    pass_role = [s for n, s in statements(template, "aws") if s["Action"] == "iam:PassRole"]
    assert pass_role and all(
        s["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}} for s in pass_role
    )


def test_every_function_has_error_and_throttle_alarms(template: dict[str, Any]) -> None:
    alarms = resources(template, "AWS::CloudWatch::Alarm").values()
    watched = {
        (a["Properties"]["MetricName"], json.dumps(a["Properties"]["Dimensions"][0]["Value"]))
        for a in alarms
        if a["Properties"]["Namespace"] == "AWS/Lambda"
    }
    for name, resource in resources(template, "AWS::Serverless::Function").items():
        if "Condition" in resource:  # the stand-ins exist only on local targets
            continue
        for metric in ("Errors", "Throttles"):
            assert (metric, json.dumps({"Ref": name})) in watched, f"no {metric} alarm for {name}"
    state_machine_metrics = {
        a["Properties"]["MetricName"] for a in alarms if a["Properties"]["Namespace"] == "AWS/States"
    }
    assert state_machine_metrics == {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionThrottled"}
    endpoint_metrics = {
        a["Properties"]["MetricName"] for a in alarms if a["Properties"]["Namespace"] == "AWS/SageMaker"
    }
    assert endpoint_metrics == {"Invocation5XXErrors", "ModelLatency"}


# ------------------------------------------------------------------ images and datasets

SKLEARN_IMAGE = "{account}.dkr.ecr.{region}.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


def image_pull_resources(template: dict[str, Any], region: str, **parameters: str) -> list[str]:
    [pull] = [
        s for n, s in statements(template, "aws", region, **parameters) if s.get("Sid") == "PullTheFrameworkImages"
    ]
    return list(pull["Resource"])


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "ap-northeast-1", "sa-east-1"])
def test_default_images_are_the_stack_regions_scikit_learn_image(template: dict[str, Any], region: str) -> None:
    account = template["Mappings"]["ScikitLearnImageRegistry"][region]["Account"]
    expected = SKLEARN_IMAGE.format(account=account, region=region)
    values = Evaluator(template, "aws", region).value(substitutions(template))
    assert values["TrainingImageUri"] == values["InferenceImageUri"] == expected
    assert image_pull_resources(template, region) == [
        f"arn:aws:ecr:{region}:{account}:repository/sagemaker-scikit-learn"
    ]


def test_an_image_parameter_overrides_the_regions_image(template: dict[str, Any]) -> None:
    custom = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/sklearn:2.0"
    values = Evaluator(template, "aws", "eu-west-1", TrainingImageUri=custom).value(substitutions(template))
    assert values["TrainingImageUri"] == custom
    assert values["InferenceImageUri"] == SKLEARN_IMAGE.format(account="141502667606", region="eu-west-1")
    # SageMaker may pull both: the overridden training image and the region's image for the endpoint.
    assert image_pull_resources(template, "eu-west-1", TrainingImageUri=custom) == [
        "arn:aws:ecr:eu-west-1:123456789012:repository/team",
        "arn:aws:ecr:eu-west-1:141502667606:repository/sagemaker-scikit-learn",
    ]


def test_image_registry_mapping_has_an_account_per_region(template: dict[str, Any]) -> None:
    mapping = template["Mappings"]["ScikitLearnImageRegistry"]
    assert {"us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2"} <= set(mapping)
    for region, entry in mapping.items():
        assert re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-\d", region), region
        assert re.fullmatch(r"\d{12}", entry["Account"]), (region, entry)


def test_ingest_may_read_every_prefix_runs_start_from(template: dict[str, Any]) -> None:
    """`stepml start --data FILE` and the notebook stage files under datasets/ (which starts no run by itself);
    uploads under incoming/ start runs through the S3 trigger. On AWS, Ingest needs to read both."""
    import inspect

    from stepml.remote import stage_dataset

    staged = inspect.signature(stage_dataset).parameters["prefix"].default
    readable = {
        resource
        for name, s in statements(template, "aws")
        if name == "IngestFunction" and "s3:GetObject" in s["Action"]
        for resource in s["Resource"]
    }
    for prefix in (staged, "incoming"):
        assert f"arn:aws:s3:::databucket/{prefix}/*" in readable, prefix


def _allowed(template: dict[str, Any], function: str, action: str) -> set[str]:
    found = set()
    for name, statement in statements(template, "aws"):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if name == function and action in actions:
            resources = statement["Resource"]
            found |= set(resources if isinstance(resources, list) else [resources])
    return found


def test_the_states_that_check_a_models_identity_may_read_the_registry(template: dict[str, Any]) -> None:
    """ValidateData refuses a model name registered with another target or problem type (a registry Query);
    Evaluate checks it again and reads the trainer code under code/ for the lineage."""
    for function in ("ValidateDataFunction", "EvaluateFunction"):
        assert any("ModelRegistryTable" in str(r) or "registry" in str(r).lower()
                   for r in _allowed(template, function, "dynamodb:Query")), function  # fmt: skip
    readable = _allowed(template, "EvaluateFunction", "s3:GetObject") & _allowed(
        template, "EvaluateFunction", "s3:GetObjectVersion"
    )
    assert "arn:aws:s3:::databucket/code/*" in readable
    assert "MODEL_REGISTRY_TABLE" in template["Globals"]["Function"]["Environment"]["Variables"]


# ------------------------------------------------------------------ Lambda's 250 MB limit

# A function's code and all its layers, unzipped, must stay under 262,144,000 bytes (250 MiB).
LAMBDA_UNZIPPED_LIMIT = 262_144_000
# The public layers cannot be measured here (no account). The AWS SDK for pandas layer for python3.12
# (pandas, numpy, pyarrow) unzips to 167 MiB (awswrangler 3.16.0) or 204 MiB (3.16.1), as measured by its
# users in github.com/aws/aws-sdk-pandas/issues/3331 (2026-05); the smaller figure is used. Powertools' layer
# holds aws-lambda-powertools with all its extras but not boto3/botocore: `pip install
# "aws-lambda-powertools[all]==3.37.0"` for python3.12 x86_64 without those came to 28.5 MiB (2026-11).
PANDAS_LAYER_BYTES = 167 * 2**20
POWERTOOLS_LAYER_BYTES = 28 * 2**20
# What `sam build` resolves a requirements.txt for: Lambda's python3.12 on x86_64 Linux.
LAMBDA_MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def installed_bytes(requirement_lines: list[str]) -> dict[str, int]:
    """Installed size of each distribution `pip install` would put in the package for these requirements,
    measured from this environment's distributions (the python3.12 manylinux wheels are within a few %)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    sizes: dict[str, int] = {}
    todo = [Requirement(line) for line in requirement_lines]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in sizes:
            continue
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{requirement.name} is not installed here, so its size cannot be measured")
        sizes[name] = sum(f.size or 0 for f in distribution.files or [])
        for text in distribution.requires or []:
            dependency = Requirement(text)
            extras = ["", *sorted(requirement.extras)]
            if dependency.marker is None or any(
                dependency.marker.evaluate({**LAMBDA_MARKERS, "extra": extra}) for extra in extras
            ):
                todo.append(dependency)
    return sizes


def requirement_lines(directory: Path) -> list[str]:
    path = directory / "requirements.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def code_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def functions_on_aws() -> list[str]:
    try:
        template = load_template()
    except AssertionError:  # a broken template: test_cfn_lint_finds_nothing says why
        return []
    return sorted(name for name, r in resources(template, "AWS::Serverless::Function").items() if "Condition" not in r)


@pytest.mark.parametrize("function", functions_on_aws())
def test_function_and_its_layers_fit_lambdas_unzipped_limit(template: dict[str, Any], function: str) -> None:
    """What `sam build` packages for Target=aws: the function's code and requirements, plus its layers."""
    evaluator = Evaluator(template, "aws")
    props = template["Resources"][function]["Properties"]
    code_dir = (TEMPLATE.parent / props["CodeUri"]).resolve()
    parts = {"function code": code_bytes(code_dir)}
    parts.update({f"requirement {n}": b for n, b in installed_bytes(requirement_lines(code_dir)).items()})
    layers = evaluator.value(template["Globals"]["Function"]["Layers"] + props.get("Layers", []))
    for layer in layers:
        if layer == "sharedlayer":
            shared_dir = (TEMPLATE.parent / template["Resources"]["SharedLayer"]["Properties"]["ContentUri"]).resolve()
            shared = installed_bytes(requirement_lines(shared_dir))
            parts["shared layer"] = code_bytes(shared_dir) + sum(shared.values())
        elif ":layer:AWSLambdaPowertoolsPythonV3-" in layer:
            parts["Powertools layer"] = POWERTOOLS_LAYER_BYTES
        elif ":layer:AWSSDKPandas-" in layer:
            parts["AWS SDK for pandas layer"] = PANDAS_LAYER_BYTES
        else:
            pytest.fail(f"{function}: no size known for layer {layer}")
    total = sum(parts.values())
    breakdown = "\n".join(f"  {b / 2**20:7.1f} MiB  {p}" for p, b in sorted(parts.items(), key=lambda i: -i[1]))
    assert total < LAMBDA_UNZIPPED_LIMIT, f"{function}: {total / 2**20:.0f} MiB unzipped, over 250 MiB:\n{breakdown}"


# ------------------------------------------------------------------ docker compose and scripts


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    compose = yaml.safe_load(COMPOSE.read_text())
    # The vendored copy declares draft 2019-09 (as http://...#, a spelling jsonschema does not look up).
    assert "2019-09" in schema["$schema"]
    jsonschema.Draft201909Validator.check_schema(schema)
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_compose_schema_check_is_live() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    compose = yaml.safe_load(COMPOSE.read_text())
    compose["services"]["localstack"]["volumnes"] = compose["services"]["localstack"].pop("volumes")
    assert list(jsonschema.Draft201909Validator(schema).iter_errors(compose))


def test_compose_requires_the_auth_token_and_mounts_docker_and_the_hook() -> None:
    service = yaml.safe_load(COMPOSE.read_text())["services"]["localstack"]
    image = service["image"]
    # The unified image (auth token required) with a pinned calendar version, e.g. 2026.09.0.
    assert re.search(r"localstack/localstack:20\d\d\.\d\d\.\d+\}?$", image), image
    assert service["environment"]["LOCALSTACK_AUTH_TOKEN"].startswith("${LOCALSTACK_AUTH_TOKEN:?")
    volumes = service["volumes"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in volumes
    [hook_mount] = [v for v in volumes if v.split(":")[1] == "/etc/localstack/init/ready.d"]
    assert (ROOT / hook_mount.split(":")[0]).resolve() == READY_HOOK.parent
    assert os.access(READY_HOOK, os.X_OK) and os.access(UPLOAD_SCRIPT, os.X_OK)
    assert "Target=local" in READY_HOOK.read_text()


@pytest.mark.parametrize("script", [READY_HOOK, UPLOAD_SCRIPT], ids=lambda p: p.name)
def test_shell_scripts_parse(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True, capture_output=True)


def test_upload_script_puts_train_py_at_the_top_of_the_archive(tmp_path: Path) -> None:
    """Run the real script against a stand-in `aws` that answers the bucket name and keeps the upload."""
    fake_aws = tmp_path / "aws"
    fake_aws.write_text(
        "#!/usr/bin/env bash\n"
        'if [[ "$1" == cloudformation ]]; then echo stepml-bucket; exit 0; fi\n'
        f'if [[ "$1 $2" == "s3 cp" ]]; then cp "$3" "{tmp_path}/uploaded.tar.gz"; echo "$4" > "{tmp_path}/dest"; fi\n'
    )
    fake_aws.chmod(0o755)
    env = {**os.environ, "AWS_CLI": str(fake_aws)}
    subprocess.run([str(UPLOAD_SCRIPT), "stepml-test"], check=True, capture_output=True, env=env)

    assert (tmp_path / "dest").read_text().strip() == "s3://stepml-bucket/code/training-source.tar.gz"
    with tarfile.open(tmp_path / "uploaded.tar.gz") as archive:
        names = {Path(n).as_posix().removeprefix("./") for n in archive.getnames()}
    expected = {p.name for p in (ROOT / "training").glob("*.py")}
    assert "train.py" in expected and expected <= names
    assert not [n for n in names if "__pycache__" in n]


def test_samconfig_deploys_this_template_with_the_capabilities_it_needs() -> None:
    config = tomllib.loads((ROOT / "infra" / "samconfig.toml").read_text())
    deploy = config["default"]["deploy"]["parameters"]
    assert set(deploy["capabilities"].split()) == {"CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"}
    assert 'Target="aws"' in deploy["parameter_overrides"]
