"""The SageMaker stand-in's blue/green deployments: the timeline of traffic steps, the rollback on an alarm
(through CloudWatch's alarm history, as the stand-in reads it on every target), SageMaker's validation rules,
the runtime's traffic shares and the AWS/SageMaker metrics it publishes, on a moto account."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from pipeline_core.aws.cloudwatch import AlarmFiring, CloudWatch
from pipeline_core.errors import ConfigurationError
from pipeline_core.models import RolloutConfig
from pipeline_core.rollout import alarm_names, deployment_config, endpoint_alarms
from pipeline_core.standin import endpoints, rollout
from pipeline_core.standin.errors import ModelError, ValidationException
from pipeline_core.standin.invocation_metrics import InvocationMetrics
from pipeline_core.standin.runtime import ModelServer
from pipeline_core.standin.store import RecordStore

from stepml.embedded.alarms import evaluate_alarms
from stepml.embedded.cloudwatch import install as install_alarm_history
from tests.conftest import REGION, FakeAws
from tests.unit.test_standin import ROOT, deploy_requests, iris_splits, publish_model, upload_source

ENDPOINT = "stepml-test-iris-ep"
# When each test's rollout starts: the test's own start (set below), because DescribeEndpoint and UpdateEndpoint
# read the real clock. A fixed date made the tests pass only until that date had gone by the canary's minute.
T0 = datetime.now(UTC)


@pytest.fixture(autouse=True)
def _rollout_starts_now() -> None:
    global T0
    T0 = datetime.now(UTC).replace(microsecond=0)


def canary(**overrides: Any) -> RolloutConfig:
    settings: dict[str, Any] = {
        "strategy": "canary",
        "instance_count": 2,
        "step_instances": 1,
        "wait_seconds": 60,
        "baking_seconds": 30,
        "timeout_seconds": 700,
        "max_5xx_errors": 0,
        "max_model_latency_ms": 500.0,
    }
    return RolloutConfig(**{**settings, **overrides})


def plan(config: RolloutConfig | None = None) -> dict[str, Any]:
    return deployment_config(config or canary(), list(alarm_names(ENDPOINT)))


@pytest.fixture
def store(aws: FakeAws) -> RecordStore:
    return RecordStore(aws.bucket, aws.s3)


@pytest.fixture
def two_models(aws: FakeAws, store: RecordStore) -> Iterator[dict[str, Any]]:
    """run-a's model deployed (1 instance), run-b's model and 2-instance config created: ready to roll out."""
    upload_source(aws)
    url_a, pipeline_a = publish_model(aws, "model-a")
    url_b, pipeline_b = publish_model(aws, "model-b", relabel=True)
    first = deploy_requests(aws, "run-a", url_a)
    for name in ("CreateModel", "CreateEndpointConfig", "CreateEndpoint"):
        getattr(endpoints, _action(name))(store, first[name])
    second = deploy_requests(aws, "run-b", url_b, instance_count=2, deployment_config=plan())
    endpoints.create_model(store, second["CreateModel"])
    endpoints.create_endpoint_config(store, second["CreateEndpointConfig"])
    yield {"first": first, "second": second, "a": pipeline_a, "b": pipeline_b}


def _action(state: str) -> str:
    return {"CreateModel": "create_model", "CreateEndpointConfig": "create_endpoint_config"}.get(
        state, "create_endpoint"
    )


def no_alarm(names: list[str], start: datetime, end: datetime) -> AlarmFiring | None:
    return None


def start_rollout(store: RecordStore, request: dict[str, Any], at: datetime) -> None:
    """UpdateEndpointWithRollout's request, sent at ``at`` (the record's clock is the real one: shift it)."""
    endpoints.update_endpoint(store, request, first_alarm=no_alarm)
    record = store.get("endpoints", ENDPOINT)
    assert record is not None
    record[rollout.DEPLOYMENT]["StartedAt"] = at.isoformat()
    store.put("endpoints", ENDPOINT, record)


def at(store: RecordStore, seconds: float, first_alarm: Any = no_alarm) -> dict[str, Any]:
    return endpoints.current_endpoint(store, ENDPOINT, first_alarm, now=T0 + timedelta(seconds=seconds))


# --- the timeline ---------------------------------------------------------------------------------------


def test_a_canary_update_shifts_half_then_all_then_serves_the_new_config(
    store: RecordStore, two_models: dict[str, Any]
) -> None:
    start_rollout(store, two_models["second"]["UpdateEndpointWithRollout"], T0)

    during = at(store, 10)
    assert during["EndpointStatus"] == "Updating"
    assert during["EndpointConfigName"] == "stepml-run-a"  # the old fleet still serves (most of) the traffic
    assert during["PendingDeploymentSummary"]["EndpointConfigName"] == "stepml-run-b"
    assert during["LastDeploymentConfig"] == plan()
    [variant] = during["PendingDeploymentSummary"]["ProductionVariants"]
    assert variant["VariantStatus"][0]["Status"] == "Baking"
    assert rollout.traffic_share(during, T0 + timedelta(seconds=10)) == ("stepml-run-b", 0.5)
    # what the state machine's DescribeEndpoint sees: still updating, not rolled back
    described = endpoints.describe_endpoint(store, {"EndpointName": ENDPOINT}, first_alarm=no_alarm)
    assert described["EndpointStatus"] == "Updating" and rollout.DEPLOYMENT not in described

    final_baking = at(store, 70)  # after the 60 s canary: all traffic on the new fleet, baking 30 s
    assert final_baking["EndpointStatus"] == "Updating"
    assert rollout.traffic_share(final_baking, T0 + timedelta(seconds=70)) == ("stepml-run-b", 1.0)

    done = at(store, 90)
    assert done["EndpointStatus"] == "InService" and done["EndpointConfigName"] == "stepml-run-b"
    assert "PendingDeploymentSummary" not in done and rollout.DEPLOYMENT not in done
    assert done["PreviousEndpointConfigNames"] == ["stepml-run-a"]
    assert done["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    assert rollout.traffic_share(done, T0 + timedelta(seconds=90)) is None
    assert store.get("endpoints", ENDPOINT) == done  # stored: the next reader sees it too


def test_linear_steps_a_quarter_at_a_time() -> None:
    steps = rollout.deployment_steps(plan(canary(strategy="linear", instance_count=4)), 4)
    assert [(s.start, s.share) for s in steps] == [(0, 0.25), (60, 0.5), (120, 0.75), (180, 1.0)]
    assert steps[-1].seconds == 30
    all_at_once = rollout.deployment_steps(plan(canary(strategy="all_at_once", instance_count=1, step_instances=1)), 1)
    # one step of all the traffic, baked for the wait interval, then the final baking
    assert [(s.start, s.seconds, s.share) for s in all_at_once] == [(0, 60, 1.0), (60, 30, 1.0)]
    percent = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {
                "Type": "CANARY",
                "WaitIntervalInSeconds": 10,
                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
            }
        }
    }
    # 10% of 4 instances is whole instances: 1
    assert rollout.deployment_steps(percent, 4)[0].share == 0.25


def test_an_alarm_in_alarm_during_the_rollout_rolls_it_back(store: RecordStore, two_models: dict[str, Any]) -> None:
    start_rollout(store, two_models["second"]["UpdateEndpointWithRollout"], T0)
    asked: list[tuple[list[str], datetime, datetime]] = []

    def fired(names: list[str], start: datetime, end: datetime) -> AlarmFiring | None:
        asked.append((names, start, end))
        return AlarmFiring(names[0], T0 + timedelta(seconds=5), "Threshold Crossed: 1 datapoint [3.0]")

    back = at(store, 20, fired)
    # the rollout's own alarms, from its start to now
    assert asked == [(list(alarm_names(ENDPOINT)), T0, T0 + timedelta(seconds=20))]
    assert back["EndpointStatus"] == "InService" and back["EndpointConfigName"] == "stepml-run-a"
    assert "PendingDeploymentSummary" not in back and rollout.DEPLOYMENT not in back
    assert f"CloudWatch alarm {ENDPOINT}-5xx-errors was in ALARM" in back["FailureReason"]
    assert back["ProductionVariants"][0]["CurrentInstanceCount"] == 1  # the old fleet, as it was
    assert back["LastDeploymentConfig"] == plan()
    # settled: the alarms are not asked again, and an update may start over
    asked.clear()
    assert at(store, 200, fired) == back and not asked
    endpoints.update_endpoint(store, two_models["second"]["UpdateEndpointWithRollout"], first_alarm=no_alarm)
    assert store.get("endpoints", ENDPOINT)["EndpointStatus"] == "Updating"


def test_alarms_are_read_until_the_timeline_ends_not_after(store: RecordStore, two_models: dict[str, Any]) -> None:
    start_rollout(store, two_models["second"]["UpdateEndpointWithRollout"], T0)
    windows: list[datetime] = []

    def quiet(names: list[str], start: datetime, end: datetime) -> None:
        windows.append(end)

    done = at(store, 500, quiet)  # asked long after the 90 s the deployment takes
    assert windows == [T0 + timedelta(seconds=90)]
    assert done["EndpointConfigName"] == "stepml-run-b"


def another_config(aws: FakeAws, store: RecordStore, two_models: dict[str, Any], run: str, **kwargs: Any) -> Any:
    """Requests for a third run whose model is run-b's (only the names differ), its model created."""
    requests = deploy_requests(aws, run, "s3://unused/model.tar.gz", **kwargs)
    endpoints.create_model(store, {**two_models["second"]["CreateModel"], "ModelName": f"stepml-{run}"})
    return requests


