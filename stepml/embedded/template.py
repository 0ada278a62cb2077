"""Read infra/template.yaml and evaluate what the embedded target needs from it.

The embedded runtime provisions exactly what the SAM template declares for ``Target=local``: the same
functions (code, handler, environment), tables, bucket, topic and the state machine's
DefinitionSubstitutions. Only the intrinsic functions used there are evaluated (Ref, Fn::GetAtt,
Fn::Sub, Fn::If, Fn::Equals, Fn::Not, Fn::And, Fn::Or); anything else is an error, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"


class TemplateError(ValueError):
    """The template uses something the embedded target cannot evaluate."""


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that turns CloudFormation short tags (!Ref, !GetAtt …) into their long form."""


def _construct_tag(loader: yaml.SafeLoader | yaml.CSafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = tag_suffix if tag_suffix in {"Ref", "Condition"} else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if name == "Fn::GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


_loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = _CfnLoader
if yaml.__with_libyaml__:  # (PyYAML defines CSafeLoader only when built with libyaml)

    class _CfnCLoader(yaml.CSafeLoader):
        """The same loader on libyaml: it parses infra/template.yaml in ~45 ms instead of ~370 ms, which every
        start of the embedded target pays (the data it builds is the same)."""

    _CfnCLoader.add_multi_constructor("!", _construct_tag)
    _loader = _CfnCLoader


def load_template(path: Path) -> dict[str, Any]:
    """The template as plain data, intrinsic functions in their long form."""
    loaded = yaml.load(path.read_text(), Loader=_loader)
    if not isinstance(loaded, dict) or "Resources" not in loaded:
        raise TemplateError(f"{path} is not a CloudFormation template (no Resources)")
    return loaded


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    timeout_seconds: int
    memory_mb: int
    environment: dict[str, str]
    event_patterns: tuple[dict[str, Any], ...] = ()
    # LoggingConfig: Lambda writes to /aws/lambda/<name> unless the function names a log group of its own
    log_group: str = ""
    log_format: str = "Text"

    @property
    def log_group_name(self) -> str:
        return self.log_group or f"/aws/lambda/{self.name}"


@dataclass(frozen=True)
class TableSpec:
    logical_id: str
    name: str
    key_schema: list[dict[str, str]]
    attribute_definitions: list[dict[str, str]]
    ttl_attribute: str | None = None
    # GlobalSecondaryIndexes as CreateTable takes them (the template's property is the API's shape)
    global_secondary_indexes: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class LocalSchedule:
    """An EventBridge Scheduler schedule of the template (a Scheduler resource or a function's ScheduleV2
    event), as the local AWS runs it (``stepml/embedded/schedules.py``)."""

    name: str
    expression: str
    target_arn: str
    input: str
    timezone: str = "UTC"
    enabled: bool = True


def _schedule(name: str, properties: dict[str, Any], target_arn: str, input_text: Any) -> LocalSchedule:
    return LocalSchedule(
        name=str(properties.get("Name") or name),
        expression=str(properties["ScheduleExpression"]),
        target_arn=target_arn,
        input=str(input_text if input_text is not None else "{}"),
        timezone=str(properties.get("ScheduleExpressionTimezone") or "UTC"),
        enabled=properties.get("State", "ENABLED") == "ENABLED",
    )


# The pipeline's state machine: the one runs start, and whose name, definition and substitutions StackModel
# exposes directly; the template's other state machines (batch scoring) are in StackModel.state_machines.
PIPELINE_STATE_MACHINE = "PipelineStateMachine"


@dataclass(frozen=True)
class StateMachineSpec:
    logical_id: str
    name: str
    definition: Path
    substitutions: dict[str, str]

    @property
    def arn(self) -> str:
        return f"arn:aws:states:{REGION}:{ACCOUNT_ID}:stateMachine:{self.name}"


@dataclass
class StackModel:
    """What the embedded target provisions, evaluated from the template."""

    stack_name: str
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    tables: dict[str, TableSpec] = field(default_factory=dict)
    buckets: dict[str, str] = field(default_factory=dict)
    topics: dict[str, str] = field(default_factory=dict)
    state_machine_name: str = ""
    state_machine_definition: Path | None = None
    substitutions: dict[str, str] = field(default_factory=dict)
    # every state machine of the template by logical id, the pipeline's included
    state_machines: dict[str, StateMachineSpec] = field(default_factory=dict)
    # the schedules the template declares (enabled or not)
    schedules: list[LocalSchedule] = field(default_factory=list)

    def function_by_name_or_arn(self, name_or_arn: str) -> FunctionSpec | None:
        # Lambda accepts a name, a full ARN or a partial ARN, optionally with a :qualifier
        name = name_or_arn.split(":function:", 1)[-1].split(":", 1)[0]
        return next((f for f in self.functions.values() if f.name == name), None)

    @property
    def data_bucket(self) -> str:
        return self.buckets["DataBucket"]

    @property
    def state_machine_arn(self) -> str:
        return f"arn:aws:states:{REGION}:{ACCOUNT_ID}:stateMachine:{self.state_machine_name}"


# The property that names a resource; without it CloudFormation makes a name up (here: <stack>-<logical id>).
_NAME_PROPERTIES = {
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::CloudWatch::Alarm": "AlarmName",
    "AWS::CloudWatch::Dashboard": "DashboardName",
    "AWS::Events::Rule": "Name",
    "AWS::SQS::Queue": "QueueName",
    "AWS::Serverless::Function": "FunctionName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::Serverless::StateMachine": "Name",
}


class _Evaluator:
    def __init__(self, template: dict[str, Any], stack_name: str, parameters: dict[str, str]) -> None:
        self.template = template
        self.stack_name = stack_name
        self.parameters = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
        self.parameters.update(parameters)
        self.resources: dict[str, dict[str, Any]] = template["Resources"]
        self._condition_exprs: dict[str, Any] = template.get("Conditions", {})
        self._conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        """A condition's value, evaluated on first use (conditions may refer to later ones)."""
        if name not in self._conditions:
            if name not in self._condition_exprs:
                raise TemplateError(f"unknown condition {name!r}")
            self._conditions[name] = bool(self.evaluate(self._condition_exprs[name]))
        return self._conditions[name]

    def physical_name(self, logical_id: str) -> str:
        resource = self.resources[logical_id]
        resource_type = resource["Type"]
        name_property = _NAME_PROPERTIES.get(resource_type)
        if name_property and name_property in resource.get("Properties", {}):
            return str(self.evaluate(resource["Properties"][name_property]))
        if resource_type == "AWS::S3::Bucket":
            return f"{self.stack_name}-{logical_id}".lower()[:63]
        return f"{self.stack_name}-{logical_id}"[:64]

    def ref(self, name: str) -> str:
        pseudo = {
            "AWS::StackName": self.stack_name,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": "",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name not in self.resources:
            machine = self.published_alias_of(name)
            if machine is not None:
                # The embedded target publishes no versions: moto's engine cannot start an execution through
                # an alias, so what starts runs through the alias on AWS starts them unqualified here (their
                # definition version is then the definition's hash, see pipeline_core.aws.definition_version).
                return self.ref(machine)
            raise TemplateError(f"Ref to unknown name {name!r}")
        resource_type = self.resources[name]["Type"]
        if resource_type == "AWS::SNS::Topic":
            return f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:{self.physical_name(name)}"
        if resource_type == "AWS::Serverless::StateMachine":
            return f"arn:aws:states:{REGION}:{ACCOUNT_ID}:stateMachine:{self.physical_name(name)}"
        return self.physical_name(name)

    def published_alias_of(self, name: str) -> str | None:
        """The state machine whose SAM-generated alias resource is ``name`` (``<machine>Alias<alias>``, made by
        the machine's AutoPublishAlias), or None."""
        for logical_id, resource in self.resources.items():
            alias = resource.get("Properties", {}).get("AutoPublishAlias")
            if resource["Type"] == "AWS::Serverless::StateMachine" and alias and name == f"{logical_id}Alias{alias}":
                return logical_id
        return None

    def get_att(self, logical_id: str, attribute: str) -> str:
        if logical_id not in self.resources:
            raise TemplateError(f"Fn::GetAtt on unknown resource {logical_id!r}")
        resource_type = self.resources[logical_id]["Type"]
        name = self.physical_name(logical_id)
        arns = {
            "AWS::Serverless::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}",
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT_ID}:role/{name}",
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}",
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
            "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{name}:*",
            # (the embedded target creates no KMS key; the ARN only names it)
            "AWS::KMS::Key": f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/{name}",
        }
        if attribute == "Arn" and resource_type in arns:
            return arns[resource_type]
        if attribute == "Name" or (attribute == "QueueName" and resource_type == "AWS::SQS::Queue"):
            return name
        raise TemplateError(f"Fn::GetAtt {logical_id}.{attribute} is not supported by the embedded target")

    def sub(self, value: Any) -> str:
        text, variables = (value, {}) if isinstance(value, str) else (value[0], value[1])

        def replace(match: re.Match[str]) -> str:
            token = match.group(1)
            if token in variables:
                return str(self.evaluate(variables[token]))
            if "." in token and not token.startswith("AWS::"):
                logical_id, attribute = token.split(".", 1)
                return self.get_att(logical_id, attribute)
            return self.ref(token)

        return re.sub(r"\$\{([^}!]+)\}", replace, text)

    def evaluate(self, expr: Any) -> Any:
        if isinstance(expr, list):
            return [self.evaluate(e) for e in expr]
        if not isinstance(expr, dict):
            return expr
        if len(expr) == 1:
            ((key, arg),) = expr.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                parts = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.get_att(parts[0], parts[1])
            if key == "Fn::Sub":
                return self.sub(arg)
            if key == "Fn::If":
                condition, when_true, when_false = arg
                return self.evaluate(when_true if self.condition(condition) else when_false)
            if key == "Fn::Equals":
                left, right = (self.evaluate(a) for a in arg)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self.evaluate(arg[0])
            if key == "Fn::And":
                return all(self.evaluate(a) for a in arg)
            if key == "Fn::Or":
                return any(self.evaluate(a) for a in arg)
            if key == "Condition":
                return self.condition(arg)
            if key.startswith("Fn::"):
                raise TemplateError(f"{key} is not supported by the embedded target")
        return {k: self.evaluate(v) for k, v in expr.items()}

    def is_enabled(self, resource: dict[str, Any]) -> bool:
        condition = resource.get("Condition")
        return condition is None or self.condition(condition)


