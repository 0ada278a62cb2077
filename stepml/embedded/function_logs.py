"""Ship the functions' output to CloudWatch Logs, and the metrics in it to CloudWatch, as Lambda does on AWS.

The embedded target's workers append what a function prints to ``<log_dir>/<function name>.log``
(:mod:`stepml.embedded.lambda_runner`). On AWS, Lambda sends each line to the function's log group as one log
event, and CloudWatch Logs extracts the metrics of every event in the embedded metric format (EMF: a JSON
object with an ``_aws`` member, what Powertools' Metrics prints). :class:`FunctionLogShipper` does both for
the local AWS; :func:`invocation_metric_data` adds the AWS/Lambda metrics (Invocations, Errors, Duration) that
the Lambda service itself publishes and the template's alarms watch.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from stepml.embedded.lambda_runner import InvocationLog, InvocationResult
from stepml.embedded.template import FunctionSpec

ClientFactory = Callable[[str], Any]

# CloudWatch Logs PutLogEvents: an event counts its UTF-8 bytes plus 26; a batch holds at most 10,000 events
# and 1,048,576 bytes. Events are cut at 256 KiB, the limit the embedded metric format is documented with.
_EVENT_OVERHEAD = 26
_MAX_EVENT_BYTES = 256 * 1024 - _EVENT_OVERHEAD
_MAX_BATCH_BYTES = 1_048_576
_MAX_BATCH_EVENTS = 10_000
_MAX_METRIC_DATA = 1000  # PutMetricData: metrics per request
# EMF specification: per directive at most 100 metrics, per dimension set 30 keys, per metric 100 values.
_MAX_EMF_METRICS = 100
_MAX_EMF_DIMENSIONS = 30
_MAX_EMF_VALUES = 100
_SIZES = (
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
)
_UNITS = frozenset(
    {"Seconds", "Microseconds", "Milliseconds", "Percent", "Count", "Count/Second", "None", *_SIZES}
    | {f"{size}/Second" for size in _SIZES}
)


class EmfError(ValueError):
    """A log event has an ``_aws`` member but breaks the EMF specification: CloudWatch extracts no metric from
    it (and counts it in AWS/Logs EMFValidationErrors); the event itself is still stored."""


MetricData = list[tuple[str, dict[str, Any]]]  # (namespace, PutMetricData MetricDatum)


def statistic_set(values: list[float]) -> dict[str, float]:
    """PutMetricData's StatisticValues of ``values`` (at least one)."""
    return {"SampleCount": float(len(values)), "Sum": sum(values), "Minimum": min(values), "Maximum": max(values)}


def emf_metric_data(message: str) -> MetricData | None:
    """The metrics CloudWatch extracts from one log event; None when the event is not in EMF.

    Raises :class:`EmfError` for an EMF document that breaks the specification (all its metrics are dropped).
    """
    if '"_aws"' not in message:
        return None
    try:  # Lambda may put metadata (a timestamp, a request id) before the JSON document; it is still EMF
        document = json.loads(message[message.index("{") :])
    except ValueError:
        return None
    if not isinstance(document, dict) or "_aws" not in document:
        return None
    metadata = document["_aws"]
    _require(isinstance(metadata, dict), "_aws must be an object")
    directives, timestamp = metadata.get("CloudWatchMetrics"), metadata.get("Timestamp")
    _require(isinstance(directives, list), "_aws.CloudWatchMetrics must be an array")
    _require(_is_number(timestamp) and timestamp >= 0, "_aws.Timestamp must be milliseconds since the epoch")
    at = datetime.fromtimestamp(timestamp / 1000, UTC)
    found: MetricData = []
    for directive in directives:
        _require(isinstance(directive, dict), "a MetricDirective must be an object")
        namespace, dimension_sets, metrics = (directive.get(k) for k in ("Namespace", "Dimensions", "Metrics"))
        _require(isinstance(namespace, str) and 0 < len(namespace) <= 255, "Namespace must be 1-255 characters")
        _require(not namespace.startswith("AWS/"), "namespaces starting with AWS/ are reserved for AWS services")
        _require(isinstance(dimension_sets, list) and len(dimension_sets) > 0, "Dimensions must be a non-empty array")
        _require(isinstance(metrics, list) and len(metrics) <= _MAX_EMF_METRICS, "Metrics must hold at most 100")
        dimensions = [_dimension_set(document, keys) for keys in dimension_sets]
        for metric in metrics:
            _require(isinstance(metric, dict) and isinstance(metric.get("Name"), str), "a metric needs a Name")
            name, unit = metric["Name"], metric.get("Unit", "None")
            _require(0 < len(name) <= 255, "a metric Name must be 1-255 characters")
            _require(unit in _UNITS, f"{unit!r} is not a CloudWatch unit")
            resolution = metric.get("StorageResolution", 60)
            _require(resolution in (1, 60), "StorageResolution must be 1 or 60")
            statistics = statistic_set(_metric_values(document, name))
            for dimension_set in dimensions:  # every dimension set makes a metric of its own
                datum: dict[str, Any] = {"MetricName": name, "Timestamp": at, "Unit": unit}
                datum.update({"StorageResolution": resolution} if resolution == 1 else {})
                datum.update({"Dimensions": dimension_set} if dimension_set else {})
                datum["StatisticValues"] = statistics
                found.append((namespace, datum))
    return found


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise EmfError(message)


