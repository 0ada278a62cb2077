"""Which path a run's data takes, decided from the object's size before any stage reads it.

Ingest learns the dataset's size (one HEAD) and, before copying or hashing it, answers one of:

- ``single``: ValidateData and Preprocess each read the whole file in one Lambda (today's path);
- ``sharded``: a CSV over ``ShardThresholdBytes``: its validation is sharded on a Distributed Map (SplitDataset,
  ValidateShard per shard, ValidateData merging their states: :mod:`pipeline_core.stages.shards`); Preprocess
  still reads it whole, so the memory limits below still apply;
- too large: a clear :class:`DatasetTooLargeError` naming the setting to change.

Two settings decide, both template parameters passed to Ingest as environment variables:

- ``LargeDatasetThresholdBytes`` (``LARGE_DATASET_THRESHOLD_BYTES``): above it a run takes the large-data
  (sharded) path. That path is not built yet, so for now a dataset above it is refused with a message
  saying so; the result's ``path`` field is the seam the sharded branch will use.
- ``ShardThresholdBytes`` (``SHARD_THRESHOLD_BYTES``): above it (and within the threshold above) a CSV's
  validation is sharded; unset: never (the single-Lambda path for every size, as before).
- ``DataStageMemorySize`` (``DATA_STAGE_MEMORY_MB``): the MemorySize of ValidateData and Preprocess. With
  ``DATA_STAGE_MEMORY_FACTOR`` (how many bytes of memory those stages need per byte of file) it says how
  large a file the single-Lambda path can hold; a dataset under the threshold but over that would run out
  of memory there, so it is refused too, naming both settings (they disagree).
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

    def memory_mb_for(self, size_bytes: int) -> int:
        """The MemorySize (MB) the data stages would need for a file of ``size_bytes``."""
        return math.ceil(size_bytes * self.memory_factor / MIB)


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
            f"({LAMBDA_MAX_MEMORY_MB} MB): use a sample until the large-data path is built"
        )
    return f"raise DataStageMemorySize to at least {needed} MB"


def choose_path(size_bytes: int, settings: DataPathSettings, file_format: str = "csv") -> tuple[DataPath, str]:
    """The path a dataset of ``size_bytes`` takes and one sentence saying why; too large is an error.

    Raises :class:`DatasetTooLargeError` (message: the size, the limit, the setting to change) when the
    dataset is over LargeDatasetThresholdBytes (the sharded path is not built yet) or over what the data
    stages' MemorySize holds.
    """
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
        raise DatasetTooLargeError(
            f"the dataset is {_size(size_bytes)}, over LargeDatasetThresholdBytes ({_size(threshold)}): a dataset "
            "that large takes the large-data (sharded) path, which this version does not have yet, so it is too "
            f"large for this deployment. Use a sample of at most {_size(threshold)}. {fix} - docs/data-scale.md"
        )
    if size_bytes > capacity:
        raise DatasetTooLargeError(
            f"the dataset is {_size(size_bytes)}: {holds}, so they would run out of memory on it. "
            f"LargeDatasetThresholdBytes ({_size(threshold)}) is set above what DataStageMemorySize holds; make the "
            f"two agree: {_memory_advice(settings, size_bytes)}, or lower LargeDatasetThresholdBytes to "
            f"{capacity} or less - docs/data-scale.md"
        )
    shard = settings.shard_threshold_bytes
    if shard is not None and size_bytes > shard and file_format == "csv":
        return "sharded", (
            f"the dataset is {_size(size_bytes)}, over ShardThresholdBytes ({_size(shard)}): ValidateData's work "
            "is sharded on a Distributed Map (SplitDataset, ValidateShard on each shard, ValidateData merging "
            f"them); Preprocess reads it whole in one Lambda ({holds})"
        )
    return "single", (
        f"the dataset is {_size(size_bytes)}, within LargeDatasetThresholdBytes ({_size(threshold)}): "
        f"ValidateData and Preprocess each read it whole in one Lambda ({holds})"
    )
