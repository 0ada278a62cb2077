"""What CloudWatch does when an alarm changes state, which moto does not: the EventBridge event and the actions.

On AWS a state change (from an evaluation or from SetAlarmState) sends a "CloudWatch Alarm State Change" event
to the default event bus, which CloudWatch guarantees to deliver, and runs the alarm's actions for the new
state when ``ActionsEnabled`` (an SNS topic gets CloudWatch's JSON message). moto stores the new state and
does neither. :class:`AlarmWatcher` notices changes by comparing each alarm's state and
``StateUpdatedTimestamp`` with what it saw last, and then sends the event (to the template's rules, through
the embedded runtime's ``deliver_event``) and publishes to the SNS topics among the actions.

Differences from AWS, said rather than hidden: the watcher sees a change when it next looks (after each
local alarm evaluation, and about every second in the local AWS service), not at the instant of the change;
a state that changed and changed back between two looks is seen as no change; and changes made while no
local AWS ran are taken as the starting point, not announced. Actions other than SNS topics (Auto Scaling,
EC2, Systems Manager) are not run; the template uses none.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stepml.embedded.template import ACCOUNT_ID, REGION

EVENT_SOURCE = "aws.cloudwatch"
EVENT_DETAIL_TYPE = "CloudWatch Alarm State Change"
INSUFFICIENT_DATA = "INSUFFICIENT_DATA"
_ACTIONS_BY_STATE = {"ALARM": "AlarmActions", "OK": "OKActions", "INSUFFICIENT_DATA": "InsufficientDataActions"}


@dataclass(frozen=True)
class AlarmChange:
    """One alarm's state change, as the watcher saw it."""

    alarm: dict[str, Any]  # DescribeAlarms' MetricAlarms entry, after the change
    previous_state: str
    previous_reason: str
    previous_timestamp: str

    @property
    def name(self) -> str:
        return str(self.alarm["AlarmName"])

    @property
    def state(self) -> str:
        return str(self.alarm["StateValue"])


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(value or "")


def _metric_configuration(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """``detail.configuration.metrics`` as CloudWatch writes it for a single-metric or metric-math alarm."""
    if alarm.get("Metrics"):
        metrics = []
        for query in alarm["Metrics"]:
            entry: dict[str, Any] = {"id": query["Id"], "returnData": query.get("ReturnData", True)}
            if "Expression" in query:
                entry["expression"] = query["Expression"]
                entry["label"] = query.get("Label", query["Id"])
            if "MetricStat" in query:
                stat = query["MetricStat"]
                entry["metricStat"] = {
                    "metric": {
                        "namespace": stat["Metric"]["Namespace"],
                        "name": stat["Metric"]["MetricName"],
                        "dimensions": {d["Name"]: d["Value"] for d in stat["Metric"].get("Dimensions", [])},
                    },
                    "period": stat["Period"],
                    "stat": stat["Stat"],
                }
            metrics.append(entry)
        return metrics
    return [
        {
            # CloudWatch gives each query of a single-metric alarm a generated id.
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, str(alarm.get("AlarmArn", alarm["AlarmName"])))),
            "metricStat": {
                "metric": {
                    "namespace": alarm.get("Namespace", ""),
                    "name": alarm.get("MetricName", ""),
                    "dimensions": {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])},
                },
                "period": alarm.get("Period", 60),
                "stat": alarm.get("Statistic") or alarm.get("ExtendedStatistic", ""),
            },
            "returnData": True,
        }
    ]


def state_change_event(change: AlarmChange) -> dict[str, Any]:
    """The "CloudWatch Alarm State Change" event EventBridge receives (AWS's documented shape)."""
    alarm = change.alarm
    arn = str(alarm.get("AlarmArn") or f"arn:aws:cloudwatch:{REGION}:{ACCOUNT_ID}:alarm:{change.name}")
    configuration: dict[str, Any] = {"metrics": _metric_configuration(alarm)}
    if alarm.get("AlarmDescription"):
        configuration["description"] = alarm["AlarmDescription"]
    now = datetime.now(UTC)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": EVENT_DETAIL_TYPE,
        "source": EVENT_SOURCE,
        "account": ACCOUNT_ID,
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [arn],
        "detail": {
            "alarmName": change.name,
            "state": {
                "value": change.state,
                "reason": alarm.get("StateReason", ""),
                "reasonData": alarm.get("StateReasonData", ""),
                "timestamp": _iso(alarm.get("StateUpdatedTimestamp")),
            },
            "previousState": {
                "value": change.previous_state,
                "reason": change.previous_reason,
                "timestamp": change.previous_timestamp,
            },
            "configuration": configuration,
        },
    }


