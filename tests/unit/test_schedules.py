"""The local AWS runs the template's EventBridge Scheduler schedules: expressions, due times, targets."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stepml.embedded.schedules import (
    LocalSchedule,
    LocalScheduler,
    ScheduleExpressionError,
    parse_expression,
    template_schedules,
)
from stepml.embedded.template import stack_model
from tests.unit.test_template import TEMPLATE

T0 = datetime(2026, 11, 30, 6, 0, 0, tzinfo=UTC)  # a Monday


def _due(expression: str, after: datetime, until: datetime, started: datetime = T0) -> datetime | None:
    return parse_expression(expression)(started, after, until)


def test_a_rate_is_due_every_period_from_the_start_and_never_twice() -> None:
    assert _due("rate(5 minutes)", T0, T0 + timedelta(minutes=4, seconds=59)) is None
    assert _due("rate(5 minutes)", T0, T0 + timedelta(minutes=5)) == T0 + timedelta(minutes=5)
    assert _due("rate(5 minutes)", T0 + timedelta(minutes=5), T0 + timedelta(minutes=9)) is None
    # a long sleep fires once, for the latest time, not once per missed time
    assert _due("rate(1 hour)", T0, T0 + timedelta(hours=3, minutes=1)) == T0 + timedelta(hours=3)
    assert _due("rate(1 day)", T0, T0 + timedelta(days=1)) == T0 + timedelta(days=1)


def test_at_is_due_once() -> None:
    assert _due("at(2026-11-30T06:30:00)", T0, T0 + timedelta(minutes=29)) is None
    assert _due("at(2026-11-30T06:30:00)", T0, T0 + timedelta(minutes=31)) == T0 + timedelta(minutes=30)
    assert _due("at(2026-11-30T06:30:00)", T0 + timedelta(minutes=31), T0 + timedelta(hours=5)) is None


@pytest.mark.parametrize(
    ("expression", "due"),
    [
        ("cron(15 6 * * ? *)", datetime(2026, 11, 30, 6, 15, tzinfo=UTC)),
        ("cron(0/10 * * * ? *)", datetime(2026, 11, 30, 6, 50, tzinfo=UTC)),
        ("cron(0 8 ? * MON-FRI *)", None),  # 08:00 is outside the window looked at
        ("cron(45 6 ? * MON *)", datetime(2026, 11, 30, 6, 45, tzinfo=UTC)),
        ("cron(45 6 ? * TUE,WED *)", None),
        ("cron(45 6 30 NOV ? 2026)", datetime(2026, 11, 30, 6, 45, tzinfo=UTC)),
        ("cron(45 6 30 11 ? 2027)", None),
    ],
)
def test_cron_fields(expression: str, due: datetime | None) -> None:
    assert _due(expression, T0, T0 + timedelta(minutes=59)) == due


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("rate(5 weeks)", "is not rate(N unit)"),
        ("cron(0 8 * * *)", "it needs 6"),
        ("cron(0 8 * * * *)", "exactly one of day-of-month and day-of-week must be '?'"),
        ("cron(0 25 * * ? *)", "'25' is not a value from 0 to 23"),
        ("cron(0 8 L * ? *)", "L, W and # are not supported"),
        ("cron(0/0 8 * * ? *)", "is not a positive number"),
    ],
)
def test_bad_expressions_are_named(expression: str, words: str) -> None:
    with pytest.raises(ScheduleExpressionError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_expression(expression)


def test_the_scheduler_fires_what_came_due_and_notes_what_it_cannot_run() -> None:
    fired: list[tuple[str, datetime]] = []
    schedules = [
        LocalSchedule("every-5", "rate(5 minutes)", "arn:aws:states:us-east-1:1:stateMachine:m", "{}"),
        LocalSchedule("paris", "cron(10 7 * * ? *)", "f", "{}", timezone="Europe/Paris"),  # 06:10 UTC
        LocalSchedule("off", "rate(1 minute)", "f", "{}", enabled=False),
        LocalSchedule("last-day", "cron(0 0 L * ? *)", "f", "{}"),
    ]
    scheduler = LocalScheduler(schedules, lambda s, due: fired.append((s.name, due)), started=T0)
    assert [s.name for s in scheduler.schedules] == ["every-5", "paris"]
    assert scheduler.notes == ["schedule last-day does not run locally: cron day-of-month 'L': L, W and # are not "
                               "supported by the local AWS"]  # fmt: skip
    assert scheduler.tick(T0 + timedelta(minutes=4)) == []
    scheduler.tick(T0 + timedelta(minutes=11))
    assert [(name, due.astimezone(UTC)) for name, due in fired] == [
        ("every-5", T0 + timedelta(minutes=10)),
        ("paris", T0 + timedelta(minutes=10)),
    ]
    scheduler.tick(T0 + timedelta(minutes=12))
    assert len(fired) == 2


def test_the_template_schedules_monitoring_daily_and_retraining_when_asked(tmp_path: Any) -> None:
    [monitoring] = template_schedules(TEMPLATE, "stepml-local", {"Target": "local"})
    assert (monitoring.name, monitoring.expression, monitoring.enabled) == ("stepml-dev-monitor", "rate(1 day)", True)
    assert json.loads(monitoring.input) == {"model_name": "iris", "scheduled": True}
    model = stack_model(TEMPLATE, "stepml-local", {"Target": "local"})
    assert monitoring.target_arn == model.functions["MonitorFunction"].name
    off = template_schedules(TEMPLATE, "stepml-local", {"Target": "local", "MonitorScheduleExpression": ""})
    assert [s.enabled for s in off] == [False]

    execution_input = json.dumps({"dataset": "s3://b/incoming/iris.csv", "trigger": "weekly"})
    parameters = {
        "Target": "local",
        "MonitorScheduleExpression": "",
        "RetrainScheduleExpression": "rate(7 days)",
        "RetrainScheduleInput": execution_input,
    }
    [schedule] = [s for s in template_schedules(TEMPLATE, "stepml-local", parameters) if s.enabled]
    assert (schedule.expression, schedule.input, schedule.timezone) == ("rate(7 days)", execution_input, "UTC")
    # the alias "live" is the state machine itself on the embedded target (one definition, no versions)
    assert schedule.target_arn == stack_model(TEMPLATE, "stepml-local", {"Target": "local"}).state_machine_arn
