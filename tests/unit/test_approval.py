"""Manual approval: the pending_approval version RequestApproval registers (with the task token and the
notification), what Register and RegisterRejected make of the decision, the re-check under the deploy lease,
and RecordFailure closing a version its failed run left waiting. The registry is moto's DynamoDB; the
notification is read back from an SQS queue subscribed to a moto SNS topic."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import boto3
import pytest
from pipeline_core.aws.notifications import Notifier
from pipeline_core.aws.registry import APPROVAL_TOKEN, ModelRegistry
from pipeline_core.aws.runs import RunLog
from pipeline_core.errors import ApprovalStateError, ConfigurationError
from pipeline_core.models import (
    ApprovalRecord,
    DataProfile,
    EvaluationResult,
    IngestResult,
    PreprocessResult,
    RegistrationResult,
    RunConfig,
    TrainingSummary,
)
from pipeline_core.stages import approval, deploy_lease
from pipeline_core.stages.record_failure import record_failure
from pipeline_core.stages.register import register, request_approval

from functions.register_model import app as register_app
from tests.conftest import REGION, FakeAws
from tests.unit.test_evaluate import champion_record, metrics_namespace
from tests.unit.test_register import evaluated_state

__all__ = ["metrics_namespace"]  # a fixture used here by name

ARN = "arn:aws:states:us-east-1:123456789012:execution:stepml-pipeline:{}"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class Topic:
    """A moto SNS topic with an SQS queue subscribed to it: what is published can be read back."""

    def __init__(self) -> None:
        self.sns = boto3.client("sns", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.arn = self.sns.create_topic(Name="stepml-test-alerts")["TopicArn"]
        self.queue = self.sqs.create_queue(QueueName="alerts")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]
        self.sns.subscribe(TopicArn=self.arn, Protocol="sqs", Endpoint=queue_arn["QueueArn"])

    def messages(self) -> list[dict[str, Any]]:
        found = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(m["Body"]) for m in found]


@pytest.fixture
def state(aws: FakeAws) -> dict[str, Any]:
    """A real iris run's state at QualityGate, with approval manual (its gate passed)."""
    found = evaluated_state(aws)
    found["config"] = {**found["config"], "approval": "manual", "approval_timeout_seconds": 600}
    assert found["evaluation"]["passed"]
    return found


def registry(aws: FakeAws) -> ModelRegistry:
    return ModelRegistry(aws.registry_table, aws.dynamodb)


def runs(aws: FakeAws) -> RunLog:
    return RunLog(aws.runs_table, aws.dynamodb)


def ask(aws: FakeAws, state: dict[str, Any], token: str, topic: Topic, now: datetime = NOW, **extra: Any) -> Any:
    """RequestApproval's function, as the state calls it (its Payload), for execution "run-1"."""
    event = {key: state[key] for key in ("config", "ingest", "data", "prep", "training", "evaluation")}
    event |= {"action": approval.ACTION, "execution_arn": ARN.format("run-1"), "task_token": token, **extra}
    return request_approval(
        approval.ApprovalRequestEvent.model_validate(event),
        registry=registry(aws),
        runs=runs(aws),
        notifier=Notifier(topic.arn, topic.sns),
        now=now,
    )


def settle(
    aws: FakeAws, state: dict[str, Any], status: Literal["approved", "rejected"], outcome: Any
) -> RegistrationResult:
    """Register (approved) or RegisterRejected with ``outcome`` at ``$.evaluation.approval``."""
    evaluation = EvaluationResult.model_validate({**state["evaluation"], "approval": outcome})
    return register(
        RunConfig.model_validate(state["config"]),
        IngestResult.model_validate(state["ingest"]),
        DataProfile.model_validate(state["data"]),
        PreprocessResult.model_validate(state["prep"]),
        TrainingSummary.model_validate(state["training"]),
        evaluation,
        ARN.format("run-1"),
        status,
        registry=registry(aws),
        runs=runs(aws),
    )


