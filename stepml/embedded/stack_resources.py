"""Create in the embedded AWS what else infra/template.yaml deploys: functions, log groups, alarms, dashboard, rules.

``EmbeddedAws.provision`` makes what the pipeline's code calls (bucket, tables, topic, state machine). A
deployed stack has more, and tools look for it through the AWS APIs: ``aws lambda list-functions``, ``aws logs
tail``, ``aws cloudwatch describe-alarms``. moto's CloudFormation would report them created without making
most of them (docs/DESIGN.md), so they are created here one API call at a time, from the template evaluated as
for the other resources (``Target=local``: a resource whose Condition fails is not created).

moto keeps what it is given: it runs no Lambda code without Docker (stepml's workers run it), evaluates no
alarm (:mod:`stepml.embedded.alarms` does) and receives no logs unless they are shipped
(:mod:`stepml.embedded.function_logs`).
"""

from __future__ import annotations

import functools
import io
import json
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from stepml.embedded.template import ACCOUNT_ID, REGION, EvaluatedResource, evaluated_resources

ClientFactory = Callable[[str], Any]

FUNCTION = "AWS::Serverless::Function"
LOG_GROUP = "AWS::Logs::LogGroup"
ALARM = "AWS::CloudWatch::Alarm"
DASHBOARD = "AWS::CloudWatch::Dashboard"
RULE = "AWS::Events::Rule"
_LAMBDA_TRUST_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)
_PARALLEL_CALLS = 8
# Error codes of a create call whose resource is already there (provisioning twice is not an error).
_ALREADY_EXISTS = {"ResourceAlreadyExistsException", "EntityAlreadyExists", "ResourceConflictException"}


@dataclass
class StackResources:
    """What :func:`provision_stack_resources` created, by name."""

    functions: dict[str, str] = field(default_factory=dict)  # name -> ARN
    log_groups: list[str] = field(default_factory=list)
    alarms: list[str] = field(default_factory=list)
    dashboards: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    seconds: float = 0.0


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"


def provision_stack_resources(
    client: ClientFactory, template_path: Path, stack_name: str, parameters: dict[str, str]
) -> StackResources:
    """Create the template's functions, log groups, alarms, dashboards and EventBridge rules in the embedded AWS.

    ``client(service)`` returns a boto3 client for it (logs, iam, lambda, cloudwatch, events). Run it on an
    account that has none of them yet; what already exists is left as it is.
    """
    started = time.perf_counter()
    types = {FUNCTION, LOG_GROUP, ALARM, DASHBOARD, RULE}
    resources = list(evaluated_resources(template_path, stack_name, parameters, types).values())
    logs, lambda_client = client("logs"), client("lambda")
    cloudwatch, events = client("cloudwatch"), client("events")
    # SAM gives each function a role of its own with the function's policies; moto only checks that the role
    # exists and enforces no policy, so one role serves them all (and saves 15 calls).
    role = f"{stack_name}-FunctionRole"[:64]
    _created(client("iam").create_role, RoleName=role, AssumeRolePolicyDocument=_LAMBDA_TRUST_POLICY)
    jobs: list[tuple[str, Callable[[], str]]] = []
    for resource in resources:
        if resource.type == LOG_GROUP:
            jobs.append(("log_groups", functools.partial(_create_log_group, logs, resource)))
        elif resource.type == FUNCTION:
            role_arn = resource.properties.get("Role") or f"arn:aws:iam::{ACCOUNT_ID}:role/{role}"
            jobs.append(("functions", functools.partial(_create_function, lambda_client, resource, role_arn)))
            jobs += [
                ("rules", functools.partial(_put_rule, events, *rule)) for rule in _function_rules(resource, stack_name)
            ]
        elif resource.type == ALARM:
            jobs.append(("alarms", functools.partial(_put_alarm, cloudwatch, resource)))
        elif resource.type == DASHBOARD:
            jobs.append(("dashboards", functools.partial(_put_dashboard, cloudwatch, resource)))
        elif resource.type == RULE:
            jobs.append(("rules", functools.partial(_put_rule, events, *_rule(resource))))
    # The first call to each of moto's services builds that service (~30-150 ms, CPU-bound), and many first
    # calls at once were seen to take several times longer than one after another: one job of each kind goes
    # first, alone. The later calls (~45 for infra/template.yaml) wait in part on the HTTP server, a thread of
    # this process: a few at once were measured ~1.4x faster than one after another.
    first = {kind: index for index, (kind, _) in reversed(list(enumerate(jobs)))}
    names: dict[int, str] = {index: jobs[index][1]() for index in sorted(first.values())}
    rest = [index for index in range(len(jobs)) if index not in names]
    with ThreadPoolExecutor(max_workers=_PARALLEL_CALLS, thread_name_prefix="provision") as pool:
        names.update(zip(rest, pool.map(lambda index: jobs[index][1](), rest), strict=True))
    made = StackResources()
    for index, (kind, _) in enumerate(jobs):
        name = names[index]
        if kind == "functions":
            made.functions[name] = function_arn(name)
        else:
            getattr(made, kind).append(name)
    made.seconds = time.perf_counter() - started
    return made


def _created(call: Callable[..., Any], **kwargs: Any) -> None:
    try:
        call(**kwargs)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in _ALREADY_EXISTS:
            raise


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _create_log_group(logs: Any, group: EvaluatedResource) -> str:
    # No KmsKeyId: the embedded target creates no KMS key, so the groups are not encrypted here.
    _created(logs.create_log_group, logGroupName=group.name)
    if "RetentionInDays" in group.properties:
        logs.put_retention_policy(logGroupName=group.name, retentionInDays=int(group.properties["RetentionInDays"]))
    return group.name


