"""What the command line says and takes about rollouts: --rollout, `stepml alarm set`, the ROLLOUT columns, the
summary's Rollout line and the progress line of DescribeEndpoint."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from stepml import cli
from stepml.progress import StateVisit, exited_line
from stepml.rollout_commands import RolloutOptionError, rollout_cell, rollout_input
from stepml.session import RunOutcome, print_summary
from tests.conftest import REGION, FakeAws

ALARM = "stepml-test-iris-ep-5xx-errors"
ROLLED_BACK = {
    "strategy": "canary",
    "outcome": "rolled_back",
    "alarm": ALARM,
    "alarm_at": "2026-11-30T12:03:05+00:00",
    "reason": "The deployment of endpoint configuration b was rolled back: CloudWatch alarm ... was in ALARM",
}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, {}),
        ("canary", {"rollout": "canary"}),
        (
            "linear,instance_count=4, wait_seconds=60",
            {"rollout": {"strategy": "linear", "instance_count": 4, "wait_seconds": 60}},
        ),
        ("canary,max_model_latency_ms=250.5", {"rollout": {"strategy": "canary", "max_model_latency_ms": 250.5}}),
        ('{"strategy": "all_at_once"}', {"rollout": {"strategy": "all_at_once"}}),
    ],
)
def test_the_rollout_option_becomes_the_execution_inputs_rollout(spec: str | None, expected: dict[str, Any]) -> None:
    assert rollout_input(spec) == expected


@pytest.mark.parametrize(("spec", "problem"), [("canary,wait", "'wait' is not KEY=VALUE"), ("{oops", "not JSON")])
def test_a_rollout_option_that_cannot_be_read_says_how_to_write_it(spec: str, problem: str) -> None:
    with pytest.raises(RolloutOptionError, match=problem):
        rollout_input(spec)


def test_stepml_run_refuses_a_malformed_rollout_before_starting_anything(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--rollout", "canary,wait"]) == 2
    assert "--rollout 'canary,wait'" in capsys.readouterr().err


def test_the_summary_of_a_rolled_back_run_names_the_version_and_the_alarm() -> None:
    out = io.StringIO()
    outcome = RunOutcome(
        "arn:x", "FAILED", 12.0, error="DeploymentRolledBack", cause="rolled back", failed_state="DescribeEndpoint"
    )
    outcome.model_name, outcome.model_version, outcome.registry_status = "iris", 3, "rolled_back"
    outcome.rollout = ROLLED_BACK
    print_summary(outcome, out)
    text = out.getvalue()
    assert "Model       iris v3 (rolled_back)" in text
    # the reason's own words when they add something (here they do not name the alarm)
    assert f"Rollout     canary rolled back: alarm {ALARM} in ALARM at 2026-11-30T12:03:05+00:00; The" in text
    assert json.loads(json.dumps(outcome.to_json()))["rollout"]["outcome"] == "rolled_back"


def test_the_rollout_columns() -> None:
    assert rollout_cell(None) == "-"
    assert rollout_cell({"strategy": "linear", "outcome": "completed"}) == "linear completed"
    assert rollout_cell(ROLLED_BACK) == f"canary rolled back ({ALARM})"
    # an update without a rollout that SageMaker rolled back (its fleet did not come up)
    assert rollout_cell({"strategy": None, "outcome": "rolled_back"}) == "all-at-once rolled back"


def test_describe_endpoints_progress_line_says_what_it_found() -> None:
    def visit(endpoint: dict[str, str]) -> StateVisit:
        at = datetime(2026, 11, 30, tzinfo=UTC)
        return StateVisit("DescribeEndpoint", "Task", at, at, 1, output=json.dumps({"endpoint": endpoint}))

    assert exited_line(visit({"EndpointStatus": "Updating", "EndpointConfigName": "a"})).endswith("→ Updating")
    assert exited_line(visit({"EndpointStatus": "InService", "EndpointConfigName": "b"})).endswith("→ InService (b)")


@pytest.fixture
def cloudwatch(aws: FakeAws, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`stepml alarm set` against the moto account (its target's CloudWatch client)."""
    client = boto3.client("cloudwatch", region_name=REGION)

    class Target:
        name = "embedded"

        def client(self, service: str) -> Any:
            assert service == "cloudwatch"
            return client

    monkeypatch.setattr(cli, "_open_target", lambda args, layout, progress=None: contextlib.nullcontext(Target()))
    yield client


def test_alarm_set_sets_the_state_and_refuses_an_unknown_alarm(
    cloudwatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cloudwatch.put_metric_alarm(
        AlarmName=ALARM, Namespace="AWS/SageMaker", MetricName="Invocation5XXErrors", Statistic="Sum", Period=60,
        EvaluationPeriods=1, Threshold=0, ComparisonOperator="GreaterThanThreshold",
    )  # fmt: skip
    out = io.StringIO()
    assert cli.main(["alarm", "set", ALARM, "ALARM", "--reason", "testing the rollback"], out=out) == 0
    [alarm] = cloudwatch.describe_alarms(AlarmNames=[ALARM])["MetricAlarms"]
    assert (alarm["StateValue"], alarm["StateReason"]) == ("ALARM", "testing the rollback")
    assert f"{ALARM} is ALARM" in out.getvalue()

    assert cli.main(["alarm", "set", "stepml-test-nope-ep-5xx-errors", "ALARM"]) == 2
    assert "no alarm named 'stepml-test-nope-ep-5xx-errors'" in capsys.readouterr().err
