"""A training job longer than the stand-in's Lambda timeout completes on the embedded target, trained once.

One run, on a copy of the project whose CreateTrainingJob function has a 45 s Timeout (so 15 s to wait in
each invocation, after the 30 s it keeps back) and whose trainer sleeps 40 s before training: the job runs on
in its own process, each invocation that runs out of time ends with TrainingJobInProgress, the Train state
retries it, and a later attempt returns the completed job. Before, the invocation's time bounded the job and
the run failed with "ran out of time".

It takes ~90 s on 2 cores (a local AWS of its own for the changed template).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO, project_with_template_change, stepml_command

pytestmark = pytest.mark.slow

SLEEP_SECONDS = 40


def _project_with_a_short_training_lambda(root: Path) -> Path:
    return project_with_template_change(
        root,
        r"(      Description: SageMaker stand-in - CreateTrainingJob \(local targets only\)\n"
        r"      CodeUri: \.\./functions/local_sagemaker/\n      Handler: app\.lambda_handler\n      Timeout: )900\n",
        r"\g<1>45\n",
        "CreateTrainingJob function",
    )


def _slow_trainer(folder: Path, marker: Path) -> Path:
    """The built-in trainer, noting each start in ``marker`` and sleeping before it trains."""
    shutil.copytree(REPO / "training", folder, ignore=shutil.ignore_patterns("__pycache__"))
    script = (folder / "train.py").read_text()
    head = "from __future__ import annotations\n"
    assert script.count(head) == 1
    slow = (
        f"import os as _os, time as _time\nwith open({str(marker)!r}, 'a') as _marker:\n"
        f"    _marker.write(f'{{_os.getpid()}}\\n')\n_time.sleep({SLEEP_SECONDS})\n"
    )
    (folder / "train.py").write_text(script.replace(head, head + slow))
    return folder


@pytest.fixture(scope="module")
def slow_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("training-outlives-lambda")
    marker = base / "started.txt"
    env = {
        **os.environ,
        "STEPML_PROJECT_ROOT": str(_project_with_a_short_training_lambda(base / "project")),
        "STEPML_STATE_DIR": str(base / "state"),
    }
    trainer = _slow_trainer(base / "trainer", marker)
    try:
        ran = stepml_command(
            env,
            *("run", "--json", "--data", str(REPO / "data" / "iris.csv")),
            *("--trainer", str(trainer), "--serving-entry-point", "inference.py"),
            timeout=600,
        )
    finally:
        stepml_command(env, "local", "down", timeout=60)
    log = (base / "state" / "logs" / "stepml-local-LocalSageMakerCreateTrainingJobFunction.log").read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    reports = [line["record"] for line in lines if line.get("type") == "platform.report"]
    waits = [line for line in lines if line.get("error_type") == "TrainingJobInProgress"]
    return {
        "exit_code": ran.returncode,
        "output": ran.stdout + ran.stderr,
        "result": json.loads(ran.stdout.strip().splitlines()[-1]),
        "reports": reports,
        "waits": waits,
        "starts": marker.read_text().split() if marker.exists() else [],
    }


def test_a_job_longer_than_the_lambda_timeout_completes_and_the_run_succeeds(slow_run: dict[str, Any]) -> None:
    assert slow_run["exit_code"] == 0, slow_run["output"]
    assert slow_run["result"]["status"] == "SUCCEEDED"


def test_the_train_state_waited_over_several_invocations_and_trained_once(slow_run: dict[str, Any]) -> None:
    waits = slow_run["waits"]
    assert len(waits) >= 2, slow_run["reports"]
    assert all(w["level"] == "INFO" and "exception" not in w for w in waits), "waiting is logged as a failure"
    assert all(r["metrics"]["durationMs"] < 45_000 for r in slow_run["reports"]), "an invocation hit its timeout"
    assert len(slow_run["starts"]) == 1, f"the script started {len(slow_run['starts'])} times"
