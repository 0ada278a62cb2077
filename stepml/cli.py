"""The ``stepml`` command line."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from stepml.errors import CliError
from stepml.project import ProjectLayout, ProjectLayoutError, project_layout
from stepml.targets import TargetError


def _dataset_path(layout: ProjectLayout, data: str | None) -> Path:
    path = Path(data).expanduser() if data else layout.sample_data_dir / "iris.csv"
    if not path.is_file():
        raise CliError(f"--data {path}: no such file")
    return path.resolve()


def _options_input(args: argparse.Namespace, target_option: str) -> dict[str, Any]:
    from stepml.data_options import DataOptionError
    from stepml.rollout_commands import RolloutOptionError
    from stepml.run_input import options_input
    from stepml.trainers import TrainerError

    try:
        return options_input(args, target_option)
    except (DataOptionError, TrainerError, RolloutOptionError) as error:
        raise CliError(str(error)) from error


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    """Run the whole pipeline on the embedded target (the local AWS) and print what it produced."""
    from stepml.remote import check_name
    from stepml.run_input import trainer_fields
    from stepml.session import execution_name_for, print_summary, start_and_follow
    from stepml.targets import TargetError
    from stepml.uploads import upload_file

    layout = project_layout()
    dataset = _dataset_path(layout, args.data)
    name = args.name or execution_name_for(dataset)
    progress = None if args.json else out
    faults = _fault_plan(args)
    options = _options_input(args, "target")
    with _open_target(args, layout, progress=sys.stderr) as target:
        key = f"datasets/{name}/{dataset.name}"
        execution_input = {"dataset": f"s3://{target.outputs.data_bucket}/{key}", **options}
        preparing: list[threading.Thread] = []
        try:
            execution_input.update(trainer_fields(target, args))
            # before the upload, which would replace the file an earlier run with this name staged
            check_name(target, name, execution_input)
            if faults:
                target.control("POST", "/_stepml/faults", {"execution": name, "throws": faults.to_json()})
            upload_file(target.client("s3"), dataset, target.outputs.data_bucket, key)
            if progress:
                machine = target.outputs.state_machine_arn.rsplit(":", 1)[-1]
                print(f"stepml run on the embedded target: {dataset.name} → {machine}", file=out)
            cursor = target.control("GET", "/_stepml/invocations")["next"]
            # --json prints nothing while the run goes, but a wait for approval must be said (stderr)
            waits = args.json and execution_input.get("approval") == "manual"
            outcome, _ = start_and_follow(
                target.client("stepfunctions"),
                target.outputs.start_arn,
                name,
                execution_input,
                progress,
                on_started=lambda _arn: preparing.append(_prepare_results(target)),
                # the command ends this much after the execution, on average half of it; a DescribeExecution
                # costs the local AWS ~8 ms of CPU (AWS's own quota is not at stake: this is the embedded target)
                poll_seconds=0.1,
                notices=sys.stderr if waits else None,
            )
        except TargetError as error:
            raise CliError(str(error)) from error
        finally:
            for thread in preparing:  # no import left half done when the command ends
                thread.join()
        # the functions invoked while this run ran (those of runs alongside it too)
        outcome.invocations = target.control("GET", f"/_stepml/invocations?after={cursor}")["entries"]
        if outcome.status == "SUCCEEDED":
            _attach_registry_record(target, outcome)
            outcome.report_path = _download_report(target, layout, name, outcome.report_uri)
    if args.json:
        print(json.dumps(outcome.to_json(), default=str), file=out)
    else:
        print_summary(outcome, out)
    return 0 if outcome.status == "SUCCEEDED" else 1


def _fault_plan(args: argparse.Namespace) -> Any:
    if not args.inject_fault and not args.fault_config:
        return None
    from stepml.embedded.faults import FaultPlan, FaultSpecError

    try:
        plan = FaultPlan.from_specs(args.inject_fault or [])
        if args.fault_config:
            plan.merge(FaultPlan.from_file(Path(args.fault_config)))
    except FaultSpecError as error:
        raise CliError(str(error)) from error
    return plan


def _prepare_results(target: Any) -> threading.Thread:
    """While the execution runs (this command only waits for it), get ready to read what it produced: import
    the registry's code (its pydantic models take ~0.25 s) and build the DynamoDB and S3 clients, in a thread,
    so that the command ends soon after the execution does. A failure here only leaves the work for later."""

    def prepare() -> None:
        with contextlib.suppress(Exception):
            # At a low priority (Linux: this thread only): on a busy machine the execution comes first.
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
            import pipeline_core.aws.registry  # noqa: F401

            target.client("dynamodb")
            target.client("s3")

    thread = threading.Thread(target=prepare, name="stepml-prepare-results", daemon=True)
    thread.start()
    return thread


def _attach_registry_record(target: Any, outcome: Any) -> None:
    from pipeline_core.aws.registry import ModelRegistry

    if outcome.model_name and outcome.model_version:
        registry = ModelRegistry(target.outputs.registry_table, target.client("dynamodb"))
        record = registry.get(outcome.model_name, outcome.model_version)
        outcome.registry_record = record.model_dump(mode="json") if record else None


def _download_report(target: Any, layout: ProjectLayout, name: str, report_uri: str | None) -> str | None:
    """Copy the HTML report out of the embedded S3 so a browser can open it."""
    if not report_uri:
        return None
    bucket, key = report_uri.removeprefix("s3://").split("/", 1)
    path = layout.state_dir / "reports" / name / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(target.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    return str(path)


def cmd_runs(args: argparse.Namespace, out: TextIO) -> int:
    """List the executions on a target, newest first."""
    from stepml.remote import list_runs

    with _open_target(args, project_layout()) as target:
        rows = sorted(list_runs(target), key=lambda r: r["started"], reverse=True)
    return _print_runs(rows, args.json, out)


def _print_runs(rows: list[dict[str, Any]], as_json: bool, out: TextIO) -> int:
    from stepml.rollout_commands import rollout_cell

    if as_json:
        print(json.dumps(rows), file=out)
        return 0
    if not rows:
        print("No runs yet: start one with `stepml run`.", file=out)
        return 0
    # VERSION: the state machine version the run ran ("3" on AWS; "sha256:<12 hex>" where runs start unversioned)
    # APPROVAL: a run with manual approval, pending (it waits now), approved, rejected or timed out
    print(
        f"{'NAME':<48} {'STATUS':<10} {'VERSION':<19} {'SECONDS':>8}  {'APPROVAL':<10} {'STARTED':<32}  ROLLOUT",
        file=out,
    )
    for row in rows:
        version = row.get("definition_version") or "-"
        approval = row.get("approval") or "-"
        print(
            f"{row['name']:<48} {row['status']:<10} {version:<19} {row['seconds']:>8}  {approval:<10} "
            f"{row['started']:<32}  {rollout_cell(row.get('rollout'))}",
            file=out,
        )
    return 0


PROBLEM_SHORT = {"binary_classification": "binary", "multiclass_classification": "multiclass"}


def cmd_models(args: argparse.Namespace, out: TextIO) -> int:
    """List the model registry (every version, newest first)."""
    from stepml.remote import list_models
    from stepml.rollout_commands import rollout_cell

    with _open_target(args, project_layout()) as target:
        records = sorted(list_models(target), key=lambda r: (r.model_name, -r.version))
    if args.model:
        records = [r for r in records if r.model_name == args.model]
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in records]), file=out)
        return 0
    if not records:
        print("The registry is empty: run `stepml run` first.", file=out)
        return 0
    # a model is (name, target, problem type): the target and problem type say what each version predicts
    print(
        f"{'MODEL':<20} {'VER':>4} {'STATUS':<16} {'TARGET':<16} {'PROBLEM':<10} {'PRIMARY':<20} {'ENDPOINT':<28} "
        f"{'CREATED':<25}  {'ROLLOUT':<24}  GATE",
        file=out,
    )
    for r in records:
        primary = f"{r.primary_metric}={r.metrics.get(r.primary_metric, float('nan')):.4f}"
        endpoint = r.endpoint_name or "-"
        problem = PROBLEM_SHORT.get(r.problem_type, r.problem_type)
        rollout = rollout_cell(r.rollout.model_dump() if r.rollout else None)
        # the gate's reason last: it is long, and for a rejected version it is the one thing to read
        gate = r.gate_reason or "-"
        if r.status == "pending_approval" and r.approval:
            decide = f"stepml approve|reject {r.model_name} {r.version}"
            gate = f"waiting for approval until {r.approval.deadline} ({decide}); {gate}"
        print(
            f"{r.model_name:<20} {r.version:>4} {r.status:<16} {r.target:<16} {problem:<10} {primary:<20} "
            f"{endpoint:<28} {r.created_at:<25}  {rollout:<24}  {gate}",
            file=out,
        )
    return 0


@contextlib.contextmanager
def _open_target(args: argparse.Namespace, layout: ProjectLayout, progress: TextIO | None = None) -> Iterator[Any]:
    """The target a command acts on; the embedded one is the state directory's local AWS (started if need be)."""
    from stepml.targets import TargetError, embedded_target, remote_target

    try:
        if getattr(args, "target", "embedded") == "embedded" or args.command == "run":
            yield embedded_target(layout, progress or sys.stderr)
        else:
            yield remote_target(args.target, args.stack_name, args.endpoint_url)
    except TargetError as error:
        raise CliError(str(error)) from error


