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

The embedded target runs the PreprocessShards map as it runs ValidateShards, differently from AWS (moto 5.2.5:
the items are threads of the parent execution, not child executions; IAM is not enforced; no ResultWriter, so
the results come back inline on every target): see :mod:`pipeline_core.stages.shards` and docs/data-scale.md.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from pipeline_core.aws.s3 import ObjectStore, S3Uri
from pipeline_core.models import DataProfile, IngestResult, PreprocessResult, RunConfig
from pipeline_core.stages.csv_chunks import ChunkError
from pipeline_core.stages.data_path import check_sharded_rows
from pipeline_core.stages.dataset_file import DEFAULT_CHUNK_BYTES, Limits
from pipeline_core.stages.preprocess import publish
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
from pipeline_core.stages.shards import ShardItem, ShardSettings, shard_prefix
from pipeline_core.stages.splitting import SPLITS, Split, split_coded

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
    # Every kept row's line start and hash, filled part by part into arrays of the final size (a list of the
    # parts' arrays and their concatenation held both, 32 bytes a row); the split names every kept row once.
    n_kept = sum(len(getattr(split, name)) for name in SPLITS)
    starts = np.empty(n_kept + 1, dtype=np.int64)
    hashes = np.empty(n_kept, dtype=np.uint64)
    header, written, filled = b"", 0, 0
    with spool_path.open("wb") as spool:
        for part in parts:
            with part.lines.open("rb") as lines:
                shutil.copyfileobj(lines, spool, _COPY_BUFFER)
            part.lines.unlink()
            rows = len(part.hashes)
            starts[filled : filled + rows] = part.starts[:-1] + written
            hashes[filled : filled + rows] = part.hashes
            filled, written = filled + rows, written + int(part.starts[-1])
            header = header or part.header
            baseline.absorb(part.counts, part.numeric)
    if filled != n_kept:
        raise ValueError(f"the shards' parts hold {filled} kept rows, the split {n_kept}")
    starts[n_kept] = written
    duplicates = _duplicates(hashes)
    del hashes  # before the splits and the baseline need their own memory
    files = write_splits(spool_path, starts, header, split, workdir)
    del starts
    return Streamed(
        files=files,
        split=split,
        dropped=dropped,
        duplicate_rows=duplicates,
        baseline=baseline.baseline(train_order(split), dataset_sha256),
    )


def _duplicates(hashes: np.ndarray) -> int:
    """How many rows repeat an earlier one: ``len - len(np.unique)``, sorting ``hashes`` in place (np.unique
    sorts a copy and returns another)."""
    hashes.sort()
    return int(np.count_nonzero(hashes[1:] == hashes[:-1]))


# --------------------------------------------------------------------------- the three states, on S3


class PlanResult(BaseModel):
    """PlanSplit's result (``$.plan``): the manifest the PreprocessShards map reads (as SplitDataset's result
    gives it to the ValidateShards map) and where the plan is; or why the single Preprocess reads the file."""

    count: int = 0
    bucket: str | None = None  # the manifest's bucket and key (the map's ItemReader parameters)
    key: str | None = None
    max_concurrency: int = 0
    uri: str | None = None  # the prefix of the plan and of the shards' parts
    whole_file: str | None = None  # set: no shards, or the streaming reader refused one; Preprocess reads the file


class PlanSplitEvent(BaseModel):
    """What the PlanSplit state passes."""

    config: RunConfig
    ingest: IngestResult
    data: DataProfile


class PreprocessShardEvent(BaseModel):
    """What the PreprocessShards map's ItemSelector passes to PreprocessShard."""

    config: RunConfig
    data: DataProfile
    plan: PlanResult
    shard: ShardItem


class PartResult(BaseModel):
    """What PreprocessShard returns: the shard's index and the prefix of its part's objects."""

    index: int
    uri: str


