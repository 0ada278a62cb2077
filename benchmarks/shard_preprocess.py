"""The sharded Preprocess against the single streaming one, in process, on issue 14's synthetic CSV.

    python -m benchmarks.shard_preprocess prepare DIR --rows 100000 --shard-bytes 4194304
    python -m benchmarks.shard_preprocess single DIR     # stream_preprocess on the whole file
    python -m benchmarks.shard_preprocess sharded DIR    # PlanSplit, PreprocessShard per shard, WriteSplits in turn

``prepare`` writes the CSV (:mod:`benchmarks.scale_data`), its profile and the shards (``split_csv``); the two
others run the stages' pure functions (no S3) and print one JSON line: each stage's CPU seconds and the
process's peak RSS after it (ru_maxrss only grows: a later stage's figure is the peak so far). Time both
with ``farm-bench`` for the whole-process figures (docs/data-scale.md has the command and the load).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from pipeline_core.models import DataProfile, RunConfig
from pipeline_core.stages.data_validation import Limits, load_table, profile_table
from pipeline_core.stages.preprocess_stream import stream_preprocess
from pipeline_core.stages.shard_preprocess import gather, plan_split, preprocess_shard
from pipeline_core.stages.shards import split_csv
from pipeline_core.stages.validate_input import build_run_config

from benchmarks.scale_data import generate_csv

SHA = "0" * 64


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _config() -> RunConfig:
    return build_run_config({"dataset": "s3://b/data.csv", "target": "label"}, "bench", "b", "stepml-bench")


def prepare(directory: Path, rows: int, shard_bytes: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / "data.csv"
    generate_csv(source, rows, seed=14)
    profile = profile_table(load_table(source.read_bytes(), "csv", Limits()), _config())
    (directory / "profile.json").write_text(profile.model_dump_json())
    shards = directory / "shards"
    shards.mkdir(exist_ok=True)
    with source.open("rb") as handle:
        for path in split_csv(handle, shard_bytes, shards):
            path.rename(path.with_name(f"kept-{path.name}"))


def _profile(directory: Path) -> DataProfile:
    return DataProfile.model_validate_json((directory / "profile.json").read_text())


def single(directory: Path) -> dict[str, object]:
    profile, started = _profile(directory), time.process_time()
    with tempfile.TemporaryDirectory(prefix="bench-single-") as work:
        stream_preprocess(directory / "data.csv", Path(work), profile, _config(), SHA)
    return {"path": "single", "Preprocess_cpu_s": round(time.process_time() - started, 2), "peak_mib": _peak_mib()}


def sharded(directory: Path) -> dict[str, object]:
    profile, config = _profile(directory), _config()
    shards = sorted((directory / "shards").glob("kept-shard-*.csv"))
    figures: dict[str, object] = {"path": "sharded", "shards": len(shards)}
    started = time.process_time()
    plan = plan_split(iter(shards), profile, config)
    figures |= {"PlanSplit_cpu_s": round(time.process_time() - started, 2), "PlanSplit_peak_mib": _peak_mib()}
    with tempfile.TemporaryDirectory(prefix="bench-sharded-") as work:
        parts, started = [], time.process_time()
        for index, (path, (rows, codes)) in enumerate(zip(shards, plan.shard_rows(), strict=True)):
            part_dir = Path(work) / f"part-{index}"
            part_dir.mkdir()
            parts.append(preprocess_shard(path, rows, codes, plan.targets.names, profile, part_dir))
        shard_cpu = time.process_time() - started
        figures |= {"PreprocessShard_cpu_s_each": round(shard_cpu / len(shards), 2), "peak_mib_so_far": _peak_mib()}
        started = time.process_time()
        gathered = Path(work) / "gather"
        gathered.mkdir()
        gather(parts, plan.split, plan.targets.dropped, profile, gathered, SHA)
        figures |= {"WriteSplits_cpu_s": round(time.process_time() - started, 2), "peak_mib": _peak_mib()}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["prepare", "single", "sharded"])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--shard-bytes", type=int, default=4 * 1024 * 1024)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.directory, args.rows, args.shard_bytes)
        return 0
    figures = single(args.directory) if args.command == "single" else sharded(args.directory)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
