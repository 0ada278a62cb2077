"""CloudWatch alarms are evaluated locally as CloudWatch evaluates them (stepml/embedded/alarms.py): states,
M of N, missing data, and the reasons CloudWatch gives, through the AWS APIs against moto."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from stepml.embedded.alarms import evaluate_alarms, render_alarm_table
from stepml.embedded.function_logs import FunctionLogShipper
from stepml.embedded.lambda_runner import InvocationLog, InvocationResult
from stepml.embedded.stack_resources import provision_stack_resources
from stepml.embedded.template import stack_model

ROOT = Path(__file__).parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
REGION = "us-east-1"
PERIOD = 300
# the middle of a 5-minute period, so that "now" and its period start are unambiguous
NOW = datetime.fromtimestamp(math.floor(datetime.now(UTC).timestamp() / PERIOD) * PERIOD + 150, UTC)


@pytest.fixture
def cloudwatch(moto_clients: Any) -> Any:
    return moto_clients("cloudwatch")


def _alarm(cloudwatch: Any, name: str, **overrides: Any) -> None:
    request = {
        "AlarmName": name,
        "Namespace": "app",
        "MetricName": "Errors",
        "Dimensions": [{"Name": "FunctionName", "Value": name}],
        "Statistic": "Sum",
        "Period": PERIOD,
        "EvaluationPeriods": 1,
        "Threshold": 0.0,
        "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching",
    }
    cloudwatch.put_metric_alarm(**{k: v for k, v in {**request, **overrides}.items() if v is not None})


def _put(cloudwatch: Any, name: str, value: float, at: datetime, **metric: Any) -> None:
    dimensions = metric.pop("dimensions", [{"Name": "FunctionName", "Value": name}])
    datum = {"MetricName": metric.pop("metric", "Errors"), "Dimensions": dimensions, "Value": value, "Timestamp": at}
    cloudwatch.put_metric_data(Namespace=metric.pop("namespace", "app"), MetricData=[datum])


def _described(cloudwatch: Any, name: str) -> dict[str, Any]:
    (alarm,) = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"]
    return dict(alarm)


def _stamp(at: datetime) -> str:
    start = datetime.fromtimestamp(math.floor(at.timestamp() / PERIOD) * PERIOD, UTC)
    return start.strftime("%d/%m/%y %H:%M:%S")


def test_breaching_data_raises_the_alarm_and_good_data_clears_it(cloudwatch: Any) -> None:
    _alarm(cloudwatch, "errors")
    _put(cloudwatch, "errors", 2, NOW - timedelta(seconds=60))
    (evaluation,) = evaluate_alarms(cloudwatch, NOW)
    assert (evaluation.previous_state, evaluation.state) == ("INSUFFICIENT_DATA", "ALARM")
    expected = (
        f"Threshold Crossed: 1 out of the last 1 datapoints [2.0 ({_stamp(NOW)})] was greater than the threshold "
        "(0.0) (minimum 1 datapoint for INSUFFICIENT_DATA -> ALARM transition)."
    )
    assert evaluation.reason == expected
    described = _described(cloudwatch, "errors")
    assert (described["StateValue"], described["StateReason"]) == ("ALARM", expected)

    later = NOW + timedelta(seconds=3 * PERIOD)  # the error has left the evaluation range (N + 2 periods)
    _put(cloudwatch, "errors", 0, later)
    (evaluation,) = evaluate_alarms(cloudwatch, later)
    assert (evaluation.previous_state, evaluation.state) == ("ALARM", "OK")
    assert evaluation.reason == (
        f"Threshold Crossed: 1 out of the last 1 datapoints [0.0 ({_stamp(later)})] was not greater than the "
        "threshold (0.0) (minimum 1 datapoint for ALARM -> OK transition)."
    )
    updated = _described(cloudwatch, "errors")["StateUpdatedTimestamp"]
    (evaluation,) = evaluate_alarms(cloudwatch, later)
    assert not evaluation.changed
    assert _described(cloudwatch, "errors")["StateUpdatedTimestamp"] == updated  # no state set when none changes


def test_no_data_is_judged_by_treat_missing_data(cloudwatch: Any) -> None:
    for treatment in ("missing", "notBreaching", "breaching", "ignore"):
        _alarm(cloudwatch, treatment, TreatMissingData=treatment, EvaluationPeriods=2)
    states = {e.name: (e.state, e.reason) for e in evaluate_alarms(cloudwatch, NOW)}
    assert states == {
        "missing": ("INSUFFICIENT_DATA", "Insufficient Data: 2 datapoints were unknown."),
        "notBreaching": (
            "OK",
            "Threshold Crossed: no datapoints were received for 2 periods and 2 missing datapoints were treated "
            "as [NonBreaching].",
        ),
        "breaching": (
            "ALARM",
            "Threshold Crossed: no datapoints were received for 2 periods and 2 missing datapoints were treated "
            "as [Breaching].",
        ),
        "ignore": ("INSUFFICIENT_DATA", "Unchecked: Initial alarm creation"),  # kept: never evaluated yet
    }
    assert _described(cloudwatch, "missing")["StateValue"] == "INSUFFICIENT_DATA"


# The documented examples ("Configuring how CloudWatch alarms treat missing data"): five datapoints retrieved
# for three evaluation periods, oldest first; 0 within the threshold, X breaching, - missing. Expected states
# for missing, ignore (from ALARM: kept shows as ALARM, a change to OK shows as OK), breaching, notBreaching.
DOCUMENTED = [
    (3, "0 - X - X", ("OK", "OK", "OK", "OK")),
    (3, "0 - - - -", ("OK", "OK", "OK", "OK")),
    (3, "- - - - -", ("INSUFFICIENT_DATA", "ALARM", "ALARM", "OK")),
    (3, "0 X X - X", ("ALARM", "ALARM", "ALARM", "ALARM")),
    (3, "X - - - -", ("ALARM", "ALARM", "ALARM", "OK")),
    (2, "0 - X - X", ("ALARM", "ALARM", "ALARM", "ALARM")),
    (2, "0 0 X 0 X", ("ALARM", "ALARM", "ALARM", "ALARM")),
    (2, "0 - X - -", ("OK", "OK", "ALARM", "OK")),
    (2, "- - - - 0", ("OK", "OK", "ALARM", "OK")),
]


@pytest.mark.parametrize(("to_alarm", "points", "expected"), DOCUMENTED)
def test_the_documented_missing_data_examples(
    cloudwatch: Any, to_alarm: int, points: str, expected: tuple[str, ...]
) -> None:
    treatments = ("missing", "ignore", "breaching", "notBreaching")
    for treatment in treatments:
        _alarm(cloudwatch, treatment, TreatMissingData=treatment, EvaluationPeriods=3, DatapointsToAlarm=to_alarm)
        cloudwatch.set_alarm_state(AlarmName=treatment, StateValue="ALARM", StateReason="set by the test")
        for age, point in enumerate(reversed(points.split())):  # age 0: the period that holds now
            if point != "-":
                _put(cloudwatch, treatment, 1.0 if point == "X" else 0.0, NOW - timedelta(seconds=age * PERIOD))
    states = {e.name: e.state for e in evaluate_alarms(cloudwatch, NOW)}
    assert tuple(states[t] for t in treatments) == expected


def test_dimensions_match_whatever_their_order(cloudwatch: Any) -> None:
    dimensions = [{"Name": "ApiName", "Value": "api"}, {"Name": "Stage", "Value": "v1"}]
    _alarm(cloudwatch, "5xx", Namespace="AWS/ApiGateway", MetricName="5XXError", Dimensions=dimensions)
    _put(cloudwatch, "5xx", 1, NOW, namespace="AWS/ApiGateway", metric="5XXError", dimensions=dimensions[::-1])
    _put(cloudwatch, "5xx", 5, NOW, namespace="AWS/ApiGateway", metric="5XXError", dimensions=dimensions[:1])
    (evaluation,) = evaluate_alarms(cloudwatch, NOW)
    assert evaluation.state == "ALARM" and "[1.0 (" in evaluation.reason  # not the other dimension set's 5


def test_a_percentile_alarm_is_read_on_a_bound_and_says_so(cloudwatch: Any) -> None:
    _alarm(cloudwatch, "latency", Statistic=None, ExtendedStatistic="p99", Threshold=1000.0, MetricName="Latency")
    for value in (20.0, 30.0, 1500.0):
        _put(cloudwatch, "latency", value, NOW, metric="Latency")
    (evaluation,) = evaluate_alarms(cloudwatch, NOW)
    assert evaluation.state == "ALARM" and "[1500.0 (" in evaluation.reason
    assert "p99 read as Maximum" in evaluation.note


def test_a_metric_math_alarm_evaluates_its_expression(cloudwatch: Any) -> None:
    def stat(metric: str) -> dict[str, Any]:
        return {"Metric": {"Namespace": "app", "MetricName": metric}, "Period": PERIOD, "Stat": "Sum"}

    cloudwatch.put_metric_alarm(
        AlarmName="error-rate",
        EvaluationPeriods=1,
        Threshold=10.0,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="notBreaching",
        Metrics=[
            {"Id": "rate", "Expression": "100 * errors / calls", "ReturnData": True},
            {"Id": "errors", "MetricStat": stat("Errors"), "ReturnData": False},
            {"Id": "calls", "MetricStat": stat("Calls"), "ReturnData": False},
        ],
    )
    for metric, value in (("Errors", 3.0), ("Calls", 10.0)):
        cloudwatch.put_metric_data(
            Namespace="app", MetricData=[{"MetricName": metric, "Value": value, "Timestamp": NOW}]
        )
    (evaluation,) = evaluate_alarms(cloudwatch, NOW)
    assert (evaluation.state, evaluation.metric) == ("ALARM", "expression 100 * errors / calls")
    assert "[30.0 (" in evaluation.reason

    alarm = _described(cloudwatch, "error-rate")
    metrics = [{**q, "Expression": "SUM(METRICS())"} if q["Id"] == "rate" else q for q in alarm["Metrics"]]
    cloudwatch.put_metric_alarm(
        **{k: alarm[k] for k in ("AlarmName", "EvaluationPeriods", "Threshold", "ComparisonOperator")}, Metrics=metrics
    )
    (evaluation,) = evaluate_alarms(cloudwatch, NOW)
    assert "cannot evaluate it" in evaluation.note and not evaluation.changed  # said, not guessed


def test_the_templates_alarms_follow_the_functions_invocations(tmp_path: Path) -> None:
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        clients: dict[str, Any] = {}

        def client(service: str) -> Any:
            return clients.setdefault(service, session.client(service))

        provision_stack_resources(client, TEMPLATE, "stepml-local", {"Target": "local"})
        model = stack_model(TEMPLATE, "stepml-local", {"Target": "local"})
        invocations = InvocationLog()
        shipper = FunctionLogShipper(tmp_path, model.functions.values(), client, invocations=invocations)
        ingest = model.functions["IngestFunction"].name
        invocations.add(InvocationResult(ingest, {"errorType": "DataValidationError"}, "DataValidationError", 9.0, "r"))
        invocations.add(InvocationResult(model.functions["PreprocessFunction"].name, {}, None, 9.0, "r2"))
        shipper.ship()
        evaluations = evaluate_alarms(client("cloudwatch"))
        assert len(evaluations) == 44
        raised = [e.name for e in evaluations if e.state == "ALARM"]
        assert raised == ["stepml-local-IngestErrorsAlarm"]
        drift = "stepml-local-MonitorDriftAlarm"
        assert {e.state for e in evaluations if e.name not in [*raised, drift]} == {"OK"}
        # TreatMissingData ignore keeps the state: no monitoring run yet, so still INSUFFICIENT_DATA
        assert next(e.state for e in evaluations if e.name == drift) == "INSUFFICIENT_DATA"

        table = render_alarm_table(evaluations).splitlines()
        assert table[0].split() == ["NAME", "STATE", "METRIC", "THRESHOLD", "REASON"]
        assert table[1].startswith("stepml-local-IngestErrorsAlarm") and "ALARM (was INSUFFICIENT_DATA)" in table[1]
        assert "AWS/Lambda Errors (Sum)" in table[1] and "> 0, 1 of 1 x 300s" in table[1]
        assert len(table) == 45
