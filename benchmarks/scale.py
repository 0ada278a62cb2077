"""Scale: ``stepml run`` on generated classification CSVs of growing size against the plain script, side by side.

For each size asked (``--rows 10k,100k,1M,10M[,30M]``) a synthetic CSV is generated (``benchmarks/scale_data.py``:
20 numeric and 3 categorical columns and a binary ``label`` learnable from them, ~160 bytes a row; deterministic
by ``--seed``, written in chunks so the benchmark's memory does not grow with the file). A size the free disk
cannot hold (the file, and about 3x it that a run keeps in its state directory) is skipped, and the report says
so. Then, alternating A B C A B C … ``--runs`` times so that the machine's drift hits both:

- (A) ``stepml run --json --data FILE`` in a fresh process on the embedded target with a fresh state directory,
  whose local AWS is started first, untimed (``stepml local up --background``: a warm command, as every command
  after the first is; the start's wall is kept apart), stopped and removed afterwards. While it runs, the PSS
  (``/proc/<pid>/smaps_rollup``) of every process of the run is sampled: the CLI, its descendants and every
  process started with this state directory (the local AWS, its function workers, the training job's interpreter),
  whenever their RSS sum (checked every ``SAMPLE_SECONDS``) has grown ``PSS_GROWTH`` since the last read, and
  every ``PSS_SECONDS`` (``benchmarks/process_memory.py``). Reported: the peak of their sum, the peak of the
  training interpreter, and each stage's peak from its REPORT line (``Max Memory Used``) in the state directory's
  function logs. The sampler's own CPU time is reported too (it competes with the run for the CPUs).
- (B) ``benchmarks/plain_script.py FILE``: the same ML work as a plain script (pandas read, the same split,
  HistGradientBoosting with train.py's defaults, Evaluate's metrics); its peak RSS from ``wait4``. (The pipeline's
  default trainer, ``auto``, also fits a linear model and keeps the better on validation: more work than the
  script (at 1M rows 1.41x the plain script's wall, against 1.27x without it, on 2026-12-02);
  ``--trainer gradient-boosting`` gives the like-for-like ratio.)
- (C) ``pyarrow.csv.read_csv`` of the same file in a fresh process: the bare parse rate that ValidateData +
  Preprocess's throughput (CSV bytes / the two stages' REPORT durations) is held against.

A run that fails (out of memory, a failed execution, a time-out) is recorded with its error; the benchmark goes
on. Reported per size: median and min-max of the walls, the ratio stepml/plain, the memory figures, the
throughputs, and the 1-minute load average before and after each run, as a Markdown table; ``--out`` writes the
raw figures as JSON. Usage: ``python -m benchmarks.scale [--rows 10k,100k] [--runs 3] [--seed 7] [--work-dir DIR]
[--timeout 3600] [--out benchmarks/results/scale.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.process_memory import TreeSampler, wait_with_peak
from benchmarks.scale_data import BYTES_PER_ROW, generate_csv, label_rows, parse_rows
from benchmarks.warm_run import PLAIN_SCRIPT, REPO

STATE_COPIES = 3  # a run keeps about 3x the dataset in its state directory (README, "How much a run keeps")
DISK_MARGIN = 1 << 30
PLAIN_RSS_PER_CSV_BYTE = 12  # the plain script's peak RSS is ~11x the CSV (the issue: 1,778 MiB at 160 MB)
STAGES = ("ValidateData", "Preprocess")
MIB = 1 << 20
MB = 1_000_000


# ---- the limits --------------------------------------------------------------------------------------------


def memory_available() -> int | None:
    """``MemAvailable`` from /proc/meminfo, in bytes (None where there is none)."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def disk_needed(rows: int) -> int:
    """Bytes a size needs free: its CSV, what a run keeps of it in the state directory, and a margin."""
    return rows * BYTES_PER_ROW * (1 + STATE_COPIES) + DISK_MARGIN


# ---- the figures -------------------------------------------------------------------------------------------


