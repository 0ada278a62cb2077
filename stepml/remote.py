"""Commands that act on any target: start, watch, upload, runs, models."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from stepml.progress import HistoryReader, exited_line
from stepml.session import (
    RunOutcome,
    execution_name_for,
    name_taken,
    outcome_of,
    print_summary,
    start_and_follow,
    start_execution,
)
from stepml.targets import Target, TargetError
from stepml.uploads import upload_file


def execution_arn(target: Target, name_or_arn: str) -> str:
    """An execution ARN from a name (of the target's state machine) or an ARN."""
    if name_or_arn.startswith("arn:"):
        return name_or_arn
    return target.outputs.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name_or_arn}"


def _local_file(data: str) -> Path:
    path = Path(data).expanduser()
    if not path.is_file():
        raise TargetError(f"--data {path}: no such file")
    return path


def dataset_uri(target: Target, data: str, name: str, prefix: str = "datasets") -> str:
    """Where :func:`stage_dataset` puts ``data`` (an s3:// URI stays as it is)."""
    if data.startswith("s3://"):
        return data
    path = _local_file(data)
    key = f"{prefix}/{name}/{path.name}" if prefix != "incoming" else f"incoming/{path.name}"
    return f"s3://{target.outputs.data_bucket}/{key}"


def stage_dataset(target: Target, data: str, name: str, prefix: str = "datasets") -> str:
    """The dataset's S3 URI: an s3:// URI as is, a local file uploaded to the target's bucket."""
    uri = dataset_uri(target, data, name, prefix)
    if not data.startswith("s3://"):
        key = uri.removeprefix(f"s3://{target.outputs.data_bucket}/")
        upload_file(target.client("s3"), _local_file(data), target.outputs.data_bucket, key)
    return uri


def earlier_execution(target: Target, name: str) -> dict[str, Any] | None:
    """The target's execution named ``name``, if any (the local AWS also knows those of its earlier lives)."""
    sfn = target.client("stepfunctions")
    try:
        return dict(sfn.describe_execution(executionArn=execution_arn(target, name)))
    except sfn.exceptions.ExecutionDoesNotExist:
        return None


def check_name(target: Target, name: str, execution_input: dict[str, Any]) -> bool:
    """Whether starting ``name`` with ``execution_input`` returns a running execution (True) or starts a
    new one (False); ExecutionNameTaken, before anything is uploaded, when Step Functions would refuse it."""
    earlier = earlier_execution(target, name)
    if earlier is None:
        return False
    if earlier.get("status") == "RUNNING" and json.loads(earlier.get("input") or "null") == execution_input:
        return True
    status = earlier.get("status", "ended")
    raise name_taken(
        name, f"{status}, started {earlier.get('startDate')}" + (", with another input" if status == "RUNNING" else "")
    )


def start(
    target: Target, args: argparse.Namespace, execution_input: dict[str, Any], out: TextIO | None
) -> RunOutcome | str:
    """Start a run; follow it to the end unless ``--no-wait`` (then return its ARN).

    A name already used is refused before the dataset is uploaded (the upload would replace the file that
    run staged under the same key); starting again what is still running with the same input follows it.
    """
    name = args.name or execution_name_for(args.data)
    execution_input = {**execution_input, "dataset": dataset_uri(target, args.data, name)}
    if not check_name(target, name, execution_input):
        stage_dataset(target, args.data, name)
    sfn = target.client("stepfunctions")
    if getattr(args, "no_wait", False):
        return start_execution(sfn, target.outputs.start_arn, name, execution_input)
    # with --json nothing is printed while the run goes, but a wait for approval must be said (stderr)
    waits = out is None and execution_input.get("approval") == "manual"
    outcome, _ = start_and_follow(
        sfn,
        target.outputs.start_arn,
        name,
        execution_input,
        out,
        notices=sys.stderr if waits else None,
        target_flags=target_flags(args),
    )
    return outcome


def target_flags(args: argparse.Namespace) -> str:
    """The options that point another stepml command at the same target (for the commands a notice prints)."""
    flags = ""
    if getattr(args, "target", "embedded") not in (None, "embedded"):
        flags += f" --target {args.target}"
    for option in ("stack_name", "endpoint_url"):
        if getattr(args, option, None):
            flags += f" --{option.replace('_', '-')} {getattr(args, option)}"
    return flags


def watch(target: Target, name_or_arn: str, out: TextIO | None, flags: str = "") -> RunOutcome:
    """Follow an execution (live, or replayed if it already ended) and summarise it; ``flags`` point the
    approve/reject commands a wait for approval prints at this target."""
    from stepml.progress import follow

    arn = execution_arn(target, name_or_arn)
    try:
        description, reader = follow(target.client("stepfunctions"), arn, out, target_flags=flags)
    except target.client("stepfunctions").exceptions.ExecutionDoesNotExist as error:
        raise TargetError(f"no execution {name_or_arn!r} on the {target.name} target") from error
    return outcome_of(description, reader)


