"""Evaluate the local CloudWatch alarms as CloudWatch does: moto stores alarms but never evaluates them.

For each metric alarm, :func:`evaluate_alarms` reads the datapoints of its evaluation range (GetMetricData),
decides the state from the comparison, threshold, DatapointsToAlarm (M) of EvaluationPeriods (N) and
TreatMissingData as CloudWatch documents it ("Configuring how CloudWatch alarms treat missing data"), and sets
it (SetAlarmState) with a reason in CloudWatch's words. It returns what it decided;
:func:`render_alarm_table` shows that as ``stepml local alarms`` prints it.

What moto cannot do is said, never guessed: it keeps no percentiles, so a pNN alarm is evaluated on the
period's Maximum (pNN >= 50) or Minimum, a bound of the percentile, and the evaluation carries a note.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

OK, ALARM, INSUFFICIENT_DATA = "OK", "ALARM", "INSUFFICIENT_DATA"
# CloudWatch reads more datapoints than the alarm evaluates (the evaluation range) so that a late or missing
# datapoint does not decide alone; its documented example retrieves 5 for 3 evaluation periods.
_EXTRA_PERIODS = 2
_MAX_QUERIES = 500  # GetMetricData: queries per request
_COMPARISONS = {
    "GreaterThanThreshold": (">", "greater than", lambda v, t: v > t),
    "GreaterThanOrEqualToThreshold": (">=", "greater than or equal to", lambda v, t: v >= t),
    "LessThanThreshold": ("<", "less than", lambda v, t: v < t),
    "LessThanOrEqualToThreshold": ("<=", "less than or equal to", lambda v, t: v <= t),
}
Datapoint = tuple[datetime, float | None]  # (period start, value or None when missing)


@dataclass(frozen=True)
class AlarmEvaluation:
    """What one evaluation decided for one alarm."""

    name: str
    state: str
    previous_state: str
    reason: str
    metric: str
    threshold: str
    datapoints: tuple[Datapoint, ...] = ()  # the evaluation range, oldest first
    note: str = ""

    @property
    def changed(self) -> bool:
        return self.state != self.previous_state


def evaluate_alarms(cloudwatch: Any, now: datetime | None = None) -> list[AlarmEvaluation]:
    """Evaluate every metric alarm at ``now`` (default: the present) and set the states that change."""
    now = now or datetime.now(UTC)
    alarms = [a for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmTypes=["MetricAlarm"])
              for a in page["MetricAlarms"]]  # fmt: skip
    ranges, notes = _datapoints(cloudwatch, alarms, now)
    evaluations = []
    for alarm in alarms:
        name, stored, reason = alarm["AlarmName"], alarm["StateValue"], alarm.get("StateReason", "")
        # moto starts an alarm in OK; CloudWatch in INSUFFICIENT_DATA, until its first evaluation.
        unchecked = reason.startswith("Unchecked")
        previous = INSUFFICIENT_DATA if unchecked else stored
        note = notes.get(name, "")
        points = ranges.get(name)
        if points is None:  # not evaluated here (see the note)
            evaluations.append(_evaluation(alarm, previous, previous, reason, (), note))
            continue
        state, new_reason, data = _decide(alarm, points, previous, now)
        if state is None:  # TreatMissingData ignore: the state is kept
            state, new_reason = previous, reason
            note = note or "missing data ignored: the state is kept"
        # (a first evaluation that keeps moto's OK still replaces the reason "Unchecked: ...")
        if state != stored or (unchecked and not new_reason.startswith("Unchecked")):
            cloudwatch.set_alarm_state(
                AlarmName=name, StateValue=state, StateReason=new_reason, StateReasonData=json.dumps(data)
            )
        evaluations.append(_evaluation(alarm, state, previous, new_reason, points, note))
    return evaluations


def _evaluation(
    alarm: dict[str, Any], state: str, previous: str, reason: str, points: Sequence[Datapoint], note: str
) -> AlarmEvaluation:
    if alarm.get("Metrics"):
        returned = [q for q in alarm["Metrics"] if q.get("ReturnData", True)]
        metric = f"expression {returned[0].get('Expression', returned[0]['Id'])}" if returned else "metric math"
    else:
        metric = (
            f"{alarm['Namespace']} {alarm['MetricName']} ({alarm.get('Statistic') or alarm.get('ExtendedStatistic')})"
        )
    symbol = _COMPARISONS.get(alarm["ComparisonOperator"], (alarm["ComparisonOperator"],))[0]
    n = alarm["EvaluationPeriods"]
    threshold = (
        f"{symbol} {alarm.get('Threshold', 0):g}, {alarm.get('DatapointsToAlarm') or n} of {n} x {_period(alarm)}s"
    )
    return AlarmEvaluation(alarm["AlarmName"], state, previous, reason, metric, threshold, tuple(points), note)


def _period(alarm: dict[str, Any]) -> int:
    if not alarm.get("Metrics"):
        return int(alarm["Period"])
    periods = [q.get("Period") or q.get("MetricStat", {}).get("Period") for q in alarm["Metrics"]]
    return int(next((p for p in periods if p), 60))


def _datapoints(
    cloudwatch: Any, alarms: list[dict[str, Any]], now: datetime
) -> tuple[dict[str, list[Datapoint]], dict[str, str]]:
    """Each alarm's evaluation range (ends with the period that holds ``now``), and notes on what moto lacks."""
    notes: dict[str, str] = {}
    simple: dict[int, list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    ranges: dict[str, list[Datapoint]] = {}
    for alarm in alarms:
        name = alarm["AlarmName"]
        if alarm["ComparisonOperator"] not in _COMPARISONS:
            notes[name] = "anomaly detection alarms are not evaluated locally"
        elif alarm.get("Metrics"):  # metric math: its own queries, one request
            try:
                ranges[name] = _metric_math(cloudwatch, alarm, now)
            except (_Unsupported, ClientError) as error:
                notes[name] = f"the local CloudWatch cannot evaluate it: {error}"
        else:
            stat = alarm.get("Statistic")
            if stat is None:  # an extended statistic: moto keeps no distribution to take a percentile from
                extended = alarm.get("ExtendedStatistic", "")
                if not re.fullmatch(r"p\d+(\.\d+)?", extended):  # trimmed means and the like
                    notes[name] = f"the local CloudWatch cannot compute {extended}"
                    continue
                stat = "Maximum" if float(extended[1:]) >= 50 else "Minimum"
                notes[name] = f"moto keeps no percentiles: {extended} read as {stat}, a bound of it"
            metric = {"Namespace": alarm["Namespace"], "MetricName": alarm["MetricName"]}
            dimensions = _stored_order(cloudwatch, alarm)
            if dimensions is None:
                ranges[name] = _empty_range(alarm, now)
                continue
            metric["Dimensions"] = dimensions
            stat_query: dict[str, Any] = {"Metric": metric, "Period": int(alarm["Period"]), "Stat": stat}
            if alarm.get("Unit"):
                stat_query["Unit"] = alarm["Unit"]
            simple[int(alarm["Period"])].append((alarm, {"MetricStat": stat_query}))
    for period, group in simple.items():  # alarms of one period: one request
        for start in range(0, len(group), _MAX_QUERIES):
            chunk = group[start : start + _MAX_QUERIES]
            queries = [{"Id": f"a{i}", **query} for i, (_, query) in enumerate(chunk)]
            found = _query(cloudwatch, queries, period, max(_length(a) for a, _ in chunk), now)
            for i, (alarm, _) in enumerate(chunk):
                ranges[alarm["AlarmName"]] = found[f"a{i}"][-_length(alarm) :]
    return ranges, notes


class _Unsupported(ValueError):
    """Metric math beyond arithmetic on the queries' values (functions such as SUM or FILL)."""


_OPERATORS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}


