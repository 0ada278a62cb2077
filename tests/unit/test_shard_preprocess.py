"""Preprocess on shards: PlanSplit, a PreprocessShard per shard and WriteSplits give the single streaming
Preprocess's split files, baseline, dropped and duplicate counts, byte for byte, and PlanSplit's memory stays a
few bytes a row."""

from __future__ import annotations

import io
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.errors import DatasetTooLargeError
from pipeline_core.models import DataProfile, RunConfig
from pipeline_core.stages.data_validation import Limits, load_table, profile_table, validate_data
from pipeline_core.stages.preprocess import preprocess
from pipeline_core.stages.preprocess_stream import Streamed, stream_preprocess
from pipeline_core.stages.shard_preprocess import (
    ShardPart,
    gather,
    plan_split,
    plan_split_stage,
    preprocess_shard,
    preprocess_shard_stage,
    write_splits_stage,
)
from pipeline_core.stages.shards import ShardItem, ShardSettings, shard_prefix, split_csv, split_dataset

from tests.unit.test_data_validation import aws, run_ingest
from tests.unit.test_preprocess_stream import SHA, assert_same, config_for, mixed_frame

__all__ = ["aws"]  # the module-scoped moto account, used here by name


def _shards(data: bytes, shard_bytes: int, work: Path) -> list[Path]:
    work.mkdir()
    paths = []
    for path in split_csv(io.BytesIO(data), shard_bytes, work, block_bytes=4096):
        kept = path.with_name(f"kept-{path.name}")
        path.rename(kept)
        paths.append(kept)
    return paths


def sharded(
    tmp_path: Path, data: bytes, config: RunConfig, shard_bytes: int, block_bytes: int = 2048
) -> tuple[Streamed, Streamed, DataProfile, int]:
    """The single streaming Preprocess of ``data`` and the sharded one over its shards; and the shard count."""
    profile = profile_table(load_table(data, "csv", Limits()), config)
    source = tmp_path / "data.csv"
    source.write_bytes(data)
    (tmp_path / "single").mkdir()
    single = stream_preprocess(source, tmp_path / "single", profile, config, SHA, block_bytes=block_bytes)

    shards = _shards(data, shard_bytes, tmp_path / "shards")
    plan = plan_split(iter(shards), profile, config, block_bytes)
    parts: list[ShardPart] = []
    for index, (path, (rows, codes)) in enumerate(zip(shards, plan.shard_rows(), strict=True)):
        work = tmp_path / f"part-{index}"
        work.mkdir()
        parts.append(preprocess_shard(path, rows, codes, plan.targets.names, profile, work, block_bytes))
    (tmp_path / "gather").mkdir()
    gathered = gather(parts, plan.split, plan.targets.dropped, profile, tmp_path / "gather", SHA)
    return single, gathered, profile, len(shards)


def test_mixed_classification_with_quoted_line_breaks_and_empty_targets(tmp_path: Path) -> None:
    data = mixed_frame(900).to_csv(index=False).encode()  # "two\nlines" values, a few empty targets

    single, gathered, _, count = sharded(tmp_path, data, config_for(target="label", seed=5), 9000)

    assert count >= 5
    assert single.dropped["empty target"] > 0
    assert_same(single, gathered)


@pytest.mark.parametrize("choice", ["drop", "merge"])
def test_rare_classes_dropped_or_merged_across_shards(tmp_path: Path, choice: str) -> None:
    # the rare classes sit in different shards: only the union of the shards' targets shows they are rare
    labels = ["r1"] + ["a"] * 200 + ["r2"] + ["b"] * 160 + ["r2"]
    frame = pd.DataFrame({"x": np.arange(len(labels)) * 0.5, "k": np.arange(len(labels)) % 3, "label": labels})
    data = frame.to_csv(index=False).encode()

    single, gathered, _, count = sharded(tmp_path, data, config_for(target="label", rare_classes=choice), 1500)

    assert count >= 3
    if choice == "drop":
        assert gathered.dropped == {"rare class (dropped)": 3}
    else:
        assert b"(other)" in b"".join(gathered.files[name].read_bytes() for name in gathered.files)
    assert_same(single, gathered)


