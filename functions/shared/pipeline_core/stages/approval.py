"""Manual approval: what a run with ``approval: "manual"`` asks for, and what the decision does to its version.

A model that passes the quality gate (QualityGate's second choice: a new model, at least as good as the
champion) goes to RequestApproval instead of CreateModel: a ``lambda:invoke.waitForTaskToken`` Task of the
RegisterModel function (``action: request_approval``, :func:`pipeline_core.stages.register.request_approval`)
registers the model as a ``pending_approval`` version, keeps the task token on it and publishes a notification
saying how to decide. The run then waits, holding nothing (no SageMaker model, no deploy lease), until:

* SendTaskSuccess (``stepml approve``): its output lands at ``$.evaluation.approval`` and the run goes on to
  CreateModel; Register turns the same version ``approved`` (:func:`settle_pending`);
* SendTaskFailure with error ``ModelRejected`` (``stepml reject``), or the state's timeout (``States.Timeout``,
  TimeoutSecondsPath ``$.config.approval_timeout_seconds``): the Catch puts ``{"Error", "Cause"}`` at
  ``$.evaluation.approval`` and goes to RegisterRejected, which turns the version ``rejected`` with who
  rejected it, when and why (or that nobody decided in time); the run succeeds, as a gate rejection does.

The decision's sender says who they are (``decided_by``) in the output or cause as JSON; a plain-text cause
is taken as the reason. Step Functions does not tell a task who sent its token: on AWS, CloudTrail records
the caller of SendTaskSuccess/SendTaskFailure.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.errors import ApprovalStateError, ModelRejected
from pipeline_core.models import (
    EXECUTION_TIMEOUT_SECONDS,
    ApprovalRecord,
    Contract,
    DataProfile,
    EvaluationResult,
    IngestResult,
    PreprocessResult,
    RegistryRecord,
    RolloutRecord,
    RunConfig,
    TrainingSummary,
)

ACTION = "request_approval"
TIMEOUT_ERROR = "States.Timeout"
REJECTED_ERROR = ModelRejected.__name__
# What the notification and the progress view show for sending a decision yourself (the token goes in place
# of TOKEN); SendTaskFailure's error must be ModelRejected for the run to register the rejection.
AWS_CLI_APPROVE = (
    "aws stepfunctions send-task-success --task-token TOKEN "
    """--task-output '{"decided_by": "YOUR NAME", "reason": "WHY"}'"""
)
AWS_CLI_REJECT = (
    f"aws stepfunctions send-task-failure --task-token TOKEN --error {REJECTED_ERROR} "
    """--cause '{"decided_by": "YOUR NAME", "reason": "WHY"}'"""
)


class ApprovalRequestEvent(BaseModel):
    """What the RequestApproval state passes as the Lambda's Payload (see its Parameters in the ASL)."""

    action: str
    config: RunConfig
    ingest: IngestResult
    data: DataProfile
    prep: PreprocessResult
    training: TrainingSummary
    evaluation: EvaluationResult
    execution_arn: str
    task_token: str = Field(min_length=1)
    # $$.Execution.StartTime: the run ends by then + the execution timeout, whatever the approval timeout says
    execution_started_at: str | None = None


class ApprovalRequest(Contract):
    """The function's answer to RequestApproval (the history's TaskSubmitted output shows it; the state's
    result is the decision, not this): which version waits, until when, and the commands that decide."""

    model_name: str
    version: int
    status: Literal["pending_approval"] = "pending_approval"
    execution_arn: str
    deadline: str
    timeout_seconds: int
    approve_command: str
    reject_command: str


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def pending_record(config: RunConfig, now: datetime, execution_started_at: str | None = None) -> ApprovalRecord:
    """The approval a run asks for now: pending until ``approval_timeout_seconds`` from now, or until the
    execution's own timeout if that comes first (then the execution times out, not the approval)."""
    deadline = now + timedelta(seconds=config.approval_timeout_seconds)
    started = _parse_time(execution_started_at)
    if started is not None:
        deadline = min(deadline, started + timedelta(seconds=EXECUTION_TIMEOUT_SECONDS))
    return ApprovalRecord(
        status="pending", requested_at=iso(now), timeout_seconds=config.approval_timeout_seconds, deadline=iso(deadline)
    )


