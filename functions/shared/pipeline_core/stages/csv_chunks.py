"""Reading a CSV file in bounded chunks: pyarrow's streaming reader, every value as text.

Each chunk is a :class:`~pipeline_core.stages.dataset_file.Table`-like frame normalized exactly as
:func:`~pipeline_core.stages.dataset_file.read_csv_table` normalizes the whole file (strings stripped,
``STRICT_MISSING`` tokens as NA), so a stage that runs the same per-row logic on every chunk gets the values
it would get from the whole table, while holding one chunk at a time (about ``block_bytes`` of CSV, a few
times that as pandas strings).

pyarrow is stricter than the ``csv`` module in one corner: a whitespace-only line in a file of several
columns is a one-field row to pyarrow (an error) and a blank line to ``csv`` (skipped). :class:`ChunkError`
says so, and the caller falls back to the whole-file path, which reports or skips it as before.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow as pyarrow_lib
import pyarrow.csv as pa_csv

from pipeline_core.stages.dataset_file import DEFAULT_CHUNK_BYTES, normalize


class ChunkError(Exception):
    """The streaming reader cannot read the file the way the whole-file reader does."""


def _reader(
    source: BinaryIO, block_bytes: int, names: Sequence[str] | None, include: Sequence[str] | None
) -> pa_csv.CSVStreamingReader:
    # A Python file object, not a path: given a path, pyarrow reads ahead ~16 blocks (and parses them),
    # which made the memory grow with the file up to 16x CHUNK_BYTES; from a file object it reads as asked.
    convert = pa_csv.ConvertOptions(
        column_types=dict.fromkeys(names, pyarrow_lib.string()) if names else None,
        strings_can_be_null=False,  # missing values are decided by normalize(), as for the whole file
        quoted_strings_can_be_null=False,
        null_values=[],
        include_columns=list(include) if include else None,
    )
    return pa_csv.open_csv(
        source,
        read_options=pa_csv.ReadOptions(block_size=block_bytes, use_threads=False),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=convert,
    )


def iter_chunks(
    path: Path, columns: Sequence[str] | None = None, block_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[pd.DataFrame]:
    """Normalized frames of consecutive rows (index from 0 in each chunk), only ``columns`` if given."""
    try:
        with path.open("rb") as first:
            raw_names = list(_reader(first, block_bytes, None, None).schema.names)
        stripped = {name.strip(): name for name in raw_names}
        include = [stripped[name] for name in columns] if columns is not None else None
        with path.open("rb") as handle:
            yield from _frames(_reader(handle, block_bytes, raw_names, include))
    except (pyarrow_lib.ArrowException, OSError, KeyError) as error:
        raise ChunkError(str(error)) from None


def _frames(reader: pa_csv.CSVStreamingReader) -> Iterator[pd.DataFrame]:
    for batch in reader:
        if batch.num_rows == 0:
            continue
        names = [name.strip() for name in batch.schema.names]
        frame = pd.DataFrame({name: batch.column(i).to_numpy(zero_copy_only=False) for i, name in enumerate(names)})
        yield normalize(frame)
