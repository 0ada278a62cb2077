"""``stepml predict``: score a whole file with a registered model through the batch scoring state machine.

The file is staged in the stack's bucket (``batch/<execution>/input/``), the BatchScoring state machine scores it
(PrepareBatch -> Transform, a SageMaker Batch Transform job -> AssembleBatch; docs/batch.md) while this command
shows its states and the transform's progress, and the scored file is delivered to ``--out``: a local file is
written whole or not at all (downloaded beside it, then renamed over it), an ``s3://`` destination is a copy
made with the caller's own credentials. The input is never modified; a failed run delivers nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from stepml.targets import Target, TargetError
from stepml.uploads import upload_file

# Step Functions execution names are 1-80 characters.
EXECUTION_NAME_MAX = 80
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class PredictError(TargetError):
    """The file cannot be scored as asked; the message says why and what to do."""


@dataclass
class PredictOutcome:
    """What ``stepml predict --json`` prints as its last line."""

    execution_arn: str
    status: str
    seconds: float
    output: str | None = None
    output_uri: str | None = None
    output_format: str | None = None
    rows: int | None = None
    rows_per_second: float | None = None
    columns: list[str] = field(default_factory=list)
    prediction_column: str | None = None
    model_name: str | None = None
    model_version: int | None = None
    transform_job_name: str | None = None
    failed_state: str | None = None
    error: str | None = None
    cause: str | None = None
    states: list[dict[str, Any]] = field(default_factory=list)


def output_format_for(out: str, requested: str | None) -> str | None:
    """The scored file's format: ``--format``, else ``--out``'s suffix (.csv, .parquet, .pq), else the input's."""
    if requested:
        return requested
    suffix = Path(out.split("?", 1)[0]).suffix.lower()
    return SUFFIXES.get(suffix)


def batch_name(data: str) -> str:
    """``batch-<file>-<UTC time>-<random>``, an execution name within 80 characters."""
    from stepml.session import execution_name_for

    return f"batch-{execution_name_for(data)}"[:EXECUTION_NAME_MAX]


def stage_input(target: Target, data: str, name: str) -> str:
    """The S3 URI the state machine reads: a local file is uploaded under ``batch/<name>/input/``; an object
    elsewhere is copied there (the state machine's role reads ``batch/`` only); one there already stays."""
    bucket = target.outputs.data_bucket
    s3 = target.client("s3")
    if data.startswith("s3://"):
        source_bucket, _, key = data.removeprefix("s3://").partition("/")
        if not key:
            raise PredictError(f"--data {data}: an S3 URI must name an object (s3://bucket/key)")
        if source_bucket == bucket and key.startswith("batch/"):
            return data
        destination = f"batch/{name}/input/{key.rsplit('/', 1)[-1]}"
        from botocore.exceptions import ClientError

        try:
            s3.copy_object(Bucket=bucket, Key=destination, CopySource={"Bucket": source_bucket, "Key": key})
        except ClientError as error:
            raise PredictError(f"--data {data}: cannot copy it into s3://{bucket}/batch/: {error}") from error
        return f"s3://{bucket}/{destination}"
    path = Path(data).expanduser()
    if not path.is_file():
        raise PredictError(f"--data {path}: no such file")
    key = f"batch/{name}/input/{path.name}"
    upload_file(s3, path, bucket, key)
    return f"s3://{bucket}/{key}"


def check_model(target: Target, model: str, version: int | None) -> tuple[str, int]:
    """The version that will score (the champion unless one is named), read before anything is uploaded: an
    unknown model or version fails at once, with the versions there are."""
    from pipeline_core.aws.registry import ModelRegistry
    from pipeline_core.errors import InputValidationError
    from pipeline_core.stages.batch_request import resolve_version

    registry = ModelRegistry(target.outputs.registry_table, target.client("dynamodb"))
    try:
        record = resolve_version(registry, model, version)
    except InputValidationError as error:
        raise PredictError(str(error)) from error
    return record.model_name, record.version


