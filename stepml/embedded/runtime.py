"""The embedded target: AWS emulated in this process, with the project's own code doing the work.

moto serves the AWS APIs on 127.0.0.1 (its Step Functions engine executes the real definition); a small
WSGI layer in front of it runs Lambda invocations in the project's workers (moto alone would need Docker)
and turns uploads under ``incoming/`` into the S3 "Object Created" event AWS would deliver through
EventBridge (moto does not deliver it to Step Functions). Everything is provisioned from
``infra/template.yaml`` evaluated with ``Target=local``, and the state is kept on disk between commands.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import threading
import time
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import boto3
from botocore.config import Config

from stepml.embedded import lambda_runner
from stepml.embedded.events import matches
from stepml.embedded.faults import FaultPlan, Injection, running_state
from stepml.embedded.lambda_runner import InvocationResult, LambdaRunner
from stepml.embedded.state_store import StateStore
from stepml.embedded.template import ACCOUNT_ID, REGION, StackModel, stack_model, substitute_definition
from stepml.project import ProjectLayout
from stepml.targets import StackOutputs

STACK_NAME = "stepml-local"
STATE_MACHINE_ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/{STACK_NAME}-StateMachineRole"
_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")

_START_EXECUTION = "AWSStepFunctions.StartExecution"
_EXECUTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_DYNAMODB_WRITES = frozenset(
    f"DynamoDB_20120810.{operation}"
    for operation in ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem")
)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fake_credentials() -> dict[str, str]:
    """Credentials for the emulated account; never real ones, so nothing can reach real AWS by mistake."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }


def object_created_event(bucket: str, key: str, size: int, etag: str, version_id: str | None) -> dict[str, Any]:
    """The EventBridge event S3 sends for a new object (AWS's documented "Object Created" shape)."""
    detail: dict[str, Any] = {
        "version": "0",
        "bucket": {"name": bucket},
        "object": {"key": key, "size": size, "etag": etag.strip('"'), "sequencer": f"{time.time_ns():X}"},
        "request-id": uuid.uuid4().hex[:16].upper(),
        "requester": ACCOUNT_ID,
        "source-ip-address": "127.0.0.1",
        "reason": "PutObject",
    }
    if version_id and version_id != "null":
        detail["object"]["version-id"] = version_id
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": ACCOUNT_ID,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": detail,
    }


