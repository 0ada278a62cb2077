"""Function output reaches CloudWatch Logs, and its EMF metrics CloudWatch, as on AWS
(stepml/embedded/function_logs.py), checked against moto through the AWS APIs."""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricResolution, MetricUnit

from stepml.embedded.function_logs import (
    EmfError,
    FunctionLogShipper,
    emf_metric_data,
    merged_by_second,
    statistic_set,
)
from stepml.embedded.lambda_runner import InvocationLog, InvocationResult
from stepml.embedded.template import ACCOUNT_ID, REGION, FunctionSpec

GROUP = "/stepml/dev/functions"
Clients = Callable[[str], Any]


@pytest.fixture
def clients(moto_clients: Clients) -> Clients:
    moto_clients("logs").create_log_group(logGroupName=GROUP)
    return moto_clients


def _spec(name: str, log_group: str = GROUP) -> FunctionSpec:
    return FunctionSpec(
        logical_id=name,
        name=name,
        arn=f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}",
        code_dir=Path("."),
        handler="app.handler",
        timeout_seconds=3,
        memory_mb=128,
        environment={},
        log_group=log_group,
        log_format="JSON",
    )


def _messages(clients: Clients, group: str = GROUP) -> list[str]:
    return [e["message"] for e in clients("logs").filter_log_events(logGroupName=group)["events"]]


def _sum(clients: Clients, namespace: str, name: str, dimensions: list[dict[str, str]]) -> float | None:
    """The metric's sum over the last hour (GetMetricData matches the dimension set exactly, as CloudWatch does)."""
    now = datetime.now(UTC)
    (result,) = clients("cloudwatch").get_metric_data(
        MetricDataQueries=[
            {
                "Id": "m",
                "MetricStat": {
                    "Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dimensions},
                    "Period": 3600,
                    "Stat": "Sum",
                },
            }
        ],
        StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(minutes=5),
    )["MetricDataResults"]
    return sum(result["Values"]) if result["Values"] else None


def test_appended_lines_are_shipped_and_a_partial_line_waits(clients: Clients, tmp_path: Path) -> None:
    log = tmp_path / "stepml-local-Ingest.log"
    log.write_text("from an earlier process\n")
    shipper = FunctionLogShipper(tmp_path, [_spec("stepml-local-Ingest")], clients)
    with log.open("a") as out:
        out.write("START RequestId: r1 Version: $LATEST\n\nhello from the handler\nhalf a li")
    assert shipper.ship().events == 2  # the empty line is no event; the partial one waits
    assert _messages(clients) == ["START RequestId: r1 Version: $LATEST", "hello from the handler"]
    with log.open("a") as out:
        out.write("ne\nEND RequestId: r1\n")
    assert shipper.ship().events == 2
    assert _messages(clients)[2:] == ["half a line", "END RequestId: r1"]
    assert shipper.ship().events == 0
    (stream,) = clients("logs").describe_log_streams(logGroupName=GROUP)["logStreams"]
    # Lambda's stream name in a log group functions share: <date>/<function>[<version>]<environment id>
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/stepml-local-Ingest\[\$LATEST\][0-9a-f]{32}", stream["logStreamName"])


def test_the_default_group_is_created_on_first_use_as_lambda_does(clients: Clients, tmp_path: Path) -> None:
    spec = _spec("fn", log_group="")
    shipper = FunctionLogShipper(tmp_path, [spec], clients, from_start=True)
    (tmp_path / "fn.log").write_text("one\n")
    shipper.ship()
    assert _messages(clients, "/aws/lambda/fn") == ["one"]
    (stream,) = clients("logs").describe_log_streams(logGroupName="/aws/lambda/fn")["logStreams"]
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", stream["logStreamName"])


def test_a_line_over_the_event_limit_is_split(clients: Clients, tmp_path: Path) -> None:
    shipper = FunctionLogShipper(tmp_path, [_spec("fn")], clients, from_start=True)
    line = "é" * 200_000  # 400,000 bytes of UTF-8: over one event's 256 KiB
    (tmp_path / "fn.log").write_text(line + "\n")
    assert shipper.ship().events == 2
    pieces = _messages(clients)
    assert "".join(pieces) == line and all(len(p.encode()) <= 256 * 1024 - 26 for p in pieces)


