"""The files of batch scoring: read a CSV or Parquet input in chunks, write the transform job's JSON Lines input,
and join its output back onto the input rows.

Every step streams: a file is read and written chunk by chunk (``CHUNK_ROWS`` rows, or Parquet row groups'
batches), so a Lambda needs memory for one chunk, not for the file (its ``/tmp`` holds the files).

* **Input.** CSV (UTF-8, a header row; ``csv`` module, strict quoting: a quoted field may hold commas, quotes
  and newlines) or Parquet (flat columns), told apart by Parquet's magic bytes. Rows are counted from 1 without
  the header, and a CSV error also names the file line.
* **What the model gets** (:func:`write_records`): one JSON object per row with the model's feature columns
  only (an id or any other column stays out of the request), values read as the pipeline reads a dataset: the
  missing-value tokens (``STRICT_MISSING``; "None"/"NA" too in numeric, boolean and datetime features) are
  null, numeric features are numbers (thousands separators in groups of three allowed), other features the
  stripped text; a value a numeric feature cannot take is an error naming its row, line and column, as the
  inference API's 400 does. Parquet values keep their types (NaN is null).
* **The output** (:func:`assemble`): every input column as it was, plus the prediction column, one row per
  input row in input order; CSV cells are written back as they were read (quoting may differ: minimal
  quoting), Parquet columns keep their types. The transform output is read line by line (blank lines between
  mini-batches skipped) and must have exactly one prediction per row, or nothing is written.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from pipeline_core.errors import BatchOutputError, DataValidationError
from pipeline_core.stages.batch_request import Format
from pipeline_core.stages.column_roles import SOFT_MISSING, STRICT_MISSING, THOUSANDS

CHUNK_ROWS = 10_000
PARQUET_BATCH_ROWS = 65_536
# Kinds whose "None"/"NA" is a missing value (in text and categories they are values, as in training).
_TYPED_KINDS = frozenset({"numeric", "boolean", "datetime"})
_COMPRESSED = {b"\x1f\x8b": "gzip-compressed", b"PK\x03\x04": "a zip archive (or an .xlsx workbook)"}
# Distinct values per column whose encoding is remembered (beyond, each new value is converted anew).
_MEMO_LIMIT = 100_000
# json.dumps's own string encoder (C), without the call's overhead.
_encode_str = json.encoder.encode_basestring_ascii
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class InputFile:
    """A local copy of the input: where it is, its format and its columns in file order."""

    path: Path
    format: Format
    columns: list[str]


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off while a file streams through: every chunk makes ~10 objects per row and
    frees them by reference counting (they hold no cycles), but the allocations alone trigger collections that
    walk every live object, a quarter to a third of the time on a million rows. Back on afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _sniff(path: Path, name: str) -> Format:
    with path.open("rb") as handle:
        head = handle.read(4)
    if not head:
        raise DataValidationError(f"{name} is empty: a CSV file needs a header row, a Parquet file its schema")
    if head == b"PAR1":
        return "parquet"
    for magic, what in _COMPRESSED.items():
        if head.startswith(magic):
            raise DataValidationError(f"{name} is {what}: score an uncompressed CSV or a Parquet file")
    return "csv"


def open_input(path: Path, name: str) -> InputFile:
    """The input's format and columns, checked: a header (CSV) or flat schema (Parquet), names unique and
    non-empty. ``name`` is how errors name the file (its S3 URI)."""
    kind = _sniff(path, name)
    if kind == "parquet":
        import pyarrow.parquet as pq  # the pandas layer's pyarrow; only Parquet needs it

        try:
            schema = pq.ParquetFile(path).schema_arrow
        except Exception as error:  # pyarrow raises several types for a damaged file
            raise DataValidationError(f"{name} is not a readable Parquet file: {error}") from error
        nested = [f.name for f in schema if f.type.num_fields > 0 or str(f.type).startswith(("list", "map"))]
        if nested:
            raise DataValidationError(f"{name}: nested Parquet columns {nested} cannot be scored: flatten them")
        columns = list(schema.names)
    else:
        with _text(path, name) as handle:
            try:
                header = next(csv.reader(handle, strict=True), None)
            except UnicodeDecodeError as error:
                raise DataValidationError(f"{name} is not UTF-8 text (save it as UTF-8): {error}") from error
            except csv.Error as error:
                raise DataValidationError(f"{name}: the header row cannot be read: {error}") from error
        if not header or all(not cell.strip() for cell in header):
            raise DataValidationError(f"{name} has no header row: the first line must name the columns")
        columns = [cell.strip() for cell in header]
    empty = [i + 1 for i, c in enumerate(columns) if not c]
    if empty:
        raise DataValidationError(f"{name}: column(s) {empty} of the header have no name")
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise DataValidationError(f"{name}: column name(s) {duplicated} appear more than once in the header")
    return InputFile(path, kind, columns)


def _text(path: Path, name: str) -> IO[str]:
    # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column's name
    return path.open("r", encoding="utf-8-sig", newline="")


def rows(source: InputFile, name: str) -> Iterator[list[list[Any]]]:
    """The data rows in chunks (each a list of rows, each a list of values in column order): CSV cells as
    text, Parquet values as Python values. A CSV row of another width than the header is an error."""
    if source.format == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(source.path).iter_batches(batch_size=PARQUET_BATCH_ROWS):
            yield [list(row) for row in zip(*(column.to_pylist() for column in batch.columns), strict=True)]
        return
    width = len(source.columns)
    with _text(source.path, name) as handle:
        reader = csv.reader(handle, strict=True)
        chunk: list[list[Any]] = []
        number = 0
        try:
            next(reader)
            for row in reader:
                if not row:
                    continue  # a blank line is not a row (the csv module reads it as [])
                number += 1
                if len(row) != width:
                    raise DataValidationError(
                        f"{name}: row {number} (line {reader.line_num}) has {len(row)} values, the header "
                        f"names {width} columns"
                    )
                chunk.append(row)
                if len(chunk) == CHUNK_ROWS:
                    yield chunk
                    chunk = []
        except csv.Error as error:
            raise DataValidationError(f"{name}: row {number + 1} (line {reader.line_num}): {error}") from error
        except UnicodeDecodeError as error:
            raise DataValidationError(
                f"{name} is not UTF-8 text (save it as UTF-8) near row {number + 1}: {error}"
            ) from error
        if chunk:
            yield chunk


def check_columns(columns: Sequence[str], features: Sequence[str], name: str, model: str) -> None:
    """Every feature column of the model is in the file; the error names the missing ones and what the file has."""
    missing = [f for f in features if f not in columns]
    if missing:
        raise DataValidationError(
            f"{name} lacks the feature column(s) {missing} that {model} needs (it has {list(columns)}; every "
            f"feature column must be there: {list(features)}; other columns are kept in the output)"
        )


# --- the model's records -------------------------------------------------------------------------------


def _number(text: str) -> float | None:
    if _NUMBER.match(text):
        return float(text)
    if THOUSANDS.match(text):
        return float(text.replace(",", ""))
    return None


def feature_value(value: Any, kind: str | None, column: str) -> Any:
    """One value as the model gets it in a JSON request (see the module docstring); ValueError says what is
    wrong with it (the caller names the row)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        lowered = text.lower()
        if lowered in STRICT_MISSING or (kind in _TYPED_KINDS and lowered in SOFT_MISSING):
            return None
        if kind != "numeric":
            return text
        number = _number(text)
        if number is None:
            raise ValueError(f"feature {column!r} is numeric: {value!r} is not a number")
        value = number
    elif isinstance(value, bool):
        if kind == "numeric":
            raise ValueError(f"feature {column!r} is numeric: got the boolean {value}")
        return value
    elif isinstance(value, Decimal):
        value = float(value)
    elif isinstance(value, datetime | date | time):
        return value.isoformat()
    elif isinstance(value, bytes):
        return feature_value(value.decode("utf-8", errors="replace"), kind, column)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise ValueError(f"feature {column!r} must be a finite number, got {value}")
    if isinstance(value, int | float):
        return value
    raise ValueError(f"feature {column!r} has a value of type {type(value).__name__}: {value!r:.60}")


