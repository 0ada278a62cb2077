"""Column roles: what each column is to training (numeric, categorical, boolean, datetime, free text), or why
it is left out (identifier, constant, excluded), inferred from the values with a reason, or given in the input.

Reading values is part of it, because a role decides what a value means:

* missing values: ``STRICT_MISSING`` tokens are missing everywhere; ``"None"`` and ``"NA"`` are missing only
  in numeric, boolean and datetime columns, where they cannot be a value; in a text column they are
  categories (a "None" level of a survey answer is real data);
* numbers: thousands separators in groups of three ("1,234", "-12,345.6") are numbers; currency signs are not;
* dates and times: one format per column (the first of ``DATETIME_FORMATS`` that reads the most values),
  written as ISO 8601 text.

ValidateData infers the roles (:func:`infer_columns`) and applies the input's overrides
(:func:`apply_overrides`); both ValidateData and Preprocess read values with :func:`read_values`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from pipeline_core.errors import DataValidationError
from pipeline_core.models import ColumnProfile, InputRole, Role

Dtype = Literal["numeric", "categorical", "boolean"]
STRICT_MISSING = frozenset({"", "n/a", "nan", "null", "#n/a", "?"})
SOFT_MISSING = frozenset({"na", "none"})
BOOLEAN_TOKENS = frozenset({"true", "false"})
# What a column the input declares boolean may hold.
TRUE_TOKENS = frozenset({"true", "t", "yes", "y", "1", "1.0"})
FALSE_TOKENS = frozenset({"false", "f", "no", "n", "0", "0.0"})
FEATURE_ROLES = ("numeric", "categorical", "boolean", "datetime", "text")
# A column whose non-empty values are numbers (or dates) in at least this share is numeric (datetime):
# the few other values in it are errors, reported (or, for dates, read as missing and counted).
NUMERIC_SHARE = 0.9
DATETIME_SHARE = 0.9
THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
# (strptime format, ISO output format), most specific first within a family; %m/%d before %d/%m (US files).
DATETIME_FORMATS: tuple[tuple[str, str], ...] = (
    ("%Y-%m-%d", "%Y-%m-%d"),
    ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S"),
    ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"),
    ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S.%f"),
    ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S.%f"),
    ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%SZ"),  # with an offset ("Z", "+02:00"): written in UTC
    ("%Y-%m-%d %H:%M:%S%z", "%Y-%m-%dT%H:%M:%SZ"),
    ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"),
    ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"),
    ("%Y/%m/%d", "%Y-%m-%d"),
    ("%m/%d/%Y", "%Y-%m-%d"),
    ("%d/%m/%Y", "%Y-%m-%d"),
    ("%m/%d/%Y %H:%M", "%Y-%m-%dT%H:%M:%S"),
    ("%m/%d/%Y %H:%M:%S", "%Y-%m-%dT%H:%M:%S"),
    ("%d/%m/%Y %H:%M", "%Y-%m-%dT%H:%M:%S"),
    ("%d/%m/%Y %H:%M:%S", "%Y-%m-%dT%H:%M:%S"),
    ("%d.%m.%Y", "%Y-%m-%d"),
    ("%d-%m-%Y", "%Y-%m-%d"),
    ("%d %b %Y", "%Y-%m-%d"),
    ("%b %d, %Y", "%Y-%m-%d"),
    ("%d-%b-%Y", "%Y-%m-%d"),
    ("%H:%M:%S", "%H:%M:%S"),
    ("%H:%M", "%H:%M:%S"),
)
_DATETIME_HINT = re.compile(r"\d")
DATETIME_SAMPLE = 500
# Free text: several words per value and mostly distinct values (names of categories repeat).
TEXT_MIN_MEAN_WORDS = 3.0
TEXT_MIN_DISTINCT_SHARE = 0.5
TEXT_MIN_DISTINCT = 200
# Identifiers: (nearly) every value distinct, in enough rows to tell.
IDENTIFIER_MIN_ROWS = 10
IDENTIFIER_DISTINCT_SHARE = 0.95
_ID_NAME = re.compile(r"(^|[^A-Za-z])(id|ID|Id)$|^(id|ID|Id)([^A-Za-z]|$)|[a-z](Id|ID)$")
_ROW_NAME = re.compile(r"^(rownames|index|unnamed: ?\d+|row ?(id|number|num|no)?)$", re.IGNORECASE)
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Inferred:
    """One column's storage type, role and why (before the input's overrides)."""

    dtype: Dtype
    role: Role
    reason: str
    format: str | None = None


def soft_missing(column: pd.Series) -> pd.Series:
    """True where a text value is "None" or "NA" (missing in typed columns only)."""
    if not (pd.api.types.is_string_dtype(column) or column.dtype == object):
        return pd.Series(False, index=column.index)
    return column.astype("str").str.lower().isin(SOFT_MISSING) & column.notna()


def _text(column: pd.Series) -> pd.Series:
    return column.astype("str").where(column.notna())


def parse_numbers(column: pd.Series) -> pd.Series:
    """Floats (NaN where missing or not a number); thousands separators in groups of 3 are removed."""
    if pd.api.types.is_bool_dtype(column):
        return column.astype(float)
    if pd.api.types.is_numeric_dtype(column):
        return pd.to_numeric(column, errors="coerce").astype(float)
    text = _text(column)
    numbers = pd.to_numeric(text, errors="coerce").astype(float)
    failed = numbers.isna() & text.notna()
    if failed.any():  # only the values that are not plain numbers pay for the separator regex
        rest = text[failed]
        rest = rest[rest.str.contains(",", regex=False)]
        unique = pd.Series(rest.unique(), dtype=object)
        grouped = set(unique[unique.str.match(THOUSANDS)]) if len(unique) else set()
        if grouped:
            chosen = rest[rest.isin(grouped)]
            numbers[chosen.index] = pd.to_numeric(chosen.str.replace(",", "", regex=False)).astype(float)
    return numbers


def without_separators(column: pd.Series) -> pd.Series:
    """The text with thousands separators removed from the values written with them."""
    text = _text(column)
    if not text.str.contains(",", regex=False).any():
        return text
    plain = pd.to_numeric(text, errors="coerce").notna() | text.isna()
    if plain.all():
        return text
    rest = text[~plain]
    grouped = rest[rest.str.match(THOUSANDS, na=False)]
    return text.where(~text.index.isin(grouped.index), text.str.replace(",", "", regex=False))


def numeric_share(column: pd.Series, soft: pd.Series | None = None) -> tuple[float, int]:
    """(share of non-empty values that are numbers, non-empty count), "None"/"NA" not counted."""
    present = column[column.notna() & ~(soft_missing(column) if soft is None else soft)]
    if present.empty:
        return 1.0, 0
    return float(parse_numbers(present).notna().sum()) / len(present), len(present)


def _is_boolean(present: pd.Series) -> bool:
    unique = pd.Series(present.unique()).astype("str")
    return len(unique) <= 2 * len(BOOLEAN_TOKENS) and bool(set(unique.str.lower()) <= BOOLEAN_TOKENS)


def storage_dtype(column: pd.Series, soft: pd.Series | None = None) -> Dtype:
    """numeric, boolean or categorical for one normalized column (as the pandera schema stores it)."""
    if pd.api.types.is_bool_dtype(column):
        return "boolean"
    if pd.api.types.is_numeric_dtype(column):
        return "numeric"
    soft = soft_missing(column) if soft is None else soft
    share, _ = numeric_share(column, soft)
    if share >= NUMERIC_SHARE:
        return "numeric"  # an all-empty column is numeric too: it reaches training as NaN
    if _is_boolean(column[column.notna() & ~soft]):
        return "boolean"
    return "categorical"


def datetime_format(column: pd.Series, soft: pd.Series | None = None) -> tuple[str | None, int, int]:
    """(format reading the most values, values it reads, non-empty values); format None if none reads any."""
    present = column[column.notna() & ~(soft_missing(column) if soft is None else soft)].astype("str")
    if present.empty:
        return None, 0, 0
    fmt, read = datetime_format_of_counts(present.value_counts())
    return fmt, read, len(present)


def datetime_format_of_counts(counts: pd.Series) -> tuple[str | None, int]:
    """(format, values it reads) for a column's value counts (``value_counts`` order: the date formats are
    tried on the ``DATETIME_SAMPLE`` most frequent values); the streaming profile passes its own counts."""
    values = pd.Series(counts.index, dtype=object)
    sample = values.iloc[:DATETIME_SAMPLE]
    if not sample.str.contains(_DATETIME_HINT).any():
        return None, 0
    best: tuple[str | None, int] = (None, 0)
    for fmt, _ in DATETIME_FORMATS:
        parsed = parse_datetimes(sample, fmt)
        hits = int(parsed.notna().sum())
        if hits > best[1]:
            best = (fmt, hits)
    if best[0] is None:
        return None, 0
    parsed = parse_datetimes(values, best[0])
    return best[0], int(counts.to_numpy()[parsed.notna().to_numpy()].sum())


def parse_datetimes(values: pd.Series, fmt: str) -> pd.Series:
    """Timestamps (NaT where a value does not fit ``fmt``); values with an offset in UTC."""
    return pd.to_datetime(values, format=fmt, errors="coerce", utc="%z" in fmt)


def iso_output(fmt: str) -> str:
    """The ISO 8601 output format for a column read with ``fmt``."""
    return dict(DATETIME_FORMATS)[fmt]


def is_identifier_name(name: str) -> bool:
    return bool(_ID_NAME.search(name.strip()) or is_row_name(name))


def is_row_name(name: str) -> bool:
    """A name for the row's number (``index``, ``row``, ``Unnamed: 0``, ...)."""
    return bool(_ROW_NAME.match(name.strip()))


