"""Safe rollout on the embedded target: the real definition updates the endpoint with a canary DeploymentConfig,
and the SageMaker stand-in shifts traffic and rolls back on an alarm, as SageMaker's deployment guardrails do.

One model, three runs on one embedded AWS:

* v1, a weak model (a linear model regularised to nothing, a threshold it passes): creates the endpoint. A
  first deployment has nothing to shift traffic from, so it is created with all traffic on v1 (two
  instances, as the rollout asks) and no rollout is recorded.
* v2, the built-in trainer: a canary update (half the traffic for 2 s, then 1 s of final baking) that
  completes. The endpoint serves v2: its answers are iris's species, where v1 answered one class.
* v3, the built-in trainer again: a canary update that waits long enough for the test to set the endpoint's
  5XX alarm to ALARM while v3's canary takes traffic (CloudWatch's SetAlarmState, the injection AWS documents
  for testing alarms). The stand-in rolls the update back: the endpoint serves v2 again, v3 is registered as
  rolled_back with the alarm on its record and on the run's, and the run fails with DeploymentRolledBack.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pipeline_core.standin.runtime import ModelServer
from pipeline_core.standin.store import RecordStore

from stepml.progress import exited_line
from stepml.session import print_summary
from tests.integration.harness import IRIS, WEAK_MODEL, Finished, Harness, Job, embedded_harness
from tests.integration.test_failure_paths import CREATE_PATH, ROLLED_BACK_PATH, ROLLOUT_PATH, without_waits

pytestmark = pytest.mark.slow

MODEL = "rollout-iris"
# short enough for a test, long enough that the wait loop goes round at least once
QUICK_CANARY = {"strategy": "canary", "wait_seconds": 2, "baking_seconds": 1}
# long enough for the test to see the canary and trip the alarm; the rollback ends it at once
SLOW_CANARY = {"strategy": "canary", "wait_seconds": 120, "baking_seconds": 30}


@dataclass
class Rollouts:
    harness: Harness
    first: Finished
    completed: Finished
    rolled_back: Finished
    tripped_at: str


def _job(h: Harness, name: str, **extra: Any) -> Job:
    dataset = h.upload(f"datasets/{name}/iris.csv", IRIS)
    return Job(name, {"dataset": dataset, "model_name": MODEL, "endpoint_poll_seconds": 1, **extra})


@pytest.fixture(scope="module")
def rollouts(state_dir: Path) -> Iterator[Rollouts]:
    for h in embedded_harness():
        first = h.run(_job(h, "rollout-v1", **WEAK_MODEL, quality_threshold=0.0, rollout=QUICK_CANARY))
        assert first.status == "SUCCEEDED", first.describe()
        completed = h.run(_job(h, "rollout-v2", rollout=QUICK_CANARY))
        assert completed.status == "SUCCEEDED", completed.describe()
        endpoint = h.endpoint_name(MODEL)
        tripped = h.trip_alarm_during_rollout(endpoint, f"{endpoint}-5xx-errors", "rollout-v3")
        rolled_back = h.run(_job(h, "rollout-v3", rollout=SLOW_CANARY))
        yield Rollouts(h, first, completed, rolled_back, tripped.result(timeout=10))


def _serving(h: Harness) -> str:
    endpoint = h.endpoint(h.endpoint_name(MODEL))
    assert endpoint is not None
    return str(endpoint["EndpointConfigName"])


def _predict(h: Harness, rows: list[dict[str, Any]]) -> list[Any]:
    """What the endpoint answers now, through the stand-in's runtime (no metrics: they are not asked for)."""
    server = ModelServer()
    try:
        return server.invoke(RecordStore(h.bucket, h.s3), h.endpoint_name(MODEL), rows, refresh_seconds=0)
    finally:
        server.clear()


def _answers_iris(h: Harness) -> bool:
    """Whether the endpoint answers as v2 (and v3) do: iris's species, nearly always. v1, regularised to
    nothing, answers about one class for every row."""
    rows, species = _iris_rows()
    answers = _predict(h, rows)
    return sum(a == s for a, s in zip(answers, species, strict=True)) >= 0.9 * len(species) and len(set(answers)) == 3


def _iris_rows() -> tuple[list[dict[str, Any]], list[str]]:
    header, *lines = IRIS.decode().strip().splitlines()
    names = header.split(",")
    rows = [dict(zip(names, line.split(","), strict=True)) for line in lines[::10]]
    species = [row.pop(names[-1]) for row in rows]
    return [{k: float(v) for k, v in row.items()} for row in rows], species


