"""CreateTransformJob of the stand-in: SageMaker Batch Transform over S3 objects, run to the end in process.

What SageMaker does, reproduced on local targets:

* every object under ``TransformInput.DataSource.S3DataSource.S3Uri`` (an ``S3Prefix``) is read and, with
  ``SplitType=Line``, split into records at newlines; ``BatchStrategy=MultiRecord`` packs as many records into
  one request as fit in ``MaxPayloadInMB`` (``SingleRecord``: one per request; ``SplitType=None``: the whole
  object is one request);
* each request goes through the model's own serving code, loaded from the model record as SageMaker hosting
  loads it (``model_fn`` once, then ``input_fn`` -> ``predict_fn`` -> ``output_fn`` with the request's
  ``ContentType`` and ``TransformOutput.Accept``; :mod:`pipeline_core.standin.runtime`);
* the answers are written in request order to ``<S3OutputPath>/<key below the input prefix>.out``, each
  followed by a newline with ``AssembleWith=Line``; an object's ``.out`` is uploaded only once all of its
  records succeeded (SageMaker uploads no partial object);
* the result is DescribeTransformJob's shape with ``TransformJobStatus`` ``Completed`` (what the
  ``createTransformJob.sync`` integration returns), or the job ``Failed`` with a ``FailureReason`` naming the
  object and records that failed, raised as :class:`TransformJobFailedError`.

Where it differs from SageMaker: one worker, one request at a time (``MaxConcurrentTransforms`` and
``TransformResources`` are recorded, not used); ``DataProcessing`` filters and joins, ``ManifestFile`` inputs,
Gzip and RecordIO/TFRecord splits are refused with a ValidationException rather than emulated; an input object
is held in memory. The record also carries ``StandInProgress`` (records total and done, updated at most every
``PROGRESS_SECONDS`` while the job runs), which SageMaker's DescribeTransformJob has no equivalent of: the CLI
shows it as progress on local targets.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pipeline_core.aws.s3 import S3Uri
from pipeline_core.errors import TransformJobFailedError
from pipeline_core.observability import logger
from pipeline_core.stages.batch_files import paused_gc
from pipeline_core.standin.endpoints import describe_model
from pipeline_core.standin.errors import ModelError, ResourceInUse, ResourceNotFound, ValidationException
from pipeline_core.standin.store import RecordStore, check_name, now_iso, same_request, validate_request

if TYPE_CHECKING:
    from pipeline_core.standin.runtime import LoadedModel

MIB = 1024 * 1024
# SageMaker's defaults and limits (CreateTransformJob): MaxPayloadInMB 6 by default, and
# MaxPayloadInMB x MaxConcurrentTransforms may not exceed 100.
DEFAULT_MAX_PAYLOAD_MB = 6
MAX_PAYLOAD_PRODUCT_MB = 100
PROGRESS_SECONDS = 1.0
# A failure reason longer than this is cut (SageMaker's FailureReason has at most 1024 characters).
FAILURE_REASON_CHARS = 1024


def output_uri(input_prefix: str, object_uri: str, output_path: str) -> str:
    """Where SageMaker writes an input object's results: its key below the input prefix, under the output path,
    with ``.out`` appended (``s3://b/in/x/data.jsonl`` under prefix ``s3://b/in``: ``<out>/x/data.jsonl.out``)."""
    prefix, key = S3Uri.parse(input_prefix).key, S3Uri.parse(object_uri).key
    relative = key[len(prefix) :].lstrip("/") if key.startswith(prefix) else key.rsplit("/", 1)[-1]
    relative = relative or key.rsplit("/", 1)[-1]
    return str(S3Uri.parse(output_path).child(f"{relative}.out"))


def check_transform_request(store: RecordStore, request: Mapping[str, Any]) -> None:
    """What the stand-in runs: SageMaker's own validation, then the options it supports (others refused)."""
    validate_request("CreateTransformJob", request)
    name = check_name("transform-jobs", request["TransformJobName"])
    source = request["TransformInput"]["DataSource"].get("S3DataSource")
    if source is None:
        raise ValidationException(f"transform job {name}: the stand-in reads only TransformInput S3DataSource")
    if source.get("S3DataType") != "S3Prefix":
        raise ValidationException(
            f"transform job {name}: the stand-in supports S3DataType S3Prefix, not {source.get('S3DataType')}"
        )
    S3Uri.parse(source["S3Uri"])
    S3Uri.parse(request["TransformOutput"]["S3OutputPath"])
    transform_input = request["TransformInput"]
    if transform_input.get("CompressionType", "None") != "None":
        raise ValidationException(f"transform job {name}: the stand-in supports CompressionType None only")
    if transform_input.get("SplitType", "None") not in {"None", "Line"}:
        raise ValidationException(
            f"transform job {name}: the stand-in supports SplitType Line or None, not {transform_input['SplitType']}"
        )
    payload = request.get("MaxPayloadInMB", DEFAULT_MAX_PAYLOAD_MB)
    concurrent = request.get("MaxConcurrentTransforms") or 1
    if payload < 1:
        raise ValidationException(f"transform job {name}: MaxPayloadInMB must be at least 1 here, got {payload}")
    if payload * concurrent > MAX_PAYLOAD_PRODUCT_MB:
        raise ValidationException(
            f"transform job {name}: MaxPayloadInMB ({payload}) x MaxConcurrentTransforms ({concurrent}) must not "
            f"exceed {MAX_PAYLOAD_PRODUCT_MB}"
        )
    processing = request.get("DataProcessing") or {}
    unsupported = {
        key: value
        for key, value in processing.items()
        if (key in {"InputFilter", "OutputFilter"} and value != "$") or (key == "JoinSource" and value != "None")
    }
    if unsupported:
        raise ValidationException(
            f"transform job {name}: the stand-in does not apply DataProcessing {unsupported} (filters and joins "
            "are SageMaker's only)"
        )
    describe_model(store, request["ModelName"])  # "Could not find model" as on SageMaker


def _records(data: bytes, split: str) -> list[bytes]:
    """The records of an object: its non-empty lines (SplitType Line) or the whole object (None)."""
    if split != "Line":
        return [data] if data else []
    return [line for line in data.split(b"\n") if line.strip()]


def _batches(records: list[bytes], strategy: str, limit: int, uri: str) -> Iterator[tuple[int, list[bytes]]]:
    """(index of the first record, records) per request: one record (SingleRecord) or as many as fit in
    ``limit`` bytes with their newlines (MultiRecord). A record over the limit fails the job, as on SageMaker."""
    start, size = 0, 0
    batch: list[bytes] = []
    for index, record in enumerate(records):
        length = len(record) + 1
        if length > limit:
            raise TransformJobFailedError(
                f"record {index + 1} of {uri} has {len(record)} bytes, more than MaxPayloadInMB ({limit // MIB} MB)"
            )
        if batch and (strategy == "SingleRecord" or size + length > limit):
            yield start, batch
            start, batch, size = index, [], 0
        batch.append(record)
        size += length
    if batch:
        yield start, batch


class _Progress:
    """Records done and to do, written to the job's record at most every PROGRESS_SECONDS."""

    def __init__(self, store: RecordStore, name: str, record: dict[str, Any], total: int) -> None:
        self.store, self.name, self.record = store, name, record
        self.total, self.done, self._written = total, 0, 0.0

    def advance(self, records: int, force: bool = False) -> None:
        self.done += records
        now = time.monotonic()
        if force or now - self._written >= PROGRESS_SECONDS:
            self._written = now
            self.record["StandInProgress"] = {
                "RecordsTotal": self.total,
                "RecordsProcessed": self.done,
                "UpdatedAt": now_iso(),
            }
            self.store.put("transform-jobs", self.name, self.record)


def _run(store: RecordStore, request: Mapping[str, Any], record: dict[str, Any], deadline: float | None) -> list[str]:
    """Transform every input object; the .out URIs written."""
    from pipeline_core.standin.runtime import transform_model  # the model's code needs pandas; loaded here only

    prefix = request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    objects = [uri for uri in store.objects.list_uris(prefix) if not uri.endswith("/")]
    if not objects:
        raise TransformJobFailedError(f"ClientError: no S3 objects found under S3 URL {prefix}")
    split = request["TransformInput"].get("SplitType", "None")
    contents = {uri: _records(store.objects.read_bytes(uri), split) for uri in objects}
    progress = _Progress(store, request["TransformJobName"], record, sum(len(r) for r in contents.values()))
    progress.advance(0, force=True)  # the total is known before the model loads (seconds, the first time)
    try:
        model = transform_model(store, request["ModelName"])
    except ModelError as error:
        raise TransformJobFailedError(f"ClientError: {error}") from error
    # batches allocate millions of short-lived objects and free them by reference counting (batch_files.paused_gc)
    with paused_gc():
        written = [
            _transform_object(store, request, uri, lines, model, progress, deadline) for uri, lines in contents.items()
        ]
    progress.advance(0, force=True)
    return written


def _transform_object(
    store: RecordStore,
    request: Mapping[str, Any],
    uri: str,
    records: list[bytes],
    model: LoadedModel,
    progress: _Progress,
    deadline: float | None,
) -> str:
    """One input object's records through the model, the answers in order to its .out (uploaded only once every
    record succeeded); the .out's URI."""
    transform_input, transform_output = request["TransformInput"], request["TransformOutput"]
    content_type = transform_input.get("ContentType", "application/octet-stream")
    accept = transform_output.get("Accept", content_type)
    line = transform_output.get("AssembleWith", "None") == "Line"
    limit = int(request.get("MaxPayloadInMB", DEFAULT_MAX_PAYLOAD_MB)) * MIB
    with tempfile.TemporaryFile() as out:
        for start, batch in _batches(records, request.get("BatchStrategy", "MultiRecord"), limit, uri):
            if deadline is not None and time.monotonic() > deadline:
                raise TransformJobFailedError(
                    f"transform job {request['TransformJobName']} ran out of time after {progress.done} of "
                    f"{progress.total} records (the stand-in's Lambda timeout)"
                )
            try:
                body, _ = model.invoke(b"\n".join(batch) + b"\n", content_type, accept)
            except Exception as error:
                raise TransformJobFailedError(
                    f"ClientError: the model failed on records {start + 1}-{start + len(batch)} of {uri}: "
                    f"{type(error).__name__}: {error}"
                ) from error
            out.write(body)
            if line and not body.endswith(b"\n"):
                out.write(b"\n")
            progress.advance(len(batch))
        target = output_uri(
            transform_input["DataSource"]["S3DataSource"]["S3Uri"], uri, transform_output["S3OutputPath"]
        )
        return store.objects.write_stream(target, out, accept)


def create_transform_job(
    store: RecordStore, request: dict[str, Any], time_budget_seconds: float | None = None
) -> dict[str, Any]:
    """CreateTransformJob run to the end: DescribeTransformJob with status ``Completed``, or the job ``Failed``
    and :class:`TransformJobFailedError` with its reason. ``time_budget_seconds`` (what is left of the Lambda's
    timeout) bounds the run. A Completed job of the same name and request is returned as it is: a retried task
    does not transform again; another request under the name is ResourceInUse, as on SageMaker."""
    check_transform_request(store, request)
    name = request["TransformJobName"]
    existing = store.get("transform-jobs", name)
    if existing is not None:
        if not same_request(existing, request):
            raise ResourceInUse(f"Transform job names must be unique within an AWS account and region: {name}")
        if existing["TransformJobStatus"] == "Completed" and all(
            store.objects.exists(uri) for uri in existing.get("StandInOutputs", [])
        ):
            logger.info("transform job already completed; returning it", extra={"transform_job": name})
            return existing
    created = existing["CreationTime"] if existing else now_iso()
    record: dict[str, Any] = {
        **{key: value for key, value in request.items() if key != "Tags"},
        "TransformJobArn": store.arn("transform-jobs", name),
        "TransformJobStatus": "InProgress",
        "CreationTime": created,
        "TransformStartTime": now_iso(),
    }
    store.put("transform-jobs", name, record)
    deadline = None if time_budget_seconds is None else time.monotonic() + time_budget_seconds
    started = time.monotonic()
    try:
        written = _run(store, request, record, deadline)
    except TransformJobFailedError as error:
        reason = str(error)
        if len(reason) > FAILURE_REASON_CHARS:
            reason = reason[: FAILURE_REASON_CHARS - 3] + "..."
        record.update(TransformJobStatus="Failed", FailureReason=reason, TransformEndTime=now_iso())
        store.put("transform-jobs", name, record)
        logger.info("transform job failed", extra={"transform_job": name, "reason": reason})
        raise TransformJobFailedError(reason) from error
    record.update(TransformJobStatus="Completed", TransformEndTime=now_iso(), StandInOutputs=written)
    logger.info(
        "transform job completed",
        extra={"transform_job": name, "outputs": written, "seconds": round(time.monotonic() - started, 3)},
    )
    return store.put("transform-jobs", name, record)


def describe_transform_job(store: RecordStore, request: dict[str, Any]) -> dict[str, Any]:
    """DescribeTransformJob; a missing job is SageMaker's ResourceNotFound."""
    validate_request("DescribeTransformJob", request)
    record = store.get("transform-jobs", check_name("transform-jobs", request["TransformJobName"]))
    if record is None:
        raise ResourceNotFound(f"Could not find requested job with name {request['TransformJobName']}")
    return record