def _is_number(value: Any) -> bool:
    # bool is an int in Python but not a number in JSON; CloudWatch refuses NaN and infinities
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _dimension_set(document: dict[str, Any], keys: Any) -> list[dict[str, str]]:
    _require(isinstance(keys, list) and len(keys) <= _MAX_EMF_DIMENSIONS, "a DimensionSet holds at most 30 keys")
    dimensions = []
    for key in keys:
        value = document.get(key) if isinstance(key, str) else None
        _require(isinstance(value, str) and 0 < len(value) <= 1024, f"dimension {key!r} needs a string value")
        dimensions.append({"Name": key, "Value": value})
    return dimensions


def _metric_values(document: dict[str, Any], name: str) -> list[float]:
    value = document.get(name)
    values: list[Any] = value if isinstance(value, list) else [value]
    _require(0 < len(values) <= _MAX_EMF_VALUES, f"metric {name!r} needs 1-100 values")
    _require(all(_is_number(v) for v in values), f"metric {name!r} must be a number or an array of numbers")
    return [float(v) for v in values]


def invocation_metric_data(results: Iterable[InvocationResult], at: datetime) -> MetricData:
    """The AWS/Lambda metrics Lambda publishes for these invocations (per FunctionName): Invocations, Errors
    (1 for an invocation that failed, handler errors, timeouts and crashes alike, else 0) and Duration."""
    by_function: dict[str, list[InvocationResult]] = defaultdict(list)
    for result in results:
        by_function[result.function_name].append(result)
    found: MetricData = []
    for name, calls in by_function.items():
        dimensions = [{"Name": "FunctionName", "Value": name}]
        for metric, unit, values in (
            ("Invocations", "Count", [1.0] * len(calls)),
            ("Errors", "Count", [1.0 if c.failed else 0.0 for c in calls]),
            ("Duration", "Milliseconds", [round(c.duration_ms, 2) for c in calls]),
        ):
            datum = {"MetricName": metric, "Dimensions": dimensions, "Timestamp": at, "Unit": unit}
            found.append(("AWS/Lambda", {**datum, "StatisticValues": statistic_set(values)}))
    return found


def merged_by_second(data: MetricData) -> MetricData:
    """The same metrics with each second's statistic sets of one metric (namespace, name, dimensions, unit,
    resolution) merged into one, timestamped at the second's start.

    CloudWatch keeps nothing finer than a second and rounds a query's start down, so nothing a query can ask
    tells the two apart. A busy function's EMF lines (the inference API writes one per request) would
    otherwise be one datum per metric per request: moto keeps every datum in memory for as long as the local
    AWS runs (and scans them all on every GetMetricData an alarm makes), and PutMetricData's Values and
    Counts are stored one datum per count. Where this differs from AWS: CloudWatch keeps EMF values as a
    distribution, so percentiles of them can be asked; a statistic set has SampleCount, Sum, Minimum and
    Maximum (and so Average) only, which is all moto computes anyway (the local alarms read a pNN statistic
    as Maximum, see :mod:`stepml.embedded.alarms`).
    """
    merged: dict[tuple[Any, ...], tuple[str, dict[str, Any]]] = {}
    for namespace, datum in data:
        second = datum["Timestamp"].replace(microsecond=0)
        dimensions = tuple((d["Name"], d["Value"]) for d in datum.get("Dimensions", ()))
        key = (namespace, datum["MetricName"], dimensions, datum["Unit"], datum.get("StorageResolution"), second)
        statistics = datum["StatisticValues"]
        if key not in merged:
            merged[key] = (namespace, {**datum, "Timestamp": second, "StatisticValues": dict(statistics)})
            continue
        total = merged[key][1]["StatisticValues"]
        total["SampleCount"] += statistics["SampleCount"]
        total["Sum"] += statistics["Sum"]
        total["Minimum"] = min(total["Minimum"], statistics["Minimum"])
        total["Maximum"] = max(total["Maximum"], statistics["Maximum"])
    return list(merged.values())


def put_metric_data(cloudwatch: Any, data: MetricData) -> None:
    """Send metrics, one request per namespace and at most 1,000 metrics each (PutMetricData's limits)."""
    by_namespace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for namespace, datum in data:
        by_namespace[namespace].append(datum)
    for namespace, data_of_namespace in by_namespace.items():
        for start in range(0, len(data_of_namespace), _MAX_METRIC_DATA):
            cloudwatch.put_metric_data(
                Namespace=namespace, MetricData=data_of_namespace[start : start + _MAX_METRIC_DATA]
            )


@dataclass
class ShipResult:
    """What one :meth:`FunctionLogShipper.ship` sent."""

    events: int = 0
    metrics: int = 0
    rejected_emf: int = 0  # events with an ``_aws`` member that break the EMF specification


