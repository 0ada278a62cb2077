"""The split files from the spool of every kept row's CSV line: in bounded windows, not one read a row.

A split's order is a random permutation, so consecutive lines of a split file are far apart in the spool:
reading them one ``pread`` a row cost a system call and a few Python objects per row (~5 us). Instead, two
sequential passes of numpy gathers, each holding one window of bytes (:data:`WINDOW_BYTES`):

1. each split file is cut into buckets, consecutive runs of its lines of about a window's bytes; the spool
   is read a window at a time and each window's lines are appended to their bucket's file, grouped by
   bucket (in spool order within a bucket);
2. each bucket file is read whole and its lines put in the split's order, appended to the split file.

Memory: the window, a gather index of 4 bytes per byte of it, and one int32 per kept row (its bucket).
Disk: the buckets hold the spool's bytes once more; each is deleted once copied, so the disk holds at most
the spool and twice its bytes besides (as before: the spool and the splits).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

WINDOW_BYTES = 4 * 1024 * 1024
_GATHER_BYTES = 1024 * 1024  # bytes gathered by one index (4 bytes of index per byte)
_BLOCK_ROWS = 65536  # rows of a split's order handled at once when cutting it into buckets


def _gather(out: BinaryIO, buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> None:
    """Write the byte runs ``buffer[starts[i] : starts[i] + lengths[i]]`` in that order, a bounded run of
    bytes per numpy gather."""
    ends = np.cumsum(lengths)
    first = 0
    while first < len(lengths):
        before = int(ends[first - 1]) if first else 0
        last = max(int(np.searchsorted(ends, before + _GATHER_BYTES, side="right")), first + 1)
        chunk_lengths = lengths[first:last]
        chunk_ends = ends[first:last] - before
        index = np.repeat((starts[first:last] - (chunk_ends - chunk_lengths)).astype(np.int64), chunk_lengths)
        index += np.arange(len(index), dtype=np.int64)
        out.write(buffer[index].tobytes())
        first = last


def _buckets(starts: np.ndarray, orders: dict[str, np.ndarray], window: int) -> tuple[np.ndarray, list[_Run]]:
    """Each kept row's bucket (int32), and the buckets in order: a split's lines cut by where each starts in
    the split file, every ``window`` bytes, a block of rows at a time (nothing of 8 bytes a row besides
    ``starts``). A line longer than the window leaves bucket numbers without rows: they are not listed."""
    bucket = np.empty(len(starts) - 1, dtype=np.int32)
    found: list[tuple[int, str, int]] = []  # (bucket, split, its first position in the split's order)
    base = 0
    for name, order in orders.items():
        carry, last = 0, -1
        for block in range(0, len(order), _BLOCK_ROWS):
            rows = order[block : block + _BLOCK_ROWS]
            lengths = starts[rows + 1] - starts[rows]
            local = (np.cumsum(lengths) - lengths + carry) // window
            carry += int(lengths.sum())
            bucket[rows] = local + base
            for at in np.flatnonzero(np.diff(local, prepend=last)).tolist():
                found.append((base + int(local[at]), name, block + at))
            last = int(local[-1])
        base += last + 1
    runs = []
    for i, (number, name, first) in enumerate(found):
        end = found[i + 1][2] if i + 1 < len(found) and found[i + 1][1] == name else len(orders[name])
        runs.append(_Run(number, name, first, end))
    return bucket, runs


@dataclass(frozen=True)
class _Run:
    bucket: int
    split: str
    first: int  # its rows are order[first:end] of the split's order
    end: int


def write_in_order(
    spool_path: Path,
    starts: np.ndarray,
    orders: dict[str, np.ndarray],
    files: dict[str, Path],
    header: bytes,
    window: int | None = None,
) -> None:
    """Each split file: ``header``, then the spooled lines (row ``r`` at ``starts[r]:starts[r + 1]``) of its
    rows in ``orders``' order (each kept row in exactly one order); ``window``: :data:`WINDOW_BYTES`."""
    window = window or WINDOW_BYTES
    bucket, runs = _buckets(starts, orders, window)
    parts = {run.bucket: spool_path.with_name(f"{spool_path.name}.bucket-{run.bucket:06d}") for run in runs}
    for part in parts.values():
        part.write_bytes(b"")
    n_rows = len(starts) - 1
    with spool_path.open("rb") as spool:
        first = 0
        while first < n_rows:  # pass 1: a window of the spool's lines at a time, to their buckets
            last = min(max(int(np.searchsorted(starts, starts[first] + window, side="right")) - 1, first + 1), n_rows)
            spool.seek(int(starts[first]))
            data = np.frombuffer(spool.read(int(starts[last] - starts[first])), dtype=np.uint8)
            rows = first + np.argsort(bucket[first:last], kind="stable")
            groups = bucket[rows]
            cuts = np.flatnonzero(np.diff(groups)) + 1
            for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(rows)], strict=True):
                mine = rows[lo:hi]
                with parts[int(groups[lo])].open("ab") as out:
                    _gather(out, data, starts[mine] - starts[first], starts[mine + 1] - starts[mine])
            first = last
    del bucket
    outputs = {name: path.open("wb") for name, path in files.items()}
    try:
        for out in outputs.values():
            out.write(header)
        for run in runs:  # pass 2: each bucket's lines in its split's order
            part = parts[run.bucket]
            data = np.frombuffer(part.read_bytes(), dtype=np.uint8)
            part.unlink()
            order = orders[run.split][run.first : run.end]
            in_file = np.sort(order)  # the bucket's rows as pass 1 appended them: in spool order
            lengths = starts[in_file + 1] - starts[in_file]
            offsets = np.cumsum(lengths) - lengths
            at = np.searchsorted(in_file, order)
            _gather(outputs[run.split], data, offsets[at], lengths[at])
    finally:
        for out in outputs.values():
            out.close()
