"""StartPipeline: start a run for a data file uploaded under ``incoming/`` (S3 "Object Created" event).

The bucket sends its events to EventBridge; a rule on ``incoming/`` invokes this function with AWS's
documented event shape (``detail.bucket.name``, ``detail.object.key|size|etag|version-id``). EventBridge
delivers at least once, so the execution name is derived from what identifies the upload (bucket, key and
version id, or the ETag on an unversioned bucket): a repeated event yields the same name, and Step Functions
refuses a second execution with a name it has seen in the last 90 days.

Object keys: S3's own notifications (Lambda/SQS/SNS) URL-encode the key ("a b.csv" -> "a+b.csv"). AWS's
EventBridge documentation does not say either way, and public sources disagree (Powertools' data class
decodes it, moto's EventBridge event does not), so a key that would change when decoded is checked against
the bucket: whichever form exists is the object.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import PurePosixPath
from typing import Any, Literal
from urllib.parse import unquote_plus

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from pipeline_core.aws.clients import client, transient_errors_as
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.errors import DatasetNotFoundError, InputValidationError
from pipeline_core.observability import logger
from pipeline_core.settings import require_env

DATA_PREFIX = "incoming/"
DATA_SUFFIXES = (".csv", ".parquet")
# Step Functions execution names: 1-80 characters; [A-Za-z0-9-_] keeps them valid in CloudWatch metrics too.
EXECUTION_NAME_MAX = 80
HASH_CHARS = 12
_NOT_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


class EventModel(BaseModel):
    """An EventBridge event's parts, as far as a stage reads them (other fields ignored)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class S3Bucket(EventModel):
    name: str = Field(min_length=1)


class S3Object(EventModel):
    key: str = Field(min_length=1)
    size: int | None = None
    etag: str | None = None
    version_id: str | None = Field(None, alias="version-id")
    sequencer: str | None = None


class ObjectCreatedDetail(EventModel):
    bucket: S3Bucket
    object: S3Object


class ObjectCreatedEvent(EventModel):
    """The EventBridge event S3 sends for a new object (only the fields this stage reads)."""

    source: str
    detail_type: str = Field(alias="detail-type")
    detail: ObjectCreatedDetail


class StartPipelineResult(BaseModel):
    """What happened to one upload event: a run started, one already existed, or the object is not data."""

    status: Literal["started", "already_started", "ignored"]
    reason: str | None = None
    bucket: str
    key: str
    dataset: str | None = None
    execution_name: str | None = None
    execution_arn: str | None = None


def ignore_reason(key: str, size: int | None) -> str | None:
    """Why an object is not a dataset to train on, or None when it is one."""
    if not key.startswith(DATA_PREFIX):
        return f"key {key!r} is not under {DATA_PREFIX}"
    if key.endswith("/"):
        return f"key {key!r} is a folder marker"
    if not key.lower().endswith(DATA_SUFFIXES):
        return f"key {key!r} is not a {' or '.join(DATA_SUFFIXES)} file"
    if size == 0:
        return f"object {key!r} is empty (0 bytes)"
    return None


def execution_name(bucket: str, key: str, version_id: str | None, etag: str | None) -> str:
    """Deterministic execution name for one upload: readable file-name slug + 12 hex of a hash.

    The hash covers bucket, key and the version id (or the ETag when the bucket is unversioned), so a new
    upload of the same key gets a new name and a repeated event for the same upload gets the same name.
    """
    identity = version_id or (etag or "").strip('"')
    if not identity:
        raise InputValidationError(
            f"the event for s3://{bucket}/{key} has neither detail.object.version-id nor detail.object.etag; "
            "cannot tell this upload apart from another upload of the same key"
        )
    digest = hashlib.sha256(f"{bucket}\n{key}\n{identity}".encode()).hexdigest()[:HASH_CHARS]
    slug = name_slug(PurePosixPath(key).name, EXECUTION_NAME_MAX - HASH_CHARS - 1, "upload")
    return f"{slug}-{digest}"


def name_slug(text: str, room: int, fallback: str) -> str:
    """``text`` as a readable part of an execution name: [A-Za-z0-9_-] only, at most ``room`` characters."""
    slug = _NOT_NAME_CHARS.sub("-", text).strip("-_")
    return slug[:room].rstrip("-_") or fallback