def _metric_math(cloudwatch: Any, alarm: dict[str, Any], now: datetime) -> list[Datapoint]:
    """The alarm's returned query over its evaluation range. moto's GetMetricData answers an expression only
    when it is a bare query id, so arithmetic on the queries' values is done here, period by period."""
    queries = {q["Id"]: q for q in alarm["Metrics"]}
    stats = [{"Id": q["Id"], "MetricStat": q["MetricStat"]} for q in queries.values() if q.get("MetricStat")]
    series = _query(cloudwatch, stats, _period(alarm), _length(alarm), now) if stats else {}
    returned = next((q for q in queries.values() if q.get("ReturnData", True)), None)
    if returned is None:
        raise _Unsupported("no query returns data")

    def value(node: ast.AST, index: int) -> float | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id in series:
            return series[node.id][index][1]
        if isinstance(node, ast.Name) and node.id in queries:  # another expression
            return value(_parsed(queries[node.id]["Expression"]), index)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            inner = value(node.operand, index)
            return None if inner is None else (-inner if isinstance(node.op, ast.USub) else inner)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = value(node.left, index), value(node.right, index)
            if left is None or right is None:
                return None  # a missing value makes the period's result missing
            try:
                return _OPERATORS[type(node.op)](left, right)
            except ZeroDivisionError:
                return None
        raise _Unsupported(f"{ast.unparse(node)!r} is not arithmetic on query ids")

    if returned.get("MetricStat"):
        return series[returned["Id"]]
    tree = _parsed(returned["Expression"])
    starts = _period_starts(_period(alarm), _length(alarm), now)
    return [(start, value(tree, i)) for i, start in enumerate(starts)]


