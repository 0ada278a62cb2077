"""How far a batch scoring's transform job is, and the line the CLI shows for it while it runs.

On local targets (embedded, LocalStack) the SageMaker stand-in writes ``StandInProgress`` (records done and in
all) into its job record as it goes, so the line shows rows done / total and the rate. SageMaker's
DescribeTransformJob says no more than the job's status, so on AWS the line shows the status, the rows the job
was given and the time it has run (docs/batch.md#progress).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from stepml.targets import Target

POLL_SECONDS = 1.0
# Without a terminal the line is printed again only this often (a log file gets a line, not a stream).
PLAIN_LINE_SECONDS = 5.0


@dataclass(frozen=True)
class Progress:
    """One reading of a transform job: its status, and where the stand-in says so, records done and in all."""

    status: str
    done: int | None = None
    total: int | None = None


def standin_progress(target: Target, job_name: str) -> Progress | None:
    """The stand-in's job record (``_sagemaker/transform-jobs/<job>.json`` in the stack's bucket), or None."""
    from pipeline_core.standin.store import RecordStore

    record = RecordStore(target.outputs.data_bucket, target.client("s3")).get("transform-jobs", job_name)
    if record is None:
        return None
    progress = record.get("StandInProgress") or {}
    return Progress(
        str(record.get("TransformJobStatus", "InProgress")),
        progress.get("RecordsProcessed"),
        progress.get("RecordsTotal"),
    )


def sagemaker_progress(target: Target, job_name: str) -> Progress | None:
    """DescribeTransformJob's status (SageMaker reports no record counts), or None before the job exists."""
    from botocore.exceptions import ClientError

    try:
        answer = target.client("sagemaker").describe_transform_job(TransformJobName=job_name)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in {"ValidationException", "ResourceNotFound"}:
            return None
        raise
    return Progress(str(answer.get("TransformJobStatus", "InProgress")))


def reader_for(target: Target) -> Callable[[Target, str], Progress | None]:
    """Where a target's transform jobs report progress: the stand-in's record locally, SageMaker on AWS."""
    return sagemaker_progress if target.name == "aws" else standin_progress


def progress_line(reading: Progress | None, rows: int, seconds: float, counts: bool = True) -> str:
    """``  … Transform  42,000 / 100,000 rows (42%)  12,345 rows/s  3.4 s``; where the job reports no counts
    (``counts`` False: SageMaker), its status."""
    if reading is None:
        return f"  … Transform  starting the transform job for {rows:,} rows  {seconds:.1f} s"
    if not counts:
        return f"  … Transform  {reading.status}: {rows:,} rows  {seconds:.1f} s (SageMaker reports no row counts)"
    if reading.done is None or not reading.total:
        return f"  … Transform  {reading.status}: reading {rows:,} rows  {seconds:.1f} s"
    rate = reading.done / seconds if seconds > 0 else 0.0
    share = 100 * reading.done / reading.total
    return (
        f"  … Transform  {reading.done:,} / {reading.total:,} rows ({share:.0f}%)  {rate:,.0f} rows/s  {seconds:.1f} s"
    )


class TransformWatch:
    """A thread that shows the transform job's progress while the Transform state runs."""

    def __init__(self, target: Target, job_name: str, rows: int, out: TextIO) -> None:
        self.target, self.job_name, self.rows, self.out = target, job_name, rows, out
        self.read = reader_for(target)
        self.started = time.monotonic()
        self.last: Progress | None = None
        self._stop = threading.Event()
        self._tty = bool(getattr(out, "isatty", lambda: False)())
        self._thread = threading.Thread(target=self._run, name="stepml-transform-progress", daemon=True)

    def start(self) -> TransformWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._tty:
            print(file=self.out, flush=True)  # end the line that was rewritten in place

    def _run(self) -> None:
        printed = 0.0
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.last = self.read(self.target, self.job_name)
            except Exception:  # progress is for looking at: a failed read never stops the command
                continue
            line = progress_line(self.last, self.rows, time.monotonic() - self.started, self.target.name != "aws")
            if self._tty:
                print(f"\r{line}\033[K", end="", file=self.out, flush=True)
            elif time.monotonic() - printed >= PLAIN_LINE_SECONDS:
                printed = time.monotonic()
                print(line, file=self.out, flush=True)


def seconds_between(start: Any, end: Any) -> float | None:
    """Seconds from one history timestamp to another (datetimes or epoch seconds)."""
    if start is None or end is None:
        return None
    if isinstance(start, datetime) and isinstance(end, datetime):
        return (end - start).total_seconds()
    try:
        return float(end) - float(start)
    except (TypeError, ValueError):
        return None