def cmd_start(args: argparse.Namespace, out: TextIO) -> int:
    """Start a run on a target and (unless --no-wait) follow it to the end."""
    from stepml.remote import print_outcome, start
    from stepml.run_input import trainer_fields

    layout = project_layout()
    args.data = args.data or str(layout.sample_data_dir / "iris.csv")
    execution_input = _options_input(args, "target_column")
    with _open_target(args, layout) as target:
        try:
            execution_input.update(trainer_fields(target, args))
        except TargetError as error:
            raise CliError(str(error)) from error
        result = start(target, args, execution_input, None if args.json else out)
        if isinstance(result, str):
            print(result, file=out)
            return 0
    return print_outcome(result, args.json, out)


def cmd_watch(args: argparse.Namespace, out: TextIO) -> int:
    """Follow an execution until it ends (or show how it ended) and summarise it."""
    from stepml.remote import print_outcome, target_flags, watch
    from stepml.targets import TargetError

    with _open_target(args, project_layout()) as target:
        try:
            outcome = watch(target, args.execution, None if args.json else out, target_flags(args))
        except TargetError as error:
            raise CliError(f"{error}; see `stepml runs`") from error
    return print_outcome(outcome, args.json, out)


def cmd_upload(args: argparse.Namespace, out: TextIO) -> int:
    """Upload a file under incoming/ so the S3 trigger starts a run, and follow that run."""
    from stepml.remote import print_outcome, upload

    layout = project_layout()
    with _open_target(args, layout) as target:
        result = upload(target, Path(args.file), out, wait=not args.no_wait)
        if isinstance(result, str):
            return 0
    return print_outcome(result, args.json, out)


