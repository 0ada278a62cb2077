"""``stepml approve MODEL VERSION`` and ``stepml reject MODEL VERSION``: decide on a model that waits for manual
approval, on any target (docs/approval.md).

The version's run waits on a task token (its RequestApproval state, ``lambda:invoke.waitForTaskToken``), kept
on the registry item. These commands read it through the target's DynamoDB client and send the decision
through the target's Step Functions client, as ``aws stepfunctions send-task-success|send-task-failure``
would: SendTaskSuccess with the decision as output, or SendTaskFailure with error ``ModelRejected`` and the
decision as cause (JSON: decided_by, decided_at, reason). Who decided is the caller's identity: STS
GetCallerIdentity's ARN on AWS, the local user elsewhere (local targets take any credentials).
"""

from __future__ import annotations

import argparse
import getpass
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from stepml.targets import Target, TargetError

# What Step Functions answers for a token nothing waits on any more: AWS says TaskTimedOut (the task timed
# out, or its execution ended), the local AWS (moto) InvalidToken, TaskDoesNotExist for a task it forgot.
NO_LONGER_WAITING = frozenset({"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"})
_RESUMABLE = {"FAILED", "TIMED_OUT", "ABORTED"}


class ApprovalCommandError(TargetError):
    """The decision cannot be sent; the message says why and what to do instead."""


@dataclass(frozen=True)
class Decision:
    """A decision sent to a waiting run (what ``--json`` prints)."""

    model_name: str
    version: int
    decision: str  # approved | rejected
    decided_by: str
    decided_at: str
    reason: str | None
    execution_arn: str


def caller_identity(target: Target) -> str:
    """Who is deciding: the AWS caller's ARN on AWS; the local user on local targets, whose credentials are
    made up (``testing``), so STS would only name a fake account's user."""
    if target.name == "aws":
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return str(target.client("sts").get_caller_identity()["Arn"])
        except (BotoCoreError, ClientError) as error:
            raise ApprovalCommandError(
                f"cannot tell who you are (STS GetCallerIdentity: {error}); check your AWS credentials"
            ) from error
    return getpass.getuser()


def registry_of(target: Target) -> Any:
    from pipeline_core.aws.registry import ModelRegistry

    return ModelRegistry(target.outputs.registry_table, target.client("dynamodb"))


def not_pending(record: Any) -> str:
    """Why ``record`` (a RegistryRecord) cannot be approved or rejected: what happened to it instead."""
    approval = record.approval
    name = f"{record.model_name} v{record.version}"
    if approval is None:
        return f"{name} is {record.status} and never waited for approval (its run had approval 'none')"
    if approval.timed_out:
        return f"{name} is {record.status}: nobody decided by {approval.deadline} (the approval timed out)"
    if approval.status in ("approved", "rejected"):
        who = approval.decided_by or "someone who did not say who"
        said = f": {approval.reason}" if approval.reason else ""
        detail = f"{approval.status} by {who} at {approval.decided_at}{said}"
        if approval.status != record.status:
            detail += f"; {record.gate_reason}"
        return f"{name} is {record.status}, no longer pending approval ({detail})"
    return f"{name} is {record.status}, not pending approval ({record.gate_reason or 'no reason recorded'})"


def pending_version(registry: Any, model_name: str, version: int) -> Any:
    """The registry's record of ``model_name`` ``version`` if it waits for approval; ApprovalCommandError
    naming what is there otherwise (no such model, no such version, a version already decided)."""
    record = registry.get(model_name, version)
    if record is None:
        versions = sorted(r.version for r in registry.versions(model_name))
        if not versions:
            models = sorted({r.model_name for r in registry.versions()})
            known = f" (models: {', '.join(models)})" if models else " (the registry is empty)"
            raise ApprovalCommandError(f"no model {model_name!r} in the registry{known}; see `stepml models`")
        pending = [r.version for r in registry.versions(model_name) if r.status == "pending_approval"]
        waiting = f"; waiting for approval: {', '.join(f'v{v}' for v in pending)}" if pending else ""
        have = f"version {versions[0]}" if len(versions) == 1 else f"versions {versions[0]}-{versions[-1]}"
        raise ApprovalCommandError(
            f"{model_name} has no version {version} ({have}{waiting}); see `stepml models --model {model_name}`"
        )
    if record.status != "pending_approval":
        raise ApprovalCommandError(not_pending(record))
    return record


def _execution_status(target: Target, execution_arn: str) -> str:
    sfn = target.client("stepfunctions")
    try:
        return str(sfn.describe_execution(executionArn=execution_arn)["status"])
    except sfn.exceptions.ExecutionDoesNotExist:
        return "gone"


