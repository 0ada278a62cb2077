"""The local AWS through the real AWS CLI, as a user's scripts would see it (`make install` builds .venv/awscli).

The CLI is v1, the one on PyPI; v2's `logs tail` calls FilterLogEvents, which is checked here directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO, stepml_command

pytestmark = pytest.mark.slow

AWS = Path(os.environ.get("STEPML_AWS_CLI", REPO / ".venv" / "awscli" / "bin" / "aws"))


@dataclass
class LocalAws:
    env: dict[str, str]
    state_dir: Path
    endpoint_url: str = ""

    def stepml(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return stepml_command(self.env, *args, timeout=timeout)

    def aws(self, *args: str) -> Any:
        done = subprocess.run(
            [str(AWS), "--endpoint-url", self.endpoint_url, "--output", "json", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"aws {' '.join(args)}: {done.stderr}"
        return json.loads(done.stdout) if done.stdout.strip() else None

    def start(self) -> None:
        started = self.stepml("local", "up", "--background")
        assert started.returncode == 0, started.stderr
        status = json.loads(self.stepml("local", "status", "--json").stdout)
        self.endpoint_url = status["endpoint_url"]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAws]:
    assert AWS.exists(), f"{AWS} is missing: `make install` builds it (or set STEPML_AWS_CLI)"
    state_dir = tmp_path_factory.mktemp("aws-cli-state")
    env = {
        **os.environ,
        "STEPML_STATE_DIR": str(state_dir),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env.pop("AWS_ENDPOINT_URL", None)
    made = LocalAws(env, state_dir)
    ran = made.stepml("run", "--json", "--data", str(REPO / "data" / "iris.csv"), "--name", "cli-visible")
    assert ran.returncode == 0, ran.stderr
    made.start()
    yield made
    made.stepml("local", "down")


def _machine(local: LocalAws) -> str:
    """The pipeline's state machine (batch scoring's is the stack's other one)."""
    machines = {
        m["name"]: m["stateMachineArn"] for m in local.aws("stepfunctions", "list-state-machines")["stateMachines"]
    }
    assert set(machines) == {"stepml-local-PipelineStateMachine", "stepml-local-BatchScoringStateMachine"}
    return str(machines["stepml-local-PipelineStateMachine"])


def test_executions_of_earlier_commands_and_lives_are_listed_with_their_histories(local: LocalAws) -> None:
    assert local.stepml("local", "down").returncode == 0
    local.start()  # a new local AWS: moto has forgotten the run, the local AWS has not
    machine = _machine(local)
    listed = local.aws("stepfunctions", "list-executions", "--state-machine-arn", machine)["executions"]
    assert [(e["name"], e["status"]) for e in listed] == [("cli-visible", "SUCCEEDED")]
    arn = listed[0]["executionArn"]
    described = local.aws("stepfunctions", "describe-execution", "--execution-arn", arn)
    assert described["status"] == "SUCCEEDED" and json.loads(described["output"])["registration"]["version"] == 1
    events = local.aws("stepfunctions", "get-execution-history", "--execution-arn", arn)["events"]
    assert events[0]["type"] == "ExecutionStarted" and events[-1]["type"] == "ExecutionSucceeded"
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if e["type"].endswith("StateEntered")]
    assert entered[:2] == ["ValidateInput", "Ingest"] and "Train" in entered
    failed = local.aws("stepfunctions", "list-executions", "--state-machine-arn", machine, "--status-filter", "FAILED")
    assert failed["executions"] == []


