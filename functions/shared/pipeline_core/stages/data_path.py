"""Which path a run's data takes, decided from the object's size before any stage reads it.

Ingest learns the dataset's size (one HEAD) and, before copying or hashing it, answers one of:

- ``single``: ValidateData and Preprocess each read the whole file in one Lambda;
- ``sharded``: a CSV over ``ShardThresholdBytes``: validation and preprocessing are sharded on Distributed Maps
  (SplitDataset, ValidateShard per shard, ValidateData merging their states:
  :mod:`pipeline_core.stages.shards`; PlanSplit, PreprocessShard per shard, WriteSplits:
  :mod:`pipeline_core.stages.shard_preprocess`). No stage holds the file, so LargeDatasetThresholdBytes and the
  data stages' memory factor do not limit it; what does: WriteSplits' /tmp (the rows spooled, then the split
  files: about twice the file in Lambda's largest EphemeralStorage) and, per row, PlanSplit's and WriteSplits'
  memory (about 31 and 40 bytes a row of DataStageMemorySize; Ingest sees no rows, so PlanSplit checks them:
  :func:`check_sharded_rows`);
- too large: a clear :class:`DatasetTooLargeError` naming the setting to change.

The settings, template parameters passed to Ingest as environment variables:

- ``LargeDatasetThresholdBytes`` (``LARGE_DATASET_THRESHOLD_BYTES``): the largest dataset the single-Lambda path
  takes; a larger one must take the sharded path (a CSV with ShardThresholdBytes set) or is refused.
- ``ShardThresholdBytes`` (``SHARD_THRESHOLD_BYTES``): above it a CSV takes the sharded path; unset: never (the
  single-Lambda path for every size).
- ``DataStageMemorySize`` (``DATA_STAGE_MEMORY_MB``): the MemorySize of ValidateData and Preprocess (and of the
  sharded stages). With ``DATA_STAGE_MEMORY_FACTOR`` (how many bytes of memory the single-Lambda stages need
  per byte of file) it says how large a file the single-Lambda path can hold; a dataset under the threshold
  but over that would run out of memory there, so it is refused too, naming both settings (they disagree).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Literal

from pipeline_core.errors import ConfigurationError, DatasetTooLargeError
from pipeline_core.settings import require_env

MIB = 1024 * 1024
LAMBDA_MAX_MEMORY_MB = 10_240  # Lambda's largest MemorySize
# The sharded path's limits (docs/data-scale.md): WriteSplits has Lambda's largest EphemeralStorage (the
# template says so, tests/unit/test_ingest.py checks) and holds there the rows spooled, then the split files.
SHARDED_STORAGE_MB = 10_240
SHARDED_DISK_FACTOR = 2.0
# PlanSplit's peak, measured 30.8 bytes a data row (tests/unit/test_shard_preprocess.py); WriteSplits holds
# the line starts, row hashes and the split's orders (8 bytes each a kept row) and a copy while it sorts.
SHARDED_BYTES_PER_ROW = 40

DataPath = Literal["single", "sharded"]


def _size(n: int) -> str:
    return f"{n} bytes" if n < MIB else f"{n / MIB:.1f} MiB ({n} bytes)"


@dataclass(frozen=True)
class DataPathSettings:
    """The settings that route a dataset (see the module's docstring)."""

    large_dataset_threshold_bytes: int
    data_stage_memory_mb: int
    # Measured on today's main (issue 14: 20 numeric + 3 categorical columns, 10k to 3M rows): ValidateData
    # and Preprocess each peak at about 9.5 times the CSV's size. Lower it (template) as the stages stream.
    memory_factor: float
    shard_threshold_bytes: int | None = None  # None: validation is never sharded

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> DataPathSettings:
        """From LARGE_DATASET_THRESHOLD_BYTES, DATA_STAGE_MEMORY_MB and DATA_STAGE_MEMORY_FACTOR (the template
        sets all three; a missing or bad one is a ConfigurationError naming it) and SHARD_THRESHOLD_BYTES
        (optional: without it validation is never sharded)."""
        threshold = _positive("LARGE_DATASET_THRESHOLD_BYTES", require_env("LARGE_DATASET_THRESHOLD_BYTES", environ))
        memory = _positive("DATA_STAGE_MEMORY_MB", require_env("DATA_STAGE_MEMORY_MB", environ))
        factor = _positive("DATA_STAGE_MEMORY_FACTOR", require_env("DATA_STAGE_MEMORY_FACTOR", environ), float)
        shard = (os.environ if environ is None else environ).get("SHARD_THRESHOLD_BYTES")
        shard_threshold = int(_positive("SHARD_THRESHOLD_BYTES", shard)) if shard else None
        return cls(int(threshold), int(memory), float(factor), shard_threshold)

    @property
    def single_lambda_capacity_bytes(self) -> int:
        """The largest file ValidateData and Preprocess can hold in their MemorySize."""
        return int(self.data_stage_memory_mb * MIB / self.memory_factor)

    @property
    def sharded_capacity_bytes(self) -> int:
        """The largest CSV the sharded path takes: what WriteSplits' /tmp holds."""
        return int(SHARDED_STORAGE_MB * MIB / SHARDED_DISK_FACTOR)

    @property
    def sharded_capacity_rows(self) -> int:
        """The most rows PlanSplit and WriteSplits hold in DataStageMemorySize."""
        return sharded_rows_held(self.data_stage_memory_mb)

    def memory_mb_for(self, size_bytes: int) -> int:
        """The MemorySize (MB) the data stages would need for a file of ``size_bytes``."""
        return math.ceil(size_bytes * self.memory_factor / MIB)


def sharded_rows_held(memory_mb: int) -> int:
    """The most data rows PlanSplit and WriteSplits hold in ``memory_mb`` of MemorySize."""
    return memory_mb * MIB // SHARDED_BYTES_PER_ROW


def check_sharded_rows(n_rows: int, memory_mb: int) -> None:
    """Refuse, before any is read, more data rows than PlanSplit and WriteSplits hold in ``memory_mb``.

    Ingest routes by bytes and cannot count rows; a file of short rows can pass its size check and still hold
    more rows than these per-row arrays fit in. Raises :class:`DatasetTooLargeError` naming the rows, the
    memory and the setting to change."""
    held = sharded_rows_held(memory_mb)
    if n_rows <= held:
        return
    needed = math.ceil(n_rows * SHARDED_BYTES_PER_ROW / MIB)
    fix = (
        f"raise DataStageMemorySize to at least {needed} MB"
        if needed <= LAMBDA_MAX_MEMORY_MB
        else f"use a sample of at most {sharded_rows_held(LAMBDA_MAX_MEMORY_MB):,} rows (Lambda's largest MemorySize, "
        f"{LAMBDA_MAX_MEMORY_MB} MB, holds no more)"
    )
    raise DatasetTooLargeError(
        f"the dataset has {n_rows:,} data rows; PlanSplit and WriteSplits hold about {SHARDED_BYTES_PER_ROW} bytes "
        f"a row, so DataStageMemorySize {memory_mb} MB holds about {held:,} rows: {fix} - docs/data-scale.md"
    )


def _positive(name: str, text: str, kind: type[int] | type[float] = int) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise ConfigurationError(f"environment variable {name} must be a positive number, got {text!r}") from None
    if not value > 0:
        raise ConfigurationError(f"environment variable {name} must be positive, got {text!r}")
    return value


def _memory_advice(settings: DataPathSettings, size_bytes: int) -> str:
    needed = settings.memory_mb_for(size_bytes)
    if needed > LAMBDA_MAX_MEMORY_MB:
        return (
            f"it would need about {needed} MB of memory, more than Lambda's largest MemorySize "
            f"({LAMBDA_MAX_MEMORY_MB} MB): use a sample, or a CSV over ShardThresholdBytes (the sharded path)"
        )
    return f"raise DataStageMemorySize to at least {needed} MB"


def _sharded(size_bytes: int, shard: int, settings: DataPathSettings) -> tuple[DataPath, str]:
    capacity = settings.sharded_capacity_bytes
    limits = (
        f"the sharded path takes a CSV up to {_size(capacity)} (WriteSplits' /tmp, {SHARDED_STORAGE_MB} MB, holds "
        f"about {SHARDED_DISK_FACTOR:g}x the file) and about {settings.sharded_capacity_rows:,} rows (PlanSplit and "
        f"WriteSplits hold about {SHARDED_BYTES_PER_ROW} bytes a row in DataStageMemorySize "
        f"{settings.data_stage_memory_mb} MB)"
    )
    if size_bytes > capacity:
        raise DatasetTooLargeError(
            f"the dataset is {_size(size_bytes)}, over what {limits}. Use a sample of at most {_size(capacity)} "
            "- docs/data-scale.md"
        )
    return "sharded", (
        f"the dataset is {_size(size_bytes)}, over ShardThresholdBytes ({_size(shard)}): its validation and "
        "preprocessing are sharded on Distributed Maps (SplitDataset, ValidateShard on each shard, ValidateData "
        f"merging them; PlanSplit, PreprocessShard on each shard, WriteSplits); no stage holds the file: {limits}"
    )


def choose_path(size_bytes: int, settings: DataPathSettings, file_format: str = "csv") -> tuple[DataPath, str]:
    """The path a dataset of ``size_bytes`` takes and one sentence saying why; too large is an error.

    Raises :class:`DatasetTooLargeError` (message: the size, the limit, the setting to change) when a CSV on the
    sharded path is over what WriteSplits' /tmp holds, or a dataset on the single-Lambda path is over
    LargeDatasetThresholdBytes or over what the data stages' MemorySize holds.
    """
    shard = settings.shard_threshold_bytes
    if shard is not None and size_bytes > shard and file_format == "csv":
        return _sharded(size_bytes, shard, settings)
    threshold, capacity = settings.large_dataset_threshold_bytes, settings.single_lambda_capacity_bytes
    holds = (
        f"ValidateData and Preprocess hold up to {_size(capacity)} with DataStageMemorySize "
        f"{settings.data_stage_memory_mb} MB: they need about {settings.memory_factor:g}x the file in memory"
    )
    if size_bytes > threshold:
        fix = f"To take it whole, raise the LargeDatasetThresholdBytes parameter to at least {size_bytes}"
        if settings.memory_mb_for(size_bytes) > LAMBDA_MAX_MEMORY_MB:
            fix = f"One Lambda cannot take it whole ({holds}): {_memory_advice(settings, size_bytes)}"
        elif size_bytes > capacity:
            fix += f" and, as {holds}, {_memory_advice(settings, size_bytes)}"
        else:
            fix += f" ({holds})"
        if file_format != "csv":
            sharded = f"only a CSV takes the sharded path, and this dataset is {file_format}: convert it to CSV, or"
        else:
            sharded = (
                "ShardThresholdBytes is not set, so it cannot take the sharded path: set it (docs/data-scale.md), or"
            )
        raise DatasetTooLargeError(
            f"the dataset is {_size(size_bytes)}, over LargeDatasetThresholdBytes ({_size(threshold)}), the largest "
            f"the single-Lambda path takes; {sharded} use a sample of at most {_size(threshold)}. {fix} "
            "- docs/data-scale.md"
        )
    if size_bytes > capacity:
        raise DatasetTooLargeError(
            f"the dataset is {_size(size_bytes)}: {holds}, so they would run out of memory on it. "
            f"LargeDatasetThresholdBytes ({_size(threshold)}) is set above what DataStageMemorySize holds; make the "
            f"two agree: {_memory_advice(settings, size_bytes)}, or lower LargeDatasetThresholdBytes to "
            f"{capacity} or less - docs/data-scale.md"
        )
    return "single", (
        f"the dataset is {_size(size_bytes)}, within LargeDatasetThresholdBytes ({_size(threshold)}): "
        f"ValidateData and Preprocess each read it whole in one Lambda ({holds})"
    )