def _powertools_emf(**values: float) -> str:
    """What Powertools Metrics prints for these metrics (the handlers' own library)."""
    metrics = Metrics(namespace="stepml", service="stepml")
    metrics.add_dimension(name="stage", value="ingest")
    for name, value in values.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    metrics.add_metric(name="RowsRead", unit=MetricUnit.Count, value=2, resolution=MetricResolution.High)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        metrics.flush_metrics()
    return printed.getvalue().strip()


def test_emf_lines_become_metrics(clients: Clients, tmp_path: Path) -> None:
    shipper = FunctionLogShipper(tmp_path, [_spec("fn")], clients, from_start=True)
    lines = [_powertools_emf(DatasetsIngested=1), _powertools_emf(DatasetsIngested=2)]
    (tmp_path / "fn.log").write_text("\n".join(lines) + "\n")
    result = shipper.ship()
    assert (result.events, result.rejected_emf) == (2, 0)
    # (in the order Powertools lists them: moto matches a dimension set in its stored order)
    dimensions = [{"Name": "stage", "Value": "ingest"}, {"Name": "service", "Value": "stepml"}]
    assert _sum(clients, "stepml", "DatasetsIngested", dimensions) == 3.0
    assert _sum(clients, "stepml", "DatasetsIngested", dimensions[1:]) is None  # not a dimension set it declared
    listed = clients("cloudwatch").list_metrics(Namespace="stepml", MetricName="RowsRead")["Metrics"]
    assert listed and sorted(d["Name"] for d in listed[0]["Dimensions"]) == ["service", "stage"]
    assert _messages(clients) == lines  # the events are kept as they are


def test_a_seconds_datapoints_of_one_metric_are_sent_as_one_datum() -> None:
    second = datetime(2026, 11, 30, 12, 0, 5, tzinfo=UTC)
    dims = [{"Name": "service", "Value": "stepml"}]

    def datum(values: list[float], at: datetime, dimensions: list[dict[str, str]] = dims) -> tuple[str, dict[str, Any]]:
        return ("stepml", {"MetricName": "Latency", "Timestamp": at, "Unit": "Milliseconds",
                           "Dimensions": dimensions, "StatisticValues": statistic_set(values)})  # fmt: skip

    data = [datum([float(i % 200), 7.0], second + timedelta(microseconds=i * 3000)) for i in range(300)]
    data += [datum([1.0], second + timedelta(seconds=1)), datum([1.0], second, [{"Name": "stage", "Value": "x"}])]
    merged = merged_by_second(data)
    (this_second,) = [d for n, d in merged if d["Timestamp"] == second and d["Dimensions"] == dims]
    assert this_second["StatisticValues"] == {
        "SampleCount": 600.0,
        "Sum": sum(float(i % 200) for i in range(300)) + 7.0 * 300,
        "Minimum": 0.0,
        "Maximum": 199.0,
    }
    assert data[0][1]["StatisticValues"]["SampleCount"] == 2.0  # the inputs are left as they were
    # another second or another dimension set is another datum
    assert len(merged) == 3


def test_many_emf_lines_of_one_second_keep_their_statistics(clients: Clients, tmp_path: Path) -> None:
    shipper = FunctionLogShipper(tmp_path, [_spec("fn")], clients, from_start=True)
    at = int(time.time()) * 1000
    directive = {
        "Namespace": "stepml",
        "Dimensions": [["service"]],
        "Metrics": [{"Name": "Latency", "Unit": "Milliseconds"}],
    }
    lines = [
        json.dumps(
            {"_aws": {"Timestamp": at + i, "CloudWatchMetrics": [directive]}, "service": "stepml", "Latency": float(i)}
        )
        for i in range(120)
    ]
    (tmp_path / "fn.log").write_text("\n".join(lines) + "\n")
    shipper.ship()
    now = datetime.now(UTC)
    (stats,) = clients("cloudwatch").get_metric_statistics(
        Namespace="stepml",
        MetricName="Latency",
        Dimensions=[{"Name": "service", "Value": "stepml"}],
        StartTime=now - timedelta(minutes=5),
        EndTime=now + timedelta(minutes=5),
        Period=600,
        Statistics=["SampleCount", "Sum", "Minimum", "Maximum"],
    )["Datapoints"]
    assert (stats["SampleCount"], stats["Sum"], stats["Minimum"], stats["Maximum"]) == (120.0, 7140.0, 0.0, 119.0)


