"""``stepml monitor``: drift of a model's recent inputs (or of a file) from its training baseline, on any target.

The command invokes the stack's Monitor function (output MonitorFunctionName) with a request, as a schedule
would: on AWS it runs in Lambda, on the embedded target in the local AWS's workers, the same code either way
(docs/monitoring.md). A local ``--data`` file is first uploaded to the data bucket, under
``monitoring/<model>/inputs/``, where the function may read it. Exit status: 0 when the monitor ran, whatever
it found (``verdict`` says); 2 when it could not run (the message says why and what to do).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from stepml.targets import Target, TargetError
from stepml.uploads import upload_file

# The Monitor function may run up to its 300 s timeout; the CLI waits a little longer for its answer, and never
# sends the request twice (a retried Invoke would run the monitor again).
INVOKE_READ_TIMEOUT = 330
ROLE_WIDTH, VERDICT_WIDTH = 11, 17


def threshold_pair(text: str) -> tuple[str, float | int]:
    """``NAME=VALUE`` of ``--threshold`` (the Monitor function checks the name and the value)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--threshold takes NAME=VALUE (e.g. psi=0.25), got {text!r}")
    try:
        number: float | int = int(value) if value.strip().lstrip("-").isdigit() else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threshold {name}: {value!r} is not a number") from None
    return name.strip(), number


def monitor_function(target: Target) -> str:
    name = target.outputs.monitor_function
    if not name:
        raise TargetError(
            f"the stack on the {target.name} target has no MonitorFunctionName output: it was deployed before "
            "drift monitoring; deploy it again (docs/deploy.md)"
        )
    return name


def default_model(target: Target) -> str:
    """The model of the newest approved version: what the last successful run deployed."""
    from pipeline_core.aws.registry import ModelRegistry

    registry = ModelRegistry(target.outputs.registry_table, target.client("dynamodb"))
    approved = [r for r in registry.versions() if r.status == "approved"]
    if not approved:
        raise TargetError(
            f"the registry on the {target.name} target has no approved model to monitor: run the pipeline first "
            "(`stepml run`), or name a model with --model"
        )
    return max(approved, key=lambda r: r.created_at).model_name


def data_uri(target: Target, model_name: str, data: str) -> str:
    """``--data`` as an S3 URI: an s3:// URI as it is, a local file uploaded under monitoring/<model>/inputs/."""
    if data.startswith("s3://"):
        return data
    from pipeline_core.stages.monitor import input_key

    path = Path(data).expanduser()
    if not path.is_file():
        raise TargetError(f"--data {path}: no such file")
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise TargetError(f"--data {path}: a .csv or .parquet file is needed")
    key = input_key(model_name, path.name)
    upload_file(target.client("s3"), path, target.outputs.data_bucket, key)
    return f"s3://{target.outputs.data_bucket}/{key}"


def request_of(args: argparse.Namespace, model_name: str, data: str | None) -> dict[str, Any]:
    request: dict[str, Any] = {"model_name": model_name}
    if args.version is not None:
        request["version"] = args.version
    if data:
        request["data"] = data
    if args.since is not None:
        request["since_hours"] = args.since
    if args.max_rows is not None:
        request["max_rows"] = args.max_rows
    if args.threshold:
        request["thresholds"] = dict(args.threshold)
    return request


def invoke(target: Target, function: str, request: dict[str, Any]) -> dict[str, Any]:
    """Invoke the Monitor function and return its result; its error is a TargetError with its message."""
    from botocore.config import Config

    session, endpoint = getattr(target, "session", None), getattr(target, "endpoint_url", None)
    config = Config(read_timeout=INVOKE_READ_TIMEOUT, retries={"total_max_attempts": 1})
    client = (
        session.client("lambda", config=config, **({"endpoint_url": endpoint} if endpoint else {}))
        if session is not None
        else target.client("lambda")
    )
    answer = client.invoke(FunctionName=function, Payload=json.dumps(request).encode())
    payload = json.loads(answer["Payload"].read() or b"{}")
    if answer.get("FunctionError"):
        error, message = payload.get("errorType", "Error"), payload.get("errorMessage", str(payload))
        known = error in {"ModelNotFoundError", "BaselineNotFoundError", "MonitoringError"}
        raise TargetError(message if known else f"the Monitor function failed: {error}: {message}")
    return dict(payload)


def download_report(target: Target, result: dict[str, Any]) -> str | None:
    """The HTML report copied out of the embedded S3, where a browser cannot reach it (None elsewhere)."""
    if target.name != "embedded":
        return None
    from stepml.project import project_layout

    bucket, key = str(result["report_html_uri"]).removeprefix("s3://").split("/", 1)
    path = project_layout().state_dir / "reports" / "monitor" / result["model_name"] / f"{result['report_id']}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(target.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    return str(path)


