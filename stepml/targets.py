"""Where a command acts: the embedded AWS, LocalStack, or AWS itself.

Every target is described the same way: clients for Step Functions, S3 and DynamoDB, and the stack's
outputs (state machine ARN, bucket, table names). LocalStack and AWS read the outputs from the deployed
CloudFormation stack; the embedded target knows them from ``infra/template.yaml`` — and, when
``stepml local up`` is serving, it publishes the same outputs as a CloudFormation stack so that the
LocalStack/AWS code path can be exercised against it.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stepml.project import ProjectLayout

TARGETS = ("embedded", "localstack", "aws")
# Where each target's stack is by default: `stepml local up` publishes "stepml", the LocalStack ready hook
# deploys "stepml-local" and infra/samconfig.toml deploys "stepml-dev".
DEFAULT_STACK_NAMES = {"embedded": "stepml", "localstack": "stepml-local", "aws": "stepml-dev"}
OUTPUT_KEYS = ("StateMachineArn", "DataBucketName", "ModelRegistryTableName", "RunsTableName")


class TargetError(Exception):
    """The target cannot be reached or its stack is not deployed; the message says what to do."""


@dataclass(frozen=True)
class StackOutputs:
    state_machine_arn: str
    data_bucket: str
    registry_table: str
    runs_table: str

    @classmethod
    def from_outputs(cls, outputs: dict[str, str], where: str) -> StackOutputs:
        missing = [k for k in OUTPUT_KEYS if k not in outputs]
        if missing:
            raise TargetError(f"the stack on {where} has no output {', '.join(missing)}: is it stepml's stack?")
        return cls(
            outputs["StateMachineArn"],
            outputs["DataBucketName"],
            outputs["ModelRegistryTableName"],
            outputs["RunsTableName"],
        )


class Target(Protocol):
    name: str
    outputs: StackOutputs

    def client(self, service: str) -> Any: ...


@dataclass
class RemoteTarget:
    """LocalStack or AWS: clients from a boto3-compatible session, outputs from CloudFormation."""

    name: str
    session: Any
    outputs: StackOutputs
    endpoint_url: str | None = None

    def client(self, service: str) -> Any:
        kwargs = {"endpoint_url": self.endpoint_url} if self.endpoint_url else {}
        return self.session.client(service, **kwargs)


def read_stack_outputs(cloudformation: Any, stack_name: str, where: str) -> StackOutputs:
    """The stack's outputs; a missing stack or an unreachable endpoint is a TargetError with a remedy."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        raise TargetError(
            f"no stack {stack_name!r} on {where} ({error.response['Error'].get('Message', error)}); "
            "deploy it first (see docs/deploy.md) or pass --stack-name"
        ) from error
    except BotoCoreError as error:
        raise TargetError(f"cannot reach {where}: {error}") from error
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    return StackOutputs.from_outputs(outputs, where)


def remote_target(name: str, stack_name: str | None, endpoint_url: str | None = None) -> RemoteTarget:
    """A target reached over the network: ``localstack`` (localstack-client's endpoint) or ``aws``."""
    import boto3

    stack_name = stack_name or DEFAULT_STACK_NAMES.get(name, "stepml")

    if name == "localstack":
        from localstack_client.session import Session as LocalStackSession

        # localstack-client points every client at LocalStack (LOCALSTACK_HOST, default localhost:4566);
        # --endpoint-url picks another host:port the same way.
        host = endpoint_url.split("://", 1)[-1].rstrip("/") if endpoint_url else None
        session: Any = LocalStackSession(
            localstack_host=host, region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
        )
        where = endpoint_url or "LocalStack"
        endpoint_url = None  # the session itself now points there
    elif name == "aws":
        session = boto3.session.Session()  # the normal credential chain: env, profile, SSO, instance role
        where = endpoint_url or f"AWS ({session.region_name or 'no region configured'})"
        if session.region_name is None and endpoint_url is None:
            raise TargetError("no AWS region configured: set AWS_REGION or AWS_DEFAULT_REGION, or a profile region")
    else:
        raise TargetError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}")
    kwargs = {"endpoint_url": endpoint_url} if endpoint_url else {}
    outputs = read_stack_outputs(session.client("cloudformation", **kwargs), stack_name, where)
    return RemoteTarget(name, session, outputs, endpoint_url)


def server_file(layout: ProjectLayout) -> Path:
    return layout.state_dir / "server.json"


def running_local_server(layout: ProjectLayout) -> str | None:
    """The endpoint of a live ``stepml local up`` for this project, if one is serving."""
    path = server_file(layout)
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    try:
        os.kill(int(info["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return None
    return str(info["endpoint_url"])


@contextmanager
def embedded_target(layout: ProjectLayout) -> Any:
    """The embedded target: the live ``stepml local up`` if one serves, else one started in-process."""
    endpoint = running_local_server(layout)
    if endpoint:
        yield remote_target_for_endpoint(endpoint)
        return
    from stepml.embedded.runtime import EmbeddedAws

    with EmbeddedAws(layout) as aws:
        yield aws


def remote_target_for_endpoint(endpoint_url: str, stack_name: str | None = None) -> RemoteTarget:
    """A target at an AWS-compatible endpoint (a running ``stepml local up``) with fake credentials."""
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    outputs = read_stack_outputs(
        session.client("cloudformation", endpoint_url=endpoint_url),
        stack_name or DEFAULT_STACK_NAMES["embedded"],
        endpoint_url,
    )
    return RemoteTarget("embedded", session, outputs, endpoint_url)