def _numeric_identifier(name: str, column: pd.Series, soft: pd.Series) -> str | None:
    """Why an all-distinct whole-number column is an identifier (it must be named like one), or None.

    The name decides: distinct whole numbers without an id-like name may be a count or a year, and a float
    is a measurement even when every value differs.
    """
    if not is_identifier_name(name):
        return None
    numbers = parse_numbers(column.mask(soft)).dropna()
    n = len(numbers)
    if n < IDENTIFIER_MIN_ROWS or numbers.nunique() != n or not bool((numbers == np.floor(numbers)).all()):
        return None
    if is_row_name(name) and n == len(column) and bool((np.diff(numbers.to_numpy()) == 1).all()):
        return f"numbers the rows {int(numbers.iloc[0])}..{int(numbers.iloc[-1])} in file order"
    if is_identifier_name(name):
        return f"a different whole number in each of its {n} non-empty rows and named like an identifier"
    return None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def infer_column(name: str, column: pd.Series) -> Inferred:
    """The storage type, role and reason of one feature column (values normalized, soft tokens present)."""
    n_rows = len(column)
    soft = soft_missing(column)
    dtype = storage_dtype(column, soft)
    usable = column.notna() & (~soft if dtype != "categorical" else True)
    present = column[usable]
    if present.empty:
        return Inferred(dtype, "constant", f"empty in all {n_rows} rows")
    n_present = len(present)
    counts = present.astype("str").value_counts()
    n_distinct = len(counts)
    if n_distinct == 1 and n_present == n_rows:
        return Inferred(dtype, "constant", f"one value {str(present.iloc[0])!r} in all {n_rows} rows")
    if dtype == "numeric":
        why = _numeric_identifier(name, column, soft)
        if why:
            return Inferred(dtype, "identifier", why)
        reason = f"numbers, {n_distinct} distinct values in {n_present} non-empty rows"
        if not pd.api.types.is_numeric_dtype(present) and present.str.contains(",", regex=False).any():
            unique = pd.Series(counts.index, dtype=object)
            grouped = unique[unique.str.match(THOUSANDS)]
            if not grouped.empty:
                n_grouped = int(counts[grouped].sum())
                reason += f" ({n_grouped} written with thousands separators, e.g. {str(grouped.iloc[0])!r})"
        return Inferred(dtype, "numeric", reason)
    if dtype == "boolean":
        return Inferred(dtype, "boolean", "only true/false values")
    fmt, read, total = datetime_format(column, soft)
    return role_of_values(
        dtype,
        (fmt, read, total),
        lambda: _mean_words(counts),
        n_distinct,
        n_present,
        str(present.iloc[0]),
    )


