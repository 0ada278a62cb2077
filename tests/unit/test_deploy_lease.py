"""The deploy lease: one execution of a model at a time changes its endpoint and registers what it deployed."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from pipeline_core.aws.registry import LEASE_VERSION, ModelRegistry
from pipeline_core.aws.runs import RunLog
from pipeline_core.errors import DeployLeaseBusyError
from pipeline_core.models import DeployLeaseResult, EvaluationResult, RegistryRecord, RunConfig
from pipeline_core.stages import deploy_lease
from pipeline_core.stages.gate import decide_gate
from pipeline_core.stages.record_failure import record_failure

from functions.register_model import app as register_app
from tests.conftest import FakeAws
from tests.unit.test_evaluate import champion_record, metrics_namespace
from tests.unit.test_register import ARN, evaluated_state, run_register

__all__ = ["metrics_namespace"]  # a fixture used here by name

REPO = Path(__file__).resolve().parents[2]
ASL = json.loads((REPO / "statemachine" / "pipeline.asl.json").read_text())
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
    assert states["CreateEndpointConfig"]["Next"] == "AcquireDeployLease"
    assert lease["Parameters"]["action"] == deploy_lease.ACTION
    # the gate decided under the lease replaces Evaluate's; a superseded run registers as rejected
    assert lease["Parameters"]["evaluation.$"] == "$.evaluation" and lease["ResultPath"] == "$.lease"
    copy = states[lease["Next"]]
    assert copy["Type"] == "Pass" and (copy["InputPath"], copy["ResultPath"]) == ("$.lease.evaluation", "$.evaluation")
    choice = states[copy["Next"]]
    assert choice["Type"] == "Choice" and choice["Default"] == "FindEndpoint"
    assert choice["Choices"] == [{"Variable": "$.lease.superseded", "BooleanEquals": True, "Next": "RegisterRejected"}]
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
    event = {
        "action": "acquire_deploy_lease",
        "config": state["config"],
        "evaluation": state["evaluation"],
        "execution_arn": ARN.format("run-9"),
    }  # AcquireDeployLease's Parameters
    answer = DeployLeaseResult.model_validate(register_app.lambda_handler(event, None))
    assert answer.model_name == MODEL and answer.holder == ARN.format("run-9")
    assert not answer.superseded and answer.evaluation == EvaluationResult.model_validate(state["evaluation"])
    other = {**event, "execution_arn": ARN.format("run-10")}
    with pytest.raises(DeployLeaseBusyError):  # errorType DeployLeaseBusyError: what the ASL retries
        register_app.lambda_handler(other, None)

    # run-9 deploys a better model and registers it; run-10, evaluated before that, is superseded
    evaluation = state["evaluation"]
    assert evaluation["primary_value"] < 1.0
    better = {**evaluation, "primary_value": 1.0, "metrics": {**evaluation["metrics"], "f1_macro": 1.0}}
    run_register(aws, {**state, "evaluation": better}, "run-9")
    answer = DeployLeaseResult.model_validate(register_app.lambda_handler(other, None))
    assert answer.superseded and answer.evaluation is not None and not answer.evaluation.passed
    assert answer.evaluation.reason.startswith("superseded") and registry(aws).deploy_lease(MODEL) is None

    # an execution of the definition before this re-check (no evaluation passed) takes the lease as it did
    older = {key: value for key, value in event.items() if key != "evaluation"}
    answer = DeployLeaseResult.model_validate(register_app.lambda_handler(older, None))
    assert answer.holder == ARN.format("run-9") and not answer.superseded and answer.evaluation is None


# ------------------------------------------------------------------------------------------ the re-check


def _config(aws: FakeAws) -> RunConfig:
    return RunConfig.model_validate(evaluated_state(aws)["config"])


def _champion(aws: FakeAws, value: float, primary: str = "f1_macro", execution: str = "champion") -> RegistryRecord:
    """An approved version registered by another execution (its model on the endpoint)."""
    return registry(aws).register_model(champion_record(MODEL, primary, value, execution))


def _evaluated(value: float, champion: RegistryRecord | None, threshold: float = 0.6) -> EvaluationResult:
    """What Evaluate returns for a model scoring ``value``, compared with ``champion`` (it passed)."""
    gate = decide_gate("f1_macro", value, threshold, champion)
    assert gate.passed, gate.reason  # only a model QualityGate let through reaches AcquireDeployLease
    return EvaluationResult(
        metrics={"f1_macro": value},
        primary_metric="f1_macro",
        primary_value=value,
        threshold=threshold,
        champion_version=gate.champion_version,
        champion_value=gate.champion_value,
        passed=gate.passed,
        reason=gate.reason,
        evaluation_uri="s3://b/models/j/evaluation/evaluation.json",
        report_uri="s3://b/models/j/evaluation/report.html",
    )


@pytest.mark.parametrize("earlier", [None, 0.8], ids=["no-champion", "same-champion"])
def test_champion_unchanged_the_run_deploys_with_evaluates_decision(aws: FakeAws, earlier: float | None) -> None:
    config = _config(aws)
    champion = _champion(aws, earlier) if earlier is not None else None
    evaluation = _evaluated(0.9, champion)
    # rejected versions registered since (runs rejected at QualityGate) are not champions
    registry(aws).register_model({**champion_record(MODEL, "f1_macro", 0.99, "rejected-run"), "status": "rejected"})

    answer = deploy_lease.acquire_deploy_lease(config, ARN.format("run-1"), registry(aws), evaluation)
    assert not answer.superseded and answer.evaluation == evaluation  # Evaluate's result, reason and all
    held = registry(aws).deploy_lease(MODEL)
    assert held is not None and held.holder == ARN.format("run-1")


@pytest.mark.parametrize("earlier", [None, 0.8], ids=["no-champion-then", "worse-champion-then"])
def test_a_better_champion_registered_since_evaluate_supersedes_the_run(aws: FakeAws, earlier: float | None) -> None:
    config = _config(aws)
    evaluation = _evaluated(0.9, _champion(aws, earlier, execution="old") if earlier is not None else None)
    newer = _champion(aws, 0.95, execution="better-run")  # deployed and registered while this run waited

    answer = deploy_lease.acquire_deploy_lease(config, ARN.format("run-1"), registry(aws), evaluation)
    assert answer.superseded and answer.holder == ARN.format("run-1")
    decided = answer.evaluation
    assert decided is not None and not decided.passed
    assert (decided.champion_version, decided.champion_value) == (newer.version, 0.95)
    compared = f"champion v{evaluation.champion_version}" if earlier is not None else "no comparable champion"
    assert decided.reason == (
        f"superseded while waiting for the deploy lease: f1_macro 0.9000 < champion v{newer.version} 0.9500 "
        f"(registered after Evaluate had compared with {compared})"
    )
    # the rest of Evaluate's result is kept: metrics, threshold, files
    assert decided.model_dump(exclude={"champion_version", "champion_value", "passed", "reason"}) == (
        evaluation.model_dump(exclude={"champion_version", "champion_value", "passed", "reason"})
    )
    # the lease was given back: the next run of the model need not wait for this one
    assert registry(aws).deploy_lease(MODEL) is None
    assert registry(aws).acquire_deploy_lease(MODEL, ARN.format("next"), 60).holder == ARN.format("next")


def test_a_superseded_attempt_retried_answers_the_same_and_leaves_the_lease_free(aws: FakeAws) -> None:
    """Its response lost, AcquireDeployLease runs again: it takes the lease anew (waiting like any run if
    another took it in between), decides against the champion then, and gives the lease back again."""
    config, leases = _config(aws), registry(aws)
    evaluation = _evaluated(0.9, None)
    _champion(aws, 0.95)
    first = deploy_lease.acquire_deploy_lease(config, ARN.format("run-1"), leases, evaluation)
    again = deploy_lease.acquire_deploy_lease(config, ARN.format("run-1"), leases, evaluation)
    assert first.superseded and again.superseded and again.evaluation == first.evaluation
    assert leases.deploy_lease(MODEL) is None

    leases.acquire_deploy_lease(MODEL, ARN.format("other"), 60)
    with pytest.raises(DeployLeaseBusyError):
        deploy_lease.acquire_deploy_lease(config, ARN.format("run-1"), leases, evaluation)
    held = leases.deploy_lease(MODEL)
    assert held is not None and held.holder == ARN.format("other")  # the busy retry took nothing from it


@pytest.mark.parametrize(
    ("value", "primary"),
    [(0.85, "f1_macro"), (0.9, "f1_macro"), (0.99, "r2")],
    ids=["worse", "equal", "incomparable-metric"],
)
def test_a_changed_champion_the_model_still_beats_lets_the_run_deploy(aws: FakeAws, value: float, primary: str) -> None:
    config = _config(aws)
    evaluation = _evaluated(0.9, _champion(aws, 0.8, execution="old"))
    newer = _champion(aws, value, primary, execution="newer")

    answer = deploy_lease.acquire_deploy_lease(config, ARN.format("run-1"), registry(aws), evaluation)
    assert not answer.superseded
    decided = answer.evaluation
    assert decided is not None and decided.passed
    held = registry(aws).deploy_lease(MODEL)
    assert held is not None and held.holder == ARN.format("run-1")
    # the reason is the decision made now, against the champion the endpoint serves now
    compared = f"champion v{evaluation.champion_version}"
    assert decided.reason.endswith(f"(decided again under the deploy lease: Evaluate had compared with {compared})")
    if primary == "f1_macro":
        assert (decided.champion_version, decided.champion_value) == (newer.version, value)
        assert f"≥ champion v{newer.version} {value:.4f}" in decided.reason
    else:
        assert (decided.champion_version, decided.champion_value) == (None, evaluation.threshold)
        assert f"champion v{newer.version} was measured by r2, not comparable" in decided.reason


def test_the_champion_is_read_consistently_after_the_lease_is_taken(aws: FakeAws) -> None:
    """A default DynamoDB read may miss the version the previous holder registered just before giving the
    lease back; the re-check must not."""
    calls: list[tuple[str, dict[str, Any]]] = []

    class Recording:
        def __init__(self, ddb: Any) -> None:
            self._ddb = ddb

        def update_item(self, **request: Any) -> Any:
            calls.append(("update_item", request))
            return self._ddb.update_item(**request)

        def get_paginator(self, operation: str) -> Any:
            paginator = self._ddb.get_paginator(operation)

            class Paginate:
                def paginate(self, **request: Any) -> Any:
                    calls.append((operation, request))
                    return paginator.paginate(**request)

            return Paginate()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._ddb, name)

    evaluation = _evaluated(0.9, None)
    recorded = ModelRegistry(aws.registry_table, Recording(aws.dynamodb))
    deploy_lease.acquire_deploy_lease(_config(aws), ARN.format("run-1"), recorded, evaluation)
    assert [name for name, _ in calls] == ["update_item", "query"]
    assert calls[1][1]["ConsistentRead"] is True


def test_the_register_function_imports_without_pandas_numpy_or_matplotlib() -> None:
    """It serves AcquireDeployLease, which decides the gate with Evaluate's code, but its package has only
    the shared layer (functions/register_model/requirements.txt): the gate must not need Evaluate's libraries."""
    script = (
        "import sys\n"
        "for name in ('pandas', 'numpy', 'matplotlib', 'sklearn'):\n"
        "    sys.modules[name] = None  # importing it raises ImportError\n"
        f"sys.path[:0] = [{str(REPO / 'functions' / 'register_model')!r}, {str(REPO / 'functions' / 'shared')!r}]\n"
        "import app\n"
        "from pipeline_core.stages import deploy_lease, gate\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


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