def _source_line(source: dict[str, Any], rows: int) -> str:
    if source.get("kind") == "file":
        return f"file {source.get('uri')}: {rows} rows"
    versions = ", ".join(f"v{v} {n}" for v, n in (source.get("model_versions") or {}).items())
    text = (
        f"prediction log {source.get('since')} to {source.get('until')}: {source.get('requests')} requests, {rows} rows"
    )
    text += f" ({versions})" if versions else ""
    if source.get("capped"):
        text += "; the newest only (--max-rows)"
    return text


def format_result(result: dict[str, Any], report_path: str | None) -> str:
    """The human summary: model, data, verdict, one line per feature, where the report is."""
    thresholds = result.get("thresholds") or {}
    lines = [
        f"Model       {result['model_name']} v{result['version']} (baseline {result['baseline_uri']})",
        f"Data        {_source_line(result.get('source') or {}, int(result['rows']))}",
        f"Verdict     {str(result['verdict']).replace('_', ' ').upper()}: {result['message']}",
        f"Thresholds  PSI ≥ {thresholds.get('psi')} and p < {thresholds.get('p_value')}; missing share "
        f"+{thresholds.get('missing_rate_increase')}; wrong types > {thresholds.get('type_error_rate')}; "
        f"at least {thresholds.get('min_rows')} rows",
    ]
    if result.get("missing_columns"):
        lines.append(f"Missing     {', '.join(result['missing_columns'])}")
    if result.get("unseen_columns"):
        lines.append(f"Unseen      {', '.join(result['unseen_columns'])} (not columns of the training data)")
    width = max([len("FEATURE"), *(len(f["name"]) for f in result["features"])])
    lines.append("")
    lines.append(
        f"{'FEATURE':<{width}}  {'ROLE':<{ROLE_WIDTH}}  {'VERDICT':<{VERDICT_WIDTH}}  {'PSI':>6}  {'P':>8}  "
        f"{'MISSING':>15}  WHY"
    )
    for feature in result["features"]:
        score = "-" if feature.get("psi") is None else f"{feature['psi']:.3f}"
        p_value = "-" if feature.get("p_value") is None else f"{feature['p_value']:.2g}"
        missing = "-" if feature.get("missing_rate") is None else (
            f"{feature['baseline_missing_rate']:.1%} → {feature['missing_rate']:.1%}"
        )  # fmt: skip
        verdict = str(feature["verdict"]).replace("_", " ") + (" *" if feature.get("drifted") else "")
        lines.append(
            f"{feature['name']:<{width}}  {feature['role']:<{ROLE_WIDTH}}  {verdict:<{VERDICT_WIDTH}}  {score:>6}  "
            f"{p_value:>8}  {missing:>15}  {'; '.join(feature.get('reasons') or [])}"
        )
    lines.append("")
    lines.append(f"Report      {result['report_html_uri']}")
    lines.append(f"            {result['report_uri']} (JSON)")
    if report_path:
        lines.append(f"            open {report_path}")
    return "\n".join(lines)


def cmd_monitor(args: argparse.Namespace, out: TextIO) -> int:
    """Compare a model's recent inputs (or a file) with its training baseline and print what drifted."""
    from stepml.cli import _open_target
    from stepml.errors import CliError
    from stepml.project import project_layout

    with _open_target(args, project_layout()) as target:
        try:
            function = monitor_function(target)
            model_name = args.model or default_model(target)
            data = data_uri(target, model_name, args.data) if args.data else None
            result = invoke(target, function, request_of(args, model_name, data))
            report_path = download_report(target, result)
        except TargetError as error:
            raise CliError(str(error)) from error
    if args.json:
        print(json.dumps({**result, "report_path": report_path}), file=out)
    else:
        print(format_result(result, report_path), file=out)
    return 0


def add_parser(subparsers: Any, target_options: Any) -> None:
    """Add ``stepml monitor`` to the CLI (``target_options`` adds --target and the stack options)."""
    parser = subparsers.add_parser(
        "monitor", help="drift of a model's recent inputs (or a file) from its training data: per feature, now"
    )
    target_options(parser)
    parser.add_argument("--model", help="registry model name (default: the model the last successful run deployed)")
    parser.add_argument("--version", type=int, help="model version (default: the champion, newest approved)")
    parser.add_argument(
        "--data",
        metavar="FILE|s3://...",
        help="a CSV or Parquet file to compare (a local one is uploaded); default: the prediction log's window",
    )
    parser.add_argument(
        "--since", type=float, metavar="HOURS", help="the prediction log window: the last HOURS hours (default 24)"
    )
    parser.add_argument("--max-rows", type=int, help="rows read from the prediction log at most (default 50000)")
    parser.add_argument(
        "--threshold",
        action="append",
        type=threshold_pair,
        metavar="NAME=VALUE",
        help="override a threshold: psi (0.2), p_value (0.01), missing_rate_increase (0.1), type_error_rate (0.01), "
        "min_rows (100)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(func=cmd_monitor)