def _mean_words(counts: pd.Series) -> float:
    """The mean word count of the values ``counts`` counts (values are stripped: gaps + 1)."""
    words = counts.index.to_series().str.count(r"\s+").to_numpy() + 1
    return float(np.average(words, weights=counts.to_numpy()))


def role_of_values(
    dtype: Dtype,
    dates: tuple[str | None, int, int],
    mean_words: Callable[[], float],
    n_distinct: int,
    n_present: int,
    example: str,
) -> Inferred:
    """The role of a column that is neither numeric nor boolean, from its figures: ``dates`` is the datetime
    format found, how many values it reads and of how many; ``mean_words`` the mean word count (asked only
    when the column is not dates). The whole-table and the streamed profile both decide here."""
    fmt, read, total = dates
    if fmt is not None and read >= DATETIME_SHARE * total:
        unread = total - read
        reason = f"dates/times in the format {fmt} in {read} of {total} non-empty values"
        if unread:
            reason += f"; the other {unread} are read as missing"
        return Inferred(dtype, "datetime", reason, fmt)
    words = mean_words()
    share = n_distinct / n_present
    if words >= TEXT_MIN_MEAN_WORDS and (share >= TEXT_MIN_DISTINCT_SHARE or n_distinct >= TEXT_MIN_DISTINCT):
        return Inferred(
            dtype,
            "text",
            f"free text: {n_distinct} distinct values in {n_present} non-empty rows, {words:.1f} words on average",
        )
    if n_present >= IDENTIFIER_MIN_ROWS and share >= IDENTIFIER_DISTINCT_SHARE:
        return Inferred(
            dtype,
            "identifier",
            f"{n_distinct} distinct values in {n_present} non-empty rows (e.g. {example!r}): "
            "a name or code per row, nothing to generalise from",
        )
    return Inferred(dtype, "categorical", f"{n_distinct} distinct values in {n_present} non-empty rows")


