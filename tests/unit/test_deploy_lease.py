"""The deploy lease: one execution of a model at a time changes its endpoint and registers what it deployed."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from pipeline_core.aws.registry import LEASE_VERSION, ModelRegistry
from pipeline_core.aws.runs import RunLog
from pipeline_core.errors import DeployLeaseBusyError
from pipeline_core.models import DeployLeaseResult
from pipeline_core.stages import deploy_lease
from pipeline_core.stages.record_failure import record_failure

from functions.register_model import app as register_app
from tests.conftest import FakeAws
from tests.unit.test_evaluate import champion_record, metrics_namespace
from tests.unit.test_register import ARN, evaluated_state, run_register

__all__ = ["metrics_namespace"]  # a fixture used here by name

ASL = json.loads((Path(__file__).resolve().parents[2] / "statemachine" / "pipeline.asl.json").read_text())
MODEL = "iris"


def registry(aws: FakeAws) -> ModelRegistry:
    return ModelRegistry(aws.registry_table, aws.dynamodb)


def test_one_holder_at_a_time_and_the_holder_may_take_it_again(aws: FakeAws) -> None:
    leases = registry(aws)
    first = leases.acquire_deploy_lease(MODEL, ARN.format("a"), 60, now=1000)
    assert (first.holder, first.expires_at) == (ARN.format("a"), 1060)

    with pytest.raises(DeployLeaseBusyError) as busy:
        leases.acquire_deploy_lease(MODEL, ARN.format("b"), 60, now=1001)
    assert ARN.format("a") in str(busy.value) and MODEL in str(busy.value)

    # a retried AcquireDeployLease (its response lost) takes it again
    again = leases.acquire_deploy_lease(MODEL, ARN.format("a"), 60, now=1002)
    assert again.holder == ARN.format("a")
    # another model is not held up
    assert leases.acquire_deploy_lease("other", ARN.format("b"), 60, now=1003).holder == ARN.format("b")

    assert leases.release_deploy_lease(MODEL, ARN.format("b")) is False  # not its lease: nothing done
    assert leases.deploy_lease(MODEL) is not None
    assert leases.release_deploy_lease(MODEL, ARN.format("a")) is True
    assert leases.release_deploy_lease(MODEL, ARN.format("a")) is False
    assert leases.deploy_lease(MODEL) is None
    assert leases.acquire_deploy_lease(MODEL, ARN.format("b"), 60, now=1004).holder == ARN.format("b")


def test_an_expired_lease_can_be_taken(aws: FakeAws) -> None:
    leases = registry(aws)
    leases.acquire_deploy_lease(MODEL, ARN.format("stopped"), 60, now=1000)
    with pytest.raises(DeployLeaseBusyError):
        leases.acquire_deploy_lease(MODEL, ARN.format("b"), 60, now=1060)
    assert leases.acquire_deploy_lease(MODEL, ARN.format("b"), 60, now=1061).holder == ARN.format("b")
    assert [lease.holder for lease in leases.deploy_leases()] == [ARN.format("b")]


def test_concurrent_acquires_have_one_winner(aws: FakeAws) -> None:
    leases = registry(aws)
    start = threading.Barrier(6)
    won: list[str] = []
    busy: list[str] = []

    def take(name: str) -> None:
        start.wait(timeout=10)
        try:
            won.append(leases.acquire_deploy_lease(MODEL, ARN.format(name), 60).holder)
        except DeployLeaseBusyError:
            busy.append(name)

    threads = [threading.Thread(target=take, args=(f"run-{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(won) == 1 and len(busy) == 5
    lease = leases.deploy_lease(MODEL)
    assert lease is not None and lease.holder == won[0]


def test_the_lease_item_is_not_a_model_version(aws: FakeAws) -> None:
    leases = registry(aws)
    leases.acquire_deploy_lease(MODEL, ARN.format("a"), 60)
    assert leases.latest_version(MODEL) == 0
    record = leases.register_model(champion_record(MODEL, "f1_macro", 0.9))
    assert record.version == 1
    assert [r.version for r in leases.versions(MODEL)] == [1] == [r.version for r in leases.versions()]
    assert leases.get(MODEL, LEASE_VERSION) is None
    assert leases.champion(MODEL) == record


def test_lease_outlives_no_execution() -> None:
    """The lease expires with the execution timeout: a holder cannot still be running after it."""
    assert ASL["TimeoutSeconds"] <= deploy_lease.LEASE_SECONDS


def test_the_asl_takes_the_lease_before_finding_the_endpoint_and_waits_when_busy() -> None:
    states = ASL["States"]
    lease = states["AcquireDeployLease"]
    assert states["CreateEndpointConfig"]["Next"] == "AcquireDeployLease" and lease["Next"] == "FindEndpoint"
    assert lease["Parameters"]["action"] == deploy_lease.ACTION
    [waiting] = [r for r in lease["Retry"] if "DeployLeaseBusyError" in r["ErrorEquals"]]
    # with full jitter the average wait is half the delay: about an hour in all before giving up
    total = sum(min(waiting["IntervalSeconds"] * waiting["BackoffRate"] ** n, waiting["MaxDelaySeconds"])
                for n in range(waiting["MaxAttempts"]))  # fmt: skip
    assert total / 2 >= 3000


def test_approved_registration_gives_the_lease_back_and_rejected_leaves_it(aws: FakeAws) -> None:
    state = evaluated_state(aws)
    leases = registry(aws)
    leases.acquire_deploy_lease(MODEL, ARN.format("deployer"), 60)
    run_register(aws, state, "rejecter", "rejected")
    held = leases.deploy_lease(MODEL)
    assert held is not None and held.holder == ARN.format("deployer")
    run_register(aws, state, "deployer")
    assert leases.deploy_lease(MODEL) is None


@pytest.mark.usefixtures("metrics_namespace")
def test_the_register_function_serves_acquire_deploy_lease(aws: FakeAws) -> None:
    state = evaluated_state(aws, run_id="run-9")
    event = {"action": "acquire_deploy_lease", "config": state["config"], "execution_arn": ARN.format("run-9")}
    answer = DeployLeaseResult.model_validate(register_app.lambda_handler(event, None))
    assert answer.model_name == MODEL and answer.holder == ARN.format("run-9")
    other = {**event, "execution_arn": ARN.format("run-10")}
    with pytest.raises(DeployLeaseBusyError):  # errorType DeployLeaseBusyError: what the ASL retries
        register_app.lambda_handler(other, None)


def _failure(state: dict[str, Any], failed_state: str, name: str) -> dict[str, Any]:
    failure = {"state": failed_state, "error": "InjectedPermanentError", "cause": "test"}
    return {"failure": failure, "state": state, "execution_arn": ARN.format(name), "execution_name": name}


@pytest.mark.parametrize("failed_state", ["AcquireDeployLease", "FindEndpoint"])
def test_record_failure_gives_the_lease_back(aws: FakeAws, failed_state: str) -> None:
    config = {"run_id": "run-1", "model_name": MODEL, "dataset": "s3://b/datasets/x.csv"}
    leases = registry(aws)
    lease = leases.acquire_deploy_lease(MODEL, ARN.format("run-1"), 60)
    # FindEndpoint failed: $.lease is set; AcquireDeployLease failed: it is not, yet an attempt may hold it
    state: dict[str, Any] = {"config": config}
    if failed_state != "AcquireDeployLease":
        state["lease"] = {"model_name": MODEL, "holder": lease.holder, "acquired_at": "x", "expires_at": 1}

    def no_endpoints() -> Any:
        raise AssertionError("the endpoint was not touched")

    summary = record_failure(
        _failure(state, failed_state, "run-1"),
        runs=RunLog(aws.runs_table, aws.dynamodb),
        registry=lambda: leases,
        endpoints=no_endpoints,
    )
    assert summary.failed_state == failed_state and summary.rollback is None
    assert leases.deploy_lease(MODEL) is None
