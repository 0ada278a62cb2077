"""The DataProfile of an accumulated :class:`~pipeline_core.stages.profile_accumulator.ProfileState`.

The same decisions, in the same order and with the same messages, as the whole-table path
(:func:`~pipeline_core.stages.data_validation.profile_table` with
:func:`~pipeline_core.stages.column_roles.infer_column`), taken on the state's counts instead of the
columns. ``where`` names a row (``row N (line L)``); the caller resolves lines only when a message needs one.

:class:`NeedsWholeTable` is raised where the state cannot give the whole-table message (a ``datetime`` role
given in the input that no format fits: its message names the first unreadable row, which the state does
not keep; a classification target with more than ``TARGET_VALUES`` distinct values): the caller then reads
the table whole for that message, as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from pipeline_core.classes import (
    MERGED_LABEL,
    infer_problem_type,
    rare_class_choice,
    sorted_labels,
)
from pipeline_core.errors import DataValidationError
from pipeline_core.models import ColumnProfile, DataProfile, InputRole, RunConfig
from pipeline_core.stages.column_roles import (
    DATETIME_SHARE,
    IDENTIFIER_MIN_ROWS,
    NUMERIC_SHARE,
    TRUE_TOKENS,
    Dtype,
    Inferred,
    check_override_names,
    column_profile,
    datetime_format_of_counts,
    is_identifier_name,
    is_row_name,
    parse_datetimes,
    parse_numbers,
    profile_with_input,
    role_of_values,
    typed,
)
from pipeline_core.stages.dataset_file import snippet
from pipeline_core.stages.profile_accumulator import ColumnState, ProfileState
from pipeline_core.stages.profile_checks import (
    MAX_EXAMPLES,
    RARE_DROPPED,
    check_features_left,
    check_target_present,
    failure_message,
    finish_profile,
    target_reason,
)

Where = Callable[[int], str]


class NeedsWholeTable(Exception):
    """The state cannot give this message; the caller reads the table whole for it."""


# --------------------------------------------------------------------------- roles


def state_dtype(state: ColumnState) -> Dtype:
    """:func:`~pipeline_core.stages.column_roles.storage_dtype` of the column."""
    share = state.numbers / state.present if state.present else 1.0
    if share >= NUMERIC_SHARE:
        return "numeric"
    if state.all_boolean_tokens and len(state.distinct) <= 4:
        return "boolean"
    return "categorical"


def _datetime(state: ColumnState) -> tuple[str | None, int, int]:
    """:func:`~pipeline_core.stages.column_roles.datetime_format` of the column (on its sample)."""
    if not state.present:
        return None, 0, 0
    fmt, read = datetime_format_of_counts(state.values.value_counts())
    return fmt, read, state.present


def _numeric_identifier(name: str, state: ColumnState) -> str | None:
    if not is_identifier_name(name):
        return None
    numbers = state.number_summary
    n = numbers.count
    distinct = len(numbers.distinct) if numbers.distinct is not None else -1
    if n < IDENTIFIER_MIN_ROWS or distinct != n or not numbers.whole:
        return None
    if is_row_name(name) and n == state.rows and numbers.consecutive:
        return f"numbers the rows {int(numbers.first or 0)}..{int(numbers.last or 0)} in file order"
    return f"a different whole number in each of its {n} non-empty rows and named like an identifier"


def infer_state(name: str, state: ColumnState) -> Inferred:
    """:func:`~pipeline_core.stages.column_roles.infer_column` on the column's state."""
    n_rows = state.rows
    dtype = state_dtype(state)
    categorical = dtype == "categorical"
    n_present = state.present + (state.soft_count if categorical else 0)
    if not n_present:
        return Inferred(dtype, "constant", f"empty in all {n_rows} rows")
    n_distinct = len(state.distinct) + (len(state.soft) if categorical else 0)
    first = state.first_any if categorical else state.first_value
    first_text = first[1] if first else ""
    if n_distinct == 1 and n_present == n_rows:
        return Inferred(dtype, "constant", f"one value {first_text!r} in all {n_rows} rows")
    if dtype == "numeric":
        why = _numeric_identifier(name, state)
        if why:
            return Inferred(dtype, "identifier", why)
        reason = f"numbers, {n_distinct} distinct values in {n_present} non-empty rows"
        if state.grouped:
            example = str(state.grouped_values.value_counts().index[0])
            reason += f" ({state.grouped} written with thousands separators, e.g. {example!r})"
        return Inferred(dtype, "numeric", reason)
    if dtype == "boolean":
        return Inferred(dtype, "boolean", "only true/false values")
    return role_of_values(
        dtype,
        _datetime(state),
        lambda: (state.words + state.soft_count) / n_present,  # "None"/"NA": one word each
        n_distinct,
        n_present,
        first_text,
    )


