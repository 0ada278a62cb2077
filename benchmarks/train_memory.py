"""Peak memory and wall time of ``training/train.py`` on generated channels, each run in its own process.

The dataset is ``benchmarks.stage_memory``'s synthetic classification CSV (20 numeric + 3 categorical
columns, a 3-class target, ~160 bytes a row), cut into train/validation/test channels (70/15/15 %, the
order kept) with the ``columns.json`` Preprocess writes. ``train.py`` runs as SageMaker runs it (script
mode: ``SM_CHANNEL_*``, ``SM_MODEL_DIR``, ...); the figure is its own peak RSS from ``wait4`` (the process and
nothing else), and its wall time. ``--training`` names the folder whose ``train.py`` runs, so two versions
can be measured side by side on the same files.

Usage: ``python -m benchmarks.train_memory --rows 100000 1000000 --runs 3 [--training DIR ...] [--parts N]``.
Never run it on more than 1M rows on the shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.process_memory import wait_with_peak
from benchmarks.stage_memory import CATEGORIES, NUMERIC, write_dataset

SPLITS = (("train", 0.70), ("validation", 0.15), ("test", 0.15))
ROOT = Path(__file__).resolve().parents[1]


def write_channels(source: Path, rows: int, data_dir: Path, parts: int = 1) -> None:
    """Cut ``source`` into the three channel directories, each split into ``parts`` part files."""
    roles = {f"x{i}": "numeric" for i in range(NUMERIC)} | {name: "categorical" for name, _ in CATEGORIES}
    columns = {"format": 1, "target": "label", "problem_type": "multiclass_classification", "roles": roles}
    with source.open("r", encoding="utf-8") as lines:
        header = next(lines)
        for index, (name, share) in enumerate(SPLITS):
            count = rows - int(rows * 0.70) - int(rows * 0.15) if index == len(SPLITS) - 1 else int(rows * share)
            channel = data_dir / name
            channel.mkdir(parents=True)
            if name == "train":
                (channel / "columns.json").write_text(json.dumps(columns))
            per_part = -(-count // parts)
            written = 0
            for part in range(parts):
                target = channel / (f"{name}.csv" if parts == 1 else f"part-{part:05d}.csv")
                with target.open("w", encoding="utf-8") as out:
                    out.write(header)
                    for _ in range(min(per_part, count - written)):
                        out.write(next(lines))
                        written += 1


def run_once(training: Path, data_dir: Path, work: Path, hyperparameters: list[str]) -> tuple[int, float]:
    """(peak RSS KiB, wall seconds) of one train.py run."""
    outputs = work / "out"
    shutil.rmtree(outputs, ignore_errors=True)
    env = {
        **os.environ,
        "SM_MODEL_DIR": str(outputs / "model"),
        "SM_OUTPUT_DATA_DIR": str(outputs / "data"),
        "SM_OUTPUT_DIR": str(outputs),
        **{f"SM_CHANNEL_{name.upper()}": str(data_dir / name) for name, _ in SPLITS},
    }
    command = [sys.executable, str(training / "train.py"), "--target", "label"]
    command += ["--problem_type", "multiclass_classification", *hyperparameters]
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    status, peak_kib = wait_with_peak(process, timeout=3600)
    wall = time.monotonic() - started
    if status != 0:
        error = process.stderr.read().decode() if process.stderr else ""
        raise SystemExit(f"{training}/train.py failed ({status}): {error[-2000:]}")
    return peak_kib, wall


def _summary(values: list[float], scale: float, unit: str) -> str:
    scaled = [v / scale for v in values]
    return f"{statistics.median(scaled):,.0f} {unit} ({min(scaled):,.0f}-{max(scaled):,.0f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parts", type=int, default=1, help="part files per channel")
    parser.add_argument("--training", type=Path, nargs="+", default=[ROOT / "training"])
    parser.add_argument(
        "--hyperparameters",
        default="--algorithm gradient-boosting --max_iter 10",
        help="more train.py arguments; the default keeps the fit short, so the figure is mostly the data's "
        "(the default algorithm 'auto' cross-validates two families: ~75 s at 100k rows, ~10 min at 1M)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="train-memory-") as work_dir:
        work = Path(work_dir)
        for rows in args.rows:
            source = write_dataset(work / f"data-{rows}.csv", rows)
            size_mb = source.stat().st_size / 1e6
            data_dir = work / f"channels-{rows}"
            write_channels(source, rows, data_dir, args.parts)
            source.unlink()
            for run in range(args.runs):  # interleaved, so a change in the machine's load hits every version
                for training in args.training:
                    peak, wall = run_once(training, data_dir, work, args.hyperparameters.split())
                    results.append(
                        {
                            "rows": rows,
                            "csv_mb": size_mb,
                            "training": str(training),
                            "run": run,
                            "peak_kib": peak,
                            "wall_s": wall,
                        }
                    )
                    print(
                        f"rows={rows} {training} run {run}: peak {peak / 1024:,.0f} MiB, wall {wall:.1f} s",
                        file=sys.stderr,
                        flush=True,
                    )
            shutil.rmtree(data_dir)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("| rows (CSV) | train.py | peak RSS, median (min-max) | wall, median (min-max) |")
    print("|---|---|---|---|")
    for rows in args.rows:
        for training in args.training:
            mine = [r for r in results if r["rows"] == rows and r["training"] == str(training)]
            print(
                f"| {rows:,} ({mine[0]['csv_mb']:.0f} MB) | {training} | "
                f"{_summary([r['peak_kib'] for r in mine], 1024, 'MiB')} | "
                f"{_summary([r['wall_s'] for r in mine], 1, 's')} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
