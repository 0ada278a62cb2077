"""The InferenceFunction's handler in process on one row: p50, mean, p99 and the process CPU per call (the
prediction log writer's thread included) over ``--calls``, as JSON.

For old and new code side by side: run it alternately from two checkouts (``PYTHONPATH=DIR:DIR/functions/shared``
puts another checkout's code first) against one state directory whose local AWS was started in the
foreground (``stepml local up``: a process of other code does not restart it), e.g.::

    python -m benchmarks.inference_handler STATE_DIR --calls 3000
    (cd DIR && PYTHONPATH=DIR:DIR/functions/shared python -m benchmarks.inference_handler STATE_DIR --calls 3000)

STATE_DIR needs a deployed model (``stepml run`` into it). docs/serving.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROW = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--log", choices=["off", "background"], default="off", help="the prediction log")
    parser.add_argument(
        "--switch-interval",
        type=float,
        metavar="SECONDS",
        help="sys.setswitchinterval for the run (default: Python's, 0.005): how long the log writer's thread may "
        "hold the GIL while a call waits",
    )
    args = parser.parse_args(argv)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    os.environ["STEPML_STATE_DIR"] = str(args.state_dir)
    import stepml
    from stepml.serve import FUNCTION_ID, LocalApi, proxy_event

    api = LocalApi(log_mode="background")
    api.prepare()
    invoke = api.invoker()
    os.environ["PREDICTION_LOG_SAMPLE_RATE"] = "0" if args.log == "off" else "1"
    sys.modules[f"_stepml_serve_{FUNCTION_ID}"]._app.cache_clear()  # built again with the rate above
    body = json.dumps({"instances": [ROW]}).encode()
    event = proxy_event("POST", "/predict", [("Content-Type", "application/json")], body)
    saved, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115 - the handler's EMF lines
    try:
        for _ in range(300):  # warm: model loaded, caches filled
            invoke(event)
        timings = []
        cpu_started = time.process_time()  # every thread of the process: the log writer's CPU counts too
        for _ in range(args.calls):
            started = time.perf_counter()
            answer = invoke(event)
            timings.append(time.perf_counter() - started)
    finally:
        sys.stdout.close()
        sys.stdout = saved
    if answer["statusCode"] != 200:
        raise SystemExit(f"the handler answered {answer}")
    from pipeline_core.aws.prediction_log import close_background_writers

    close_background_writers(5.0)
    cpu_per_call = (time.process_time() - cpu_started) / args.calls  # not slowed by other processes
    code = Path(stepml.__file__).resolve().parents[1]
    figures = {
        "code": str(code),
        "log": args.log,
        "calls": args.calls,
        "p50_ms": round(statistics.median(timings) * 1000, 3),
        "mean_ms": round(statistics.fmean(timings) * 1000, 3),
        "cpu_ms_per_call": round(cpu_per_call * 1000, 3),
        "p99_ms": round(statistics.quantiles(timings, n=100)[98] * 1000, 3),
        "max_ms": round(max(timings) * 1000, 3),
        "switch_interval_s": sys.getswitchinterval(),
        "load_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
