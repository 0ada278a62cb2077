"""Following an execution: when the history is read, and that every state is still reported."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

from stepml.progress import follow
from stepml.targets import RemoteTarget, StackOutputs

START = datetime(2026, 11, 1, tzinfo=UTC)


def _event(event_id: int, kind: str, name: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"id": event_id, "type": kind, "timestamp": START + timedelta(seconds=event_id)}
    if name:
        key = "stateEnteredEventDetails" if kind.endswith("Entered") else "stateExitedEventDetails"
        event[key] = {"name": name, "input" if kind.endswith("Entered") else "output": "{}"}
    return event


EVENTS = [
    _event(1, "ExecutionStarted"),
    _event(2, "TaskStateEntered", "Ingest"),
    _event(3, "LambdaFunctionScheduled"),
    _event(4, "TaskStateExited", "Ingest"),
    _event(5, "TaskStateEntered", "Train"),
    _event(6, "LambdaFunctionScheduled"),
    _event(7, "TaskStateExited", "Train"),
    _event(8, "ExecutionSucceeded"),
]


class FakeStepFunctions:
    """An execution that runs for ``polls`` DescribeExecution calls, its events appearing as it goes; like
    moto, GetExecutionHistory answers with every event there is, whatever the paging arguments."""

    def __init__(self, polls: int) -> None:
        self.polls = polls
        self.describes = 0
        self.history_calls = 0

    def _visible(self) -> list[dict[str, Any]]:
        shown = max(1, round(len(EVENTS) * self.describes / self.polls))
        return EVENTS[:shown] if self.describes < self.polls else EVENTS

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        self.describes += 1
        status = "SUCCEEDED" if self.describes >= self.polls else "RUNNING"
        return {"executionArn": executionArn, "status": status, "startDate": START}

    def get_execution_history(self, **kwargs: Any) -> dict[str, Any]:
        self.history_calls += 1
        events = self._visible()
        return {"events": list(reversed(events)) if kwargs.get("reverseOrder") else list(events)}


def test_nobody_watching_reads_the_history_once_at_the_end() -> None:
    sfn = FakeStepFunctions(polls=6)
    description, reader = follow(sfn, "arn:x", None, poll_seconds=0)
    assert description["status"] == "SUCCEEDED"
    assert sfn.describes == 6 and sfn.history_calls == 1
    assert [(v.name, v.seconds) for v in reader.visits] == [("Ingest", 2.0), ("Train", 2.0)]


def test_a_watcher_sees_every_state_enter_and_exit_in_order() -> None:
    sfn = FakeStepFunctions(polls=8)
    seen: list[tuple[str, str]] = []
    printed = io.StringIO()
    _, reader = follow(
        sfn, "arn:x", printed, poll_seconds=0, on_change=lambda change, visit: seen.append((change, visit.name))
    )
    assert seen == [("entered", "Ingest"), ("exited", "Ingest"), ("entered", "Train"), ("exited", "Train")]
    assert "Train running" in printed.getvalue() and "✓ Train" in printed.getvalue()
    assert 1 <= sfn.history_calls <= sfn.describes
    assert len(reader.visits) == 2


def test_a_remote_target_builds_each_client_once() -> None:
    made: list[str] = []

    class Session:
        def client(self, service: str, **kwargs: Any) -> object:
            made.append(service)
            return object()

    target = RemoteTarget("aws", Session(), StackOutputs("arn:sm", "bucket", "registry", "runs"))
    assert target.client("s3") is target.client("s3")
    assert target.client("stepfunctions") is not target.client("s3")
    assert made == ["s3", "stepfunctions"]