def test_a_retried_update_changes_nothing_and_another_waits_for_the_deployment(
    aws: FakeAws, store: RecordStore, two_models: dict[str, Any]
) -> None:
    request = two_models["second"]["UpdateEndpointWithRollout"]
    start_rollout(store, request, T0)
    # a retried UpdateEndpointWithRollout (its answer lost): the same deployment goes on
    endpoints.update_endpoint(store, request, first_alarm=no_alarm)
    assert store.get("endpoints", ENDPOINT)[rollout.DEPLOYMENT]["StartedAt"] == T0.isoformat()
    # another config while one is deploying: SageMaker's refusal
    third = another_config(aws, store, two_models, "run-c")
    endpoints.create_endpoint_config(store, third["CreateEndpointConfig"])
    with pytest.raises(ValidationException, match="Cannot update in-progress endpoint"):
        endpoints.update_endpoint(store, third["UpdateEndpoint"], first_alarm=no_alarm)


# --- SageMaker's rules ----------------------------------------------------------------------------------


def _with(deployment: dict[str, Any], **routing: Any) -> dict[str, Any]:
    changed = json.loads(json.dumps(deployment))
    changed["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"].update(routing)
    return changed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: _with(d, CanarySize={"Type": "INSTANCE_COUNT", "Value": 2}), "CanarySize must be at most 50%"),
        (lambda d: _with(d, Type="LINEAR"), "LINEAR takes no CanarySize"),
        (lambda d: _with(d, Type="ALL_AT_ONCE"), "ALL_AT_ONCE takes no CanarySize"),
        (
            # 60 s canary + 600 s final baking is more than the 600 s timeout
            lambda d: {
                **d,
                "BlueGreenUpdatePolicy": {
                    **d["BlueGreenUpdatePolicy"],
                    "TerminationWaitInSeconds": 600,
                    "MaximumExecutionTimeoutInSeconds": 600,
                },
            },
            "must be larger than the waiting",
        ),
        (
            lambda d: {
                "RollingUpdatePolicy": {
                    "MaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": 1},
                    "WaitIntervalInSeconds": 0,
                }
            },
            "RollingUpdatePolicy",
        ),
        (lambda d: {**d, "BlueGreenUpdatePolicy": {"Bogus": 1}}, "invalid UpdateEndpoint request"),
    ],
    ids=["canary-too-big", "linear-with-canary-size", "all-at-once-with-size", "timeout", "rolling", "shape"],
)
def test_deployment_configs_sagemaker_refuses_are_refused(
    store: RecordStore, two_models: dict[str, Any], change: Any, message: str
) -> None:
    request = two_models["second"]["UpdateEndpointWithRollout"]
    bad = {**request, "DeploymentConfig": change(request["DeploymentConfig"])}
    with pytest.raises(ValidationException, match=message):
        endpoints.update_endpoint(store, bad, first_alarm=no_alarm)
    assert store.get("endpoints", ENDPOINT)["EndpointStatus"] == "InService"


