"""The embedded target never loses data: real `stepml` processes at once, killed, on a full disk.

Each test has a state directory of its own and drives the CLI as a user would, in subprocesses, so that
what crosses process boundaries (two commands at once, a kill, a restart) is what is tested.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO

pytestmark = pytest.mark.slow

IRIS = str(REPO / "data" / "iris.csv")
DIABETES = str(REPO / "data" / "diabetes.csv")


@dataclass
class Project:
    """A private state directory and the environment to run `stepml` commands against it."""

    state_dir: Path
    env: dict[str, str]

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stepml.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "stepml.cli", *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str) -> dict[str, Any]:
        done = self.cli("run", "--json", *args)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    def json_of(self, *args: str) -> Any:
        done = self.cli(*args, "--json")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def models(self) -> list[dict[str, Any]]:
        return list(self.json_of("models"))

    def runs(self) -> list[dict[str, Any]]:
        return list(self.json_of("runs"))

    def stop(self) -> None:
        self.cli("local", "down", timeout=120)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    env = {**os.environ, "STEPML_STATE_DIR": str(tmp_path / "state")}
    env.pop("AWS_ENDPOINT_URL", None)
    made = Project(tmp_path / "state", env)
    yield made
    made.stop()


def _artifact_readable(project: Project, uri: str) -> bool:
    """Whether the object at ``uri`` can be read from the embedded S3 (through a `stepml` process)."""
    code = (
        "import sys\n"
        "from stepml.targets import embedded_target\n"
        "from stepml.project import project_layout\n"
        "t = embedded_target(project_layout())\n"
        "b, k = sys.argv[1].removeprefix('s3://').split('/', 1)\n"
        "print(len(t.client('s3').get_object(Bucket=b, Key=k)['Body'].read()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, uri], env=project.env, capture_output=True, text=True, timeout=300, check=False
    )
    return done.returncode == 0 and int(done.stdout.strip().splitlines()[-1]) > 0


def test_two_runs_started_together_both_keep_their_versions_records_and_artifacts(project: Project) -> None:
    # Same model twice and another model, all at once, on one fresh state directory.
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(
            pool.map(
                lambda args: project.run(*args),
                [
                    ("--data", IRIS, "--model-name", "flowers"),
                    ("--data", IRIS, "--model-name", "flowers"),
                    ("--data", DIABETES, "--target", "target"),
                ],
            )
        )
    assert all(r["status"] == "SUCCEEDED" for r in results)
    models = project.models()
    assert sorted(m["version"] for m in models if m["model_name"] == "flowers") == [1, 2]
    assert [m["version"] for m in models if m["model_name"] == "diabetes"] == [1]
    runs = {r["execution_arn"]: r for r in project.runs()}
    for result in results:
        assert runs[result["execution_arn"]]["status"] == "SUCCEEDED"
        assert _artifact_readable(project, result["model_artifact"]), result["model_artifact"]


def test_a_run_while_local_up_serves_is_kept_when_local_up_stops(project: Project) -> None:
    up = project.popen("local", "up", "--port", "0")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and project.cli("local", "status").returncode != 0:
            assert up.poll() is None, up.communicate()
            time.sleep(0.5)
        result = project.run("--data", IRIS)
        assert result["status"] == "SUCCEEDED"
        time.sleep(6)  # local up's periodic save must not undo the run
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=120)
    versions = [(m["model_name"], m["version"]) for m in project.models()]
    assert (result["model_name"], result["model_version"]) in versions
    assert _artifact_readable(project, result["model_artifact"])
    assert result["execution_arn"] in {r["execution_arn"] for r in project.runs()}
