"""Reading the dataset file into a :class:`Table`, rejecting what cannot be read and saying exactly where.

1. bytes: size limit, empty file, compressed/binary files (magic bytes, NUL bytes), UTF-8, line length;
2. CSV structure (``csv`` module, strict quoting): header present, column names non-empty and unique,
   every row as wide as the header, at least one data row; Parquet: flat columns only.

Text values are stripped and the tokens that are never a value (``STRICT_MISSING``) become NA; "None" and
"NA" stay until a column's role decides (:mod:`pipeline_core.stages.column_roles`).
Rows are counted from 1 without the header ("row 1" is the first data row); for CSV the physical line in
the file is given too (a quoted field may span lines).
"""

from __future__ import annotations

import csv
import io
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pyarrow_lib
import pyarrow.parquet as pq

from pipeline_core.errors import ConfigurationError, DataValidationError
from pipeline_core.observability import logger
from pipeline_core.settings import optional_env
from pipeline_core.stages.column_roles import STRICT_MISSING

MIB = 1024 * 1024
DEFAULT_MAX_DATASET_BYTES = 512 * MIB
DEFAULT_MAX_LINE_BYTES = 1 * MIB
# 1 MiB of CSV is ~6k rows of a 20-column numeric file: a Preprocess chunk then costs ~50 MB (4 MiB: ~200 MB).
DEFAULT_CHUNK_BYTES = 1 * MIB
MAX_EXAMPLES = 5
_SCAN_CHUNK = 64 * MIB
_MAGIC = {
    b"PAR1": "a Parquet file",
    b"\x1f\x8b": "gzip-compressed",
    b"PK\x03\x04": "a zip archive (or an .xlsx workbook)",
    b"\xd0\xcf\x11\xe0": "an old Excel/OLE file",
    b"BZh": "bzip2-compressed",
    b"\xfd7zXZ\x00": "xz-compressed",
}


@dataclass(frozen=True)
class Limits:
    """Tuning knobs: the largest dataset, the longest CSV line accepted, and how much CSV a streaming
    stage reads at a time (its memory is a few times this, whatever the file's size)."""

    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    chunk_bytes: int = DEFAULT_CHUNK_BYTES

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        """Limits from MAX_DATASET_BYTES, MAX_LINE_BYTES and CHUNK_BYTES (defaults 512 MiB, 1 MiB, 1 MiB)."""
        values = {}
        for name, default in (
            ("MAX_DATASET_BYTES", DEFAULT_MAX_DATASET_BYTES),
            ("MAX_LINE_BYTES", DEFAULT_MAX_LINE_BYTES),
            ("CHUNK_BYTES", DEFAULT_CHUNK_BYTES),
        ):
            text = optional_env(name, str(default), environ)
            try:
                values[name] = int(text)
            except ValueError:
                raise ConfigurationError(
                    f"environment variable {name} must be a number of bytes, got {text!r}"
                ) from None
            if values[name] <= 0:
                raise ConfigurationError(f"environment variable {name} must be positive, got {text!r}")
        return cls(values["MAX_DATASET_BYTES"], values["MAX_LINE_BYTES"], values["CHUNK_BYTES"])


@dataclass(frozen=True)
class Table:
    """A dataset as one DataFrame (strings stripped, missing values as NA) and where each row came from."""

    frame: pd.DataFrame
    # For CSV: the 1-based file line on which each data row starts; None for Parquet.
    lines: Sequence[int] | None = None

    def where(self, position: int) -> str:
        """'row N (line L)' for the row at 0-based ``position``."""
        if self.lines is not None and position < len(self.lines):
            return f"row {position + 1} (line {self.lines[position]})"
        return f"row {position + 1}"


def size_text(n: int) -> str:
    """A byte count for messages: bytes under 1 MiB, else MiB with the exact bytes."""
    return f"{n} bytes" if n < MIB else f"{n / MIB:.1f} MiB ({n} bytes)"


