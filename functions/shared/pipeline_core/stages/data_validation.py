"""ValidateData: read the raw dataset and reject anything training cannot use, saying exactly what and where.

Checks run from the bytes up, so each failure gets the most precise message available:

1. bytes and file structure (:mod:`pipeline_core.stages.dataset_file`);
2. column roles and overrides (:mod:`pipeline_core.stages.column_roles`), then types: a pandera schema
   built from the profiled columns coerces every used numeric column; its failure cases name the column,
   row and offending value;
3. target and split: target present and not empty, problem type and classes
   (:mod:`pipeline_core.classes`), enough rows per split.

Preprocess reuses :func:`load_table`, :func:`apply_schema` and :mod:`pipeline_core.classes` so both stages
see the same data.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Any, Literal

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
from pipeline_core.errors import DataValidationError
from pipeline_core.models import ColumnProfile, DataProfile, IngestResult, RunConfig
from pipeline_core.stages.column_roles import (
    FEATURE_ROLES,
    infer_column,
    numeric_share,
    profile_columns,
    read_values,
    storage_dtype,
    typed,
    with_missing_counts,
)
from pipeline_core.stages.dataset_file import MIB, Limits, Table, check_size, load_table, quote_list, snippet

# re-exported: the handlers, Preprocess and the tests use them from here
__all__ = ["MIB", "Limits", "Table", "load_table", "split_sizes", "target_labels"]

MIN_ROWS_PER_SPLIT = 5
EXCLUDED_ROLES = ("identifier", "constant", "excluded")
# keys of DataProfile.dropped_rows / PreprocessResult.dropped_rows_by_reason
EMPTY_TARGET = "empty target"
RARE_DROPPED = "rare class (dropped)"
MAX_EXAMPLES = 5
# $.data must leave room in the 256 KiB state for $.prep (which repeats the column names) and the rest.
MAX_PROFILE_BYTES = 150_000


class ValidateDataEvent(BaseModel):
    """What the ValidateData state passes (see its Parameters in the ASL)."""

    config: RunConfig
    ingest: IngestResult


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
    return (
        "; ".join(problems)
        + ". Fix or empty those cells (empty, NA and ? are read as missing values), or leave the column out "
        "with exclude_columns"
    )


# --------------------------------------------------------------------------- target and split


def rows_needed(test_size: float, validation_size: float, minimum: int = MIN_ROWS_PER_SPLIT) -> int:
    """The smallest row count whose split gives every part at least ``minimum`` rows."""
    n = 3 * minimum
    while min(split_sizes(n, test_size, validation_size)) < minimum:
        n += 1
    return n


def _choose_target(config: RunConfig, names: list[str]) -> tuple[str, Literal["input", "last_column"]]:
    if config.target is None:
        return names[-1], "last_column"
    if config.target in names:
        return config.target, "input"
    close = difflib.get_close_matches(config.target, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataValidationError(
        f"target column {config.target!r} is not in the dataset{hint}; its columns are {quote_list(names)}"
    )


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
    target, target_chosen_by = _choose_target(config, names)
    dtype = storage_dtype(frame[target])
    target_reason = "the target, named in the input" if target_chosen_by == "input" else "the target, the last column"
    columns = profile_columns(
        frame, target, dtype, config.column_roles, config.exclude_columns, table.where, target_reason
    )
    if not any(c.role in FEATURE_ROLES for c in columns):
        unused = "; ".join(f"{c.name!r}: {c.role} ({c.reason})" for c in columns if c.role != "target")
        raise DataValidationError(
            f"no column is left to learn from: besides the target {target!r}, every column is left out "
            f"({unused[:1000]}). Give a column a role with column_roles, or check the target"
        )
    values = apply_schema(table, columns)
    columns = with_missing_counts(columns, values)

    n_rows = len(frame)
    present = int(values[target].notna().sum())
    if present == 0:
        chosen = "the last column" if target_chosen_by == "last_column" else "named in the input"
        raise DataValidationError(f"target column {target!r} ({chosen}) is empty in all {n_rows} rows")
    dropped = {EMPTY_TARGET: n_rows - present} if present < n_rows else {}
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

    sizes = split_sizes(present, config.test_size, config.validation_size)
    if min(sizes) < MIN_ROWS_PER_SPLIT:
        left_out = []
        if EMPTY_TARGET in dropped:
            left_out.append(f"{dropped[EMPTY_TARGET]} of {n_rows} rows have an empty target and are not used")
        if RARE_DROPPED in dropped:
            left_out.append(f'{dropped[RARE_DROPPED]} rows of rare classes are dropped (rare_classes "drop")')
        not_used = f" ({'; '.join(left_out)})" if left_out else ""
        raise DataValidationError(
            f"not enough rows: {present} rows with a target{not_used}; the split (test_size "
            f"{config.test_size:g}, validation_size {config.validation_size:g}) gives train {sizes[0]}, "
            f"validation {sizes[1]}, test {sizes[2]} rows, and each needs at least {MIN_ROWS_PER_SPLIT}: "
            f"at least {rows_needed(config.test_size, config.validation_size)} rows are needed"
        )
    profile = DataProfile(
        n_rows=n_rows,
        n_columns=len(names),
        target=target,
        target_chosen_by=target_chosen_by,
        problem_type=problem_type,
        problem_type_chosen_by=choice.chosen_by,
        problem_type_reason=choice.reason,
        class_labels=class_labels,
        feature_columns=[c.name for c in columns if c.role in FEATURE_ROLES],
        columns=columns,
        excluded_columns={c.name: f"{c.role}: {c.reason}" for c in columns if c.role in EXCLUDED_ROLES},
        dropped_rows=dropped,
        merged_classes=merged,
    )
    _check_profile_fits_the_state(profile)
    return profile


def _check_profile_fits_the_state(profile: DataProfile) -> None:
    """A profile too large for the execution's state would fail later as States.DataLimitExceeded, a
    message that names nothing; a role and a reason per column make it grow with the column count."""
    size = len(profile.model_dump_json())
    if size > MAX_PROFILE_BYTES:
        raise DataValidationError(
            f"the dataset has {profile.n_columns} columns: their profile (a role and a reason per column) is "
            f"{size} bytes, more than the {MAX_PROFILE_BYTES} bytes the state machine can carry beside the rest "
            "of the run's state (Step Functions' limit is 256 KiB); keep fewer columns in the file"
        )


def validate_data(config: RunConfig, ingest: IngestResult, store: ObjectStore, limits: Limits) -> DataProfile:
    """The ValidateData state: read ``ingest.raw_uri`` (never changing it) and profile it, or raise."""
    check_size(ingest.size_bytes, limits)  # before reading: a huge object must not exhaust memory
    data = store.read_bytes(ingest.raw_uri)
    try:
        table = load_table(data, ingest.format, limits)
        return profile_table(table, config)
    except DataValidationError as error:
        raise DataValidationError(f"dataset {ingest.raw_uri} (from {ingest.source_uri}): {error}") from None


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