class WriteSplitsEvent(BaseModel):
    """What the WriteSplits state passes."""

    config: RunConfig
    ingest: IngestResult
    data: DataProfile
    plan: PlanResult
    parts: list[PartResult]


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def _arrays(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
        return {name: loaded[name] for name in loaded.files}


def _shard_key(plan_uri: str, index: int, suffix: str) -> str:
    return str(S3Uri.parse(plan_uri).child(f"shard-{index:05d}.{suffix}"))


def _manifest(uri: S3Uri, store: ObjectStore) -> list[ShardItem]:
    items = json.loads(store.read_bytes(str(uri)))
    return sorted((ShardItem.model_validate(item) for item in items), key=lambda item: item.index)


def _downloaded(items: list[ShardItem], store: ObjectStore, work: Path) -> Iterator[Path]:
    """Each shard on local disk in turn (one at a time: the next replaces it)."""
    path = work / "shard.csv"
    for item in items:
        store.download_stream(item.uri, path)
        yield path
    path.unlink(missing_ok=True)


def plan_split_stage(
    config: RunConfig,
    ingest: IngestResult,
    profile: DataProfile,
    store: ObjectStore,
    settings: ShardSettings,
    limits: Limits,
    memory_mb: int,
) -> PlanResult:
    """The PlanSplit state: the plan of every shard and the split's orders, under the dataset's shards/ prefix.

    The manifest is SplitDataset's, found where it writes it (named by the dataset's bytes and the shard size:
    UseModelIdentity rebuilds the state without ``$.shards``); none (SplitDataset left the file whole): the
    single Preprocess reads the file. ``memory_mb`` is the function's MemorySize: more data rows than it holds
    are refused before any is read (:func:`~pipeline_core.stages.data_path.check_sharded_rows`)."""
    manifest = shard_prefix(ingest, settings.shard_bytes).child("manifest.json")
    if not store.exists(str(manifest)):
        return PlanResult(whole_file="SplitDataset did not cut the dataset into shards")
    check_sharded_rows(profile.n_rows, memory_mb)
    items = _manifest(manifest, store)
    prefix = shard_prefix(ingest, settings.shard_bytes).child("prep", config.run_id)
    with tempfile.TemporaryDirectory(prefix="plan-") as work:
        try:
            plan = plan_split(_downloaded(items, store, Path(work)), profile, config, limits.chunk_bytes)
        except ChunkError as reason:
            return PlanResult(whole_file=str(reason))
    regression = plan.targets.codes is None
    for item, (rows, codes) in zip(items, plan.shard_rows(), strict=True):
        arrays = {"rows": rows} if regression or codes is None else {"rows": rows, "codes": codes}
        store.write_bytes(_shard_key(str(prefix), item.index, "plan.npz"), _npz(arrays))
    split = plan.split
    store.write_bytes(str(prefix.child("split.npz")), _npz({name: getattr(split, name) for name in SPLITS}))
    document = {
        "names": plan.targets.names,
        "dropped": plan.targets.dropped,
        "stratified": split.stratified,
        "reason": split.reason,
    }
    store.write_bytes(str(prefix.child("plan.json")), json.dumps(document).encode(), "application/json")
    return PlanResult(
        count=len(items),
        bucket=manifest.bucket,
        key=manifest.key,
        max_concurrency=settings.max_concurrency,
        uri=str(prefix),
    )


def _plan_uri(plan: PlanResult) -> str:
    if plan.uri is None:
        raise ValueError("no plan: PlanSplit left the file to the single Preprocess")
    return plan.uri


def preprocess_shard_stage(
    profile: DataProfile, plan: PlanResult, shard: ShardItem, store: ObjectStore, limits: Limits
) -> PartResult:
    """The PreprocessShard state: pass 2 over one shard; its part (lines, arrays, counts) next to the plan."""
    plan_uri = _plan_uri(plan)
    names = json.loads(store.read_bytes(str(S3Uri.parse(plan_uri).child("plan.json"))))["names"]
    arrays = _arrays(store.read_bytes(_shard_key(plan_uri, shard.index, "plan.npz")))
    with tempfile.TemporaryDirectory(prefix="prep-shard-") as work:
        path = Path(work) / "shard.csv"
        store.download_stream(shard.uri, path)
        part = preprocess_shard(
            path, arrays["rows"], arrays.get("codes"), names, profile, Path(work), limits.chunk_bytes
        )
        with part.lines.open("rb") as lines:
            store.write_stream(_shard_key(plan_uri, shard.index, "part.csv"), lines, "text/csv")
    numeric = list(part.numeric)
    values = {f"n{i}": part.numeric[name] for i, name in enumerate(numeric)}
    store.write_bytes(
        _shard_key(plan_uri, shard.index, "part.npz"), _npz({"starts": part.starts, "hashes": part.hashes, **values})
    )
    document = {"header": part.header.decode("utf-8"), "counts": part.counts, "numeric": numeric}
    store.write_bytes(_shard_key(plan_uri, shard.index, "part.json"), json.dumps(document).encode(), "application/json")
    return PartResult(index=shard.index, uri=plan_uri)


def _parts(results: list[PartResult], store: ObjectStore, work: Path) -> Iterator[ShardPart]:
    """The shards' parts in shard order, each downloaded when :func:`gather` asks for it."""
    for result in sorted(results, key=lambda r: r.index):
        lines = work / f"part-{result.index:05d}.csv"
        store.download_stream(_shard_key(result.uri, result.index, "part.csv"), lines)
        arrays = _arrays(store.read_bytes(_shard_key(result.uri, result.index, "part.npz")))
        document = json.loads(store.read_bytes(_shard_key(result.uri, result.index, "part.json")))
        numeric = {name: arrays[f"n{i}"] for i, name in enumerate(document["numeric"])}
        header = document["header"].encode("utf-8")
        yield ShardPart(lines, arrays["starts"], arrays["hashes"], header, document["counts"], numeric)


def write_splits_stage(
    config: RunConfig,
    ingest: IngestResult,
    profile: DataProfile,
    plan: PlanResult,
    parts: list[PartResult],
    store: ObjectStore,
) -> PreprocessResult:
    """The WriteSplits state: the split files, columns.json and baseline.json the single Preprocess writes,
    and the same result (``$.prep``)."""
    prefix = S3Uri.parse(_plan_uri(plan))
    document = json.loads(store.read_bytes(str(prefix.child("plan.json"))))
    orders = _arrays(store.read_bytes(str(prefix.child("split.npz"))))
    split = Split(
        **{name: orders[name] for name in SPLITS}, stratified=document["stratified"], reason=document["reason"]
    )
    with tempfile.TemporaryDirectory(prefix="write-splits-") as work:
        streamed = gather(
            _parts(parts, store, Path(work)), split, document["dropped"], profile, Path(work), ingest.sha256
        )
        return publish(streamed, config, profile, store)