def test_a_canary_needs_two_instances_and_the_same_variant(
    aws: FakeAws, store: RecordStore, two_models: dict[str, Any]
) -> None:
    one_instance = another_config(aws, store, two_models, "run-c", deployment_config=plan())
    endpoints.create_endpoint_config(store, one_instance["CreateEndpointConfig"])
    with pytest.raises(ValidationException, match=r"at most 50% of the variant's instance count \(1\)"):
        endpoints.update_endpoint(store, one_instance["UpdateEndpointWithRollout"], first_alarm=no_alarm)
    renamed = {
        **one_instance["CreateEndpointConfig"],
        "EndpointConfigName": "stepml-run-d",
        "ProductionVariants": [
            {**one_instance["CreateEndpointConfig"]["ProductionVariants"][0], "VariantName": "Blue"}
        ],
    }
    endpoints.create_endpoint_config(store, renamed)
    with pytest.raises(ValidationException, match="the old one's variant names"):
        endpoints.update_endpoint(
            store,
            {**one_instance["UpdateEndpointWithRollout"], "EndpointConfigName": "stepml-run-d"},
            first_alarm=no_alarm,
        )


# --- the runtime ----------------------------------------------------------------------------------------


def test_the_runtime_sends_the_canary_its_share_and_counts_each_fleet(
    store: RecordStore, two_models: dict[str, Any]
) -> None:
    start_rollout(store, two_models["second"]["UpdateEndpointWithRollout"], T0)
    published: list[dict[str, Any]] = []
    clock = [T0 + timedelta(seconds=5)]
    # The metrics share the test's clock, whose two phases fall in different minutes: the counts arrive as one
    # entry per fleet per minute (as a slow run under real time also splits them), so they are summed below.
    metrics = InvocationMetrics(
        lambda namespace, data: published.extend(data), clock=lambda: clock[0].timestamp(), flush_seconds=0
    )
    server = ModelServer(metrics=metrics, wall_clock=lambda: clock[0], draw=random.Random(7).random)
    record = iris_splits()["test"].drop(columns="species").iloc[[0]]
    answers = {"a": str(two_models["a"].predict(record)[0]), "b": str(two_models["b"].predict(record)[0])}
    assert answers["a"] != answers["b"]
    rows = record.to_dict(orient="records")

    served = [server.invoke(store, ENDPOINT, rows, refresh_seconds=60)[0] for _ in range(400)]
    to_new = served.count(answers["b"]) / len(served)
    assert set(served) == {answers["a"], answers["b"]}
    assert 0.42 < to_new < 0.58, to_new  # the canary's half of the traffic

    clock[0] = T0 + timedelta(seconds=75)  # final baking: all of it
    assert {server.invoke(store, ENDPOINT, rows, refresh_seconds=60)[0] for _ in range(20)} == {answers["b"]}

    assert metrics.flush() > 0
    by_fleet: Counter[str] = Counter()
    for d in published:
        if d["MetricName"] == "Invocations" and len(d["Dimensions"]) == 3:
            by_fleet[d["Dimensions"][2]["Value"]] += d["StatisticValues"]["Sum"]
    assert by_fleet == {"stepml-run-a": served.count(answers["a"]), "stepml-run-b": served.count(answers["b"]) + 20}
    # the endpoint's own series (EndpointName, VariantName: what the alarms watch) gets both fleets' requests
    errors = [
        d["StatisticValues"]
        for d in published
        if d["MetricName"] == "Invocation5XXErrors" and len(d["Dimensions"]) == 2
    ]
    assert sum(e["Sum"] for e in errors) == 0 and sum(e["SampleCount"] for e in errors) == 420
    server.clear()