def deliver(target: Target, output_uri: str, out: str) -> str:
    """Put the scored file at ``out``: a local file (written beside it, then renamed over it, so ``out`` is the
    whole file or untouched) or an ``s3://`` URI (a server-side copy)."""
    bucket, _, key = output_uri.removeprefix("s3://").partition("/")
    s3 = target.client("s3")
    if out.startswith("s3://"):
        destination_bucket, _, destination_key = out.removeprefix("s3://").partition("/")
        s3.copy_object(Bucket=destination_bucket, Key=destination_key, CopySource={"Bucket": bucket, "Key": key})
        return out
    path = Path(out).expanduser().resolve()
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        with partial.open("wb") as handle:
            for chunk in body.iter_chunks(8 * 1024 * 1024):
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return str(path)


def _check_paths(data: str, out: str) -> None:
    if not out.startswith("s3://"):
        path = Path(out).expanduser().resolve()
        if not path.parent.is_dir():
            raise PredictError(f"--out {out}: the folder {path.parent} does not exist")
        if path.is_dir():
            raise PredictError(f"--out {out} is a folder: name the file to write")
        if not data.startswith("s3://") and Path(data).expanduser().resolve() == path:
            raise PredictError("--out is the --data file: write the scored file elsewhere (the input is never changed)")
    else:
        bucket, _, key = out.removeprefix("s3://").partition("/")
        if not bucket or not key or key.endswith("/"):
            raise PredictError(f"--out {out}: an S3 destination must name an object (s3://bucket/key)")


def predict(target: Target, args: argparse.Namespace, progress: TextIO | None) -> PredictOutcome:
    """Stage the file, run the batch scoring state machine, follow it, deliver the scored file."""
    from stepml.session import start_execution

    machine = target.outputs.batch_state_machine_arn
    if not machine:
        raise PredictError(
            f"the stack on the {target.name} target has no BatchScoringStateMachineArn output: it was deployed "
            "before batch scoring; deploy it again (docs/deploy.md)"
        )
    _check_paths(args.data, args.out)
    model_name, version = check_model(target, args.model, args.version)
    name = args.name or batch_name(args.data)
    request: dict[str, Any] = {"model_name": model_name, "model_version": version}
    output_format = output_format_for(args.out, args.format)
    if output_format:
        request["output_format"] = output_format
    if args.prediction_column:
        request["prediction_column"] = args.prediction_column
    if progress:
        print(f"stepml predict: {args.data} with {model_name} v{version} on the {target.name} target", file=progress)
    request["input"] = stage_input(target, args.data, name)
    sfn = target.client("stepfunctions")
    started = time.monotonic()
    arn = start_execution(sfn, machine, name, request)
    if progress:
        print(f"Started {arn}", file=progress, flush=True)
    description, reader = follow_batch(target, arn, progress)
    outcome = outcome_of(target, args, description, reader, time.monotonic() - started)
    if outcome.cause and not args.data.startswith("s3://"):
        # the state machine names the copy it read; the user knows the file by the name they gave
        outcome.cause = outcome.cause.replace(request["input"], args.data)
    return outcome


def follow_batch(target: Target, arn: str, progress: TextIO | None) -> tuple[dict[str, Any], Any]:
    """Follow the execution to its end; while Transform runs, show the job's progress."""
    from stepml.batch_progress import TransformWatch
    from stepml.progress import StateVisit, follow

    watch: list[TransformWatch] = []

    def on_change(change: str, visit: StateVisit) -> None:
        if progress is None:
            return
        if change == "exited" and visit.name == "PrepareBatch" and visit.output:
            prep = json.loads(visit.output).get("prep") or {}
            if prep.get("rows"):
                watch.append(TransformWatch(target, prep["transform_job_name"], int(prep["rows"]), progress).start())
        elif change == "exited" and visit.name == "Transform":
            while watch:
                watch.pop().stop()

    try:
        return follow(target.client("stepfunctions"), arn, progress, poll_seconds=0.2, on_change=on_change)
    finally:
        while watch:
            watch.pop().stop()


