"""Manual approval on the embedded target, the way a user does it: ``stepml run --approval manual`` in one
process waits and says how to decide, ``stepml approve|reject`` in another sends the decision.

One model, in order: v1 is approved (the run deploys it), a rerun that reuses v1's training from the step cache
is not asked again, v2 is rejected (the endpoint keeps serving v1), v3 times out, v4's run is stopped while it
waits (approving it then is refused and the version rejected), and a version that no longer waits cannot be
decided. The data is iris without its last three rows, so that no other module's run is in the step cache.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stepml.embedded.runtime import wait_until
from tests.integration.conftest import REPO, run_cli, stepml_command

pytestmark = pytest.mark.slow

MODEL = "approval-iris"
WHO = getpass.getuser()


@dataclass
class Waiting:
    """A ``stepml run --json`` in a process of its own: its stderr lines as they come, its stdout at the end."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def notice(self, timeout: float = 300) -> str:
        """The stderr text once the run says it waits for approval (fails if it ends or never does)."""
        said = wait_until(lambda: "Decide with:" in "".join(self.lines) or self.process.poll() is not None, timeout)
        text = "".join(self.lines)
        assert said and "Decide with:" in text, f"the run never said it waits for approval:\n{text}"
        return text

    def result(self, timeout: float = 300) -> dict[str, Any]:
        out, _ = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, f"{out}\n{''.join(self.lines)}"
        return dict(json.loads(out.strip().splitlines()[-1]))


@dataclass
class Decided:
    run: dict[str, Any]
    notice: str
    command: subprocess.CompletedProcess[str]


class Approvals:
    """The module's runs, the CLI in processes of their own, and the local AWS's clients."""

    def __init__(self, dataset: Path) -> None:
        from stepml.project import project_layout
        from stepml.targets import embedded_target

        self.dataset = dataset
        self.env = {**os.environ}
        self.target = embedded_target(project_layout())
        self.queue = self._subscribe_to_the_alerts()

    def client(self, service: str) -> Any:
        return self.target.client(service)

    def _subscribe_to_the_alerts(self) -> str:
        """An SQS queue on the stack's topic: what the functions and states publish can be read back."""
        sqs, sns = self.client("sqs"), self.client("sns")
        queue = sqs.create_queue(QueueName="approval-test-alerts")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        [topic] = [t["TopicArn"] for t in sns.list_topics()["Topics"] if "NotificationTopic" in t["TopicArn"]]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
        return str(queue)

    def alerts(self) -> list[dict[str, Any]]:
        sqs, found = self.client("sqs"), list[dict[str, Any]]()
        while True:
            batch = sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                return found
            found += [json.loads(m["Body"]) for m in batch]
            for message in batch:
                sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return stepml_command(self.env, *args, timeout=300)

    def start_waiting(self, name: str, *extra: str) -> Waiting:
        command = [sys.executable, "-m", "stepml.cli", "run", "--json", "--data", str(self.dataset)]
        command += ["--model-name", MODEL, "--approval", "manual", "--name", name, *extra]
        process = subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return Waiting(process)

    def decide(self, name: str, verb: str, version: int, reason: str) -> Decided:
        waiting = self.start_waiting(name, "--no-cache")
        notice = waiting.notice()
        command = self.cli(verb, MODEL, str(version), "--reason", reason)
        return Decided(waiting.result(), notice, command)

    def versions(self) -> dict[int, dict[str, Any]]:
        listed = json.loads(self.cli("models", "--model", MODEL, "--json").stdout)
        return {v["version"]: v for v in listed}

    def served_config(self) -> str | None:
        key = f"_sagemaker/endpoints/stepml-dev-{MODEL}-ep.json"
        s3 = self.client("s3")
        try:
            return str(
                json.loads(s3.get_object(Bucket=self.target.outputs.data_bucket, Key=key)["Body"].read())[
                    "EndpointConfigName"
                ]
            )
        except s3.exceptions.NoSuchKey:
            return None


@dataclass
class Story:
    approvals: Approvals
    approved: Decided
    rerun: dict[str, Any]
    rejected: Decided
    timed_out: dict[str, Any]
    alerts: list[dict[str, Any]]


def _states(run: dict[str, Any]) -> list[str]:
    return [s["name"] for s in run["states"]]


