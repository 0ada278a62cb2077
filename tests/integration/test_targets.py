"""`stepml local up` serves the embedded AWS; the CLI's target code paths and the S3 trigger run against it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from stepml.embedded.runtime import free_port
from tests.integration.conftest import REPO, stepml_command

pytestmark = pytest.mark.slow


@dataclass
class LocalUp:
    endpoint_url: str
    env: dict[str, str]
    state_dir: Path

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return stepml_command(self.env, *args, timeout=timeout)

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture(scope="module")
def local_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalUp]:
    state_dir = tmp_path_factory.mktemp("local-up-state")
    port = free_port()
    # Fake credentials and a region: the `--target aws` code path runs against local up with them.
    env = {
        **os.environ,
        "STEPML_STATE_DIR": str(state_dir),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "stepml.cli", "local", "up", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 180  # a loaded 2-core machine starts it in 5-25 s
    while not (state_dir / "local.json").exists():
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"stepml local up did not start:\n{server.stdout.read() if server.stdout else ''}")
        time.sleep(0.2)
    yield LocalUp(f"http://127.0.0.1:{port}", env, state_dir)
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)


def _last_json(completed: subprocess.CompletedProcess[str]) -> dict:
    assert completed.stdout.strip(), completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_boto3_starts_and_describes_executions_on_local_up(local_up: LocalUp) -> None:
    sfn, s3 = local_up.client("stepfunctions"), local_up.client("s3")
    machines = {m["name"]: m for m in sfn.list_state_machines()["stateMachines"]}
    machine = machines["stepml-local-PipelineStateMachine"]
    bucket = local_up.client("cloudformation").describe_stacks(StackName="stepml-local")["Stacks"][0]["Outputs"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in bucket}
    assert outputs["StateMachineArn"] == machine["stateMachineArn"]
    assert (
        outputs["BatchScoringStateMachineArn"] == machines["stepml-local-BatchScoringStateMachine"]["stateMachineArn"]
    )
    s3.put_object(
        Bucket=outputs["DataBucketName"], Key="datasets/b/iris.csv", Body=(REPO / "data/iris.csv").read_bytes()
    )
    arn = sfn.start_execution(
        stateMachineArn=machine["stateMachineArn"],
        name="boto3-started",
        input=json.dumps({"dataset": f"s3://{outputs['DataBucketName']}/datasets/b/iris.csv"}),
    )["executionArn"]
    deadline = time.monotonic() + 120
    while (status := sfn.describe_execution(executionArn=arn)["status"]) == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert status == "SUCCEEDED"


def test_start_no_wait_then_watch(local_up: LocalUp) -> None:
    started = local_up.cli("start", "--no-wait", "--data", str(REPO / "data" / "iris.csv"), "--name", "nowait-1")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip().endswith(":nowait-1")
    watched = local_up.cli("watch", "nowait-1", "--json")
    assert watched.returncode == 0, watched.stderr
    result = _last_json(watched)
    assert result["status"] == "SUCCEEDED"
    assert result["model_version"] >= 1


def test_upload_starts_a_run_through_the_s3_trigger(local_up: LocalUp, tmp_path: Path) -> None:
    data = tmp_path / "petals.csv"
    shutil.copy(REPO / "data" / "iris.csv", data)
    uploaded = local_up.cli("upload", str(data), "--json")
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    result = _last_json(uploaded)
    assert result["status"] == "SUCCEEDED"
    assert result["model_name"] == "petals-species"  # the file and the target
    assert "The S3 trigger started" in uploaded.stdout


def test_duplicate_event_delivery_starts_one_run(local_up: LocalUp) -> None:
    from pipeline_core.stages.start_pipeline import execution_name

    from stepml.embedded.runtime import object_created_event

    s3, sfn, lam = local_up.client("s3"), local_up.client("stepfunctions"), local_up.client("lambda")
    stack = local_up.client("cloudformation").describe_stacks(StackName="stepml-local")["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    bucket, key = outputs["DataBucketName"], "incoming/dup.csv"
    body = (REPO / "data" / "iris.csv").read_bytes()
    put = s3.put_object(Bucket=bucket, Key=key, Body=body)  # the trigger delivers this once by itself
    name = execution_name(bucket, key, put.get("VersionId"), put["ETag"].strip('"'))
    # EventBridge delivers at least once: the same event twice more must start nothing new.
    event = object_created_event(bucket, key, len(body), put["ETag"], put.get("VersionId"))
    answers = [
        json.loads(
            lam.invoke(FunctionName="stepml-local-StartPipelineFunction", Payload=json.dumps(event))["Payload"].read()
        )
        for _ in range(2)
    ]
    assert {a["execution_name"] for a in answers} == {name}, answers
    assert {a["status"] for a in answers} <= {"started", "already_started"}
    executions = sfn.list_executions(stateMachineArn=outputs["StateMachineArn"])["executions"]
    assert [e["name"] for e in executions].count(name) == 1


def test_remote_code_paths_reach_local_up(local_up: LocalUp) -> None:
    for target in ("localstack", "aws"):
        listed = local_up.cli(
            "runs",
            "--target",
            target,
            "--endpoint-url",
            local_up.endpoint_url,
            "--stack-name",
            "stepml-local",
            "--json",
        )
        assert listed.returncode == 0, listed.stderr
        assert any(r["status"] == "SUCCEEDED" for r in json.loads(listed.stdout)), target
    models = local_up.cli(
        "models", "--target", "aws", "--endpoint-url", local_up.endpoint_url, "--stack-name", "stepml-local", "--json"
    )
    assert models.returncode == 0, models.stderr
    assert any(m["status"] == "approved" for m in json.loads(models.stdout))


def test_runs_into_a_pipe_whose_reader_has_left_ends_quietly(local_up: LocalUp) -> None:
    """`stepml runs | head -1`: once head has read its line and left, every write to stdout is EPIPE."""
    process = subprocess.Popen(
        [sys.executable, "-m", "stepml.cli", "runs"], env=local_up.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the first line is written: deterministic, unlike head's race
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=180) == 1  # Python's convention for EPIPE (docs: "Note on SIGPIPE")
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr and "Exception ignored" not in stderr, stderr


def test_missing_stack_is_a_clear_error(local_up: LocalUp) -> None:
    listed = local_up.cli("runs", "--target", "aws", "--endpoint-url", local_up.endpoint_url, "--stack-name", "nope")
    assert listed.returncode == 2
    assert "no stack 'nope'" in listed.stderr


@pytest.mark.parametrize("target", ["localstack", "aws"])
def test_start_and_watch_through_the_remote_targets(local_up: LocalUp, target: str) -> None:
    # The same commands a user runs against LocalStack or AWS, with local up standing in for the account.
    remote = ("--target", target, "--endpoint-url", local_up.endpoint_url, "--stack-name", "stepml-local")
    name = f"remote-{target}"
    iris = str(REPO / "data" / "iris.csv")
    # --no-cache: each target's run trains and registers its own version (the cache would return the first's)
    started = local_up.cli("start", *remote, "--no-wait", "--no-cache", "--data", iris, "--name", name)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip().endswith(f":{name}")
    watched = local_up.cli("watch", name, *remote, "--json")
    assert watched.returncode == 0, watched.stderr
    result = _last_json(watched)
    assert result["status"] == "SUCCEEDED" and result["model_version"] >= 1
    models = json.loads(local_up.cli("models", *remote, "--json").stdout)
    assert any(m["execution_arn"] == result["execution_arn"] for m in models)
    # drift monitoring through the same target: the local file is uploaded, the stack's Monitor function invoked
    monitored = local_up.cli("monitor", *remote, "--model", result["model_name"], "--data", iris, "--json")
    assert monitored.returncode == 0, monitored.stderr
    report = _last_json(monitored)
    assert report["model_name"] == result["model_name"] and report["rows"] == 150
    assert report["drifted_features"] == [] and report["report_uri"].startswith("s3://")
    assert report["report_path"] is None  # only the embedded target copies the report out