def commands(model_name: str, version: int) -> tuple[str, str]:
    """The stepml commands that approve and reject ``model_name`` ``version``."""
    return (
        f"stepml approve {model_name} {version} --reason 'WHY'",
        f"stepml reject {model_name} {version} --reason 'WHY'",
    )


def notification(record: RegistryRecord, evaluation: EvaluationResult, task_token: str) -> tuple[str, str]:
    """The SNS subject and message that ask for a decision on ``record`` and say how to send it."""
    approval = record.approval
    deadline = approval.deadline if approval else "?"
    approve, reject = commands(record.model_name, record.version)
    run = record.execution_arn.rsplit(":", 1)[-1]
    subject = f"stepml: approve or reject {record.model_name} v{record.version}"
    lines = [
        f"Model {record.model_name} v{record.version} (run {run}) passed the quality gate and waits for approval "
        "before it is deployed.",
        f"Gate: {evaluation.reason}",
        f"Metrics: {', '.join(f'{k}={v:.4f}' for k, v in sorted(evaluation.metrics.items()))}",
        f"Report: {evaluation.report_uri}",
        "",
        f"Decide before {deadline}; without a decision by then the model is rejected and the run ends.",
        "",
        "With stepml (add --target aws or --target localstack, and --stack-name, as for the other commands):",
        f"  {approve}",
        f"  {reject}",
        "",
        "With the AWS CLI (states:SendTaskSuccess / states:SendTaskFailure; the error must be ModelRejected):",
        f"  {AWS_CLI_APPROVE.replace('TOKEN', repr(task_token))}",
        f"  {AWS_CLI_REJECT.replace('TOKEN', repr(task_token))}",
        "",
        f"Execution: {record.execution_arn}",
    ]
    return subject, "\n".join(lines)


def _said(text: Any) -> dict[str, Any]:
    """What a decision's sender said: a JSON object's fields, or plain text as the reason."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, str) or not text.strip():
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        return {"reason": text.strip()}
    if isinstance(parsed, dict):
        return parsed
    return {"reason": text.strip()}


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def decision(outcome: Any, pending: ApprovalRecord, now: datetime) -> ApprovalRecord:
    """The decision RequestApproval's outcome (``$.evaluation.approval``) carries, on top of the request.

    SendTaskSuccess's output (any JSON) is an approval; a Catch's ``{"Error": "States.Timeout"}`` a timeout;
    any other caught error (``ModelRejected``) a rejection, its cause saying who and why.
    """
    if isinstance(outcome, dict) and "Error" in outcome:
        if outcome.get("Error") == TIMEOUT_ERROR:
            return pending.model_copy(
                update={
                    "status": "rejected",
                    "timed_out": True,
                    "decided_at": iso(now),
                    "reason": f"approval timed out after {pending.timeout_seconds} s",
                }
            )
        said = _said(outcome.get("Cause"))
        status: Literal["approved", "rejected"] = "rejected"
    else:
        said = _said(outcome)
        status = "approved"
    return pending.model_copy(
        update={
            "status": status,
            "decided_by": _text(said.get("decided_by")),
            "decided_at": _text(said.get("decided_at")) or iso(now),
            "reason": _text(said.get("reason")),
        }
    )


def who(approval: ApprovalRecord) -> str:
    return approval.decided_by or "someone who did not say who (CloudTrail records the caller)"


def settled_reason(approval: ApprovalRecord, evaluation: EvaluationResult, superseded: bool) -> str:
    """The registry's gate_reason once the approval is decided: why the version is approved or rejected."""
    if approval.status == "approved":
        said = f": {approval.reason}" if approval.reason else ""
        decided = f"approved by {who(approval)} at {approval.decided_at}{said}"
        # superseded under the deploy lease after the approval: the gate's new reason says why
        return f"{evaluation.reason} ({decided})" if superseded else f"{evaluation.reason}; {decided}"
    if approval.timed_out:
        return (
            f"rejected: approval timed out after {approval.timeout_seconds} s (no decision by {approval.deadline}); "
            f"the gate had passed: {evaluation.reason}"
        )
    return (
        f"rejected by {who(approval)} at {approval.decided_at}: {approval.reason or 'no reason given'} "
        f"(the gate had passed: {evaluation.reason})"
    )