@dataclass
class _Source:
    function_name: str
    log_group: str
    path: Path
    offset: int
    stream: str | None = None


class FunctionLogShipper:
    """Send what the functions append to their log files to their CloudWatch Logs groups, and the EMF metrics
    in it to CloudWatch; with ``invocations``, the AWS/Lambda metrics of each invocation too.

    Call :meth:`ship` every second or so, and once more after the workers have stopped. Each call sends the
    complete lines appended since the previous call (a line still being written waits for its newline).
    ``from_start=False`` leaves out what the files hold already (an earlier process's output).
    """

    def __init__(
        self,
        log_dir: Path,
        functions: Iterable[FunctionSpec],
        client: ClientFactory,
        *,
        invocations: InvocationLog | None = None,
        from_start: bool = False,
    ) -> None:
        self._client = client
        self._invocations = invocations
        self._invocations_seen = len(invocations.entries) if invocations is not None else 0
        self._lock = threading.Lock()
        self._sources = []
        for spec in functions:
            path = log_dir / f"{spec.name}.log"
            offset = 0 if from_start or not path.exists() else path.stat().st_size
            self._sources.append(_Source(spec.name, spec.log_group_name, path, offset))

    def ship(self) -> ShipResult:
        """Send what was appended since the last call. A failed call leaves its lines for the next one."""
        result = ShipResult()
        with self._lock:
            for source in self._sources:
                lines, offset = self._new_lines(source)
                if lines:
                    self._ship_lines(source, lines, result)
                source.offset = offset
            if self._invocations is not None:
                with self._invocations.lock:
                    new = self._invocations.entries[self._invocations_seen :]
                if new:
                    data = merged_by_second(invocation_metric_data(new, datetime.now(UTC)))
                    put_metric_data(self._client("cloudwatch"), data)
                    result.metrics += len(data)
                self._invocations_seen += len(new)
        return result

    @staticmethod
    def _new_lines(source: _Source) -> tuple[list[str], int]:
        try:
            size = source.path.stat().st_size
        except FileNotFoundError:
            return [], 0
        offset = 0 if size < source.offset else source.offset  # the file was emptied or replaced: read it anew
        if size == offset:
            return [], offset
        with source.path.open("rb") as log:
            log.seek(offset)
            data = log.read(size - offset)
        end = data.rfind(b"\n")
        if end < 0:
            return [], offset  # a partial line waits for its newline
        lines = [line.decode("utf-8", "replace").rstrip("\r") for line in data[:end].split(b"\n")]
        return lines, offset + end + 1

    def _ship_lines(self, source: _Source, lines: list[str], result: ShipResult) -> None:
        logs = self._client("logs")
        now = int(time.time() * 1000)
        # CloudWatch Logs refuses empty messages; Lambda sends none for an empty line either.
        events = [{"timestamp": now, "message": piece} for line in lines if line for piece in _pieces(line)]
        if not events:
            return
        if source.stream is None:
            source.stream = self._create_stream(logs, source)
        for batch in _batches(events):
            logs.put_log_events(logGroupName=source.log_group, logStreamName=source.stream, logEvents=batch)
        result.events += len(events)
        metrics: MetricData = []
        for line in lines:
            try:
                metrics += emf_metric_data(line) or []
            except EmfError:
                result.rejected_emf += 1
        if metrics:
            put_metric_data(self._client("cloudwatch"), merged_by_second(metrics))
            result.metrics += len(metrics)

    @staticmethod
    def _create_stream(logs: Any, source: _Source) -> str:
        # Lambda writes each execution environment's output to a stream named <date>/[<version>]<id>, with the
        # function's name in front in a log group other functions share. Here the workers of a function share
        # one file, so one stream per function and shipper stands for them.
        default_group = source.log_group == f"/aws/lambda/{source.function_name}"
        prefix = "" if default_group else source.function_name
        stream = f"{datetime.now(UTC):%Y/%m/%d}/{prefix}[$LATEST]{uuid.uuid4().hex}"
        try:
            logs.create_log_stream(logGroupName=source.log_group, logStreamName=stream)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            # Lambda creates its default group on first use; a group the template declares but the local
            # stack lacks is created too rather than the output lost.
            logs.create_log_group(logGroupName=source.log_group)
            logs.create_log_stream(logGroupName=source.log_group, logStreamName=stream)
        return stream


def _pieces(line: str) -> list[str]:
    encoded = line.encode()
    if len(encoded) <= _MAX_EVENT_BYTES:
        return [line]
    pieces = []
    while encoded:
        cut = min(len(encoded), _MAX_EVENT_BYTES)
        while cut < len(encoded) and encoded[cut] & 0xC0 == 0x80:  # not inside a UTF-8 character
            cut -= 1
        pieces.append(encoded[:cut].decode())
        encoded = encoded[cut:]
    return pieces


def _batches(events: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    size = 0
    for event in events:
        event_size = len(event["message"].encode()) + _EVENT_OVERHEAD
        if batch and (len(batch) == _MAX_BATCH_EVENTS or size + event_size > _MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(event)
        size += event_size
    if batch:
        yield batch
