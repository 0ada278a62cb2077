"""The streaming Preprocess writes the very bytes the whole-table Preprocess writes, chunk size whatever."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.models import DataProfile, IngestResult, RunConfig
from pipeline_core.stages.baseline import baseline_document, categorical_stats, categorical_stats_from_counts
from pipeline_core.stages.csv_chunks import ChunkError, iter_chunks
from pipeline_core.stages.data_validation import Limits, load_table, profile_table
from pipeline_core.stages.preprocess import SPLITS, _whole, split_coded, split_rows
from pipeline_core.stages.preprocess_stream import Streamed, stream_preprocess
from pipeline_core.stages.validate_input import build_run_config

from tests.unit.test_data_validation import aws

__all__ = ["aws"]  # the module-scoped moto account, used here by name

SHA = "0" * 64


def config_for(**given: Any) -> RunConfig:
    return build_run_config({"dataset": "s3://b/in/data.csv", **given}, "run-1", "b", "stepml-test")


def mixed_frame(rows: int = 400, seed: int = 3) -> pd.DataFrame:
    """Numbers (some missing, some with separators), text with commas, quotes and line breaks, booleans,
    dates, an id column, a 3-class target with a few empty cells."""
    rng = np.random.default_rng(seed)
    numbers = np.round(rng.normal(size=(rows, 3)), 3)
    frame = pd.DataFrame(
        {
            "row_id": np.arange(rows),
            "a": numbers[:, 0],
            "b": numbers[:, 1],
            "c": [f"{int(v * 1000) + 5000:,}" for v in numbers[:, 2]],  # "4,321": thousands separators
            "colour": rng.choice(["red", "green", 'light "blue"', "dark, grey", "two\nlines", "NA"], rows),
            "flag": rng.choice(["true", "false", ""], rows),
            "day": pd.date_range("2024-01-01", periods=rows, freq="D").strftime("%Y-%m-%d"),
            "label": rng.choice(["x", "y", "z"], rows),
        }
    )
    frame.loc[rng.random(rows) < 0.05, "a"] = np.nan
    frame.loc[rng.random(rows) < 0.03, "label"] = ""
    return frame


def both(tmp_path: Path, data: bytes, config: RunConfig, block_bytes: int) -> tuple[Streamed, Streamed, DataProfile]:
    profile = profile_table(load_table(data, "csv", Limits()), config)
    ingest = IngestResult(
        raw_uri="s3://b/raw/data.csv", source_uri="s3://b/in/data.csv", sha256=SHA, size_bytes=len(data), format="csv"
    )
    (tmp_path / "whole").mkdir()
    (tmp_path / "stream").mkdir()
    whole = _whole(data, ingest, profile, config, Limits(), tmp_path / "whole")
    source = tmp_path / "data.csv"
    source.write_bytes(data)
    streamed = stream_preprocess(source, tmp_path / "stream", profile, config, SHA, block_bytes=block_bytes)
    return whole, streamed, profile


def assert_same(whole: Streamed, streamed: Streamed) -> None:
    for name in SPLITS:
        assert streamed.files[name].read_bytes() == whole.files[name].read_bytes(), name
        assert np.array_equal(getattr(streamed.split, name), getattr(whole.split, name))
    assert streamed.split.reason == whole.split.reason
    assert streamed.dropped == whole.dropped
    assert streamed.duplicate_rows == whole.duplicate_rows
    assert baseline_document(streamed.baseline) == baseline_document(whole.baseline)


@pytest.mark.parametrize("block_bytes", [1024, 7 * 1024, 1 << 22])  # many chunks, a few, one
def test_mixed_classification_is_byte_identical_at_any_chunk_size(tmp_path: Path, block_bytes: int) -> None:
    data = mixed_frame().to_csv(index=False).encode()
    whole, streamed, profile = both(tmp_path, data, config_for(target="label", seed=5), block_bytes)

    assert {c.name: c.role for c in profile.columns}["colour"] == "categorical"
    assert streamed.dropped == {"empty target": whole.dropped["empty target"]}
    assert_same(whole, streamed)


def test_numeric_class_labels_are_decided_on_the_whole_column(tmp_path: Path) -> None:
    # whole numbers in the first rows, a 2.5 at the end: every label is written "1.0", not "1" (as whole)
    labels = [1.0, 2.0, 3.0] * 60 + [2.5] * 30
    frame = pd.DataFrame({"x": np.arange(len(labels)) % 7, "y": np.arange(len(labels)) % 5, "label": labels})
    data = frame.to_csv(index=False).encode()
    whole, streamed, _ = both(tmp_path, data, config_for(target="label", problem_type="classification"), 512)

    assert b"\n" + b"1.0\n" in b"\n" + streamed.files["train"].read_bytes().replace(b",", b"\n")
    assert_same(whole, streamed)


@pytest.mark.parametrize("choice", ["drop", "merge"])
def test_rare_classes_are_dropped_or_merged_as_the_profile_says(tmp_path: Path, choice: str) -> None:
    labels = ["a"] * 100 + ["b"] * 80 + ["r1", "r2", "r2"]
    frame = pd.DataFrame({"x": np.arange(len(labels)) * 0.5, "k": np.arange(len(labels)) % 3, "label": labels})
    data = frame.to_csv(index=False).encode()
    config = config_for(target="label", rare_classes=choice)
    whole, streamed, _ = both(tmp_path, data, config, 600)

    if choice == "drop":
        assert streamed.dropped == {"rare class (dropped)": 3}
    else:
        assert b"(other)" in streamed.files["test"].read_bytes()
    assert_same(whole, streamed)


def test_regression_and_a_plain_split_are_byte_identical(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=300), "g": rng.choice(["p", "q"], 300), "y": rng.normal(size=300)})
    frame.loc[[3, 50, 299], "y"] = np.nan
    whole, streamed, _ = both(tmp_path, frame.to_csv(index=False).encode(), config_for(target="y"), 2048)

    assert streamed.split.reason == "plain: regression target"
    assert_same(whole, streamed)


def test_split_coded_is_split_rows_on_codes() -> None:
    labels = pd.Series(["b", "a", "c", "a"] * 30 + ["b"] * 7)
    codes, names = pd.factorize(labels)
    for seed in (0, 1, 99):
        coded = split_coded(len(labels), 0.2, 0.25, seed, codes, list(names))
        plain = split_rows(len(labels), 0.2, 0.25, seed, labels)
        for name in SPLITS:
            assert np.array_equal(getattr(coded, name), getattr(plain, name))


def test_category_counts_summed_over_chunks_give_the_whole_column_stats() -> None:
    values = pd.Series(list("aabbbcdddd") * 7 + [None, "e"])
    counts: dict[str, int] = {}
    for start in range(0, len(values), 9):
        for key, n in values.iloc[start : start + 9].dropna().value_counts().items():
            counts[str(key)] = counts.get(str(key), 0) + int(n)
    assert categorical_stats_from_counts(counts, 3) == categorical_stats(values, 3)


def test_a_whitespace_only_line_is_left_to_the_whole_file_reader(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"a,b\n1,2\n   \n3,4\n")
    with pytest.raises(ChunkError):
        list(iter_chunks(path))
    assert len(load_table(path.read_bytes(), "csv", Limits()).frame) == 2  # the fallback reads it as before


def test_chunks_are_normalized_like_the_whole_table(tmp_path: Path) -> None:
    data = b'\xef\xbb\xbf id , name\n 1 ,"  a, b "\n2,n/a\n\n3,None\n'
    path = tmp_path / "data.csv"
    path.write_bytes(data)
    chunked = pd.concat(list(iter_chunks(path, block_bytes=16)), ignore_index=True)
    whole = load_table(data, "csv", Limits()).frame
    pd.testing.assert_frame_equal(chunked, whole)
    assert pd.read_csv(io.BytesIO(data)).shape[0] == 3


def test_put_file_if_changed_streams_and_replaces_different_bytes_only(aws: Any, tmp_path: Path) -> None:
    aws.s3.put_bucket_versioning(Bucket=aws.bucket, VersioningConfiguration={"Status": "Enabled"})
    store, uri = ObjectStore(aws.s3), f"s3://{aws.bucket}/processed/put-file-once/a.csv"
    first, same_size, longer = tmp_path / "1.csv", tmp_path / "2.csv", tmp_path / "3.csv"
    first.write_bytes(b"a\n1\n")
    same_size.write_bytes(b"a\n2\n")
    longer.write_bytes(b"a\n1\n3\n")
    assert store.put_file_if_changed(uri, first, "text/csv") is True
    assert store.put_file_if_changed(uri, first, "text/csv") is False
    assert store.put_file_if_changed(uri, same_size, "text/csv") is True
    assert store.read_bytes(uri) == b"a\n2\n"
    assert store.put_file_if_changed(uri, longer, "text/csv") is True
    assert store.read_bytes(uri) == b"a\n1\n3\n"
    versions = aws.s3.list_object_versions(Bucket=aws.bucket, Prefix="processed/put-file-once/")["Versions"]
    assert len(versions) == 3


def test_preprocess_falls_back_to_the_whole_table_when_pyarrow_refuses_the_file(aws: Any, tmp_path: Path) -> None:
    from tests.unit.test_data_validation import iris_frame
    from tests.unit.test_preprocess import run, splits

    lines = iris_frame().to_csv(index=False).splitlines()
    data = ("\n".join([*lines[:50], "   ", *lines[50:]]) + "\n").encode()  # a whitespace-only line
    (tmp_path / "data.csv").write_bytes(data)
    with pytest.raises(ChunkError):
        list(iter_chunks(tmp_path / "data.csv"))
    _, _, _, result = run(aws, "iris-blank-line.csv", data, seed=3)

    assert result.n_train + result.n_validation + result.n_test == 150
    assert sum(len(part) for part in splits(aws, result).values()) == 150


def test_pieces_end_where_a_csv_reader_ends_a_row(tmp_path: Path) -> None:
    # a literal quote inside unquoted fields (5'10") and quoted fields with line breaks and "" in one file:
    # counting quotes would cut inside the quoted fields after the first literal one
    rows = ["0,5'10\",first"] + [f'{i},x,"two\nlines, ""quoted"" {i}"' for i in range(1, 60)]
    data = ("id,height,note\n" + "\n".join(rows) + "\n").encode()
    path = tmp_path / "data.csv"
    path.write_bytes(data)
    whole = load_table(data, "csv", Limits()).frame
    for block in (20, 64, 300):
        chunked = pd.concat(list(iter_chunks(path, block_bytes=block)), ignore_index=True)
        pd.testing.assert_frame_equal(chunked, whole)
