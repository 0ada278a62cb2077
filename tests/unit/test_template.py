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
# Intrinsic functions the embedded runtime evaluates (function Environment, DefinitionSubstitutions).
EMBEDDED_INTRINSICS = {"Ref", "Fn::GetAtt", "Fn::Sub", "Fn::If", "Fn::Equals"}
# SageMaker resources of the ASL and the API each one calls (the stand-in's STANDIN_ACTION).
SAGEMAKER_RESOURCES = {
    "CreateTrainingJobResource": "CreateTrainingJob",
    "CreateModelResource": "CreateModel",
    "CreateEndpointConfigResource": "CreateEndpointConfig",
    "ListEndpointsResource": "ListEndpoints",
    "CreateEndpointResource": "CreateEndpoint",
    "UpdateEndpointResource": "UpdateEndpoint",
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


class Evaluator:
    """Resolves the intrinsic functions the template uses, with a fake account (Target chosen by the test)."""

    def __init__(self, template: dict[str, Any], target: str) -> None:
        self.template = template
        self.parameters = {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()}
        self.parameters["Target"] = target
        self.pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"}

    def condition(self, name: str) -> bool:
        return bool(self.value(self.template["Conditions"][name]))

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        kind = self.template["Resources"][name]["Type"]
        if kind == "AWS::SNS::Topic":
            return f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}"
        if kind == "AWS::Serverless::StateMachine":
            return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"
        return name.lower()

    def get_att(self, name: str, attribute: str) -> str:
        resource = self.template["Resources"][name]
        if "Condition" in resource:
            assert self.condition(resource["Condition"]), f"{name} is referenced but not created"
        kind = resource["Type"]
        if kind == "AWS::Serverless::Function" and attribute == "Arn":
            return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
        if kind == "AWS::IAM::Role" and attribute == "Arn":
            return f"arn:aws:iam::{ACCOUNT}:role/{name}"
        return f"arn:aws:fake:{REGION}:{ACCOUNT}:{name}.{attribute}"

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
            if fn == "Condition":
                return self.condition(arg)
        return {k: self.value(v) for k, v in node.items()}


def intrinsics_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" or key.startswith("Fn::"):
                yield key
            yield from intrinsics_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from intrinsics_in(value)


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


def test_checkov_fails_nothing_that_is_not_skipped_with_a_reason(template: dict[str, Any]) -> None:
    # --skip-download: no network (checkov otherwise fetches guidelines from its vendor's API).
    run = subprocess.run(
        [
            checkov_executable(),
            *("--file", str(TEMPLATE), "--framework", "cloudformation"),
            *("--skip-download", "--quiet", "--compact", "--output", "json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.stdout.strip(), f"checkov printed nothing; stderr:\n{run.stderr[-2000:]}"
    report = json.loads(run.stdout)
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in report["results"]["failed_checks"]]
    assert failed == [], "\n".join(failed)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] >= len(template["Resources"]) - len(
        [r for r in template["Resources"].values() if "Condition" in r]
    )
    # Every skip carries its justification next to the resource.
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


def test_upload_rule_sends_incoming_objects_to_the_start_function(transformed: dict[str, Any]) -> None:
    [rule] = resources(transformed, "AWS::Events::Rule").values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.s3"] and pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["object"]["key"] == [{"prefix": "incoming/"}]
    [target] = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["StartPipelineFunction", "Arn"]}
    assert "DeadLetterConfig" in target and "RetryPolicy" in target
    bucket = transformed["Resources"]["DataBucket"]["Properties"]
    assert bucket["NotificationConfiguration"]["EventBridgeConfiguration"]["EventBridgeEnabled"] is True


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
    used = set(intrinsics_in(substitutions(template)))
    used |= set(intrinsics_in(template["Globals"]["Function"]["Environment"]))
    for resource in resources(template, "AWS::Serverless::Function").values():
        used |= set(intrinsics_in(resource["Properties"].get("Environment", {})))
    assert used <= EMBEDDED_INTRINSICS, used - EMBEDDED_INTRINSICS


def test_start_function_knows_the_state_machine(template: dict[str, Any]) -> None:
    env = template["Resources"]["StartPipelineFunction"]["Properties"]["Environment"]["Variables"]
    assert env["STATE_MACHINE_ARN"] == {"Ref": "PipelineStateMachine"}


# ------------------------------------------------------------------ least privilege


def statements(template: dict[str, Any], target: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every inline IAM statement of the template (roles and SAM function policies) under ``target``."""
    evaluator = Evaluator(template, target)
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


@pytest.mark.parametrize("target", TARGETS)
def test_state_machine_invokes_exactly_the_functions_its_definition_names(
    template: dict[str, Any], target: str
) -> None:
    definition = resolved_definition(template, target)
    named = {s["Resource"] for s in definition["States"].values() if ":lambda:" in s.get("Resource", "")}
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
            assert resource == "*" or "/stepml-*" in text or ":role/" in text, statement
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
    assert re.search(r"localstack/localstack(-pro)?:\d+\.\d+", image) and ":latest" not in image
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
