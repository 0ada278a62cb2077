"""The pipeline's training jobs run outside the stand-in's Lambda invocation (pipeline_core.standin.training_runner).

Real processes against a moto server (the runner is a process of its own and reaches S3 as the stand-in
does, through AWS_ENDPOINT_URL): a job longer than the invocation's budget goes on and is waited for again
without running twice, a runner that dies or goes silent fails its job with a reason, and a runner whose
store disappears stops its script.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer
from pipeline_core.errors import TrainingFailedError
from pipeline_core.standin import training_runner
from pipeline_core.standin.errors import TrainingJobInProgress
from pipeline_core.standin.store import RecordStore

from tests.conftest import FakeAws
from tests.unit.test_standin import asl_request, iris_splits, pipeline_state, upload_source, upload_splits

# Appends a line to the file named by the ``marker`` hyperparameter, waits ``sleep`` seconds, writes a model.
SLOW_TRAINER = """
import argparse, os, pathlib, time
parser = argparse.ArgumentParser()
parser.add_argument("--marker")
parser.add_argument("--sleep", type=float, default=0)
args, _ = parser.parse_known_args()
with open(args.marker, "a") as handle:
    handle.write(f"{os.getpid()}\\n")
print("training", flush=True)
time.sleep(args.sleep)
pathlib.Path(os.environ["SM_MODEL_DIR"], "m.txt").write_text("ok")
pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "test_predictions.csv").write_text("y_true,y_pred\\na,a\\n")
"""


@dataclass
class Served:
    aws: FakeAws
    server: ThreadedMotoServer
    store: RecordStore


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """A moto server in this process, the pipeline's bucket in it, and the environment pointed at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    # moto's backends are this process's globals, shared by every server it starts: begin empty
    urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST")).close()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    monkeypatch.setenv("STANDIN_WARM_TRAINING", "0")  # each job a cold runner: nothing left warm after a test
    from pipeline_core.aws.clients import client

    client.cache_clear()
    try:
        fake = FakeAws()
        for key, value in fake.env().items():
            monkeypatch.setenv(key, value)
        yield Served(fake, server, RecordStore(fake.bucket, fake.s3))
    finally:
        client.cache_clear()
        with contextlib.suppress(Exception):  # a test may have stopped it
            server.stop()


def _slow_job(aws: FakeAws, tmp_path: Path, run: str, sleep: float) -> tuple[dict[str, object], Path]:
    upload_splits(aws, run, iris_splits())
    upload_source(aws, {"train.py": SLOW_TRAINER}, tmp_path)
    marker = tmp_path / "started.txt"
    request = asl_request("Train", pipeline_state(aws, run, {"marker": str(marker), "sleep": str(sleep)}))
    return request, marker


def _record(aws: FakeAws, run: str) -> dict[str, object]:
    record: dict[str, object] = json.loads(aws.get(f"_sagemaker/training-jobs/stepml-{run}.json"))
    return record


def test_a_job_longer_than_the_invocation_goes_on_and_the_retry_waits_for_it_without_training_twice(
    served: Served, tmp_path: Path
) -> None:
    store = served.store
    request, marker = _slow_job(served.aws, tmp_path, "long", sleep=6)

    with pytest.raises(TrainingJobInProgress, match="still"):
        training_runner.start_training_job(store, request, time_budget_seconds=1)
    assert _record(served.aws, "long")["TrainingJobStatus"] == "InProgress"

    described = training_runner.start_training_job(store, request, time_budget_seconds=60)

    assert described["TrainingJobStatus"] == "Completed"
    assert len(marker.read_text().splitlines()) == 1, "the retry started the script again"
    assert store.objects.exists(described["ModelArtifacts"]["S3ModelArtifacts"])
    assert _record(served.aws, "long") == described


def test_a_runner_killed_before_the_job_ended_fails_the_job_for_the_next_waiter(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = served.store
    request, marker = _slow_job(served.aws, tmp_path, "killed", sleep=30)
    with pytest.raises(TrainingJobInProgress):
        training_runner.start_training_job(store, request, time_budget_seconds=0.5)
    runner = _wait_for_heartbeat(served.aws, "killed")["pid"]

    os.kill(runner, signal.SIGKILL)
    monkeypatch.setattr(training_runner, "STALE_AFTER_SECONDS", 1.0)
    try:
        with pytest.raises(TrainingFailedError, match="lost its process"):
            training_runner.start_training_job(store, request, time_budget_seconds=30)
    finally:
        _kill_scripts(marker)

    record = _record(served.aws, "killed")
    assert record["TrainingJobStatus"] == "Failed"
    assert "no heartbeat for 1 s" in str(record["FailureReason"])


def test_a_runner_whose_store_is_gone_stops_its_script(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = served.store
    request, marker = _slow_job(served.aws, tmp_path, "orphan", sleep=60)
    monkeypatch.setattr(training_runner, "HEARTBEAT_SECONDS", 0.2)
    monkeypatch.setattr(training_runner, "STALE_AFTER_SECONDS", 1.0)
    with pytest.raises(TrainingJobInProgress):
        training_runner.start_training_job(store, request, time_budget_seconds=0.5)
    runner = _wait_for_heartbeat(served.aws, "orphan")["pid"]
    script = _script_pids(marker)[0]

    served.server.stop()

    try:
        assert _gone(runner, within=20) and _gone(script, within=5), "the runner or its script outlived the store"
    finally:
        _kill_scripts(marker)


def _script_pids(marker: Path) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text().strip():
            return [int(line) for line in marker.read_text().split()]
        time.sleep(0.1)
    raise AssertionError("the script never started")


def _kill_scripts(marker: Path) -> None:
    for pid in _script_pids(marker) if marker.exists() else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _gone(pid: int, within: float) -> bool:
    """Whether ``pid`` exits within ``within`` s (a zombie, exited but not yet reaped by this process, is gone)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in {"Z", "X"}:
            return True
        time.sleep(0.1)
    return False


def _wait_for_heartbeat(aws: FakeAws, run: str) -> dict[str, int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            beat: dict[str, int] = json.loads(aws.get(f"_sagemaker/heartbeats/training-jobs/stepml-{run}.json"))
            return beat
        except aws.s3.exceptions.NoSuchKey:
            time.sleep(0.1)
    raise AssertionError("the runner never wrote a heartbeat")


def test_the_train_states_retries_wait_longer_than_the_jobs_max_runtime() -> None:
    """The Train state's attempts on TrainingJobInProgress, each as long as the stand-in's invocation waits,
    outlast StoppingCondition.MaxRuntimeInSeconds (after which the runner stops the job), so a run never fails
    on the retries while its job still runs."""
    from functions.local_sagemaker.app import UPLOAD_MARGIN_SECONDS
    from tests.unit.test_standin import ASL
    from tests.unit.test_template import load_template

    train = ASL["States"]["Train"]
    [retrier] = [r for r in train["Retry"] if TrainingJobInProgress.__name__ in r["ErrorEquals"]]
    function = load_template()["Resources"]["LocalSageMakerCreateTrainingJobFunction"]["Properties"]
    waits = 1 + retrier["MaxAttempts"]  # the first attempt, then each retry
    wait_seconds = function["Timeout"] - UPLOAD_MARGIN_SECONDS

    assert waits * wait_seconds > train["Parameters"]["StoppingCondition"]["MaxRuntimeInSeconds"] + 600
    assert retrier.get("BackoffRate", 2.0) == 1.0, "a backoff would leave the job unwatched for longer each time"
    assert train["TimeoutSeconds"] >= function["Timeout"], "the state must not time out an attempt that waits"
