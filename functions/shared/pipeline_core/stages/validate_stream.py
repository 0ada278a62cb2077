"""ValidateData in bounded memory: a local CSV read in row-aligned pieces into a
:class:`~pipeline_core.stages.profile_accumulator.ProfileState`, never the table.

Each piece (``PIECE_CHUNKS`` x ``CHUNK_BYTES`` of CSV, cut where a CSV reader sees a row end:
:func:`~pipeline_core.stages.csv_chunks.row_end`) is checked as the whole-file reader checks the bytes
(no NUL byte, UTF-8, no line over ``MAX_LINE_BYTES``; a piece with a ``"`` is also read by the ``csv`` module
with strict quoting), parsed by ``pyarrow.csv`` with every value as text, normalized as the whole table is
(:func:`~pipeline_core.stages.dataset_file.normalize`) and fed to the state.

Anything unusual about the file's structure (empty or binary file, a bad byte, a header the checks reject,
a ragged row, bad quoting, a line over the limit, no data rows) raises
:class:`~pipeline_core.stages.csv_chunks.ChunkError`: the caller then reads the file whole, whose checks give
the precise message (those files fail, or are small). Rows are named ``row N (line L)``; the lines are found
only when a message names a row (:class:`LineFinder`, one ``csv`` scan of the file).
"""

from __future__ import annotations

import csv
import io
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pyarrow_lib
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from pipeline_core.errors import DataValidationError
from pipeline_core.models import DataProfile, RunConfig
from pipeline_core.stages.csv_chunks import STRICT_MISSING_TEXTS, ChunkError, needs_strip, read_options, row_pieces
from pipeline_core.stages.dataset_file import _MAGIC, Limits, check_header
from pipeline_core.stages.numeric_pieces import feed_plain_numbers
from pipeline_core.stages.profile_accumulator import ProfileState
from pipeline_core.stages.profile_checks import choose_target
from pipeline_core.stages.profile_from_state import profile_state

_BOM = b"\xef\xbb\xbf"
# ValidateData reads this many CHUNK_BYTES at a time: it holds a piece as pyarrow text and small per-column
# arrays (no pandas frame, unlike Preprocess), and each piece has fixed costs per column (some 25 kernel
# calls): 4 MiB pieces take ~25 % less CPU than 1 MiB ones on the scale data (docs/data-scale.md)
PIECE_CHUNKS = 4


def _pieces(handle: BinaryIO, block_bytes: int, limits: Limits) -> Iterator[bytes]:
    """The file in pieces of about ``block_bytes`` ending at a row boundary; a row that does not end within
    a few blocks (or the line limit) is left to the whole-file reader."""
    return row_pieces(handle, block_bytes, longest=max(limits.max_line_bytes, 8 * block_bytes))


def _check_bytes(piece: bytes, first: bool, limits: Limits) -> None:
    """The whole-file reader's byte checks on one piece (ChunkError: let it give the message)."""
    if first and (not piece.strip() or any(piece.startswith(magic) for magic in _MAGIC)):
        raise ChunkError("an empty, blank or binary file")
    if b"\x00" in piece:
        raise ChunkError("a NUL byte")
    try:
        text = piece[len(_BOM) if first and piece.startswith(_BOM) else 0 :].decode("utf-8")
    except UnicodeDecodeError as error:
        raise ChunkError(f"not UTF-8: {error}") from None
    view = np.frombuffer(piece, dtype=np.uint8)
    breaks = np.flatnonzero(view == 10)
    lengths = np.diff(np.concatenate(([-1], breaks, [len(view)]))) - 1
    if lengths.size and int(lengths.max()) > limits.max_line_bytes:
        raise ChunkError("a line over the limit")
    if '"' in text:  # strict quoting, as the whole-file scan reads it
        try:
            for _ in csv.reader(io.StringIO(text, newline=""), strict=True):
                pass
        except csv.Error as error:
            raise ChunkError(f"quoting: {error}") from None