def _parsed(expression: str) -> ast.AST:
    try:
        return ast.parse(expression, mode="eval").body
    except SyntaxError as error:
        raise _Unsupported(f"{expression!r} is not arithmetic") from error


def _length(alarm: dict[str, Any]) -> int:
    return int(alarm["EvaluationPeriods"]) + _EXTRA_PERIODS


def _empty_range(alarm: dict[str, Any], now: datetime) -> list[Datapoint]:
    return [(start, None) for start in _period_starts(int(alarm["Period"]), _length(alarm), now)]


def _period_starts(period: int, count: int, now: datetime) -> list[datetime]:
    newest = math.floor(now.timestamp() / period) * period
    return [datetime.fromtimestamp(newest - (count - 1 - i) * period, UTC) for i in range(count)]


def _query(
    cloudwatch: Any, queries: list[dict[str, Any]], period: int, count: int, now: datetime
) -> dict[str, list[Datapoint]]:
    starts = _period_starts(period, count, now)
    values: dict[str, dict[float, float]] = defaultdict(dict)
    pages = cloudwatch.get_paginator("get_metric_data").paginate(
        MetricDataQueries=queries, StartTime=starts[0], EndTime=starts[-1] + timedelta(seconds=period)
    )
    for page in pages:
        for result in page["MetricDataResults"]:
            for stamp, value in zip(result["Timestamps"], result["Values"], strict=True):
                values[result["Id"]][stamp.timestamp()] = float(value)
    return {q["Id"]: [(s, values[q["Id"]].get(s.timestamp())) for s in starts] for q in queries}


def _stored_order(cloudwatch: Any, alarm: dict[str, Any]) -> list[dict[str, str]] | None:
    """The alarm's dimensions in the order the metric was stored with; None when no such metric exists.

    CloudWatch matches a dimension set whatever its order; moto's GetMetricData sorts both sides with a
    broken comparison, so two or more dimensions only match when given in the stored order.
    """
    dimensions = [{"Name": d["Name"], "Value": d["Value"]} for d in alarm.get("Dimensions", [])]
    if len(dimensions) < 2:
        return dimensions
    wanted = {(d["Name"], d["Value"]) for d in dimensions}
    listed = cloudwatch.list_metrics(
        Namespace=alarm["Namespace"], MetricName=alarm["MetricName"], Dimensions=dimensions
    )
    for metric in listed["Metrics"]:
        if {(d["Name"], d["Value"]) for d in metric["Dimensions"]} == wanted:
            return [{"Name": d["Name"], "Value": d["Value"]} for d in metric["Dimensions"]]
    return None