def _override(name: str, role: InputRole, state: ColumnState, inferred: Inferred, where: Where) -> Inferred:
    """:func:`~pipeline_core.stages.column_roles.override` on the column's state."""
    given = f"given in the input (inferred: {inferred.role})"
    cannot = f"column_roles sets {name!r} to {role!r}, but"
    if role == "numeric":
        share = state.numbers / state.present if state.present else 1.0
        if share < NUMERIC_SHARE:
            row, value = state.first_non_number or (0, "")
            raise DataValidationError(
                f"{cannot} only {round(share * state.present)} of its {state.present} non-empty values are numbers "
                f"({where(row)} has {value!r})"
            )
        return Inferred("numeric", "numeric", given)
    if role == "boolean":
        if state.first_not_boolean is not None:
            row, value = state.first_not_boolean
            raise DataValidationError(
                f"{cannot} {where(row)} has {value!r}: a boolean column holds only true/false, yes/no, y/n, t/f or 1/0"
            )
        return Inferred("boolean", "boolean", given)
    if role == "datetime":
        fmt, read, total = _datetime(state)
        if fmt is None or read < DATETIME_SHARE * total:
            raise NeedsWholeTable(f"column_roles sets {name!r} to 'datetime' and no format reads it")
        return Inferred("categorical", "datetime", given, fmt)
    if role == "constant":
        n_distinct = len(state.distinct)
        if n_distinct > 1:
            counts = state.values
            counts.compact()
            order = np.argsort(counts.first_rows, kind="stable")[:3]
            shown = ", ".join(repr(str(counts.texts[i])) for i in order)
            raise DataValidationError(
                f"{cannot} it has {n_distinct} distinct values (e.g. {shown}); "
                "to leave it out, name it in exclude_columns"
            )
        return Inferred(inferred.dtype, "constant", given)
    dtype: Dtype = "categorical" if inferred.dtype == "numeric" else inferred.dtype
    return Inferred(dtype, role, given)


def profile_columns_of_state(
    state: ProfileState,
    target_dtype: Dtype,
    column_roles: Mapping[str, InputRole],
    exclude_columns: Sequence[str],
    where: Where,
    reason: str,
) -> list[ColumnProfile]:
    """:func:`~pipeline_core.stages.column_roles.profile_columns` on the state, ``missing`` counted."""
    check_override_names(column_roles, exclude_columns, state.names, state.target)
    profiles = []
    for name in state.names:
        column = state.columns[name]
        if name == state.target:
            profile = column_profile(name, Inferred(target_dtype, "target", reason), "inferred")
        else:
            profile = profile_with_input(
                name,
                infer_state(name, column),
                column_roles,
                exclude_columns,
                lambda role, inferred: _override(name, role, column, inferred, where),  # noqa: B023
            )
        profiles.append(profile.model_copy(update={"missing": _missing(profile, column)}))
    return profiles


def _missing(profile: ColumnProfile, state: ColumnState) -> int:
    """The values :func:`~pipeline_core.stages.column_roles.read_values` reads as missing."""
    if not typed(profile):
        return state.missing
    if profile.role == "datetime" and profile.format:
        return state.rows - _read_with(state, profile.format)
    if profile.dtype != "categorical":
        return state.missing + state.soft_count
    return state.missing