@pytest.fixture(scope="module")
def story(state_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    lines = (REPO / "data" / "iris.csv").read_text().strip().splitlines()
    dataset = tmp_path_factory.mktemp("approval") / "approval-iris.csv"
    dataset.write_text("\n".join(lines[:-3]) + "\n")
    approvals = Approvals(dataset)
    approved = approvals.decide("approval-approve", "approve", 1, "report checked")
    # the same data again, with the step cache: its training is v1's, already approved and deployed
    rerun = run_cli(
        "--data", str(dataset), "--model-name", MODEL, "--approval", "manual", "--approval-timeout", "120",
        "--name", "approval-rerun",
    )  # fmt: skip
    assert rerun.exit_code == 0, rerun.output
    rejected = approvals.decide("approval-reject", "reject", 2, "the report shows drift")
    timed_out = run_cli(
        "--data", str(dataset), "--model-name", MODEL, "--approval", "manual", "--approval-timeout", "10",
        "--no-cache", "--name", "approval-timeout",
    )  # fmt: skip
    assert timed_out.exit_code == 0, timed_out.output
    yield Story(approvals, approved, rerun.result, rejected, timed_out.result, approvals.alerts())


def test_a_waiting_run_says_so_with_the_commands(story: Story) -> None:
    notice = story.approved.notice
    assert f"{MODEL} v1 passed the quality gate and waits for approval until " in notice
    assert f"      stepml approve {MODEL} 1 --reason 'WHY'\n" in notice
    assert f"      stepml reject {MODEL} 1 --reason 'WHY'\n" in notice


def test_the_notification_says_how_to_approve(story: Story) -> None:
    asking = [a for a in story.alerts if a.get("Subject", "").startswith("stepml: approve or reject")]
    assert [a["Subject"] for a in asking] == [f"stepml: approve or reject {MODEL} v{v}" for v in (1, 2, 3)]
    text = asking[0]["Message"]
    assert f"stepml approve {MODEL} 1 --reason 'WHY'" in text
    assert "aws stepfunctions send-task-success --task-token '" in text
    assert "--error ModelRejected" in text


def test_an_approved_run_deploys_that_same_version(story: Story) -> None:
    command, run = story.approved.command, story.approved.run
    assert command.returncode == 0, command.stderr
    assert command.stdout.startswith(f"Approved {MODEL} v1 (by {WHO}): run approval-approve continues to deploy it.")
    assert run["status"] == "SUCCEEDED" and run["model_version"] == 1
    states = _states(run)
    assert states[states.index("QualityGate") :] == [
        "QualityGate", "RequestApproval", "CreateModel", "CreateEndpointConfig",
        "AcquireDeployLease", "GateUnderLease", "StillPassesGate", "FindEndpoint", "CreateOrUpdateEndpoint",
        "CreateEndpoint", "DescribeEndpoint", "EndpointReady", "Register", "Notify", "Succeeded",
    ]  # fmt: skip
    assert run["approval"]["status"] == "approved" and run["approval"]["decided_by"] == WHO
    assert run["approval"]["reason"] == "report checked" and run["approval"]["version"] == 1
    v1 = story.approvals.versions()[1]
    assert v1["status"] == "approved" and v1["execution_arn"] == run["execution_arn"]
    assert v1["approval"]["decided_by"] == WHO and v1["gate_reason"].endswith(": report checked")
    assert story.approvals.served_config() == v1["endpoint_config_name"]


def test_a_rerun_of_the_deployed_model_is_not_asked_again(story: Story) -> None:
    run = story.rerun
    assert run["status"] == "SUCCEEDED" and "RequestApproval" not in _states(run)
    assert run["model_version"] == 1 and run["reused_version"] is True and run["approval"] is None


def test_a_rejected_run_registers_that_version_rejected_and_leaves_the_endpoint(story: Story) -> None:
    command, run = story.rejected.command, story.rejected.run
    assert command.returncode == 0, command.stderr
    assert run["status"] == "SUCCEEDED" and run["model_version"] == 2
    states = _states(run)
    assert states[states.index("QualityGate") :] == [
        "QualityGate", "RequestApproval", "RegisterRejected", "Notify", "Succeeded",
    ]  # fmt: skip
    assert run["approval"]["status"] == "rejected" and run["approval"]["reason"] == "the report shows drift"
    versions = story.approvals.versions()
    v2 = versions[2]
    assert v2["status"] == "rejected" and v2["endpoint_name"] is None and v2["approval"]["decided_by"] == WHO
    assert v2["gate_reason"].startswith(f"rejected by {WHO} at ") and "the report shows drift" in v2["gate_reason"]
    # nothing was deployed: the endpoint still serves v1
    assert story.approvals.served_config() == versions[1]["endpoint_config_name"]


def test_a_run_nobody_decides_on_is_rejected_when_the_approval_times_out(story: Story) -> None:
    run = story.timed_out
    assert run["status"] == "SUCCEEDED" and run["model_version"] == 3
    request = next(s for s in run["states"] if s["name"] == "RequestApproval")
    assert request["errors"] == ["States.Timeout"]
    assert run["approval"]["status"] == "rejected" and run["approval"]["timed_out"] is True
    v3 = story.approvals.versions()[3]
    assert v3["status"] == "rejected" and v3["approval"]["reason"] == "approval timed out after 10 s"
    assert v3["gate_reason"].startswith("rejected: approval timed out after 10 s")
    assert story.approvals.served_config() == story.approvals.versions()[1]["endpoint_config_name"]


def test_runs_and_models_show_the_approvals(story: Story) -> None:
    runs = {r["name"]: r for r in json.loads(story.approvals.cli("runs", "--json").stdout)}
    assert runs["approval-approve"]["approval"] == "approved"
    assert runs["approval-reject"]["approval"] == "rejected"
    assert runs["approval-timeout"]["approval"] == "timed_out"
    assert runs["approval-rerun"]["approval"] is None
    table = story.approvals.cli("models", "--model", MODEL).stdout
    assert f"approved by {WHO} at " in table and f"rejected by {WHO} at " in table


def test_a_version_that_no_longer_waits_cannot_be_decided(story: Story) -> None:
    approvals = story.approvals
    approved = approvals.cli("approve", MODEL, "1")
    assert approved.returncode == 2 and approved.stdout == ""
    assert approved.stderr.startswith(f"stepml: {MODEL} v1 is approved, no longer pending approval (approved by {WHO}")
    timed_out = approvals.cli("reject", MODEL, "3", "--reason", "late")
    assert timed_out.returncode == 2
    assert (
        f"{MODEL} v3 is rejected: nobody decided by " in timed_out.stderr
        and "(the approval timed out)" in timed_out.stderr
    )
    missing = approvals.cli("approve", MODEL, "99")
    assert missing.returncode == 2 and f"{MODEL} has no version 99 (versions 1-3)" in missing.stderr
    unknown = approvals.cli("approve", "no-such-model", "1")
    assert unknown.returncode == 2 and "no model 'no-such-model' in the registry" in unknown.stderr
    assert [v["status"] for _, v in sorted(approvals.versions().items())] == ["approved", "rejected", "rejected"]


def test_approving_a_version_whose_run_was_stopped_is_refused_and_rejects_it(story: Story) -> None:
    approvals = story.approvals
    waiting = approvals.start_waiting("approval-stopped", "--no-cache")
    waiting.notice()
    sfn = approvals.client("stepfunctions")
    arn = approvals.target.outputs.state_machine_arn.replace(":stateMachine:", ":execution:") + ":approval-stopped"
    sfn.stop_execution(executionArn=arn, cause="stopped by the test while it waited for approval")
    waiting.process.wait(timeout=120)
    assert wait_until(lambda: sfn.describe_execution(executionArn=arn)["status"] == "ABORTED", timeout=30)

    refused = approvals.cli("approve", MODEL, "4", "--reason", "too late")
    assert refused.returncode == 2
    assert f"{MODEL} v4 cannot be approved: Step Functions answered " in refused.stderr
    assert "its run approval-stopped ended (ABORTED) before anyone decided; the version is now marked rejected" in (
        refused.stderr
    )
    v4 = approvals.versions()[4]
    assert v4["status"] == "rejected" and v4["gate_reason"] == (
        "rejected: its run approval-stopped ended (ABORTED) before anyone decided"
    )
    again = approvals.cli("approve", MODEL, "4")
    assert again.returncode == 2 and "no longer pending approval" in again.stderr
    assert approvals.served_config() == approvals.versions()[1]["endpoint_config_name"]