def resolve_key(bucket: str, key: str, store: ObjectStore) -> str:
    """The object's real key: ``key`` as sent, or its URL-decoded form when only that one exists."""
    decoded = unquote_plus(key)
    if decoded == key:
        return key
    for candidate in (key, decoded):
        if store.exists(f"s3://{bucket}/{candidate}"):
            return candidate
    raise DatasetNotFoundError(
        f"the event names s3://{bucket}/{key}, but neither that key nor its URL-decoded form {decoded!r} exists"
    )


def execution_arn_for(state_machine_arn: str, name: str) -> str:
    """The ARN an execution named ``name`` of ``state_machine_arn`` has.

    An execution started through a version or alias (``...:stateMachine:<machine>:<qualifier>``) has the
    same ARN as one started unqualified: ``...:execution:<machine>:<name>``.
    """
    unqualified = ":".join(state_machine_arn.split(":")[:7])
    return unqualified.replace(":stateMachine:", ":execution:", 1) + ":" + name


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def start_execution(sfn: Any, state_machine_arn: str, name: str, execution_input: dict[str, Any]) -> tuple[str, str]:
    """Start ``name`` with ``execution_input``; ``(status, execution_arn)``, a duplicate included."""
    arn = execution_arn_for(state_machine_arn, name)
    with transient_errors_as(f"starting execution {name}"):
        try:
            sfn.describe_execution(executionArn=arn)
            return "already_started", arn
        except ClientError as error:
            if _error_code(error) != "ExecutionDoesNotExist":
                raise
        try:
            answer = sfn.start_execution(
                stateMachineArn=state_machine_arn, name=name, input=json.dumps(execution_input)
            )
        except ClientError as error:
            # A concurrent delivery of the same event won the race between describe and start.
            if _error_code(error) == "ExecutionAlreadyExists":
                return "already_started", arn
            raise
    return "started", str(answer["executionArn"])


def start_pipeline(
    event: dict[str, Any],
    sfn: Any | None = None,
    store: ObjectStore | None = None,
    environ: dict[str, str] | None = None,
) -> StartPipelineResult:
    """Handle one S3 "Object Created" event: ignore non-data objects, otherwise start (at most) one run."""
    parsed = ObjectCreatedEvent.model_validate(event)
    bucket, raw_key = parsed.detail.bucket.name, parsed.detail.object.key
    if parsed.source != "aws.s3" or parsed.detail_type != "Object Created":
        not_created = f"event is {parsed.source!r} {parsed.detail_type!r}, not an aws.s3 'Object Created' event"
        logger.info("upload ignored", extra={"reason": not_created, "bucket": bucket, "key": raw_key})
        return StartPipelineResult(status="ignored", reason=not_created, bucket=bucket, key=raw_key)

    reason = ignore_reason(raw_key, parsed.detail.object.size)
    if reason is not None and ignore_reason(unquote_plus(raw_key), parsed.detail.object.size) is not None:
        logger.info("upload ignored", extra={"reason": reason, "bucket": bucket, "key": raw_key})
        return StartPipelineResult(status="ignored", reason=reason, bucket=bucket, key=raw_key)

    state_machine_arn = require_env("STATE_MACHINE_ARN", environ)
    key = resolve_key(bucket, raw_key, store or ObjectStore())
    reason = ignore_reason(key, parsed.detail.object.size)
    if reason is not None:
        logger.info("upload ignored", extra={"reason": reason, "bucket": bucket, "key": key})
        return StartPipelineResult(status="ignored", reason=reason, bucket=bucket, key=key)

    name = execution_name(bucket, key, parsed.detail.object.version_id, parsed.detail.object.etag)
    dataset = f"s3://{bucket}/{key}"
    execution_input = {"dataset": dataset, "trigger": f"upload of {dataset}"}
    status, arn = start_execution(sfn or client("stepfunctions"), state_machine_arn, name, execution_input)
    logger.info(
        "run started" if status == "started" else "run already started for this upload",
        extra={"execution_name": name, "execution_arn": arn, "dataset": dataset},
    )
    return StartPipelineResult(
        status="started" if status == "started" else "already_started",
        bucket=bucket,
        key=key,
        dataset=dataset,
        execution_name=name,
        execution_arn=arn,
    )
