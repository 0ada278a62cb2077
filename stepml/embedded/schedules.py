"""EventBridge Scheduler on the embedded target: the template's schedules fire while the local AWS service runs.

moto stores schedules and never runs them. The local AWS reads the template's schedules (``AWS::Scheduler::Schedule``
resources and the ``ScheduleV2`` events of its functions, as SAM turns them into schedules), and on each tick of
the service fires those that came due: a function target is invoked asynchronously with the schedule's input as
its event, a state machine target gets StartExecution with the input (as the templated Step Functions target
does on AWS).

Expressions: ``rate(N minute|minutes|hour|hours|day|days)``, ``at(yyyy-mm-ddThh:mm:ss)`` and
``cron(minutes hours day-of-month month day-of-week year)`` with ``*``, ``?``, lists, ranges, steps and month or
day names, in the schedule's ``ScheduleExpressionTimezone`` (UTC by default). Differences from AWS, said here and
in docs/monitoring.md: a schedule fires only while the local AWS service runs (``stepml local up``), and a time
that passed while it did not is not made up (Scheduler does not back-fill either, but it never stops); a rate
counts from when the service started, not from when the schedule was created; cron's ``L``, ``W`` and ``#`` are
refused with a clear note; ``FlexibleTimeWindow`` is taken as "OFF" and the target's retry policy is not applied.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stepml.embedded.template import LocalSchedule, stack_model

_RATE = re.compile(r"^rate\((?P<value>\d+) (?P<unit>minute|minutes|hour|hours|day|days)\)$")
_AT = re.compile(r"^at\((?P<at>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\)$")
_CRON = re.compile(r"^cron\((?P<fields>[^)]+)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {
    name: i
    for i, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1
    )
}
_DAYS = {
    name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], start=1)
}  # AWS: 1 is Sunday
CronField = tuple[str, int, int, dict[str, int]]  # name, lowest, highest, value names
_CRON_FIELDS: tuple[CronField, ...] = (
    ("minutes", 0, 59, {}),
    ("hours", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 1, 7, _DAYS),
    ("year", 1970, 2199, {}),
)
# How far back a tick looks for a cron time that came due: a service that slept longer does not make up more.
_MAX_CRON_LOOKBACK = timedelta(days=1)


class ScheduleExpressionError(ValueError):
    """A schedule expression the local AWS cannot run (malformed, or a form it does not support)."""


def _cron_values(text: str, field: CronField) -> frozenset[int] | None:
    """The values a cron field allows; None for ``*`` or ``?`` (any)."""
    name, low, high, names = field
    if text in ("*", "?"):
        return None
    allowed: set[int] = set()

    def number(part: str) -> int:
        value = names.get(part.upper()) if part.upper() in names else int(part) if part.isdigit() else None
        if value is None and re.fullmatch(r"\d*L|\d*W|LW|\d+#\d+", part.upper()):
            raise ScheduleExpressionError(f"cron {name} {text!r}: L, W and # are not supported by the local AWS")
        if value is None or not low <= value <= high:
            raise ScheduleExpressionError(f"cron {name} {text!r}: {part!r} is not a value from {low} to {high}")
        return value

    for item in text.split(","):
        base, _, step_text = item.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ScheduleExpressionError(f"cron {name} {text!r}: the step {step_text!r} is not a positive number")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = number(first), number(last)
        else:
            start = number(base)
            end = high if step else start
        allowed.update(range(start, end + 1, step or 1))
    return frozenset(allowed)


@dataclass(frozen=True)
class Cron:
    fields: tuple[frozenset[int] | None, ...]

    @classmethod
    def parse(cls, text: str) -> Cron:
        parts = text.split()
        if len(parts) != len(_CRON_FIELDS):
            raise ScheduleExpressionError(
                f"cron({text}) has {len(parts)} fields; it needs 6: minutes hours day-of-month month day-of-week year"
            )
        if (parts[2] == "?") == (parts[4] == "?"):
            raise ScheduleExpressionError(f"cron({text}): exactly one of day-of-month and day-of-week must be '?'")
        return cls(tuple(_cron_values(part, field) for part, field in zip(parts, _CRON_FIELDS, strict=True)))

    def matches(self, at: datetime) -> bool:
        weekday = at.isoweekday() % 7 + 1  # Sunday 1 .. Saturday 7
        values = (at.minute, at.hour, at.day, at.month, weekday, at.year)
        return all(allowed is None or value in allowed for allowed, value in zip(self.fields, values, strict=True))


def parse_expression(expression: str) -> Callable[[datetime, datetime, datetime], datetime | None]:
    """A function ``(started, after, until) -> the latest due time in (after, until]`` (None: nothing due)."""
    expression = expression.strip()
    if rate := _RATE.match(expression):
        seconds = int(rate["value"]) * _UNIT_SECONDS[rate["unit"].removesuffix("s")]
        if seconds <= 0:
            raise ScheduleExpressionError(f"{expression}: a rate must be at least 1")

        def due_rate(started: datetime, after: datetime, until: datetime) -> datetime | None:
            count = int((until - started).total_seconds() // seconds)
            due = started + timedelta(seconds=count * seconds)
            return due if count > 0 and due > after else None

        return due_rate
    if at := _AT.match(expression):
        when = datetime.fromisoformat(at["at"])

        def due_at(_started: datetime, after: datetime, until: datetime) -> datetime | None:
            local = when.replace(tzinfo=until.tzinfo)
            return local if after < local <= until else None

        return due_at
    if cron_match := _CRON.match(expression):
        cron = Cron.parse(cron_match["fields"])

        def due_cron(_started: datetime, after: datetime, until: datetime) -> datetime | None:
            minute = until.replace(second=0, microsecond=0)
            earliest = max(after, until - _MAX_CRON_LOOKBACK)
            while minute > earliest:
                if cron.matches(minute):
                    return minute
                minute -= timedelta(minutes=1)
            return None

        return due_cron
    raise ScheduleExpressionError(
        f"schedule expression {expression!r} is not rate(N unit), at(yyyy-mm-ddThh:mm:ss) or cron(6 fields)"
    )


def template_schedules(template: Path, stack_name: str, parameters: dict[str, str]) -> list[LocalSchedule]:
    """The template's schedules that exist for ``parameters``: Scheduler resources and functions' ScheduleV2."""
    return stack_model(template, stack_name, parameters).schedules


class LocalScheduler:
    """Fire the schedules that come due between two ticks (at most once per tick each; no making up)."""

    def __init__(
        self,
        schedules: list[LocalSchedule],
        fire: Callable[[LocalSchedule, datetime], None],
        started: datetime | None = None,
    ) -> None:
        self.started = started or datetime.now(UTC)
        self.notes: list[str] = []
        self._fire = fire
        self._runnable: list[tuple[LocalSchedule, ZoneInfo, Callable[[datetime, datetime, datetime], datetime | None]]]
        self._runnable = []
        for schedule in schedules:
            if not schedule.enabled:
                continue
            try:
                zone = ZoneInfo(schedule.timezone)
                self._runnable.append((schedule, zone, parse_expression(schedule.expression)))
            except (ScheduleExpressionError, ZoneInfoNotFoundError, ValueError) as error:
                self.notes.append(f"schedule {schedule.name} does not run locally: {error}")
        self._last = self.started

    @property
    def schedules(self) -> list[LocalSchedule]:
        return [schedule for schedule, _, _ in self._runnable]

    def tick(self, now: datetime | None = None) -> list[tuple[LocalSchedule, datetime]]:
        """Fire what came due since the last tick; returns (schedule, due time) for each firing."""
        now = now or datetime.now(UTC)
        after, self._last = self._last, now
        fired = []
        for schedule, zone, due_between in self._runnable:
            due = due_between(self.started.astimezone(zone), after.astimezone(zone), now.astimezone(zone))
            if due is not None:
                self._fire(schedule, due)
                fired.append((schedule, due))
        return fired