def cmd_local_up(args: argparse.Namespace, out: TextIO) -> int:
    """Serve the local AWS for this state directory in the foreground (or start it in the background)."""
    from stepml.embedded.service import ensure_service, serve

    layout = project_layout()
    try:
        if args.background:
            info = ensure_service(layout, out)
            print(f"Local AWS serving {layout.state_dir} at {info.endpoint_url} (pid {info.pid})", file=out)
            return 0
        return serve(layout, args.port, out, background=args.background_child)
    except TargetError as error:
        raise CliError(str(error)) from error


def cmd_local_down(args: argparse.Namespace, out: TextIO) -> int:
    """Stop the local AWS of this state directory (its state is already on disk)."""
    from stepml.embedded.service import stop_service

    layout = project_layout()
    info = stop_service(layout)
    if info is None:
        print(f"No local AWS serves {layout.state_dir}.", file=out)
    else:
        print(f"Stopped the local AWS at {info.endpoint_url} (pid {info.pid}).", file=out)
    return 0


def cmd_local_status(args: argparse.Namespace, out: TextIO) -> int:
    """Say whether a local AWS serves this state directory, where, and what it keeps. Exit 1 when none does."""
    from stepml.embedded.service import control, running_service

    layout = project_layout()
    info = running_service(layout)
    if info is None:
        print(f"No local AWS serves {layout.state_dir} (any stepml command starts one).", file=out)
        return 1
    health = control(info, "GET", "/_stepml/health")
    if args.json:
        print(json.dumps({**health, "endpoint_url": info.endpoint_url, "background": info.background}), file=out)
        return 0
    usage = health.get("usage", {})
    print(
        f"Local AWS at {info.endpoint_url} (pid {info.pid}, {'background' if info.background else 'local up'})",
        file=out,
    )
    print(f"  state      {layout.state_dir}", file=out)
    print(
        f"  on disk    {_megabytes(sum(usage.values()))} MB ({_megabytes(usage.get('objects', 0))} MB of objects)",
        file=out,
    )
    print(f"  running    {', '.join(health.get('running_executions') or []) or 'no executions'}", file=out)
    for note in health.get("notes") or []:
        print(f"  note       {note}", file=out)
    return 0