def _normalized_codes(
    column: pyarrow_lib.Array, strip: bool = True
) -> tuple[np.ndarray, pyarrow_lib.Array, pyarrow_lib.Array]:
    """The column as :func:`~pipeline_core.stages.dataset_file.normalize` reads it (pandas' string methods
    are these pyarrow kernels: stripped, the missing-value tokens missing), given as each row's index into
    its distinct values (-1: missing), those values in order of first occurrence, and the same lower-cased
    (kept as pyarrow arrays: no Python string per value). ``strip``: False when no value has whitespace."""
    encoded = pc.dictionary_encode(pc.utf8_trim_whitespace(column) if strip else column)
    dictionary = encoded.dictionary
    lowered = pc.utf8_lower(dictionary)
    missing = np.asarray(pc.is_in(lowered, value_set=STRICT_MISSING_TEXTS), dtype=bool)
    indices = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    if not missing.any():
        return indices, dictionary, lowered
    remap = np.where(missing, -1, np.cumsum(~missing) - 1)
    present = pyarrow_lib.array(~missing)
    return remap[indices], dictionary.filter(present), lowered.filter(present)


def read_header(path: Path, limits: Limits) -> list[str]:
    """The header's column names (stripped), checked as the whole-file reader checks them."""
    with path.open("rb") as handle:
        first = handle.read(min(limits.max_line_bytes + 1, 1 << 20))
    if first.startswith(_BOM):
        first = first[len(_BOM) :]
    line, newline, _ = first.partition(b"\n")
    if not newline or not line.strip() or b'"' in line or b"\x00" in line:
        raise ChunkError("the first line is blank, quoted or longer than a block")
    try:
        header = [name.strip() for name in next(csv.reader([line.decode("utf-8")]))]
        check_header(header, 1)
    except (UnicodeDecodeError, StopIteration, DataValidationError) as error:
        raise ChunkError(f"header: {error}") from None
    return header


def accumulate(path: Path, names: list[str], target: str, limits: Limits) -> ProfileState:
    """The state of the whole file at ``path`` (its header ``names``), read a piece at a time."""
    state = ProfileState(names=names, target=target)
    raw_names = None
    with path.open("rb") as handle:
        for number, piece in enumerate(_pieces(handle, PIECE_CHUNKS * limits.chunk_bytes, limits)):
            _check_bytes(piece, number == 0, limits)
            if raw_names is None:
                raw_names = next(csv.reader([piece.split(b"\n", 1)[0].decode("utf-8-sig")]))
            read, parse, convert = read_options(raw_names, None, skip_header=number == 0)
            try:
                table = pa_csv.read_csv(pyarrow_lib.py_buffer(piece), read, parse, convert)
            except pyarrow_lib.ArrowException as error:
                raise ChunkError(str(error)) from None
            if table.num_rows == 0:
                continue
            strip = needs_strip(piece)
            for i, name in enumerate(names):
                column = table.column(i).combine_chunks()
                if not strip and name != target and feed_plain_numbers(state.columns[name], column, state.rows):
                    continue  # a numeric column's piece of plain numbers: only its counts change
                codes, texts, lowered = _normalized_codes(column, strip)
                state.feed_codes(name, codes, texts, lowered)
            state.advance(table.num_rows)
    if state.rows == 0:
        raise ChunkError("no data rows")
    return state


class LineFinder:
    """``row N (line L)`` for a data row, the line found by one ``csv`` scan of the file at the first use
    (as the whole-file reader numbers them: the line on which the row starts, blank lines skipped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: array[int] | None = None

    def _scan(self) -> array[int]:
        lines: array[int] = array("q")
        with self.path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, strict=True)
            header_seen, last_line = False, 0
            for row in reader:
                start_line, last_line = last_line + 1, reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if not header_seen:
                    header_seen = True
                    continue
                lines.append(start_line)
        return lines

    def __call__(self, position: int) -> str:
        if self.lines is None:
            self.lines = self._scan()
        if position < len(self.lines):
            return f"row {position + 1} (line {self.lines[position]})"
        return f"row {position + 1}"


def stream_profile(path: Path, config: RunConfig, limits: Limits) -> DataProfile:
    """The profile of the CSV at ``path``, read in pieces; ChunkError or
    :class:`~pipeline_core.stages.profile_from_state.NeedsWholeTable` when the whole-file reader must answer."""
    names = read_header(path, limits)
    try:
        target, chosen_by = choose_target(config, names)
    except DataValidationError:  # the file's own problems come first, as in the whole-file reader
        accumulate(path, names, names[-1], limits)
        raise
    state = accumulate(path, names, target, limits)
    return profile_state(state, config, chosen_by, LineFinder(path))
