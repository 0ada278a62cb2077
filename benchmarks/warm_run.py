"""A warm `stepml run` against a plain scikit-learn script doing the same ML work, side by side in one run.

Goal: a warm command (the state directory's local AWS already running) within 1.5x of its execution's own
duration, and within 2x of the plain script (``benchmarks/plain_script.py``) on iris.

In one process, alternating A B A B … so that the machine's drift hits both: (A) ``stepml run --json`` in a
fresh process against a state directory whose local AWS was started before timing, (B) the plain script in
a fresh process. One pair first, untimed, warms both up (page cache, the service's first run). Then, as its
own row, a cold command: ``stepml local down`` first, so the command starts the service. Reports per pair
the command walls, the execution's ``duration_seconds``, the ratios command/execution and command/plain,
then medians and min-max and the load average at start and end, as a Markdown table.
Usage: ``python -m benchmarks.warm_run [--runs 5] [--cold 1] [--data FILE] [--out FILE.json]``.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLAIN_SCRIPT = Path(__file__).resolve().with_name("plain_script.py")


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    return wall, completed.stdout


def stepml(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run one ``stepml`` command in a fresh process; its wall seconds and stdout."""
    return _timed([sys.executable, "-m", "stepml.cli", *args], env)


def run_command(data: Path, env: dict[str, str]) -> dict[str, float]:
    """``stepml run --json``: the command's wall and its execution's own duration."""
    wall, stdout = stepml(["run", "--json", "--data", str(data)], env)
    result = json.loads(stdout.strip().splitlines()[-1])
    if result["status"] != "SUCCEEDED":
        raise SystemExit(f"the run did not succeed: {result.get('error')}: {result.get('cause')}")
    return {"command": wall, "execution": float(result["duration_seconds"])}


def plain_script(data: Path, model: Path) -> float:
    """The plain script's wall seconds."""
    return _timed([sys.executable, str(PLAIN_SCRIPT), str(data), "--model", str(model)], dict(os.environ))[0]


def _spread(values: list[float], digits: int = 2) -> tuple[str, str]:
    return f"{statistics.median(values):.{digits}f}", f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def measure(data: Path, runs: int, cold_runs: int, state_dir: Path) -> dict[str, object]:
    env = {**os.environ, "STEPML_STATE_DIR": str(state_dir)}
    model = state_dir / "plain_model.joblib"
    load_start = _load()
    stepml(["local", "up", "--background"], env)
    run_command(data, env)  # warm-up, untimed: the service's first run, the page cache
    plain_script(data, model)
    pairs = []
    for index in range(runs):
        a = run_command(data, env)
        b = plain_script(data, model)
        pair = {
            **a,
            "plain": b,
            "command_per_execution": a["command"] / a["execution"],
            "command_per_plain": a["command"] / b,
        }
        pairs.append(pair)
        print(
            f"pair {index + 1}: command {a['command']:.2f} s, execution {a['execution']:.2f} s, plain {b:.2f} s, "
            f"command/execution {pair['command_per_execution']:.2f}, command/plain {pair['command_per_plain']:.2f}",
            flush=True,
        )
    colds = []
    for index in range(cold_runs):
        stepml(["local", "down"], env)
        c = run_command(data, env)
        b = plain_script(data, model)
        colds.append({**c, "plain": b, "command_per_plain": c["command"] / b})
        print(f"cold {index + 1}: command {c['command']:.2f} s, execution {c['execution']:.2f} s, plain {b:.2f} s")
    stepml(["local", "down"], env)
    return {"data": str(data), "pairs": pairs, "cold": colds, "load_start": load_start, "load_end": _load()}


def markdown(result: dict[str, object]) -> str:
    pairs: list[dict[str, float]] = result["pairs"]  # type: ignore[assignment]
    colds: list[dict[str, float]] = result["cold"]  # type: ignore[assignment]
    rows = [
        ("warm `stepml run` command wall (s)", "command", 2, ""),
        ("its execution (`duration_seconds`, s)", "execution", 2, ""),
        ("plain script wall (s)", "plain", 2, ""),
        ("warm command / execution", "command_per_execution", 2, "≤ 1.5"),
        ("warm command / plain script", "command_per_plain", 2, "≤ 2"),
    ]
    lines = [
        f"{Path(str(result['data'])).name}: {len(pairs)} alternating pairs after one untimed pair, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average (1/5/15 min) "
        f"{result['load_start']} at start, {result['load_end']} at end",
        "",
        "| | median | min-max | goal |",
        "|---|---|---|---|",
    ]
    for label, key, digits, goal in rows:
        median, spread = _spread([p[key] for p in pairs], digits)
        lines.append(f"| {label} | {median} | {spread} | {goal} |")
    overhead = [p["command"] - p["execution"] for p in pairs]
    median, spread = _spread(overhead)
    lines.append(f"| warm command - execution (client side, s) | {median} | {spread} | |")
    if colds:
        median, spread = _spread([c["command"] for c in colds])
        lines.append(f"| cold command wall (service started by it, {len(colds)} run(s), s) | {median} | {spread} | |")
        median, spread = _spread([c["command_per_plain"] for c in colds])
        lines.append(f"| cold command / plain script | {median} | {spread} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed pairs (default 5)")
    parser.add_argument("--cold", type=int, default=1, help="cold commands, each after `stepml local down` (default 1)")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "iris.csv")
    parser.add_argument("--out", type=Path, help="write the raw figures as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stepml-warm-") as state_dir:
        try:
            result = measure(args.data.resolve(), args.runs, args.cold, Path(state_dir))
        finally:  # never leave a service behind, even when a run failed
            subprocess.run(
                [sys.executable, "-m", "stepml.cli", "local", "down"],
                env={**os.environ, "STEPML_STATE_DIR": state_dir},
                capture_output=True,
                check=False,
            )
    print()
    print(markdown(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