def cmd_local_gc(args: argparse.Namespace, out: TextIO) -> int:
    """Plan (or, with --yes, do) the removal of old runs' artifacts from the local AWS; records stay."""
    from datetime import timedelta

    from stepml.artifacts import UnknownServingError
    from stepml.gc import GcPolicy, collect, format_report

    policy = GcPolicy(
        keep_rejected=args.keep_rejected,
        keep_approved=args.keep_approved,
        failed_older_than=None if args.keep_failed else timedelta(days=args.failed_older_than),
        model_name=args.model,
    )
    with _open_target(args, project_layout()) as target:
        try:
            report = collect(target, policy, delete=args.yes)
        except UnknownServingError as error:
            raise CliError(f"nothing collected: {error}") from error
        freed = target.control("POST", "/_stepml/collect-garbage")["freed_bytes"] if args.yes else 0
    if args.json:
        print(json.dumps({**report.to_json(), "freed_bytes_on_disk": freed}), file=out)
        return 0
    print(format_report(report), file=out)
    if args.yes:
        print(f"Freed {_megabytes(freed)} MB on disk.", file=out)
    elif report.collected:
        print("Nothing was deleted: run again with --yes to delete this.", file=out)
    return 0


def cmd_local_alarms(args: argparse.Namespace, out: TextIO) -> int:
    """Evaluate the stack's CloudWatch alarms against the metrics the functions emitted, and show them."""
    with _open_target(args, project_layout()) as target:
        answer = target.control("POST", "/_stepml/alarms", timeout=300)
    if args.json:
        print(json.dumps(answer["alarms"], default=str), file=out)
    else:
        print(answer["table"], file=out)
    return 0


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f}"


def _target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        choices=["embedded", "localstack", "aws"],
        default="embedded",
        help="where the stack runs (default: embedded; a running `stepml local up` is used when there is one)",
    )
    parser.add_argument(
        "--stack-name",
        help="CloudFormation stack name (default: stepml-local on localstack, stepml-dev on aws, as deployed)",
    )
    parser.add_argument("--endpoint-url", help="override the AWS endpoint (e.g. a LocalStack on another host)")


