"""``stepml resume RUN``: run a failed run again under a new name, the steps it finished taken from the step cache.

The new execution gets the failed one's input (DescribeExecution's ``input``) plus ``resume_of`` (the run it
resumes, recorded in its run record) and ``no_cache: false`` (a resume is the cache's use, whatever the failed
run said). Preprocess, Train and Evaluate results the failed run stored are found by their keys like any other
run's; the rest runs again.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any, TextIO

from stepml.targets import Target, TargetError

# Step Functions execution names are 1-80 characters.
EXECUTION_NAME_MAX = 80
_RESUME_SUFFIX = re.compile(r"-resume-\d+$")
_RESUMABLE = {"FAILED", "TIMED_OUT", "ABORTED"}


class ResumeError(TargetError):
    """The run cannot be resumed; the message (one line) says why and what to do instead."""


def resume_name(run: str, attempt: int) -> str:
    """``<run>-resume-<attempt>`` within 80 characters; resuming a resume counts on (``x-resume-2``, not
    ``x-resume-1-resume-1``)."""
    base = _RESUME_SUFFIX.sub("", run)
    suffix = f"-resume-{attempt}"
    return base[: EXECUTION_NAME_MAX - len(suffix)].rstrip("-_") + suffix


def resumed_input(execution_input: dict[str, Any], run: str) -> dict[str, Any]:
    """The failed run's input, marked as resuming ``run``, with the step cache on."""
    return {**execution_input, "resume_of": run, "no_cache": False}


def refusal(run: str, status: str) -> str | None:
    """Why a run in ``status`` cannot be resumed (None: it can)."""
    if status == "SUCCEEDED":
        return f"run {run} succeeded: there is nothing to resume (start a new run with `stepml start`)"
    if status in {"RUNNING", "PENDING_REDRIVE"}:
        return f"run {run} is still running: follow it with `stepml watch {run}`"
    if status not in _RESUMABLE:
        return f"run {run} is {status}: only a FAILED, TIMED_OUT or ABORTED run can be resumed"
    return None


def failed_state(sfn: Any, arn: str, description: dict[str, Any]) -> str:
    """The state the run failed in (what RecordFailure recorded; else the last state it entered)."""
    from stepml.progress import HistoryReader, failure_details

    reader = HistoryReader()
    pages = sfn.get_paginator("get_execution_history").paginate(executionArn=arn)
    reader.feed([event for page in pages for event in page["events"]])
    state = failure_details(reader, description).get("state")
    if state:
        return str(state)
    return reader.visits[-1].name if reader.visits else "?"


def check_dataset(target: Target, run: str, dataset: Any) -> None:
    """The failed run's dataset must still be where its input says (``stepml run`` staged it under
    datasets/<run>/ in the target's bucket): ResumeError when it is gone."""
    if not isinstance(dataset, str) or not dataset.startswith("s3://"):
        return
    from botocore.exceptions import ClientError

    bucket, _, key = dataset.removeprefix("s3://").partition("/")
    try:
        target.client("s3").head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in {"404", "NoSuchKey", "NotFound"}:
            raise  # no permission to look, say: the execution itself will tell
        raise ResumeError(
            f"run {run}'s dataset {dataset} no longer exists (deleted since the run): it cannot be resumed; "
            "start a new run with `stepml start --data FILE`"
        ) from error


def free_name(target: Target, run: str) -> str:
    """The first ``<run>-resume-<n>`` no execution has (Step Functions keeps ended names for 90 days)."""
    from stepml.remote import earlier_execution

    attempt = 1
    while earlier_execution(target, resume_name(run, attempt)) is not None:
        attempt += 1
    return resume_name(run, attempt)


def resume(target: Target, run_or_arn: str, out: TextIO | None, note: TextIO) -> tuple[Any, str, str]:
    """Start the resume of a failed run and follow it; (outcome, the resumed run's name, its failed state)."""
    from stepml.remote import check_name, execution_arn
    from stepml.session import start_and_follow

    sfn = target.client("stepfunctions")
    arn = execution_arn(target, run_or_arn)
    try:
        description = sfn.describe_execution(executionArn=arn)
    except sfn.exceptions.ExecutionDoesNotExist as error:
        raise ResumeError(f"no run {run_or_arn!r} on the {target.name} target; see `stepml runs`") from error
    run = str(description.get("name") or arn.rsplit(":", 1)[-1])
    why_not = refusal(run, description["status"])
    if why_not:
        raise ResumeError(why_not)
    execution_input = json.loads(description.get("input") or "{}")
    if not isinstance(execution_input, dict):
        raise ResumeError(f"run {run}'s input is not a JSON object: it cannot be resumed")
    check_dataset(target, run, execution_input.get("dataset"))
    state = failed_state(sfn, arn, description)
    name = free_name(target, run)
    new_input = resumed_input(execution_input, run)
    check_name(target, name, new_input)
    print(f"Resuming run {run} (failed at {state}) as {name}: steps it finished are reused", file=note, flush=True)
    # a resumed run with manual approval may wait for a decision: say so even under --json (on ``note``)
    waits = out is None and new_input.get("approval") == "manual"
    outcome, _ = start_and_follow(sfn, target.outputs.start_arn, name, new_input, out, notices=note if waits else None)
    return outcome, run, state


def cmd_resume(args: argparse.Namespace, out: TextIO) -> int:
    """Resume a failed run: start its input again under a new name, reusing the steps it finished."""
    import sys

    from stepml.cli import _open_target
    from stepml.errors import CliError
    from stepml.project import project_layout
    from stepml.remote import print_outcome

    with _open_target(args, project_layout()) as target:
        try:
            outcome, run, state = resume(target, args.run, None if args.json else out, sys.stderr if args.json else out)
        except TargetError as error:
            raise CliError(str(error)) from error
    if args.json:
        print(json.dumps({**outcome.to_json(), "resume_of": run, "resumed_from_state": state}, default=str), file=out)
        return 0 if outcome.status == "SUCCEEDED" else 1
    return print_outcome(outcome, False, out)


def add_parser(subparsers: Any, target_options: Any) -> None:
    """Add ``stepml resume`` to the CLI's subcommands (``target_options`` adds --target and the stack options)."""
    parser = subparsers.add_parser(
        "resume", help="run a failed run again under a new name, reusing the steps it finished (step cache)"
    )
    target_options(parser)
    parser.add_argument("run", help="the failed run: its run id (execution name) or execution ARN")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(func=cmd_resume)
