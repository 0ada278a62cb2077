"""The prediction log: one DynamoDB item per (sampled) inference request, expiring after a TTL.

Items are keyed by ``request_id`` alone: a key per model would put every request of a busy model on one
partition, and DynamoDB caps a partition at 1,000 writes per second. ``expires_at`` is the table's TTL
attribute (epoch seconds); DynamoDB deletes expired items within a few days at no cost.

The request's rows (its features) are kept for a sample of the logged requests
(``PREDICTION_LOG_FEATURE_SAMPLE_RATE``, a share of those logged), for drift monitoring: ``features`` (the
rows as compact JSON, cut to whole rows within :data:`MAX_FEATURE_BYTES`), ``features_rows`` (how many were
kept), ``features_truncated`` and ``features_at`` (the request's time). ``features_at`` is the sort key of the
index :data:`FEATURES_INDEX` (partition key ``model_name``), which only items with rows have: a sparse index,
so requests logged without their rows cost it nothing, and the Monitor reads a model's window with a Query
instead of scanning the table. A model's index partition takes at most 1,000 write units a second like any
partition (one unit per KB written): a model logging more rows than that needs a lower feature sample rate.

Two ways to write (``PREDICTION_LOG_MODE``):

* ``sync`` (default; what Lambda needs): one PutItem per logged request, before the response. Lambda
  freezes an execution environment between invocations and may discard it without notice, so work left
  for after the response could be lost; the price is one DynamoDB round trip (a few ms) per logged
  request, which ``PREDICTION_LOG_SAMPLE_RATE`` trades against completeness.
* ``background`` (long-running servers: ``stepml serve``): items are queued and written by a thread with
  BatchWriteItem (25 per call) at most ``FLUSH_SECONDS`` later, and on exit. The queue is bounded
  (``MAX_QUEUED`` items, a few MB): when the table is slower than the requests, a full queue drops the
  item and counts it (``dropped``) rather than slow requests down or grow without end; the drops are
  reported by :meth:`PredictionLog.take_failures` as one message per ``DROP_REPORT_SECONDS`` (a warning
  per dropped item would cost an overloaded server a log line per request, just when it has least time).
  At exit the writer gets a deadline; what it has not written by
  then is given up and counted, so a stop never waits for a backlog.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import random
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline_core.aws.clients import transient_errors_as, unvalidated_client
from pipeline_core.errors import ConfigurationError
from pipeline_core.settings import optional_env, require_env

DEFAULT_SAMPLE_RATE = 1.0
DEFAULT_FEATURE_SAMPLE_RATE = 1.0
DEFAULT_TTL_DAYS = 30
# A DynamoDB item holds at most 400 KB, and a write costs one write unit per KB: the rows kept with a request
# stay within 64 KiB (as ASCII JSON, so characters are bytes), which leaves the item well under the limit
# whatever the other attributes, and bounds what one logged request costs. A request over it keeps its
# first rows, whole, and is marked features_truncated.
MAX_FEATURE_BYTES = 64 * 1024
# The sparse global secondary index (model_name, features_at) over the items that keep their rows.
FEATURES_INDEX = "ModelFeatures"
MODES = ("sync", "background")
# BatchWriteItem takes at most 25 items per call.
BATCH_SIZE = 25
FLUSH_SECONDS = 0.2
# Items waiting for the writer: ~1-3 KB each (more with rows kept for drift), so a few MB at most per process.
MAX_QUEUED = 2_000
# Items a full queue dropped are reported together, at most once in this many seconds.
DROP_REPORT_SECONDS = 10.0


def input_sha256(instances: list[dict[str, Any]]) -> str:
    """sha256 of the canonical JSON of the request's rows (sorted keys, no spaces, UTF-8).

    Two requests with the same rows hash alike whatever the key order or whitespace the client sent.
    """
    canonical = json.dumps(instances, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def bounded_rows(rows: Sequence[dict[str, Any]], max_bytes: int = MAX_FEATURE_BYTES) -> tuple[str, int, bool]:
    """(the rows as compact ASCII JSON, how many it holds, whether some were left out): whole rows, first
    ones first, within ``max_bytes``."""

    def dumps(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), allow_nan=True, default=str)

    text = dumps(list(rows))
    if len(text) <= max_bytes:
        return text, len(rows), False
    kept: list[str] = []
    size = 2  # the brackets
    for row in rows:
        piece = dumps(row)
        grown = size + len(piece) + (1 if kept else 0)
        if grown > max_bytes:
            break
        kept.append(piece)
        size = grown
    return "[" + ",".join(kept) + "]", len(kept), True


@dataclass(frozen=True)
class PredictionRecord:
    """What is logged about one request: its hash always, its rows (``rows``) when sampled for them."""

    request_id: str
    model_name: str
    model_version: int
    latency_ms: float
    model_latency_ms: float
    n_rows: int
    input_sha256: str
    rows: Sequence[dict[str, Any]] | None = None


@dataclass
class LoggedFeatures:
    """The rows logged for a model in a time window (newest requests first), and what was left out."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0  # logged requests read
    truncated_requests: int = 0  # requests whose rows were cut at MAX_FEATURE_BYTES when logged
    versions: Counter[int] = field(default_factory=Counter)  # rows per model version that answered
    capped: bool = False  # more rows were logged in the window than were read (max_rows)
    oldest: str | None = None
    newest: str | None = None


