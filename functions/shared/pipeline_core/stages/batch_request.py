"""Batch scoring's contracts and the model version it scores with, free of pandas (``stepml predict`` reads
the registry with them before it uploads anything; :mod:`pipeline_core.stages.batch_scoring` does the work)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.sagemaker import ModelCatalog
from pipeline_core.errors import InputValidationError
from pipeline_core.models import Contract, ProblemType, RegistryRecord
from pipeline_core.sagemaker_names import transform_job_name as _transform_job_name

Format = Literal["csv", "parquet"]
DEFAULT_PREDICTION_COLUMN = "prediction"
# what `stepml predict` names its executions: batch-<file>-<time>-<random>
EXECUTION_PREFIX = "batch-"


class BatchRequest(BaseModel):
    """The BatchScoring state machine's execution input (what ``stepml predict`` starts it with)."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(min_length=1, description="The registry model to score with.")
    model_version: int | None = Field(
        default=None, ge=1, description="A registered version; default: the champion (newest approved)."
    )
    input: str = Field(description="s3://<data bucket>/batch/... : the CSV or Parquet file to score.")
    output_format: Format | None = Field(default=None, description="csv or parquet; default: the input's.")
    prediction_column: str = Field(
        default=DEFAULT_PREDICTION_COLUMN, min_length=1, description="Name of the column the predictions go in."
    )


class BatchPlan(Contract):
    """PrepareBatch's result (``$.prep``): what the Transform and AssembleBatch states need."""

    model_name: str
    model_version: int
    sagemaker_model_name: str
    problem_type: ProblemType
    target: str
    feature_columns: list[str]
    input_uri: str
    input_format: Format
    input_columns: list[str]
    rows: int
    output_format: Format
    prediction_column: str
    transform_job_name: str
    transform_input_prefix: str
    transform_input_uri: str
    transform_output_prefix: str
    transform_output_uri: str
    output_uri: str


class TransformSummary(Contract):
    """The Transform state's ResultSelector over DescribeTransformJob (``$.transform``)."""

    TransformJobName: str
    TransformJobStatus: str


class BatchResult(Contract):
    """AssembleBatch's result: the execution's output."""

    output_uri: str
    output_format: Format
    rows: int
    columns: list[str]
    prediction_column: str
    model_name: str
    model_version: int
    transform_job_name: str | None


def request_json_schema() -> dict[str, Any]:
    """The JSON schema of the batch scoring input (``events/batch-input.schema.json`` is this, committed)."""
    schema = BatchRequest.model_json_schema()
    schema["title"] = "stepml batch scoring input"
    return schema


def parse_request(raw: Any) -> BatchRequest:
    """The execution input, checked; every problem named (InputValidationError)."""
    try:
        return BatchRequest.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in error.errors(include_url=False)
        )
        raise InputValidationError(f"invalid batch scoring input: {problems}") from error


def transform_job_name(execution_name: str, prefix: str) -> str:
    """``<prefix>-batch-`` + the execution name slugged (without ``batch-``, which it would repeat), cut to what
    SageMaker's 63 characters leave (at most 30), + 8 hex of the name's sha256: unique, readable, and under the
    stage's prefix (``prefix`` is ``stepml-<Stage>``, ENDPOINT_NAME_PREFIX) that its IAM statements allow."""
    return _transform_job_name(prefix, execution_name, drop=EXECUTION_PREFIX)


def resolve_version(registry: ModelRegistry, model_name: str, version: int | None) -> RegistryRecord:
    """The version to score with: the one named, or the champion (newest approved)."""
    known = registry.versions(model_name)
    if not known:
        models = sorted({r.model_name for r in registry.versions()})
        raise InputValidationError(
            f"model {model_name!r} is not in the registry"
            + (f"; its models: {', '.join(models)}" if models else ": train one first (`stepml run`)")
        )
    if version is None:
        record = next((r for r in known if r.status == "approved"), None)
        if record is None:
            raise InputValidationError(
                f"model {model_name!r} has no approved version to score with (its versions: {_statuses(known)}); "
                "name one with model_version (`stepml predict --version`)"
            )
        return record
    found = next((r for r in known if r.version == version), None)
    if found is None:
        raise InputValidationError(f"model {model_name!r} has no version {version}; its versions: {_statuses(known)}")
    return found


def _statuses(records: list[RegistryRecord]) -> str:
    return ", ".join(f"v{r.version} {r.status}" for r in records)


def sagemaker_model_of(record: RegistryRecord, catalog: ModelCatalog) -> str:
    """The SageMaker model of a registered version. The pipeline names a version's SageMaker model and its
    endpoint config alike (``config.sagemaker_model_name == config.endpoint_config_name``, ValidateInput), and
    the registry keeps the latter; a version the gate rejected was never deployed, so it has none."""
    name = record.endpoint_config_name
    where = f"{record.model_name} v{record.version} ({record.status})"
    if not name:
        raise InputValidationError(f"{where} was never deployed, so it has no SageMaker model to score with")
    if not catalog.model_exists(name):
        raise InputValidationError(f"{where}: its SageMaker model {name} does not exist (any more)")
    return name