def _decide(
    alarm: dict[str, Any], points: Sequence[Datapoint], previous: str, now: datetime
) -> tuple[str | None, str, dict[str, Any]]:
    """The state CloudWatch would set from the evaluation range (None: kept), its reason, and reason data."""
    n = int(alarm["EvaluationPeriods"])
    m = int(alarm.get("DatapointsToAlarm") or n)
    # Alarms on AWS/DynamoDB metrics always ignore missing data (PutMetricAlarm's TreatMissingData).
    treat = "ignore" if alarm.get("Namespace") == "AWS/DynamoDB" else alarm.get("TreatMissingData") or "missing"
    _, words, breaches = _COMPARISONS[alarm["ComparisonOperator"]]
    threshold = float(alarm.get("Threshold", 0))
    present = [(at, value) for at, value in points if value is not None]
    state: str | None

    def is_breach(point: tuple[datetime, float]) -> bool:
        return bool(breaches(point[1], threshold))

    def listed(points: Sequence[tuple[datetime, float]], breaching: bool) -> str:
        return _listed(points, words, breaching, threshold)

    if len(present) >= n:  # enough real data: the N most recent datapoints decide, missing ones do not matter
        evaluated = present[-n:]
        breaching = sum(map(is_breach, evaluated))
        state = ALARM if breaching >= m else OK
        agreeing = [p for p in evaluated if is_breach(p) == (state == ALARM)]
        reason = f"{len(agreeing)} out of the last {n} datapoints {listed(agreeing, state == ALARM)}"
        suffix = f" (minimum {m} datapoint{_s(m)} for {previous} -> {state} transition)" if previous != state else ""
        reason = f"Threshold Crossed: {reason}{suffix}."
    elif not present:
        if treat in ("missing", "ignore"):
            state = INSUFFICIENT_DATA if treat == "missing" else None
            reason = f"Insufficient Data: {n} datapoint{_s(n)} {_was(n)} unknown."
        else:
            state = ALARM if treat == "breaching" else OK
            label = "Breaching" if treat == "breaching" else "NonBreaching"
            reason = (
                f"Threshold Crossed: no datapoints were received for {n} period{_s(n)} and {n} missing "
                f"datapoint{_s(n)} {_was(n)} treated as [{label}]."
            )
    else:  # fewer real datapoints than N: missing ones are filled in, as few as possible
        filled = n - len(present)
        breaching = sum(map(is_breach, present))
        if treat in ("breaching", "notBreaching"):
            state = ALARM if breaching + (filled if treat == "breaching" else 0) >= m else OK
            agreeing = [p for p in present if is_breach(p) == (state == ALARM)] or present
            label = "Breaching" if treat == "breaching" else "NonBreaching"
            reason = (
                f"Threshold Crossed: {len(agreeing)} datapoint{_s(len(agreeing))} "
                f"{listed(agreeing, is_breach(agreeing[0]))} and {filled} missing datapoint{_s(filled)} "
                f"{_was(filled)} treated as [{label}]."
            )
        else:
            # missing: the real datapoints alone decide; all of them breaching is enough for ALARM (the
            # docs' "X - - - -"). ignore: then the state is kept instead.
            all_breach = breaching == len(present)
            state = ALARM if breaching >= m or all_breach else OK
            if treat == "ignore" and all_breach and breaching < m:
                state = None
            agreeing = [p for p in present if is_breach(p) == (state == ALARM)] or present
            reason = (
                f"Threshold Crossed: {len(agreeing)} out of the last {len(present)} datapoints "
                f"{listed(agreeing, is_breach(agreeing[0]))}."
            )
    statistic = {"extendedStatistic": alarm["ExtendedStatistic"]} if alarm.get("ExtendedStatistic") else {}
    data = {
        "version": "1.0",
        "queryDate": _iso(now),
        "startDate": _iso(points[0][0]) if points else _iso(now),
        **(statistic or {"statistic": alarm.get("Statistic", "")}),
        "period": _period(alarm),
        "recentDatapoints": [value for _, value in present],
        "threshold": threshold,
        "evaluatedDatapoints": [{"timestamp": _iso(at), "value": value} for at, value in reversed(present[-n:])],
    }
    return state, reason, data


def _listed(points: Sequence[tuple[datetime, float]], words: str, breaching: bool, threshold: float) -> str:
    # newest first, each as CloudWatch prints it: value (dd/mm/yy HH:MM:SS)
    shown = ", ".join(f"{value!r} ({at:%d/%m/%y %H:%M:%S})" for at, value in reversed(points))
    return f"[{shown}] {_was(len(points))} {'' if breaching else 'not '}{words} the threshold ({threshold!r})"


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _was(count: int) -> str:
    return "was" if count == 1 else "were"


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}+0000"


def render_alarm_table(evaluations: Sequence[AlarmEvaluation]) -> str:
    """The evaluations as ``stepml local alarms`` prints them: NAME, STATE, METRIC, THRESHOLD, REASON."""
    rows = [("NAME", "STATE", "METRIC", "THRESHOLD", "REASON")]
    for e in sorted(evaluations, key=lambda e: (e.state != ALARM, e.name)):
        state = e.state if not e.changed else f"{e.state} (was {e.previous_state})"
        rows.append((e.name, state, e.metric, e.threshold, e.reason + (f" [{e.note}]" if e.note else "")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)), row[4]]) for row in rows)