def sns_message(change: AlarmChange) -> dict[str, Any]:
    """The JSON message CloudWatch publishes to an SNS topic among the alarm's actions."""
    alarm = change.alarm
    trigger: dict[str, Any] = {
        "ComparisonOperator": alarm.get("ComparisonOperator"),
        "EvaluationPeriods": alarm.get("EvaluationPeriods"),
        "Threshold": alarm.get("Threshold"),
        "TreatMissingData": alarm.get("TreatMissingData", "missing"),
    }
    if not alarm.get("Metrics"):
        trigger |= {
            "MetricName": alarm.get("MetricName"),
            "Namespace": alarm.get("Namespace"),
            "Statistic": alarm.get("Statistic"),
            "Period": alarm.get("Period"),
            "Dimensions": [{"name": d["Name"], "value": d["Value"]} for d in alarm.get("Dimensions", [])],
        }
    return {
        "AlarmName": change.name,
        "AlarmDescription": alarm.get("AlarmDescription"),
        "AWSAccountId": ACCOUNT_ID,
        "NewStateValue": change.state,
        "NewStateReason": alarm.get("StateReason", ""),
        "StateChangeTime": _iso(alarm.get("StateUpdatedTimestamp")),
        "Region": REGION,
        "AlarmArn": alarm.get("AlarmArn"),
        "OldStateValue": change.previous_state,
        "Trigger": trigger,
    }


def effective_state(alarm: dict[str, Any]) -> str:
    """The alarm's state as CloudWatch would report it: moto starts a new alarm in OK with the reason
    "Unchecked: ...", where CloudWatch starts it in INSUFFICIENT_DATA until its first evaluation."""
    if str(alarm.get("StateReason", "")).startswith("Unchecked"):
        return INSUFFICIENT_DATA
    return str(alarm["StateValue"])


class AlarmWatcher:
    """Notice alarm state changes and do what CloudWatch does with them (see the module docstring)."""

    def __init__(
        self,
        cloudwatch: Callable[[], Any],
        sns: Callable[[], Any],
        deliver_event: Callable[[dict[str, Any]], object],
        writes: Callable[[], int] | None = None,
    ) -> None:
        self._cloudwatch = cloudwatch
        self._sns = sns
        self._deliver_event = deliver_event
        # A count that moves whenever an alarm may have changed (None: always look); an unchanged count skips
        # the DescribeAlarms call, which the local AWS's service would otherwise make twice a second.
        self._writes = writes
        self._looked_at: int | None = None
        self._seen: dict[str, tuple[str, str, str | None]] | None = None  # name -> (state, timestamp, reason)
        self._lock = threading.Lock()

    def _alarms(self) -> list[dict[str, Any]]:
        pages = self._cloudwatch().get_paginator("describe_alarms").paginate(AlarmTypes=["MetricAlarm"])
        return [alarm for page in pages for alarm in page["MetricAlarms"]]

    def check(self) -> list[AlarmChange]:
        """Look at every alarm once; announce the changes since the last look. The first look only records."""
        with self._lock:  # one look at a time, so a change is announced once
            writes = self._writes() if self._writes is not None else None
            if writes is not None and writes == self._looked_at and self._seen is not None:
                return []
            self._looked_at = writes  # read before the look: a write during it is seen at the next one
            alarms = [{**a, "StateValue": effective_state(a)} for a in self._alarms()]
            current = {
                str(a["AlarmName"]): (str(a["StateValue"]), _iso(a.get("StateUpdatedTimestamp")), a.get("StateReason"))
                for a in alarms
            }
            seen, self._seen = self._seen, current
            if seen is None:
                return []
            changes = []
            for alarm in alarms:
                name = str(alarm["AlarmName"])
                # An alarm made since the last look started, as on CloudWatch, in INSUFFICIENT_DATA.
                before = seen.get(name, (INSUFFICIENT_DATA, "", ""))
                if before[0] != current[name][0]:  # setting the state it already has is no change
                    changes.append(AlarmChange(alarm, before[0], before[2] or "", before[1]))
        for change in changes:
            self._announce(change)
        return changes

    def _announce(self, change: AlarmChange) -> None:
        self._deliver_event(state_change_event(change))
        if not change.alarm.get("ActionsEnabled", True):
            return
        topics = [arn for arn in change.alarm.get(_ACTIONS_BY_STATE[change.state], []) if ":sns:" in arn]
        if not topics:
            return
        message = json.dumps(sns_message(change))
        # CloudWatch's subject: the new state, the alarm and the region.
        subject = f'{change.state}: "{change.name}" in {REGION}'[:100]
        for topic in topics:
            self._sns().publish(TopicArn=topic, Subject=subject, Message=message)