# --------------------------------------------------------------------------- overrides


def _unknown_names(kind: str, names: Sequence[str], columns: Sequence[str]) -> str | None:
    unknown = [n for n in names if n not in columns]
    if not unknown:
        return None
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, list(columns), n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"{kind} names {_plural(len(unknown), 'column')} not in the dataset: {', '.join(parts)}"


def check_override_names(
    column_roles: Mapping[str, str], exclude_columns: Sequence[str], columns: Sequence[str], target: str
) -> None:
    """DataValidationError for unknown column names (with a did-you-mean) and for contradicting overrides."""
    problems = [
        p
        for p in (
            _unknown_names("column_roles", list(column_roles), columns),
            _unknown_names("exclude_columns", list(exclude_columns), columns),
        )
        if p
    ]
    if target in column_roles:
        problems.append(f"column_roles sets a role for {target!r}, the target; the target's role is its own")
    if target in exclude_columns:
        problems.append(f"exclude_columns names {target!r}, the target; choose another target to leave it out")
    both = [n for n in exclude_columns if n in column_roles]
    if both:
        problems.append(f"{', '.join(map(repr, both))} both given a role in column_roles and excluded")
    if problems:
        raise DataValidationError(
            "; ".join(problems)
            + f". The columns are {', '.join(repr(c) for c in columns[:30])}"
            + (f", ... ({len(columns)} in all)" if len(columns) > 30 else "")
        )


def _example(column: pd.Series, wrong: pd.Series, where: object) -> str:
    position = int(np.flatnonzero(wrong.to_numpy())[0])
    value = column.iloc[position]
    place = where(position) if callable(where) else f"row {position + 1}"
    return f"{place} has {str(value)!r}"


def override(name: str, role: InputRole, column: pd.Series, inferred: Inferred, where: object) -> Inferred:
    """The column read with the role the input gives it, or DataValidationError saying why it cannot be."""
    given = f"given in the input (inferred: {inferred.role})"
    usable = column.notna() & ~soft_missing(column)
    present = column[usable]
    cannot = f"column_roles sets {name!r} to {role!r}, but"
    if role == "numeric":
        share, total = numeric_share(column)
        if share < NUMERIC_SHARE:
            wrong = usable & parse_numbers(column).isna()
            raise DataValidationError(
                f"{cannot} only {round(share * total)} of its {total} non-empty values are numbers "
                f"({_example(column, wrong, where)})"
            )
        return Inferred("numeric", "numeric", given)
    if role == "boolean":
        wrong = usable & ~column.astype("str").str.lower().isin(TRUE_TOKENS | FALSE_TOKENS)
        if wrong.any():
            raise DataValidationError(
                f"{cannot} {_example(column, wrong, where)}: a boolean column holds only true/false, yes/no, "
                "y/n, t/f or 1/0"
            )
        return Inferred("boolean", "boolean", given)
    if role == "datetime":
        fmt, read, total = datetime_format(column)
        if fmt is None or read < DATETIME_SHARE * total:
            wrong = usable.copy()
            if fmt is not None:
                wrong &= parse_datetimes(column.astype("str"), fmt).isna()
            found = f"the best format, {fmt}, reads {read} of {total} values" if fmt else "no date format fits"
            raise DataValidationError(
                f"{cannot} {found} ({_example(column, wrong, where)}); accepted formats: "
                + ", ".join(f for f, _ in DATETIME_FORMATS)
            )
        return Inferred("categorical", "datetime", given, fmt)
    if role == "constant":
        distinct_values = present.astype("str").unique()
        if len(distinct_values) > 1:
            shown = ", ".join(map(repr, distinct_values[:3]))
            raise DataValidationError(
                f"{cannot} it has {len(distinct_values)} distinct values (e.g. {shown}); "
                "to leave it out, name it in exclude_columns"
            )
        return Inferred(inferred.dtype, "constant", given)
    # categorical, text, identifier: any values can be read as text
    dtype: Dtype = (
        "categorical" if pd.api.types.is_object_dtype(column) or inferred.dtype == "numeric" else inferred.dtype
    )
    return Inferred(dtype, role, given)


