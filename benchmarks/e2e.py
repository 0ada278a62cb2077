"""End-to-end speed of `stepml run` on the embedded target.

Runs the CLI in fresh processes (as a user would) and reports, per run: the command's wall time, the
execution's wall time (StartExecution to end), the time spent inside stage code (the handlers' own
durations, training included) and the orchestration overhead = execution wall - stage code, as a share of
the execution wall. Also each state's duration. Usage: ``python -m benchmarks.e2e [--runs 3] [--data FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_run(data: Path, state_dir: Path) -> dict[str, object]:
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "stepml.cli", "run", "--json", "--data", str(data)],
        capture_output=True,
        text=True,
        env={**os.environ, "STEPML_STATE_DIR": str(state_dir)},
        check=False,
    )
    command_wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"run failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    execution_wall = float(result["duration_seconds"])
    stage_code = sum(float(i["ms"]) for i in result["invocations"]) / 1000
    return {
        "command_wall_s": command_wall,
        "execution_wall_s": execution_wall,
        "stage_code_s": stage_code,
        "overhead_s": execution_wall - stage_code,
        "overhead_share": (execution_wall - stage_code) / execution_wall,
        "states": {s["name"]: s["seconds"] for s in result["states"] if s["seconds"] is not None},
        "functions": result["invocations"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "iris.csv")
    parser.add_argument("--out", type=Path, help="write the raw figures as JSON here")
    args = parser.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory() as state_dir:
        for index in range(args.runs):
            runs.append(one_run(args.data, Path(state_dir)))
            print(f"run {index + 1}: " + ", ".join(f"{k}={v:.3f}" for k, v in runs[-1].items() if isinstance(v, float)))
    median = {k: statistics.median(float(r[k]) for r in runs) for k in runs[0] if isinstance(runs[0][k], float)}  # type: ignore[arg-type]
    print("\nmedian over", len(runs), "runs:")
    for key, value in median.items():
        print(f"  {key:<18} {value:8.3f}")
    per_state: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        for name, seconds in run["states"].items():  # type: ignore[attr-defined]
            per_state[name].append(seconds)
    print("\nmedian seconds per state:")
    for name, values in per_state.items():
        print(f"  {name:<24} {statistics.median(values):7.3f}")
    if args.out:
        args.out.write_text(json.dumps({"runs": runs, "median": median}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
