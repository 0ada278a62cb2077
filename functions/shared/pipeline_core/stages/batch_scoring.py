"""Batch scoring: the BatchScoring state machine's two Lambda steps around a SageMaker Batch Transform job.

``PrepareBatch`` (:func:`prepare`) resolves the model version (the champion unless one is named) and its SageMaker
model, checks the input file (format, header, the model's feature columns, values) and writes the transform
job's input: one JSON object per row with the feature columns only (``application/jsonlines``), because
Batch Transform splits a file at newlines and would send a CSV header as a record. ``Transform``
(``createTransformJob.sync``; the stand-in locally) runs the model's own serving code over it in ``MultiRecord``
mini-batches and writes one prediction line per input line. ``AssembleBatch`` (:func:`assemble_output`) joins the
predictions back onto the input rows, in input order, and writes the scored file (CSV or Parquet); then it
removes the two intermediate files.

S3 layout, one folder per execution (the CLI stages a local file under ``input/``)::

    batch/<execution>/input/<file>                     the file to score (inputs are read under batch/ only)
    batch/<execution>/transform-input/records.jsonl    the transform job's input (removed once assembled)
    batch/<execution>/transform-output/records.jsonl.out   its output, where SageMaker writes it (removed too)
    batch/<execution>/output/<stem>.scored.<csv|parquet>   the scored file

Nothing is written over: a run that fails leaves the input as it was and writes no scored file.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.s3 import ObjectStore, S3Uri
from pipeline_core.aws.sagemaker import ModelCatalog
from pipeline_core.errors import BatchOutputError, DatasetNotFoundError, DataValidationError, InputValidationError
from pipeline_core.models import RegistryRecord
from pipeline_core.observability import logger
from pipeline_core.stages import batch_files
from pipeline_core.stages.batch_request import (
    BatchPlan,
    BatchResult,
    Format,
    TransformSummary,
    parse_request,
    resolve_version,
    sagemaker_model_of,
    transform_job_name,
)

PREFIX = "batch"
RECORDS_FILE = "records.jsonl"
# Lambda's /tmp (the template gives the function 10 GB) holds the input and what is made from it: the JSON
# Lines copy while preparing, the scored file while assembling.
DEFAULT_MAX_INPUT_BYTES = 3 * 1024**3


def _folder(data_bucket: str, execution_name: str) -> S3Uri:
    return S3Uri(data_bucket, f"{PREFIX}/{execution_name}")


def _check_input_location(uri: str, data_bucket: str) -> None:
    location = S3Uri.parse(uri)
    if location.bucket != data_bucket or not location.key.startswith(f"{PREFIX}/"):
        raise InputValidationError(
            f"input {uri}: batch scoring reads files under s3://{data_bucket}/{PREFIX}/ only (what its role may "
            f"read); copy the file there (`stepml predict` does it for you)"
        )


def prepare(
    raw_input: Any,
    execution_name: str,
    name_prefix: str,
    data_bucket: str,
    registry: ModelRegistry,
    catalog: ModelCatalog,
    objects: ObjectStore,
    kinds_reader: Callable[[str], dict[str, str]],
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
) -> BatchPlan:
    """PrepareBatch: check everything a transform job would otherwise fail on late, then write its input."""
    request = parse_request(raw_input)
    _check_input_location(request.input, data_bucket)
    record = resolve_version(registry, request.model_name, request.model_version)
    sagemaker_model = sagemaker_model_of(record, catalog)
    size = objects.size(request.input)
    if size > max_input_bytes:
        raise DataValidationError(
            f"{request.input} has {size} bytes; batch scoring takes at most {max_input_bytes} (BATCH_MAX_INPUT_BYTES): "
            "split the file and score the parts"
        )
    folder = _folder(data_bucket, execution_name)
    with tempfile.TemporaryDirectory(prefix="batch-prepare-") as temp:
        path = Path(temp) / "input"
        objects.download_stream(request.input, path)
        source = batch_files.open_input(path, request.input)
        batch_files.check_columns(
            source.columns, record.feature_columns, request.input, f"{record.model_name} v{record.version}"
        )
        if request.prediction_column in source.columns:
            raise DataValidationError(
                f"{request.input} already has a column {request.prediction_column!r}, where the predictions would "
                "go: name another prediction column (prediction_column, `stepml predict --prediction-column`)"
            )
        kinds = _feature_kinds(record, kinds_reader)
        records_path = Path(temp) / RECORDS_FILE
        with records_path.open("wb") as out:
            rows = batch_files.write_records(source, request.input, record.feature_columns, kinds, out)
        transform_input = folder.child("transform-input", RECORDS_FILE)
        if rows:
            with records_path.open("rb") as handle:
                objects.write_stream(str(transform_input), handle, "application/jsonlines")
    output_format: Format = request.output_format or source.format
    stem = S3Uri.parse(request.input).key.rsplit("/", 1)[-1].rsplit(".", 1)[0] or "input"
    plan = BatchPlan(
        model_name=record.model_name,
        model_version=record.version,
        sagemaker_model_name=sagemaker_model,
        problem_type=record.problem_type,
        target=record.target,
        feature_columns=record.feature_columns,
        input_uri=request.input,
        input_format=source.format,
        input_columns=source.columns,
        rows=rows,
        output_format=output_format,
        prediction_column=request.prediction_column,
        transform_job_name=transform_job_name(execution_name, name_prefix),
        transform_input_prefix=f"{folder.child('transform-input')}/",
        transform_input_uri=str(transform_input),
        transform_output_prefix=f"{folder.child('transform-output')}/",
        transform_output_uri=str(folder.child("transform-output", f"{RECORDS_FILE}.out")),
        output_uri=str(folder.child("output", f"{stem}.scored.{output_format}")),
    )
    logger.info("batch prepared", extra={"rows": rows, "model": record.model_name, "version": record.version})
    return plan


def _feature_kinds(record: RegistryRecord, kinds_reader: Callable[[str], dict[str, str]]) -> dict[str, str]:
    """The model's feature kinds: metadata.json in its artifact (what it was trained with), else the registry's
    column roles; without either, values go to the model as text (it converts them by its own kinds)."""
    try:
        return kinds_reader(record.model_artifact)
    except Exception as error:  # the artifact's metadata is a convenience: numbers are checked early with it
        logger.warning("feature kinds unreadable; using the registry's column roles", extra={"error": str(error)})
        return dict(record.column_roles)


def assemble_output(plan: BatchPlan, transform: TransformSummary | None, objects: ObjectStore) -> BatchResult:
    """AssembleBatch: the scored file from the input and the transform output; then the intermediates go.

    Retried after it finished (its answer lost), it finds the scored file written and the intermediates gone
    and answers the same."""
    result = BatchResult(
        output_uri=plan.output_uri,
        output_format=plan.output_format,
        rows=plan.rows,
        columns=[*plan.input_columns, plan.prediction_column],
        prediction_column=plan.prediction_column,
        model_name=plan.model_name,
        model_version=plan.model_version,
        transform_job_name=transform.TransformJobName if transform else None,
    )
    if plan.rows and objects.exists(plan.output_uri) and not objects.exists(plan.transform_output_uri):
        return result
    with tempfile.TemporaryDirectory(prefix="batch-assemble-") as temp:
        input_path, output_path, scored = Path(temp) / "input", Path(temp) / "output", Path(temp) / "scored"
        objects.download_stream(plan.input_uri, input_path)
        source = batch_files.open_input(input_path, plan.input_uri)
        if source.columns != plan.input_columns:
            raise BatchOutputError(
                f"{plan.input_uri} changed while it was scored: its columns are now {source.columns}"
            )
        if plan.rows:
            try:
                objects.download_stream(plan.transform_output_uri, output_path)
            except DatasetNotFoundError as error:
                raise BatchOutputError(
                    f"the transform job {result.transform_job_name} wrote no output at {plan.transform_output_uri}"
                ) from error
        else:
            output_path.write_bytes(b"")
        with output_path.open("rb") as output:
            batch_files.assemble(
                source,
                plan.input_uri,
                plan.rows,
                output,
                plan.transform_output_uri,
                plan.prediction_column,
                plan.output_format,
                plan.problem_type == "regression",
                scored,
            )
        content_type = "text/csv" if plan.output_format == "csv" else "application/vnd.apache.parquet"
        with scored.open("rb") as handle:
            objects.write_stream(plan.output_uri, handle, content_type)
    if plan.rows:
        for uri in (plan.transform_input_uri, plan.transform_output_uri):
            objects.delete(uri)
    logger.info("batch assembled", extra={"rows": plan.rows, "output": plan.output_uri})
    return result