def _encoded(value: Any) -> str:
    """A converted value as JSON text (what json.dumps writes for it)."""
    if value is None:
        return "null"
    if type(value) is str:
        return _encode_str(value)
    return json.dumps(value, allow_nan=False)


def _encode_column(values: Sequence[Any], kind: str | None, column: str, memo: dict[Any, str], first: int) -> list[str]:
    """A column's values as the JSON text of what the model gets (``feature_value``), the text of a value seen
    before taken from ``memo`` (columns repeat values: categories, rounded numbers); ValueError names the row."""
    encoded: list[str] = []
    append = encoded.append
    for index, value in enumerate(values):
        try:
            append(memo[value])
            continue
        except (KeyError, TypeError):  # new, or unhashable (then converted each time)
            pass
        try:
            text = _encoded(feature_value(value, kind, column))
        except ValueError as error:
            raise ValueError(f"row {first + index}: {error}") from None
        if len(memo) < _MEMO_LIMIT:
            with contextlib.suppress(TypeError):  # a column holds one type, so 1 and True never share a key
                memo[value] = text
        append(text)
    return encoded


def write_records(source: InputFile, name: str, features: Sequence[str], kinds: dict[str, str], out: IO[bytes]) -> int:
    """Write one JSON object of the feature columns per input row to ``out``; the number of rows.

    Column by column: each feature's values are converted and encoded once per distinct value, then every
    row's line is one %-format of its columns' texts (the keys JSON-encoded once)."""
    positions = [source.columns.index(feature) for feature in features]
    template = "{" + ",".join(json.dumps(f).replace("%", "%%") + ":%s" for f in features) + "}"
    memos: list[dict[Any, str]] = [{} for _ in features]
    count = 0
    with paused_gc():
        for chunk in rows(source, name):
            columns = list(zip(*chunk, strict=True))
            try:
                encoded = [
                    _encode_column(columns[i], kinds.get(f), f, memo, count + 1)
                    for i, f, memo in zip(positions, features, memos, strict=True)
                ]
            except ValueError as error:
                raise DataValidationError(f"{name} {error}") from error
            lines = [template % values for values in zip(*encoded, strict=True)]
            out.write(("\n".join(lines) + "\n").encode())
            count += len(chunk)
    return count


