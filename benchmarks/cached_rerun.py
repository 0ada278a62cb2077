"""A rerun that reuses its steps from the step cache against a full run of the same input, side by side.

In one process, alternating A B A B … so the machine's drift hits both: (A) ``stepml run --no-cache --json``,
which runs every step, (B) ``stepml run --json``, which reuses Preprocess, training and Evaluate from the step
cache. Both against one state directory whose local AWS was started before timing (one untimed run first).
Reports per pair the command walls and the executions' ``duration_seconds``, then medians, min-max, the ratio
cached/full and the load average at start and end, as a Markdown table.
Usage: ``python -m benchmarks.cached_rerun [--runs 5] [--data FILE] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.warm_run import REPO, stepml


def one_run(data: Path, env: dict[str, str], *, cache: bool) -> dict[str, Any]:
    """One ``stepml run --json``: its wall, its execution's duration and which steps it reused."""
    wall, stdout = stepml(["run", "--json", "--data", str(data), *([] if cache else ["--no-cache"])], env)
    result = json.loads(stdout.strip().splitlines()[-1])
    if result["status"] != "SUCCEEDED":
        raise SystemExit(f"the run did not succeed: {result.get('error')}: {result.get('cause')}")
    reused = sorted(s["name"] for s in result.get("states", []) if s.get("cached"))
    return {"command": wall, "execution": float(result["duration_seconds"]), "reused": reused}


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "iris.csv")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="stepml-cache-bench-") as state:
        env = {**os.environ, "STEPML_STATE_DIR": state}
        one_run(args.data, env, cache=True)  # untimed: starts the local AWS and fills the cache
        pairs = [(one_run(args.data, env, cache=False), one_run(args.data, env, cache=True)) for _ in range(args.runs)]
        stepml(["local", "down"], env)
    load_end = os.getloadavg()
    full_cmd = [p[0]["command"] for p in pairs]
    cached_cmd = [p[1]["command"] for p in pairs]
    full_exec = [p[0]["execution"] for p in pairs]
    cached_exec = [p[1]["execution"] for p in pairs]
    ratios = [c / f for f, c in zip(full_exec, cached_exec, strict=True)]
    print(f"data {args.data.name}, {args.runs} pairs, load {load_start[0]:.2f} → {load_end[0]:.2f}")
    print("| | full run (--no-cache) | cached rerun | cached / full |")
    print("|---|---|---|---|")
    print(f"| execution s, median (min-max) | {_spread(full_exec)} | {_spread(cached_exec)} | {_spread(ratios)} |")
    command_ratios = [c / f for f, c in zip(full_cmd, cached_cmd, strict=True)]
    print(f"| command s, median (min-max) | {_spread(full_cmd)} | {_spread(cached_cmd)} | {_spread(command_ratios)} |")
    print(f"reused by the cached runs: {pairs[0][1]['reused']}")
    if args.out:
        args.out.write_text(json.dumps({"pairs": pairs, "load": [load_start, load_end]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