def test_failed_invocations_are_5xx_errors_that_trip_the_rollback_alarm(
    aws: FakeAws, store: RecordStore, two_models: dict[str, Any]
) -> None:
    """The whole local chain: the runtime's metrics reach CloudWatch, the local AWS's alarm evaluation sets the
    endpoint's 5XX alarm to ALARM, and the stand-in's DescribeEndpoint rolls the rollout back."""
    install_alarm_history()
    cloudwatch = CloudWatch(boto3.client("cloudwatch", region_name=REGION))
    for alarm in endpoint_alarms(ENDPOINT, canary()):
        cloudwatch.put_alarm(alarm.request([]))
    endpoints.update_endpoint(store, two_models["second"]["UpdateEndpointWithRollout"], first_alarm=no_alarm)
    metrics = InvocationMetrics(cloudwatch.put_metric_data, flush_seconds=0)
    server = ModelServer(metrics=metrics, draw=lambda: 0.0)  # every request to the new fleet
    with pytest.raises(ModelError):
        server.invoke(store, ENDPOINT, [{"no such feature": 1.0}], refresh_seconds=60)
    assert metrics.flush() == 6

    evaluations = {e.name: e for e in evaluate_alarms(cloudwatch.cloudwatch)}
    assert evaluations[f"{ENDPOINT}-5xx-errors"].state == "ALARM"
    assert evaluations[f"{ENDPOINT}-model-latency"].state == "OK"
    back = endpoints.describe_endpoint(store, {"EndpointName": ENDPOINT}, first_alarm=cloudwatch.first_alarm)
    assert back["EndpointStatus"] == "InService" and back["EndpointConfigName"] == "stepml-run-a"
    assert f"{ENDPOINT}-5xx-errors was in ALARM" in back["FailureReason"]
    server.clear()