@functools.cache
def _placeholder_zip(module: str) -> bytes:
    # Lambda needs a deployment package; this one only says where the code runs from (workers, not moto).
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            f"{module.replace('.', '/')}.py",
            '"""Placeholder: the embedded target runs this function from its CodeUri in stepml\'s own workers."""\n',
        )
    return buffer.getvalue()


def _create_function(lambda_client: Any, function: EvaluatedResource, role: str) -> str:
    props = function.properties
    request: dict[str, Any] = {
        "FunctionName": function.name,
        "Role": role,
        "Runtime": props.get("Runtime", "python3.12"),
        "Handler": props["Handler"],
        "Code": {"ZipFile": _placeholder_zip(props["Handler"].rpartition(".")[0])},
        "Description": props.get("Description", ""),
        "Timeout": int(props.get("Timeout", 3)),
        "MemorySize": int(props.get("MemorySize", 128)),
        "Architectures": props.get("Architectures", ["x86_64"]),
        "TracingConfig": {"Mode": "Active" if props.get("Tracing") == "Active" else "PassThrough"},
        "Tags": {"lambda:createdBy": "SAM"},  # what SAM tags its functions with
    }
    variables = props.get("Environment", {}).get("Variables", {})
    if variables:
        request["Environment"] = {"Variables": {k: str(v) for k, v in variables.items()}}
    if props.get("LoggingConfig"):
        request["LoggingConfig"] = props["LoggingConfig"]
    # No Layers: moto refuses layer versions it does not hold (Powertools' and AWS SDK for pandas' are
    # another account's); the workers import the same libraries from the project's environment.
    _created(lambda_client.create_function, **request)
    return function.name


def _ints(mapping: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: int(v) if k in keys else v for k, v in mapping.items()}


def _put_alarm(cloudwatch: Any, alarm: EvaluatedResource) -> str:
    props = alarm.properties
    # CloudFormation's property names are PutMetricAlarm's; numbers given by !Ref arrive as strings.
    passed = (
        "AlarmDescription", "ActionsEnabled", "AlarmActions", "OKActions", "InsufficientDataActions",
        "Namespace", "MetricName", "Dimensions", "Statistic", "ExtendedStatistic", "Unit", "ComparisonOperator",
        "TreatMissingData", "EvaluateLowSampleCountPercentile", "ThresholdMetricId", "Tags",
    )  # fmt: skip
    request: dict[str, Any] = {"AlarmName": alarm.name, **{k: props[k] for k in passed if k in props}}
    for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
        if key in props:
            request[key] = int(props[key])
    if "Threshold" in props:
        request["Threshold"] = float(props["Threshold"])
    if "Metrics" in props:  # metric math: the queries, each with its own period
        request["Metrics"] = [
            {
                **_ints(query, "Period"),
                **({"MetricStat": _ints(query["MetricStat"], "Period")} if "MetricStat" in query else {}),
            }
            for query in props["Metrics"]
        ]
    cloudwatch.put_metric_alarm(**request)
    return alarm.name


def _put_dashboard(cloudwatch: Any, dashboard: EvaluatedResource) -> str:
    cloudwatch.put_dashboard(DashboardName=dashboard.name, DashboardBody=_text(dashboard.properties["DashboardBody"]))
    return dashboard.name


def _function_rules(function: EvaluatedResource, stack_name: str) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The EventBridge rules (and their one target, the function) that a function's Events declare, as SAM
    makes them."""
    rules = []
    for event_id, event in function.properties.get("Events", {}).items():
        kind, props = event.get("Type"), event.get("Properties", {})
        if kind not in {"EventBridgeRule", "CloudWatchEvent", "Schedule"}:
            continue
        # SAM names the rule's logical id <function><event>, its target <function><event>LambdaTarget.
        source_id = f"{function.logical_id}{event_id}"
        rule: dict[str, Any] = {"Name": props.get("RuleName") or props.get("Name") or f"{stack_name}-{source_id}"[:64]}
        if "Pattern" in props:
            rule["EventPattern"] = _text(props["Pattern"])
        if "Schedule" in props:
            rule["ScheduleExpression"] = props["Schedule"]
        for key in ("EventBusName", "Description"):
            if props.get(key):
                rule[key] = props[key]
        rule["State"] = props.get("State") or ("DISABLED" if props.get("Enabled") is False else "ENABLED")
        target: dict[str, Any] = {
            "Id": props.get("Target", {}).get("Id") or f"{source_id}LambdaTarget"[:64],
            "Arn": function_arn(function.name),
        }
        for key in ("Input", "InputPath", "InputTransformer"):
            if key in props:
                target[key] = props[key]
        if "RetryPolicy" in props:
            target["RetryPolicy"] = _ints(props["RetryPolicy"], "MaximumRetryAttempts", "MaximumEventAgeInSeconds")
        if props.get("DeadLetterConfig", {}).get("Arn"):  # (SAM's {Type: SQS} makes a queue this stack lacks)
            target["DeadLetterConfig"] = {"Arn": props["DeadLetterConfig"]["Arn"]}
        rules.append((rule, [target]))
    return rules


def _rule(resource: EvaluatedResource) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    props = resource.properties
    keys = ("EventPattern", "ScheduleExpression", "State", "Description", "EventBusName", "RoleArn")
    rule = {
        "Name": resource.name,
        **{k: _text(props[k]) if k == "EventPattern" else props[k] for k in keys if k in props},
    }
    return rule, list(props.get("Targets", []))


def _put_rule(events: Any, rule: dict[str, Any], targets: list[dict[str, Any]]) -> str:
    events.put_rule(**rule)
    if targets:
        bus = {"EventBusName": rule["EventBusName"]} if "EventBusName" in rule else {}
        events.put_targets(Rule=rule["Name"], Targets=targets, **bus)
    return str(rule["Name"])