def profile_columns(
    frame: pd.DataFrame,
    target: str,
    target_dtype: Dtype,
    column_roles: Mapping[str, InputRole],
    exclude_columns: Sequence[str],
    where: object = None,
    target_reason: str = "the target",
) -> list[ColumnProfile]:
    """Every column's profile in file order; ``missing`` is counted by the caller once values are read
    (:func:`with_missing_counts`)."""
    names = [str(c) for c in frame.columns]
    check_override_names(column_roles, exclude_columns, names, target)
    profiles = []
    for name in names:
        column = frame[name]
        if name == target:
            profiles.append(column_profile(name, Inferred(target_dtype, "target", target_reason), "inferred"))
        else:
            profiles.append(
                profile_with_input(
                    name,
                    infer_column(name, column),
                    column_roles,
                    exclude_columns,
                    lambda role, inferred: override(name, role, column, inferred, where),  # noqa: B023
                )
            )
    return profiles


def column_profile(name: str, inferred: Inferred, chosen_by: Literal["inferred", "input"]) -> ColumnProfile:
    """The column's profile with ``missing`` still 0 (counted once values are read)."""
    return ColumnProfile(
        name=name,
        dtype=inferred.dtype,
        role=inferred.role,
        reason=inferred.reason,
        chosen_by=chosen_by,
        format=inferred.format,
        missing=0,
    )


def profile_with_input(
    name: str,
    inferred: Inferred,
    column_roles: Mapping[str, InputRole],
    exclude_columns: Sequence[str],
    override_role: Callable[[InputRole, Inferred], Inferred],
) -> ColumnProfile:
    """A feature column's profile: excluded or given a role by the input (``override_role`` reads the column
    with it), or as inferred. The whole-table and the streamed profile both decide here."""
    if name in exclude_columns:
        excluded = Inferred(inferred.dtype, "excluded", f"excluded in the input (inferred: {inferred.role})")
        return column_profile(name, excluded, "input")
    if name in column_roles:
        return column_profile(name, override_role(column_roles[name], inferred), "input")
    return column_profile(name, inferred, "inferred")


# --------------------------------------------------------------------------- reading values


def typed(profile: ColumnProfile) -> bool:
    """True for a column whose values are read as numbers, booleans or dates (training sees them)."""
    return profile.role in (*FEATURE_ROLES, "target")


def read_values(frame: pd.DataFrame, columns: Sequence[ColumnProfile]) -> pd.DataFrame:
    """The frame with each used column's values as its role reads them (before the pandera schema).

    numeric: separators removed ("None"/"NA" missing); boolean: "true"/"false"; datetime: ISO 8601 text
    (unreadable values missing); everything else: the stripped text. Columns not used are left as they are.
    """
    result = {}
    for profile in columns:
        column = frame[profile.name]
        if typed(profile) and profile.dtype != "categorical":
            column = column.mask(soft_missing(column))
        if not typed(profile):
            pass
        elif profile.role == "datetime" and profile.format:
            parsed = parse_datetimes(column.astype("str").where(column.notna()), profile.format)
            column = parsed.dt.strftime(iso_output(profile.format)).astype(object).where(parsed.notna(), None)
        elif profile.dtype == "numeric":
            if not pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
                column = without_separators(column)
        elif profile.dtype == "boolean":
            if pd.api.types.is_bool_dtype(column):
                column = column.map({True: "true", False: "false"}).astype(object)
            else:
                lowered = column.astype("str").str.lower()
                column = pd.Series(
                    np.where(lowered.isin(TRUE_TOKENS), "true", "false"), index=column.index, dtype=object
                ).where(column.notna(), None)
        result[profile.name] = column
    return pd.DataFrame(result, index=frame.index)


def with_missing_counts(columns: Sequence[ColumnProfile], values: pd.DataFrame) -> list[ColumnProfile]:
    """The profiles with ``missing`` = the values read as missing (``values`` from :func:`read_values`)."""
    return [c.model_copy(update={"missing": int(values[c.name].isna().sum())}) for c in columns]