def test_the_runtime_publishes_metrics_where_the_template_turns_them_on(
    aws: FakeAws, store: RecordStore, two_models: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline_core.standin import runtime

    from stepml.embedded.template import stack_model

    local = stack_model(ROOT / "infra" / "template.yaml", "stepml-local", {"Target": "local"})
    assert local.functions["InferenceFunction"].environment[runtime.METRICS_SETTING] == "on"
    monkeypatch.setattr(runtime, "_SERVER", ModelServer())
    rows = iris_splits()["test"].drop(columns="species").iloc[:2].to_dict(orient="records")
    monkeypatch.delenv(runtime.METRICS_SETTING, raising=False)
    runtime.invoke_endpoint(ENDPOINT, rows, store=store, refresh_seconds=60)
    assert runtime._SERVER.metrics is None  # a test (or any caller) that did not ask publishes nothing

    monkeypatch.setenv(runtime.METRICS_SETTING, "on")
    runtime.invoke_endpoint(ENDPOINT, rows, store=store, refresh_seconds=60)
    assert runtime._SERVER.metrics is not None and runtime._SERVER.metrics.flush() == 6
    listed = boto3.client("cloudwatch", region_name=REGION).list_metrics(Namespace="AWS/SageMaker")["Metrics"]
    assert {m["MetricName"] for m in listed} == {"Invocations", "Invocation5XXErrors", "ModelLatency"}
    runtime._SERVER.clear()
    monkeypatch.setenv(runtime.METRICS_SETTING, "yes")
    monkeypatch.setattr(runtime, "_SERVER", ModelServer())
    with pytest.raises(ConfigurationError, match="STANDIN_ENDPOINT_METRICS must be on or off"):
        runtime.invoke_endpoint(ENDPOINT, rows, store=store)
