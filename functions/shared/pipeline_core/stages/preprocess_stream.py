"""Preprocess in bounded memory: the same splits, byte for byte, from a CSV read in chunks.

Two passes over the local copy of the dataset (:mod:`pipeline_core.stages.csv_chunks`), never the table:

1. the target column only: which rows are kept (a target, a class the profile kept) and each kept row's
   class as a small integer code. Class labels are decided on the target's *distinct* values, which is
   what :func:`~pipeline_core.classes.target_labels` decides on the whole column (whole numbers written
   without ``.0`` only when every value is whole); rare classes are dropped or merged as the profile says
   (ValidateData applied ``rare_classes`` to the same bytes: Ingest's hash names them).
2. every column, a chunk at a time: values read with their roles (:func:`apply_schema`), the kept rows
   rendered as CSV lines (:func:`~pipeline_core.stages.csv_lines.csv_lines`: the bytes ``DataFrame.to_csv``
   writes, so each value is written exactly as the whole-frame write would) into one spool file, with each
   line's offset; the train rows' baseline statistics accumulated.

The split is :func:`~pipeline_core.stages.splitting.split_coded`, the seeded permutation Preprocess has
always used, over the kept rows' class codes: each split file is then written by copying the spooled lines
in the split's order. What stays in memory grows with the row count only by a few small arrays (about 50
bytes a kept row: keep mask, class code, line offset, split permutation, row hash for the duplicate count),
never with the width of the table or the size of its values. Numeric train values are spooled to disk per
column and read back one column at a time for the exact quantiles of the baseline (8 bytes a train row).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from pipeline_core.classes import MERGED_LABEL, target_labels
from pipeline_core.errors import DataValidationError
from pipeline_core.models import ColumnProfile, DataProfile, RunConfig
from pipeline_core.stages.baseline import (
    DEFAULT_BINS,
    MAX_CATEGORIES,
    Baseline,
    baseline_of,
    categorical_stats_from_counts,
    category_text,
    compare_kind,
    feature_of,
    numeric_stats,
)
from pipeline_core.stages.column_roles import typed
from pipeline_core.stages.csv_chunks import frame_of, iter_tables, needs_strip
from pipeline_core.stages.csv_lines import csv_lines
from pipeline_core.stages.data_validation import EMPTY_TARGET, RARE_DROPPED, apply_schema
from pipeline_core.stages.dataset_file import DEFAULT_CHUNK_BYTES, Table
from pipeline_core.stages.preprocess_values import piece_values
from pipeline_core.stages.splitting import SPLITS, Split, split_coded

_COPY_BUFFER = 1024 * 1024
_ORDER_BLOCK = 65536


@dataclass(frozen=True)
class Streamed:
    """What the streaming Preprocess wrote (split files under the work directory) and found."""

    files: dict[str, Path]  # split name -> its CSV file
    split: Split
    dropped: dict[str, int]  # reason -> rows
    duplicate_rows: int
    baseline: Baseline


@dataclass(frozen=True)
class Targets:
    """Pass 1: per file row, kept or not; per kept row, its class code into ``names`` (classification)."""

    keep: np.ndarray  # bool, one per data row of the file
    codes: np.ndarray | None  # int, one per kept row; None for regression
    names: list[str]
    dropped: dict[str, int]
    rows_per_file: tuple[int, ...] = ()  # data rows of each file read, in order (shards of one file)


def _values_with_offsets(
    path: Path, read: list[ColumnProfile], block_bytes: int, only: list[str] | None = None
) -> Iterator[tuple[int, pd.DataFrame]]:
    """Each piece's first row and its ``read`` columns read with their roles (``apply_schema``'s frame): in
    pyarrow kernels where they give that frame (:func:`piece_values`), else on the normalized piece."""
    offset = 0
    for table, piece in iter_tables(path, only, block_bytes):
        missing = {c.name for c in read} - {name.strip() for name in table.column_names}
        if missing:
            raise DataValidationError(
                f"the dataset no longer has the profiled columns {sorted(missing)}; was it replaced after ValidateData?"
            )
        values = piece_values(table, [c for c in read if typed(c)], needs_strip(piece))  # the columns written
        if values is None:
            values = apply_schema(Table(frame_of(table)), read)
        yield offset, values
        offset += table.num_rows


def read_targets(paths: Path | Iterable[Path], profile: DataProfile, block_bytes: int = DEFAULT_CHUNK_BYTES) -> Targets:
    """Pass 1 over the target column only, of one file or of a file's shards read in order (each with the
    header): the labels are decided on the distinct values of all of them, as on the whole column."""
    target = profile.target
    column = next(c for c in profile.columns if c.name == target)
    classification = profile.problem_type != "regression"
    keep_parts: list[np.ndarray] = []
    raw_parts: list[np.ndarray] = []
    raw_index: dict[object, int] = {}  # distinct target value (as read) -> raw code
    rows_per_file = []
    for path in [paths] if isinstance(paths, Path) else paths:
        rows = 0
        for _, chunk in _values_with_offsets(path, [column], block_bytes, only=[target]):
            values = chunk[target]
            has = values.notna().to_numpy()
            keep_parts.append(has)
            rows += len(has)
            if classification:
                local, uniques = pd.factorize(values[has], use_na_sentinel=True)
                lut = np.array([raw_index.setdefault(u, len(raw_index)) for u in uniques], dtype=np.int32)
                raw_parts.append(lut[local] if len(lut) else np.zeros(0, dtype=np.int32))
        rows_per_file.append(rows)
    keep = np.concatenate(keep_parts) if keep_parts else np.zeros(0, dtype=bool)
    del keep_parts
    dropped = {EMPTY_TARGET: int((~keep).sum())}
    if not classification:
        return Targets(keep, None, [], {k: v for k, v in dropped.items() if v}, tuple(rows_per_file))
    # labels of the distinct values: target_labels decides "3" or "3.0" on the values present, as for the column
    distinct = pd.Series(list(raw_index), dtype=float if column.dtype == "numeric" else object)
    labels = target_labels(distinct, column.dtype).tolist()
    merged = set(profile.merged_classes)
    names = list(profile.class_labels)
    code_of = {name: i for i, name in enumerate(names)}
    final = np.array(
        [code_of.get(MERGED_LABEL if label in merged else label, -1) for label in labels] or [0], dtype=np.int32
    )
    raw = np.concatenate(raw_parts) if raw_parts else np.zeros(0, dtype=np.int32)
    del raw_parts
    codes = final[raw] if raw.size else raw
    del raw
    rare = codes < 0
    dropped[RARE_DROPPED] = int(rare.sum())
    keep[np.flatnonzero(keep)[rare]] = False
    return Targets(keep, codes[~rare], names, {k: v for k, v in dropped.items() if v}, tuple(rows_per_file))


class BaselineParts:
    """The train split's per-feature statistics, accumulated chunk by chunk (file order)."""

    def __init__(self, profile: DataProfile, workdir: Path) -> None:
        by_name = {c.name: c for c in profile.columns}
        self.profile = profile
        self.features: list[ColumnProfile] = [by_name[name] for name in profile.feature_columns]
        self.count = 0
        self.missing = dict.fromkeys(profile.feature_columns, 0)
        self.categories: dict[str, Counter[str]] = {
            c.name: Counter() for c in self.features if compare_kind(c.role) == "categorical"
        }
        self.spools = {
            c.name: workdir / f"numeric-{i}.f8"
            for i, c in enumerate(self.features)
            if compare_kind(c.role) == "numeric"
        }
        for spool in self.spools.values():
            spool.write_bytes(b"")

    def add(self, rows: pd.DataFrame) -> None:
        self.count += len(rows)
        for column in self.features:
            values = rows[column.name]
            self.missing[column.name] += int(values.isna().sum())
            if column.name in self.categories:
                # count the values, then name the distinct ones (category_text per distinct value, not per row)
                counts = values.value_counts(dropna=True)
                if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
                    texts = category_text(pd.Series(counts.index, dtype=counts.index.dtype)).tolist()
                else:  # category_text of any other value is str(value)
                    texts = [str(value) for value in counts.index]
                found = self.categories[column.name]
                for text, count in zip(texts, counts.tolist(), strict=True):
                    found[str(text)] += int(count)
            elif column.name in self.spools:
                if values.dtype == np.float64:
                    numbers = values.to_numpy()
                else:
                    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
                with self.spools[column.name].open("ab") as out:
                    numbers.astype("<f8").tofile(out)

    def counts(self) -> dict[str, object]:
        """The counts (JSON-ready) a shard passes on; its numeric values are the files in ``spools``."""
        return {"count": self.count, "missing": self.missing, "categories": self.categories}

    def absorb(self, counts: dict[str, object], numeric: Mapping[str, np.ndarray]) -> None:
        """Add the next shard's part: its :meth:`counts` and numeric train values (appended: file order)."""
        self.count += int(counts["count"])  # type: ignore[call-overload]
        for name, missing in counts["missing"].items():  # type: ignore[attr-defined]
            self.missing[name] += int(missing)
        for name, found in counts["categories"].items():  # type: ignore[attr-defined]
            self.categories[name].update({str(k): int(v) for k, v in found.items()})
        for name, spool in self.spools.items():
            with spool.open("ab") as out:
                numeric[name].astype("<f8").tofile(out)

    def baseline(self, order: np.ndarray, dataset_sha256: str) -> Baseline:
        """``order``: for each train row in split order, its position among the train rows in file order."""
        features = []
        for column in self.features:
            numeric = categorical = None
            if column.name in self.spools:
                # the values in split order, as build_baseline sees them: the float sums match bit for bit
                numeric = numeric_stats(np.fromfile(self.spools[column.name], dtype="<f8")[order], DEFAULT_BINS)
            elif column.name in self.categories:
                categorical = categorical_stats_from_counts(self.categories[column.name], MAX_CATEGORIES)
            features.append(feature_of(column, self.count, self.missing[column.name], numeric, categorical))
        return baseline_of(features, self.profile, dataset_sha256, self.count)


