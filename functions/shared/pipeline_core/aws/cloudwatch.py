"""CloudWatch behind domain verbs: put an alarm, find when alarms were in ALARM, publish metric data.

The rollout code (PrepareRollout, Register, and the SageMaker stand-in that plays SageMaker's deployment
guardrails) asks one question of CloudWatch: was any of these alarms in ALARM between two moments, and when
first? An alarm's current state is not enough: an alarm that fired during a rollout may be back to OK when
the question is asked (the rollback ended what made it fire, or someone set it by hand to test). So the
answer comes from the alarms' state history (DescribeAlarmHistory) and their current state (DescribeAlarms),
as CloudWatch keeps them; the embedded target answers DescribeAlarmHistory too (stepml/embedded/cloudwatch.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline_core.aws.clients import client, transient_errors_as

ALARM = "ALARM"
# DescribeAlarms takes at most 100 names per request; PutMetricData 1000 metrics.
_NAMES_PER_REQUEST = 100
_METRICS_PER_REQUEST = 1000


@dataclass(frozen=True)
class AlarmFiring:
    """An alarm found in ALARM: from when (within the window asked about) and CloudWatch's reason."""

    name: str
    at: datetime
    reason: str


@dataclass(frozen=True)
class _Transition:
    at: datetime
    old: str
    old_reason: str
    new: str
    new_reason: str


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_time(value: str | datetime) -> datetime:
    """An ISO 8601 string (as the state data carries times) or a datetime, in UTC."""
    return _utc(value if isinstance(value, datetime) else datetime.fromisoformat(value))


def first_firing(
    name: str, current: Mapping[str, Any], transitions: Sequence[_Transition], start: datetime, end: datetime
) -> AlarmFiring | None:
    """When ``name`` was first in ALARM within [start, end]: at ``start`` if it already was, else at its first
    transition to ALARM before ``end``. ``transitions`` are its state changes after ``start``, oldest first;
    ``current`` is DescribeAlarms' answer for it (the state since its last change)."""
    ordered = sorted(transitions, key=lambda t: t.at)
    if ordered:
        at_start, reason_at_start = ordered[0].old, ordered[0].old_reason
    else:
        at_start, reason_at_start = str(current.get("StateValue", "")), str(current.get("StateReason", ""))
    if at_start == ALARM:
        return AlarmFiring(name, start, reason_at_start)
    for transition in ordered:
        if transition.at > end:
            break
        if transition.new == ALARM:
            return AlarmFiring(name, max(start, transition.at), transition.new_reason)
    return None


def _transition(item: Mapping[str, Any]) -> _Transition | None:
    try:
        data = json.loads(item.get("HistoryData") or "{}")
        old, new = data["oldState"], data["newState"]
        return _Transition(
            _utc(item["Timestamp"]),
            str(old["stateValue"]),
            str(old.get("stateReason", "")),
            str(new["stateValue"]),
            str(new.get("stateReason", "")),
        )
    except (ValueError, KeyError, TypeError):
        return None  # not a state change CloudWatch describes as one: nothing to learn from it


class CloudWatch:
    """Alarms and metrics (client injected, built lazily)."""

    def __init__(self, cloudwatch_client: Any | None = None) -> None:
        self._client = cloudwatch_client

    @property
    def cloudwatch(self) -> Any:
        if self._client is None:
            self._client = client("cloudwatch")
        return self._client

    def put_alarm(self, request: Mapping[str, Any]) -> None:
        """PutMetricAlarm: create the alarm, or replace its settings (CloudWatch keeps its state)."""
        with transient_errors_as(f"putting alarm {request.get('AlarmName')}"):
            self.cloudwatch.put_metric_alarm(**request)

    def set_alarm_state(self, name: str, state: str, reason: str) -> None:
        """SetAlarmState: what CloudWatch documents for testing an alarm (its next evaluation may change it)."""
        with transient_errors_as(f"setting the state of alarm {name}"):
            self.cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason=reason)

    def alarms(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """DescribeAlarms' answer for each of ``names`` that exists."""
        wanted = list(dict.fromkeys(names))
        found: dict[str, dict[str, Any]] = {}
        with transient_errors_as("describing alarms"):
            for start in range(0, len(wanted), _NAMES_PER_REQUEST):
                pages = self.cloudwatch.get_paginator("describe_alarms").paginate(
                    AlarmNames=wanted[start : start + _NAMES_PER_REQUEST], AlarmTypes=["MetricAlarm"]
                )
                for page in pages:
                    found.update({a["AlarmName"]: a for a in page.get("MetricAlarms", [])})
        return found

    def _transitions(self, name: str, start: datetime) -> list[_Transition]:
        with transient_errors_as(f"reading the history of alarm {name}"):
            pages = self.cloudwatch.get_paginator("describe_alarm_history").paginate(
                AlarmName=name, HistoryItemType="StateUpdate", StartDate=start, ScanBy="TimestampAscending"
            )
            items = [item for page in pages for item in page.get("AlarmHistoryItems", [])]
        return [t for t in map(_transition, items) if t is not None and t.at >= start]

    def first_alarm(self, names: Iterable[str], start: datetime, end: datetime) -> AlarmFiring | None:
        """The first of ``names`` in ALARM at some moment within [start, end] (None: none was); an alarm that
        does not exist is not in ALARM."""
        start, end = _utc(start), _utc(end)
        firings = []
        for name, current in self.alarms(names).items():
            firing = first_firing(name, current, self._transitions(name, start), start, end)
            if firing is not None:
                firings.append(firing)
        return min(firings, key=lambda f: (f.at, f.name), default=None)

    def put_metric_data(self, namespace: str, data: Sequence[Mapping[str, Any]]) -> None:
        """PutMetricData of ``data`` (MetricData entries), in requests of at most 1000."""
        with transient_errors_as(f"publishing {namespace} metrics"):
            for start in range(0, len(data), _METRICS_PER_REQUEST):
                self.cloudwatch.put_metric_data(
                    Namespace=namespace, MetricData=list(data[start : start + _METRICS_PER_REQUEST])
                )