def test_a_first_deployment_creates_the_endpoint_with_the_rollouts_instances(rollouts: Rollouts) -> None:
    h, run = rollouts.harness, rollouts.first
    assert run.path == CREATE_PATH, run.describe()
    [v1] = [v for v in h.model_versions(MODEL) if v.execution_arn == run.arn]
    assert v1.status == "approved" and v1.rollout is None  # nothing was shifted
    config = json.loads(h.read(f"s3://{h.bucket}/_sagemaker/endpoint-configs/{v1.endpoint_config_name}.json"))
    assert config["ProductionVariants"][0]["InitialInstanceCount"] == 2


def test_a_canary_that_completes_serves_the_new_version(rollouts: Rollouts) -> None:
    h, run = rollouts.harness, rollouts.completed
    assert without_waits(run.path) == ROLLOUT_PATH, run.describe()
    assert "WaitForEndpoint" in run.path  # the endpoint was Updating for the canary's 3 s
    [v2] = [v for v in h.model_versions(MODEL) if v.execution_arn == run.arn]
    assert v2.status == "approved" and v2.version == 2
    assert v2.rollout is not None and v2.rollout.outcome == "completed" and v2.rollout.strategy == "canary"
    assert v2.rollout.alarms == [f"{h.endpoint_name(MODEL)}-5xx-errors", f"{h.endpoint_name(MODEL)}-model-latency"]
    update = json.loads(run.visit("UpdateEndpointWithRollout").input or "{}")
    routing = update["rollout"]["deployment_config"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    canary = {"Type": "INSTANCE_COUNT", "Value": 1}  # one of the two instances: half the traffic
    assert routing == {"Type": "CANARY", "WaitIntervalInSeconds": 2, "CanarySize": canary}

    # the endpoint serves v2 (the rollback test's v3 left it so): v1's config is the one it replaced
    endpoint = h.endpoint(h.endpoint_name(MODEL))
    assert endpoint is not None and endpoint["EndpointConfigName"] == v2.endpoint_config_name
    [v1] = [v for v in h.model_versions(MODEL) if v.version == 1]
    assert endpoint["PreviousEndpointConfigNames"][0] == v1.endpoint_config_name
    assert _answers_iris(h)

    # the run's summary says how the rollout went
    text = _summary(run)
    assert "Rollout     canary completed" in text


def _summary(run: Finished) -> str:
    out = io.StringIO()
    print_summary(run.outcome, out)
    return out.getvalue()


def test_a_canary_rolled_back_on_an_alarm_leaves_the_endpoint_on_the_old_version(rollouts: Rollouts) -> None:
    h, run = rollouts.harness, rollouts.rolled_back
    versions = {v.execution_arn: v for v in h.model_versions(MODEL)}
    v2, v3 = versions[rollouts.completed.arn], versions[run.arn]
    alarm = f"{h.endpoint_name(MODEL)}-5xx-errors"

    # the run failed, as the guardrail decided, and said why
    assert run.status == "FAILED", run.describe()
    assert run.outcome.error == "DeploymentRolledBack" and run.outcome.failed_state == "DescribeEndpoint"
    assert f"{v3.endpoint_config_name}" in str(run.outcome.cause) and alarm in str(run.outcome.cause)
    assert without_waits(run.path) == ROLLED_BACK_PATH, run.describe()
    assert run.visit("RecordFailure").errors == [] and run.visit("RegisterRolledBack").errors == []

    # the endpoint serves v2 again; v2 is still the champion
    assert _serving(h) == v2.endpoint_config_name
    assert h.registry.champion(MODEL) == v2
    assert _answers_iris(h)

    # the registry and the run record say how the rollout ended
    assert v3.status == "rolled_back" and v3.version == 3 and v3.rollout is not None
    assert v3.rollout.outcome == "rolled_back" and v3.rollout.alarm == alarm
    assert v3.rollout.alarm_at is not None and v3.rollout.alarm_at[:19] <= rollouts.tripped_at[:19]
    assert "set by the test during the rollout" in v3.rollout.reason
    assert v3.rollout.serving_config_name == v2.endpoint_config_name
    record = h.run_record("rollout-v3")
    assert record is not None
    assert record["status"] == "FAILED" and record["error"] == "DeploymentRolledBack"
    assert record["registry_status"] == "rolled_back" and record["model_version"] == 3
    assert record["rollout"]["alarm"] == alarm and record["rollout"]["outcome"] == "rolled_back"
    assert record["rollback"].startswith(f"endpoint {h.endpoint_name(MODEL)} was rolled back by SageMaker's")
    # the deploy lease is free: the next run of the model may deploy
    assert h.registry.deploy_lease(MODEL) is None

    # what the user reads: the progress line of the loop and the summary
    described = [v for v in run.visits if v.name == "DescribeEndpoint"]
    assert "Updating" in exited_line(described[0]) and "InService" in exited_line(described[-1])
    text = _summary(run)
    assert f"Model       {MODEL} v3 (rolled_back)" in text
    assert f"Rollout     canary rolled back: alarm {alarm} in ALARM at " in text
