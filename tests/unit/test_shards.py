"""Sharded validation: the CSV cut at row boundaries (each shard with the header, in bounded memory), and the
shards' states merged into exactly the profile and messages of the single-Lambda path."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from pipeline_core.aws.s3 import ObjectStore, S3Uri
from pipeline_core.errors import ConfigurationError, DatasetTooLargeError, DataValidationError
from pipeline_core.models import IngestResult, RunConfig
from pipeline_core.stages.csv_chunks import ChunkError
from pipeline_core.stages.data_path import DataPathSettings, choose_path
from pipeline_core.stages.data_validation import Limits, validate_data
from pipeline_core.stages.shards import (
    ShardItem,
    ShardSettings,
    merge_states,
    shard_state,
    split_csv,
    split_dataset,
    validate_shard,
)
from pipeline_core.stages.validate_input import build_run_config
from pipeline_core.stages.validate_stream import accumulate, read_header

from tests.unit.test_data_validation import run_ingest
from tests.unit.test_validate_stream import _tricky


def _split(data: bytes, shard_bytes: int, work: Path, **options: Any) -> list[bytes]:
    shards = []
    for path in split_csv(io.BytesIO(data), shard_bytes, work, **options):
        shards.append(path.read_bytes())
        path.unlink()  # as SplitDataset does: one shard on disk at a time
    return shards


def _rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), strict=True))


def _config(**given: Any) -> RunConfig:
    return build_run_config({"dataset": "s3://b/d.csv", **given}, "run", "b", "stepml-test")


def test_shards_are_whole_rows_each_with_the_header_and_together_the_file(tmp_path: Path) -> None:
    data = _tricky(3000).to_csv(index=False).encode()  # quoted fields with commas, quotes and line breaks
    header = data.split(b"\n", 1)[0] + b"\n"

    shards = _split(data, 20_000, tmp_path, block_bytes=4096)

    assert len(shards) == pytest.approx(len(data) / 20_000, abs=1)
    assert all(shard.startswith(header) for shard in shards)
    assert b"".join(shard[len(header) :] for shard in shards) == data[len(header) :]
    rows = [_rows(shard) for shard in shards]
    assert all(part[0] == rows[0][0] for part in rows)  # every shard parses on its own: no row is cut
    assert [row for part in rows for row in part[1:]] == _rows(data)[1:]
    assert all(len(shard) <= 20_000 + len(header) for shard in shards)


def test_a_row_longer_than_a_shard_is_a_shard_of_its_own(tmp_path: Path) -> None:
    long_value = "x" * 5000
    data = f'a,b\n1,2\n3,"{long_value}\n{long_value}"\n5,6\n'.encode()

    shards = _split(data, 100, tmp_path, block_bytes=64)

    assert shards == [b"a,b\n1,2\n", f'a,b\n3,"{long_value}\n{long_value}"\n'.encode(), b"a,b\n5,6\n"]


def test_a_file_without_a_plain_header_or_rows_is_not_cut(tmp_path: Path) -> None:
    with pytest.raises(ChunkError, match="header"):
        _split(b'"a,b",c\n1,2\n', 100, tmp_path)
    with pytest.raises(ChunkError, match="header"):
        _split(b"", 100, tmp_path)
    assert _split(b"a,b\n", 100, tmp_path) == []
    with pytest.raises(ChunkError, match="no row ends"):  # a row over the line limit: the whole file answers
        _split(b"a,b\n" + b"1" * 10_000 + b",2\n", 100, tmp_path, block_bytes=64, longest=1000)


def test_splitting_holds_a_block_not_the_file(tmp_path: Path) -> None:
    row = b"0.123,4.567,category_a,1\n"
    data = b"x,y,c,label\n" + row * (4 * (8 * 1024 * 1024 // len(row)))  # 4 shards of 8 MiB: 32 MiB
    source = tmp_path / "big.csv"
    source.write_bytes(data)
    work = tmp_path / "shards"
    work.mkdir()

    tracemalloc.start()
    with source.open("rb") as handle:
        count = 0
        for path in split_csv(handle, 8 * 1024 * 1024, work, block_bytes=1024 * 1024):
            count += 1
            path.unlink()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert count == 4
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a 32 MiB file"


def test_the_shards_states_merge_into_the_whole_files_state_and_profile(tmp_path: Path) -> None:
    data = _tricky(3000).to_csv(index=False).encode()
    whole = tmp_path / "whole.csv"
    whole.write_bytes(data)
    limits = Limits(chunk_bytes=4096)
    config = _config(target="y")
    paths = []
    (tmp_path / "work").mkdir()
    for number, shard in enumerate(_split(data, 30_000, tmp_path / "work")):
        paths.append(tmp_path / f"shard-{number}.csv")
        paths[-1].write_bytes(shard)

    merged = merge_states(shard_state(path, config, limits) for path in paths)

    assert len(paths) >= 4
    one_pass = accumulate(whole, read_header(whole, limits), "y", limits)
    assert json.loads(merged.to_json()) == json.loads(one_pass.to_json())
    with pytest.raises(ValueError, match="no shard states"):
        merge_states([])


def _sharded_and_single(aws: Any, data: bytes, shard_bytes: int, **given: Any) -> tuple[str, str]:
    """ValidateData's outcome (profile or message) on the sharded path and on the single-Lambda path."""
    config, ingested = run_ingest(aws, "data.csv", data, **given)
    store, limits = ObjectStore(aws.s3), Limits(chunk_bytes=4096)
    split = split_dataset(ingested, store, ShardSettings(shard_bytes, 4), limits)
    outcomes = []
    for shards in ("sharded", None):
        try:
            if shards:
                manifest = json.loads(store.read_bytes(f"s3://{split.bucket}/{split.key}"))
                items = [ShardItem.model_validate(item) for item in reversed(manifest)]  # any order: sorted
                results = [validate_shard(config, item, store, limits) for item in items]
                profile = validate_data(config, ingested, store, limits, shards=results)
            else:
                profile = validate_data(config, ingested, store, limits)
            outcomes.append(profile.model_dump_json())
        except DataValidationError as error:
            outcomes.append(f"error: {error}")
    return outcomes[0], outcomes[1]


