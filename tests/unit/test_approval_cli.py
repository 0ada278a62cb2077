"""``stepml approve|reject``: which version may be decided, what the errors say, and who decides (against
moto's DynamoDB and STS; deciding itself runs against the embedded target in tests/integration/test_approval.py)."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from pipeline_core.aws.registry import ModelRegistry

from stepml.approval_commands import ApprovalCommandError, caller_identity, pending_version
from stepml.targets import StackOutputs
from tests.conftest import REGION, FakeAws
from tests.unit.test_evaluate import champion_record


@dataclass
class MotoTarget:
    name: str
    outputs: StackOutputs

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)


def _registry(aws: FakeAws) -> ModelRegistry:
    return ModelRegistry(aws.registry_table, aws.dynamodb)


def _version(aws: FakeAws, model: str, status: str, approval: dict[str, Any] | None = None, **extra: Any) -> None:
    record = {**champion_record(model, "f1_macro", 0.9, execution=f"{model}-{status}"), "status": status, **extra}
    if approval is not None:
        record["approval"] = {
            "requested_at": "2026-11-30T12:00:00+00:00",
            "timeout_seconds": 60,
            "deadline": "2026-11-30T12:01:00+00:00",
            **approval,
        }
    _registry(aws).register_model(record)


def _refusal(aws: FakeAws, model: str, version: int) -> str:
    with pytest.raises(ApprovalCommandError) as refused:
        pending_version(_registry(aws), model, version)
    return str(refused.value)


def test_an_empty_registry_has_no_model_to_decide_on(aws: FakeAws) -> None:
    assert _refusal(aws, "iris", 1) == "no model 'iris' in the registry (the registry is empty); see `stepml models`"


def test_an_unknown_model_is_named_with_the_known_ones(aws: FakeAws) -> None:
    _version(aws, "penguins", "approved")
    assert _refusal(aws, "iris", 1) == "no model 'iris' in the registry (models: penguins); see `stepml models`"


def test_an_unknown_version_is_named_with_the_versions_and_those_waiting(aws: FakeAws) -> None:
    _version(aws, "iris", "approved")
    _version(aws, "iris", "pending_approval", {"status": "pending"})
    assert _refusal(aws, "iris", 9) == (
        "iris has no version 9 (versions 1-2; waiting for approval: v2); see `stepml models --model iris`"
    )
    assert pending_version(_registry(aws), "iris", 2).version == 2


@pytest.mark.parametrize(
    ("status", "approval", "gate_reason", "message"),
    [
        ("approved", None, None, "iris v1 is approved and never waited for approval (its run had approval 'none')"),
        (
            "approved",
            {"status": "approved", "decided_by": "alice", "decided_at": "2026-11-30T12:00:30+00:00", "reason": "ok"},
            None,
            "iris v1 is approved, no longer pending approval (approved by alice at 2026-11-30T12:00:30+00:00: ok)",
        ),
        (
            "rejected",
            {"status": "rejected", "decided_by": "bob", "decided_at": "2026-11-30T12:00:30+00:00"},
            None,
            "iris v1 is rejected, no longer pending approval (rejected by bob at 2026-11-30T12:00:30+00:00)",
        ),
        (
            "rejected",
            {"status": "rejected", "timed_out": True, "reason": "approval timed out after 60 s"},
            None,
            "iris v1 is rejected: nobody decided by 2026-11-30T12:01:00+00:00 (the approval timed out)",
        ),
        (
            "rejected",
            {"status": "approved", "decided_by": "alice", "decided_at": "2026-11-30T12:00:30+00:00"},
            "superseded while waiting for approval: v2 was approved after v1",
            "iris v1 is rejected, no longer pending approval (approved by alice at 2026-11-30T12:00:30+00:00; "
            "superseded while waiting for approval: v2 was approved after v1)",
        ),
    ],
    ids=["never-asked", "approved", "rejected", "timed-out", "approved-then-superseded"],
)
def test_a_decided_version_cannot_be_decided_again(
    aws: FakeAws, status: str, approval: dict[str, Any] | None, gate_reason: str | None, message: str
) -> None:
    _version(aws, "iris", status, approval, gate_reason=gate_reason)
    assert _refusal(aws, "iris", 1) == message


def test_who_decides_is_the_aws_caller_on_aws_and_the_local_user_elsewhere(aws: FakeAws) -> None:
    outputs = StackOutputs("arn:sm", aws.bucket, aws.registry_table, aws.runs_table)
    assert caller_identity(MotoTarget("aws", outputs)).startswith("arn:aws:sts::123456789012:")
    assert caller_identity(MotoTarget("embedded", outputs)) == getpass.getuser()
    assert caller_identity(MotoTarget("localstack", outputs)) == getpass.getuser()
