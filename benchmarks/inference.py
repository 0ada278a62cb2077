"""Speed of the inference API: the handler in process, and ``stepml serve`` over HTTP on loopback.

1. Trains and deploys the bundled iris model with ``stepml run`` into a temporary state directory.
2. The model alone, side by side in one run (interleaved, so a busy machine slows each alike): the
   deployed ``inference.py`` answering one row through scikit-learn's whole pipeline (ColumnTransformer +
   estimator on predict_fn's frame), through the estimator on the fast path's row (the fast path before
   it walked the trees itself), through ``predict_fn`` on a DataFrame (the SageMaker container's path),
   and through ``predict_records`` (the fast path).
3. Handler in process: the InferenceFunction's real handler with its template environment (what
   ``stepml serve`` runs), called directly on API Gateway proxy events for one row; p50/p99 over
   ``--calls``, split into the model's own time (the endpoint runtime alone on the same row) and the
   handler's overhead, with the prediction log off, written in the background, and written per request
   (Lambda's way).
4. HTTP: ``stepml serve`` (``--server granian``, the default, and ``--server gunicorn``) in a subprocess
   per server and worker count, driven by client processes (not threads, so
   the client is not held back by one GIL) on raw keep-alive sockets (see ``_client``: the client shares
   the cores, so it must cost less than the server), all started together once connected, timing every
   request; single-row requests at each concurrency, each run bounded by ``--duration`` and
   ``--max-requests``. ``floor-granian`` and ``floor-gunicorn``: the same servers and proxy events with a
   function that answers a fixed body, the most each server and this client can do on the machine (the rest
   is the function's). Then RSS before and after ``--memory-requests`` more, and the time a stop takes.

Usage: ``python -m benchmarks.inference [--calls 2000] [--duration 10] [--concurrency 1,2,8]
[--workers 1,2] [--servers granian,gunicorn,floor-granian,floor-gunicorn,legacy,granian@baseline]
[--baseline DIR] [--log-sample-rate RATE] [--out results.json]``. ``<server>@baseline`` runs that server from
``--baseline DIR``, a checkout of other code (``git archive <commit> | tar -x -C DIR``): old and new side by side.
docs/serving.md has the figures and the machine they came from. Each section records the 1-minute load
average at its end (``load_1m``): on a shared machine compare figures taken at similar loads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.http_load import load_1m, python_load, summary_ms

REPO = Path(__file__).resolve().parents[1]
ROW = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}


def body(rows: int) -> bytes:
    return json.dumps({"instances": [ROW] * rows}).encode()


# --- 1. a deployed model -----------------------------------------------------------------------------


def deploy(state_dir: Path) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "stepml.cli", "run", "--json", "--data", str(REPO / "data" / "iris.csv")],
        capture_output=True,
        text=True,
        env={**os.environ, "STEPML_STATE_DIR": str(state_dir)},
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"stepml run failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


# --- 2. the model alone, side by side ------------------------------------------------------------------


def model_side_by_side(calls: int, rounds: int = 20) -> dict[str, Any]:
    """The deployed model on ROW three ways, interleaved in ``rounds`` so load changes hit each alike.

    Uses the model the endpoint stand-in loaded in this process (its ``inference.py`` from the source
    tarball, its bundle from ``model_fn``), so every way runs the deployed code and model.
    """
    from dataclasses import replace

    from pipeline_core.standin import runtime as standin

    models = list(standin._SERVER._models.values())
    if not models:
        raise SystemExit("the endpoint stand-in has no model loaded: the handler did not reach it")
    module, bundle = models[-1].module, models[-1].bundle
    plan = bundle.get("_fast_plan")
    if plan is None or getattr(plan, "forest", None) is None:
        # an inference.py from before the tree walk, or a model it does not serve
        return {"skipped": "the deployed inference.py or model has no tree walk", "load_1m": load_1m()}
    # The fast path as it was before the tree walk: the same rows, then the estimator's own predict.
    estimator_bundle = {**bundle, "_fast_plan": replace(plan, forest=None)}
    frame = module.input_fn(body(1), "application/json")

    def sklearn_pipeline() -> list[Any]:
        # predict_fn's frame conversion, then scikit-learn's whole pipeline (ColumnTransformer + estimator)
        with module._threads(bundle, 1):
            return list(module._to_list(bundle["pipeline"].predict(module._prepare_frame(frame, bundle)), bundle))

    ways: dict[str, Any] = {
        "sklearn_pipeline": sklearn_pipeline,
        "estimator_on_fast_rows": lambda: module.predict_records(estimator_bundle, [ROW]),
        # what the SageMaker container runs per request after input_fn: the frame, then the fast path
        "container_predict_fn": lambda: module.predict_fn(frame, bundle),
        "tree_walk": lambda: module.predict_records(bundle, [ROW]),
    }
    answers = {name: way() for name, way in ways.items()}
    if len({json.dumps(answer) for answer in answers.values()}) != 1:
        raise SystemExit(f"the ways disagree on the row: {answers}")
    timings: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            for _ in range(max(1, calls // rounds)):
                started = time.perf_counter()
                way()
                timings[name].append(time.perf_counter() - started)
    results: dict[str, Any] = {name: summary_ms(values) for name, values in timings.items()}
    fastest = results["tree_walk"]["p50_ms"]
    results["p50_ratio_to_tree_walk"] = {name: round(results[name]["p50_ms"] / fastest, 1) for name in ways}
    results["trees"] = int(plan.forest.roots.size)
    results["depth"] = plan.forest.depth
    results["load_1m"] = load_1m()
    return results


# --- 3. the handler in process -----------------------------------------------------------------------


def handler_in_process(state_dir: Path, calls: int) -> dict[str, Any]:
    """p50/p99 of the handler on one row, and of the model alone, in this process."""
    os.environ["STEPML_STATE_DIR"] = str(state_dir)
    from stepml.serve import FUNCTION_ID, LocalApi, proxy_event

    api = LocalApi(log_mode="background")
    api.prepare()
    invoke = api.invoker()
    module = sys.modules[f"_stepml_serve_{FUNCTION_ID}"]
    results: dict[str, Any] = {"model": api.model_name, "load_1m_before": load_1m()}
    devnull = open(os.devnull, "w")  # noqa: SIM115 - the handler's log lines would time the terminal
    saved = sys.stdout
    try:
        sys.stdout = devnull
        for mode, rate in (("off", "0"), ("background", "1"), ("sync", "1")):
            os.environ["PREDICTION_LOG_SAMPLE_RATE"] = rate
            os.environ["PREDICTION_LOG_MODE"] = mode if mode != "off" else "sync"
            module._app.cache_clear()
            event = proxy_event("POST", "/predict", [("Content-Type", "application/json")], body(1))
            for _ in range(200):  # warm: model loaded, caches filled
                invoke(event)
            timings = []
            for _ in range(calls):
                started = time.perf_counter()
                answer = invoke(event)
                timings.append(time.perf_counter() - started)
                assert answer["statusCode"] == 200, answer
            results[f"handler_log_{mode}"] = summary_ms(timings)
        # The model alone: the endpoint runtime the handler calls (stand-in + inference.predict_records).
        from pipeline_core.aws.sagemaker import endpoint_runtime

        endpoint = f"{os.environ['ENDPOINT_NAME_PREFIX']}-{api.model_name}-ep"  # docs/architecture.md naming
        runtime = endpoint_runtime()
        timings = []
        for _ in range(calls):
            started = time.perf_counter()
            runtime.predict(endpoint, [ROW])
            timings.append(time.perf_counter() - started)
        results["model_only"] = summary_ms(timings)
        results["load_1m"] = load_1m()
        results["side_by_side"] = model_side_by_side(calls)
    finally:
        sys.stdout = saved
        devnull.close()
        from pipeline_core.aws.prediction_log import close_background_writers

        close_background_writers(5.0)
    overhead = results["handler_log_off"]["p50_ms"] - results["model_only"]["p50_ms"]
    results["handler_overhead_p50_ms"] = round(overhead, 3)
    return results


# --- 4. HTTP -------------------------------------------------------------------------------------------


SERVERS = ("granian", "gunicorn", "floor-granian", "floor-gunicorn")
# Each server's command: ``stepml serve`` on either HTTP server; ``floor-*`` (benchmarks/floor_serve.py): the
# same server with a function that does nothing; ``legacy`` (benchmarks/legacy_serve.py): http.server.
COMMANDS = {
    "granian": ["stepml.serve", "--server", "granian"],
    "gunicorn": ["stepml.serve", "--server", "gunicorn"],
    "floor-granian": ["benchmarks.floor_serve", "--server", "granian"],
    "floor-gunicorn": ["benchmarks.floor_serve", "--server", "gunicorn"],
    "legacy": ["benchmarks.legacy_serve"],
}


# ``--baseline DIR``: a checkout of other code (``git archive <commit> | tar -x -C DIR``) that servers named
# ``<server>@baseline`` run from, so old and new code are measured side by side in one run.
BASELINE_SUFFIX = "@baseline"


def start_server(
    state_dir: Path, server: str, workers: int, log_sample_rate: float | None = None, baseline: Path | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """One of COMMANDS in a subprocess on a free port, once it answers ``GET /health``; a server named
    ``<name>@baseline`` runs ``<name>`` from the ``baseline`` checkout (its modules first on the path)."""
    from stepml.embedded.runtime import free_port

    port = free_port()
    log = open(state_dir / f"serve-{server}-{workers}.out", "wb")  # noqa: SIM115 - closed with the process
    rate = [] if log_sample_rate is None else ["--log-sample-rate", str(log_sample_rate)]
    name, from_baseline = server.removesuffix(BASELINE_SUFFIX), server.endswith(BASELINE_SUFFIX)
    module, *options = COMMANDS[name]
    env = {**os.environ, "STEPML_STATE_DIR": str(state_dir)}
    root = REPO  # benchmarks.* are modules of the repository, wherever the benchmark is started from
    if from_baseline:
        if baseline is None:
            raise SystemExit(f"{server}: give --baseline DIR (a checkout of the code to compare with)")
        root = baseline.resolve()
        # ahead of this checkout's editable install; the local AWS restarts for the other code
        env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "functions" / "shared")])
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(port), "--workers", str(workers), *options, *rate],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=root,
    )
    deadline = time.monotonic() + 240  # a local AWS restarted for the other code takes a while at load
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                if answer.status == 200:
                    return process, port
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.3)
    process.kill()
    raise SystemExit(f"the {server} server did not start; see {log.name}")


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants (the serving workers), in MB."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += int(next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), "0"))
        pending += [int(child) for child in children]
    return round(total / 1024, 1)


def stop_seconds(process: subprocess.Popen[bytes]) -> float:
    """SIGINT (Ctrl-C), then how long the server takes to exit (killed after 120 s)."""
    started = time.monotonic()
    process.send_signal(signal.SIGINT if process.args[2] == "stepml.serve" else signal.SIGTERM)  # type: ignore[index]
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return round(time.monotonic() - started, 2)


def http_load(
    state_dir: Path,
    servers: list[str],
    workers: list[int],
    concurrency: list[int],
    duration: float,
    max_requests: int,
    memory_requests: int,
    log_sample_rate: float | None = None,
    baseline: Path | None = None,
) -> list[dict[str, Any]]:
    """Each server and worker count: latency and rate at each concurrency (one row), then RSS before and
    after ``memory_requests`` more requests, and the time a stop takes after them."""
    rows = []
    for count in workers:
        for server in servers:
            process, port = start_server(state_dir, server, count, log_sample_rate, baseline)
            try:
                payload = body(1)
                python_load(port, payload, 8, 2.0, 2000)  # warm every worker before measuring
                for clients in concurrency:
                    figures = python_load(port, payload, clients, duration, max_requests)
                    rows.append({"server": server, "workers": count, "rows": 1, "concurrency": clients, **figures})
                    print(json.dumps(rows[-1]), flush=True)
                memory: dict[str, Any] = {"rss_mb_before": tree_rss_mb(process.pid)}
                if memory_requests:
                    done = python_load(port, payload, 8, 3600.0, memory_requests)
                    memory.update(requests=done["requests"], rps=done["rps"], rss_mb_after=tree_rss_mb(process.pid))
                memory["stop_seconds"] = stop_seconds(process)
                rows.append({"server": server, "workers": count, "memory": memory, "load_1m": load_1m()})
                print(json.dumps(rows[-1]), flush=True)
            finally:
                if process.poll() is None:
                    process.kill()
    return rows


def run(
    calls: int = 2000,
    duration: float = 10.0,
    concurrency: list[int] | None = None,
    workers: list[int] | None = None,
    max_requests: int = 50_000,
    memory_requests: int = 100_000,
    log_sample_rate: float | None = None,
    servers: list[str] | None = None,
    handler: bool = True,
    baseline: Path | None = None,
) -> dict[str, Any]:
    """Everything above; returns the figures (``benchmarks/run_all.py`` calls this)."""
    with tempfile.TemporaryDirectory(prefix="stepml-bench-serve-") as temp:
        state_dir = Path(temp)
        deployed = deploy(state_dir)
        in_process = handler_in_process(state_dir, calls) if handler else None
        print(json.dumps({"handler": in_process}), flush=True)
        load = http_load(
            state_dir,
            servers or list(SERVERS),
            workers or [2],
            concurrency or [1, 8, 200],
            duration,
            max_requests,
            memory_requests,
            log_sample_rate,
            baseline,
        )
    import sklearn

    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "platform": platform.platform(),
        },
        "model": {"name": deployed.get("model_name"), "version": deployed.get("model_version")},
        "handler": in_process,
        "http_log_sample_rate": "template" if log_sample_rate is None else log_sample_rate,
        "http": load,
    }


def print_report(figures: dict[str, Any]) -> None:
    handler = figures["handler"]
    print(f"\nmachine: {figures['machine']}")
    if handler is None:
        return print_http(figures)
    print("handler in process, 1 row (ms):")
    for key in ("model_only", "handler_log_off", "handler_log_background", "handler_log_sync"):
        print(f"  {key:<24} p50 {handler[key]['p50_ms']:>7.3f}   p99 {handler[key]['p99_ms']:>7.3f}")
    print(f"  handler overhead (p50, log off, minus the model): {handler['handler_overhead_p50_ms']:.3f} ms")
    print(f"  load average (1 min) before/after: {handler['load_1m_before']} / {handler['load_1m']}")
    side = handler["side_by_side"]
    if "skipped" in side:
        print(f"model alone, side by side: skipped ({side['skipped']})")
        return print_http(figures)
    print(f"model alone, 1 row, side by side ({side['trees']} trees, depth {side['depth']}; load {side['load_1m']}):")
    for key in ("sklearn_pipeline", "estimator_on_fast_rows", "container_predict_fn", "tree_walk"):
        ratio = side["p50_ratio_to_tree_walk"][key]
        print(f"  {key:<24} p50 {side[key]['p50_ms']:>7.3f}   p99 {side[key]['p99_ms']:>7.3f}   x{ratio} the tree walk")
    print_http(figures)


def print_http(figures: dict[str, Any]) -> None:
    print(f"HTTP, 1 row (loopback; prediction log sample rate: {figures['http_log_sample_rate']}):")
    columns = ("server", 8), ("workers", 7), ("clients", 7), ("req/s", 8), ("p50 ms", 8), ("p99 ms", 8), ("errors", 6)
    print("  " + " ".join(f"{name:>{width}}" for name, width in columns) + "   load")
    for row in figures["http"]:
        if "memory" in row:
            continue
        print(
            f"  {row['server']:>8} {row['workers']:>7} {row['concurrency']:>7} {row['rps']:>8.1f} "
            f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['errors']:>6} {row['load_1m']:>6}"
        )
    print("memory (RSS of the server's processes, MB) and stop (s, SIGINT):")
    for row in figures["http"]:
        if "memory" in row:
            print(f"  {row['server']:>8} {row['workers']:>7}  {row['memory']}  load {row['load_1m']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="handler calls per measurement")
    parser.add_argument("--no-handler", action="store_true", help="skip the in-process handler section")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per HTTP run")
    parser.add_argument("--concurrency", default="1,8,200", help="comma-separated connection counts")
    parser.add_argument("--workers", default="2", help="comma-separated worker counts (each server)")
    parser.add_argument("--servers", default=",".join(SERVERS), help=", ".join(COMMANDS))
    parser.add_argument("--max-requests", type=int, default=50_000, help="cap per HTTP run")
    parser.add_argument(
        "--memory-requests", type=int, default=100_000, help="requests between the two RSS readings (0: none)"
    )
    parser.add_argument(
        "--log-sample-rate",
        type=float,
        metavar="RATE",
        help="`stepml serve --log-sample-rate` for the HTTP runs (default: the template's, every request logged)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="a checkout of the code to compare with: servers named <server>@baseline run from it",
    )
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    figures = run(
        args.calls,
        args.duration,
        [int(c) for c in args.concurrency.split(",")],
        [int(w) for w in args.workers.split(",")],
        args.max_requests,
        args.memory_requests,
        args.log_sample_rate,
        args.servers.split(","),
        not args.no_handler,
        args.baseline,
    )
    print_report(figures)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
