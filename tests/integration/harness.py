"""One embedded AWS for many executions: start them directly, follow them concurrently, read what they left.

Starting executions on one running :class:`EmbeddedAws` is much faster than one ``stepml run`` per case
(no start-up, provisioning or forkserver per run), and independent executions can run side by side.
Faults are planned per execution (``FaultPlan.from_specs(..., execution=name)``), so concurrent runs
each carry their own. ``EmbeddedAws`` resets moto's in-process state when it starts: use one at a time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.runs import RunLog
from pipeline_core.models import RegistryRecord
from pipeline_core.sagemaker_names import endpoint_name, job_name

from stepml.embedded.faults import FaultPlan
from stepml.embedded.runtime import EmbeddedAws, wait_until
from stepml.progress import StateVisit, follow
from stepml.project import project_layout
from stepml.session import RunOutcome, outcome_of

REPO = Path(__file__).resolve().parents[2]
ASL_PATH = REPO / "statemachine" / "pipeline.asl.json"
IRIS = (REPO / "data" / "iris.csv").read_bytes()
# Polling every 0.3 s is quick enough for a test and leaves the in-process AWS time to work when many
# executions are followed at once.
POLL_SECONDS = 0.3
# Executions followed at once: on a 2-core machine more only adds contention (training is CPU-bound).
MAX_RUNNING = 6
# The built-in trainer scores iris f1_macro 1.0 on the test split, which no threshold rejects and any champion
# ties. A linear model regularised to nothing answers near chance: WEAK_MODEL is such a run, REJECTED_MODEL one
# the quality gate rejects.
WEAK_MODEL: dict[str, Any] = {"trainer": "linear", "hyperparameters": {"C": 1e-6}}
REJECTED_MODEL: dict[str, Any] = {**WEAK_MODEL, "quality_threshold": 1.0}


@dataclass(frozen=True)
class Job:
    """One execution to run: its name, input and the faults planned for it (``STATE=ERROR[:COUNT]``)."""

    name: str
    execution_input: dict[str, Any]
    faults: Sequence[str] = ()


@dataclass
class Finished:
    """An ended execution: its description, outcome (as ``stepml run --json`` reports it) and visits."""

    job: Job
    arn: str
    description: dict[str, Any]
    outcome: RunOutcome
    visits: list[StateVisit] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.outcome.status

    @property
    def path(self) -> list[str]:
        return [v.name for v in self.visits]

    def visit(self, state: str) -> StateVisit:
        """The (only) visit of ``state``; fails if the run did not go there exactly once."""
        found = [v for v in self.visits if v.name == state]
        assert len(found) == 1, f"{self.job.name}: {state} visited {len(found)} times; path {self.path}"
        return found[0]

    def next_after(self, state: str) -> str | None:
        names = self.path
        index = names.index(state)
        return names[index + 1] if index + 1 < len(names) else None

    def output_of(self, state: str) -> dict[str, Any]:
        text = self.visit(state).output
        return json.loads(text) if text else {}

    def describe(self) -> str:
        lines = [f"{self.job.name} {self.status} faults={list(self.job.faults)}"]
        lines += [f"  {v.name} attempts={v.attempts} errors={v.errors}" for v in self.visits]
        if self.outcome.error:
            lines.append(f"  error={self.outcome.error} cause={str(self.outcome.cause)[:300]}")
        return "\n".join(lines)


class Harness:
    """Upload data, run executions and read the run records, registry and stand-in endpoints."""

    def __init__(self, aws: EmbeddedAws) -> None:
        self.aws = aws
        self.bucket = aws.stack.data_bucket
        self.sfn = aws.client("stepfunctions")
        self.s3 = aws.client("s3")
        self.runs = RunLog(aws.stack.tables["RunsTable"].name, aws.client("dynamodb"))
        self.registry = ModelRegistry(aws.stack.tables["ModelRegistryTable"].name, aws.client("dynamodb"))

    # -- data -------------------------------------------------------------------------------------------
    def upload(self, key: str, body: bytes) -> str:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        return f"s3://{self.bucket}/{key}"

    def upload_incoming(self, key: str, body: bytes, timeout: float = 60) -> dict[str, Any]:
        """Upload under incoming/ and return StartPipeline's answer to the S3 event the upload raised."""
        function = self.aws.stack.functions["StartPipelineFunction"].name
        seen = len(self.aws.runner.log.entries)
        self.upload(key, body)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.aws.runner.log.entries[seen:]:
                payload = entry.payload
                if entry.function_name == function and isinstance(payload, dict) and payload.get("key") == key:
                    return dict(payload)
            time.sleep(0.05)
        raise TimeoutError(f"StartPipeline did not answer for {key} within {timeout} s")

    def executions(self) -> list[dict[str, Any]]:
        pages = self.sfn.get_paginator("list_executions").paginate(stateMachineArn=self.aws.stack.state_machine_arn)
        return [e for p in pages for e in p["executions"]]

    def read(self, uri: str) -> bytes:
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        return bytes(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    def versions_of(self, uri: str) -> list[dict[str, Any]]:
        """Every version and delete marker S3 holds for the object at ``uri``."""
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        answer = self.s3.list_object_versions(Bucket=bucket, Prefix=key)
        found = [v for v in answer.get("Versions", []) if v["Key"] == key]
        return found + [m for m in answer.get("DeleteMarkers", []) if m["Key"] == key]

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []))

    # -- executions -------------------------------------------------------------------------------------
    def start(self, job: Job) -> str:
        if job.faults:
            self.aws.faults.merge(FaultPlan.from_specs(list(job.faults), execution=job.name))
        # The step cache is off unless a job turns it on: a module's runs share one AWS, and a test of retries
        # or deploy races on iris must train, not reuse what an earlier test trained (test_step_cache.py
        # tests the cache).
        execution_input = {"no_cache": True, **job.execution_input}
        answer = self.sfn.start_execution(
            stateMachineArn=self.aws.stack.state_machine_arn, name=job.name, input=json.dumps(execution_input)
        )
        return str(answer["executionArn"])

    def wait(self, job: Job, arn: str) -> Finished:
        description, reader = follow(self.sfn, arn, None, poll_seconds=POLL_SECONDS, timeout_seconds=600)
        return Finished(job, arn, description, outcome_of(description, reader), reader.visits)

    def execution_arn(self, name: str) -> str:
        """The ARN an execution named ``name`` of the pipeline has (or will have)."""
        return self.aws.stack.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"

    def lease_refusals(self, name: str) -> int:
        """How often the execution's AcquireDeployLease has been told the lease is taken, so far."""
        try:
            events = self.sfn.get_execution_history(executionArn=self.execution_arn(name))["events"]
        except self.sfn.exceptions.ExecutionDoesNotExist:
            return 0
        return sum(
            1
            for event in events
            if event["type"] == "LambdaFunctionFailed"
            and event.get("lambdaFunctionFailedEventDetails", {}).get("error") == "DeployLeaseBusyError"
        )

    def run_lined_up_at_lease(
        self, jobs: Sequence[Job], model_name: str, release: Callable[[str], None]
    ) -> dict[str, Finished]:
        """Run ``jobs`` while a deployment "elsewhere" holds ``model_name``'s deploy lease.

        Training times differ, so runs started together tend to reach the endpoint one after another. To
        make them contend every time, the lease is held until every job has been refused it at least once;
        then ``release(holder)`` gives it up (or hands it to one of them). Fails if a job never waited.
        """
        elsewhere = self.execution_arn("deploying-elsewhere")
        self.registry.acquire_deploy_lease(model_name, elsewhere, 3600)
        with ThreadPoolExecutor(max_workers=1) as pool:
            running = pool.submit(self.run_all, jobs)
            lined_up = wait_until(
                lambda: running.done() or all(self.lease_refusals(job.name) for job in jobs),
                timeout=600,
                interval=0.5,
            )
            assert lined_up and not running.done(), "the runs did not all wait for the deploy lease"
            release(elsewhere)
            return running.result()

    def run(self, job: Job) -> Finished:
        return self.wait(job, self.start(job))

    def run_all(self, jobs: Sequence[Job], max_running: int = MAX_RUNNING) -> dict[str, Finished]:
        """Run ``jobs`` side by side (at most ``max_running`` at once); results by execution name."""
        with ThreadPoolExecutor(max_workers=max_running) as pool:
            finished = list(pool.map(self.run, jobs))
        return {f.job.name: f for f in finished}

    # -- records ----------------------------------------------------------------------------------------
    def run_record(self, run_id: str) -> dict[str, Any] | None:
        return self.runs.get_run(run_id)

    def model_versions(self, model_name: str) -> list[RegistryRecord]:
        return self.registry.versions(model_name)

    def endpoint(self, endpoint_name: str) -> dict[str, Any] | None:
        """The SageMaker stand-in's endpoint record (its DescribeEndpoint answer), or None."""
        key = f"_sagemaker/endpoints/{endpoint_name}.json"
        try:
            return dict(json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()))
        except self.s3.exceptions.NoSuchKey:
            return None

    @property
    def name_prefix(self) -> str:
        return str(self.aws.stack.functions["ValidateInputFunction"].environment["ENDPOINT_NAME_PREFIX"])

    def endpoint_name(self, model_name: str) -> str:
        return endpoint_name(self.name_prefix, model_name)

    def endpoint_config_name(self, execution: str) -> str:
        """The endpoint config (and SageMaker model) ValidateInput names for an execution called ``execution``."""
        return job_name(self.name_prefix, execution)

    def trip_alarm_during_rollout(
        self, endpoint_name: str, alarm_name: str, execution: str, timeout: float = 600
    ) -> Future[str]:
        """Set ``alarm_name`` to ALARM (CloudWatch's SetAlarmState, what `stepml alarm set` sends) while
        ``endpoint_name`` rolls out ``execution``'s endpoint config, from a thread; the future holds the time it
        did, ISO 8601. It waits until the execution polls the endpoint (DescribeEndpoint entered), so that an
        UpdateEndpointWithRollout retried after it ran finds its deployment under way, not rolled back."""
        config_name = self.endpoint_config_name(execution)

        def polling() -> bool:
            try:
                events = self.sfn.get_execution_history(executionArn=self.execution_arn(execution))["events"]
            except self.sfn.exceptions.ExecutionDoesNotExist:
                return False
            return any(e.get("stateEnteredEventDetails", {}).get("name") == "DescribeEndpoint" for e in events)

        def watch() -> str:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                pending = ((self.endpoint(endpoint_name) or {}).get("PendingDeploymentSummary") or {}).get(
                    "EndpointConfigName", ""
                )
                if pending == config_name and polling():
                    self.aws.client("cloudwatch").set_alarm_state(
                        AlarmName=alarm_name, StateValue="ALARM", StateReason="set by the test during the rollout"
                    )
                    return datetime.now(UTC).isoformat()
                time.sleep(0.2)
            raise TimeoutError(f"{endpoint_name} never rolled out {execution}'s endpoint config")

        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="trip-alarm").submit(watch)


def embedded_harness() -> Iterator[Harness]:
    """A started embedded AWS (not persisted) wrapped in a :class:`Harness`; for a module-scoped fixture."""
    with EmbeddedAws(project_layout(), persist=False) as aws:
        yield Harness(aws)


def load_asl() -> dict[str, Any]:
    return dict(json.loads(ASL_PATH.read_text()))