def stack_model(template_path: Path, stack_name: str, parameters: dict[str, str]) -> StackModel:
    """Evaluate the template for the embedded target (``parameters`` override the defaults)."""
    template = load_template(template_path)
    evaluator = _Evaluator(template, stack_name, parameters)
    base = template_path.parent
    global_function = template.get("Globals", {}).get("Function", {})
    global_env = evaluator.evaluate(global_function.get("Environment", {}).get("Variables", {}))
    global_logging = evaluator.evaluate(global_function.get("LoggingConfig", {}))
    model = StackModel(stack_name=stack_name)
    for logical_id, resource in evaluator.resources.items():
        if not evaluator.is_enabled(resource):
            continue
        properties = resource.get("Properties", {})
        resource_type = resource["Type"]
        if resource_type == "AWS::Serverless::Function":
            env = {**global_env, **evaluator.evaluate(properties.get("Environment", {}).get("Variables", {}))}
            name = evaluator.physical_name(logical_id)
            logging_config = {**global_logging, **evaluator.evaluate(properties.get("LoggingConfig", {}))}
            model.functions[logical_id] = FunctionSpec(
                logical_id=logical_id,
                name=name,
                arn=evaluator.get_att(logical_id, "Arn"),
                code_dir=(base / properties["CodeUri"]).resolve(),
                handler=properties.get("Handler", global_function.get("Handler", "")),
                timeout_seconds=int(properties.get("Timeout", global_function.get("Timeout", 3))),
                memory_mb=int(evaluator.evaluate(properties.get("MemorySize", global_function.get("MemorySize", 128)))),
                environment={k: str(v) for k, v in env.items()},
                event_patterns=tuple(
                    evaluator.evaluate(event["Properties"]["Pattern"])
                    for event in properties.get("Events", {}).values()
                    if event.get("Type") == "EventBridgeRule"
                ),
                log_group=str(logging_config.get("LogGroup", "")),
                log_format=str(logging_config.get("LogFormat", "Text")),
            )
            for event_id, event in properties.get("Events", {}).items():
                if event.get("Type") == "ScheduleV2":  # SAM makes it an AWS::Scheduler::Schedule invoking the function
                    schedule = evaluator.evaluate(event.get("Properties", {}))
                    model.schedules.append(_schedule(f"{name}-{event_id}", schedule, name, schedule.get("Input")))
        elif resource_type == "AWS::Scheduler::Schedule":
            schedule = evaluator.evaluate(properties)
            target = schedule["Target"]
            model.schedules.append(
                _schedule(evaluator.physical_name(logical_id), schedule, str(target["Arn"]), target.get("Input"))
            )
        elif resource_type == "AWS::DynamoDB::Table":
            ttl = properties.get("TimeToLiveSpecification", {})
            model.tables[logical_id] = TableSpec(
                logical_id=logical_id,
                name=evaluator.physical_name(logical_id),
                key_schema=properties["KeySchema"],
                attribute_definitions=properties["AttributeDefinitions"],
                ttl_attribute=ttl.get("AttributeName") if ttl.get("Enabled") else None,
                global_secondary_indexes=tuple(evaluator.evaluate(properties.get("GlobalSecondaryIndexes", []))),
            )
        elif resource_type == "AWS::S3::Bucket":
            model.buckets[logical_id] = evaluator.physical_name(logical_id)
        elif resource_type == "AWS::SNS::Topic":
            model.topics[logical_id] = evaluator.ref(logical_id)
        elif resource_type == "AWS::Serverless::StateMachine":
            model.state_machines[logical_id] = StateMachineSpec(
                logical_id=logical_id,
                name=evaluator.physical_name(logical_id),
                definition=(base / properties["DefinitionUri"]).resolve(),
                substitutions={
                    k: str(evaluator.evaluate(v)) for k, v in properties.get("DefinitionSubstitutions", {}).items()
                },
            )
    if not model.state_machines:
        raise TemplateError(f"{template_path} declares no AWS::Serverless::StateMachine")
    pipeline = model.state_machines.get(PIPELINE_STATE_MACHINE) or next(iter(model.state_machines.values()))
    model.state_machine_name = pipeline.name
    model.state_machine_definition = pipeline.definition
    model.substitutions = pipeline.substitutions
    return model


