"""ValidateData: read the raw dataset and reject anything training cannot use, saying exactly what and where.

Checks run from the bytes up, so each failure gets the most precise message available:

1. bytes and file structure (:mod:`pipeline_core.stages.dataset_file`);
2. column roles and overrides (:mod:`pipeline_core.stages.column_roles`), then types: a pandera schema
   built from the profiled columns coerces every used numeric column; its failure cases name the column,
   row and offending value;
3. target and split: target present and not empty, problem type and classes
   (:mod:`pipeline_core.classes`), enough rows per split.

A CSV dataset is read in bounded memory (:mod:`pipeline_core.stages.validate_stream`: pieces of the file
fed to a mergeable :class:`~pipeline_core.stages.profile_accumulator.ProfileState`, turned into the same
profile and messages by :mod:`pipeline_core.stages.profile_from_state`); a Parquet dataset, and a CSV whose
structure or message the streamed path leaves to the whole-file reader, is loaded whole (:func:`load_table`,
:func:`profile_table`), as before. The checks both paths end with are in
:mod:`pipeline_core.stages.profile_checks`.

Preprocess reuses :func:`load_table`, :func:`apply_schema` and :mod:`pipeline_core.classes` so both stages
see the same data.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pydantic import BaseModel

from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.classes import (
    apply_rare_classes,
    infer_problem_type,
    sorted_labels,
    split_sizes,
    target_labels,
)
from pipeline_core.errors import DatasetTooLargeError, DataValidationError
from pipeline_core.models import ColumnProfile, DataProfile, IngestResult, RunConfig
from pipeline_core.observability import logger
from pipeline_core.stages.column_roles import (
    infer_column,
    numeric_share,
    profile_columns,
    read_values,
    storage_dtype,
    typed,
    with_missing_counts,
)
from pipeline_core.stages.csv_chunks import ChunkError
from pipeline_core.stages.dataset_file import MIB, Limits, Table, check_size, load_table, size_text, snippet
from pipeline_core.stages.profile_checks import (
    EMPTY_TARGET,
    MAX_EXAMPLES,
    RARE_DROPPED,
    check_features_left,
    check_target_present,
    choose_target,
    failure_message,
    finish_profile,
    rows_needed,
    target_reason,
)
from pipeline_core.stages.profile_from_state import NeedsWholeTable
from pipeline_core.stages.shards import ShardResult, merged_profile
from pipeline_core.stages.validate_stream import stream_profile

# re-exported: the handlers, Preprocess and the tests use them from here
__all__ = [
    "EMPTY_TARGET",
    "MIB",
    "RARE_DROPPED",
    "Limits",
    "Table",
    "load_table",
    "rows_needed",
    "split_sizes",
    "target_labels",
]


class ValidateDataEvent(BaseModel):
    """What the ValidateData state passes (see its Parameters in the ASL); the MergeProfiles state, on the
    sharded path, also passes the map's results (``shards``)."""

    config: RunConfig
    ingest: IngestResult
    shards: list[ShardResult] | None = None


# --------------------------------------------------------------------------- types


def _finite_or_missing(series: pd.Series) -> pd.Series:
    return series.isna() | np.isfinite(series)


def frame_schema(columns: Sequence[ColumnProfile]) -> pa.DataFrameSchema:
    """The pandera schema of a profiled dataset: used numeric columns coerce to finite floats (NA allowed).

    Columns training does not see (identifier, constant, excluded) are not checked: excluding a column is
    how a user gets past its bad values.
    """
    spec: dict[str, pa.Column] = {}
    for column in columns:
        if column.dtype == "numeric" and typed(column):
            spec[column.name] = pa.Column(
                float,
                coerce=True,
                nullable=True,
                checks=pa.Check(_finite_or_missing, error="finite number"),
                title=column.name,
            )
        else:
            spec[column.name] = pa.Column(nullable=True, title=column.name)
    return pa.DataFrameSchema(spec, strict=True, name="dataset")


def apply_schema(table: Table, columns: Sequence[ColumnProfile]) -> pd.DataFrame:
    """The frame read with each column's role (:func:`read_values`), numeric columns as floats; every
    value that does not fit is reported at once."""
    values = read_values(table.frame, columns)
    try:
        return frame_schema(columns).validate(values, lazy=True)
    except pa.errors.SchemaErrors as errors:
        raise DataValidationError(_describe_failures(table, values, errors.failure_cases)) from None