def test_request_registers_a_pending_version_keeps_the_token_and_says_how_to_decide(
    aws: FakeAws, state: dict[str, Any]
) -> None:
    topic = Topic()
    answer = ask(aws, state, "token-1", topic)

    assert (answer.model_name, answer.version, answer.status) == ("iris", 1, "pending_approval")
    assert answer.deadline == "2026-11-30T12:10:00+00:00" and answer.timeout_seconds == 600
    assert answer.approve_command == "stepml approve iris 1 --reason 'WHY'"
    [record] = registry(aws).versions("iris")
    assert record.status == "pending_approval" and record.endpoint_name is None
    assert record.approval == ApprovalRecord(
        status="pending", requested_at="2026-11-30T12:00:00+00:00", timeout_seconds=600, deadline=answer.deadline
    )
    assert registry(aws).approval_token("iris", 1) == "token-1"
    # the token is kept apart from the record, so listings do not print it
    assert "token-1" not in json.dumps([r.model_dump(mode="json") for r in registry(aws).versions()])
    run = runs(aws).get_run("run-1")
    assert run and run["registry_status"] == "pending_approval" and run["approval"]["status"] == "pending"

    [message] = topic.messages()
    assert message["Subject"] == "stepml: approve or reject iris v1"
    text = message["Message"]
    for expected in (
        "stepml approve iris 1 --reason 'WHY'",
        "stepml reject iris 1 --reason 'WHY'",
        "aws stepfunctions send-task-success --task-token 'token-1'",
        "aws stepfunctions send-task-failure --task-token 'token-1' --error ModelRejected",
        f"Decide before {answer.deadline}",
        state["evaluation"]["report_uri"],
        ARN.format("run-1"),
    ):
        assert expected in text, (expected, text)


def test_a_retried_request_keeps_one_version_and_waits_on_the_newest_token(aws: FakeAws, state: dict[str, Any]) -> None:
    topic = Topic()
    ask(aws, state, "token-1", topic)
    again = ask(aws, state, "token-2", topic, now=NOW + timedelta(seconds=30))
    assert again.version == 1 and [r.version for r in registry(aws).versions("iris")] == [1]
    assert registry(aws).approval_token("iris", 1) == "token-2"
    # each attempt's timeout starts anew: the deadline moves with it
    renewed = registry(aws).versions("iris")[0].approval
    assert renewed is not None and renewed.deadline == "2026-11-30T12:10:30+00:00"
    assert len(topic.messages()) == 2  # at least once: the retry says it again, with the new token


def test_the_execution_timeout_caps_the_deadline(aws: FakeAws, state: dict[str, Any]) -> None:
    started = (NOW - timedelta(seconds=7000)).isoformat()  # 200 s of the execution's 7200 left
    answer = ask(aws, state, "token-1", Topic(), execution_started_at=started)
    assert answer.deadline == "2026-11-30T12:03:20+00:00"


def test_approval_turns_the_same_version_approved_with_who_and_why(aws: FakeAws, state: dict[str, Any]) -> None:
    ask(aws, state, "token-1", Topic())
    said = {"decided_by": "arn:aws:iam::1:user/alice", "decided_at": "2026-11-30T12:05:00+00:00", "reason": "ok"}

    result = settle(aws, state, "approved", said)

    assert (result.version, result.status, result.reused_version) == (1, "approved", False)
    [record] = registry(aws).versions("iris")
    assert record.status == "approved" and record.endpoint_name == state["config"]["endpoint_name"]
    assert record.endpoint_config_name == state["config"]["endpoint_config_name"]
    assert record.approval is not None and record.approval.status == "approved"
    assert (record.approval.decided_by, record.approval.decided_at, record.approval.reason) == (
        "arn:aws:iam::1:user/alice",
        "2026-11-30T12:05:00+00:00",
        "ok",
    )
    assert record.gate_reason == (
        f"{state['evaluation']['reason']}; approved by arn:aws:iam::1:user/alice at 2026-11-30T12:05:00+00:00: ok"
    )
    assert result.gate_reason == record.gate_reason and result.approval == record.approval
    assert registry(aws).approval_token("iris", 1) is None  # nothing waits on it any more
    assert registry(aws).champion("iris") == record
    run = runs(aws).get_run("run-1")
    assert run and run["status"] == "SUCCEEDED" and run["approval"]["decided_by"] == "arn:aws:iam::1:user/alice"
    # a retried Register (its answer lost) returns the same version, settled once
    again = settle(aws, state, "approved", said)
    assert again == result and len(registry(aws).versions("iris")) == 1


@pytest.mark.parametrize(
    ("cause", "who", "why"),
    [
        (
            json.dumps({"decided_by": "bob", "decided_at": "2026-11-30T12:01:00+00:00", "reason": "drift"}),
            "bob",
            "drift",
        ),
        ("the features look wrong", None, "the features look wrong"),  # the AWS CLI with a plain-text cause
        (None, None, None),
    ],
    ids=["stepml-reject", "plain-text-cause", "no-cause"],
)
def test_a_rejection_rejects_the_same_version_with_who_and_why(
    aws: FakeAws, state: dict[str, Any], cause: str | None, who: str | None, why: str | None
) -> None:
    ask(aws, state, "token-1", Topic())
    result = settle(aws, state, "rejected", {"Error": "ModelRejected", "Cause": cause})

    assert (result.version, result.status, result.endpoint_name) == (1, "rejected", None)
    [record] = registry(aws).versions("iris")
    assert record.status == "rejected" and record.approval is not None
    assert (record.approval.status, record.approval.decided_by, record.approval.reason) == ("rejected", who, why)
    assert not record.approval.timed_out and record.approval.decided_at
    named = who or "someone who did not say who (CloudTrail records the caller)"
    assert record.gate_reason is not None and record.gate_reason.startswith(f"rejected by {named} at ")
    assert record.gate_reason.endswith(
        f": {why or 'no reason given'} (the gate had passed: {state['evaluation']['reason']})"
    )
    assert registry(aws).champion("iris") is None and registry(aws).approval_token("iris", 1) is None


