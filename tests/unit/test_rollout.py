"""Safe rollout: the execution input's ``rollout`` and SageMaker's limits, the DeploymentConfig and alarms
PrepareRollout sends (checked against botocore's models of the real APIs), the alarm-history reading that
says which alarm fired, and how Register and RecordFailure record a rolled-back deployment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.validate import ParamValidator
from pipeline_core.aws.cloudwatch import CloudWatch, _Transition, first_firing
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.runs import RunLog
from pipeline_core.aws.sagemaker import endpoint_control
from pipeline_core.errors import InputValidationError
from pipeline_core.models import RegistrationResult, RolloutConfig
from pipeline_core.rollout import (
    RolloutInput,
    deployment_config,
    endpoint_alarms,
    rollout_config,
    total_wait_seconds,
    traffic_steps,
)
from pipeline_core.stages.record_failure import record_failure
from pipeline_core.stages.validate_input import build_run_config
from pipeline_core.standin import endpoints as standin
from pipeline_core.standin.store import RecordStore

from functions.register_model import app as register_app
from stepml.embedded.cloudwatch import install as install_alarm_history
from tests.conftest import REGION, FakeAws
from tests.unit.test_evaluate import champion_record, metrics_namespace
from tests.unit.test_record_failure import EXECUTION, deploy, failure_event, serving
from tests.unit.test_register import evaluated_state

__all__ = ["metrics_namespace"]  # a fixture used here by name

ENDPOINT = "stepml-test-iris-ep"


def config_of(rollout: Any) -> Any:
    return build_run_config({"dataset": "s3://b/iris.csv", "rollout": rollout}, "run-1", "b", "stepml-dev")


def valid(operation: str, service: str, request: dict[str, Any]) -> None:
    """``request`` is what boto3 would send ``operation`` (botocore's model of the API)."""
    shape = botocore.session.get_session().get_service_model(service).operation_model(operation).input_shape
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()


# --- the input ------------------------------------------------------------------------------------------


def test_without_a_rollout_an_update_is_all_at_once_as_before() -> None:
    config = build_run_config({"dataset": "s3://b/iris.csv"}, "run-1", "b", "stepml-dev")
    assert config.rollout is None and config.endpoint_instance_count == 1


def test_a_strategy_alone_takes_the_documented_defaults() -> None:
    config = config_of("canary")
    assert config.rollout == RolloutConfig(
        strategy="canary",
        instance_count=2,
        step_instances=1,
        wait_seconds=300,
        baking_seconds=300,
        timeout_seconds=1200,
        max_5xx_errors=0,
        max_model_latency_ms=500.0,
    )
    assert config.endpoint_instance_count == 2  # the endpoint config the run creates
    assert config_of("all_at_once").endpoint_instance_count == 1
    linear = config_of({"strategy": "linear", "instance_count": 5, "step_instances": 2, "wait_seconds": 10})
    assert linear.rollout is not None and traffic_steps("linear", 5, 2) == [0.4, 0.8, 1.0]
    # two partial steps of 10 s, then the final baking: 320 s of waiting, and 600 s more for the timeout
    assert total_wait_seconds([0.4, 0.8, 1.0], 10, 300) == 320 and linear.rollout.timeout_seconds == 920


@pytest.mark.parametrize(
    ("rollout", "problem"),
    [
        ("blue-green", "rollout.strategy: Input should be 'canary', 'linear' or 'all_at_once'"),
        ({"strategy": "canary", "instance_count": 1}, "rollout: instance_count: canary needs at least 2 instances"),
        ({"strategy": "canary", "instance_count": 4, "step_instances": 3}, "a canary is at most 50%"),
        ({"strategy": "linear", "instance_count": 20, "step_instances": 1}, "a linear step is 10-50%"),
        ({"strategy": "all_at_once", "step_instances": 2}, "all_at_once turns on every instance at once"),
        ({"wait_seconds": 3601}, "rollout.wait_seconds: Input should be less than or equal to 3600"),
        ({"timeout_seconds": 599}, "rollout.timeout_seconds: Input should be greater than or equal to 600"),
        ({"timeout_seconds": 700, "wait_seconds": 400, "baking_seconds": 300}, "larger than the 700 s the rollout"),
        ({"wait_seconds": 2000, "baking_seconds": 1500}, "more than the 3600 s a run allows a rollout"),
        ({"max_model_latency_ms": 0}, "rollout.max_model_latency_ms: Input should be greater than 0"),
        ({"canary_size": 1}, "rollout.canary_size: unknown field"),
    ],
)
def test_rollouts_sagemaker_would_refuse_are_refused_with_the_rule(rollout: Any, problem: str) -> None:
    with pytest.raises(InputValidationError) as raised:
        config_of(rollout)
    assert problem in str(raised.value), str(raised.value).split("Allowed fields")[0]


# --- what PrepareRollout sends --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["canary", "linear", "all_at_once"])
def test_the_deployment_config_and_alarms_are_what_the_apis_accept(strategy: str) -> None:
    rollout = rollout_config(RolloutInput(strategy=strategy, instance_count=4 if strategy == "linear" else None))
    alarms = endpoint_alarms(ENDPOINT, rollout)
    config = deployment_config(rollout, [a.name for a in alarms])
    valid(
        "UpdateEndpoint", "sagemaker", {"EndpointName": ENDPOINT, "EndpointConfigName": "c", "DeploymentConfig": config}
    )
    routing = config["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing["Type"] == strategy.upper() and routing["WaitIntervalInSeconds"] == 300
    assert ("CanarySize" in routing, "LinearStepSize" in routing) == (strategy == "canary", strategy == "linear")
    assert config["AutoRollbackConfiguration"]["Alarms"] == [
        {"AlarmName": f"{ENDPOINT}-5xx-errors"},
        {"AlarmName": f"{ENDPOINT}-model-latency"},
    ]
    for alarm in alarms:
        request = alarm.request(["arn:aws:sns:us-east-1:123456789012:alerts"])
        valid("PutMetricAlarm", "cloudwatch", request)
        assert request["Namespace"] == "AWS/SageMaker" and request["Period"] == 60
        assert {d["Name"]: d["Value"] for d in request["Dimensions"]} == {
            "EndpointName": ENDPOINT,
            "VariantName": "AllTraffic",
        }
    errors, latency = (alarm.request([]) for alarm in alarms)
    assert (errors["MetricName"], errors["Statistic"], errors["Threshold"]) == ("Invocation5XXErrors", "Sum", 0)
    # ModelLatency is in microseconds: 500 ms
    assert (latency["MetricName"], latency["Statistic"], latency["Threshold"]) == ("ModelLatency", "Average", 500000)


# --- which alarm fired ----------------------------------------------------------------------------------

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("current", "transitions", "fired_at"),
    [
        ({"StateValue": "OK"}, [], None),
        ({"StateValue": "ALARM", "StateReason": "since before"}, [], 0),  # already in ALARM when it began
        ({"StateValue": "OK"}, [("OK", "ALARM", 30), ("ALARM", "OK", 40)], 30),  # fired and cleared: it counts
        ({"StateValue": "OK"}, [("ALARM", "OK", 10)], 0),  # in ALARM at the start, cleared later
        ({"StateValue": "ALARM"}, [("OK", "ALARM", 90)], None),  # only after the window
        ({"StateValue": "INSUFFICIENT_DATA"}, [("OK", "INSUFFICIENT_DATA", 20)], None),
    ],
    ids=["never", "before", "fired-and-cleared", "cleared", "too-late", "no-data"],
)
def test_the_first_moment_an_alarm_was_in_alarm_within_the_window(
    current: dict[str, str], transitions: list[tuple[str, str, int]], fired_at: int | None
) -> None:
    changes = [_Transition(_t(s), old, f"left {old}", new, f"now {new}") for old, new, s in transitions]
    firing = first_firing("a", current, changes, T0, _t(60))
    assert (firing.at if firing else None) == (None if fired_at is None else _t(fired_at))


def test_the_alarm_history_is_read_from_cloudwatch_on_the_local_aws(aws: FakeAws) -> None:
    install_alarm_history()
    cloudwatch = CloudWatch(boto3.client("cloudwatch", region_name=REGION))
    rollout = rollout_config(RolloutInput())
    for alarm in endpoint_alarms(ENDPOINT, rollout):
        cloudwatch.put_alarm(alarm.request([]))
    start = datetime.now(UTC) - timedelta(seconds=1)
    names = [f"{ENDPOINT}-5xx-errors", f"{ENDPOINT}-model-latency"]
    assert cloudwatch.first_alarm(names, start, datetime.now(UTC)) is None
    # set by hand to test it (as CloudWatch documents SetAlarmState), then back to OK by the next evaluation
    cloudwatch.set_alarm_state(names[1], "ALARM", "set by a test")
    cloudwatch.set_alarm_state(names[1], "OK", "evaluated again")
    firing = cloudwatch.first_alarm([*names, "no-such-alarm"], start, datetime.now(UTC) + timedelta(seconds=1))
    assert firing is not None and firing.name == names[1] and firing.reason == "set by a test"
    # PutMetricAlarm again (the next rollout's PrepareRollout) keeps the state and its history, as CloudWatch does
    cloudwatch.set_alarm_state(names[0], "ALARM", "still failing")
    for alarm in endpoint_alarms(ENDPOINT, rollout):
        cloudwatch.put_alarm(alarm.request([]))
    assert cloudwatch.alarms(names)[names[0]]["StateValue"] == "ALARM"
    later = datetime.now(UTC) + timedelta(seconds=5)
    again = cloudwatch.first_alarm(names, later, later + timedelta(seconds=1))
    assert again is not None and again.name == names[0] and again.at == later


# --- PrepareRollout, Register and RecordFailure ---------------------------------------------------------


@pytest.fixture
def rollout_state(aws: FakeAws, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A run with a canary rollout that has prepared it (PrepareRollout through the function's handler)."""
    install_alarm_history()
    monkeypatch.setenv("ALARM_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:stepml-test-alerts")
    state = evaluated_state(aws)
    rollout = rollout_config(RolloutInput(wait_seconds=5, baking_seconds=5))
    state["config"] |= {"rollout": rollout.model_dump(), "endpoint_instance_count": 2}
    state["rollout"] = register_app.lambda_handler({"action": "prepare_rollout", "config": state["config"]}, None)
    return state


@pytest.mark.usefixtures("metrics_namespace")
def test_prepare_rollout_puts_the_endpoints_alarms_and_records_the_plan(
    aws: FakeAws, rollout_state: dict[str, Any]
) -> None:
    plan = rollout_state["rollout"]
    names = [f"{ENDPOINT}-5xx-errors", f"{ENDPOINT}-model-latency"]
    assert plan["alarms"] == names
    assert plan["deployment_config"]["AutoRollbackConfiguration"]["Alarms"] == [{"AlarmName": n} for n in names]
    alarms = CloudWatch(boto3.client("cloudwatch", region_name=REGION)).alarms(names)
    assert set(alarms) == set(names)
    assert alarms[names[0]]["AlarmActions"] == ["arn:aws:sns:us-east-1:123456789012:stepml-test-alerts"]
    record = RunLog(aws.runs_table, aws.dynamodb).get_run("run-1")
    assert record is not None and record["rollout_plan"] == plan


def _register(aws: FakeAws, state: dict[str, Any], status: str) -> RegistrationResult:
    event = {key: state[key] for key in ("config", "ingest", "data", "prep", "training", "evaluation")}
    event |= {"execution_arn": EXECUTION.format("run-1"), "status": status}
    return RegistrationResult.model_validate(register_app.lambda_handler(event, None))


@pytest.mark.usefixtures("metrics_namespace")
def test_a_rolled_back_deployment_is_registered_as_rolled_back_with_the_alarm(
    aws: FakeAws, rollout_state: dict[str, Any]
) -> None:
    store = RecordStore(aws.bucket, aws.s3)
    new_config = rollout_state["config"]["endpoint_config_name"]
    deploy(store, "stepml-old-model", "stepml-old-00000000")
    standin.create_endpoint(store, {"EndpointName": ENDPOINT, "EndpointConfigName": "stepml-old-00000000"})
    registry = ModelRegistry(aws.registry_table, aws.dynamodb)
    registry.acquire_deploy_lease("iris", EXECUTION.format("run-1"), 600)
    # the alarm fired during the rollout, and is OK again by the time Register asks
    cloudwatch = CloudWatch(boto3.client("cloudwatch", region_name=REGION))
    cloudwatch.set_alarm_state(f"{ENDPOINT}-5xx-errors", "ALARM", "Threshold Crossed: 1 datapoint [2.0]")
    cloudwatch.set_alarm_state(f"{ENDPOINT}-5xx-errors", "OK", "Threshold Crossed: no datapoints")

    result = _register(aws, rollout_state, "rolled_back")

    assert result.status == "rolled_back" and result.rollout is not None
    assert result.rollout.outcome == "rolled_back" and result.rollout.strategy == "canary"
    assert result.rollout.alarm == f"{ENDPOINT}-5xx-errors" and result.rollout.alarm_at is not None
    assert "Threshold Crossed: 1 datapoint [2.0]" in result.rollout.reason
    assert (result.rollout.endpoint_config_name, result.rollout.serving_config_name) == (
        new_config,
        "stepml-old-00000000",
    )
    [version] = registry.versions("iris")
    assert version.status == "rolled_back" and version.rollout == result.rollout
    assert version.endpoint_config_name == new_config  # what was deployed, though it never served
    assert registry.champion("iris") is None  # a rolled-back version is never the champion
    run = RunLog(aws.runs_table, aws.dynamodb).get_run("run-1")
    assert run is not None and run["registry_status"] == "rolled_back" and run["rollout"]["outcome"] == "rolled_back"
    assert "status" not in run  # RecordFailure closes the run: it failed
    assert registry.deploy_lease("iris") is None  # the endpoint is settled: the next run may deploy

    # RecordFailure (DeploymentRolledBack) leaves the endpoint as the guardrail left it, and says so
    state = rollout_state | {
        "existing": {"count": 1},
        "endpoint": {
            "EndpointName": ENDPOINT,
            "EndpointStatus": "InService",
            "EndpointConfigName": "stepml-old-00000000",
        },
        "registration": result.model_dump(mode="json"),
    }
    event = failure_event(state, "DescribeEndpoint", "DeploymentRolledBack", "rolled back", "run-1")
    summary = record_failure(
        event,
        runs=RunLog(aws.runs_table, aws.dynamodb),
        registry=lambda: registry,
        endpoints=lambda: pytest.fail("the endpoint was already rolled back"),
    )
    assert serving(store) == "stepml-old-00000000"
    assert summary.rollback == (
        f"endpoint {ENDPOINT} was rolled back by SageMaker's deployment guardrail and serves stepml-old-00000000 "
        "again: left as it is"
    )
    run = RunLog(aws.runs_table, aws.dynamodb).get_run("run-1")
    assert run is not None and run["status"] == "FAILED" and run["error"] == "DeploymentRolledBack"
    assert run["rollout"]["alarm"] == f"{ENDPOINT}-5xx-errors" and run["model_version"] == 1


@pytest.mark.usefixtures("metrics_namespace")
def test_a_completed_rollout_is_on_the_approved_version(aws: FakeAws, rollout_state: dict[str, Any]) -> None:
    result = _register(aws, rollout_state, "approved")
    assert result.status == "approved" and result.rollout is not None
    assert result.rollout.outcome == "completed" and result.rollout.alarm is None
    assert result.rollout.reason.startswith("canary (50% for 5 s, 5 s final baking)")
    run = RunLog(aws.runs_table, aws.dynamodb).get_run("run-1")
    assert run is not None and run["status"] == "SUCCEEDED" and run["rollout"]["outcome"] == "completed"


@pytest.mark.usefixtures("metrics_namespace")
def test_a_first_deployment_or_an_update_without_rollout_records_none(aws: FakeAws) -> None:
    result = _register(aws, evaluated_state(aws), "approved")
    assert result.status == "approved" and result.rollout is None


def test_a_run_failing_while_its_update_rolls_out_cannot_roll_back_and_says_how(aws: FakeAws) -> None:
    store = RecordStore(aws.bucket, aws.s3)
    deploy(store, "stepml-old-model", "stepml-old-00000000")
    standin.create_endpoint(store, {"EndpointName": ENDPOINT, "EndpointConfigName": "stepml-old-00000000"})
    state = evaluated_state(aws)
    new_config = state["config"]["endpoint_config_name"]
    deploy(store, "stepml-new-model", new_config)
    record = store.get("endpoints", ENDPOINT)
    assert record is not None
    store.put(
        "endpoints",
        ENDPOINT,
        {**record, "EndpointStatus": "Updating", "PendingDeploymentSummary": {"EndpointConfigName": new_config}},
    )
    ModelRegistry(aws.registry_table, aws.dynamodb).register_model(
        champion_record("iris", "f1_macro", 0.9) | {"endpoint_config_name": "stepml-old-00000000"}
    )
    event = failure_event(state | {"existing": {"count": 1}}, "DescribeEndpoint", "TransientStoreError", "x", "run-1")
    summary = record_failure(
        event,
        runs=RunLog(aws.runs_table, aws.dynamodb),
        registry=lambda: ModelRegistry(aws.registry_table, aws.dynamodb),
        endpoints=endpoint_control,
    )
    assert summary.rollback is not None and "still updating to this run's" in summary.rollback
    assert "update-endpoint --endpoint-name stepml-test-iris-ep --endpoint-config-name stepml-old-00000000" in (
        summary.rollback
    )
    assert serving(store) == "stepml-old-00000000"
