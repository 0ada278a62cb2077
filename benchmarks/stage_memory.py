"""Wall time and peak memory of ValidateData and Preprocess on a generated CSV, each stage in its own process.

The dataset is synthetic classification data like the issue's (20 numeric + 3 categorical columns, a
3-class target, ~160 bytes a row). Each stage function runs in a fresh Python process against a moto S3
directory standing in for the bucket (moto would keep every object in the measured process); the figure is
the process's peak RSS (``VmHWM``), and its peak before the stage (imports, the profile) beside it, and
its CPU time; the bare ``pyarrow.csv.read_csv`` of the same file is timed beside them (the issue's
reference rate). MB/s of CPU time is the figure to compare on a loaded machine.

Usage: ``python -m benchmarks.stage_memory --rows 100000 1000000 [--json]``. Never run it on more than
1M rows on the shared 2-core machine (a 10M file is ~1.6 GB and needs the disk for it twice).
``--file data.csv`` measures an existing CSV instead (its target must be ``label``), e.g. the scale
benchmark's (``python -m benchmarks.scale_data 1M data.csv``); Preprocess reads the profile ValidateData
wrote beside it (``data.csv.profile.json``), so run ``--stages validate`` on the file first. Another tree's
stages are measured by putting its ``functions/shared`` first on ``PYTHONPATH`` (the stage processes inherit it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

NUMERIC = 20
CATEGORIES = (
    ("colour", ("red", "green", "blue", "amber")),
    ("size", ("S", "M", "L")),
    ("region", ("north", "south", "east", "west", "centre")),
)


def write_dataset(path: Path, rows: int, seed: int = 0, block: int = 100_000) -> Path:
    """A classification CSV of ``rows`` rows written block by block (never whole in memory)."""
    rng = np.random.default_rng(seed)
    header = [f"x{i}" for i in range(NUMERIC)] + [name for name, _ in CATEGORIES] + ["label"]
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(",".join(header) + "\n")
        for start in range(0, rows, block):
            n = min(block, rows - start)
            numbers = np.round(rng.normal(size=(n, NUMERIC)), 4)
            numbers[rng.random((n, NUMERIC)) < 0.01] = np.nan  # 1 % missing
            texts = [np.asarray(values)[rng.integers(0, len(values), n)] for _, values in CATEGORIES]
            score = numbers[:, 0] + 0.5 * np.nan_to_num(numbers[:, 1])
            label = np.where(score > 0.5, "high", np.where(score < -0.5, "low", "mid"))
            columns = [np.char.mod("%.4f", numbers[:, i]) for i in range(NUMERIC)]
            columns = [np.where(c == "nan", "", c) for c in columns]
            lines = [",".join(row) for row in zip(*columns, *texts, label, strict=True)]
            out.write("\n".join(lines) + "\n")
    return path


_STAGE = r"""
import json, shutil, sys, time
from pathlib import Path
from pipeline_core.models import DataProfile, IngestResult, RunConfig
from pipeline_core.stages.data_validation import Limits, validate_data
from pipeline_core.stages.preprocess import preprocess


class DirectoryStore:
    # The ObjectStore verbs the two stages use, on a local directory: the bucket's memory (moto keeps
    # objects in the process) is not counted as the stage's.
    def __init__(self, root):
        self.root = root

    def _path(self, uri):
        path = self.root / uri.removeprefix("s3://")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def read_bytes(self, uri):
        return self._path(uri).read_bytes()

    def download_stream(self, uri, path, chunk_bytes=8 << 20):
        shutil.copyfile(self._path(uri), path)
        return path.stat().st_size

    def put_if_changed(self, uri, data, content_type=""):
        self._path(uri).write_bytes(data)
        return True

    def put_file_if_changed(self, uri, path, content_type=""):
        shutil.copyfile(path, self._path(uri))
        return True


