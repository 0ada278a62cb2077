"""Ingest: route the dataset by its size, copy it into the run's raw/ prefix, hash it and open the run record.

The dataset's size is read first (one HEAD) and decides the path the run takes
(:mod:`pipeline_core.stages.data_path`): a dataset too large for it is refused before anything is copied.
The copy is server-side (multipart above CopyObject's 5 GB) and the hash is read as a stream, so Ingest's
memory does not grow with the file. The source object is only read, never changed or deleted. Every step is idempotent
(a copy to the same key and an upsert of the run record), so the state machine may retry the whole stage.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel

from pipeline_core.aws.runs import RunLog, utc_now
from pipeline_core.aws.s3 import ObjectStore, S3Uri
from pipeline_core.errors import DatasetNotFoundError, DataValidationError
from pipeline_core.models import IngestResult, RunConfig
from pipeline_core.observability import logger
from pipeline_core.stages.data_path import DataPathSettings, choose_path

FORMATS: dict[str, Literal["csv", "parquet"]] = {".csv": "csv", ".parquet": "parquet"}


class IngestEvent(BaseModel):
    """What the Ingest state passes (see its Parameters in the ASL)."""

    config: RunConfig
    execution_arn: str


def detect_format(uri: str) -> Literal["csv", "parquet"]:
    """The dataset format from the file extension (case-insensitive); anything else is rejected."""
    name = PurePosixPath(S3Uri.parse(uri).key).name
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in FORMATS:
        found = f"extension {suffix!r}" if suffix else "no extension"
        raise DataValidationError(
            f"dataset {uri} has {found}; accepted extensions: {', '.join(FORMATS)} "
            "(compressed or spreadsheet files must be converted to an uncompressed .csv or .parquet first)"
        )
    return FORMATS[suffix]


def ingest(
    config: RunConfig,
    execution_arn: str,
    store: ObjectStore,
    runs: RunLog,
    definition_version: str | None = None,
    *,
    settings: DataPathSettings,
) -> IngestResult:
    """Copy ``config.dataset`` to ``config.raw_prefix``, record the run as RUNNING and describe the copy.

    ``settings`` route the dataset by its size (a DatasetTooLargeError, before any copy, when it is too
    large): the template's, from the function's environment. ``definition_version`` is the state
    machine version this execution runs (pipeline_core.aws.definition_version); it is recorded with the run
    and passed on to Register in the result.
    """
    source = config.dataset
    try:
        size = store.size(source)
    except DatasetNotFoundError:
        size = None
    except ClientError as error:
        # a missing bucket may surface as NoSuchBucket rather than a 404
        if error.response.get("Error", {}).get("Code") != "NoSuchBucket":
            raise
        size = None
    if size is None:
        raise DatasetNotFoundError(f"dataset {source} does not exist (no object at that bucket and key)")
    file_format = detect_format(source)
    path, path_reason = choose_path(size, settings, file_format)
    logger.info("data path", extra={"path": path, "reason": path_reason, "size_bytes": size})

    raw_uri = config.raw_prefix + PurePosixPath(S3Uri.parse(source).key).name
    if raw_uri != source:  # S3 refuses to copy an object onto itself without changes
        store.copy(source, raw_uri, size=size)
    # Hash the copy rather than the source: the raw copy is what the later stages read.
    sha256, raw_size = store.sha256_and_size(raw_uri)
    result = IngestResult(
        raw_uri=raw_uri,
        source_uri=source,
        sha256=sha256,
        size_bytes=raw_size,
        format=file_format,
        definition_version=definition_version,
        path=path,
        path_reason=path_reason,
    )
    runs.update_run(
        config.run_id,
        status="RUNNING",
        dataset=source,
        raw_uri=raw_uri,
        sha256=result.sha256,
        size_bytes=result.size_bytes,
        format=file_format,
        model_name=config.model_name,
        execution_arn=execution_arn,
        definition_version=definition_version,
        started_at=utc_now(),
        resume_of=config.resume_of,  # left out when None: a run that resumes none
        trigger=config.trigger,
        no_cache=config.no_cache or None,
    )
    return result