def _rate(text: str, name: str = "PREDICTION_LOG_SAMPLE_RATE") -> float:
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise ConfigurationError(f"{name} must be a number from 0 to 1, got {text!r}")
    return rate


def _mode(text: str) -> str:
    if text not in MODES:
        raise ConfigurationError(f"PREDICTION_LOG_MODE must be one of {', '.join(MODES)}, got {text!r}")
    return text


def _days(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ConfigurationError(f"PREDICTION_LOG_TTL_DAYS must be a whole number of days >= 1, got {text!r}")
    return int(text)


class PredictionLog:
    """Write sampled prediction records; :meth:`record` never raises (the caller counts failures)."""

    def __init__(
        self,
        table_name: str,
        *,
        sample_rate: float = DEFAULT_SAMPLE_RATE,
        feature_sample_rate: float = DEFAULT_FEATURE_SAMPLE_RATE,
        ttl_days: int = DEFAULT_TTL_DAYS,
        dynamodb_client: Any | None = None,
        clock: Callable[[], float] = time.time,
        sampler: Callable[[], float] = random.random,
        mode: str = "sync",
    ) -> None:
        self.table_name = table_name
        self.sample_rate = sample_rate
        self.feature_sample_rate = feature_sample_rate
        self.ttl_seconds = ttl_days * 86_400
        self.mode = _mode(mode)
        self._ddb = dynamodb_client
        self._clock = clock
        self._sampler = sampler
        self._writer: _BackgroundWriter | None = None
        self._writer_lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> PredictionLog:
        """Table from PREDICTION_LOG_TABLE (required); sample rates and TTL days are tuning knobs."""
        feature_rate = optional_env("PREDICTION_LOG_FEATURE_SAMPLE_RATE", str(DEFAULT_FEATURE_SAMPLE_RATE), environ)
        return cls(
            require_env("PREDICTION_LOG_TABLE", environ),
            sample_rate=_rate(optional_env("PREDICTION_LOG_SAMPLE_RATE", str(DEFAULT_SAMPLE_RATE), environ)),
            feature_sample_rate=_rate(feature_rate, "PREDICTION_LOG_FEATURE_SAMPLE_RATE"),
            ttl_days=_days(optional_env("PREDICTION_LOG_TTL_DAYS", str(DEFAULT_TTL_DAYS), environ)),
            mode=optional_env("PREDICTION_LOG_MODE", "sync", environ),
        )

    @property
    def dynamodb(self) -> Any:
        if self._ddb is None:
            self._ddb = unvalidated_client("dynamodb")
        return self._ddb

    def sampled(self) -> bool:
        """Whether this request is to be logged (decided before the work, so unsampled ones cost nothing)."""
        return self.sample_rate >= 1.0 or self._sampler() < self.sample_rate

    def features_sampled(self) -> bool:
        """Whether a logged request also keeps its rows (for drift monitoring)."""
        return self.feature_sample_rate >= 1.0 or self._sampler() < self.feature_sample_rate

    def item(self, record: PredictionRecord) -> dict[str, Any]:
        """The DynamoDB item (attribute-value form) for ``record``."""
        now = self._clock()
        at = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
        item: dict[str, Any] = {
            "request_id": {"S": record.request_id},
            "model_name": {"S": record.model_name},
            "model_version": {"N": str(record.model_version)},
            "latency_ms": {"N": f"{record.latency_ms:.3f}"},
            "model_latency_ms": {"N": f"{record.model_latency_ms:.3f}"},
            "n_rows": {"N": str(record.n_rows)},
            "input_sha256": {"S": record.input_sha256},
            "timestamp": {"S": at},
            "expires_at": {"N": str(int(now) + self.ttl_seconds)},
        }
        if record.rows is not None:
            text, kept, truncated = bounded_rows(record.rows)
            item["features"] = {"S": text}
            item["features_rows"] = {"N": str(kept)}
            item["features_truncated"] = {"BOOL": truncated}
            item["features_at"] = {"S": at}  # the sort key of FEATURES_INDEX: only items with rows have it
        return item

    def write(self, record: PredictionRecord) -> None:
        """PutItem the record (raises TransientStoreError or ClientError; see :meth:`record`)."""
        with transient_errors_as(f"logging prediction {record.request_id}"):
            self.dynamodb.put_item(TableName=self.table_name, Item=self.item(record))

    def record(self, record: PredictionRecord) -> Exception | None:
        """Write (or queue) the record; a failure is returned, not raised: logging must never fail a
        prediction. In background mode, failures of earlier batches are reported by :meth:`take_failures`."""
        try:
            if self.mode == "background":
                writer = self._background()
                if not writer.submit(self.item(record)) and writer.closed:
                    return RuntimeError("the prediction log is closed (the server is stopping); item dropped")
                return None  # or dropped by a full queue: counted, and reported by take_failures
            self.write(record)
        except Exception as error:  # the request has its answer already; a lost log line is the lesser harm
            return error
        return None

    def logged_features(self, model_name: str, since: datetime, until: datetime, max_rows: int) -> LoggedFeatures:
        """The rows logged for ``model_name`` from ``since`` to ``until``, newest requests first, at most
        ``max_rows`` of them (whole requests): a Query of the features index, never a scan of the table."""
        found = LoggedFeatures()
        bounds = {
            ":m": {"S": model_name},
            ":a": {"S": since.astimezone(UTC).isoformat(timespec="milliseconds")},
            ":b": {"S": until.astimezone(UTC).isoformat(timespec="milliseconds")},
        }
        with transient_errors_as(f"reading the prediction log of {model_name}"):
            pages = self.dynamodb.get_paginator("query").paginate(
                TableName=self.table_name,
                IndexName=FEATURES_INDEX,
                KeyConditionExpression="model_name = :m AND features_at BETWEEN :a AND :b",
                ExpressionAttributeValues=bounds,
                ScanIndexForward=False,
            )
            for page in pages:
                for item in page.get("Items", []):
                    rows = json.loads(item["features"]["S"])
                    if len(found.rows) + len(rows) > max_rows:
                        found.capped = True
                        return found
                    found.rows += rows
                    found.requests += 1
                    found.truncated_requests += bool(item.get("features_truncated", {}).get("BOOL"))
                    found.versions[int(item["model_version"]["N"])] += len(rows)
                    found.newest = found.newest or item["features_at"]["S"]
                    found.oldest = item["features_at"]["S"]
        return found

    def take_failures(self) -> list[str]:
        """Errors the background writer met since the last call (empty in sync mode)."""
        return self._writer.take_failures() if self._writer is not None else []

    def flush(self, timeout: float = 5.0) -> None:
        """Write whatever the background writer still holds (called at exit too)."""
        if self._writer is not None:
            self._writer.flush(timeout)

    def _background(self) -> _BackgroundWriter:
        if self._writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = _BackgroundWriter(self)
        return self._writer


_WRITERS: weakref.WeakSet[_BackgroundWriter] = weakref.WeakSet()


def flush_background_writers(timeout: float = 5.0) -> None:
    """Write what every background writer of this process still holds (a server that is stopping)."""
    for writer in list(_WRITERS):
        writer.flush(timeout)


def close_background_writers(timeout: float) -> int:
    """A process that is stopping: every background writer writes what it can within ``timeout`` seconds
    (all writers together), then gives up the rest. Returns how many items were given up."""
    deadline = time.monotonic() + timeout
    return sum(writer.close(max(0.0, deadline - time.monotonic())) for writer in list(_WRITERS))


class _BackgroundWriter:
    """A daemon thread that writes queued items with BatchWriteItem."""

    def __init__(self, log: PredictionLog) -> None:
        self._log = log
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = threading.Condition()
        self._failures: list[str] = []
        self._busy = False
        self._closed = False
        self.dropped = 0  # items refused by a full queue, or given up at close
        self._unreported_drops = 0  # refused by a full queue since the last report
        self._drops_reported_at = float("-inf")
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()
        _WRITERS.add(self)
        atexit.register(self.close, 5.0)

    def submit(self, item: dict[str, Any]) -> bool:
        with self._wake:
            if self._closed or len(self._queue) >= MAX_QUEUED:
                self.dropped += 1
                self._unreported_drops += not self._closed
                return False
            self._queue.append(item)
            if len(self._queue) >= BATCH_SIZE:
                self._wake.notify()
        return True

    @property
    def closed(self) -> bool:
        return self._closed

    def take_failures(self) -> list[str]:
        now = time.monotonic()
        with self._wake:
            failures, self._failures = self._failures, []
            if self._unreported_drops and now - self._drops_reported_at >= DROP_REPORT_SECONDS:
                failures.append(
                    f"{self._unreported_drops} prediction log item(s) dropped: the queue was full ({MAX_QUEUED} "
                    "items waiting for the table); the table is slower than the requests"
                )
                self._unreported_drops, self._drops_reported_at = 0, now
        return failures

    def flush(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self._wake:
            self._wake.notify()
            while (self._queue or self._busy) and time.monotonic() < deadline:
                self._wake.wait(0.05)

    def close(self, timeout: float) -> int:
        """Write what is queued for up to ``timeout`` seconds, refuse new items, and give up the rest; how
        many items were given up (a second call gives up nothing more)."""
        self.flush(timeout)
        with self._wake:
            left = len(self._queue) if not self._closed else 0
            self._queue.clear()
            self._closed = True
            self.dropped += left
        return left

    def _run(self) -> None:
        while True:
            with self._wake:
                if len(self._queue) < BATCH_SIZE:
                    self._wake.wait(FLUSH_SECONDS)
                batch = [self._queue.popleft() for _ in range(min(BATCH_SIZE, len(self._queue)))]
                self._busy = bool(batch)
            if batch:
                error = self._write(batch)
                with self._wake:
                    self._busy = False
                    if error:
                        self._failures.append(error)
                    self._wake.notify_all()

    def _write(self, batch: list[dict[str, Any]]) -> str | None:
        requests = [{"PutRequest": {"Item": item}} for item in batch]
        try:
            for _attempt in range(3):
                answer = self._log.dynamodb.batch_write_item(RequestItems={self._log.table_name: requests})
                requests = answer.get("UnprocessedItems", {}).get(self._log.table_name, [])
                if not requests:
                    return None
                time.sleep(0.05)  # throttled: DynamoDB hands back what it did not write
            return f"{len(requests)} prediction log item(s) still unprocessed after 3 attempts"
        except Exception as error:
            return f"{len(requests)} prediction log item(s) lost: {type(error).__name__}: {error}"
