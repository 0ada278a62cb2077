"""Monitor: compare new data with a model version's training baseline, report the drift, say what drifted.

The request (:class:`MonitorRequest`) names a model and optionally a version (default: the champion, the
newest approved version, which the endpoint serves) and the data: an S3 file (CSV or Parquet, read as
datasets are) or, by default, the rows the prediction log kept for the model over the last
``since_hours`` (:data:`DEFAULT_WINDOW_HOURS`), at most ``max_rows`` of them, newest requests first. Rows of
every version that answered in the window count: the inputs' distribution does not depend on which version
served them.

Each feature is checked against the version's ``baseline.json`` (:mod:`pipeline_core.stages.drift`); fewer
than ``thresholds.min_rows`` rows is an ``insufficient_data`` verdict with nothing counted as drifted. The
report goes to ``s3://<bucket>/monitoring/<model>/<report id>/`` as ``report.json`` (the result) and
``report.html`` (tables and plots, :mod:`pipeline_core.stages.monitor_report`); the handler publishes
DriftedFeatures and DriftScoreMax from the result.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Literal

import pandas as pd
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline_core.aws.prediction_log import PredictionLog
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.s3 import ObjectStore, S3Uri
from pipeline_core.errors import BaselineNotFoundError, DatasetNotFoundError, ModelNotFoundError, MonitoringError
from pipeline_core.models import RegistryRecord
from pipeline_core.stages.baseline import Baseline, read_baseline
from pipeline_core.stages.dataset_file import Limits, load_table
from pipeline_core.stages.drift import FeatureDrift, Thresholds, compare_feature
from pipeline_core.stages.ingest import detect_format
from pipeline_core.stages.monitor_data import MonitoredData, monitored_data, rows_frame
from pipeline_core.stages.monitor_report import render_report

DEFAULT_WINDOW_HOURS = 24.0
# The prediction log keeps items for PredictionLogTtlDays (30 by default); a longer window finds nothing more.
MAX_WINDOW_HOURS = 24.0 * 90
# Rows read from the prediction log: enough for every test to be sharp, few enough for the function's memory
# and time (about 1 KB per row of ten features while read).
DEFAULT_MAX_ROWS = 50_000
MONITORING_PREFIX = "monitoring"

OverallVerdict = Literal["drift", "no_drift", "insufficient_data"]


class MonitorRequest(BaseModel):
    """What the Monitor function is asked (from `stepml monitor`, a schedule or a direct Invoke)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str = Field(min_length=1)
    version: int | None = Field(default=None, ge=1, description="default: the champion (newest approved)")
    data: str | None = Field(default=None, description="s3:// URI of a CSV or Parquet file; default: the log")
    since_hours: float = Field(default=DEFAULT_WINDOW_HOURS, gt=0, le=MAX_WINDOW_HOURS)
    # The schedule's input sets it: a model not trained (or not approved) yet is skipped rather than an error,
    # so a new stack's daily monitoring does not raise the function's Errors alarm before the first deploy.
    scheduled: bool = False
    max_rows: int = Field(default=DEFAULT_MAX_ROWS, ge=1, le=1_000_000)
    thresholds: Thresholds = Field(default_factory=Thresholds)


class MonitorSkipped(BaseModel):
    """A scheduled run that found no version to monitor (no approved version of the model yet)."""

    model_name: str
    skipped: Literal[True] = True
    reason: str


class SourceSummary(BaseModel):
    """Where the monitored rows came from."""

    kind: Literal["file", "prediction_log"]
    uri: str | None = None  # the file
    since: str | None = None  # the window (ISO 8601, UTC)
    until: str | None = None
    requests: int | None = None  # logged requests whose rows were read
    truncated_requests: int = 0  # requests whose rows were cut when logged (MAX_FEATURE_BYTES)
    capped: bool = False  # the window held more than max_rows rows: the newest were read
    model_versions: dict[str, int] = Field(default_factory=dict)  # rows per version that answered


