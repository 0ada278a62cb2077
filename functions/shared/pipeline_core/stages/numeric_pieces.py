"""A shortcut for the pieces of a column that is plain numbers so far (most of a numeric dataset's columns).

:meth:`~pipeline_core.stages.profile_accumulator.ColumnState.feed_codes` asks of every distinct value whether
it is missing, "None"/"NA", a number, a boolean token, written with thousands separators; for a column whose
earlier pieces were all plain decimal numbers those answers are already known for a piece that casts to
finite float64 in one pyarrow ``cast`` (empty cells aside): only the counts, the number summary, the hashes
and the bottom-k sample change. :func:`feed_plain_numbers` makes exactly the state changes ``feed_codes``
would make for such a piece, and declines (False, the state untouched) any other piece, which then takes
the general path.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline_core.stages.mergeable import text_hashes
from pipeline_core.stages.profile_accumulator import ColumnState, first_rows_of, merge_first


def settled_numeric(state: ColumnState) -> bool:
    """Whether the column's earlier pieces settled everything but the counts: every present value a number,
    the boolean questions answered (a number is not a true/false word; the first non-boolean value found)."""
    return (
        state.numbers > 0
        and state.numbers == state.present
        and state.first_non_number is None
        and not state.soft
        and not state.all_boolean_tokens
        and state.first_not_boolean is not None
        and state.grouped == 0
    )


def feed_plain_numbers(state: ColumnState, column: pa.Array, row0: int) -> bool:
    """Add a piece of a :func:`settled_numeric` column (raw text, nothing to strip; its first row ``row0``)
    if every non-empty value casts to a finite number, as ``feed_codes`` would; False (nothing changed) if not.

    pyarrow's cast reads exactly the plain decimal texts and the "inf"/"nan" spellings (see
    ``profile_accumulator._plain_numbers``): a finite result means every text is a plain number, so none is
    a missing-value token, "None"/"NA", a boolean word or written with separators."""
    if not settled_numeric(state) or column.null_count:
        return False
    encoded = pc.dictionary_encode(column)
    texts = encoded.dictionary
    lengths = np.asarray(pc.utf8_length(texts))
    empty = np.flatnonzero(lengths == 0)  # "" is the only missing text a plain-number column has
    present_texts = texts
    if len(empty):
        keep = lengths > 0
        present_texts = texts.filter(pa.array(keep))
    try:
        numbers = np.asarray(pc.cast(present_texts, pa.float64()), dtype=float)
    except pa.ArrowInvalid:
        return False
    if not np.isfinite(numbers).all():
        return False
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    if len(empty):
        remap = np.where(lengths > 0, np.cumsum(lengths > 0) - 1, -1)
        codes = remap[codes]
    state.rows += len(codes)
    positions = np.flatnonzero(codes >= 0)
    state.missing += len(codes) - len(positions)
    if not len(present_texts):
        return True
    present_codes = codes[positions]
    counts = np.bincount(present_codes, minlength=len(present_texts)).astype(np.int64)
    rows = first_rows_of(present_codes, positions, len(present_texts)) + row0
    first = int(np.argmin(rows))
    example = (int(rows[first]), present_texts[first].as_py())
    state.first_any = merge_first(state.first_any, example)
    state.first_value = merge_first(state.first_value, example)
    state.present += len(positions)
    state.numbers += len(positions)
    state.words += len(positions)  # a number is one word
    state.number_summary.add(numbers[present_codes])
    hashes = text_hashes(present_texts)
    state.distinct.add(hashes)
    state.values.add(hashes, present_texts, counts, rows)
    return True
