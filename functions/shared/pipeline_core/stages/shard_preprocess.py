"""Preprocess on shards (issue 14): the single Preprocess's split files, columns.json and baseline.json, byte for
byte, from the shards SplitDataset cut, on the same Distributed Map the validation uses.

The single streaming Preprocess (:mod:`pipeline_core.stages.preprocess_stream`) makes two passes over the file;
here they are three states, each with the single path's own functions:

1. **PlanSplit** (one Lambda): pass 1, :func:`~pipeline_core.stages.preprocess_stream.read_targets`, over the
   target column of every shard in file order (one shard on disk at a time); the labels are decided on the
   distinct values of them all, as on the whole column, and the seeded split is
   :func:`~pipeline_core.stages.splitting.split_coded` over every kept row. It writes per shard what its rows
   are (``rows``: int8 per data row, -1 dropped, else the split's index; ``codes``: each kept row's class) and
   the split's orders. Memory: about 30 bytes a data row at the peak (the split's permutations), measured in
   ``tests/unit/test_shard_preprocess.py``.
2. **PreprocessShards** (the map, one item per shard): pass 2,
   :func:`~pipeline_core.stages.preprocess_stream.spool_rows`, over the shard: its kept rows' CSV lines (the
   part), where each starts, their hashes, and the baseline's partial counts and numeric train values.
3. **WriteSplits** (one Lambda): the parts appended in shard order are the single path's spool; the split
   files are written from it in each split's order, the baseline's parts are summed (numeric values kept in
   file order and reordered as the single path does, so the float sums match bit for bit), and the result
   is uploaded as Preprocess uploads it (:func:`~pipeline_core.stages.preprocess.publish`).

Everything goes under the dataset's ``shards/`` prefix (``prep/<run id>/``), which the bucket expires.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline_core.models import DataProfile, RunConfig
from pipeline_core.stages.dataset_file import DEFAULT_CHUNK_BYTES
from pipeline_core.stages.preprocess_stream import (
    BaselineParts,
    Streamed,
    Targets,
    read_targets,
    split_of,
    spool_rows,
    train_order,
    write_splits,
)
from pipeline_core.stages.splitting import Split, split_coded

_COPY_BUFFER = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    """PlanSplit's answer: which rows are kept, with which class, and the split over the kept rows."""

    targets: Targets
    split: Split

    def shard_rows(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Per shard in order: ``rows`` (int8 per data row: -1 dropped, else the index in ``SPLITS``) and the
        kept rows' class codes (None for regression)."""
        keep, codes = self.targets.keep, self.targets.codes
        which = split_of(self.split, int(keep.sum()))
        first = kept = 0
        for n_rows in self.targets.rows_per_file:
            mine = keep[first : first + n_rows]
            rows = np.full(n_rows, -1, dtype=np.int8)
            n_kept = int(mine.sum())
            rows[mine] = which[kept : kept + n_kept]
            yield rows, None if codes is None else codes[kept : kept + n_kept]
            first, kept = first + n_rows, kept + n_kept


def plan_split(
    paths: Iterable[Path], profile: DataProfile, config: RunConfig, block_bytes: int = DEFAULT_CHUNK_BYTES
) -> Plan:
    """Pass 1 over the shards at ``paths`` (in file order) and the seeded split of their kept rows."""
    targets = read_targets(paths, profile, block_bytes)
    n_kept = int(targets.keep.sum())
    split = split_coded(n_kept, config.test_size, config.validation_size, config.seed, targets.codes, targets.names)
    return Plan(targets, split)


@dataclass(frozen=True)
class ShardPart:
    """What pass 2 wrote for one shard: its kept rows' lines, where each starts, their hashes, the baseline's
    counts and numeric train values (file order)."""

    lines: Path
    starts: np.ndarray  # one per kept row and one more (the part's length)
    hashes: np.ndarray
    header: bytes
    counts: dict[str, object]  # BaselineParts.counts()
    numeric: dict[str, np.ndarray]  # feature -> its train values, float64 in file order


def preprocess_shard(
    path: Path,
    rows: np.ndarray,
    codes: np.ndarray | None,
    names: list[str],
    profile: DataProfile,
    workdir: Path,
    block_bytes: int = DEFAULT_CHUNK_BYTES,
) -> ShardPart:
    """Pass 2 over one shard with its ``rows`` and ``codes`` from :meth:`Plan.shard_rows`."""
    keep = rows >= 0
    parts = BaselineParts(profile, workdir)
    lines = workdir / "part.csv"
    with lines.open("wb") as spool:
        spooled = spool_rows(path, profile, keep, codes, names, rows[keep], spool, parts, block_bytes)
    numeric = {name: np.fromfile(spool_path, dtype="<f8") for name, spool_path in parts.spools.items()}
    return ShardPart(lines, spooled.starts, spooled.hashes, spooled.header, parts.counts(), numeric)


def gather(
    parts: Iterable[ShardPart],
    split: Split,
    dropped: dict[str, int],
    profile: DataProfile,
    workdir: Path,
    dataset_sha256: str,
) -> Streamed:
    """The single path's outputs from the shards' parts (in shard order); each part's lines file is deleted once
    appended, so the disk holds the spool, then the splits."""
    baseline = BaselineParts(profile, workdir)
    spool_path = workdir / "rows.csv"
    starts: list[np.ndarray] = []
    hashes: list[np.ndarray] = []
    header, written = b"", 0
    with spool_path.open("wb") as spool:
        for part in parts:
            with part.lines.open("rb") as lines:
                shutil.copyfileobj(lines, spool, _COPY_BUFFER)
            part.lines.unlink()
            starts.append(part.starts[:-1] + written)
            written += int(part.starts[-1])
            hashes.append(part.hashes)
            header = header or part.header
            baseline.absorb(part.counts, part.numeric)
    every_start = np.concatenate([*starts, np.array([written], dtype=np.int64)])
    every_hash = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
    files = write_splits(spool_path, every_start, header, split, workdir)
    return Streamed(
        files=files,
        split=split,
        dropped=dropped,
        duplicate_rows=int(len(every_hash) - np.unique(every_hash).size),
        baseline=baseline.baseline(train_order(split), dataset_sha256),
    )
