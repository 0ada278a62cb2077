"""write_in_order writes each split's lines in its order, whatever the window (one bucket or many)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pipeline_core.stages.split_copy import write_in_order


@pytest.mark.parametrize("window", [1, 7, 100, 1 << 20])
def test_splits_hold_their_lines_in_order(tmp_path: Path, window: int) -> None:
    rng = np.random.default_rng(5)
    lines = [f"{i},{'x' * int(rng.integers(0, 30))}\n".encode() for i in range(500)]
    spool = tmp_path / "rows.csv"
    spool.write_bytes(b"".join(lines))
    starts = np.concatenate(([0], np.cumsum([len(line) for line in lines]))).astype(np.int64)
    permutation = rng.permutation(len(lines))
    orders = {"train": permutation[:350], "validation": permutation[350:420], "test": permutation[420:]}
    files = {name: tmp_path / f"{name}.csv" for name in orders}
    write_in_order(spool, starts, orders, files, b"id,text\n", window)
    for name, order in orders.items():
        assert files[name].read_bytes() == b"id,text\n" + b"".join(lines[i] for i in order)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv", "test.csv", "train.csv", "validation.csv"]


def test_an_empty_split(tmp_path: Path) -> None:
    spool = tmp_path / "rows.csv"
    spool.write_bytes(b"a\nb\n")
    starts = np.array([0, 2, 4])
    files = {name: tmp_path / f"{name}.csv" for name in ("train", "validation", "test")}
    orders = {
        "train": np.array([1, 0]),
        "validation": np.array([], dtype=np.int64),
        "test": np.array([], dtype=np.int64),
    }
    write_in_order(spool, starts, orders, files, b"h\n")
    assert [files[n].read_bytes() for n in files] == [b"h\nb\na\n", b"h\n", b"h\n"]