class MonitorResult(BaseModel):
    """The Monitor function's answer, also stored as ``report.json``."""

    model_name: str
    version: int
    baseline_uri: str
    report_id: str
    created_at: str
    verdict: OverallVerdict
    message: str
    rows: int
    drifted_features: list[str]
    drift_score_max: float | None  # the largest PSI of the features compared (None: none was)
    features: list[FeatureDrift]
    missing_columns: list[str] = Field(default_factory=list)
    unseen_columns: list[str] = Field(default_factory=list)
    source: SourceSummary
    thresholds: Thresholds
    report_uri: str
    report_html_uri: str


def parse_request(event: dict[str, object]) -> MonitorRequest:
    """The event as a request; MonitoringError lists every field that is wrong."""
    try:
        return MonitorRequest.model_validate(event)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'the request'}: {e['msg']}" for e in error.errors()
        )
        raise MonitoringError(f"invalid monitor request: {problems}") from None


def drift_metrics(result: MonitorResult) -> list[tuple[str, MetricUnit, float]]:
    """The metrics a result publishes. An insufficient-data verdict publishes no DriftedFeatures or
    DriftScoreMax: a 0 would say "no drift" about data too thin to tell, so an alarm sees missing data instead
    (its TreatMissingData decides); MonitoredRows says how many rows each run had."""
    rows = [("MonitoredRows", MetricUnit.Count, float(result.rows))]
    if result.verdict == "insufficient_data":
        return rows
    return [
        ("DriftedFeatures", MetricUnit.Count, float(len(result.drifted_features))),
        ("DriftScoreMax", MetricUnit.NoUnit, float(result.drift_score_max or 0.0)),
        *rows,
    ]


# --------------------------------------------------------------------------- inputs


def resolve_version(registry: ModelRegistry, model_name: str, version: int | None) -> RegistryRecord:
    """The version to monitor: ``version``, or the champion; ModelNotFoundError names what exists."""
    versions = registry.versions(model_name)
    if not versions:
        # (no listing of the other models here: that would scan the registry, which this function may not)
        raise ModelNotFoundError(
            f"no model named {model_name!r} in the registry: `stepml models` lists the models there are"
        )
    if version is not None:
        found = next((r for r in versions if r.version == version), None)
        if found is None:
            numbers = ", ".join(str(r.version) for r in sorted(versions, key=lambda r: r.version))
            raise ModelNotFoundError(f"model {model_name!r} has no version {version}: its versions are {numbers}")
        return found
    champion = next((r for r in versions if r.status == "approved"), None)
    if champion is None:
        raise ModelNotFoundError(
            f"model {model_name!r} has no approved version to monitor (versions {versions[-1].version}-"
            f"{versions[0].version} were all {', '.join(sorted({r.status for r in versions}))}): pass a version"
        )
    return champion


def load_baseline(store: ObjectStore, record: RegistryRecord) -> Baseline:
    """The version's training baseline; BaselineNotFoundError says why there is none and what to do."""
    label = f"{record.model_name} v{record.version}"
    if not record.baseline_uri:
        raise BaselineNotFoundError(
            f"{label} has no baseline: it was registered before drift monitoring existed. Train it again (e.g. "
            f"`stepml run --data FILE --model-name {record.model_name}`) to register a version with a baseline "
            "of its training data, then monitor that version"
        )
    try:
        document = store.read_bytes(record.baseline_uri)
    except DatasetNotFoundError as error:
        raise BaselineNotFoundError(
            f"the baseline of {label} ({record.baseline_uri}) no longer exists: it was deleted since the run; "
            "train the model again to make a new one"
        ) from error
    try:
        return read_baseline(document)
    except ValueError as error:
        raise BaselineNotFoundError(
            f"the baseline of {label} ({record.baseline_uri}) cannot be read: {error}"
        ) from error


def read_file(uri: str, store: ObjectStore, limits: Limits) -> pd.DataFrame:
    """A CSV or Parquet file at ``uri``, read as datasets are."""
    file_format = detect_format(uri)
    try:
        data = store.read_bytes(uri)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("AccessDenied", "403"):
            raise
        raise MonitoringError(
            f"the Monitor function may not read {uri}: it reads the data bucket's monitoring/, datasets/ and "
            "incoming/ prefixes (`stepml monitor --data LOCAL_FILE` uploads a file there)"
        ) from error
    return load_table(data, file_format, limits).frame


