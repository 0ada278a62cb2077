"""Reading a CSV file in bounded chunks: row-aligned pieces parsed by pyarrow, every value as text.

Each chunk is a :class:`~pipeline_core.stages.dataset_file.Table`-like frame normalized exactly as
:func:`~pipeline_core.stages.dataset_file.read_csv_table` normalizes the whole file (strings stripped,
``STRICT_MISSING`` tokens as NA), so a stage that runs the same per-row logic on every chunk gets the values
it would get from the whole table, while holding one chunk at a time (about ``block_bytes`` of CSV, a few
times that as pandas strings).

pyarrow is stricter than the ``csv`` module in one corner: a whitespace-only line in a file of several
columns is a one-field row to pyarrow (an error) and a blank line to ``csv`` (skipped). :class:`ChunkError`
says so, and the caller falls back to the whole-file path, which reports or skips it as before. The same
happens for any file pyarrow cannot parse. Pieces are cut where a CSV reader sees a row end
(:func:`row_end`), so a quoted line break and a literal ``"`` inside an unquoted field stay in their row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from pipeline_core.stages.column_roles import SOFT_MISSING, STRICT_MISSING
from pipeline_core.stages.dataset_file import DEFAULT_CHUNK_BYTES, normalize


class ChunkError(Exception):
    """The streaming reader cannot read the file the way the whole-file reader does."""


def read_options(
    names: Sequence[str], include: Sequence[str] | None, skip_header: bool
) -> tuple[pa_csv.ReadOptions, pa_csv.ParseOptions, pa_csv.ConvertOptions]:
    convert = pa_csv.ConvertOptions(
        column_types=dict.fromkeys(names, pa.string()),
        strings_can_be_null=False,  # missing values are decided by normalize(), as for the whole file
        quoted_strings_can_be_null=False,
        null_values=[],
        include_columns=list(include) if include else None,
    )
    read = pa_csv.ReadOptions(column_names=list(names), skip_rows=1 if skip_header else 0, use_threads=False)
    return read, pa_csv.ParseOptions(newlines_in_values=True), convert


# The missing-value tokens as pyarrow arrays, for ``pc.is_in`` over lower-cased text in the streamed readers
STRICT_MISSING_TEXTS = pa.array(sorted(STRICT_MISSING), type=pa.string())
SOFT_MISSING_TEXTS = pa.array(sorted(SOFT_MISSING), type=pa.string())

# ASCII whitespace str.strip removes (not the line breaks between rows), and quotes (a quoted value may hold a
# line break): an all-ASCII piece without these has nothing to strip
_SPACES = b'\t\x0b\x0c\r\x1c\x1d\x1e\x1f "'


def needs_strip(piece: bytes) -> bool:
    """Whether a value of the CSV ``piece`` may have whitespace around it to strip (normalize strips every
    value: a piece that has none skips that pass)."""
    return not piece.isascii() or len(piece.translate(None, _SPACES)) != len(piece)


def row_end(piece: bytes) -> int:
    """The end of the last complete row in ``piece`` (just after a line break outside quotes), or -1.

    ``piece`` starts at a row boundary. Without a ``"`` every line break ends a row. With quotes, the
    separators, line breaks and quotes are walked in order as a CSV reader does: a ``"`` opens a quoted
    field only at the start of a field (elsewhere it is a literal character, as for pyarrow and the ``csv``
    module), ``""`` inside quotes is an escaped quote."""
    view = np.frombuffer(piece, dtype=np.uint8)
    if not (view == 34).any():
        breaks = np.flatnonzero(view == 10)
        return int(breaks[-1]) + 1 if breaks.size else -1
    special = np.flatnonzero((view == 34) | (view == 44) | (view == 10)).tolist()
    last_separator, in_quotes, end, i = -1, False, -1, 0
    while i < len(special):
        at = special[i]
        byte = piece[at]
        if in_quotes:
            if byte == 34:
                if at + 1 < len(piece) and piece[at + 1] == 34:
                    i += 1  # an escaped quote: skip its second half
                else:
                    in_quotes = False
        elif byte == 34:
            in_quotes = at == last_separator + 1  # a quote opens a field only at its start
        else:
            last_separator = at
            if byte == 10:
                end = at + 1
        i += 1
    return end


def row_pieces(handle: BinaryIO, block_bytes: int, longest: int | None = None) -> Iterator[bytes]:
    """The file in pieces of about ``block_bytes`` that each end at a row boundary (pyarrow's own
    streaming reader reads and parses ~16 blocks ahead: memory would follow that, not one block). A row
    still open after ``longest`` bytes is a :class:`ChunkError` (by default a row may be any length)."""
    pending = b""
    while True:
        block = handle.read(block_bytes)
        if not block:
            if pending:
                yield pending
            return
        piece = pending + block
        end = row_end(piece)
        if end < 0:  # a row longer than a block: read on
            if longest is not None and len(piece) > longest:
                raise ChunkError(f"no row ends within {len(piece)} bytes")
            pending = piece
            continue
        yield piece[:end]
        pending = piece[end:]


def iter_tables(
    path: Path, columns: Sequence[str] | None = None, block_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[tuple[pa.Table, bytes]]:
    """pyarrow tables of consecutive rows, every value as written (text, not normalized; column names as in
    the header), only ``columns`` (stripped names) if given; each with the piece of CSV it was parsed from."""
    try:
        with path.open("rb") as first:
            names = list(pa_csv.open_csv(first, read_options=pa_csv.ReadOptions(block_size=1 << 20)).schema.names)
        stripped = {name.strip(): name for name in names}
        include = [stripped[name] for name in columns] if columns is not None else None
        with path.open("rb") as handle:
            for number, piece in enumerate(row_pieces(handle, block_bytes)):
                read, parse, convert = read_options(names, include, skip_header=number == 0)
                table = pa_csv.read_csv(pa.py_buffer(piece), read, parse, convert)
                if table.num_rows:
                    yield table, piece
    except (pa.ArrowException, OSError, KeyError) as error:
        raise ChunkError(str(error)) from None


def frame_of(table: pa.Table) -> pd.DataFrame:
    """A table of :func:`iter_tables` as a normalized frame (index from 0), as the whole-file reader reads it."""
    frame = pd.DataFrame(
        {name.strip(): table.column(i).to_numpy(zero_copy_only=False) for i, name in enumerate(table.column_names)}
    )
    return normalize(frame)


def iter_chunks(
    path: Path, columns: Sequence[str] | None = None, block_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[pd.DataFrame]:
    """Normalized frames of consecutive rows (index from 0 in each chunk), only ``columns`` if given."""
    for table, _ in iter_tables(path, columns, block_bytes):
        yield frame_of(table)