def _describe_failures(table: Table, values: pd.DataFrame, cases: pd.DataFrame) -> str:
    problems = []
    for name in table.frame.columns:
        mine = cases[(cases["column"] == name) & cases["index"].notna()].drop_duplicates(subset=["index"])
        if mine.empty:
            continue
        share, present = numeric_share(values[name])
        examples = [f"{table.where(int(i))} has {snippet(table.frame[name].iloc[int(i)])}" for i in mine["index"]]
        n_bad = len(mine)
        problems.append(
            f"column {name!r} is numeric in {math.floor(share * 100)}% of rows ({present - n_bad} of {present} "
            f"non-empty values) but {', '.join(examples[:MAX_EXAMPLES])}"
            + (f" and {n_bad - MAX_EXAMPLES} more" if n_bad > MAX_EXAMPLES else "")
        )
    if not problems:  # a schema-level failure pandera reports without rows (should not happen)
        problems = [str(cases.head(MAX_EXAMPLES).to_dict("records"))]
    return failure_message(problems)


# --------------------------------------------------------------------------- target and split


def _check_target_is_not_an_identifier(
    table: Table, target: str, column: pd.Series, labels: pd.Series, classification: bool
) -> None:
    """A target with its own value in every row (an ID, a name) is nothing a model can learn to predict."""
    inferred = infer_column(target, column)
    present = labels.dropna()
    if inferred.role == "identifier" or (classification and len(present) >= 2 and present.nunique() == len(present)):
        why = (
            inferred.reason
            if inferred.role == "identifier"
            else f"{len(present)} distinct values in {len(present)} rows"
        )
        first = int(present.index[0])
        raise DataValidationError(
            f"target {target!r} looks like an identifier ({why}; {table.where(first)} has "
            f"{snippet(column.iloc[first])}): every row has its own value, so there is nothing to learn to "
            "predict. Choose another target column (input field target)"
        )


def _check_problem_type(table: Table, target: str, dtype: str, labels: pd.Series, config: RunConfig) -> None:
    if config.problem_type == "regression" and dtype != "numeric":
        first = int(labels.dropna().index[0])
        raise DataValidationError(
            f"problem_type 'regression' needs a numeric target, but column {target!r} is {dtype} "
            f"({table.where(first)} has {snippet(table.frame[target].iloc[first])})"
        )


def _check_classes(target: str, labels: pd.Series) -> None:
    counts = labels.dropna().value_counts()
    if len(counts) < 2:
        raise DataValidationError(
            f"target {target!r} has a single class {counts.index[0]!r} in all {int(counts.iloc[0])} rows with a "
            "value: classification needs at least 2 classes"
        )


def profile_table(table: Table, config: RunConfig) -> DataProfile:
    """Roles, types, target and split checks on a loaded table; the profile later states rely on."""
    frame = table.frame
    names = [str(c) for c in frame.columns]
    target, target_chosen_by = choose_target(config, names)
    dtype = storage_dtype(frame[target])
    columns = profile_columns(
        frame, target, dtype, config.column_roles, config.exclude_columns, table.where, target_reason(target_chosen_by)
    )
    check_features_left(columns, target)
    values = apply_schema(table, columns)
    columns = with_missing_counts(columns, values)

    n_rows = len(frame)
    present = int(values[target].notna().sum())
    dropped = check_target_present(present, n_rows, target, target_chosen_by)
    labels = target_labels(values[target], dtype)
    _check_problem_type(table, target, dtype, labels, config)
    choice = infer_problem_type(target, dtype, labels, config.problem_type)
    classification = choice.problem_type != "regression"
    if config.problem_type is None or classification:
        _check_target_is_not_an_identifier(table, target, values[target], labels, classification)
    class_labels: list[str] = []
    merged: dict[str, int] = {}
    problem_type = choice.problem_type
    if classification:
        _check_classes(target, labels)
        outcome = apply_rare_classes(
            labels, config.rare_classes, config.test_size, config.validation_size, table.where, target
        )
        if outcome.dropped:
            dropped[RARE_DROPPED] = sum(outcome.dropped.values())
        merged = outcome.merged
        class_labels = sorted_labels(list(outcome.labels.dropna()))
        # dropping or merging classes can leave two: the problem becomes binary
        problem_type = "binary_classification" if len(class_labels) == 2 else "multiclass_classification"
        present = int(outcome.labels.notna().sum())
    return finish_profile(
        config,
        n_rows,
        names,
        target,
        target_chosen_by,
        columns,
        choice,
        problem_type,
        class_labels,
        dropped,
        merged,
        present,
    )


