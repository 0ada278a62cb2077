"""The notebook extra (stepml/notebook.py on the Step Functions Data Science SDK) against `stepml local up`.

The SDK needs sagemaker<3, which stays out of the core venv. Run where the SDK is missing (the core venv),
this module checks the install hint and then runs itself in the notebook venv (``.venv/notebook``, built by
``make install`` and ``make test``; ``STEPML_NOTEBOOK_PYTHON`` names another interpreter). It fails, never
skips, when that venv is missing or lacks the SDK.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from stepml.embedded.runtime import free_port
from stepml.targets import TargetError
from tests.integration.conftest import REPO

pytestmark = pytest.mark.slow

SDK_INSTALLED = importlib.util.find_spec("stepfunctions") is not None
NOTEBOOK_PYTHON = Path(os.environ.get("STEPML_NOTEBOOK_PYTHON", REPO / ".venv" / "notebook" / "bin" / "python"))
# Set for the run in the notebook venv, so that a venv without the SDK fails instead of recursing.
INNER_RUN = "STEPML_NOTEBOOK_TEST_INNER"
EXAMPLE = REPO / "notebooks" / "pipeline.ipynb"


if not SDK_INSTALLED:

    def test_without_the_extra_attach_names_the_install_line() -> None:
        from stepml.notebook import attach

        with pytest.raises(ImportError, match=re.escape('pip install -e ".[notebook]"')):
            attach("embedded", endpoint_url="http://127.0.0.1:9")

    def test_notebook_extra_in_its_own_venv() -> None:
        if os.environ.get(INNER_RUN):
            pytest.fail(f"{sys.executable} is the notebook venv but cannot import stepfunctions: rebuild it")
        if not NOTEBOOK_PYTHON.exists():
            pytest.fail(
                f"the notebook venv is missing ({NOTEBOOK_PYTHON}): build it with `make install` "
                "(or `make .venv/notebook/.installed`), or set STEPML_NOTEBOOK_PYTHON"
            )
        completed = subprocess.run(
            [str(NOTEBOOK_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__))],
            cwd=REPO,
            env={**os.environ, INNER_RUN: "1"},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        output = completed.stdout + completed.stderr
        assert completed.returncode == 0, output[-6000:]
        summary = output.strip().splitlines()[-1]
        assert re.search(r"\d+ passed", summary), summary
        assert not re.search(r"skipped|deselected|xfail", summary), summary

else:
    from stepml.notebook import PipelineNotebook, attach

    @dataclass
    class LocalUp:
        endpoint_url: str
        outputs: dict[str, str]

        def client(self, service: str) -> Any:
            return boto3.client(
                service,
                endpoint_url=self.endpoint_url,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )

    @pytest.fixture(scope="module")
    def local_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalUp]:
        """`stepml local up` on a free port with a private state directory (as in test_targets.py)."""
        state_dir = tmp_path_factory.mktemp("notebook-local-up")
        port = free_port()
        env = {**os.environ, "STEPML_STATE_DIR": str(state_dir)}
        server = subprocess.Popen(
            [sys.executable, "-m", "stepml.cli", "local", "up", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 180  # a loaded 2-core machine starts it in 5-25 s
        while not (state_dir / "local.json").exists():
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"stepml local up did not start:\n{server.stdout.read() if server.stdout else ''}")
            time.sleep(0.2)
        endpoint = f"http://127.0.0.1:{port}"
        stack = boto3.client(
            "cloudformation",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).describe_stacks(StackName="stepml-local")["Stacks"][0]
        yield LocalUp(endpoint, {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]})
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    @pytest.fixture(scope="module")
    def pipeline(local_up: LocalUp) -> PipelineNotebook:
        return attach("embedded", endpoint_url=local_up.endpoint_url)

    @dataclass
    class FinishedRun:
        execution: Any
        outcome: Any
        printed: str
        visited: list[str]

    @pytest.fixture(scope="module")
    def finished(local_up: LocalUp, pipeline: PipelineNotebook) -> FinishedRun:
        """iris.csv uploaded to the stack's data bucket, started through the SDK and followed to its end."""
        bucket = local_up.outputs["DataBucketName"]
        local_up.client("s3").put_object(
            Bucket=bucket, Key="datasets/notebook/iris.csv", Body=(REPO / "data" / "iris.csv").read_bytes()
        )
        execution = pipeline.start(
            f"s3://{bucket}/datasets/notebook/iris.csv", name="notebook-iris", model_name="iris-notebook"
        )
        printed = io.StringIO()
        outcome = pipeline.follow(execution, poll_seconds=0.2, timeout_seconds=300, out=printed)
        # The states visited, read from the history with plain boto3 rather than through the SDK.
        history = local_up.client("stepfunctions").get_execution_history(
            executionArn=execution.execution_arn, maxResults=1000
        )["events"]
        visited = [e["stateEnteredEventDetails"]["name"] for e in history if e["type"].endswith("StateEntered")]
        return FinishedRun(execution, outcome, printed.getvalue(), visited)

    def _script_value(html: str, pattern: str) -> Any:
        """A JSON value the SDK's widget script embeds (``var definition = …;``, ``var events = …``)."""
        match = re.search(pattern, html, re.DOTALL)
        assert match, f"{pattern!r} not in the rendered HTML"
        return json.loads(match.group(1))

    def test_attach_finds_the_stacks_state_machine(local_up: LocalUp, pipeline: PipelineNotebook) -> None:
        assert pipeline.workflow.state_machine_arn == local_up.outputs["StateMachineArn"]
        described = local_up.client("stepfunctions").describe_state_machine(
            stateMachineArn=local_up.outputs["StateMachineArn"]
        )
        assert pipeline.workflow.name == described["name"]

    def test_start_and_follow_an_iris_run_to_success(local_up: LocalUp, finished: FinishedRun) -> None:
        arn = finished.execution.execution_arn
        described = local_up.client("stepfunctions").describe_execution(executionArn=arn)
        assert described["status"] == "SUCCEEDED", described.get("cause")
        assert json.loads(described["input"])["dataset"].endswith("/datasets/notebook/iris.csv")
        assert finished.outcome.status == "SUCCEEDED"
        assert finished.outcome.model_name == "iris-notebook"
        assert finished.outcome.model_version >= 1
        assert finished.outcome.metrics["accuracy"] > 0.8
        assert finished.execution.status.value == "SUCCEEDED"
        assert [s["name"] for s in finished.outcome.states] == finished.visited
        assert {"Ingest", "Train", "Register"} <= set(finished.visited)
        for state in finished.visited:
            assert re.search(rf"✓ {state}\s", finished.printed), state
        assert "Execution   SUCCEEDED" in finished.printed

    def test_render_progress_names_the_states_visited(pipeline: PipelineNotebook, finished: FinishedRun) -> None:
        rendering = pipeline.render(finished.execution)
        events = _script_value(rendering.html, r"var events = \{ 'events': (.*?) \};\n")
        entered = [e["stateEnteredEventDetails"]["name"] for e in events if e["type"].endswith("StateEntered")]
        assert entered == finished.visited
        definition = _script_value(rendering.html, r"var definition = (.*?);\n")
        assert set(finished.visited) <= set(definition["States"])
        assert set(definition["States"]) - set(finished.visited), "the graph should include unvisited states too"
        # The fallback that renders without RequireJS (JupyterLab) and the plain text name the same states.
        table = rendering.table_html()
        assert re.findall(r"<tr><td>([^<]+)</td>", table) == finished.visited
        assert rendering._repr_html_().startswith(rendering.html)
        assert "Execution   SUCCEEDED" in str(rendering) and "iris-notebook v" in str(rendering)

    def test_graph_has_every_state_of_the_deployed_definition(local_up: LocalUp, pipeline: PipelineNotebook) -> None:
        deployed = json.loads(
            local_up.client("stepfunctions").describe_state_machine(
                stateMachineArn=local_up.outputs["StateMachineArn"]
            )["definition"]
        )
        rendering = pipeline.graph()
        assert _script_value(rendering.html, r"var definition = (.*?);\n")["States"].keys() == deployed["States"].keys()
        assert f"starts at {deployed['StartAt']}" in rendering.text

    def test_reattach_to_an_execution_by_name(pipeline: PipelineNotebook, finished: FinishedRun) -> None:
        again = pipeline.execution("notebook-iris")
        assert again.execution_arn == finished.execution.execution_arn
        assert again.get_output()["registration"]["model_name"] == "iris-notebook"
        with pytest.raises(TargetError, match="no execution 'never-started'"):
            pipeline.execution("never-started")

    def test_aws_and_localstack_code_paths_attach_to_local_up(
        local_up: LocalUp, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for target in ("aws", "localstack"):
            attached = attach(target, endpoint_url=local_up.endpoint_url, stack_name="stepml-local")
            assert attached.workflow.state_machine_arn == local_up.outputs["StateMachineArn"], target

    def test_missing_stack_is_a_clear_error(local_up: LocalUp) -> None:
        with pytest.raises(TargetError, match=r"no stack 'nope'.*deploy it first"):
            attach("embedded", endpoint_url=local_up.endpoint_url, stack_name="nope")

    def test_embedded_without_local_up_starts_the_local_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from stepml.embedded.service import running_service, stop_service
        from stepml.project import project_layout

        monkeypatch.setenv("STEPML_STATE_DIR", str(tmp_path))
        try:
            attached = attach("embedded")
            service = running_service(project_layout())
            assert service is not None and service.background
            assert attached.state_machine_arn.endswith(":stateMachine:stepml-local-PipelineStateMachine")
        finally:
            stop_service(project_layout())
        with pytest.raises(TargetError, match="unknown target 'gcp'"):
            attach("gcp")

    def test_missing_sdk_is_an_import_error_with_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "stepfunctions.workflow", None)  # makes the import fail
        with pytest.raises(ImportError, match=re.escape('pip install -e ".[notebook]"')):
            attach("embedded", endpoint_url="http://127.0.0.1:9")

    def test_importing_the_sdk_leaves_logging_alone_and_prints_nothing() -> None:
        # `import stepfunctions` sets the root logger to ERROR and sagemaker prints config lookups and a
        # deprecation warning; in a fresh interpreter, as in a new kernel, none of that may reach the user.
        script = "import logging; from stepml.notebook import _sdk; _sdk(); print(logging.getLogger().level)"
        completed = subprocess.run(
            [sys.executable, "-W", "default", "-c", script],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert completed.stdout.strip() == str(logging.WARNING), completed.stdout
        assert completed.stderr == ""

    def test_example_notebook_runs_against_local_up(
        local_up: LocalUp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        notebook = json.loads(EXAMPLE.read_text())
        code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
        assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), "commit it without outputs"
        assert "parameters" in code[0]["metadata"].get("tags", [])

        monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no profile or history under $HOME
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config

        config = Config()
        config.HistoryManager.enabled = False
        shell = InteractiveShell.instance(config=config)
        try:
            cells = ["".join(c["source"]) for c in code]
            # Like papermill: the parameters cell, then the overrides, then the rest.
            overrides = f"ENDPOINT_URL = {local_up.endpoint_url!r}\nMODEL_NAME = 'iris-example'"
            for source in [cells[0], overrides, *cells[1:]]:
                result = shell.run_cell(source)
                assert result.success, f"{source}\n-> {result.error_before_exec or result.error_in_exec!r}"
            outcome = shell.user_ns["outcome"]
            assert outcome.status == "SUCCEEDED"
            assert outcome.model_name == "iris-example"
        finally:
            InteractiveShell.clear_instance()