def outcome_of(
    target: Target, args: argparse.Namespace, description: dict[str, Any], reader: Any, seconds: float
) -> PredictOutcome:
    """The outcome of the ended execution; on success the scored file is delivered to ``--out`` first."""
    from stepml.progress import readable_cause
    from stepml.session import state_json

    outcome = PredictOutcome(
        execution_arn=description["executionArn"],
        status=description["status"],
        seconds=round(seconds, 3),
        states=[state_json(v) for v in reader.visits],
    )
    if description["status"] != "SUCCEEDED":
        failed = [v.name for v in reader.visits if v.name.endswith("Failed") and v.name != "BatchFailed"]
        outcome.failed_state = failed[-1].removesuffix("Failed") if failed else None
        outcome.error = description.get("error")
        outcome.cause = readable_cause(description.get("cause"))
        return outcome
    result = json.loads(description.get("output") or "{}")
    outcome.output_uri = result.get("output_uri")
    outcome.output_format = result.get("output_format")
    outcome.rows = result.get("rows")
    outcome.columns = list(result.get("columns") or [])
    outcome.prediction_column = result.get("prediction_column")
    outcome.model_name = result.get("model_name")
    outcome.model_version = result.get("model_version")
    outcome.transform_job_name = result.get("transform_job_name")
    if outcome.output_uri:
        outcome.output = deliver(target, outcome.output_uri, args.out)
    if outcome.rows is not None and seconds > 0:
        outcome.rows_per_second = round(outcome.rows / seconds, 1)
    return outcome


def print_summary(outcome: PredictOutcome, out: TextIO) -> None:
    """The human summary at the end of ``stepml predict``."""
    print("", file=out)
    if outcome.status != "SUCCEEDED":
        print(f"Batch scoring {outcome.status} in {outcome.failed_state or '?'}: {outcome.error}", file=out)
        print(f"Cause       {outcome.cause}", file=out)
        print("Nothing was written to --out; the input is unchanged.", file=out)
        return
    rate = f" ({outcome.rows_per_second:,.0f} rows/s)" if outcome.rows_per_second else ""
    print(
        f"Scored      {outcome.rows:,} rows with {outcome.model_name} v{outcome.model_version} in "
        f"{outcome.seconds:.1f} s{rate}",
        file=out,
    )
    print(f"Output      {outcome.output} ({outcome.output_format})", file=out)
    print(f"Columns     {', '.join(outcome.columns)}", file=out)
    if outcome.transform_job_name:
        print(f"Transform   {outcome.transform_job_name}", file=out)


def cmd_predict(args: argparse.Namespace, out: TextIO) -> int:
    """Score a file with a registered model (the champion unless --version names one)."""
    from stepml.cli import _open_target
    from stepml.errors import CliError
    from stepml.project import project_layout

    progress = sys.stderr if args.json else out
    with _open_target(args, project_layout(), progress=sys.stderr) as target:
        try:
            outcome = predict(target, args, progress)
        except TargetError as error:
            raise CliError(str(error)) from error
    if args.json:
        print(json.dumps(asdict(outcome), default=str), file=out)
    else:
        print_summary(outcome, out)
    return 0 if outcome.status == "SUCCEEDED" else 1


def add_parser(subparsers: Any, target_options: Any) -> None:
    """Add ``stepml predict`` to the CLI's subcommands (``target_options`` adds --target and the stack options)."""
    parser = subparsers.add_parser(
        "predict",
        help="score a whole CSV or Parquet file with a registered model (batch transform): the input's columns "
        "plus the prediction, in input order",
    )
    target_options(parser)
    parser.add_argument("--model", required=True, help="registry model name (see `stepml models`)")
    parser.add_argument("--version", type=int, help="a registered version (default: the champion, newest approved)")
    parser.add_argument("--data", required=True, help="the CSV or Parquet file to score: a local path or s3:// URI")
    parser.add_argument("--out", required=True, help="where the scored file goes: a local path or s3:// URI")
    parser.add_argument(
        "--format",
        choices=["csv", "parquet"],
        help="the scored file's format (default: --out's suffix, else the input's)",
    )
    parser.add_argument("--prediction-column", help="name of the prediction column (default: prediction)")
    parser.add_argument("--name", help="execution name (default: batch-<file>-<time>-<random>)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(func=cmd_predict)