def test_a_timeout_rejects_the_version_saying_nobody_decided(aws: FakeAws, state: dict[str, Any]) -> None:
    ask(aws, state, "token-1", Topic())
    settle(aws, state, "rejected", {"Error": "States.Timeout", "Cause": ""})
    [record] = registry(aws).versions("iris")
    assert record.status == "rejected" and record.approval is not None and record.approval.timed_out
    assert record.approval.reason == "approval timed out after 600 s" and record.approval.decided_by is None
    assert record.gate_reason is not None
    assert record.gate_reason.startswith("rejected: approval timed out after 600 s (no decision by 2026-11-30T12:10:00")


def test_register_refuses_to_approve_what_was_rejected(aws: FakeAws, state: dict[str, Any]) -> None:
    ask(aws, state, "token-1", Topic())
    with pytest.raises(ApprovalStateError, match="was rejected, yet the run reached Register"):
        settle(aws, state, "approved", {"Error": "ModelRejected", "Cause": "no"})
    assert registry(aws).versions("iris")[0].status == "pending_approval"


@pytest.mark.parametrize("output", ["looks fine", ["x"], {}], ids=["text", "list", "empty"])
def test_any_success_output_is_an_approval(output: Any) -> None:
    pending = approval.pending_record(RunConfig.model_validate(_config()), NOW)
    decided = approval.decision(output, pending, NOW)
    assert decided.status == "approved" and decided.decided_at == "2026-11-30T12:00:00+00:00"
    assert decided.reason == ("looks fine" if output == "looks fine" else None)


def _config() -> dict[str, Any]:
    return {
        "run_id": "r",
        "dataset": "s3://b/k.csv",
        "target": None,
        "problem_type": None,
        "model_name": "iris",
        "quality_threshold": None,
        "hyperparameters": {},
        "test_size": 0.2,
        "validation_size": 0.2,
        "seed": 1,
        "endpoint_poll_seconds": 1,
        "data_bucket": "b",
        "training_job_name": "j",
        "sagemaker_model_name": "j",
        "endpoint_config_name": "j",
        "endpoint_name": "e",
        "raw_prefix": "s3://b/raw/r/",
        "processed_prefix": "s3://b/processed/r/",
        "models_prefix": "s3://b/models",
        "approval": "manual",
        "approval_timeout_seconds": 60,
    }


def test_a_version_approved_after_a_newer_one_was_is_superseded_under_the_lease(
    aws: FakeAws, state: dict[str, Any]
) -> None:
    """v1 waits for approval; meanwhile another run registers and deploys v2. Deploying v1 now would leave
    the endpoint serving an older version than the champion (the newest approved): it is superseded."""
    ask(aws, state, "token-1", Topic())
    registry(aws).register_model(champion_record("iris", "f1_macro", 0.5, execution="meanwhile"))
    evaluation = EvaluationResult.model_validate({**state["evaluation"], "approval": {"decided_by": "alice"}})
    config = RunConfig.model_validate(state["config"])

    answer = deploy_lease.acquire_deploy_lease(config, ARN.format("run-1"), registry(aws), evaluation)

    assert answer.superseded and answer.evaluation is not None and not answer.evaluation.passed
    assert answer.evaluation.reason.startswith("superseded while waiting for approval: v2 was approved after v1")
    assert registry(aws).deploy_lease("iris") is None
    # RegisterRejected then rejects v1, keeping who approved it
    settle(aws, {**state, "evaluation": answer.evaluation.model_dump(mode="json")}, "rejected", {"decided_by": "alice"})
    record = registry(aws).get("iris", 1)
    assert record is not None and record.status == "rejected" and record.approval is not None
    assert record.approval.status == "approved" and record.approval.decided_by == "alice"
    assert record.gate_reason is not None and record.gate_reason.startswith("superseded while waiting for approval")


def test_without_approval_a_newer_champion_is_decided_by_the_metrics_alone(aws: FakeAws, state: dict[str, Any]) -> None:
    registry(aws).register_model(champion_record("iris", "f1_macro", 0.5, execution="meanwhile"))
    config = RunConfig.model_validate({**state["config"], "approval": "none"})
    evaluation = EvaluationResult.model_validate(state["evaluation"])
    answer = deploy_lease.acquire_deploy_lease(config, ARN.format("run-1"), registry(aws), evaluation)
    assert not answer.superseded