def replay(record: dict[str, Any], out: TextIO | None) -> RunOutcome:
    """Summarise a stored execution record (description + history) as ``watch`` would."""
    from datetime import datetime

    def parse(value: Any) -> Any:
        return datetime.fromisoformat(value) if isinstance(value, str) else value

    events = [{**e, "timestamp": parse(e["timestamp"])} for e in record["events"]]
    reader = HistoryReader()
    for change, visit in reader.feed(events):
        if out is not None and change == "exited" and not visit.bookkeeping:
            print(exited_line(visit), file=out)
    description = {**record, "startDate": parse(record["startDate"]), "stopDate": parse(record.get("stopDate"))}
    return outcome_of(description, reader)


def wait_for_execution(target: Target, arn: str, timeout: float = 30) -> bool:
    """Wait until an execution exists (an upload starts it asynchronously)."""
    sfn = target.client("stepfunctions")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            sfn.describe_execution(executionArn=arn)
            return True
        except sfn.exceptions.ExecutionDoesNotExist:
            time.sleep(0.1)
    return False


def upload(target: Target, path: Path, out: TextIO, wait: bool) -> RunOutcome | str:
    """Upload under incoming/ (which starts a run through the S3 trigger) and follow that run."""
    from pipeline_core.stages.start_pipeline import execution_name, ignore_reason

    if not path.is_file():
        raise TargetError(f"{path}: no such file")
    key = f"incoming/{path.name}"
    bucket = target.outputs.data_bucket
    reason = ignore_reason(key, path.stat().st_size)
    if reason:
        raise TargetError(f"{path.name} would not start a run: {reason}")
    s3 = target.client("s3")
    upload_file(s3, path, bucket, key)
    # the stored object's VersionId and ETag, as S3's "Object Created" event reports them to the trigger (a
    # multipart upload's ETag is not the content's MD5); another upload of the key in between would be the one read
    stored = s3.head_object(Bucket=bucket, Key=key)
    print(f"Uploaded s3://{bucket}/{key}", file=out, flush=True)
    name = execution_name(bucket, key, stored.get("VersionId"), stored.get("ETag", "").strip('"'))
    arn = execution_arn(target, name)
    if not wait_for_execution(target, arn):
        raise TargetError(f"the upload started no execution {name} within 30 s: is the S3 trigger deployed?")
    print(f"The S3 trigger started {arn}", file=out, flush=True)
    return watch(target, arn, out) if wait else arn


def list_runs(target: Target) -> list[dict[str, Any]]:
    """Every execution of the state machine, with the definition version its run record names.

    The executions are listed by the unqualified ARN: listing by the alias would leave out runs started
    otherwise (the console, an older stack). The version comes from the runs table (Ingest writes it):
    None for a run that failed before Ingest or was recorded before versions were; so does the rollout.
    """
    from pipeline_core.aws.runs import RunLog

    sfn = target.client("stepfunctions")
    records = {str(r["run_id"]): r for r in RunLog(target.outputs.runs_table, target.client("dynamodb")).runs()}
    rows = []
    for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=target.outputs.state_machine_arn):
        for e in page["executions"]:
            stop = e.get("stopDate")
            rows.append(
                {
                    "name": e["name"],
                    "status": e["status"],
                    "started": str(e["startDate"]),
                    "seconds": f"{(stop - e['startDate']).total_seconds():.1f}" if stop else "-",
                    "execution_arn": e["executionArn"],
                    "definition_version": records.get(e["name"], {}).get("definition_version"),
                    # how its endpoint update's rollout ended (RolloutRecord), when it had one
                    "rollout": records.get(e["name"], {}).get("rollout"),
                    "approval": approval_status(records.get(e["name"], {}).get("approval")),
                }
            )
    return rows


def approval_status(approval: Any) -> str | None:
    """A run record's approval in one word: pending, approved, rejected or timed_out (None: none asked)."""
    if not isinstance(approval, dict) or not approval.get("status"):
        return None
    return "timed_out" if approval.get("timed_out") else str(approval["status"])


def list_models(target: Target) -> list[Any]:
    from pipeline_core.aws.registry import ModelRegistry

    return ModelRegistry(target.outputs.registry_table, target.client("dynamodb")).versions()


def print_outcome(outcome: RunOutcome, as_json: bool, out: TextIO) -> int:
    if as_json:
        print(json.dumps(outcome.to_json(), default=str), file=out)
    else:
        print_summary(outcome, out)
    return 0 if outcome.status == "SUCCEEDED" else 1