@dataclass(frozen=True)
class EvaluatedResource:
    """A resource of the template with its properties evaluated (a function's merged with Globals)."""

    logical_id: str
    type: str
    name: str
    properties: dict[str, Any]


def _with_globals(global_properties: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    # SAM's Globals: maps are merged key by key, lists are the global entries followed by the resource's,
    # anything else the resource's value wins.
    merged = dict(global_properties)
    for key, value in properties.items():
        base = merged.get(key)
        if isinstance(base, dict) and isinstance(value, dict):
            merged[key] = _with_globals(base, value)
        elif isinstance(base, list) and isinstance(value, list):
            merged[key] = [*base, *value]
        else:
            merged[key] = value
    return merged


def evaluated_resources(
    template_path: Path, stack_name: str, parameters: dict[str, str], types: Collection[str]
) -> dict[str, EvaluatedResource]:
    """The enabled resources of the given types (their Condition holds), every property evaluated.

    Only the intrinsic functions listed in this module's docstring are evaluated; a resource of a requested
    type that uses another one in a branch the parameters take raises :class:`TemplateError`.
    """
    template = load_template(template_path)
    evaluator = _Evaluator(template, stack_name, parameters)
    global_function = template.get("Globals", {}).get("Function", {})
    found: dict[str, EvaluatedResource] = {}
    for logical_id, resource in evaluator.resources.items():
        if resource["Type"] not in types or not evaluator.is_enabled(resource):
            continue
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            properties = _with_globals(global_function, properties)
        found[logical_id] = EvaluatedResource(
            logical_id=logical_id,
            type=resource["Type"],
            name=evaluator.physical_name(logical_id),
            properties=evaluator.evaluate(properties),
        )
    return found


def substitute_definition(definition: str, substitutions: dict[str, str]) -> str:
    """The definition with every ``${Name}`` replaced; an unknown placeholder is an error."""
    missing = sorted(set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", definition)) - set(substitutions))
    if missing:
        raise TemplateError(f"DefinitionSubstitutions lacks {', '.join(missing)}")
    return re.sub(r"\$\{([A-Za-z0-9_]+)\}", lambda m: substitutions[m.group(1)], definition)
