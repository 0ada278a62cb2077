"""The embedded target: AWS emulated in this process, with the project's own code doing the work.

moto serves the AWS APIs on 127.0.0.1 (its Step Functions engine executes the real definition); a small
WSGI layer in front of it runs Lambda invocations in the project's workers (moto alone would need Docker)
and turns uploads under ``incoming/`` into the S3 "Object Created" event AWS would deliver through
EventBridge (moto does not deliver it to Step Functions). Everything is provisioned from
``infra/template.yaml`` evaluated with ``Target=local``, and the state is kept on disk between commands.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config

from stepml.embedded import lambda_runner
from stepml.embedded.alarm_events import AlarmChange, AlarmWatcher
from stepml.embedded.blob_keys import register as register_stored_object
from stepml.embedded.cloudwatch import alarm_writes
from stepml.embedded.durable import DurableStore
from stepml.embedded.events import matches
from stepml.embedded.executions import ExecutionArchive
from stepml.embedded.faults import FaultPlan, Injection, running_state
from stepml.embedded.function_logs import FunctionLogShipper
from stepml.embedded.gateway import INTERNAL_HEADER, json_error
from stepml.embedded.lambda_runner import InvocationResult, LambdaRunner
from stepml.embedded.legacy_state import migrate_legacy_state
from stepml.embedded.recording import StateRecorder
from stepml.embedded.schedules import LocalSchedule, LocalScheduler
from stepml.embedded.stack_resources import StackResources, provision_stack_resources
from stepml.embedded.template import ACCOUNT_ID, REGION, StackModel, stack_model, substitute_definition
from stepml.project import ProjectLayout
from stepml.targets import StackOutputs

STACK_NAME = "stepml-local"
BATCH_STATE_MACHINE = "BatchScoringStateMachine"
STATE_MACHINE_ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/{STACK_NAME}-StateMachineRole"
# DynamoDB's BatchWriteItem takes at most 25 put or delete requests.
BATCH_WRITE_LIMIT = 25


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


class EmbeddedAws:
    """Start, provision and stop the embedded AWS; hand out clients; keep its state durable.

    Use as a context manager. ``port=None`` picks a free port. With ``persist`` (the local AWS service,
    :mod:`stepml.embedded.service`) every change is written through to the state directory's durable
    store as it happens and loaded back on the next start; without it (tests' harnesses) the account
    starts empty and is forgotten when it stops.
    """

    name = "embedded"

    def __init__(self, layout: ProjectLayout, port: int | None = None, persist: bool = True) -> None:
        self.layout = layout
        self.port = port or free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.persist = persist
        self.stack: StackModel = stack_model(layout.template, STACK_NAME, {"Target": "local"})
        self.store: DurableStore | None = None
        self.recorder: StateRecorder | None = None
        self.archive: ExecutionArchive | None = None
        self.notes: list[str] = []
        self.notifications_enabled = False
        self.faults = FaultPlan()
        self.upload_listeners: list[Callable[[dict[str, Any]], None]] = []
        # Marks the service's own requests (restore, read-backs) so the gateway does not record them again;
        # a secret, so no other client can pass for the service.
        self.token = secrets.token_urlsafe(24)
        self.control_api: Any = None
        self.last_request = time.monotonic()
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
        self._base_env = base_env
        self.runner = LambdaRunner(self.stack.functions, base_env, layout.state_dir / "logs")
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._clients: dict[tuple[str, bool], Any] = {}
        self._client_lock = threading.Lock()
        self._prestarted = False
        # One session for every client: a new session per service costs ~0.3-0.5 s (it loads its models again).
        self._session = boto3.session.Session()
        self.resources: StackResources | None = None
        self.resources_ready = threading.Event()
        self.shipper: FunctionLogShipper | None = None
        self.scheduler = LocalScheduler(self.stack.schedules, self._fire_schedule)
        self.notes.extend(self.scheduler.notes)
        self.alarm_watcher = AlarmWatcher(
            lambda: self.internal_client("cloudwatch"),
            lambda: self.internal_client("sns"),
            self.deliver_event,
            writes=alarm_writes,
        )

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
        from moto.moto_api._internal.models import moto_api_backend

        default_user_config.setdefault("stepfunctions", {})["execute_state_machine"] = True
        # moto's backends live in this process: start from a clean account (its reset route is not served).
        moto_api_backend.reset()
        self._serve()
        self.provision()
        # The stack's other resources (functions, log groups, alarms, dashboard, rules) are for the AWS APIs to
        # show; no state needs them, so they are made while the state loads and the first run starts.
        threading.Thread(target=self._provision_stack_resources, name="stack-resources", daemon=True).start()
        self.shipper = FunctionLogShipper(
            self.layout.state_dir / "logs",
            self.stack.functions.values(),
            self.internal_client,
            invocations=self.runner.log,
        )
        if self.persist:
            self._open_state()
        self.notifications_enabled = True
        self._load_engine_service_models()
        warm.join()
        # Workers for the functions the state machine calls start in the background while the caller
        # goes on to start an execution; the first states then skip the functions' cold start. A local AWS
        # started for `stepml serve` (STEPML_LOCAL_PRESTART=0) waits for its first execution instead.
        if os.environ.get("STEPML_LOCAL_PRESTART", "1") != "0":
            self.prestart_pipeline()

    def prestart_pipeline(self) -> None:
        """Start the pipeline functions' workers in the background, once per process."""
        with self._client_lock:
            if self._prestarted:
                return
            self._prestarted = True
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

        from stepml.embedded.asl_programs import install as install_program_cache
        from stepml.embedded.cloudwatch import install as install_alarm_history
        from stepml.embedded.gateway import Gateway
        from stepml.embedded.moto_dispatch import install as install_dispatch_listing
        from stepml.embedded.s3_objects import install as install_s3_objects
        from stepml.embedded.s3_uploads import install as install_s3_uploads

        install_alarm_history()  # DescribeAlarmHistory, which the rollouts' alarm checks ask
        install_program_cache()  # each execution's program copied from one parse of its definition
        install_dispatch_listing()  # moto's folder listed once, not per request
        install_s3_objects()  # large objects read, copied and joined without their content in memory
        install_s3_uploads()  # and put, or uploaded in parts, without their body in memory
        app = Gateway(DomainDispatcherApplication(create_backend_app), self)
        # 127.0.0.1 only: the local AWS has no authentication and is never reachable from another machine.
        self._server = make_server("127.0.0.1", self.port, app, threaded=True, request_handler=MotoRequestHandler)
        self.port = int(self._server.server_address[1])
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="embedded-aws", daemon=True)
        self._thread.start()

    def _provision_stack_resources(self) -> None:
        try:
            self.resources = provision_stack_resources(
                self.internal_client, self.layout.template, STACK_NAME, {"Target": "local"}
            )
        except Exception as error:  # the local AWS works without them; say why they are missing
            self.notes.append(f"the stack's functions, log groups, alarms and rules could not be created: {error}")
        finally:
            self.resources_ready.set()

    def ship_logs(self) -> None:
        """Send the functions' new log lines and metrics to CloudWatch (once the log groups exist)."""
        if self.shipper is not None and self.resources_ready.wait(timeout=120):
            self.shipper.ship()

    def evaluate_alarms(self) -> list[Any]:
        """Evaluate the stack's alarms against the metrics as CloudWatch does, set their states, and send the
        state changes' events and notifications."""
        from stepml.embedded.alarms import evaluate_alarms

        self.ship_logs()
        self.alarm_changes()  # changes made since the last look (SetAlarmState) are not this evaluation's
        evaluations = evaluate_alarms(self.internal_client("cloudwatch"))
        self.alarm_changes()
        return evaluations

    def _fire_schedule(self, schedule: LocalSchedule, due: datetime) -> None:
        """What EventBridge Scheduler does when a schedule comes due: StartExecution for a state machine (its
        input as the execution's), an asynchronous Invoke for a function (its input as the event)."""
        if ":states:" in schedule.target_arn:
            self.internal_client("stepfunctions").start_execution(
                stateMachineArn=schedule.target_arn, input=schedule.input
            )
            return
        spec = self.stack.function_by_name_or_arn(schedule.target_arn)
        if spec is None:
            raise ValueError(f"schedule {schedule.name} targets {schedule.target_arn}, which the stack does not have")
        threading.Thread(
            target=self.runner.invoke, args=(spec.name, json.loads(schedule.input)), name=schedule.name, daemon=True
        ).start()

    def alarm_changes(self) -> list[AlarmChange]:
        """Send the EventBridge event and SNS notifications of every alarm state change since the last look."""
        if not self.resources_ready.wait(timeout=120):
            return []
        return self.alarm_watcher.check()

    def stop(self) -> None:
        self.notifications_enabled = False
        if self.archive is not None:
            self.archive.sweep()
            stopped = self.archive.abort_running(
                f"the local AWS (pid {os.getpid()}) was stopped while this execution was running"
            )
            if stopped:
                self.notes.append(f"stopped while running (recorded as ABORTED): {', '.join(stopped)}")
        self.runner.close()
        with contextlib.suppress(Exception):  # what the workers wrote last; a failure must not stop the stop
            self.ship_logs()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.store is not None:
            self.store.close()

    def reload(self) -> None:
        """Take up changed project code: the template's functions, the definition and the training source.

        New invocations run in new workers that import the changed handlers; invocations in flight end in
        the old ones.
        """
        self.stack = stack_model(self.layout.template, STACK_NAME, {"Target": "local"})
        # the changed template's schedules, counted from when this local AWS started, as before
        self.scheduler = LocalScheduler(self.stack.schedules, self._fire_schedule, started=self.scheduler.started)
        with contextlib.suppress(Exception):
            self.ship_logs()  # what the old workers wrote, before the shipper follows the new ones
        previous, self.runner = (
            self.runner,
            LambdaRunner(self.stack.functions, self._base_env, self.layout.state_dir / "logs"),
        )
        previous.close()
        self.shipper = FunctionLogShipper(
            self.layout.state_dir / "logs",
            self.stack.functions.values(),
            self.internal_client,
            invocations=self.runner.log,
        )
        sfn = self.client("stepfunctions")
        for machine in self.stack.state_machines.values():
            definition = substitute_definition(machine.definition.read_text(), machine.substitutions)
            try:
                sfn.update_state_machine(stateMachineArn=machine.arn, definition=definition)
            except sfn.exceptions.StateMachineDoesNotExist:  # a state machine the changed template added
                sfn.create_state_machine(name=machine.name, definition=definition, roleArn=STATE_MACHINE_ROLE)
        self.upload_training_source()
        threading.Thread(
            target=self.runner.prestart, args=(self.stack.substitutions.values(),), name="prestart", daemon=True
        ).start()

    def touch(self) -> None:
        """Note that a request arrived (an idle local AWS stops itself after a while)."""
        self.last_request = time.monotonic()

    # -- clients ---------------------------------------------------------------------------------------
    def client(self, service: str, internal: bool = False) -> Any:
        """A boto3 client for the embedded AWS (cached per service).

        ``internal`` clients' requests are the service's own: the gateway neither records nor merges them.
        """
        with self._client_lock:
            if (service, internal) not in self._clients:
                made = self._session.client(
                    service,
                    endpoint_url=self.endpoint_url,
                    region_name=REGION,
                    aws_access_key_id="testing",
                    aws_secret_access_key="testing",
                    config=Config(retries={"max_attempts": 2}),
                )
                if internal:
                    made.meta.events.register("before-sign.*.*", self._mark_internal)
                self._clients[(service, internal)] = made
            return self._clients[(service, internal)]

    def _mark_internal(self, request: Any, **_: Any) -> None:
        request.headers[INTERNAL_HEADER] = self.token

    def internal_client(self, service: str) -> Any:
        return self.client(service, internal=True)

    # -- provisioning ----------------------------------------------------------------------------------
    def provision(self) -> None:
        """Create what the template declares: bucket, tables, topic, training source, state machine."""
        s3, ddb = self.internal_client("s3"), self.internal_client("dynamodb")
        for bucket in self.stack.buckets.values():
            s3.create_bucket(Bucket=bucket)
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        for table in self.stack.tables.values():
            # an index the code Queries (the prediction log's ModelFeatures) must exist here as on AWS
            indexes = list(table.global_secondary_indexes)
            ddb.create_table(
                TableName=table.name,
                KeySchema=table.key_schema,
                AttributeDefinitions=table.attribute_definitions,
                BillingMode="PAY_PER_REQUEST",
                **({"GlobalSecondaryIndexes": indexes} if indexes else {}),
            )
            if table.ttl_attribute:
                ddb.update_time_to_live(
                    TableName=table.name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
                )
        for topic_arn in self.stack.topics.values():
            self.client("sns").create_topic(Name=topic_arn.rsplit(":", 1)[1])
        self.upload_training_source()
        for machine in self.stack.state_machines.values():
            definition = substitute_definition(machine.definition.read_text(), machine.substitutions)
            self.client("stepfunctions").create_state_machine(
                name=machine.name, definition=definition, roleArn=STATE_MACHINE_ROLE
            )

    @property
    def outputs(self) -> StackOutputs:
        """The stack outputs a deployed stack would have (what LocalStack/AWS targets read)."""
        step_cache = self.stack.tables.get("StepCacheTable")  # None in a template before the step cache
        monitor = self.stack.functions.get("MonitorFunction")  # None in a template before drift monitoring
        batch = self.stack.state_machines.get(BATCH_STATE_MACHINE)  # None in a template before batch scoring
        return StackOutputs(
            state_machine_arn=self.stack.state_machine_arn,
            data_bucket=self.stack.data_bucket,
            registry_table=self.stack.tables["ModelRegistryTable"].name,
            runs_table=self.stack.tables["RunsTable"].name,
            step_cache_table=step_cache.name if step_cache else None,
            monitor_function=monitor.name if monitor else None,
            batch_state_machine_arn=batch.arn if batch else None,
        )

    def publish_stack_outputs(self, stack_name: str = STACK_NAME) -> None:
        """Record the outputs as a CloudFormation stack, so LocalStack/AWS-style clients find the resources."""
        outputs = {
            "StateMachineArn": self.outputs.state_machine_arn,
            "DataBucketName": self.outputs.data_bucket,
            "ModelRegistryTableName": self.outputs.registry_table,
            "RunsTableName": self.outputs.runs_table,
        }
        if self.outputs.step_cache_table:
            outputs["StepCacheTableName"] = self.outputs.step_cache_table
        if self.outputs.monitor_function:
            outputs["MonitorFunctionName"] = self.outputs.monitor_function
        if self.outputs.batch_state_machine_arn:
            outputs["BatchScoringStateMachineArn"] = self.outputs.batch_state_machine_arn
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
        from pipeline_core.standin.archives import package_training_source

        uri = self.stack.substitutions["TrainingSourceUri"]
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        self.client("s3").put_object(Bucket=bucket, Key=key, Body=package_training_source(self.layout.training_dir))
        return uri

    # -- persistence -----------------------------------------------------------------------------------
    def _open_state(self) -> None:
        """Open the durable store (checking it), load it into moto and record every change from now on."""
        root = self.layout.state_dir / "state"
        self.store = DurableStore(root)
        self.load_state()
        self.store.collect_garbage()  # contents no object points at (deleted objects, a write cut by a kill)
        self.store.drop_expired_items()  # DynamoDB deletes items past their TTL; so does the store, at each start
        self.recorder = StateRecorder(
            self.store, self.internal_client, set(self.stack.buckets.values()), self.stack.tables
        )
        self.archive = ExecutionArchive(
            self.store,
            self.internal_client,
            self.stack.state_machine_arn,
            on_ended=self._execution_metrics,
            other_state_machine_arns=[m.arn for m in self.stack.state_machines.values()],
        )
        interrupted = self.archive.abort_running(
            "the local AWS ended (killed or crashed) while this execution was running; what it wrote until then is kept"
        )
        if interrupted:
            self.store.notes.append(
                f"executions cut short by the previous local AWS, now ABORTED: {', '.join(interrupted)}"
            )
        legacy = migrate_legacy_state(root, self.client, self.stack, self.store)
        self.notes.extend(self.store.notes + legacy)
        self.upload_training_source()  # the checkout's training code wins over a stored copy
        self.release_stale_deploy_leases()

    def load_state(self) -> None:
        """Put the stored objects and items back into moto (unrecorded: the service's own)."""
        assert self.store is not None
        ddb = self.internal_client("dynamodb")
        buckets = set(self.stack.buckets.values())
        for stored in self.store.objects():
            if stored.bucket not in buckets:
                continue
            # The content stays in its file: moto reads it from there when asked (no object is read here).
            path = self.store.checked_blob(stored)
            if path is None:
                self.store.delete_object(stored.bucket, stored.key)
                continue
            register_stored_object(stored, path)
        for table in self.stack.tables.values():
            put_items(ddb, table.name, self.store.items(table.name))

    def _execution_metrics(self, record: dict[str, Any]) -> None:
        """Publish the AWS/States metrics Step Functions emits when an execution ends (the alarms watch them)."""
        metric = {"SUCCEEDED": "ExecutionsSucceeded", "FAILED": "ExecutionsFailed", "TIMED_OUT": "ExecutionsTimedOut"}
        names = [metric[record["status"]]] if record["status"] in metric else ["ExecutionsAborted"]
        dimensions = [{"Name": "StateMachineArn", "Value": record["stateMachineArn"]}]
        data: list[dict[str, Any]] = [
            {"MetricName": n, "Dimensions": dimensions, "Value": 1.0, "Unit": "Count"} for n in names
        ]
        if record.get("stopDate"):
            elapsed = (float(record["stopDate"]) - float(record["startDate"])) * 1000
            data.append(
                {"MetricName": "ExecutionTime", "Dimensions": dimensions, "Value": elapsed, "Unit": "Milliseconds"}
            )
        with contextlib.suppress(Exception):  # metrics are for looking at; they never fail an execution's record
            self.internal_client("cloudwatch").put_metric_data(Namespace="AWS/States", MetricData=data)

    def release_stale_deploy_leases(self) -> int:
        """Give back the deploy leases loaded from disk: the executions that held them lived in an
        earlier process (moto's executions end with it), so none of them can still be deploying."""
        from pipeline_core.aws.registry import ModelRegistry

        registry = ModelRegistry(self.stack.tables["ModelRegistryTable"].name, self.client("dynamodb"))
        leases = registry.deploy_leases()
        for lease in leases:
            registry.release_deploy_lease(lease.model_name, lease.holder)
        return len(leases)

    def sweep_executions(self) -> int:
        """Store the executions that ended since the last sweep (the service calls this as it runs)."""
        return self.archive.sweep() if self.archive is not None else 0

    def holds(self, name_or_arn: str) -> bool:
        """Whether moto itself holds this execution (an ARN, or the name of one of the pipeline's): it is of
        this process."""
        sfn = self.internal_client("stepfunctions")
        arn = (
            name_or_arn
            if name_or_arn.startswith("arn:")
            else self.stack.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name_or_arn}"
        )
        try:
            sfn.describe_execution(executionArn=arn)
        except sfn.exceptions.ExecutionDoesNotExist:
            return False
        return True

    def running_executions(self) -> list[str]:
        """The names of the executions running now, of every state machine of the stack."""
        running: list[str] = []
        for machine in self.stack.state_machines.values():
            found = self.live_executions({"stateMachineArn": machine.arn, "statusFilter": "RUNNING"}) or []
            running += [e["name"] for e in found]
        return running

    def live_executions(self, request: dict[str, Any]) -> list[dict[str, Any]] | None:
        """moto's executions for a ListExecutions request (all pages), dates as epoch seconds; None on an error."""
        sfn = self.internal_client("stepfunctions")
        arguments = {k: request[k] for k in ("stateMachineArn", "statusFilter", "mapRunArn") if k in request}
        try:
            pages = sfn.get_paginator("list_executions").paginate(**arguments)
            return [
                {k: (v.timestamp() if isinstance(v, datetime) else v) for k, v in e.items()}
                for page in pages
                for e in page["executions"]
            ]
        except Exception:
            return None

    # -- S3 events -------------------------------------------------------------------------------------
    def object_created(self, bucket: str, key: str) -> None:
        """Deliver "Object Created" for a finished upload into one of the stack's buckets, once."""
        head = self.internal_client("s3").head_object(Bucket=bucket, Key=key)
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
        found = running_state(self.internal_client("stepfunctions"), self.stack.state_machine_arn, resource_matches)
        return self.faults.next_fault(*found) if found else None

    def invoke(self, function_logical_id: str, event: Any) -> InvocationResult:
        return self.runner.invoke(self.stack.functions[function_logical_id].name, event)

    # -- control routes (the service's; plain in-process use has none) ----------------------------------
    def control(
        self, environ: dict[str, Any], start_response: Callable[..., Any], path: str, method: str, body: bytes
    ) -> Iterable[bytes]:
        if self.control_api is None:
            return json_error(start_response, "404 Not Found", "UnknownOperationException", f"no route {path}")
        return self.control_api(environ, start_response, path, method, body)


def put_items(dynamodb: Any, table: str, items: list[dict[str, Any]]) -> None:
    """Put ``items`` into ``table``, 25 per BatchWriteItem (DynamoDB's limit), retrying what is unprocessed."""
    for start in range(0, len(items), BATCH_WRITE_LIMIT):
        pending: dict[str, Any] = {
            table: [{"PutRequest": {"Item": item}} for item in items[start : start + BATCH_WRITE_LIMIT]]
        }
        while pending:
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
