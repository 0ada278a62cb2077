"""A training channel's CSV files read into one split, without the table being held twice.

A channel directory holds one CSV (``<split>.csv``, what Preprocess writes) or several part files (a
sharded Preprocess), read in sorted name order as one table; every file has the same header row.

With the column roles of ``columns.json`` and pyarrow installed, each file is parsed by
``pyarrow.csv.read_csv`` straight into typed columns: numeric features as float64 (empty cells missing),
every other column as text as written. Numeric columns become float64 arrays and the other columns object
arrays of ``str``/NaN that share one ``str`` per distinct value (a categorical column costs a pointer a row,
not a string a row), which is what ``prepare_features`` makes of them anyway. The values are those the
pandas reader gives (``read_csv_by_roles``): numbers parse to the same floats, labels and texts are the
same strings, so the model trained is the same.

Without pyarrow (the SageMaker scikit-learn image 1.2-1 has none), without roles, or when pyarrow cannot
read a file as pandas would (a numeric column holding text, invalid UTF-8, duplicate header names), a file
is read by pandas as before, and any error names the file as before.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from stepml_tabular.columns import read_csv_by_roles
from stepml_tabular.errors import TrainingDataError

try:  # not in the SageMaker scikit-learn image: the pandas reader is used there
    import pyarrow as pa
    import pyarrow.csv as pa_csv
except ImportError:  # pragma: no cover - exercised by the container test
    pa = None
    pa_csv = None

CSV_SUFFIX = ".csv"
# Text that pandas' C parser reads as a boolean (read_csv's default true/false values).
_PANDAS_TRUE = frozenset({"True", "TRUE", "true"})
_PANDAS_FALSE = frozenset({"False", "FALSE", "false"})


def channel_csvs(directory: Path, name: str) -> list[Path]:
    """The channel's CSV files in sorted name order (hidden files and others such as columns.json skipped)."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    csvs = [p for p in files if p.suffix.lower() == CSV_SUFFIX]
    if not csvs:
        raise TrainingDataError(
            f"channel {name!r}: expected one or more .csv files in {directory}, found none "
            f"(all files: {[p.name for p in files]})"
        )
    return csvs


def fast_reader_available() -> bool:
    """Whether pyarrow is importable (the fast reader's only requirement)."""
    return pa_csv is not None


def read_split(paths: list[Path], roles: dict[str, str] | None, name: str) -> pd.DataFrame:
    """The channel's files as one frame, in file order; every file must have the same header."""
    frames = [_read_file(path, roles, name) for path in paths]
    first = list(frames[0].columns)
    for path, frame in zip(paths[1:], frames[1:]):  # noqa: B905 - same length by construction (Python 3.9)
        if list(frame.columns) != first:
            raise TrainingDataError(
                f"channel {name!r}: {path.name} has the columns {list(frame.columns)}, {paths[0].name} has "
                f"{first}; every file of a channel must have the same header"
            )
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


def _read_file(path: Path, roles: dict[str, str] | None, name: str) -> pd.DataFrame:
    if roles and pa_csv is not None:
        frame = _read_with_pyarrow(path, roles)
        if frame is not None:
            return frame
    try:
        return read_csv_by_roles(path, roles)
    except (ValueError, UnicodeDecodeError) as exc:  # EmptyDataError and ParserError are ValueErrors
        raise TrainingDataError(f"channel {name!r}: cannot read {path.name} as CSV: {exc}") from exc


def _read_with_pyarrow(path: Path, roles: dict[str, str]) -> pd.DataFrame | None:
    """The file as ``read_csv_by_roles`` reads it, parsed by pyarrow; None when pyarrow cannot."""
    assert pa is not None and pa_csv is not None
    types = {column: pa.float64() if role == "numeric" else pa.string() for column, role in roles.items()}
    try:
        with path.open(encoding="utf-8", newline="") as lines:
            names = next(csv.reader(lines), [])
        if not names or len(set(names)) != len(names) or names[0].startswith("\ufeff"):
            return None  # no header, or duplicates pandas renames ("a.1"), or a BOM: pandas decides
        # Every column not in roles (the target) is read as text too and given pandas' type below.
        types.update({column: pa.string() for column in names if column not in roles})
        convert = pa_csv.ConvertOptions(
            column_types=types, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True
        )
        table = pa_csv.read_csv(path, convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, UnicodeDecodeError, csv.Error):
        return None  # a value pandas reads otherwise (text in a numeric column, ...): pandas decides
    index = pd.RangeIndex(table.num_rows)
    columns: dict[str, Any] = {}
    for column in list(table.column_names):
        values = table.column(0)
        table = table.remove_column(0)  # each column's Arrow buffers are freed once it is converted
        if roles.get(column) == "numeric":
            converted: Any = values.to_numpy().astype("float64", copy=False)  # nulls come out as NaN
        elif column in roles:
            converted = _labels(values)
        else:
            converted = _inferred(_labels(values))
        del values
        # An object array stays one (pandas 3 would otherwise turn it into its string dtype, a copy of every
        # value that prepare_features then turns back into str objects).
        dtype = object if converted.dtype == object else None
        columns[column] = pd.Series(converted, index=index, dtype=dtype, copy=False, name=column)
    return pd.DataFrame(columns, index=index, copy=False)


def _labels(values: Any) -> np.ndarray:
    """A text column as an object array of str (one object per distinct value) with NaN for missing."""
    encoded = values.dictionary_encode().combine_chunks()
    labels = np.array([*encoded.dictionary.to_pylist(), np.nan], dtype=object)
    indices = encoded.indices.fill_null(len(encoded.dictionary)).to_numpy()
    result: np.ndarray = labels.take(indices)
    return result


def _inferred(text: np.ndarray) -> Any:
    """A column not named in roles (the target) with the type pandas would infer for it: integers, then
    floats, then booleans, else the text (with ``keep_default_na=False`` only an empty cell is missing)."""
    present = text[~pd.isna(text)]
    if len(present) == 0:
        return np.full(len(text), np.nan)
    try:
        numbers = pd.to_numeric(pd.Series(present, dtype=object), errors="raise")
    except (ValueError, TypeError):
        numbers = None
    if numbers is not None and all(_plain_number(v) for v in set(present.tolist())):
        if len(present) == len(text) and pd.api.types.is_integer_dtype(numbers.dtype):
            return numbers.to_numpy()
        return pd.to_numeric(pd.Series(text, dtype=object)).to_numpy(dtype="float64")
    distinct = set(present.tolist())
    if distinct <= _PANDAS_TRUE | _PANDAS_FALSE:
        booleans = np.array([np.nan if pd.isna(v) else v in _PANDAS_TRUE for v in text.tolist()], dtype=object)
        return booleans.astype(bool) if len(present) == len(text) else booleans
    return text


def _plain_number(text: str) -> bool:
    """Text pandas' C parser reads as a number: digits, sign, point, exponent (not "nan", "inf", " 1")."""
    stripped = text.lstrip("+-")
    return bool(stripped) and stripped[0] in "0123456789." and text == text.strip()