def test_a_busy_functions_metrics_cost_the_local_aws_one_datapoint_per_metric_and_second(
    clients: Clients, tmp_path: Path
) -> None:
    """The inference API prints an EMF line per request: the local CloudWatch (moto, which keeps every datapoint
    in memory for as long as it runs, and scans them all on every alarm's GetMetricData) must hold a second's
    values of one metric as one datapoint, whatever the request rate, with the statistics unchanged."""
    from moto.cloudwatch.models import cloudwatch_backends

    shipper = FunctionLogShipper(tmp_path, [_spec("fn")], clients, from_start=True)
    at = int(time.time()) * 1000
    directive = {"Namespace": "stepml", "Dimensions": [["service"]], "Metrics": [{"Name": "Latency"}, {"Name": "Hits"}]}
    lines = [
        json.dumps(
            {
                "_aws": {"Timestamp": at + i, "CloudWatchMetrics": [directive]},
                "service": "s",
                "Latency": float(i),
                "Hits": 1,
            }
        )
        for i in range(900)  # 900 requests within one second
    ]
    (tmp_path / "fn.log").write_text("\n".join(lines) + "\n")
    stored = cloudwatch_backends[ACCOUNT_ID][REGION].metric_data
    before = len(stored)
    shipper.ship()
    assert len(stored) - before == 2  # Latency and Hits, one second each
    now = datetime.now(UTC)
    (stats,) = clients("cloudwatch").get_metric_statistics(
        Namespace="stepml", MetricName="Latency", Dimensions=[{"Name": "service", "Value": "s"}],
        StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=5), Period=600,
        Statistics=["SampleCount", "Sum", "Minimum", "Maximum", "Average"],
    )["Datapoints"]  # fmt: skip
    assert (stats["SampleCount"], stats["Sum"], stats["Minimum"], stats["Maximum"]) == (900.0, 404550.0, 0.0, 899.0)
    assert stats["Average"] == 449.5
    assert _sum(clients, "stepml", "Hits", [{"Name": "service", "Value": "s"}]) == 900.0


def test_emf_extraction_follows_the_specification() -> None:
    document: dict[str, Any] = {
        "_aws": {
            "Timestamp": 1_700_000_000_000,
            "CloudWatchMetrics": [
                {
                    "Namespace": "app",
                    "Dimensions": [["Operation"], []],
                    "Metrics": [{"Name": "Latency", "Unit": "Milliseconds", "StorageResolution": 1}, {"Name": "Hits"}],
                }
            ],
        },
        "Operation": "predict",
        "Latency": [12, 12, 30],
        "Hits": 4,
        "requestId": "ignored",
    }
    data = emf_metric_data("2026-01-01T00:00:00Z req-1 INFO " + json.dumps(document))  # metadata before the JSON
    assert data is not None and len(data) == 4  # two metrics x two dimension sets
    namespace, latency = data[0]
    assert namespace == "app"
    assert latency["Dimensions"] == [{"Name": "Operation", "Value": "predict"}]
    assert latency["StatisticValues"] == {"SampleCount": 3.0, "Sum": 54.0, "Minimum": 12.0, "Maximum": 30.0}
    assert (latency["Unit"], latency["StorageResolution"]) == ("Milliseconds", 1)
    assert latency["Timestamp"] == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert "Dimensions" not in data[1][1]  # the empty dimension set: a metric without dimensions
    assert data[2][1]["Unit"] == "None" and "StorageResolution" not in data[2][1]
    assert emf_metric_data('{"level": "INFO", "message": "no metrics here"}') is None
    assert emf_metric_data('a text line that mentions "_aws" but holds no JSON') is None

    def broken(**change: Any) -> str:
        return json.dumps({**document, **change})

    for invalid in (
        broken(Operation=7),  # a dimension value must be a string
        broken(Latency="12"),  # a metric value must be a number
        broken(Hits=True),
        broken(Latency=list(range(101))),  # at most 100 values
        broken(_aws={**document["_aws"], "Timestamp": "now"}),
        broken(_aws={"CloudWatchMetrics": document["_aws"]["CloudWatchMetrics"]}),  # no Timestamp
        broken(
            _aws={
                **document["_aws"],
                "CloudWatchMetrics": [{"Namespace": "AWS/Lambda", "Dimensions": [[]], "Metrics": []}],
            }
        ),
    ):
        with pytest.raises(EmfError):
            emf_metric_data(invalid)


