"""Batch scoring's speed: ``stepml predict`` on 100,000 (and 1,000,000) rows on the embedded target, rows/s.

One state directory: the bundled iris data is trained once (``stepml run``), then iris-like files of the sizes
asked are drawn (each species' features from its mean and spread in data/iris.csv, an id and a text column, as
in tests/integration/test_batch_scoring.py) and scored with ``stepml predict --json`` in fresh processes. One
untimed run on a small file first starts the local AWS's workers and loads the model (a warm command, as every
command after the first); each size is then scored ``--runs`` times, and once more after ``stepml local down``
(a cold command: the local AWS starts, the workers import, the transform loads the model). Reported per size:
rows/s of the command (from its start to the scored file in place) and of the execution, the states' seconds
(PrepareBatch, Transform, AssembleBatch), median and min-max over the runs, and the 1-minute load average before
and after each run. Usage: ``python -m benchmarks.batch_scoring [--rows 100000,1000000] [--runs 3]
[--format csv|parquet] [--trainer auto] [--out benchmarks/results/batch-scoring.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.warm_run import REPO, stepml

STATES = ("PrepareBatch", "Transform", "AssembleBatch")


def scoring_file(rows: int, directory: Path, fmt: str, seed: int = 12) -> Path:
    """``rows`` iris-like rows (see tests/integration/test_batch_scoring.py's scoring_frame)."""
    from tests.integration.test_batch_scoring import scoring_frame

    frame = scoring_frame(rows, seed)
    path = directory / f"rows-{rows}.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def predict(model: str, data: Path, out: Path, env: dict[str, str]) -> dict[str, Any]:
    """One ``stepml predict --json`` in a fresh process: its wall, the execution's and each state's seconds."""
    load_before = os.getloadavg()[0]
    wall, stdout = stepml(["predict", "--json", "--model", model, "--data", str(data), "--out", str(out)], env)
    result = json.loads(stdout.strip().splitlines()[-1])
    if result["status"] != "SUCCEEDED":
        raise SystemExit(f"batch scoring did not succeed: {result.get('error')}: {result.get('cause')}")
    states = {s["name"]: s["seconds"] for s in result["states"] if s["name"] in STATES}
    return {
        "rows": result["rows"],
        "command": wall,
        "execution": result["seconds"],
        "states": states,
        "load": [load_before, os.getloadavg()[0]],
    }


def _spread(values: list[float], digits: int = 0) -> str:
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def row(label: str, runs: list[dict[str, Any]]) -> str:
    rows = runs[0]["rows"]
    command = [rows / r["command"] for r in runs]
    execution = [rows / r["execution"] for r in runs]
    states = " / ".join(_spread([r["states"].get(s, 0.0) for r in runs], 2) for s in STATES)
    loads = f"{min(min(r['load']) for r in runs):.1f}-{max(max(r['load']) for r in runs):.1f}"
    return f"| {label} | {rows:,} | {len(runs)} | {_spread(command)} | {_spread(execution)} | {states} | {loads} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000", help="comma-separated file sizes (default 100000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
    parser.add_argument("--trainer", default="auto", help="the trainer of the scored model (default auto)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.rows.split(",")]
    results: dict[str, Any] = {"format": args.format, "trainer": args.trainer, "cpus": os.cpu_count(), "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="stepml-batch-bench-") as temp:
        state = Path(temp) / "state"
        env = {**os.environ, "STEPML_STATE_DIR": str(state)}
        _, stdout = stepml(["run", "--json", "--data", str(REPO / "data" / "iris.csv"), "--trainer", args.trainer], env)
        trained = json.loads(stdout.strip().splitlines()[-1])
        model = trained["model_name"]
        results["model"] = {"name": model, "version": trained["model_version"], "trainer": args.trainer}
        warm = scoring_file(1000, Path(temp), args.format)
        predict(model, warm, Path(temp) / "warm.out", env)  # untimed: workers start, the model loads
        for size in sizes:
            data = scoring_file(size, Path(temp), args.format)
            runs = [predict(model, data, Path(temp) / f"out-{size}.{args.format}", env) for _ in range(args.runs)]
            stepml(["local", "down"], env)
            time.sleep(1)
            cold = predict(model, data, Path(temp) / f"out-{size}.{args.format}", env)
            results["sizes"][str(size)] = {"warm": runs, "cold": cold, "bytes": data.stat().st_size}
        stepml(["local", "down"], env)
    print(f"{args.format} files, model {model} ({args.trainer}), {os.cpu_count()} CPUs")
    header = "| command | rows | runs | rows/s, command | rows/s, execution"
    print(f"{header} | PrepareBatch / Transform / AssembleBatch s | load |")
    print("|---|---|---|---|---|---|---|")
    for size, measured in results["sizes"].items():
        print(row(f"warm, {int(size):,} rows", measured["warm"]))
        print(row(f"cold, {int(size):,} rows", [measured["cold"]]))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