def no_longer_waiting(target: Target, registry: Any, record: Any, token: str, code: str, verb: str) -> str:
    """Why a decision found nothing waiting for it; a version whose run ended without it is rejected here
    (nothing else would ever settle it: the run's own Catch never ran)."""
    from pipeline_core.stages.approval import iso

    run = record.execution_arn.rsplit(":", 1)[-1]
    status = _execution_status(target, record.execution_arn)
    head = f"{record.model_name} v{record.version} cannot be {verb}: Step Functions answered {code}"
    if status == "RUNNING":
        return (
            f"{head}: its run {run} is running but no longer waits on the token the registry held: the approval "
            "timed out just now (the run records that itself), or RequestApproval was retried and waits on a new "
            f"token (try again in a few seconds); see `stepml watch {run}` and "
            f"`stepml models --model {record.model_name}`"
        )
    now = iso(datetime.now(UTC))
    approval = record.approval.model_dump(mode="json") if record.approval else {}
    reason = f"its run {run} ended ({status}) before anyone decided"
    settled = registry.settle_approval(
        record.model_name,
        record.version,
        "rejected",
        {
            "approval": {**approval, "status": "rejected", "decided_at": now, "reason": reason},
            "gate_reason": f"rejected: {reason}",
        },
        task_token=token,
    )
    if settled is not None and settled.approval is not None:
        from pipeline_core.aws.runs import RunLog

        RunLog(target.outputs.runs_table, target.client("dynamodb")).update_run(
            run, approval=settled.approval.model_dump(mode="json"), registry_status="rejected", gate_reason=reason
        )
    marked = "; the version is now marked rejected" if settled is not None else ""
    again = f" (`stepml resume {run}` reuses the steps it finished)" if status in _RESUMABLE else ""
    return f"{head}: {reason}{marked}. Start a new run to decide on this model again{again}"


def decide(target: Target, model_name: str, version: int, approve: bool, reason: str | None) -> Decision:
    """Send the decision on a pending version to the run that waits for it."""
    from botocore.exceptions import ClientError
    from pipeline_core.errors import ModelRejected
    from pipeline_core.stages.approval import iso

    registry = registry_of(target)
    record = pending_version(registry, model_name, version)
    token = registry.approval_token(model_name, version)
    if token is None:
        raise ApprovalCommandError(
            f"{model_name} v{version} is pending_approval but holds no task token: its run has not finished "
            "asking for approval yet; try again in a few seconds"
        )
    decision = Decision(
        model_name=model_name,
        version=version,
        decision="approved" if approve else "rejected",
        decided_by=caller_identity(target),
        decided_at=iso(datetime.now(UTC)),
        reason=reason,
        execution_arn=record.execution_arn,
    )
    said = json.dumps({k: asdict(decision)[k] for k in ("decided_by", "decided_at", "reason", "model_name", "version")})
    sfn = target.client("stepfunctions")
    try:
        if approve:
            sfn.send_task_success(taskToken=token, output=said)
        else:
            sfn.send_task_failure(taskToken=token, error=ModelRejected.__name__, cause=said)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code not in NO_LONGER_WAITING:
            raise
        verb = "approved" if approve else "rejected"
        raise ApprovalCommandError(no_longer_waiting(target, registry, record, token, code, verb)) from error
    return decision


def _cmd(args: argparse.Namespace, out: TextIO, approve: bool) -> int:
    from stepml.cli import _open_target
    from stepml.errors import CliError
    from stepml.project import project_layout
    from stepml.remote import target_flags, watch

    with _open_target(args, project_layout()) as target:
        try:
            decision = decide(target, args.model, args.version, approve, args.reason)
            run = decision.execution_arn.rsplit(":", 1)[-1]
            if not args.json:
                what = "continues to deploy it" if approve else "registers it as rejected and ends"
                print(
                    f"{decision.decision.capitalize()} {decision.model_name} v{decision.version} "
                    f"(by {decision.decided_by}): run {run} {what}.",
                    file=out,
                    flush=True,
                )
            outcome = None
            if args.wait:
                outcome = watch(target, decision.execution_arn, None if args.json else out, target_flags(args))
        except TargetError as error:
            raise CliError(str(error)) from error
    if args.json:
        print(json.dumps({**asdict(decision), "run": outcome.to_json() if outcome else None}, default=str), file=out)
    elif outcome is not None:
        from stepml.session import print_summary

        print_summary(outcome, out)
    else:
        print(f"Follow it with `stepml watch {run}{target_flags(args)}`.", file=out)
    return 0 if outcome is None or outcome.status == "SUCCEEDED" else 1


def cmd_approve(args: argparse.Namespace, out: TextIO) -> int:
    """Approve a model version that waits for approval: its run goes on to deploy it."""
    return _cmd(args, out, approve=True)


def cmd_reject(args: argparse.Namespace, out: TextIO) -> int:
    """Reject a model version that waits for approval: its run registers it as rejected and ends."""
    return _cmd(args, out, approve=False)


def add_parser(subparsers: Any, target_options: Any) -> None:
    """Add ``stepml approve`` and ``stepml reject`` (``target_options`` adds --target and the stack options)."""
    for name, func, help_text in (
        ("approve", cmd_approve, "approve a model version waiting for approval: its run deploys it"),
        ("reject", cmd_reject, "reject a model version waiting for approval: its run registers it as rejected"),
    ):
        parser = subparsers.add_parser(name, help=help_text)
        target_options(parser)
        parser.add_argument("model", help="the model name (see `stepml models`)")
        parser.add_argument("version", type=int, help="the version that waits (STATUS pending_approval)")
        parser.add_argument("--reason", help="why (recorded with the version and shown by `stepml models`)")
        parser.add_argument("--wait", action="store_true", help="follow the run to its end and summarise it")
        parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
        parser.set_defaults(func=func)