def test_an_invalid_emf_event_is_logged_but_gives_no_metric(clients: Clients, tmp_path: Path) -> None:
    shipper = FunctionLogShipper(tmp_path, [_spec("fn")], clients, from_start=True)
    directive = {"Namespace": "app", "Dimensions": [["Op"]], "Metrics": [{"Name": "Hits"}]}  # no "Op" member
    invalid = {"_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [directive]}, "Hits": 1}
    (tmp_path / "fn.log").write_text(json.dumps(invalid) + "\n")
    result = shipper.ship()
    assert (result.events, result.metrics, result.rejected_emf) == (1, 0, 1)
    assert clients("cloudwatch").list_metrics(Namespace="app")["Metrics"] == []


def test_invocations_publish_lambdas_own_metrics(clients: Clients, tmp_path: Path) -> None:
    invocations = InvocationLog()
    invocations.add(InvocationResult("fn", {}, None, 120.0, "r0"))  # before the shipper: not its to send
    shipper = FunctionLogShipper(tmp_path, [_spec("fn")], clients, invocations=invocations)
    invocations.add(InvocationResult("fn", {}, None, 12.5, "r1"))
    invocations.add(InvocationResult("fn", {"errorType": "Sandbox.Timedout"}, "Sandbox.Timedout", 3000.0, "r2"))
    invocations.add(InvocationResult("fn", {}, None, 12.5, "r3"))
    shipper.ship()
    shipper.ship()  # nothing new: nothing sent twice
    dimensions = [{"Name": "FunctionName", "Value": "fn"}]
    assert _sum(clients, "AWS/Lambda", "Invocations", dimensions) == 3.0
    assert _sum(clients, "AWS/Lambda", "Errors", dimensions) == 1.0
    assert _sum(clients, "AWS/Lambda", "Duration", dimensions) == 3025.0


def test_what_aws_logs_tail_reads(clients: Clients, tmp_path: Path) -> None:
    """AWS CLI v2's ``logs tail`` pages through FilterLogEvents (interleaved, from --since) and prints each
    event's timestamp, stream and message, following by eventId."""
    shipper = FunctionLogShipper(tmp_path, [_spec("a"), _spec("b")], clients, from_start=True)
    (tmp_path / "a.log").write_text("a1\na2\n")
    (tmp_path / "b.log").write_text("b1\n")
    shipper.ship()
    since = int((time.time() - 600) * 1000)
    paginator = clients("logs").get_paginator("filter_log_events")
    events = [
        e for page in paginator.paginate(logGroupName=GROUP, interleaved=True, startTime=since) for e in page["events"]
    ]
    assert [e["message"] for e in events if e["logStreamName"].split("/")[-1].startswith("a[")] == ["a1", "a2"]
    assert sorted(e["message"] for e in events) == ["a1", "a2", "b1"]
    assert len({e["eventId"] for e in events}) == 3
    assert all(since <= e["timestamp"] <= e["ingestionTime"] for e in events)