def test_numeric_labels_are_decided_on_every_shards_values(tmp_path: Path) -> None:
    # whole numbers in the first shards, a 2.5 only in the last: every label is "1.0", as on the whole column
    labels = [1.0, 2.0, 3.0] * 100 + [2.5] * 40
    frame = pd.DataFrame({"x": np.arange(len(labels)) % 7, "y": np.arange(len(labels)) % 5, "label": labels})
    data = frame.to_csv(index=False).encode()

    single, gathered, _, count = sharded(tmp_path, data, config_for(target="label", problem_type="classification"), 800)

    assert count >= 4
    assert b"\n1.0\n" in b"\n" + gathered.files["train"].read_bytes().replace(b",", b"\n")
    assert_same(single, gathered)


def test_regression_with_duplicates_is_byte_identical(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=600), "g": rng.choice(["p", "q"], 600), "y": rng.normal(size=600)})
    frame.loc[[3, 50, 599], "y"] = np.nan
    frame = pd.concat([frame, frame.iloc[:40], frame.iloc[500:520]], ignore_index=True)  # duplicates across shards

    single, gathered, _, count = sharded(tmp_path, frame.to_csv(index=False).encode(), config_for(target="y"), 6000)

    assert count >= 4
    assert single.duplicate_rows > 0
    assert gathered.split.reason == "plain: regression target"
    assert_same(single, gathered)


def test_one_shard_is_the_single_path(tmp_path: Path) -> None:
    data = mixed_frame(200).to_csv(index=False).encode()

    single, gathered, _, count = sharded(tmp_path, data, config_for(target="label"), 1 << 22)

    assert count == 1
    assert_same(single, gathered)


def test_plan_split_memory_is_a_few_bytes_a_row(tmp_path: Path) -> None:
    rows = 200_000
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.integers(0, 9, rows), "label": rng.choice(["a", "b", "c"], rows)})
    data = frame.to_csv(index=False).encode()
    profile = profile_table(load_table(data, "csv", Limits()), config_for(target="label"))
    shards = _shards(data, 256 * 1024, tmp_path / "shards")

    tracemalloc.start()
    plan = plan_split(iter(shards), profile, config_for(target="label"), 64 * 1024)
    for _ in plan.shard_rows():
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert len(plan.targets.keep) == rows
    # keep mask, class codes, the split's permutations (int64): 10M rows stay well under 1 GB
    assert peak / rows < 40, f"{peak / rows:.1f} bytes a row"  # measured 30.8: 10M rows ~310 MB


def _gather_peak(work: Path, rows: int) -> int:
    """WriteSplits' gather over ``rows`` rows cut in 256 KiB shards: its peak of Python allocations."""
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"x": rng.normal(size=rows).round(3), "label": rng.choice(["a", "b", "c"], rows)})
    data = frame.to_csv(index=False).encode()
    config = config_for(target="label")
    profile = profile_table(load_table(data, "csv", Limits()), config)
    shards = _shards(data, 256 * 1024, work / "shards")
    plan = plan_split(iter(shards), profile, config, 64 * 1024)
    parts = []
    for index, (path, (kept, codes)) in enumerate(zip(shards, plan.shard_rows(), strict=True)):
        (work / f"part-{index}").mkdir()
        parts.append(preprocess_shard(path, kept, codes, plan.targets.names, profile, work / f"part-{index}"))

    def loaded() -> Iterator[ShardPart]:  # as WriteSplits reads them: one part at a time, its arrays new
        for part in parts:
            numeric = {name: values.copy() for name, values in part.numeric.items()}
            yield ShardPart(part.lines, part.starts.copy(), part.hashes.copy(), part.header, part.counts, numeric)

    (work / "gather").mkdir()
    tracemalloc.start()
    gathered = gather(loaded(), plan.split, plan.targets.dropped, profile, work / "gather", SHA)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert gathered.duplicate_rows == len(frame) - len(frame.drop_duplicates())
    return peak


