"""A stage that goes over its MemorySize fails the run on the embedded target as it would on AWS.

One run, on a copy of the project whose template gives ValidateData and Preprocess Lambda's smallest
MemorySize (128 MB, the DataStageMemorySize parameter's minimum): ValidateData, which imports pandas and
pyarrow, cannot fit, so its worker is killed and the run fails with Lambda's Runtime.OutOfMemory and a
message naming the function, its MemorySize and what to do. (What exactly is killed when, with real
allocations, is tested in tests/unit/test_lambda_runner.py.)

It takes ~50 s on 2 cores (a local AWS of its own for the changed template, ~15 s of it the run): it is the
one check that the limit reaches a real run's failure, end to end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO, project_with_template_change, stepml_command

pytestmark = pytest.mark.slow


def _project_with_small_data_stages(root: Path) -> Path:
    """The project, linked, with infra/template.yaml's DataStageMemorySize default at 128."""
    return project_with_template_change(
        root,
        r"(  DataStageMemorySize:\n    Type: Number\n    Default: )2048\n",
        r"\g<1>128\n",
        "DataStageMemorySize parameter",
    )


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("lambda-memory")
    env = {
        **os.environ,
        "STEPML_PROJECT_ROOT": str(_project_with_small_data_stages(base / "project")),
        "STEPML_STATE_DIR": str(base / "state"),
    }
    try:
        ran = stepml_command(env, "run", "--json", "--data", str(REPO / "data" / "iris.csv"))
    finally:
        stepml_command(env, "local", "down", timeout=60)
    result: dict[str, Any] = json.loads(ran.stdout.strip().splitlines()[-1])
    log = (base / "state" / "logs" / "stepml-local-ValidateDataFunction.log").read_text()
    return {"exit_code": ran.returncode, "result": result, "log": log}


def test_a_stage_over_its_memory_size_fails_the_run_with_lambdas_error_and_says_what_to_do(
    failed_run: dict[str, Any],
) -> None:
    result = failed_run["result"]
    assert failed_run["exit_code"] != 0
    assert (result["status"], result["failed_state"], result["error"]) == (
        "FAILED",
        "ValidateData",
        "Runtime.OutOfMemory",
    )
    cause = result["cause"]
    assert "Error: Runtime exited with error: signal: killed" in cause
    assert "stepml-local-ValidateDataFunction ran out of memory" in cause and "MemorySize of 128 MB" in cause
    assert "DataStageMemorySize" in cause
    report = [line for line in failed_run["log"].splitlines() if '"platform.report"' in line][-1]
    record = json.loads(report)["record"]
    assert (record["status"], record["errorType"], record["metrics"]["memorySizeMB"]) == (
        "error",
        "Runtime.OutOfMemory",
        128,
    )