def read_window(
    request: MonitorRequest, prediction_log: PredictionLog, now: datetime
) -> tuple[pd.DataFrame, SourceSummary]:
    """The rows the prediction log kept for the model over the request's window."""
    since = now - timedelta(hours=request.since_hours)
    logged = prediction_log.logged_features(request.model_name, since, now, request.max_rows)
    source = SourceSummary(
        kind="prediction_log",
        since=since.isoformat(timespec="seconds"),
        until=now.isoformat(timespec="seconds"),
        requests=logged.requests,
        truncated_requests=logged.truncated_requests,
        capped=logged.capped,
        model_versions={str(v): n for v, n in sorted(logged.versions.items())},
    )
    return rows_frame(logged.rows), source


# --------------------------------------------------------------------------- the decision


def assess(
    baseline: Baseline, data: MonitoredData, thresholds: Thresholds
) -> tuple[OverallVerdict, list[FeatureDrift], str]:
    """Every feature's drift and the overall verdict with its one-line message."""
    features = [compare_feature(f, data.features[f.name], thresholds) for f in baseline.features]
    if data.rows < thresholds.min_rows:
        for feature in features:  # too few rows to call anything drifted: no false alarm
            feature.drifted, feature.verdict = False, "insufficient_data"
        return (
            "insufficient_data",
            features,
            f"insufficient data: {data.rows} rows, at least {thresholds.min_rows} are needed to judge drift",
        )
    drifted = [f.name for f in features if f.drifted]
    compared = sum(1 for f in features if f.psi is not None)
    if drifted:
        return "drift", features, f"drift in {len(drifted)} of {len(features)} features: {', '.join(drifted)}"
    return "no_drift", features, f"no drift in {len(features)} features ({compared} distributions compared)"


def report_id_for(record: RegistryRecord, now: datetime, token: str | None = None) -> str:
    """``<UTC time>-v<version>-<6 hex>``: sorts by time, unique per run of the monitor."""
    return f"{now:%Y%m%dT%H%M%SZ}-v{record.version}-{token or secrets.token_hex(3)}"


def monitor(
    request: MonitorRequest,
    *,
    registry: ModelRegistry,
    store: ObjectStore,
    prediction_log: PredictionLog,
    bucket: str,
    limits: Limits,
    now: datetime | None = None,
) -> MonitorResult:
    """Run the checks the request asks for, store the report (JSON and HTML) and return the result."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    record = resolve_version(registry, request.model_name, request.version)
    baseline = load_baseline(store, record)
    assert record.baseline_uri is not None  # load_baseline checked it
    if request.data:
        S3Uri.parse(request.data)  # an InputValidationError for anything but an s3:// URI
        frame, source = read_file(request.data, store, limits), SourceSummary(kind="file", uri=request.data)
    else:
        frame, source = read_window(request, prediction_log, now)
    data = monitored_data(frame, baseline)
    verdict, features, message = assess(baseline, data, request.thresholds)
    scores = [f.psi for f in features if f.psi is not None]
    report_id = report_id_for(record, now)
    prefix = f"s3://{bucket}/{MONITORING_PREFIX}/{record.model_name}/{report_id}"
    result = MonitorResult(
        model_name=record.model_name,
        version=record.version,
        baseline_uri=record.baseline_uri,
        report_id=report_id,
        created_at=now.isoformat(timespec="seconds"),
        verdict=verdict,
        message=message,
        rows=data.rows,
        drifted_features=[f.name for f in features if f.drifted],
        drift_score_max=max(scores) if scores else None,
        features=features,
        missing_columns=data.missing_columns,
        unseen_columns=data.unseen_columns,
        source=source,
        thresholds=request.thresholds,
        report_uri=f"{prefix}/report.json",
        report_html_uri=f"{prefix}/report.html",
    )
    store.write_bytes(result.report_uri, result.model_dump_json(indent=1).encode(), content_type="application/json")
    store.write_bytes(result.report_html_uri, render_report(result).encode(), content_type="text/html")
    return result


def input_key(model_name: str, file_name: str, now: datetime | None = None) -> str:
    """Where `stepml monitor --data LOCAL_FILE` uploads the file: ``monitoring/<model>/inputs/<time>-<name>``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{MONITORING_PREFIX}/{model_name}/inputs/{moment:%Y%m%dT%H%M%SZ}-{PurePosixPath(file_name).name}"
