"""CloudWatch's alarm history for the local AWS, which moto keeps but does not serve.

The rollout code asks when an alarm was in ALARM (``pipeline_core.aws.cloudwatch``): CloudWatch answers with
DescribeAlarmHistory, which moto 5.2 has no handler for, though every alarm it keeps records its earlier
states. :func:`install` adds the handler to moto's CloudWatch responses (the answer in CloudWatch's shape:
``StateUpdate`` items whose ``HistoryData`` holds the old and new state, newest first unless ``ScanBy``
says ``TimestampAscending``), and makes PutMetricAlarm on an existing alarm keep its state and history, as
CloudWatch documents ("When you update an existing alarm, its state is left unchanged"); moto starts it
over. It also counts alarm writes (:func:`alarm_writes`), so that the local AWS looks at its alarms for state
changes only when one may have happened, not on every tick of its service.

What still differs: only state changes are kept (no ConfigurationUpdate or Action items); the history lives
as long as the alarm (CloudWatch keeps it 30 days, and after the alarm is deleted); no paging (every item in
one answer: a local alarm changes state a handful of times).
"""

from __future__ import annotations

import itertools
import json
import threading
from datetime import UTC, datetime
from typing import Any

_INSTALLED = threading.Lock()
_done = False
# SetAlarmState and PutMetricAlarm calls made in this process (every local alarm evaluation and every
# `aws cloudwatch set-alarm-state` ends in one); read without a lock, as a hint that a look is worth it.
_writes = 0


def alarm_writes() -> int:
    """How many times an alarm's state or definition was written in this process (since :func:`install`)."""
    return _writes


def _utc(moment: datetime) -> datetime:
    # moto stamps alarms with naive UTC datetimes
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _parse_date(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return _utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def history_items(alarm: Any) -> list[dict[str, Any]]:
    """An alarm's state changes as DescribeAlarmHistory items, oldest first.

    moto appends the state an alarm leaves to ``alarm.history`` on each update, as (type, reason, reason data,
    value, since); the state it is in now is the alarm's own.
    """
    states = [(reason, value, since) for _, reason, _, value, since in alarm.history]
    states.append((alarm.state_reason, alarm.state_value, alarm.state_updated_timestamp))
    items = []
    for (old_reason, old_value, _), (new_reason, new_value, since) in itertools.pairwise(states):
        items.append(
            {
                "AlarmName": alarm.name,
                "AlarmType": "CompositeAlarm" if alarm.rule else "MetricAlarm",
                "Timestamp": _utc(since),
                "HistoryItemType": "StateUpdate",
                "HistorySummary": f"Alarm updated from {old_value} to {new_value}",
                "HistoryData": json.dumps(
                    {
                        "version": "1.0",
                        "oldState": {"stateValue": old_value, "stateReason": old_reason},
                        "newState": {"stateValue": new_value, "stateReason": new_reason},
                    }
                ),
            }
        )
    return items


def install() -> None:
    """Add DescribeAlarmHistory to moto's CloudWatch and keep an alarm's state when it is put again (once per
    process; moto's classes are shared by every moto backend in it)."""
    global _done
    with _INSTALLED:
        if _done:
            return
        from moto.cloudwatch.models import CloudWatchBackend
        from moto.cloudwatch.responses import CloudWatchResponse
        from moto.core.responses import ActionResult

        def describe_alarm_history(self: Any) -> Any:
            name = self._get_param("AlarmName")
            kind = self._get_param("HistoryItemType")
            start, end = _parse_date(self._get_param("StartDate")), _parse_date(self._get_param("EndDate"))
            alarms = self.cloudwatch_backend.alarms
            chosen = [alarms[name]] if name in alarms else ([] if name else list(alarms.values()))
            items = [item for alarm in chosen for item in history_items(alarm)]
            items = [
                item
                for item in items
                if (kind in (None, "", "StateUpdate"))
                and (start is None or item["Timestamp"] >= start)
                and (end is None or item["Timestamp"] <= end)
            ]
            items.sort(key=lambda item: item["Timestamp"], reverse=self._get_param("ScanBy") != "TimestampAscending")
            limit = self._get_param("MaxRecords")
            return ActionResult({"AlarmHistoryItems": items[: int(limit)] if limit else items})

        original_put = CloudWatchBackend.put_metric_alarm
        original_set_state = CloudWatchBackend.set_alarm_state

        def counted() -> None:
            global _writes
            _writes += 1

        def set_alarm_state(self: Any, *args: Any, **kwargs: Any) -> Any:
            answer = original_set_state(self, *args, **kwargs)
            counted()
            return answer

        def put_metric_alarm(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
            counted()
            earlier = self.alarms.get(name)
            alarm = original_put(self, name, *args, **kwargs)
            if earlier is not None:
                alarm.history = earlier.history
                alarm.state_value = earlier.state_value
                alarm.state_reason = earlier.state_reason
                alarm.state_reason_data = earlier.state_reason_data
                alarm.state_updated_timestamp = earlier.state_updated_timestamp
            return alarm

        CloudWatchResponse.describe_alarm_history = describe_alarm_history  # type: ignore[attr-defined]
        CloudWatchBackend.put_metric_alarm = put_metric_alarm  # type: ignore[method-assign]
        CloudWatchBackend.set_alarm_state = set_alarm_state  # type: ignore[method-assign]
        _done = True
