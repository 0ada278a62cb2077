"""model_quality with each row's columns, dropped rows and the trainer's choice kept in the JSON.

The same benchmark and arguments as ``python -m benchmarks.model_quality``; each result row also gets, from the
run itself: ``columns`` (each column's role and why, from ``stepml run --json``), ``dropped_rows``, and from
the training job's ``metrics.json`` (in its ``output.tar.gz`` on the local S3, read before the state directory
goes) ``selection`` (which algorithm ``auto`` chose and why) and ``training_notes``. That is what explains a
row where the pipeline loses to the baseline.

Usage: ``python -m benchmarks.model_quality_detail [model_quality's arguments]``.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

from benchmarks import model_quality

_last: dict[str, Any] = {}
_run_pipeline = model_quality.run_pipeline
_measure = model_quality.measure


def training_metrics(s3: model_quality.LocalS3, run: str) -> dict[str, Any]:
    """The metrics.json of the training job that read ``processed/<run>/`` ({} when there is none)."""
    for key in s3.keys("_sagemaker/training-jobs/"):
        if f"processed/{run}/".encode() not in (s3.get(key) or b""):
            continue
        output = s3.get(f"models/{Path(key).stem}/output/output.tar.gz")
        if output is None:
            return {}
        with tarfile.open(fileobj=io.BytesIO(output)) as archive:
            for member in archive.getmembers():
                if Path(member.name).name == "metrics.json":
                    handle = archive.extractfile(member)
                    if handle is not None:
                        loaded: dict[str, Any] = json.loads(handle.read())
                        return loaded
    return {}


def run_pipeline(case: model_quality.Case, env: dict[str, str]) -> tuple[dict[str, Any], float]:
    result, wall = _run_pipeline(case, env)
    _last.clear()
    _last["result"] = result
    return result, wall


def measure(case: model_quality.Case, env: dict[str, str]) -> dict[str, Any]:
    record = _measure(case, env)
    result = _last.get("result") or {}
    record["columns"] = result.get("columns")
    record["dropped_rows"] = result.get("dropped_rows")
    run = str(result.get("execution_arn") or "").rsplit(":", 1)[-1]
    try:
        metrics = training_metrics(model_quality.LocalS3(env), run) if run else {}
    except Exception as error:  # a detail, not a reason to lose the row
        metrics = {"error": f"{type(error).__name__}: {error}"[:300]}
    record["selection"] = metrics.get("selection")
    record["training_notes"] = metrics.get("notes")
    record["training_sizes"] = {k: metrics.get(k) for k in ("n_train", "n_validation", "n_test") if k in metrics}
    return record


def main(argv: list[str] | None = None) -> int:
    model_quality.run_pipeline = run_pipeline  # measure() and main() look both up at call time
    model_quality.measure = measure
    try:
        return model_quality.main(argv)
    finally:
        model_quality.run_pipeline, model_quality.measure = _run_pipeline, _measure


if __name__ == "__main__":
    sys.exit(main())