def _read_with(state: ColumnState, fmt: str) -> int:
    """Present values the format reads (on the sample: exact when the column has few distinct values)."""
    counts = state.values.value_counts()
    if counts.empty:
        return 0
    parsed = parse_datetimes(pd.Series(counts.index, dtype=object), fmt)
    return int(counts.to_numpy()[parsed.notna().to_numpy()].sum())


# --------------------------------------------------------------------------- values


def check_values(state: ProfileState, columns: Sequence[ColumnProfile], where: Where) -> None:
    """:func:`~pipeline_core.stages.data_validation.apply_schema`'s check: used numeric columns hold finite
    numbers. pandera reports the values a float coercion rejects, or, when there are none, the infinite ones."""
    problems = []
    for column in columns:
        if not (column.dtype == "numeric" and typed(column)):
            continue
        s = state.columns[column.name]
        n_bad, examples = (
            (s.uncoercible, s.uncoercible_examples) if s.uncoercible else (s.infinite, s.infinite_examples)
        )
        if not n_bad:
            continue
        share = s.numbers / s.present if s.present else 1.0
        shown = [f"{where(row)} has {snippet(value)}" for row, value in examples]
        problems.append(
            f"column {column.name!r} is numeric in {math.floor(share * 100)}% of rows ({s.present - n_bad} of "
            f"{s.present} non-empty values) but {', '.join(shown[:MAX_EXAMPLES])}"
            + (f" and {n_bad - MAX_EXAMPLES} more" if n_bad > MAX_EXAMPLES else "")
        )
    if problems:
        raise DataValidationError(failure_message(problems))


# --------------------------------------------------------------------------- target


def _labels(state: ProfileState, dtype: Dtype) -> dict[str, list[int]]:
    """Each class label (``target_labels``' text) -> [rows, first rows...], in order of first row, and the
    raw text of each label's first row under the key's entry ``raw`` (see :func:`_first_raw`)."""
    column = state.columns[state.target]
    raw = state.target_values.values
    soft = set(column.soft)
    texts = [t for t in raw if dtype == "categorical" or t not in soft]
    if dtype == "numeric":
        numbers = parse_numbers(pd.Series(texts, dtype=object)).to_numpy(dtype=float)
        whole = bool(((numbers - np.floor(numbers)) == 0).all())
        names = [str(int(v)) if whole else repr(float(v)) for v in numbers]
    elif dtype == "boolean":
        names = ["true" if t.lower() in TRUE_TOKENS else "false" for t in texts]
    else:
        names = list(texts)
    labels: dict[str, list[int]] = {}
    for text, label in zip(texts, names, strict=True):
        count, *rows = raw[text]
        entry = labels.setdefault(label, [0])
        entry[0] += count
        entry[1:] = sorted([*entry[1:], *rows])[:3]
    return dict(sorted(labels.items(), key=lambda item: item[1][1]))


def _first_raw(state: ProfileState, dtype: Dtype) -> tuple[int, str]:
    """The first row with a target value (as read with ``dtype``) and its text."""
    soft = set(state.columns[state.target].soft)
    rows = [
        (entry[1], text)
        for text, entry in state.target_values.values.items()
        if dtype == "categorical" or text not in soft
    ]
    return min(rows)


def _read_value(text: str, dtype: Dtype) -> str:
    """The target value as ``read_values`` and the schema give it (a float for a numeric target)."""
    if dtype == "numeric":
        return str(float(parse_numbers(pd.Series([text], dtype=object)).iloc[0]))
    if dtype == "boolean":
        return "true" if text.lower() in TRUE_TOKENS else "false"
    return text


def _target_identifier(state: ProfileState, dtype: Dtype) -> str | None:
    """Why the target is an identifier by :func:`infer_state` of its values as read, or None."""
    column = state.columns[state.target]
    if dtype == "numeric":
        return _numeric_identifier(state.target, column)
    if dtype == "categorical":
        inferred = infer_state(state.target, column)
        return inferred.reason if inferred.role == "identifier" else None
    return None