def quote_list(names: Sequence[object], limit: int = 30) -> str:
    shown = ", ".join(repr(str(n)) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def snippet(value: object, limit: int = 40) -> str:
    text = repr(value) if isinstance(value, str) else repr(str(value))
    return text if len(text) <= limit else text[: limit - 4] + "...'"


# --------------------------------------------------------------------------- bytes


def check_size(size: int, limits: Limits) -> None:
    """Reject a dataset larger than the configured limit before reading it."""
    if size > limits.max_dataset_bytes:
        raise DataValidationError(
            f"the dataset is {size_text(size)}; the limit is {size_text(limits.max_dataset_bytes)} "
            "(MAX_DATASET_BYTES): use a sample, or raise the limit and the function's memory"
        )


def _line_of(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line number and 1-based byte column of ``offset``."""
    line = data.count(b"\n", 0, offset) + 1
    start = data.rfind(b"\n", 0, offset) + 1
    return line, offset - start + 1


def _first_long_line(data: bytes, max_line_bytes: int) -> tuple[int, int] | None:
    """(line number, length) of the first line longer than the limit, scanning in bounded chunks."""
    view = np.frombuffer(data, dtype=np.uint8)
    previous_newline = -1
    lines_before = 0
    for start in range(0, len(view), _SCAN_CHUNK):
        newlines = np.flatnonzero(view[start : start + _SCAN_CHUNK] == 10) + start
        if newlines.size:
            lengths = np.diff(np.concatenate(([previous_newline], newlines))) - 1
            over = np.flatnonzero(lengths > max_line_bytes)
            if over.size:
                return lines_before + int(over[0]) + 1, int(lengths[over[0]])
            lines_before += int(newlines.size)
            previous_newline = int(newlines[-1])
    last = len(view) - previous_newline - 1
    return (lines_before + 1, last) if last > max_line_bytes else None


def decode_csv_bytes(data: bytes, limits: Limits) -> str:
    """The CSV's text, after checking it is not empty, binary, compressed, non-UTF-8 or one endless line."""
    if not data:
        raise DataValidationError("the file is empty (0 bytes)")
    if not data.strip():
        raise DataValidationError(f"the file contains only whitespace ({len(data)} bytes) and no header or data")
    for magic, what in _MAGIC.items():
        if data.startswith(magic):
            raise DataValidationError(
                f"the file is named .csv but its first bytes say it is {what}; upload a plain-text "
                "UTF-8 CSV (or give a Parquet file the .parquet extension)"
            )
    nul = data.find(b"\x00")
    if nul >= 0:
        line, column = _line_of(data, nul)
        raise DataValidationError(
            f"the file contains a NUL byte at byte offset {nul} (line {line}, byte {column} of that line): "
            "it looks like binary data or UTF-16 text, not a UTF-8 CSV"
        )
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = error.start + bom
        line, column = _line_of(data, offset)
        line_start = offset - column + 1
        context = data[line_start : line_start + 60].split(b"\n")[0].decode("utf-8", errors="replace")
        raise DataValidationError(
            f"the file is not valid UTF-8: byte 0x{data[offset]:02x} at byte offset {offset} "
            f"(line {line}, byte {column} of that line) cannot be decoded; the line starts {context!r}. "
            "Save the file as UTF-8 (e.g. it may be Latin-1/Windows-1252)"
        ) from None
    long_line = _first_long_line(data, limits.max_line_bytes)
    if long_line:
        line, length = long_line
        raise DataValidationError(
            f"line {line} is {length} bytes long; the limit is {limits.max_line_bytes} bytes per line "
            "(MAX_LINE_BYTES). A file without '\\n' line breaks (old Mac "
            "'\\r' endings?) or a runaway field would cause this"
        )
    return text


# --------------------------------------------------------------------------- CSV structure


def _check_column_names(names: list[str], where: str) -> None:
    empty = [i + 1 for i, name in enumerate(names) if not name]
    if empty:
        hint = " (a trailing comma at the end of the header?)" if empty == [len(names)] else ""
        raise DataValidationError(
            f"{where}: column{'s' if len(empty) > 1 else ''} {', '.join(map(str, empty))} of {len(names)} "
            f"{'have' if len(empty) > 1 else 'has'} an empty name{hint}; every column needs a name"
        )
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        positions.setdefault(name, []).append(i + 1)
    duplicates = {name: at for name, at in positions.items() if len(at) > 1}
    if duplicates:
        listed = "; ".join(f"{name!r} at columns {', '.join(map(str, at))}" for name, at in duplicates.items())
        raise DataValidationError(f"{where}: duplicate column names: {listed}; column names must be unique")


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_header(header: list[str], header_line: int) -> None:
    """A CSV header (names stripped) has at least two columns, with unique non-empty names, not numbers."""
    where = f"header (line {header_line})"
    if len(header) < 2:
        other = next((sep for sep in (";", "\t", "|") if sep in header[0]), None)
        hint = f"; it seems to use {other!r} as separator, but only comma-separated files are accepted" if other else ""
        raise DataValidationError(
            f"{where} has a single column {header[0]!r}: a dataset needs at least one feature and a target{hint}"
        )
    _check_column_names(header, where)
    numeric_names = [name for name in header if _looks_numeric(name)]
    if len(numeric_names) > len(header) / 2:
        raise DataValidationError(
            f"the first line does not look like a header: {len(numeric_names)} of its {len(header)} values are "
            f"numbers ({quote_list(numeric_names, 5)}); add a header line with the column names"
        )


def scan_csv(text: str) -> tuple[list[str], array[int]]:
    """The header's column names and the start line of every data row, after structural checks."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))  # lines are already length-checked
    header: list[str] | None = None
    lines: array[int] = array("q")
    ragged: list[str] = []
    n_ragged = 0
    last_line = 0
    try:
        for row in reader:
            start_line, last_line = last_line + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line: skipped (pandas does the same)
            if header is None:
                header = [name.strip() for name in row]
                header_line = start_line
                continue
            lines.append(start_line)
            if len(row) != len(header):
                n_ragged += 1
                if len(ragged) < MAX_EXAMPLES:
                    fields = f"{len(row)} field{'s' if len(row) != 1 else ''}"
                    ragged.append(f"row {len(lines)} (line {start_line}) has {fields}")
    except csv.Error as error:
        if "unexpected end of data" in str(error):
            raise DataValidationError(
                f"a quoted field starting on line {last_line + 1} is never closed: the file ends inside "
                "quotes (an unbalanced '\"')"
            ) from None
        raise DataValidationError(
            f"line {reader.line_num} is not valid CSV: {error} (check the quotes on that line)"
        ) from None
    if header is None:
        raise DataValidationError("the file has no header line: it contains only blank lines")
    check_header(header, header_line)
    if n_ragged:
        raise DataValidationError(
            f"{n_ragged} row{'s have' if n_ragged > 1 else ' has'} a different number of fields than the "
            f"header's {len(header)} ({quote_list(header, 10)}): {'; '.join(ragged)}"
            + ("; ..." if n_ragged > len(ragged) else "")
        )
    if not lines:
        raise DataValidationError(
            f"the file has a header line ({len(header)} columns: {quote_list(header, 10)}) but no data rows"
        )
    return header, lines


def normalize(frame: pd.DataFrame) -> pd.DataFrame:
    """Strip text values and turn the missing-value tokens that are never a value (``STRICT_MISSING``) into
    NA; "None" and "NA" stay until a column's role says whether they are missing (:func:`read_values`)."""
    result = {}
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype) or pd.api.types.is_datetime64_any_dtype(column):
            column = column.astype("str").where(column.notna())
        if pd.api.types.is_string_dtype(column) or column.dtype == object:
            text = column.astype("str").str.strip().where(column.notna())
            column = text.mask(text.str.lower().isin(STRICT_MISSING))
        result[name] = column
    return pd.DataFrame(result, index=frame.index)


def read_csv_table(data: bytes, limits: Limits) -> Table:
    """A CSV dataset as a :class:`Table` (all values as stripped strings), after every structural check."""
    text = decode_csv_bytes(data, limits)
    header, lines = scan_csv(text)
    frame = pd.read_csv(
        io.StringIO(text),
        dtype=str,
        keep_default_na=False,
        na_filter=False,  # missing values are decided by normalize(), the same for CSV and Parquet
        skip_blank_lines=True,
        index_col=False,
    )
    frame.columns = header
    if len(frame) != len(lines):
        # The csv module and pandas disagree on an edge case (e.g. odd quoting): keep row numbers only.
        logger.warning("row count differs between csv scan and pandas", extra={"csv": len(lines), "pandas": len(frame)})
        return Table(normalize(frame), None)
    return Table(normalize(frame), lines)


def read_parquet_table(data: bytes) -> Table:
    """A Parquet dataset as a :class:`Table` (column types as stored)."""
    if not data:
        raise DataValidationError("the file is empty (0 bytes)")
    try:
        arrow_table = pq.read_table(io.BytesIO(data))
    except (pyarrow_lib.ArrowException, OSError, ValueError) as error:
        raise DataValidationError(
            f"the file is named .parquet but cannot be read as Parquet ({len(data)} bytes, starts with "
            f"{data[:8]!r}): {error}"
        ) from None
    # A struct, list or map cell would reach training as its text ("{'a': 1}"), a meaningless category.
    nested = [f"{f.name!r} ({f.type})" for f in arrow_table.schema if pyarrow_lib.types.is_nested(f.type)]
    if nested:
        raise DataValidationError(
            f"the Parquet file has nested column{'s' if len(nested) > 1 else ''} {', '.join(nested[:MAX_EXAMPLES])}"
            ": only flat columns (numbers, text, booleans) can be used; flatten them into separate columns"
        )
    try:
        frame = arrow_table.to_pandas()
    except (pyarrow_lib.ArrowException, ValueError) as error:
        raise DataValidationError(f"the Parquet file's columns cannot be read as a table: {error}") from None
    if isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index(drop=True)
    else:  # a named index stored by pandas is a real column for the user; an unnamed one is not
        frame = frame.reset_index(drop=frame.index.nlevels == 1 and frame.index.name is None)
    names = [str(name).strip() for name in frame.columns]
    if len(names) < 2:
        raise DataValidationError(
            f"the Parquet file has {len(names)} column(s) ({quote_list(names)}): a dataset needs at least "
            "one feature and a target"
        )
    _check_column_names(names, "the Parquet schema")
    frame.columns = names
    if frame.empty:
        raise DataValidationError(
            f"the Parquet file has {len(names)} columns ({quote_list(names, 10)}) but no data rows"
        )
    return Table(normalize(frame))


def load_table(data: bytes, file_format: Literal["csv", "parquet"], limits: Limits) -> Table:
    """The dataset in ``data`` as a :class:`Table`; DataValidationError names what is wrong with it."""
    check_size(len(data), limits)
    return read_csv_table(data, limits) if file_format == "csv" else read_parquet_table(data)