def test_the_sharded_path_gives_the_single_paths_profile(aws: Any) -> None:
    sharded, single = _sharded_and_single(aws, _tricky(3000).to_csv(index=False).encode(), 40_000)

    assert not single.startswith("error") and sharded == single


def test_the_sharded_path_gives_the_single_paths_message_with_its_line(aws: Any) -> None:
    frame = _tricky(3000)
    frame["x"] = frame["x"].astype(object)
    frame.loc[2500, "x"] = "not a number"  # a numeric column's bad value, in the last shards: row and line
    sharded, single = _sharded_and_single(aws, frame.to_csv(index=False).encode(), 40_000, target="y")

    assert "not a number" in single and "row 2501 (line" in single
    assert sharded == single


def test_merging_the_shards_of_a_file_over_the_single_paths_cap_reads_no_file(aws: Any) -> None:
    # MAX_DATASET_BYTES is what one Lambda reading the file can hold (LargeDatasetThresholdBytes); the merge reads
    # only the shards' states, so a file over it, which Ingest sent to the sharded path, must not be refused there.
    data = _tricky(3000).to_csv(index=False).encode()
    config, ingested = run_ingest(aws, "data.csv", data)
    store, limits = ObjectStore(aws.s3), Limits(max_dataset_bytes=len(data) // 2, chunk_bytes=4096)
    split = split_dataset(ingested, store, ShardSettings(40_000, 4), limits)
    manifest = json.loads(store.read_bytes(f"s3://{split.bucket}/{split.key}"))
    results = [validate_shard(config, ShardItem.model_validate(item), store, limits) for item in manifest]

    profile = validate_data(config, ingested, store, limits, shards=results)

    assert profile.n_rows == 3000
    with pytest.raises(DataValidationError, match="MAX_DATASET_BYTES"):  # the single path still refuses it
        validate_data(config, ingested, store, limits)


def test_a_shard_without_the_target_leaves_the_message_to_the_single_path(aws: Any) -> None:
    sharded, single = _sharded_and_single(aws, _tricky(600).to_csv(index=False).encode(), 20_000, target="absent")

    assert single.startswith("error") and "absent" in single
    assert sharded == single


def test_the_split_is_stored_as_shards_and_a_manifest_in_file_order(aws: Any) -> None:
    data = _tricky(2000).to_csv(index=False).encode()
    _, ingested = run_ingest(aws, "data.csv", data)
    store = ObjectStore(aws.s3)

    split = split_dataset(ingested, store, ShardSettings(50_000, 3), Limits())

    manifest = json.loads(store.read_bytes(f"s3://{split.bucket}/{split.key}"))
    assert (split.count, split.max_concurrency, split.whole_file) == (len(manifest), 3, None)
    assert [item["index"] for item in manifest] == list(range(split.count))
    assert all(S3Uri.parse(item["uri"]).key.startswith(f"shards/{ingested.sha256}/50000/") for item in manifest)
    header = data.split(b"\n", 1)[0] + b"\n"
    bodies = [store.read_bytes(item["uri"]) for item in manifest]
    assert b"".join(body[len(header) :] for body in bodies) == data[len(header) :]


def test_a_file_the_splitter_cannot_cut_goes_to_the_single_path(aws: Any) -> None:
    _, ingested = run_ingest(aws, "data.csv", b'"a,b",c\n1,2\n3,4\n')

    split = split_dataset(ingested, ObjectStore(aws.s3), ShardSettings(4, 2), Limits())

    assert split.count == 0 and split.whole_file is not None and split.key is None


def test_shard_settings_come_from_the_environment() -> None:
    env = {"SHARD_SIZE_BYTES": "1000", "SHARD_MAX_CONCURRENCY": "8"}
    assert ShardSettings.from_env(env) == ShardSettings(1000, 8)
    with pytest.raises(ConfigurationError, match="SHARD_SIZE_BYTES must be a positive whole number, got '1MB'"):
        ShardSettings.from_env({**env, "SHARD_SIZE_BYTES": "1MB"})


def test_a_csv_over_the_shard_threshold_takes_the_sharded_path() -> None:
    env = {
        "LARGE_DATASET_THRESHOLD_BYTES": "1000000",
        "DATA_STAGE_MEMORY_MB": "2048",
        "DATA_STAGE_MEMORY_FACTOR": "9.5",
    }
    unsharded = DataPathSettings.from_env(env)
    settings = DataPathSettings.from_env({**env, "SHARD_THRESHOLD_BYTES": "1000"})

    assert unsharded.shard_threshold_bytes is None and choose_path(5000, unsharded)[0] == "single"
    assert choose_path(1000, settings)[0] == "single"
    path, reason = choose_path(5000, settings)
    assert path == "sharded" and "over ShardThresholdBytes (1000 bytes)" in reason
    assert choose_path(5000, settings, "parquet")[0] == "single"  # only a CSV is cut
    with pytest.raises(ConfigurationError, match="SHARD_THRESHOLD_BYTES"):
        DataPathSettings.from_env({**env, "SHARD_THRESHOLD_BYTES": "0"})


def test_ingest_says_which_path_a_large_csv_takes(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    env = aws.env
    monkeypatch.setattr(aws, "env", lambda: {**env(), "SHARD_THRESHOLD_BYTES": "1000"})
    _, ingested = run_ingest(aws, "data.csv", _tricky(200).to_csv(index=False).encode())

    assert ingested.path == "sharded" and "ShardThresholdBytes" in str(ingested.path_reason)
    assert isinstance(ingested, IngestResult)


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ({"target": "absent"}, "absent"),  # a shard's state cannot give the message
        ({"column_roles": {"x": "datetime"}}, "no format reads it"),  # nor this one
    ],
)
def test_a_file_over_the_whole_file_cap_that_the_shards_cannot_decide_says_why(
    aws: Any, given: dict[str, Any], reason: str
) -> None:
    # The sharded path leaves a few messages to the whole-file reader; over MAX_DATASET_BYTES that reader cannot
    # run, and the user must hear what the shards could not decide, not only the file's size.
    frame = _tricky(3000)
    frame["id"] = [f"row-{i}" for i in range(len(frame))]
    config, ingested = run_ingest(aws, "data.csv", frame.to_csv(index=False).encode(), **given)
    store, limits = ObjectStore(aws.s3), Limits(chunk_bytes=4096, max_dataset_bytes=50_000)
    split = split_dataset(ingested, store, ShardSettings(40_000, 4), limits)
    manifest = json.loads(store.read_bytes(f"s3://{split.bucket}/{split.key}"))
    results = [validate_shard(config, ShardItem.model_validate(item), store, limits) for item in manifest]

    with pytest.raises(DatasetTooLargeError) as refused:  # the file is not bad: not quarantined
        validate_data(config, ingested, store, limits, shards=results)

    message = str(refused.value)
    assert reason in message and "MAX_DATASET_BYTES" in message and "shard" in message
