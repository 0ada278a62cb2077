"""Where a command acts: the embedded AWS, LocalStack, or AWS itself.

Every target is described the same way: clients for Step Functions, S3 and DynamoDB, and the stack's
outputs (state machine ARN, bucket, table names). LocalStack and AWS read the outputs from the deployed
CloudFormation stack; the embedded target knows them from ``infra/template.yaml`` — and, when
``stepml local up`` is serving, it publishes the same outputs as a CloudFormation stack so that the
LocalStack/AWS code path can be exercised against it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from stepml.project import ProjectLayout

TARGETS = ("embedded", "localstack", "aws")
# Where each target's stack is by default: the local AWS and the LocalStack ready hook both deploy
# "stepml-local" (the name the resources are named after), infra/samconfig.toml deploys "stepml-dev".
DEFAULT_STACK_NAMES = {"embedded": "stepml-local", "localstack": "stepml-local", "aws": "stepml-dev"}
OUTPUT_KEYS = ("StateMachineArn", "DataBucketName", "ModelRegistryTableName", "RunsTableName")


class TargetError(Exception):
    """The target cannot be reached or its stack is not deployed; the message says what to do."""


NO_CREDENTIALS = (
    "no AWS credentials found for {where}: configure them (`aws configure`, `aws sso login` with AWS_PROFILE, "
    "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
)


def aws_region(environ: Mapping[str, str] | None = None) -> str | None:
    """The region AWS_REGION names, else AWS_DEFAULT_REGION's; None leaves it to the profile. botocore reads
    only AWS_DEFAULT_REGION, while the AWS CLI v2 and the other SDKs let AWS_REGION override it (and the
    profile), and Lambda sets AWS_REGION: stepml does as they do."""
    source = os.environ if environ is None else environ
    return source.get("AWS_REGION", "").strip() or source.get("AWS_DEFAULT_REGION", "").strip() or None


@dataclass(frozen=True)
class StackOutputs:
    state_machine_arn: str
    data_bucket: str
    registry_table: str
    runs_table: str
    # the alias runs start through (output StateMachineAliasArn), so each execution records the version it
    # ran; empty where there is none (the embedded target, a stack deployed before the alias existed)
    alias_arn: str = ""
    # None: a stack deployed before the step cache (no StepCacheTableName output); `stepml cache` says so
    step_cache_table: str | None = None
    # None: a stack deployed before drift monitoring (no MonitorFunctionName output); `stepml monitor` says so
    monitor_function: str | None = None
    # None: a stack deployed before batch scoring (no BatchScoringStateMachineArn output); `stepml predict` says so
    batch_state_machine_arn: str | None = None

    @property
    def start_arn(self) -> str:
        """The ARN to start executions with: the alias where the stack has one, else the state machine."""
        return self.alias_arn or self.state_machine_arn

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
            outputs.get("StateMachineAliasArn", ""),
            outputs.get("StepCacheTableName"),
            outputs.get("MonitorFunctionName"),
            outputs.get("BatchScoringStateMachineArn"),
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
    _clients: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _clients_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def client(self, service: str) -> Any:
        """The target's client for ``service``, built once: a client costs tens of ms to build (its API model,
        endpoint rules, handlers) and is thread-safe once built, while building from a session is not."""
        with self._clients_lock:
            if service not in self._clients:
                kwargs = {"endpoint_url": self.endpoint_url} if self.endpoint_url else {}
                self._clients[service] = self.session.client(service, **kwargs)
            return self._clients[service]


def read_stack_outputs(cloudformation: Any, stack_name: str, where: str) -> StackOutputs:
    """The stack's outputs; a missing stack or an unreachable endpoint is a TargetError with a remedy."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except NoCredentialsError as error:
        raise TargetError(NO_CREDENTIALS.format(where=where)) from error
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
        session: Any = LocalStackSession(localstack_host=host, region_name=aws_region() or "us-east-1")
        where = endpoint_url or "LocalStack"
        endpoint_url = None  # the session itself now points there
    elif name == "aws":
        # the normal credential chain (env, profile, SSO, instance role); the region as the AWS CLI reads it
        session = boto3.session.Session(region_name=aws_region())
        if session.region_name is None:  # also with --endpoint-url: a request is signed for a region
            raise TargetError(
                "no AWS region configured: set AWS_REGION or AWS_DEFAULT_REGION, or a region in the AWS profile"
            )
        where = f"AWS ({session.region_name})" + (f" at {endpoint_url}" if endpoint_url else "")
    else:
        raise TargetError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}")
    kwargs = {"endpoint_url": endpoint_url} if endpoint_url else {}
    outputs = read_stack_outputs(session.client("cloudformation", **kwargs), stack_name, where)
    return RemoteTarget(name, session, outputs, endpoint_url)


@dataclass
class LocalServiceTarget(RemoteTarget):
    """The embedded target: the state directory's local AWS service, reached like LocalStack."""

    service: Any = None

    def control(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        """Call one of the service's own routes (faults, invocations, reload, ...)."""
        from stepml.embedded.service import control

        return control(self.service, method, path, body, timeout)


class LocalSession:
    """Clients for the local AWS from botocore alone, with boto3's ``client`` spelling and the fake credentials
    every local endpoint takes. The clients are the ones boto3 would build; importing boto3 (and s3transfer,
    which it imports) would only add ~0.1-0.2 s to every command's start."""

    region_name = "us-east-1"

    def __init__(self) -> None:
        import botocore.session

        self._session = botocore.session.get_session()

    def client(self, service: str, **kwargs: Any) -> Any:
        return self._session.create_client(
            service,
            region_name=self.region_name,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            **kwargs,
        )


def embedded_target(layout: ProjectLayout, progress: Any = None, prestart_workers: bool = True) -> LocalServiceTarget:
    """The embedded target: the local AWS serving this state directory, started in the background if none is
    (``prestart_workers=False``: without warming the pipeline's workers before its first execution)."""
    from stepml.embedded.service import ensure_service

    info = ensure_service(layout, progress, prestart_workers)
    session = LocalSession()
    outputs = read_stack_outputs(
        session.client("cloudformation", endpoint_url=info.endpoint_url),
        DEFAULT_STACK_NAMES["embedded"],
        info.endpoint_url,
    )
    return LocalServiceTarget("embedded", session, outputs, info.endpoint_url, info)


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
