"""Preprocess: clean the validated dataset and write seeded train/validation/test splits for SageMaker.

Cleaning: values are read with each column's role as ValidateData profiled it (the same
:func:`~pipeline_core.stages.data_validation.load_table` and
:func:`~pipeline_core.stages.column_roles.read_values`): numbers without separators, booleans as
``true``/``false``, dates as ISO 8601 text, text stripped, missing values as empty cells. Columns that are
not features (identifier, constant, excluded) are not written. Rows with an empty target are dropped, and
rare classes dropped or merged as the input's ``rare_classes`` says (:mod:`pipeline_core.classes`, the rule
ValidateData checked); every dropped row is counted by reason in ``dropped_rows_by_reason``. Exact duplicate
rows are kept: they are genuine repeated observations in many datasets (iris has some), dropping them would
silently change class balance, and keeping them means the row counts ValidateData checked are the rows
split here.

Each split prefix holds ``<split>.csv`` (features in profile order, target last) and ``columns.json`` (the
roles, problem type and class labels: the data contract with trainers). Beside the splits, outside the
SageMaker channels, ``baseline.json`` holds the train split's per-feature statistics that the Monitor function
compares new data with (:mod:`pipeline_core.stages.baseline`).

The split is a seeded permutation with numpy (scikit-learn is too large for this Lambda), per class when
the problem is classification and every class has :func:`~pipeline_core.classes.min_rows_per_class` rows.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import BaseModel

from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.classes import apply_rare_classes, target_labels
from pipeline_core.errors import DataValidationError
from pipeline_core.models import DataProfile, IngestResult, PreprocessResult, RunConfig
from pipeline_core.observability import logger
from pipeline_core.stages.baseline import BASELINE_NAME, baseline_document, build_baseline
from pipeline_core.stages.csv_chunks import ChunkError
from pipeline_core.stages.data_validation import EMPTY_TARGET, RARE_DROPPED, Limits, apply_schema, load_table
from pipeline_core.stages.dataset_file import check_size
from pipeline_core.stages.preprocess_stream import Streamed, stream_preprocess
from pipeline_core.stages.splitting import SPLITS, Split, split_coded, split_rows

__all__ = ["SPLITS", "Split", "split_coded", "split_rows"]  # re-exported: the tests and trainers use them from here
from pipeline_core.stages.trainer_input import training_hyperparameters

COLUMNS_FORMAT = 1


class PreprocessEvent(BaseModel):
    """What the Preprocess state passes (see its Parameters in the ASL)."""

    config: RunConfig
    ingest: IngestResult
    data: DataProfile


@dataclass(frozen=True)
class Cleaned:
    """The rows to split (feature columns in profile order, then the target) and what was left out."""

    frame: pd.DataFrame
    dropped: dict[str, int]  # reason -> rows


def clean(data: bytes, ingest: IngestResult, profile: DataProfile, config: RunConfig, limits: Limits) -> Cleaned:
    """The cleaned frame (rows with a target only, target as class labels or floats) and rows dropped."""
    table = load_table(data, ingest.format, limits)
    missing = {c.name for c in profile.columns} - set(table.frame.columns)
    if missing:
        raise DataValidationError(
            f"{ingest.raw_uri} no longer has the profiled columns {sorted(missing)}; "
            "was it replaced after ValidateData?"
        )
    frame = apply_schema(table, profile.columns)
    target = profile.target
    has_target = frame[target].notna()
    dropped = {EMPTY_TARGET: int((~has_target).sum())}
    frame = frame[has_target].reset_index(drop=True)
    if profile.problem_type != "regression":
        dtype = next(c.dtype for c in profile.columns if c.name == target)
        outcome = apply_rare_classes(
            target_labels(frame[target], dtype), config.rare_classes, config.test_size, config.validation_size
        )
        dropped[RARE_DROPPED] = sum(outcome.dropped.values())
        keep = outcome.labels.notna()
        frame = frame.assign(**{target: outcome.labels})[keep].reset_index(drop=True)
    columns = [*profile.feature_columns, target]
    return Cleaned(frame[columns], {reason: n for reason, n in dropped.items() if n})


def columns_document(profile: DataProfile) -> bytes:
    """``columns.json``: the target, problem type, class labels and each feature's role, in column order."""
    roles = {c.name: c.role for c in profile.columns if c.name in profile.feature_columns}
    document = {
        "format": COLUMNS_FORMAT,
        "target": profile.target,
        "problem_type": profile.problem_type,
        "roles": roles,
        "class_labels": profile.class_labels,
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def preprocess(
    config: RunConfig, ingest: IngestResult, profile: DataProfile, store: ObjectStore, limits: Limits
) -> PreprocessResult:
    """The Preprocess state: write the three splits under ``config.processed_prefix`` and describe them.

    A CSV dataset is streamed (:mod:`pipeline_core.stages.preprocess_stream`: memory does not grow with
    the file's width or values); a Parquet one, or a CSV the streaming reader cannot read as the whole-file
    reader does, is read whole as before. Both write the same bytes."""
    check_size(ingest.size_bytes, limits)
    with tempfile.TemporaryDirectory(prefix="preprocess-") as work:
        workdir = Path(work)
        streamed = None
        if ingest.format == "csv":
            source = workdir / "dataset.csv"
            store.download_stream(ingest.raw_uri, source)
            try:
                streamed = stream_preprocess(
                    source, workdir, profile, config, ingest.sha256, limits.chunk_bytes, delete_source=True
                )
            except ChunkError as error:
                logger.info("streaming reader cannot read the file; reading it whole", extra={"reason": str(error)})
            except DataValidationError as error:
                raise DataValidationError(f"{ingest.raw_uri}: {error}") from None
            data = source.read_bytes() if streamed is None else b""
            source.unlink(missing_ok=True)
        else:
            data = store.read_bytes(ingest.raw_uri)
        if streamed is None:
            streamed = _whole(data, ingest, profile, config, limits, workdir)
        del data
        return publish(streamed, config, profile, store)


def publish(streamed: Streamed, config: RunConfig, profile: DataProfile, store: ObjectStore) -> PreprocessResult:
    """Upload the split files, columns.json and baseline.json under ``config.processed_prefix`` and describe
    them (the single Preprocess and the sharded one's WriteSplits)."""
    split = streamed.split
    logger.info(
        "split",
        extra={
            "split": split.reason,
            "stratified": split.stratified,
            "rows": {name: len(getattr(split, name)) for name in SPLITS},
            "dropped_rows": streamed.dropped,
            "duplicate_rows_kept": streamed.duplicate_rows,
        },
    )
    document = columns_document(profile)
    uris = {}
    for name in SPLITS:
        prefix = f"{config.processed_prefix}{name}/"
        # The split is seeded, so a retried Preprocess produces the same bytes and writes nothing new.
        store.put_file_if_changed(f"{prefix}{name}.csv", streamed.files[name], content_type="text/csv")
        store.put_if_changed(f"{prefix}columns.json", document, content_type="application/json")
        uris[name] = prefix  # SageMaker channels take the prefix (S3DataType S3Prefix)
    # Outside the channels: the training job downloads every object under a channel's prefix.
    baseline_uri = f"{config.processed_prefix}{BASELINE_NAME}"
    store.put_if_changed(baseline_uri, baseline_document(streamed.baseline), content_type="application/json")
    return PreprocessResult(
        train_uri=uris["train"],
        validation_uri=uris["validation"],
        test_uri=uris["test"],
        n_train=len(split.train),
        n_validation=len(split.validation),
        n_test=len(split.test),
        feature_columns=profile.feature_columns,
        dropped_rows=sum(streamed.dropped.values()),
        hyperparameters=training_hyperparameters(config, profile),
        column_roles={c.name: c.role for c in profile.columns},
        excluded_columns=profile.excluded_columns,
        dropped_rows_by_reason=streamed.dropped,
        baseline_uri=baseline_uri,
    )


def _whole(
    data: bytes, ingest: IngestResult, profile: DataProfile, config: RunConfig, limits: Limits, workdir: Path
) -> Streamed:
    """The whole-table Preprocess (Parquet, or a CSV the streaming reader refuses): the same outputs."""
    cleaned = clean(data, ingest, profile, config, limits)
    frame = cleaned.frame
    labels = frame[profile.target] if profile.problem_type != "regression" else None
    split = split_rows(len(frame), config.test_size, config.validation_size, config.seed, labels)
    files = {}
    for name in SPLITS:
        files[name] = workdir / f"{name}.csv"
        part = frame.iloc[getattr(split, name)]
        files[name].write_bytes(part.to_csv(index=False, lineterminator="\n").encode("utf-8"))
    baseline = build_baseline(frame.iloc[split.train], profile, ingest.sha256)
    return Streamed(files, split, cleaned.dropped, int(frame.duplicated().sum()), baseline)