def validate_data(
    config: RunConfig,
    ingest: IngestResult,
    store: ObjectStore,
    limits: Limits,
    shards: Sequence[ShardResult] | None = None,
) -> DataProfile:
    """The ValidateData state: read ``ingest.raw_uri`` (never changing it) and profile it, or raise. With
    ``shards`` (the MergeProfiles state), the shards' states are merged instead of reading the file; a shard
    that left the file to the whole-file reader, or a message the state cannot give, takes today's path.
    ``limits.max_dataset_bytes`` (what one Lambda reading the file holds) bounds that path only: the merge reads
    the shards' states, and Ingest sends a CSV over that cap to the sharded path."""
    try:
        if shards is not None and ingest.format == "csv":
            why: str | None = None
            try:
                merged = merged_profile(shards, config, ingest, store)
            except NeedsWholeTable as reason:
                merged, why = None, f"the shards' merged state cannot decide it: {reason}"
                logger.info("reading the dataset whole", extra={"reason": str(reason)})
            if merged is not None:
                return merged
            logger.info("validating the dataset in one Lambda", extra={"shards": [s.whole_file for s in shards]})
            check_whole_file_fallback(ingest.size_bytes, limits, why or _shards_left_whole(shards))
        check_size(ingest.size_bytes, limits)  # before reading: a huge object must not exhaust memory
        if ingest.format == "csv":
            with tempfile.TemporaryDirectory(prefix="validate-") as work:
                path = Path(work) / "dataset.csv"
                store.download_stream(ingest.raw_uri, path)
                try:
                    return stream_profile(path, config, limits)
                except (ChunkError, NeedsWholeTable) as reason:
                    logger.info("reading the dataset whole", extra={"reason": str(reason)})
                data = path.read_bytes()
        else:
            data = store.read_bytes(ingest.raw_uri)
        return profile_table(load_table(data, ingest.format, limits), config)
    except DataValidationError as error:
        raise DataValidationError(f"dataset {ingest.raw_uri} (from {ingest.source_uri}): {error}") from None


def _shards_left_whole(shards: Sequence[ShardResult]) -> str:
    left = [shard for shard in sorted(shards, key=lambda shard: shard.index) if shard.whole_file is not None]
    if not left:
        return "SplitDataset did not cut the dataset into shards"
    first = left[0]
    return f"the streaming reader left shard {first.index} to the whole-file reader ({first.whole_file})"


def check_whole_file_fallback(size_bytes: int, limits: Limits, why: str) -> None:
    """Refuse, naming ``why``, a sharded dataset the whole-file reader must read but one Lambda cannot hold.

    Without this the user heard only the file's size against MAX_DATASET_BYTES, not what the shards could not
    decide (a target or column role the states cannot settle, a row the streaming reader refuses)."""
    if size_bytes <= limits.max_dataset_bytes:
        return
    raise DatasetTooLargeError(
        f"{why}; the whole-file reader that could is limited to {size_text(limits.max_dataset_bytes)} "
        f"(MAX_DATASET_BYTES) and the dataset is {size_text(size_bytes)}. Fix what the reason names (the input's "
        "target and column_roles, or the file's rows), or validate a sample under the limit to see the "
        "whole-file reader's own message - docs/data-scale.md"
    )


def describe(profile: DataProfile) -> dict[str, Any]:
    """A short log summary of a profile."""
    return {
        "rows": profile.n_rows,
        "columns": profile.n_columns,
        "target": profile.target,
        "problem_type": profile.problem_type,
        "reason": profile.problem_type_reason,
        "roles": {c.name: c.role for c in profile.columns},
        "dropped_rows": profile.dropped_rows,
    }
