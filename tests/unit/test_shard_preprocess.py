"""Preprocess on shards: PlanSplit, a PreprocessShard per shard and WriteSplits give the single streaming
Preprocess's split files, baseline, dropped and duplicate counts, byte for byte, and PlanSplit's memory stays a
few bytes a row."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pipeline_core.models import DataProfile, RunConfig
from pipeline_core.stages.data_validation import Limits, load_table, profile_table
from pipeline_core.stages.preprocess_stream import Streamed, stream_preprocess
from pipeline_core.stages.shard_preprocess import ShardPart, gather, plan_split, preprocess_shard
from pipeline_core.stages.shards import split_csv

from tests.unit.test_preprocess_stream import SHA, assert_same, config_for, mixed_frame


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