stage, path, profile_path, root = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[5])
store = DirectoryStore(root)
shutil.copyfile(path, store._path("s3://b/raw/data.csv"))
config = RunConfig.model_validate(json.loads(sys.argv[4]))
ingest = IngestResult(raw_uri="s3://b/raw/data.csv", source_uri="s3://b/in/data.csv", sha256="0" * 64,
                      size_bytes=path.stat().st_size, format="csv")


def high_water_mib():
    # VmHWM: this process's peak RSS since exec (ru_maxrss would carry the parent's peak across exec on Linux)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) // 1024


before = high_water_mib()
start, cpu = time.perf_counter(), time.process_time()
if stage == "validate":
    profile = validate_data(config, ingest, store, Limits.from_env())
    profile_path.write_text(profile.model_dump_json())
else:
    profile = DataProfile.model_validate_json(profile_path.read_text())
    preprocess(config, ingest, profile, store, Limits.from_env())
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({"stage": stage, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "rss_before_mib": before,
                  "peak_rss_mib": high_water_mib()}))
"""


def run_config() -> dict[str, Any]:
    """A RunConfig for the generated data (the same fields ValidateInput would fill)."""
    from pipeline_core.stages.validate_input import build_run_config

    return build_run_config(
        {"dataset": "s3://b/in/data.csv", "target": "label"}, "bench", "b", "stepml-bench"
    ).model_dump(mode="json")


def measure_stage(
    stage: str, path: Path, profile_path: Path, bucket: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """One stage in a fresh process (objects under the directory ``bucket``): its wall time and the
    process's peak RSS. ``profile_path``: where ValidateData writes the profile and Preprocess reads it."""
    done = subprocess.run(
        [sys.executable, "-c", _STAGE, stage, str(path), str(profile_path), json.dumps(run_config()), str(bucket)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if done.returncode:
        raise RuntimeError(f"{stage} failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def pyarrow_parse(path: Path) -> dict[str, Any]:
    """The bare parse the issue compares with: ``pyarrow.csv.read_csv`` of the whole file, types inferred."""
    import time

    import pyarrow.csv as pa_csv

    start, cpu = time.perf_counter(), time.process_time()
    pa_csv.read_csv(path)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"stage": "pyarrow", "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--stages", nargs="+", default=["pyarrow", "validate", "preprocess"])
    parser.add_argument("--file", type=Path, help="an existing CSV (target column 'label') instead of --rows")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="stage-memory-") as work:
        for rows in [0] if args.file else args.rows:
            if rows > 1_000_000:
                parser.error("at most 1M rows here (see the module's docstring)")
            if args.file:
                path, profile_path = args.file, Path(f"{args.file}.profile.json")
            else:
                path = write_dataset(Path(work) / f"data-{rows}.csv", rows)
                profile_path = Path(work) / f"profile-{rows}.json"
            for stage in args.stages:
                if stage == "pyarrow":
                    result = pyarrow_parse(path)
                else:
                    result = measure_stage(stage, path, profile_path, Path(work) / "bucket")
                mb = path.stat().st_size / 1e6
                result.update(
                    rows=rows,
                    csv_mib=round(path.stat().st_size / 2**20, 1),
                    mb_per_s_wall=round(mb / max(result["wall_s"], 1e-3), 1),
                    mb_per_s_cpu=round(mb / max(result["cpu_s"], 1e-3), 1),
                    load=round(os.getloadavg()[0], 1),
                )
                results.append(result)
                if not args.json:
                    memory = (
                        f"peak RSS {result['peak_rss_mib']:>5} MiB (before the stage {result['rss_before_mib']} MiB)"
                        if "peak_rss_mib" in result
                        else "(in the benchmark's process)"
                    )
                    print(
                        f"{rows:>9} rows {result['csv_mib']:>6} MiB  {stage:<10} {result['wall_s']:>7.2f} s wall "
                        f"{result['cpu_s']:>7.2f} s CPU  {result['mb_per_s_cpu']:>6} MB/s of CPU  {memory}  "
                        f"load {result['load']}"
                    )
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
