"""What CloudWatch does on an alarm state change, on the embedded target: the EventBridge event and SNS actions."""

from __future__ import annotations

import json
from typing import Any

from stepml.embedded.alarm_events import AlarmWatcher
from stepml.embedded.cloudwatch import alarm_writes
from stepml.embedded.cloudwatch import install as install_alarm_history
from stepml.embedded.events import matches
from stepml.embedded.template import stack_model
from tests.conftest import load_event
from tests.unit.test_template import TEMPLATE


def _alarm(clients: Any, name: str, topic: str, model: str = "iris") -> None:
    clients("cloudwatch").put_metric_alarm(
        AlarmName=name,
        AlarmDescription="drift",
        Namespace="stepml/Monitoring",
        MetricName="DriftedFeatures",
        Dimensions=[{"Name": "ModelName", "Value": model}],
        Statistic="Maximum",
        Period=300,
        EvaluationPeriods=1,
        Threshold=0,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="ignore",
        AlarmActions=[topic],
        OKActions=[topic],
    )


def _subscribed_queue(clients: Any, topic: str) -> str:
    url = clients("sqs").create_queue(QueueName="alarm-notifications")["QueueUrl"]
    arn = clients("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    clients("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    return str(url)


def _messages(clients: Any, url: str) -> list[dict[str, Any]]:
    answer = clients("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    return [json.loads(m["Body"]) for m in answer.get("Messages", [])]


def test_a_state_change_sends_the_event_and_notifies_the_alarms_topic(moto_clients: Any) -> None:
    topic = moto_clients("sns").create_topic(Name="alerts")["TopicArn"]
    queue = _subscribed_queue(moto_clients, topic)
    _alarm(moto_clients, "drift", topic)
    events: list[dict[str, Any]] = []
    watcher = AlarmWatcher(lambda: moto_clients("cloudwatch"), lambda: moto_clients("sns"), events.append)

    assert watcher.check() == [], "the first look only records what is there"
    # a new alarm starts in INSUFFICIENT_DATA (moto says OK, "Unchecked"): no change yet
    assert watcher.check() == []
    moto_clients("cloudwatch").set_alarm_state(AlarmName="drift", StateValue="ALARM", StateReason="2 features drifted")
    [change] = watcher.check()

    assert (change.name, change.previous_state, change.state) == ("drift", "INSUFFICIENT_DATA", "ALARM")
    [event] = events
    assert (event["source"], event["detail-type"]) == ("aws.cloudwatch", "CloudWatch Alarm State Change")
    assert event["detail"]["state"]["value"] == "ALARM" and event["detail"]["state"]["reason"] == "2 features drifted"
    assert event["detail"]["previousState"]["value"] == "INSUFFICIENT_DATA"
    [metric] = event["detail"]["configuration"]["metrics"]
    assert metric["metricStat"]["metric"] == {
        "namespace": "stepml/Monitoring",
        "name": "DriftedFeatures",
        "dimensions": {"ModelName": "iris"},
    }
    # the same keys, at the same places, as AWS's documented sample
    sample = load_event("cloudwatch_alarm_state_change")
    assert set(event) == set(sample) and set(event["detail"]) == set(sample["detail"])
    [message] = _messages(moto_clients, queue)
    assert (message["AlarmName"], message["OldStateValue"], message["NewStateValue"]) == (
        "drift",
        "INSUFFICIENT_DATA",
        "ALARM",
    )
    assert message["Trigger"]["MetricName"] == "DriftedFeatures"

    # setting the state it already has is no change; going back to OK is one, and notifies OKActions
    moto_clients("cloudwatch").set_alarm_state(AlarmName="drift", StateValue="ALARM", StateReason="again")
    assert watcher.check() == []
    moto_clients("cloudwatch").set_alarm_state(AlarmName="drift", StateValue="OK", StateReason="no drift")
    [back] = watcher.check()
    assert (back.previous_state, back.state) == ("ALARM", "OK") and len(events) == 2
    assert [m["NewStateValue"] for m in _messages(moto_clients, queue)] == ["OK"]


def test_actions_disabled_still_send_the_event(moto_clients: Any) -> None:
    topic = moto_clients("sns").create_topic(Name="alerts")["TopicArn"]
    queue = _subscribed_queue(moto_clients, topic)
    _alarm(moto_clients, "drift", topic)
    moto_clients("cloudwatch").disable_alarm_actions(AlarmNames=["drift"])
    events: list[dict[str, Any]] = []
    watcher = AlarmWatcher(lambda: moto_clients("cloudwatch"), lambda: moto_clients("sns"), events.append)
    watcher.check()
    moto_clients("cloudwatch").set_alarm_state(AlarmName="drift", StateValue="ALARM", StateReason="drifted")
    assert len(watcher.check()) == 1 and len(events) == 1
    assert _messages(moto_clients, queue) == []


def test_the_drift_alarms_event_matches_the_templates_retrain_rule(moto_clients: Any) -> None:
    model = stack_model(TEMPLATE, "stepml-local", {"Target": "local"})
    alarm = "stepml-local-MonitorDriftAlarm"  # CloudFormation's name for an alarm without AlarmName
    patterns = model.functions["StartPipelineFunction"].event_patterns
    topic = moto_clients("sns").create_topic(Name="alerts")["TopicArn"]
    _alarm(moto_clients, alarm, topic)
    _alarm(moto_clients, "another-alarm", topic)
    events: list[dict[str, Any]] = []
    watcher = AlarmWatcher(lambda: moto_clients("cloudwatch"), lambda: moto_clients("sns"), events.append)
    watcher.check()
    for name in (alarm, "another-alarm"):
        moto_clients("cloudwatch").set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="drifted")
    watcher.check()
    moto_clients("cloudwatch").set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="fine")
    watcher.check()

    routed = [(e["detail"]["alarmName"], e["detail"]["state"]["value"]) for e in events
              if any(matches(p, e) for p in patterns)]  # fmt: skip
    assert routed == [(alarm, "ALARM")], "only the drift alarm's move to ALARM reaches StartPipeline"


def test_the_watcher_looks_only_after_an_alarm_write(moto_clients: Any) -> None:
    install_alarm_history()  # counts SetAlarmState and PutMetricAlarm in moto's CloudWatch
    topic = moto_clients("sns").create_topic(Name="alerts")["TopicArn"]
    _alarm(moto_clients, "drift", topic)
    looks = 0

    def cloudwatch() -> Any:
        nonlocal looks
        looks += 1
        return moto_clients("cloudwatch")

    events: list[dict[str, Any]] = []
    watcher = AlarmWatcher(cloudwatch, lambda: moto_clients("sns"), events.append, writes=alarm_writes)
    watcher.check()
    assert looks == 1
    for _ in range(3):
        assert watcher.check() == []
    assert looks == 1, "nothing was written: no DescribeAlarms"
    moto_clients("cloudwatch").set_alarm_state(AlarmName="drift", StateValue="ALARM", StateReason="drifted")
    [change] = watcher.check()
    assert (change.state, looks) == ("ALARM", 2) and len(events) == 1