def build_parser() -> argparse.ArgumentParser:
    from stepml.data_options import add_data_options
    from stepml.rollout_commands import add_rollout_option
    from stepml.run_input import add_approval_options, add_cache_option
    from stepml.trainers import add_trainer_options

    parser = argparse.ArgumentParser(prog="stepml", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the whole pipeline on the embedded target")
    run.add_argument("--data", help="CSV or Parquet file (default: the bundled iris.csv)")
    run.add_argument("--target", help="target column (default: the last column)")
    run.add_argument("--problem-type", choices=["classification", "regression"], help="default: inferred")
    run.add_argument("--model-name", help="registry model name (default: from the file name)")
    run.add_argument("--threshold", type=float, help="quality gate threshold for the primary metric")
    run.add_argument("--name", help="execution name (default: <file>-<time>-<random>)")
    add_trainer_options(run)
    add_data_options(run)
    add_cache_option(run)
    add_rollout_option(run)
    add_approval_options(run)
    run.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    run.add_argument(
        "--inject-fault",
        action="append",
        metavar="STATE=ERROR[:COUNT][:WHEN]",
        help="make STATE's task fail COUNT times (default 1) with ERROR; WHEN is 'before' its code runs (default) "
        "or 'after' it ran and wrote (a lost response), e.g. Preprocess=TransientStoreError:2, "
        "Register=TransientStoreError:1:after",
    )
    run.add_argument(
        "--fault-config",
        metavar="FILE",
        help='faults as JSON: {"State": {"0-1": {"Throw": {"Error": "...", "Cause": "...", "When": "after"}}}} '
        '("When" is optional: "before" by default)',
    )
    run.set_defaults(func=cmd_run)

    start = commands.add_parser("start", help="start a run on a target (embedded, localstack or aws)")
    _target_options(start)
    start.add_argument("--data", help="local file (uploaded) or s3:// URI (default: the bundled iris.csv)")
    start.add_argument("--target-column", help="target column (default: the last column)")
    start.add_argument("--problem-type", choices=["classification", "regression"], help="default: inferred")
    start.add_argument("--model-name", help="registry model name (default: from the file name)")
    start.add_argument("--threshold", type=float, help="quality gate threshold for the primary metric")
    start.add_argument("--name", help="execution name (default: <file>-<time>-<random>)")
    add_trainer_options(start)
    add_data_options(start)
    add_cache_option(start)
    add_rollout_option(start)
    add_approval_options(start)
    start.add_argument("--no-wait", action="store_true", help="print the execution ARN and return")
    start.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    start.set_defaults(func=cmd_start)

    watch = commands.add_parser("watch", help="follow an execution (name or ARN) to its end")
    _target_options(watch)
    watch.add_argument("execution", help="execution name or ARN")
    watch.add_argument("--json", action="store_true")
    watch.set_defaults(func=cmd_watch)

    upload = commands.add_parser("upload", help="upload a file under incoming/: the S3 trigger starts a run")
    _target_options(upload)
    upload.add_argument("file")
    upload.add_argument("--no-wait", action="store_true", help="return once the run has started")
    upload.add_argument("--json", action="store_true")
    upload.set_defaults(func=cmd_upload)

    runs = commands.add_parser("runs", help="list executions")
    _target_options(runs)
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=cmd_runs)

    models = commands.add_parser("models", help="list the model registry")
    _target_options(models)
    models.add_argument("--model", help="only this model")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    from stepml import serve

    serve.add_parser(commands)  # `stepml serve`: the inference API on 127.0.0.1
    from stepml import approval_commands, cache_commands, monitor_commands, predict, resume, rollout_commands

    resume.add_parser(commands, _target_options)  # `stepml resume RUN`
    cache_commands.add_parser(commands, _target_options)  # `stepml cache list|clear`
    monitor_commands.add_parser(commands, _target_options)  # `stepml monitor`
    rollout_commands.add_parser(commands, _target_options)  # `stepml alarm set NAME STATE`
    predict.add_parser(commands, _target_options)  # `stepml predict`: batch scoring
    approval_commands.add_parser(commands, _target_options)  # `stepml approve|reject MODEL VERSION`

    local = commands.add_parser("local", help="the embedded AWS as a local endpoint")
    local_commands = local.add_subparsers(dest="local_command", required=True)
    up = local_commands.add_parser("up", help="serve the local AWS for this state directory (foreground)")
    up.add_argument("--port", type=int, default=4566, help="port on 127.0.0.1 (default 4566; 0 picks a free one)")
    up.add_argument("--background", action="store_true", help="start it in the background and return")
    up.add_argument("--background-child", action="store_true", help=argparse.SUPPRESS)
    up.set_defaults(func=cmd_local_up)
    down = local_commands.add_parser("down", help="stop the local AWS of this state directory")
    down.set_defaults(func=cmd_local_down)
    status = local_commands.add_parser("status", help="whether a local AWS serves this state directory (exit 1: none)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_local_status)
    alarms = local_commands.add_parser(
        "alarms", help="evaluate the stack's CloudWatch alarms now (as CloudWatch does every minute) and list them"
    )
    alarms.add_argument("--json", action="store_true")
    alarms.set_defaults(func=cmd_local_alarms)
    gc = local_commands.add_parser(
        "gc", help="remove old runs' artifacts (rejected, superseded, failed): prints the plan, --yes deletes"
    )
    gc.add_argument("--yes", action="store_true", help="delete what the plan lists (permanently)")
    gc.add_argument("--keep-rejected", type=int, default=3, metavar="K", help="rejected versions kept per model (3)")
    gc.add_argument("--keep-approved", type=int, metavar="N", help="approved versions kept per model (default: all)")
    gc.add_argument(
        "--failed-older-than", type=float, default=7, metavar="DAYS", help="failed runs collected after (7 days)"
    )
    gc.add_argument("--keep-failed", action="store_true", help="keep every failed run's artifacts")
    gc.add_argument("--model", help="only this model's versions")
    gc.add_argument("--json", action="store_true")
    gc.set_defaults(func=cmd_local_gc)
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the ``stepml`` command."""
    try:
        code = _main(argv, out)
        if argv is None:
            sys.stdout.flush()  # a reader that left is found here, not in the interpreter's flush at exit
        return code
    except BrokenPipeError:
        # The reader of stdout left (`stepml runs | head`): end quietly, as Python's documentation recommends
        # ("Note on SIGPIPE"): stdout goes to /dev/null so the flush at exit fails no more, and the exit
        # status is 1, Python's for EPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        if argv is None:
            # The process ends next (the `stepml` script, `python -m stepml.cli`). At exit the interpreter walks
            # every object the collector tracks, ~0.3 s once botocore's API models and pydantic are loaded;
            # frozen, they are skipped (and nothing that runs at exit is: buffers are flushed, atexit runs).
            gc.freeze()


def _main(argv: list[str] | None, out: TextIO | None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args, out))
    except (CliError, ProjectLayoutError) as error:
        print(f"stepml: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        from botocore.exceptions import (
            ConnectionClosedError,
            EndpointConnectionError,
            NoCredentialsError,
            NoRegionError,
        )

        if isinstance(error, NoCredentialsError | NoRegionError):
            # the targets check both before their first request; a client built elsewhere may still meet them
            print(f"stepml: {error}: configure AWS credentials and a region (see docs/deploy.md)", file=sys.stderr)
            return 2
        if not isinstance(error, EndpointConnectionError | ConnectionClosedError):
            raise
        # the target went away mid-command (a local AWS stopped or killed, a network failure)
        print(
            f"stepml: lost the connection to the target: {error}; `stepml local status` shows the local AWS",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