def spread(values: Iterable[float | None]) -> dict[str, float] | None:
    """Median, min and max of the values that exist (a failed run has none); None if there are none."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {"median": statistics.median(present), "min": min(present), "max": max(present)}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing (a failed run) or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def parse_reports(log_text: str) -> list[dict[str, float]]:
    """Each invocation's duration (ms) and ``Max Memory Used`` (MB) from a function's log, as Lambda writes
    them: a ``platform.report`` JSON record (LogFormat JSON) or a tab-separated ``REPORT`` line (Text)."""
    reports = []
    for line in log_text.splitlines():
        if '"platform.report"' in line:
            try:
                metrics = json.loads(line)["record"]["metrics"]
            except (ValueError, KeyError, TypeError):
                continue
            reports.append(
                {"duration_ms": float(metrics["durationMs"]), "max_memory_mb": float(metrics["maxMemoryUsedMB"])}
            )
        elif line.startswith("REPORT RequestId:"):
            duration = re.search(r"\tDuration: ([\d.]+) ms", line)
            memory = re.search(r"Max Memory Used: (\d+) MB", line)
            if duration and memory:
                reports.append({"duration_ms": float(duration.group(1)), "max_memory_mb": float(memory.group(1))})
    return reports


def stage_reports(log_dir: Path) -> dict[str, dict[str, float]]:
    """Per function (``...-<Stage>Function.log`` -> ``<Stage>``): its peak ``Max Memory Used`` (MB) and total
    duration (s) over the run's invocations."""
    stages = {}
    for path in sorted(log_dir.glob("*Function.log")):
        reports = parse_reports(path.read_text(errors="replace"))
        if reports:
            name = path.stem.rsplit("-", 1)[-1].removesuffix("Function")
            stages[name] = {
                "max_memory_mb": max(r["max_memory_mb"] for r in reports),
                "seconds": sum(r["duration_ms"] for r in reports) / 1000,
            }
    return stages


# ---- the runs ----------------------------------------------------------------------------------------------


def _tail(path: Path, limit: int = 2000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-limit:]


def run_stepml(data: Path, work: Path, timeout: float, trainer: str = "auto") -> dict[str, Any]:
    """(A): one ``stepml run --json --trainer TRAINER`` with a fresh state directory; its figures, or its error."""
    state_dir = Path(tempfile.mkdtemp(prefix="state-", dir=work))
    env = {**os.environ, "STEPML_STATE_DIR": str(state_dir)}
    out_path, err_path = work / "stepml.out", work / "stepml.err"
    started = time.perf_counter()
    up = subprocess.run(
        [sys.executable, "-m", "stepml.cli", "local", "up", "--background"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    service_start = time.perf_counter() - started
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "stepml.cli", "run", "--json", "--data", str(data), "--trainer", trainer],
            stdout=out,
            stderr=err,
            env=env,
            cwd=REPO,
        )
    sampler = TreeSampler(process.pid, f"STEPML_STATE_DIR={state_dir}")
    sampler.start()
    try:
        status, cli_rss_kib = wait_with_peak(process, timeout)
        wall = time.perf_counter() - started
    finally:
        sampler.stop()
        subprocess.run(
            [sys.executable, "-m", "stepml.cli", "local", "down"], env=env, cwd=REPO, capture_output=True, check=False
        )
    figures: dict[str, Any] = {
        "wall": wall,
        "service_start": service_start,
        "sampler_cpu_seconds": sampler.cpu_seconds,
        "pss_samples": sampler.pss_samples,
        "pss_peak_mib": sampler.peak_kib / 1024,
        "pss_peak_by_role_mib": {role: kib / 1024 for role, kib in sorted(sampler.role_peaks_kib.items())},
        "processes": len(sampler.processes_seen),
        "cli_rss_peak_mib": cli_rss_kib / 1024,
        "stages": stage_reports(state_dir / "logs"),
        "load": [load_before, os.getloadavg()[0]],
        "error": None,
    }
    result = _last_json(out_path)
    if up.returncode != 0:
        figures["error"] = f"`stepml local up --background` failed: {(up.stderr or up.stdout)[-2000:]}"
    elif status is None:
        figures["error"] = f"killed after the {timeout:.0f} s time-out"
    elif result is None or result.get("status") != "SUCCEEDED":
        reason = f"{result.get('error')}: {result.get('cause')}" if result else _tail(err_path) or _tail(out_path)
        figures["error"] = f"exit status {status}: {reason}"[:3000]
    else:
        figures["execution"] = result.get("duration_seconds")
        figures["metrics"] = result.get("metrics")
        figures["model_choice"] = result.get("model_choice")
    if figures["error"] is not None:
        figures["local_aws_log_tail"] = _tail(state_dir / "logs" / "local-aws.log")
    shutil.rmtree(state_dir, ignore_errors=True)
    return figures