def test_write_splits_memory_grows_by_a_few_bytes_a_row(tmp_path: Path) -> None:
    # the growth from 100k to 250k rows: what a part and a block of the split files' writes hold (65,536 rows,
    # fewer than either size's 70% train rows) is the same in both
    (tmp_path / "small").mkdir()
    (tmp_path / "large").mkdir()
    small, large = _gather_peak(tmp_path / "small", 100_000), _gather_peak(tmp_path / "large", 250_000)
    per_row = (large - small) / 150_000
    # WriteSplits peaked at 1,080 MB on 10M rows: each part's line starts and hashes kept in lists beside their
    # concatenations, np.unique's sorted copy and result: 34.7 bytes a row here. Now the int64 starts and the
    # uint64 hashes, sorted in place and dropped before the splits are written: 10.4 (the split's orders, 8 more,
    # are read before this).
    assert per_row < 24, f"{per_row:.1f} bytes a row"


def test_the_three_states_on_s3_write_what_preprocess_writes(aws: Any) -> None:
    data = mixed_frame(700).to_csv(index=False).encode()
    config, ingested = run_ingest(aws, "data.csv", data, target="label")
    store, limits = ObjectStore(aws.s3), Limits(chunk_bytes=4096)
    profile = validate_data(config, ingested, store, limits)
    settings = ShardSettings(10_000, 3)
    split_dataset(ingested, store, settings, limits)

    plan = plan_split_stage(config, ingested, profile, store, settings, limits, memory_mb=2048)
    assert plan.count >= 3 and plan.max_concurrency == 3 and plan.whole_file is None
    items = [ShardItem.model_validate(i) for i in json.loads(store.read_bytes(f"s3://{plan.bucket}/{plan.key}"))]
    parts = [preprocess_shard_stage(profile, plan, item, store, limits) for item in reversed(items)]  # any order
    sharded = write_splits_stage(config, ingested, profile, plan, parts, store)
    alone = config.model_copy(update={"processed_prefix": config.processed_prefix.rstrip("/") + "-single/"})
    single = preprocess(alone, ingested, profile, store, limits)

    uris = ("train_uri", "validation_uri", "test_uri", "baseline_uri")
    assert sharded.model_dump(exclude=set(uris)) == single.model_dump(exclude=set(uris))
    for name in ("train", "validation", "test"):
        for file in (f"{name}.csv", "columns.json"):
            ours, theirs = f"{getattr(sharded, f'{name}_uri')}{file}", f"{getattr(single, f'{name}_uri')}{file}"
            assert store.read_bytes(ours) == store.read_bytes(theirs), file
    assert store.read_bytes(sharded.baseline_uri) == store.read_bytes(single.baseline_uri)


def test_without_a_manifest_plan_split_leaves_the_file_to_preprocess(aws: Any) -> None:
    data = mixed_frame(100).to_csv(index=False).encode()
    config, ingested = run_ingest(aws, "data.csv", data, target="label")
    store = ObjectStore(aws.s3)
    profile = validate_data(config, ingested, store, Limits())

    plan = plan_split_stage(config, ingested, profile, store, ShardSettings(12_345, 2), Limits(), memory_mb=2048)

    assert plan.count == 0 and plan.uri is None and plan.whole_file


def test_plan_split_refuses_more_rows_than_its_memory_holds_before_reading_them(aws: Any) -> None:
    # Ingest routes by bytes; a file of short rows can hold more rows than PlanSplit and WriteSplits (~40 bytes a
    # row) hold in DataStageMemorySize. PlanSplit knows the row count from the profile: it refuses before it
    # reads a shard, naming the rows, the memory and the setting, instead of running out of memory on AWS.
    data = mixed_frame(30_000).to_csv(index=False).encode()
    config, ingested = run_ingest(aws, "rows.csv", data, target="label")
    store, limits = ObjectStore(aws.s3), Limits(chunk_bytes=65_536)
    profile = validate_data(config, ingested, store, limits)
    settings = ShardSettings(200_000, 2)
    split_dataset(ingested, store, settings, limits)

    with pytest.raises(DatasetTooLargeError) as refused:
        plan_split_stage(config, ingested, profile, store, settings, limits, memory_mb=1)  # holds ~26,000 rows

    message = str(refused.value)
    assert "30,000 data rows" in message and "DataStageMemorySize" in message and "1 MB" in message
    assert "at least 2 MB" in message  # 30,000 rows x 40 bytes, rounded up to whole MB
    assert store.list_uris(str(shard_prefix(ingested, settings.shard_bytes).child("prep", config.run_id))) == []
    plan = plan_split_stage(config, ingested, profile, store, settings, limits, memory_mb=2)
    assert plan.count >= 2