def split_of(split: Split, n_kept: int) -> np.ndarray:
    """Each kept row's split, as its index in ``SPLITS``."""
    which = np.empty(n_kept, dtype=np.int8)
    for i, name in enumerate(SPLITS):
        which[getattr(split, name)] = i
    return which


@dataclass(frozen=True)
class Spooled:
    """Pass 2 over one file: its kept rows' CSV lines went to a spool; where each starts, and their hashes."""

    header: bytes  # b"" when the file has no kept row
    starts: np.ndarray  # int64, one per kept row and one more: the spool's length
    hashes: np.ndarray  # uint64, one per kept row (the duplicate count)


def spool_rows(
    path: Path,
    profile: DataProfile,
    keep: np.ndarray,
    codes: np.ndarray | None,
    names: list[str],
    which: np.ndarray,
    spool: BinaryIO,
    parts: BaselineParts,
    block_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Spooled:
    """Pass 2 over ``path`` (the whole file, or one shard): its kept rows (``keep``, one per data row; ``codes``
    and ``which``, the split index, one per kept row) rendered into ``spool``; the train rows into ``parts``."""
    n_kept = int(keep.sum())
    kept_before = np.concatenate(([0], np.cumsum(keep))).astype(np.int64)
    columns = [*profile.feature_columns, profile.target]
    starts = np.zeros(n_kept + 1, dtype=np.int64)
    hashes = np.zeros(n_kept, dtype=np.uint64)
    header = b""
    written = 0
    class_names = np.array(names, dtype=object)  # a kept row's class code -> its label
    for offset, values in _values_with_offsets(path, profile.columns, block_bytes):
        rows = values[keep[offset : offset + len(values)]].reset_index(drop=True)[columns]
        first, last = int(kept_before[offset]), int(kept_before[offset + len(values)])
        if codes is not None:
            rows[profile.target] = class_names[codes[first:last]]
        if not header:
            header = rows.iloc[:0].to_csv(index=False, lineterminator="\n").encode("utf-8")
        body, line_starts = csv_lines(rows)
        starts[first:last] = line_starts + written
        spool.write(body)
        written += len(body)
        hashes[first:last] = pd.util.hash_pandas_object(rows, index=False).to_numpy()
        parts.add(rows[which[first:last] == 0])
    starts[n_kept] = written
    return Spooled(header, starts, hashes)


def write_splits(spool_path: Path, starts: np.ndarray, header: bytes, split: Split, workdir: Path) -> dict[str, Path]:
    """The three split files under ``workdir`` from the spool of every kept row (file order); deletes it."""
    files = {name: workdir / f"{name}.csv" for name in SPLITS}
    _write_in_order(spool_path, starts, {name: getattr(split, name) for name in SPLITS}, files, header)
    spool_path.unlink()
    return files


def train_order(split: Split) -> np.ndarray:
    """For each train row in split order, its position among the train rows in file order
    (:meth:`BaselineParts.baseline`'s ``order``)."""
    return np.searchsorted(np.sort(split.train), split.train)


def stream_preprocess(
    path: Path,
    workdir: Path,
    profile: DataProfile,
    config: RunConfig,
    dataset_sha256: str,
    block_bytes: int = DEFAULT_CHUNK_BYTES,
    delete_source: bool = False,
) -> Streamed:
    """The three split files (under ``workdir``) and the train baseline of the CSV at ``path``;
    ``delete_source``: delete ``path`` once read, before the split files are written (Lambda's ``/tmp``
    then holds at most the spool, the numeric spools and the splits, not the dataset besides)."""
    targets = read_targets(path, profile, block_bytes)
    n_kept = int(targets.keep.sum())
    split = split_coded(n_kept, config.test_size, config.validation_size, config.seed, targets.codes, targets.names)
    parts = BaselineParts(profile, workdir)
    spool_path = workdir / "rows.csv"
    which = split_of(split, n_kept)
    with spool_path.open("wb") as spool:
        spooled = spool_rows(
            path, profile, targets.keep, targets.codes, targets.names, which, spool, parts, block_bytes
        )
    if delete_source:
        path.unlink()
    files = write_splits(spool_path, spooled.starts, spooled.header, split, workdir)
    return Streamed(
        files=files,
        split=split,
        dropped=targets.dropped,
        duplicate_rows=int(n_kept - np.unique(spooled.hashes).size),
        baseline=parts.baseline(train_order(split), dataset_sha256),
    )


def _write_in_order(
    spool_path: Path, starts: np.ndarray, orders: dict[str, np.ndarray], files: dict[str, Path], header: bytes
) -> None:
    """Each split file: the header, then the spooled lines of its rows in the split's order."""
    fd = os.open(spool_path, os.O_RDONLY)
    try:
        for name, order in orders.items():
            with files[name].open("wb", buffering=_COPY_BUFFER) as out:
                out.write(header)
                for block in range(0, len(order), _ORDER_BLOCK):  # Python ints for a block at a time
                    rows = order[block : block + _ORDER_BLOCK]
                    for b, e in zip(starts[rows].tolist(), starts[rows + 1].tolist(), strict=True):
                        out.write(os.pread(fd, e - b, b))
    finally:
        os.close(fd)
