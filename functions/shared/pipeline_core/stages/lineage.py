"""What a model is made of, for evaluation.json, the report and the registry record: the role of each column
(and why), the rows dropped (and why), and the trainer code that trained it (its S3 object's hash and
version).

No pandas or numpy here: the Register function reads these too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from pipeline_core.aws.s3 import ObjectStore, sha256_hex
from pipeline_core.errors import DatasetNotFoundError
from pipeline_core.models import CodeLineage, DataProfile, PreprocessResult, RunConfig, TrainingSummary
from pipeline_core.observability import logger

SUBMIT_DIRECTORY = "sagemaker_submit_directory"


@dataclass(frozen=True)
class ColumnRow:
    """One column of the dataset as the run used it."""

    name: str
    role: str
    reason: str
    missing: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def column_rows(data: DataProfile, prep: PreprocessResult | None = None) -> list[ColumnRow]:
    """Every column with its role and why: ValidateData's profile, with Preprocess's roles and exclusions
    where it gives them."""
    roles = dict(prep.column_roles) if prep else {}
    excluded = {**data.excluded_columns, **(prep.excluded_columns if prep else {})}
    rows = []
    for column in data.columns:
        if column.name == data.target:
            role, reason = "target", column.reason or f"{data.target_chosen_by.replace('_', ' ')}: the target"
        elif column.name in excluded:
            role, reason = column.role, excluded[column.name]
        elif column.name in roles:
            role, reason = roles[column.name], column.reason
        else:
            role, reason = column.role, column.reason
        rows.append(ColumnRow(column.name, role, reason, column.missing))
    return rows


def feature_roles(rows: list[ColumnRow], features: list[str]) -> dict[str, str]:
    """``{feature: role}`` in the order training saw the features (the registry's ``column_roles``)."""
    by_name = {row.name: row.role for row in rows}
    return {name: by_name.get(name, "?") for name in features}


def dropped_rows(data: DataProfile, prep: PreprocessResult | None = None) -> dict[str, int]:
    """Rows left out of training, by reason (ValidateData's and Preprocess's), with nonzero counts."""
    counts: dict[str, int] = dict(data.dropped_rows)
    if prep is not None:
        counts.update(prep.dropped_rows_by_reason)
        if not counts and prep.dropped_rows:
            counts["dropped by Preprocess"] = prep.dropped_rows
    return {reason: count for reason, count in counts.items() if count}


def trainer_name(config: RunConfig, training: TrainingSummary) -> str:
    """The trainer's name: a built-in's (``auto``, ``linear``, ...), or a user's entry point and source."""
    trainer = config.trainer
    if trainer.builtin:
        return trainer.name
    entry_point = trainer.entry_point or training.hyperparameters.get("sagemaker_program") or "?"
    return f"{entry_point} ({trainer.source})"


def submit_directory(hyperparameters: dict[str, str]) -> str | None:
    """The training source a job runs (its ``sagemaker_submit_directory`` hyperparameter), unquoted."""
    value = hyperparameters.get(SUBMIT_DIRECTORY)
    if not value:
        return None
    try:
        # the SageMaker Python SDK JSON-encodes hyperparameter values ('"s3://…"'); the ASL passes them plain
        decoded = json.loads(value)
    except ValueError:
        decoded = value
    return decoded if isinstance(decoded, str) else value


def code_lineage(config: RunConfig, training: TrainingSummary, store: ObjectStore) -> CodeLineage:
    """The trainer code the job ran: its S3 URI, sha256 and S3 version id (when the bucket keeps versions).

    Missing lineage (a job without sagemaker_submit_directory, or code deleted since) is logged and left
    None: it describes the model, it does not decide whether it deploys.
    """
    name = trainer_name(config, training)
    uri = submit_directory(training.hyperparameters)
    if uri is None or not uri.startswith("s3://"):
        logger.warning("no trainer code to record", extra={"training_job": training.TrainingJobName, "uri": uri})
        return CodeLineage(trainer=name, code_uri=uri)
    try:
        data, version_id = store.read_versioned(uri)
    except DatasetNotFoundError:
        logger.warning("trainer code is gone", extra={"training_job": training.TrainingJobName, "uri": uri})
        return CodeLineage(trainer=name, code_uri=uri)
    return CodeLineage(trainer=name, code_uri=uri, code_sha256=sha256_hex(data), code_version_id=version_id)
