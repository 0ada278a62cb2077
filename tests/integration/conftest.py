"""Integration fixtures: real pipeline runs on the embedded target, in a private state directory."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stepml.cli import main

REPO = Path(__file__).resolve().parents[2]


def stepml_command(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``stepml ARGS`` in a process of its own, with ``env``; its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "stepml.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def project_with_template_change(root: Path, pattern: str, replacement: str, what: str) -> Path:
    """A copy of the project at ``root`` (linked, but for infra/) whose infra/template.yaml has ``pattern``
    replaced once by ``replacement``; ``what`` names the change for the message when the pattern is gone."""
    root.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in {"infra", ".stepml", ".git", ".venv"}:
            (root / entry.name).symlink_to(entry)
    shutil.copytree(REPO / "infra", root / "infra", symlinks=True)
    template = (root / "infra" / "template.yaml").read_text()
    changed, found = re.subn(pattern, replacement, template, count=1)
    assert found == 1, f"the template's {what} moved: update this test"
    (root / "infra" / "template.yaml").write_text(changed)
    return root


@dataclass
class PipelineRun:
    exit_code: int
    result: dict[str, Any]
    output: str


def run_cli(*args: str) -> PipelineRun:
    """``stepml run --json ...`` in this process; the last output line is the JSON result."""
    out = io.StringIO()
    code = main(["run", "--json", *args], out=out)
    text = out.getvalue()
    return PipelineRun(code, json.loads(text.strip().splitlines()[-1]), text)


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("stepml-state")
    mp = pytest.MonkeyPatch()
    mp.setenv("STEPML_STATE_DIR", str(path))
    yield path
    from stepml.embedded.service import stop_service
    from stepml.project import project_layout

    stop_service(project_layout())  # the local AWS the session's commands started in the background
    mp.undo()


@pytest.fixture(scope="session")
def iris_run(state_dir: Path) -> PipelineRun:
    return run_cli("--data", str(REPO / "data" / "iris.csv"))


@pytest.fixture(scope="session")
def diabetes_run(state_dir: Path, iris_run: PipelineRun) -> PipelineRun:
    return run_cli("--data", str(REPO / "data" / "diabetes.csv"), "--target", "target")