def _last_json(path: Path) -> dict[str, Any] | None:
    lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    try:
        value = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def run_plain(data: Path, work: Path, timeout: float) -> dict[str, Any]:
    """(B): the plain script in a fresh process; its wall, peak RSS and test metrics, or its error.

    Not started when its expected peak (``PLAIN_RSS_PER_CSV_BYTE`` x the file) exceeds the memory available:
    on a shared machine the kernel's OOM killer could pick another process than the script."""
    load_before = os.getloadavg()[0]
    expected, available = data.stat().st_size * PLAIN_RSS_PER_CSV_BYTE, memory_available()
    if available is not None and expected > available:
        reason = f"not run: it would need ~{expected / 1e9:.1f} GB of memory, {available / 1e9:.1f} GB are available"
        return {"wall": None, "rss_peak_mib": None, "load": [load_before, load_before], "error": reason}
    out_path, err_path = work / "plain.out", work / "plain.err"
    started = time.perf_counter()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, str(PLAIN_SCRIPT), str(data), "--model", str(work / "plain_model.joblib")],
            stdout=out,
            stderr=err,
            cwd=REPO,
        )
    status, rss_kib = wait_with_peak(process, timeout)
    figures: dict[str, Any] = {
        "wall": time.perf_counter() - started,
        "rss_peak_mib": rss_kib / 1024,
        "load": [load_before, os.getloadavg()[0]],
        "error": None,
    }
    result = _last_json(out_path)
    if status != 0 or result is None:
        reason = "time-out" if status is None else _tail(err_path)
        figures["error"] = f"exit status {status}: {reason}"[:3000]
    else:
        figures["metrics"] = result.get("test")
    return figures


PARSE = (
    "import sys, time, pyarrow.csv as c; t = time.perf_counter(); c.read_csv(sys.argv[1]); "
    "print(time.perf_counter() - t)"
)