class _Gateway:
    """WSGI layer in front of moto: Lambda invocations run here, S3 uploads raise events."""

    def __init__(self, moto_app: WsgiApp, runtime: EmbeddedAws) -> None:
        self._moto_app = moto_app
        self._runtime = runtime
        self._dynamodb_write_lock = threading.Lock()
        self._start_execution_lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        match = _INVOKE_PATH.match(path)
        if match and method == "POST" and self._runtime.runner.spec(_unquote(match.group("name"))):
            return self._invoke(environ, start_response, _unquote(match.group("name")))
        if method == "POST" and environ.get("HTTP_X_AMZ_TARGET", "") in _DYNAMODB_WRITES:
            # DynamoDB applies a conditional write atomically; moto checks and writes without a lock.
            with self._dynamodb_write_lock:
                return list(self._moto_app(environ, start_response))
        if method == "POST" and environ.get("HTTP_X_AMZ_TARGET", "") == _START_EXECUTION:
            return self._start_execution(environ, start_response)
        if method == "POST" and path == "/" and self._runtime.faults:
            injected = self._sns_fault(environ, start_response)
            if injected is not None:
                return injected
        if method in {"PUT", "POST"} and self._runtime.notifications_enabled:
            return self._watch_upload(environ, start_response)
        return self._moto_app(environ, start_response)

    def _start_execution(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """StartExecution as AWS answers it, also for executions an earlier process ran.

        moto returns the running execution for a repeated name and input, and refuses a name otherwise used,
        but only for executions it holds: it forgets them when the process ends, while AWS keeps a name 90
        days. An execution stored by an earlier command has ended, so AWS would refuse its name whatever the
        input (and the run's idempotency records, keyed by the execution ARN, would answer for the new one).
        moto also checks the name and then creates the execution without a lock: one start at a time.
        """
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)  # moto reads the body again
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            request = {}
        name, machine = request.get("name"), request.get("stateMachineArn")
        with self._start_execution_lock:
            stored = self._runtime.stored_execution(name) if isinstance(name, str) else None
            if stored is not None and stored.get("stateMachineArn") == machine:
                body = json.dumps(
                    {
                        "__type": "ExecutionAlreadyExists",
                        "message": f"Execution Already Exists: '{stored.get('executionArn')}'",
                    }
                ).encode()
                start_response(
                    "400 Bad Request",
                    [("Content-Type", "application/x-amz-json-1.0"), ("Content-Length", str(len(body)))],
                )
                return [body]
            return list(self._moto_app(environ, start_response))

    def _invoke(self, environ: dict[str, Any], start_response: Callable[..., Any], name: str) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        event = json.loads(raw) if raw.strip() else {}
        spec = self._runtime.runner.spec(name)
        assert spec is not None
        # The payload tells apart two executions invoking the same function at the same moment.
        injection = self._runtime.injected_fault(
            lambda d: d.get("resource") in {spec.arn, spec.name} and _same_json(d.get("input"), event)
        )
        if injection is not None:
            throw = injection.throw
            if throw.when == "after":
                # The function runs to the end (its writes happen) and the attempt is still reported as
                # failed: what Step Functions sees when a response is lost or a timeout hits after the writes.
                ran = self._runtime.runner.invoke(name, event)
                injection.ran, injection.outcome_error = True, ran.error_type
            body = json.dumps({"errorType": throw.error, "errorMessage": throw.cause}).encode()
            start_response(
                "200 OK",
                [
                    ("Content-Type", "application/json"),
                    ("X-Amz-Function-Error", "Unhandled"),
                    ("Content-Length", str(len(body))),
                ],
            )
            return [body]
        if environ.get("HTTP_X_AMZ_INVOCATION_TYPE") == "Event":
            threading.Thread(target=self._runtime.runner.invoke, args=(name, event), daemon=True).start()
            start_response("202 Accepted", [("Content-Length", "0")])
            return [b""]
        result = self._runtime.runner.invoke(name, event)
        body = json.dumps(result.payload).encode()
        headers = [("Content-Type", "application/json"), ("X-Amz-Executed-Version", "$LATEST")]
        if result.failed:
            headers.append(("X-Amz-Function-Error", "Unhandled"))
        headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [body]

    def _sns_fault(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes] | None:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)  # moto reads the body again
        if b"Action=Publish" not in raw:
            return None
        message = parse_qs(raw.decode("utf-8", "replace")).get("Message", [None])[0]
        injection = self._runtime.injected_fault(
            lambda d: d.get("resourceType") == "sns" and _same_message(d.get("parameters"), message)
        )
        if injection is None:
            return None
        throw = injection.throw
        if throw.when == "after":
            # The message is published, then the call fails: a retry publishes it again (at least once).
            answer: dict[str, str] = {}
            list(self._moto_app(environ, lambda status, headers, exc_info=None: answer.update(status=status)))
            injection.ran = True
            injection.outcome_error = None if answer.get("status", "").startswith("200") else answer.get("status")
        # Step Functions names an SNS error "SNS.<Code>Exception"; inject the code that yields the asked name.
        code = throw.error.removeprefix("SNS.").removesuffix("Exception") or throw.error
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
            f"<Message>{throw.cause}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
        ).encode()
        start_response("400 Bad Request", [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))])
        return [body]

    def _watch_upload(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, dict(headers)
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        body = list(self._moto_app(environ, capture))
        if captured.get("status", "").startswith("200"):
            self._runtime.notice_upload(environ, captured["headers"])
        return body


def _same_json(recorded: Any, sent: Any) -> bool:
    """Whether a history event's recorded JSON text is ``sent`` (True when the event does not say)."""
    if not isinstance(recorded, str):
        return True
    try:
        return bool(json.loads(recorded) == sent)
    except ValueError:
        return True


def _same_message(parameters: Any, message: str | None) -> bool:
    """Whether an SNS task's recorded parameters carry the Message being published now."""
    if not isinstance(parameters, str) or message is None:
        return True
    try:
        recorded = json.loads(parameters).get("Message")
    except (ValueError, AttributeError):
        return True
    return recorded is None or recorded == message


def _unquote(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text)


class EmbeddedAws:
    """Start, provision and stop the embedded AWS; hand out clients; persist state.

    Use as a context manager. ``port=None`` picks a free port (``stepml run``); ``stepml local up``
    passes 4566 so the AWS CLI and boto3 can reach it as they would LocalStack.
    """

    name = "embedded"

    def __init__(self, layout: ProjectLayout, port: int | None = None, persist: bool = True) -> None:
        self.layout = layout
        self.port = port or free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.persist = persist
        self.stack: StackModel = stack_model(layout.template, STACK_NAME, {"Target": "local"})
        self.store = StateStore(layout.state_dir / "state")
        self.notifications_enabled = False
        self.faults = FaultPlan()
        self.upload_listeners: list[Callable[[dict[str, Any]], None]] = []
        base_env = {
            **fake_credentials(),
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8",
            # X-Ray has no daemon here; traces are off on the embedded target.
            "POWERTOOLS_TRACE_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }
        self.runner = LambdaRunner(self.stack.functions, base_env, layout.state_dir / "logs")
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._clients: dict[str, Any] = {}
        self._saved_executions: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------------------------
    def __enter__(self) -> EmbeddedAws:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        warm = threading.Thread(target=lambda_runner.warm_up, daemon=True)
        warm.start()
        for name, value in fake_credentials().items():
            os.environ.setdefault(name, value)
        # moto's Step Functions engine calls the other services at localhost:MOTO_PORT when not mocked.
        os.environ["MOTO_PORT"] = str(self.port)
        from moto.core.config import default_user_config

        default_user_config.setdefault("stepfunctions", {})["execute_state_machine"] = True
        self._serve()
        # moto's backends live in this process: start from a clean account, then provision and restore.
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")).close()
        self.provision()
        if self.persist:
            self.restore()
        self.notifications_enabled = True
        self._load_engine_service_models()
        warm.join()
        # Workers for the functions the state machine calls start in the background while the caller
        # goes on to start an execution; the first states then skip the functions' cold start.
        threading.Thread(
            target=self.runner.prestart, args=(self.stack.substitutions.values(),), name="prestart", daemon=True
        ).start()

    def _load_engine_service_models(self) -> None:
        # moto's engine builds a boto3 client from the default session for every Task it runs; the first
        # one per service parses that service's API model (~0.2 s here), which would otherwise be spent
        # inside the execution's first Lambda and SNS states. Loaded models stay in the session's cache.
        for service in ("lambda", "sns"):
            boto3.client(
                service,
                region_name=REGION,
                endpoint_url=self.endpoint_url,
                aws_access_key_id="preload",
                aws_secret_access_key="preload",
            )

    def _serve(self) -> None:
        # The request log of the emulated AWS and moto's engine traces are noise for a user; errors still show.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        logging.getLogger("moto").setLevel(logging.CRITICAL)
        from moto.moto_server.threaded_moto_server import MotoRequestHandler
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        app = _Gateway(DomainDispatcherApplication(create_backend_app), self)
        self._server = make_server(
            "127.0.0.1",
            self.port,
            app,
            threaded=True,
            request_handler=MotoRequestHandler,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="embedded-aws", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.notifications_enabled = False
        if self.persist:
            self.save()
        self.runner.close()
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # -- clients ---------------------------------------------------------------------------------------
    def client(self, service: str) -> Any:
        """A boto3 client for the embedded AWS (cached per service)."""
        if service not in self._clients:
            self._clients[service] = boto3.session.Session().client(
                service,
                endpoint_url=self.endpoint_url,
                region_name=REGION,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=Config(retries={"max_attempts": 2}),
            )
        return self._clients[service]

    # -- provisioning ----------------------------------------------------------------------------------
    def provision(self) -> None:
        """Create what the template declares: bucket, tables, topic, training source, state machine."""
        s3, ddb = self.client("s3"), self.client("dynamodb")
        for bucket in self.stack.buckets.values():
            s3.create_bucket(Bucket=bucket)
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        for table in self.stack.tables.values():
            ddb.create_table(
                TableName=table.name,
                KeySchema=table.key_schema,
                AttributeDefinitions=table.attribute_definitions,
                BillingMode="PAY_PER_REQUEST",
            )
            if table.ttl_attribute:
                ddb.update_time_to_live(
                    TableName=table.name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
                )
        for topic_arn in self.stack.topics.values():
            self.client("sns").create_topic(Name=topic_arn.rsplit(":", 1)[1])
        self.upload_training_source()
        assert self.stack.state_machine_definition is not None
        definition = substitute_definition(self.stack.state_machine_definition.read_text(), self.stack.substitutions)
        self.client("stepfunctions").create_state_machine(
            name=self.stack.state_machine_name, definition=definition, roleArn=STATE_MACHINE_ROLE
        )

    @property
    def outputs(self) -> StackOutputs:
        """The stack outputs a deployed stack would have (what LocalStack/AWS targets read)."""
        return StackOutputs(
            state_machine_arn=self.stack.state_machine_arn,
            data_bucket=self.stack.data_bucket,
            registry_table=self.stack.tables["ModelRegistryTable"].name,
            runs_table=self.stack.tables["RunsTable"].name,
        )

    def publish_stack_outputs(self, stack_name: str = "stepml") -> None:
        """Record the outputs as a CloudFormation stack, so LocalStack/AWS-style clients find the resources."""
        outputs = {
            "StateMachineArn": self.outputs.state_machine_arn,
            "DataBucketName": self.outputs.data_bucket,
            "ModelRegistryTableName": self.outputs.registry_table,
            "RunsTableName": self.outputs.runs_table,
        }
        template = {
            "Resources": {"Marker": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
            "Outputs": {key: {"Value": value} for key, value in outputs.items()},
        }
        with warnings.catch_warnings():
            # moto creates no resource for a wait-condition handle and says so; the outputs are what matter.
            warnings.simplefilter("ignore", UserWarning)
            self.client("cloudformation").create_stack(StackName=stack_name, TemplateBody=json.dumps(template))

    def upload_training_source(self) -> str:
        """Put training/ where the definition's TrainingSourceUri points (what a deploy step does on AWS)."""
        from pipeline_core.standin.training import package_training_source

        uri = self.stack.substitutions["TrainingSourceUri"]
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        self.client("s3").put_object(Bucket=bucket, Key=key, Body=package_training_source(self.layout.training_dir))
        return uri

    # -- persistence -----------------------------------------------------------------------------------
    def restore(self) -> None:
        s3, ddb = self.client("s3"), self.client("dynamodb")
        for bucket in self.stack.buckets.values():
            self.store.restore_bucket(s3, bucket)
        self.upload_training_source()  # the checkout's training code wins over a stored copy
        for table in self.stack.tables.values():
            self.store.restore_table(ddb, table.name, table.ttl_attribute)
        self.release_stale_deploy_leases()

    def release_stale_deploy_leases(self) -> int:
        """Give back the deploy leases restored from disk: the executions that held them lived in an
        earlier process (moto's executions end with it), so none of them can still be deploying."""
        from pipeline_core.aws.registry import ModelRegistry

        registry = ModelRegistry(self.stack.tables["ModelRegistryTable"].name, self.client("dynamodb"))
        leases = registry.deploy_leases()
        for lease in leases:
            registry.release_deploy_lease(lease.model_name, lease.holder)
        return len(leases)

    def save(self) -> None:
        s3, ddb = self.client("s3"), self.client("dynamodb")
        for bucket in self.stack.buckets.values():
            self.store.save_bucket(s3, bucket)
        for table in self.stack.tables.values():
            self.store.save_table(ddb, table.name, table.ttl_attribute)

    def save_finished_executions(self) -> int:
        """Store every ended execution not stored yet (those started by other clients of `local up`)."""
        sfn = self.client("stepfunctions")
        saved = 0
        for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=self.stack.state_machine_arn):
            for execution in page["executions"]:
                if execution["status"] != "RUNNING" and execution["name"] not in self._saved_executions:
                    self.save_execution(execution["executionArn"])
                    saved += 1
        return saved

    def stored_execution(self, name: str) -> dict[str, Any] | None:
        """The record of an execution named ``name`` that an earlier command ran and stored (persisted
        state only: a target that does not persist starts from an empty account)."""
        if not self.persist or not _EXECUTION_NAME.match(name):
            return None  # (an invalid name is moto's to refuse, and must not become a path)
        record = self.store.execution(name)
        if record is None or record.get("stateMachineArn") != self.stack.state_machine_arn:
            return None
        return record

    def save_execution(self, execution_arn: str) -> dict[str, Any]:
        """Store an execution's description and history so later commands can show it."""
        sfn = self.client("stepfunctions")
        description = sfn.describe_execution(executionArn=execution_arn)
        description.pop("ResponseMetadata", None)
        events = []
        for page in sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn):
            events.extend(page["events"])
        record = {**description, "events": events}
        if self.persist:
            self.store.save_execution(description["name"], record)
        self._saved_executions.add(description["name"])
        return record

    # -- S3 events -------------------------------------------------------------------------------------
    def notice_upload(self, environ: dict[str, Any], headers: dict[str, str]) -> None:
        """Deliver "Object Created" for a finished upload into one of the stack's buckets."""
        query = environ.get("QUERY_STRING", "")
        method = environ["REQUEST_METHOD"]
        subresources = ("partNumber=", "tagging", "acl", "versioning", "uploads", "retention", "legal-hold")
        if method == "PUT" and any(s in query for s in subresources):
            return  # a part of a multipart upload or a sub-resource, not a finished object
        if method == "POST" and "uploadId=" not in query:
            return  # only CompleteMultipartUpload finishes an object by POST
        host = environ.get("HTTP_HOST", "")
        key = _unquote(environ.get("PATH_INFO", "")).lstrip("/")
        buckets = set(self.stack.buckets.values())
        bucket = next((b for b in buckets if host.startswith(f"{b}.")), None)
        if bucket is None:
            first, _, key = key.partition("/")
            bucket = first if first in buckets else None
        if bucket is None or not key:
            return
        head = self.client("s3").head_object(Bucket=bucket, Key=key)
        event = object_created_event(bucket, key, int(head["ContentLength"]), head["ETag"], head.get("VersionId"))
        self.deliver_event(event)

    def deliver_event(self, event: dict[str, Any]) -> list[threading.Thread]:
        """Send an event to every function whose EventBridge rule (in the template) matches it."""
        threads = []
        for spec in self.stack.functions.values():
            if any(matches(pattern, event) for pattern in spec.event_patterns):
                # EventBridge invokes its Lambda targets asynchronously.
                thread = threading.Thread(target=self.runner.invoke, args=(spec.name, event), daemon=True)
                thread.start()
                threads.append(thread)
        for listener in list(self.upload_listeners):
            listener(event)
        return threads

    def injected_fault(self, resource_matches: Callable[[dict[str, Any]], bool]) -> Injection | None:
        """The fault planned for the state whose task is calling now, if any (only when a plan exists)."""
        if not self.faults:
            return None
        found = running_state(self.client("stepfunctions"), self.stack.state_machine_arn, resource_matches)
        return self.faults.next_fault(*found) if found else None

    def invoke(self, function_logical_id: str, event: Any) -> InvocationResult:
        return self.runner.invoke(self.stack.functions[function_logical_id].name, event)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