def profile_state(
    state: ProfileState, config: RunConfig, target_chosen_by: Literal["input", "last_column"], where: Where
) -> DataProfile:
    """The DataProfile of a whole file's state (:func:`~pipeline_core.stages.data_validation.profile_table`)."""
    target = state.target
    if state.target_values.overflow and config.problem_type != "regression":
        raise NeedsWholeTable(f"target {target!r} has too many distinct values to keep")
    target_column = state.columns[target]
    dtype = state_dtype(target_column)
    columns = profile_columns_of_state(
        state, dtype, config.column_roles, config.exclude_columns, where, target_reason(target_chosen_by)
    )
    check_features_left(columns, target)
    check_values(state, columns, where)
    n_rows = state.rows
    present = target_column.present + (target_column.soft_count if dtype == "categorical" else 0)
    dropped = check_target_present(present, n_rows, target, target_chosen_by)
    if state.target_values.overflow:  # regression requested: only the numbers are needed
        return _regression_of_many(state, config, target_chosen_by, columns, dropped, present)
    labels = _labels(state, dtype)
    first_row, first_text = _first_raw(state, dtype)
    if config.problem_type == "regression" and dtype != "numeric":
        raise DataValidationError(
            f"problem_type 'regression' needs a numeric target, but column {target!r} is {dtype} "
            f"({where(first_row)} has {snippet(first_text)})"
        )
    distinct_labels = pd.Series(list(labels), dtype=object)  # in order of first row: what the checks read
    choice = infer_problem_type(target, dtype, distinct_labels, config.problem_type)
    classification = choice.problem_type != "regression"
    if config.problem_type is None or classification:
        identifier = _target_identifier(state, dtype)
        n_labelled = sum(entry[0] for entry in labels.values())
        if identifier is not None or (classification and n_labelled >= 2 and len(labels) == n_labelled):
            why = identifier if identifier is not None else f"{n_labelled} distinct values in {n_labelled} rows"
            raise DataValidationError(
                f"target {target!r} looks like an identifier ({why}; {where(first_row)} has "
                f"{snippet(_read_value(first_text, dtype))}): every row has its own value, so there is nothing "
                "to learn to predict. Choose another target column (input field target)"
            )
    class_labels: list[str] = []
    merged: dict[str, int] = {}
    problem_type = choice.problem_type
    if classification:
        counts = pd.Series({label: entry[0] for label, entry in labels.items()}, dtype=np.int64)
        counts = counts.sort_values(ascending=False, kind="stable")  # value_counts' order
        if len(counts) < 2:
            raise DataValidationError(
                f"target {target!r} has a single class {counts.index[0]!r} in all {int(counts.iloc[0])} rows with "
                "a value: classification needs at least 2 classes"
            )
        rare_dropped, merged = rare_class_choice(
            counts,
            config.rare_classes,
            config.test_size,
            config.validation_size,
            lambda label: [where(row) for row in labels[label][1:4]],
            target,
        )
        if rare_dropped:
            dropped[RARE_DROPPED] = sum(rare_dropped.values())
        kept = [label for label in labels if label not in rare_dropped]
        class_labels = sorted_labels([MERGED_LABEL if label in merged else label for label in kept])
        problem_type = "binary_classification" if len(class_labels) == 2 else "multiclass_classification"
        present -= sum(rare_dropped.values())
    return finish_profile(
        config,
        n_rows,
        state.names,
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


def _regression_of_many(
    state: ProfileState,
    config: RunConfig,
    target_chosen_by: Literal["input", "last_column"],
    columns: Sequence[ColumnProfile],
    dropped: dict[str, int],
    present: int,
) -> DataProfile:
    """A regression target with more distinct values than the state keeps: only a numeric type is needed."""
    target = state.target
    if state_dtype(state.columns[target]) != "numeric":
        raise NeedsWholeTable(f"target {target!r} is not numeric and has too many distinct values to keep")
    choice = infer_problem_type(target, "numeric", pd.Series([0.5], dtype=object), "regression")
    return finish_profile(
        config,
        state.rows,
        state.names,
        target,
        target_chosen_by,
        columns,
        choice,
        "regression",
        [],
        dropped,
        {},
        present,
    )
