"""A frame's rows as CSV lines, the bytes ``DataFrame.to_csv`` writes, formatted in pyarrow kernels.

``to_csv`` (no index, no header, ``\\n`` line ends) writes a float64 value as numpy's ``astype(str)`` (the
shortest text that reads back to the same float: ``3.0``, ``0.25``, ``1e-05``), a missing value as nothing,
and a text as itself, quoted only when it holds a ``,``, a ``"`` or a line break. Formatting the floats is
most of Preprocess's time in pandas; pyarrow's cast to string writes the same shortest digits about ten
times faster, in positional notation for ``1e-4 <= |x| < 1e15`` (where numpy's is positional too) except that
a whole number has no ``.0`` (added here) and a value of many digits may come out in scientific notation
(those few, and every value outside that range, are formatted by numpy). Checked against ``to_csv`` on
millions of floats (``tests/unit/test_csv_lines.py``).

A frame with any other column type (booleans, dates, integers) or a text that would be quoted is written by
``to_csv`` itself: the fast path covers what it is sure of and nothing else.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# numpy writes |x| in [1e-4, 1e16) positionally; pyarrow in a narrower band (and not always): within this one
# its positional text is numpy's but for the ".0" of whole numbers
_POSITIONAL_LOW, _POSITIONAL_HIGH = 1e-4, 1e15
_QUOTED = '[,"\r\n]'  # a text with one of these is quoted by the csv module (QUOTE_MINIMAL)
_EMPTY = pa.scalar("", type=pa.string())


def float_texts(values: np.ndarray) -> pa.Array:
    """float64 ``values`` as ``to_csv`` writes each (numpy's ``astype(str)``); missing (NaN) as null."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    text = pc.cast(pa.array(values, from_pandas=True), pa.string())
    magnitude = np.abs(values)
    with np.errstate(invalid="ignore"):
        whole = np.floor(values) == values  # False for NaN and inf
        numpy_formats = ~(((magnitude >= _POSITIONAL_LOW) & (magnitude < _POSITIONAL_HIGH)) | (values == 0))
    numpy_formats &= ~np.isnan(values)
    numpy_formats |= np.asarray(pc.fill_null(pc.match_substring(text, "e"), False), dtype=bool)
    text = pc.if_else(pa.array(whole), pc.binary_join_element_wise(text, ".0", ""), text)
    if numpy_formats.any():  # rare: scientific notation or many digits, numpy's own text for those
        texts = np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)
        texts[numpy_formats] = values[numpy_formats].astype(str).astype(object)
        text = pa.array(texts, type=pa.string())
    return text


def _column_texts(values: pd.Series) -> pa.Array | None:
    """One column's values as ``to_csv`` writes them (null: written as nothing), or None when this module
    does not format that column the way ``to_csv`` does."""
    if values.dtype == np.float64:
        return float_texts(values.to_numpy())
    if not (values.dtype == object or isinstance(values.dtype, pd.StringDtype)):
        return None
    try:
        text = pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None  # an object column holding something else than text
    if pc.any(pc.match_substring_regex(text, _QUOTED)).as_py():
        return None
    return text


def _lines_of_frame(rows: pd.DataFrame) -> bytes:
    return rows.to_csv(index=False, header=False, lineterminator="\n").encode("utf-8")


def csv_lines(rows: pd.DataFrame) -> tuple[bytes, np.ndarray]:
    """The rows as CSV lines (no header) as ``to_csv`` writes them, and the byte offset where each starts."""
    filled: list[pa.Array] = []
    for i in range(rows.shape[1] if len(rows) and rows.shape[1] > 1 else 0):
        column = _column_texts(rows.iloc[:, i])
        if column is None:  # to_csv writes the piece: the other columns need not be formatted
            filled = []
            break
        filled.append(pc.fill_null(column, _EMPTY))
    if filled:
        joined = pc.binary_join_element_wise(pc.binary_join_element_wise(*filled, ","), _EMPTY, "\n")
        joined = joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined
        offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)[joined.offset : joined.offset + len(joined) + 1]
        body = joined.buffers()[2][int(offsets[0]) : int(offsets[-1])].to_pybytes()
        return body, (offsets[:-1] - offsets[0]).astype(np.int64)
    body = _lines_of_frame(rows)
    return body, _line_starts(rows, body)


def _line_starts(rows: pd.DataFrame, body: bytes) -> np.ndarray:
    """The byte offset in ``body`` where each row's line starts (a quoted value may hold a line break)."""
    ends = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == 10)
    if len(ends) == len(rows):
        return np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    lengths = [len(_lines_of_frame(rows.iloc[i : i + 1])) for i in range(len(rows))]
    return np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
