"""The data benchmarks/scale.py runs on: synthetic classification CSVs of any size, written in bounded memory.

20 numeric and 3 categorical columns and a binary ``label`` learnable from them, ~160 bytes a row (as the
files issue 14 measured); deterministic by seed. ``python -m benchmarks.scale_data ROWS FILE [--seed N]``
writes one.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

NUMERIC = 20
CATEGORIES = {"cat0": ("grp", 5), "cat1": ("site", 12), "cat2": ("zone", 40)}  # column: (value prefix, levels)
BYTES_PER_ROW = 160  # what the generated rows average (checked by tests/unit/test_benchmark_scale.py)
CHUNK_ROWS = 100_000


def parse_rows(text: str) -> list[int]:
    """``"10k,100k,1M"`` -> ``[10000, 100000, 1000000]``."""
    sizes = []
    for item in text.split(","):
        item = item.strip()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", item)
        if not match:
            raise argparse.ArgumentTypeError(f"--rows: {item!r} is not a row count such as 10k or 1M")
        scale = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
        sizes.append(int(float(match.group(1)) * scale))
    return sizes


def label_rows(rows: int) -> str:
    """``1000000`` -> ``"1M"``, ``10000`` -> ``"10k"`` (the names the figures use)."""
    if rows >= 1_000_000 and rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    if rows >= 1_000 and rows % 1_000 == 0:
        return f"{rows // 1_000}k"
    return str(rows)


def chunk_table(seed: int, index: int, rows: int) -> pa.Table:
    """Chunk ``index`` of the dataset: the same rows for the same (seed, index, rows), whatever came before.

    Numeric features ~ N(0, 10) with 3 decimals; categorical ones uniform over their levels; ``label`` is 1
    where a linear score of the features plus ``cat0``'s effect plus logistic noise is positive, so a model
    learns it well but not perfectly (~85 % accuracy).
    """
    rng = np.random.default_rng([seed, index])
    numeric = np.round(rng.normal(0.0, 10.0, size=(rows, NUMERIC)), 3)
    columns: dict[str, Any] = {f"x{i:02d}": numeric[:, i] for i in range(NUMERIC)}
    codes = {name: rng.integers(0, levels, size=rows) for name, (_, levels) in CATEGORIES.items()}
    for name, (prefix, levels) in CATEGORIES.items():
        columns[name] = np.array([f"{prefix}_{level:02d}" for level in range(levels)])[codes[name]]
    weights = np.linspace(1.0, -1.0, NUMERIC) / 20.0
    score = numeric @ weights + (codes["cat0"] - 2) * 0.8 + rng.logistic(size=rows) * 0.5
    columns["label"] = (score > 0).astype(np.int64)
    return pa.table(columns)


def generate_csv(path: Path, rows: int, seed: int, chunk_rows: int = CHUNK_ROWS) -> int:
    """Write ``rows`` rows to ``path`` chunk by chunk (memory bounded by ``chunk_rows``); the bytes written.

    The chunking is part of the data: the same (rows, seed, chunk_rows) give the same file.
    """
    schema = chunk_table(seed, 0, 1).schema
    # no value needs quotes (numbers and plain words); pyarrow would quote the header, so it is written here
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    with path.open("wb") as sink:
        sink.write((",".join(schema.names) + "\n").encode())
        with pa_csv.CSVWriter(sink, schema, write_options=options) as writer:
            for index, start in enumerate(range(0, rows, chunk_rows)):
                writer.write_table(chunk_table(seed, index, min(chunk_rows, rows - start)))
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", type=lambda text: parse_rows(text)[0], help="row count, e.g. 10k or 1M")
    parser.add_argument("file", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    size = generate_csv(args.file, args.rows, args.seed)
    print(f"{args.file}: {args.rows} rows, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
