"""A CSV cut into shards for sharded validation (issue 14): row-aligned pieces, each with the file's header.

A dataset over ``ShardThresholdBytes`` is validated on a Step Functions Distributed Map: SplitDataset cuts
it into shards of about ``ShardSizeBytes`` (:func:`split_csv`), writes them and a manifest (one item per shard,
in file order) to S3; the map runs ValidateShard on each shard (a
:class:`~pipeline_core.stages.profile_accumulator.ProfileState`, written to S3), and ValidateData merges the
states in shard order into the profile the single-Lambda path gives (:func:`merge_states`).

The file is read as a stream, a block at a time (:func:`~pipeline_core.stages.csv_chunks.row_pieces`): memory is
one block and the row open at its end, whatever the file's size. Cuts fall where a CSV reader sees a row end
(:func:`~pipeline_core.stages.csv_chunks.row_end`), so a quoted line break stays in its row. A file whose
header is not one plain line, or with a row longer than ``longest``, is not cut
(:class:`~pipeline_core.stages.csv_chunks.ChunkError`): ValidateData reads it whole and gives its message.

The embedded target differs from AWS in how the map runs (moto 5.2.5, docs/data-scale.md): the items run as
threads of the parent execution, not as child executions; IAM is not enforced; ResultWriter is a stub there,
so the definition does not use it (the results, a URI each, come back inline on every target).
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel

from pipeline_core.aws.s3 import ObjectStore, S3Uri
from pipeline_core.errors import ConfigurationError, DataValidationError
from pipeline_core.models import DataProfile, IngestResult, RunConfig
from pipeline_core.settings import require_env
from pipeline_core.stages.csv_chunks import ChunkError, row_end, row_pieces
from pipeline_core.stages.dataset_file import Limits
from pipeline_core.stages.profile_accumulator import ProfileState
from pipeline_core.stages.profile_checks import choose_target
from pipeline_core.stages.profile_from_state import profile_state
from pipeline_core.stages.validate_stream import LineFinder, accumulate, read_header

BLOCK_BYTES = 1024 * 1024


class ShardItem(BaseModel):
    """One manifest item: the shard's place in the file and where it is."""

    index: int
    uri: str


class ShardResult(BaseModel):
    """What ValidateShard returns for a shard: where its state is, or why the whole file must be read."""

    index: int
    state_uri: str | None = None
    whole_file: str | None = None  # the reason the streamed reader left the file to the whole-file reader


class SplitDatasetEvent(BaseModel):
    """What the SplitDataset state passes."""

    config: RunConfig
    ingest: IngestResult


class SplitResult(BaseModel):
    """SplitDataset's result (``$.shards``): the manifest the map reads, or why the file is not cut."""

    count: int = 0
    bucket: str | None = None  # the manifest's bucket and key (the map's ItemReader parameters)
    key: str | None = None
    max_concurrency: int = 0
    whole_file: str | None = None  # set: ValidateData reads the file as on the single-Lambda path


class ValidateShardEvent(BaseModel):
    """What the map's ItemSelector passes to ValidateShard."""

    config: RunConfig
    shard: ShardItem


def _first_row_end(piece: bytes, size: int) -> int:
    """The end of the first row of ``piece`` (which starts at a row boundary and has no row end in its first
    ``size`` bytes), or the whole piece: the shortest prefix with a row end, found by doubling then bisecting."""
    low, high = max(size, 1), max(size, 1)
    while row_end(piece[:high]) <= 0:
        if high >= len(piece):
            return len(piece)
        low, high = high, 2 * high
    while high - low > 1:  # no row ends within piece[:low]; one does within piece[:high]
        middle = (low + high) // 2
        low, high = (low, middle) if row_end(piece[:middle]) > 0 else (middle, high)
    return row_end(piece[:high])


def split_csv(
    handle: BinaryIO, shard_bytes: int, directory: Path, block_bytes: int = BLOCK_BYTES, longest: int | None = None
) -> Iterator[Path]:
    """Cut the CSV read from ``handle`` into shard files in ``directory``, each the header line and whole rows,
    about ``shard_bytes`` of them (a row longer than that is a shard of its own). Each is yielded once
    complete: store it and delete it before asking for the next, and the disk holds one shard.

    ChunkError when the header is not one plain line or a row is longer than ``longest``."""
    pieces = row_pieces(handle, min(block_bytes, max(shard_bytes, 1)), longest)
    first = next(pieces, b"")
    header, newline, rest = first.partition(b"\n")
    if not newline or b'"' in header or not header.strip():
        raise ChunkError("the header is not one plain line")
    header += b"\n"
    out: BinaryIO | None = None
    path, index, written = directory / "shard.csv", 0, 0
    for piece in itertools.chain([rest], pieces):
        while piece:
            if out is None:
                path = directory / f"shard-{index:05d}.csv"
                out, written = path.open("wb"), 0
                out.write(header)
            room = shard_bytes - written
            if len(piece) <= room:
                out.write(piece)
                written += len(piece)
                break
            end = max(row_end(piece[:room]), 0) if room > 0 else 0
            if end == 0 and written == 0:  # the first row is longer than a shard: it is a shard of its own
                end = _first_row_end(piece, room)
            out.write(piece[:end])
            piece = piece[end:]
            out.close()
            out, index = None, index + 1
            yield path
    if out is not None:
        out.close()
        if written:
            yield path