def unrecorded(
    config: RunConfig,
    evaluation: EvaluationResult,
    status: Literal["approved", "rejected"],
    now: datetime | None = None,
) -> tuple[ApprovalRecord, str] | None:
    """The decision and reason for a new version of a run whose RequestApproval ended before its function
    recorded the request (a timeout shorter than the invocation, on a busy machine); None for a run that asked
    for no approval. Its request time is unknown: the decision's time stands in for it.

    (Were the timeout to fire in the few milliseconds the function takes to write the pending version, both
    could write: that version would stay pending, and ``stepml approve|reject`` rejects it, its run ended.)
    """
    if evaluation.approval is None:
        return None
    moment = now or datetime.now(UTC)
    when = iso(moment)
    unknown = ApprovalRecord(
        status="pending", requested_at=when, timeout_seconds=config.approval_timeout_seconds, deadline=when
    )
    decided = decision(evaluation.approval, unknown, moment)
    return decided, settled_reason(decided, evaluation, status == "rejected" and decided.status == "approved")


def settle_pending(
    registry: ModelRegistry,
    record: RegistryRecord,
    status: Literal["approved", "rejected", "rolled_back"],
    config: RunConfig,
    evaluation: EvaluationResult,
    now: datetime | None = None,
    rollout: RolloutRecord | None = None,
) -> RegistryRecord:
    """Turn this run's pending_approval version into ``status`` (Register, RegisterRejected,
    RegisterRolledBack): the same version, with the decision, the reason, (deployed) the endpoint it was
    deployed to and (rolled back) how the rollout ended.

    A retried Register finds the version already settled and returns it. ApprovalStateError when the state
    machine and the decision disagree (Register after a rejection), which must not deploy silently.
    """
    moment = now or datetime.now(UTC)
    pending = record.approval or pending_record(config, moment)
    decided = decision(evaluation.approval, pending, moment)
    superseded = status == "rejected" and decided.status == "approved"
    if status != "rejected" and decided.status != "approved":
        raise ApprovalStateError(
            f"{record.model_name} v{record.version} was {decided.status}, yet the run reached Register to approve it"
        )
    deployed = status in ("approved", "rolled_back")
    fields = {
        "approval": decided.model_dump(mode="json"),
        "gate_reason": settled_reason(decided, evaluation, superseded),
        "endpoint_name": config.endpoint_name if deployed else None,
        "endpoint_config_name": config.endpoint_config_name if deployed else None,
        "rollout": rollout.model_dump(mode="json") if rollout else None,
    }
    settled = registry.settle_approval(record.model_name, record.version, status, fields)
    if settled is not None:
        return settled
    current = registry.get(record.model_name, record.version)
    if current is not None and current.status == status:
        return current  # a retried Register or RegisterRejected: this run settled it already
    raise ApprovalStateError(
        f"{record.model_name} v{record.version} is {current.status if current else 'gone'}, not pending_approval: "
        f"this run cannot register it as {status}"
    )


def close_after_failure(
    registry: ModelRegistry,
    model_name: str,
    execution_arn: str,
    failed_state: str,
    error: str,
    outcome: Any = None,
    now: datetime | None = None,
) -> RegistryRecord | None:
    """RecordFailure: the version this failed run left pending_approval becomes rejected (it will never be
    deployed, and nothing waits for a decision any more), with why; None when there is none.

    ``outcome`` is ``$.evaluation.approval`` when the run got that far: a run that failed after it was
    approved keeps the approval (who approved it) on a version rejected because the deployment failed.
    """
    versions = registry.versions(model_name)
    own = next((r for r in versions if r.execution_arn == execution_arn and r.status == "pending_approval"), None)
    if own is None:
        return None
    moment = now or datetime.now(UTC)
    pending = own.approval or ApprovalRecord(
        status="pending", requested_at=own.created_at, timeout_seconds=0, deadline=own.created_at
    )
    failed = f"the run failed in {failed_state} with {error}"
    if outcome is not None:
        decided = decision(outcome, pending, moment)
        reason = f"rejected: {failed} after the approval was decided ({decided.status})"
    else:
        decided = pending.model_copy(update={"status": "rejected", "decided_at": iso(moment), "reason": failed})
        reason = f"rejected: {failed} while the model waited for approval"
    fields = {"approval": decided.model_dump(mode="json"), "gate_reason": reason}
    return registry.settle_approval(model_name, own.version, "rejected", fields)