@pytest.mark.parametrize(
    ("failed_state", "outcome", "reason"),
    [
        ("RequestApproval", None, "rejected: the run failed in RequestApproval with X while the model waited"),
        ("CreateModel", {"decided_by": "alice"}, "rejected: the run failed in CreateModel with X after the approval"),
    ],
)
def test_record_failure_rejects_a_version_its_run_left_waiting(
    aws: FakeAws, state: dict[str, Any], failed_state: str, outcome: Any, reason: str
) -> None:
    ask(aws, state, "token-1", Topic())
    failure = {"state": failed_state, "error": "X", "cause": "boom"}
    evaluation = {**state["evaluation"], "approval": outcome}
    record_failure(
        {
            "failure": failure,
            "state": {**state, "evaluation": evaluation, "failure": failure},
            "execution_arn": ARN.format("run-1"),
            "execution_name": "run-1",
        },
        runs=runs(aws),
        registry=lambda: registry(aws),
        endpoints=lambda: None,
    )
    [record] = registry(aws).versions("iris")
    assert record.status == "rejected" and record.gate_reason is not None and record.gate_reason.startswith(reason)
    assert record.approval is not None and record.approval.status == ("approved" if outcome else "rejected")
    assert registry(aws).approval_token("iris", 1) is None
    run = runs(aws).get_run("run-1")
    assert run and run["status"] == "FAILED" and run["approval"]["status"] == record.approval.status


def test_a_version_no_longer_pending_keeps_its_token_request_refused(aws: FakeAws, state: dict[str, Any]) -> None:
    ask(aws, state, "token-1", Topic())
    settle(aws, state, "rejected", {"Error": "ModelRejected", "Cause": "no"})
    with pytest.raises(ApprovalStateError, match="is rejected: it cannot wait for approval again"):
        ask(aws, state, "token-2", Topic())
    item = aws.dynamodb.get_item(TableName=aws.registry_table, Key={"model_name": {"S": "iris"}, "version": {"N": "1"}})
    assert APPROVAL_TOKEN not in item["Item"]


def test_settling_with_a_stale_token_writes_nothing(aws: FakeAws, state: dict[str, Any]) -> None:
    """What `stepml approve` does for a run that ended while waiting: only if the run still waits on that token."""
    ask(aws, state, "token-1", Topic())
    ask(aws, state, "token-2", Topic())  # a retry replaced the token
    assert registry(aws).settle_approval("iris", 1, "rejected", {"gate_reason": "x"}, task_token="token-1") is None
    settled = registry(aws).settle_approval("iris", 1, "rejected", {"gate_reason": "x"}, task_token="token-2")
    assert settled is not None and settled.status == "rejected" and settled.gate_reason == "x"


@pytest.mark.usefixtures("metrics_namespace")
def test_the_register_function_serves_request_approval(
    aws: FakeAws, state: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    event = {key: state[key] for key in ("config", "ingest", "data", "prep", "training", "evaluation")}
    event |= {"action": "request_approval", "execution_arn": ARN.format("run-1"), "task_token": "t"}
    with pytest.raises(ConfigurationError, match="NOTIFICATION_TOPIC_ARN"):
        register_app.lambda_handler(event, None)
    topic = Topic()
    monkeypatch.setenv("NOTIFICATION_TOPIC_ARN", topic.arn)
    answer = approval.ApprovalRequest.model_validate(register_app.lambda_handler(event, None))
    assert answer.version == 1 and registry(aws).approval_token("iris", 1) == "t"
    assert len(topic.messages()) == 1


def test_a_timeout_before_the_request_was_recorded_still_records_the_timeout(
    aws: FakeAws, state: dict[str, Any]
) -> None:
    """On a busy machine a short approval timeout can fire before RequestApproval's function has written the
    pending version: RegisterRejected then writes the version itself, with the timeout, not the gate's pass."""
    settle(aws, state, "rejected", {"Error": "States.Timeout", "Cause": ""})
    [record] = registry(aws).versions("iris")
    assert record.status == "rejected" and record.execution_arn == ARN.format("run-1")
    assert record.approval is not None and record.approval.timed_out and record.approval.status == "rejected"
    assert record.gate_reason is not None and record.gate_reason.startswith("rejected: approval timed out after 600 s")
    # the function, running late, finds its execution's version decided: it neither asks nor notifies
    topic = Topic()
    with pytest.raises(ApprovalStateError, match="cannot wait for approval again"):
        ask(aws, state, "token-late", topic)
    assert topic.messages() == [] and len(registry(aws).versions("iris")) == 1