def parse_rate(data: Path, timeout: float) -> dict[str, Any]:
    """(C): ``pyarrow.csv.read_csv`` of the file in a fresh process (its default threads): seconds and MB/s."""
    try:
        completed = subprocess.run(
            [sys.executable, "-c", PARSE, str(data)], capture_output=True, text=True, timeout=timeout, check=True
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        return {"seconds": None, "mb_per_s": None, "error": str(error)[:2000]}
    seconds = float(completed.stdout.strip())
    return {"seconds": seconds, "mb_per_s": data.stat().st_size / MB / seconds, "error": None}


def stage_throughput(csv_bytes: int, stages: dict[str, dict[str, float]]) -> float | None:
    """ValidateData + Preprocess's MB/s: the CSV's bytes over the two stages' durations (None if one is missing)."""
    if any(stage not in stages for stage in STAGES):
        return None
    return ratio(csv_bytes / MB, sum(stages[stage]["seconds"] for stage in STAGES))


def runs_stepml(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["stepml"] for r in runs]


def summarise(size: dict[str, Any]) -> dict[str, Any]:
    """A size's medians and min-max over its runs; failed runs count as failures, not as figures."""
    runs = size["runs"]
    stepml_ok = [r["stepml"] for r in runs if r["stepml"]["error"] is None]
    plain_ok = [r["plain"] for r in runs if r["plain"]["error"] is None]
    pairs = [(r["stepml"], r["plain"]) for r in runs if r["stepml"]["error"] is None and r["plain"]["error"] is None]

    def stage_peak(stage: str) -> dict[str, float] | None:
        return spread(s["stages"].get(stage, {}).get("max_memory_mb") for s in stepml_ok)

    summary: dict[str, Any] = {
        "stepml_wall": spread(s["wall"] for s in stepml_ok),
        "service_start": spread(s.get("service_start") for s in runs_stepml(runs)),
        "sampler_cpu_seconds": spread(s.get("sampler_cpu_seconds") for s in runs_stepml(runs)),
        "plain_wall": spread(p["wall"] for p in plain_ok),
        "ratio": spread(ratio(s["wall"], p["wall"]) for s, p in pairs),
        "stepml_pss_peak_mib": spread(s["pss_peak_mib"] for s in stepml_ok),
        "training_pss_peak_mib": spread(s["pss_peak_by_role_mib"].get("training") for s in stepml_ok),
        "plain_rss_peak_mib": spread(p["rss_peak_mib"] for p in plain_ok),
        "stage_peaks_mb": {stage: stage_peak(stage) for stage in ("Ingest", *STAGES)},
        "stages_mb_per_s": spread(stage_throughput(size["csv_bytes"], s["stages"]) for s in stepml_ok),
        "parse_mb_per_s": spread(r["parse"]["mb_per_s"] for r in runs),
        "stepml_failures": [r["stepml"]["error"] for r in runs if r["stepml"]["error"] is not None],
        "plain_failures": [r["plain"]["error"] for r in runs if r["plain"]["error"] is not None],
    }
    stages_rate, parse = summary["stages_mb_per_s"], summary["parse_mb_per_s"]
    summary["stages_per_parse"] = ratio(
        stages_rate["median"] if isinstance(stages_rate, dict) else None,
        parse["median"] if isinstance(parse, dict) else None,
    )
    return summary


# ---- the benchmark -----------------------------------------------------------------------------------------


def measure(
    sizes: list[int], runs: int, seed: int, work: Path, timeout: float, trainer: str = "auto"
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "seed": seed,
        "trainer": trainer,
        "load_start": list(os.getloadavg()),
        "sizes": [],
    }
    for rows in sizes:
        free = shutil.disk_usage(work).free
        if disk_needed(rows) > free:
            reason = (
                f"needs ~{disk_needed(rows) / 1e9:.1f} GB free for the file and a run's state, {free / 1e9:.1f} GB are"
            )
            print(f"{label_rows(rows)}: skipped, {reason}", flush=True)
            result["sizes"].append({"rows": rows, "skipped": reason})
            continue
        data = work / f"scale-{label_rows(rows)}.csv"
        started = time.perf_counter()
        csv_bytes = generate_csv(data, rows, seed)
        print(
            f"{label_rows(rows)}: {csv_bytes / MB:.1f} MB generated in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        size: dict[str, Any] = {"rows": rows, "csv_bytes": csv_bytes, "runs": []}
        try:
            for index in range(runs):
                pair = {
                    "stepml": run_stepml(data, work, timeout, trainer),
                    "plain": run_plain(data, work, timeout),
                    "parse": parse_rate(data, timeout),
                }
                size["runs"].append(pair)
                print(f"{label_rows(rows)} run {index + 1}: {_line(pair)}", flush=True)
        finally:
            data.unlink(missing_ok=True)
        size["summary"] = summarise(size)
        result["sizes"].append(size)
    result["load_end"] = list(os.getloadavg())
    return result


def _line(pair: dict[str, Any]) -> str:
    a, b, c = pair["stepml"], pair["plain"], pair["parse"]
    first = (
        f"stepml FAILED ({a['error'][:200]})"
        if a["error"]
        else f"stepml {a['wall']:.1f} s, PSS {a['pss_peak_mib']:.0f} MiB"
    )
    second = (
        f"plain FAILED ({b['error'][:200]})"
        if b["error"]
        else f"plain {b['wall']:.1f} s, RSS {b['rss_peak_mib']:.0f} MiB"
    )
    parse = f"pyarrow {c['mb_per_s']:.0f} MB/s" if c["mb_per_s"] else "pyarrow failed"
    return f"{first}; {second}; {parse}; load {a['load'][0]:.2f}-{b['load'][1]:.2f}"


def _fmt(value: dict[str, float] | None, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "-"
    median, low, high = (f"{value[k]:,.{digits}f}" for k in ("median", "min", "max"))
    return f"{median}{unit} ({low}-{high})" if low != high else f"{median}{unit}"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{result['cpus']} CPUs, Python {result['python']}, seed {result['seed']}, load average (1/5/15 min) "
        f"{' '.join(f'{v:.2f}' for v in result['load_start'])} at start, "
        f"{' '.join(f'{v:.2f}' for v in result['load_end'])} at end; medians (min-max)",
        "",
        "| rows (CSV) | runs | stepml wall (s) | plain wall (s) | ratio | Ingest / ValidateData / Preprocess peak (MB) "
        "| training PSS (MiB) | all processes: stepml PSS / plain RSS (MiB) | ValidateData+Preprocess MB/s "
        "| pyarrow read_csv MB/s | 1-min load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in result["sizes"]:
        name = label_rows(size["rows"])
        if "skipped" in size:
            lines.append(f"| {name} | skipped: {size['skipped']} |" + " |" * 9)
            continue
        s = size["summary"]
        peaks = " / ".join(_fmt(s["stage_peaks_mb"][stage], 0) for stage in ("Ingest", *STAGES))
        loads = [load for run in size["runs"] for part in ("stepml", "plain") for load in run[part]["load"]]
        failures = len(s["stepml_failures"]) + len(s["plain_failures"])
        lines.append(
            f"| {name} ({size['csv_bytes'] / MB:,.1f} MB) | {len(size['runs'])}"
            f"{f', {failures} failed' if failures else ''} | {_fmt(s['stepml_wall'])} | {_fmt(s['plain_wall'])} "
            f"| {_fmt(s['ratio'], 2)}x | {peaks} | {_fmt(s['training_pss_peak_mib'], 0)} "
            f"| {_fmt(s['stepml_pss_peak_mib'], 0)} / {_fmt(s['plain_rss_peak_mib'], 0)} "
            f"| {_fmt(s['stages_mb_per_s'])} | {_fmt(s['parse_mb_per_s'])} "
            f"| {min(loads):.2f}-{max(loads):.2f} |"
        )
    lines.append("")
    for size in result["sizes"]:
        if "summary" in size:
            s = size["summary"]
            lines.append(
                f"{label_rows(size['rows'])}: the local AWS started (untimed) in {_fmt(s['service_start'])} s; "
                f"the PSS sampler used {_fmt(s['sampler_cpu_seconds'], 2)} s of CPU a run; "
                f"ValidateData+Preprocess / pyarrow parse rate {_fmt_ratio(s['stages_per_parse'])}."
            )
    for size in result["sizes"]:
        for error in size.get("summary", {}).get("stepml_failures", []):
            lines.append(f"\n{label_rows(size['rows'])}, stepml failed: {error[:500]}")
        for error in size.get("summary", {}).get("plain_failures", []):
            lines.append(f"\n{label_rows(size['rows'])}, plain script failed: {error[:500]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=parse_rows, default=parse_rows("10k,100k"), help="sizes (default 10k,100k)")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs per size (default 3)")
    parser.add_argument("--seed", type=int, default=7, help="the generated data's seed (default 7)")
    parser.add_argument("--work-dir", type=Path, help="where the files and state directories go (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a run is killed (default 3600)")
    parser.add_argument("--out", type=Path, help="write the raw figures as JSON here")
    parser.add_argument(
        "--trainer",
        default="auto",
        help="stepml's built-in trainer (default auto, the pipeline's default: it fits a linear model and gradient "
        "boosting and keeps the better); gradient-boosting does the plain script's ML work, the like-for-like ratio",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    with tempfile.TemporaryDirectory(prefix="stepml-scale-", dir=args.work_dir) as work:
        result = measure(args.rows, args.runs, args.seed, Path(work), args.timeout, args.trainer)
    print()
    print(markdown(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