# --- the output ------------------------------------------------------------------------------------------


def predictions(lines: IO[bytes], name: str) -> Iterator[Any]:
    """The predictions of a transform output (``{"prediction": v}`` per line, or a bare JSON value), in order.

    Every line is parsed on its own (a line holding two values and another split in two would otherwise pass
    for the right count, shifted)."""
    seen: dict[bytes, Any] = {}  # a classifier's lines repeat (one per class): each is parsed once
    for number, raw in enumerate(lines, start=1):
        try:
            yield seen[raw]
            continue
        except KeyError:
            pass
        if not raw.strip():
            continue  # a newline SageMaker adds after each mini-batch's answer (AssembleWith=Line)
        value = _prediction(raw, number, name)
        if len(seen) < _MEMO_LIMIT:
            seen[raw] = value
        yield value


def _prediction(raw: bytes, number: int, name: str) -> Any:
    try:
        value = json.loads(raw)
    except ValueError as error:
        raise BatchOutputError(f"line {number} of {name} is not JSON: {raw[:100]!r}") from error
    if type(value) is dict:
        if "prediction" not in value:
            raise BatchOutputError(f'line {number} of {name} has no "prediction": {raw[:100]!r}')
        value = value["prediction"]
    if isinstance(value, dict | list):
        raise BatchOutputError(f"line {number} of {name}: a prediction must be a value, got {raw[:100]!r}")
    return value


def _csv_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _take(stream: Iterator[Any], count: int, done: int, total: int, name: str) -> list[Any]:
    taken = [value for _, value in zip(range(count), stream, strict=False)]
    if len(taken) < count:
        raise BatchOutputError(
            f"{name} has {done + len(taken)} predictions for {total} input rows: the transform output does not "
            "line up with the input, so no scored file is written"
        )
    return taken


@paused_gc()
def assemble(
    source: InputFile,
    name: str,
    total_rows: int,
    output: IO[bytes],
    output_name: str,
    prediction_column: str,
    output_format: Format,
    regression: bool,
    out: Path,
) -> int:
    """Write ``out``: the input's rows and columns plus ``prediction_column``, in input order; rows written."""
    stream = predictions(output, output_name)
    done = 0
    if output_format == "csv":
        with out.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow([*source.columns, prediction_column])
            text = source.format == "csv"  # a CSV's cells are text already, written back as they were read
            for chunk in rows(source, name):
                values = map(_csv_text, _take(stream, len(chunk), done, total_rows, output_name))
                if text:
                    for row, value in zip(chunk, values, strict=True):
                        row.append(value)
                    writer.writerows(chunk)
                else:
                    writer.writerows([*map(_csv_text, row), v] for row, v in zip(chunk, values, strict=True))
                done += len(chunk)
    else:
        done = _assemble_parquet(source, name, total_rows, stream, output_name, prediction_column, regression, out)
    leftover = sum(1 for _ in stream)
    if leftover or done != total_rows:
        raise BatchOutputError(
            f"{output_name} has {done + leftover} predictions for {total_rows} input rows ({done} read): the transform "
            "output does not line up with the input, so no scored file is written"
        )
    return done


def _assemble_parquet(
    source: InputFile,
    name: str,
    total_rows: int,
    stream: Iterator[Any],
    output_name: str,
    prediction_column: str,
    regression: bool,
    out: Path,
) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    prediction_type = pa.float64() if regression else pa.string()

    def predictions_array(values: list[Any]) -> Any:
        try:
            typed = [None if v is None else (float(v) if regression else str(v)) for v in values]
            return pa.array(typed, prediction_type)
        except (TypeError, ValueError) as error:
            raise BatchOutputError(f"{output_name}: a regression prediction is not a number: {error}") from error

    done = 0
    if source.format == "parquet":
        parquet = pq.ParquetFile(source.path)
        schema = parquet.schema_arrow.append(pa.field(prediction_column, prediction_type))
        with pq.ParquetWriter(out, schema) as writer:
            for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                values = _take(stream, batch.num_rows, done, total_rows, output_name)
                columns = [*batch.columns, predictions_array(values)]
                writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
                done += batch.num_rows
        return done
    # CSV in, Parquet out: the cells stay text, as they were written (no type guessed per chunk)
    fields = [pa.field(c, pa.string()) for c in source.columns]
    schema = pa.schema([*fields, pa.field(prediction_column, prediction_type)])
    with pq.ParquetWriter(out, schema) as writer:
        for chunk in rows(source, name):
            values = _take(stream, len(chunk), done, total_rows, output_name)
            columns = [pa.array(list(column), pa.string()) for column in zip(*chunk, strict=True)]
            writer.write_batch(pa.RecordBatch.from_arrays([*columns, predictions_array(values)], schema=schema))
            done += len(chunk)
    return done
