"""benchmarks/scale.py's and scale_data.py's pure parts: the generated data (deterministic, its shape and size,
learnable), the row counts parsed, the report's maths (medians, ratios with failed runs, REPORT lines), and the
memory guard before the plain script."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.csv as pa_csv
import pytest

from benchmarks import scale
from benchmarks.scale import parse_reports, ratio, spread, stage_throughput, summarise
from benchmarks.scale_data import BYTES_PER_ROW, generate_csv, label_rows, parse_rows


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_generated_file_is_the_same_for_the_same_seed_and_differs_for_another(tmp_path: Path) -> None:
    first, again, other = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    generate_csv(first, 2_500, seed=7, chunk_rows=1_000)
    generate_csv(again, 2_500, seed=7, chunk_rows=1_000)
    generate_csv(other, 2_500, seed=8, chunk_rows=1_000)
    assert _sha(first) == _sha(again)
    assert _sha(first) != _sha(other)


def test_the_generated_file_has_the_issues_shape_and_row_size(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    size = generate_csv(path, 5_000, seed=7, chunk_rows=2_000)  # 3 chunks, the last one short
    table = pa_csv.read_csv(path)
    assert table.num_rows == 5_000
    columns = table.column_names
    assert columns[-1] == "label"
    numeric = [c for c in columns if str(table.schema.field(c).type) == "double"]
    text = [c for c in columns if str(table.schema.field(c).type) == "string"]
    assert (len(numeric), len(text), len(columns)) == (20, 3, 24)
    assert set(table.column("label").to_pylist()) == {0, 1}
    assert size == path.stat().st_size
    assert abs(size / 5_000 - BYTES_PER_ROW) < 10  # ~160 bytes a row, as the issue's files
    assert b'"' not in path.read_bytes()[:2000]  # no quoting: a plain CSV any reader takes


def test_the_label_is_learnable_from_the_features(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    generate_csv(path, 4_000, seed=3)
    frame = pa_csv.read_csv(path).to_pandas()
    x = frame[[f"x{i:02d}" for i in range(20)]].to_numpy()
    cat = (frame["cat0"].str[-2:].astype(int) - 2).to_numpy()
    features = np.column_stack([x, cat, np.ones(len(frame))])
    weights, *_ = np.linalg.lstsq(features[:3_000], frame["label"].to_numpy()[:3_000] * 2.0 - 1, rcond=None)
    accuracy = ((features[3_000:] @ weights > 0) == frame["label"].to_numpy()[3_000:]).mean()
    assert 0.75 < accuracy < 0.99  # learnable, not trivial


def test_row_counts_parse_and_print_as_the_issue_writes_them() -> None:
    assert parse_rows("10k, 100k,1M,10M,30M") == [10_000, 100_000, 1_000_000, 10_000_000, 30_000_000]
    assert parse_rows("2500,1.5k") == [2_500, 1_500]
    assert [label_rows(n) for n in (10_000, 1_000_000, 2_500, 1_500)] == ["10k", "1M", "2500", "1500"]
    with pytest.raises(Exception, match="'ten' is not a row count"):
        parse_rows("ten")


def test_spread_and_ratio_leave_failed_runs_out() -> None:
    assert spread([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0}
    assert spread([None, 4.0]) == {"median": 4.0, "min": 4.0, "max": 4.0}
    assert spread([None]) is None
    assert ratio(9.0, 3.0) == 3.0
    assert ratio(None, 3.0) is None
    assert ratio(1.0, 0.0) is None


def test_report_lines_are_read_in_both_log_formats() -> None:
    text = (
        '{"time": "t", "type": "platform.start", "record": {}}\n'
        '{"time": "t", "type": "platform.report", "record": {"requestId": "r", "metrics": {"durationMs": 2293.418, '
        '"billedDurationMs": 2294, "memorySizeMB": 2048, "maxMemoryUsedMB": 193}, "status": "success"}}\n'
        "some handler output\n"
        "REPORT RequestId: r2\tDuration: 10.50 ms\tBilled Duration: 11 ms\tMemory Size: 512 MB\t"
        "Max Memory Used: 77 MB\t\n"
    )
    assert parse_reports(text) == [
        {"duration_ms": 2293.418, "max_memory_mb": 193.0},
        {"duration_ms": 10.5, "max_memory_mb": 77.0},
    ]


def _stepml(wall: float, error: str | None = None) -> dict[str, object]:
    stages = {
        "ValidateData": {"max_memory_mb": 200.0, "seconds": 1.0},
        "Preprocess": {"max_memory_mb": 300.0, "seconds": 3.0},
    }
    return {"wall": wall, "error": error, "pss_peak_mib": 900.0, "pss_peak_by_role_mib": {}, "stages": stages}


def test_the_summary_pairs_runs_and_counts_failures_apart() -> None:
    size = {
        "csv_bytes": 8_000_000,
        "runs": [
            {
                "stepml": _stepml(30.0),
                "plain": {"wall": 10.0, "error": None, "rss_peak_mib": 300.0},
                "parse": {"mb_per_s": 100.0},
            },
            {
                "stepml": _stepml(20.0),
                "plain": {"wall": 5.0, "error": None, "rss_peak_mib": 310.0},
                "parse": {"mb_per_s": 80.0},
            },
            {
                "stepml": _stepml(99.0, "exit status 1: MemoryError"),
                "plain": {"wall": 8.0, "error": None, "rss_peak_mib": 305.0},
                "parse": {"mb_per_s": 90.0},
            },
        ],
    }
    summary = summarise(size)
    assert summary["stepml_wall"] == {"median": 25.0, "min": 20.0, "max": 30.0}
    assert summary["plain_wall"] == {"median": 8.0, "min": 5.0, "max": 10.0}
    assert summary["ratio"] == {"median": 3.5, "min": 3.0, "max": 4.0}  # 30/10 and 20/5; the failed pair left out
    assert summary["stepml_failures"] == ["exit status 1: MemoryError"]
    assert summary["stage_peaks_mb"]["Preprocess"] == {"median": 300.0, "min": 300.0, "max": 300.0}
    assert summary["stages_mb_per_s"]["median"] == 2.0  # 8 MB over 1 + 3 s
    assert summary["stages_per_parse"] == 2.0 / 90.0


def test_throughput_needs_both_stages() -> None:
    assert stage_throughput(1_000_000, {"ValidateData": {"seconds": 1.0}}) is None


def test_the_plain_script_is_not_started_when_the_memory_it_needs_is_not_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data.csv"
    generate_csv(data, 1_000, seed=1)
    monkeypatch.setattr(scale, "memory_available", lambda: 1_000)
    monkeypatch.setattr(scale.subprocess, "Popen", None)  # a start would fail loudly
    figures = scale.run_plain(data, tmp_path, timeout=10)
    assert figures["wall"] is None
    assert figures["error"].startswith("not run: it would need ~0.0 GB of memory, 0.0 GB are available")