def test_the_stack_is_known_by_the_name_the_banner_gives(local: LocalAws) -> None:
    [stack] = local.aws("cloudformation", "describe-stacks", "--stack-name", "stepml-local")["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["StateMachineArn"] == _machine(local)
    runs = local.stepml(
        "runs", "--target", "aws", "--endpoint-url", local.endpoint_url, "--stack-name", "stepml-local", "--json"
    )
    assert runs.returncode == 0 and json.loads(runs.stdout)[0]["name"] == "cli-visible", runs.stderr


def test_validate_state_machine_definition(local: LocalAws, tmp_path: Path) -> None:
    good = local.aws("stepfunctions", "describe-state-machine", "--state-machine-arn", _machine(local))["definition"]
    path = tmp_path / "definition.json"
    path.write_text(good)
    answer = local.aws("stepfunctions", "validate-state-machine-definition", "--definition", f"file://{path}")
    assert answer["result"] == "OK"
    path.write_text(json.dumps({"StartAt": "Nowhere", "States": {"A": {"Type": "Succeed"}}}))
    answer = local.aws("stepfunctions", "validate-state-machine-definition", "--definition", f"file://{path}")
    assert answer["result"] == "FAIL"
    assert {d["code"] for d in answer["diagnostics"]} >= {"MISSING_TRANSITION_TARGET"}


def test_an_object_put_with_the_cli_is_kept_across_lives(local: LocalAws, tmp_path: Path) -> None:
    bucket = json.loads(local.stepml("local", "status", "--json").stdout)  # the service is up
    assert bucket
    source = tmp_path / "note.txt"
    source.write_text("kept")
    local.aws(
        "s3api", "put-object", "--bucket", "stepml-local-databucket", "--key", "notes/note.txt", "--body", str(source)
    )
    assert local.stepml("local", "down").returncode == 0
    local.start()
    target = tmp_path / "back.txt"
    local.aws("s3api", "get-object", "--bucket", "stepml-local-databucket", "--key", "notes/note.txt", str(target))
    assert target.read_text() == "kept"


def test_the_stacks_functions_logs_alarms_dashboard_and_rule_are_visible(local: LocalAws) -> None:
    from stepml.embedded.template import stack_model
    from stepml.project import project_layout

    stack = stack_model(project_layout().template, "stepml-local", {"Target": "local"})
    names = {f["FunctionName"] for f in local.aws("lambda", "list-functions")["Functions"]}
    assert names == {spec.name for spec in stack.functions.values()}
    function = local.aws("lambda", "get-function", "--function-name", stack.functions["IngestFunction"].name)
    assert function["Configuration"]["Environment"]["Variables"]["DATA_BUCKET"] == stack.data_bucket
    groups = {g["logGroupName"] for g in local.aws("logs", "describe-log-groups")["logGroups"]}
    assert "/stepml/dev/functions" in groups
    # a run after this local AWS started: its functions' lines reach CloudWatch Logs within a second or two
    # --no-cache: Evaluate must run (an earlier run in this module stored its result) for the fault to fail it
    iris = str(REPO / "data" / "iris.csv")
    failed = local.stepml("run", "--data", iris, "--no-cache", "--inject-fault", "Evaluate=InjectedError")
    assert failed.returncode == 1, failed.stderr
    deadline = time.monotonic() + 30
    messages: list[str] = []
    while time.monotonic() < deadline and not any('"stage": "Evaluate"' in m or "Evaluate" in m for m in messages):
        events = local.aws("logs", "filter-log-events", "--log-group-name", "/stepml/dev/functions")["events"]
        messages = [e["message"] for e in events]
        time.sleep(1)
    assert any("platform.start" in m for m in messages), messages[:5]
    assert any("stage succeeded" in m for m in messages), messages[:5]
    metrics = {m["MetricName"] for m in local.aws("cloudwatch", "list-metrics", "--namespace", "stepml")["Metrics"]}
    assert "ValidateInputDuration" in metrics, metrics  # Powertools' EMF, extracted as CloudWatch does
    alarms = {a["AlarmName"] for a in local.aws("cloudwatch", "describe-alarms")["MetricAlarms"]}
    assert "stepml-local-PipelineExecutionsFailedAlarm" in alarms and len(alarms) >= 20
    evaluated = json.loads(local.stepml("local", "alarms", "--json").stdout)
    states = {a["name"]: a["state"] for a in evaluated}
    assert states["stepml-local-PipelineExecutionsFailedAlarm"] == "ALARM"
    described = local.aws(
        "cloudwatch", "describe-alarms", "--alarm-names", "stepml-local-PipelineExecutionsFailedAlarm"
    )
    assert described["MetricAlarms"][0]["StateValue"] == "ALARM"
    [dashboard] = local.aws("cloudwatch", "list-dashboards")["DashboardEntries"]
    body = json.loads(
        local.aws("cloudwatch", "get-dashboard", "--dashboard-name", dashboard["DashboardName"])["DashboardBody"]
    )
    assert body["widgets"]
    rules = {json.loads(r["EventPattern"])["detail-type"][0]: r for r in local.aws("events", "list-rules")["Rules"]}
    # the upload rule and the drift alarm's retraining rule, both to StartPipeline
    assert set(rules) == {"Object Created", "CloudWatch Alarm State Change"}
    for rule in rules.values():
        [target] = local.aws("events", "list-targets-by-rule", "--rule", rule["Name"])["Targets"]
        assert target["Arn"].endswith(f":function:{stack.functions['StartPipelineFunction'].name}")