def merge_states(states: Iterable[ProfileState]) -> ProfileState:
    """The state of the whole file from its shards' states, in file order."""
    merged: ProfileState | None = None
    for state in states:
        merged = state if merged is None else merged.merge(state)
    if merged is None:
        raise ValueError("no shard states to merge")
    return merged


@dataclass(frozen=True)
class ShardSettings:
    """SplitDataset's settings: SHARD_SIZE_BYTES and SHARD_MAX_CONCURRENCY (template parameters ShardSizeBytes
    and ShardMaxConcurrency)."""

    shard_bytes: int
    max_concurrency: int

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ShardSettings:
        values = {}
        for name in ("SHARD_SIZE_BYTES", "SHARD_MAX_CONCURRENCY"):
            text = require_env(name, environ)
            if not text.isdigit() or int(text) < 1:
                raise ConfigurationError(f"environment variable {name} must be a positive whole number, got {text!r}")
            values[name] = int(text)
        return cls(values["SHARD_SIZE_BYTES"], values["SHARD_MAX_CONCURRENCY"])


def shard_prefix(ingest: IngestResult, shard_bytes: int) -> S3Uri:
    """Where a dataset's shards, manifest and states go: named by its content and the shard size, so a run
    again on the same bytes writes the same objects (the bucket's shards/ prefix expires them)."""
    return S3Uri(S3Uri.parse(ingest.raw_uri).bucket, "").child("shards", ingest.sha256, str(shard_bytes))


def split_dataset(ingest: IngestResult, store: ObjectStore, settings: ShardSettings, limits: Limits) -> SplitResult:
    """The SplitDataset state: the raw CSV cut into shards in S3 (streamed: memory is a block, the disk one
    shard) and the manifest the map reads."""
    prefix = shard_prefix(ingest, settings.shard_bytes)
    items: list[ShardItem] = []
    try:
        with tempfile.TemporaryDirectory(prefix="split-") as work:
            shards = split_csv(
                store.reader(ingest.raw_uri), settings.shard_bytes, Path(work), longest=limits.max_line_bytes
            )
            for path in shards:
                uri = str(prefix.child(path.name))
                with path.open("rb") as handle:
                    store.write_stream(uri, handle, "text/csv")
                path.unlink()
                items.append(ShardItem(index=len(items), uri=uri))
    except ChunkError as reason:
        return SplitResult(whole_file=str(reason))
    if not items:
        return SplitResult(whole_file="no data rows")
    manifest = prefix.child("manifest.json")
    store.write_bytes(str(manifest), json.dumps([item.model_dump() for item in items]).encode(), "application/json")
    return SplitResult(
        count=len(items),
        bucket=manifest.bucket,
        key=manifest.key,
        max_concurrency=settings.max_concurrency,
    )


def shard_state(path: Path, config: RunConfig, limits: Limits) -> ProfileState:
    """The state of one shard file (a header and rows); ChunkError or DataValidationError (a target the
    header does not have): the whole-file reader must answer."""
    names = read_header(path, limits)
    target, _ = choose_target(config, names)
    return accumulate(path, names, target, limits)


def validate_shard(config: RunConfig, shard: ShardItem, store: ObjectStore, limits: Limits) -> ShardResult:
    """The ValidateShard state: the shard's state, written next to it (a state holds up to a few MB of
    hashes and samples, over Step Functions' 256 KB payload limit, so only its URI is returned)."""
    with tempfile.TemporaryDirectory(prefix="shard-") as work:
        path = Path(work) / "shard.csv"
        store.download_stream(shard.uri, path)
        try:
            state = shard_state(path, config, limits)
        except (ChunkError, DataValidationError) as reason:
            return ShardResult(index=shard.index, whole_file=str(reason))
    state_uri = shard.uri.removesuffix(".csv") + ".state.json"
    store.write_bytes(state_uri, state.to_json().encode(), "application/json")
    return ShardResult(index=shard.index, state_uri=state_uri)


class _RemoteLines:
    """:class:`~pipeline_core.stages.validate_stream.LineFinder` of the raw object, downloaded only when a
    message names a row."""

    def __init__(self, store: ObjectStore, uri: str, work: Path) -> None:
        self.store, self.uri, self.work = store, uri, work
        self.finder: LineFinder | None = None

    def __call__(self, position: int) -> str:
        if self.finder is None:
            path = self.work / "dataset.csv"
            self.store.download_stream(self.uri, path)
            self.finder = LineFinder(path)
        return self.finder(position)


def merged_profile(
    results: Sequence[ShardResult], config: RunConfig, ingest: IngestResult, store: ObjectStore
) -> DataProfile | None:
    """The profile of the whole file from its shards' states, merged in file order: what
    :func:`~pipeline_core.stages.validate_stream.stream_profile` gives on the whole file. None when a shard
    left the file to the whole-file reader (the caller takes the single-Lambda path); NeedsWholeTable or
    DataValidationError as stream_profile raises them."""
    ordered = sorted(results, key=lambda result: result.index)
    if not ordered or any(result.state_uri is None for result in ordered):
        return None
    state = merge_states(ProfileState.from_json(store.read_bytes(str(r.state_uri)).decode()) for r in ordered)
    _, chosen_by = choose_target(config, state.names)
    with tempfile.TemporaryDirectory(prefix="merge-") as work:
        return profile_state(state, config, chosen_by, _RemoteLines(store, ingest.raw_uri, Path(work)))
