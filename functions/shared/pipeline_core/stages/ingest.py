"""Ingest: copy the dataset into the run's raw/ prefix, hash it and open the run record.

The source object is only read (a server-side copy), never changed or deleted. Every step is idempotent
(a copy to the same key and an upsert of the run record), so the state machine may retry the whole stage.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel

from pipeline_core.aws.runs import RunLog, utc_now
from pipeline_core.aws.s3 import ObjectStore, S3Uri, sha256_hex
from pipeline_core.errors import DatasetNotFoundError, DataValidationError
from pipeline_core.models import IngestResult, RunConfig

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
) -> IngestResult:
    """Copy ``config.dataset`` to ``config.raw_prefix``, record the run as RUNNING and describe the copy.

    ``definition_version`` is the state machine version this execution runs (pipeline_core.aws.definition_version);
    it is recorded with the run and passed on to Register in the result.
    """
    source = config.dataset
    try:
        found = store.exists(source)
    except ClientError as error:
        # ObjectStore.exists answers False for a missing key; a missing bucket surfaces as NoSuchBucket.
        if error.response.get("Error", {}).get("Code") != "NoSuchBucket":
            raise
        found = False
    if not found:
        raise DatasetNotFoundError(f"dataset {source} does not exist (no object at that bucket and key)")
    file_format = detect_format(source)

    raw_uri = config.raw_prefix + PurePosixPath(S3Uri.parse(source).key).name
    if raw_uri != source:  # S3 refuses to copy an object onto itself without changes
        store.copy(source, raw_uri)
    # Hash the copy rather than the source: the raw copy is what the later stages read.
    data = store.read_bytes(raw_uri)
    result = IngestResult(
        raw_uri=raw_uri,
        source_uri=source,
        sha256=sha256_hex(data),
        size_bytes=len(data),
        format=file_format,
        definition_version=definition_version,
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
