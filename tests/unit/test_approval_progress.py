"""What a user sees of a run that waits for approval: the notice with the commands (also under --json, on
stderr), the reminder that it still waits, and the approval in the outcome and summary."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from stepml.progress import HistoryReader, WaitingNotice, follow
from stepml.session import RunOutcome, approval_line, outcome_of, print_summary

START = datetime(2026, 11, 30, tzinfo=UTC)
REQUEST = {
    "model_name": "iris",
    "version": 3,
    "status": "pending_approval",
    "execution_arn": "arn:aws:states:us-east-1:1:execution:m:run",
    "deadline": "2026-11-30T01:00:00+00:00",
    "timeout_seconds": 3600,
    "approve_command": "stepml approve iris 3 --reason 'WHY'",
    "reject_command": "stepml reject iris 3 --reason 'WHY'",
}


def _event(event_id: int, kind: str, **details: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"id": event_id, "type": kind, "timestamp": START + timedelta(seconds=event_id)}
    if kind.endswith("StateEntered"):
        event["stateEnteredEventDetails"] = {"name": details["name"], "input": "{}"}
    elif kind.endswith("StateExited"):
        event["stateExitedEventDetails"] = {"name": details["name"], "output": "{}"}
    elif kind == "TaskSubmitted":
        event["taskSubmittedEventDetails"] = {"output": json.dumps({"StatusCode": 200, "Payload": details["payload"]})}
    return event


WAITING = [
    _event(1, "ExecutionStarted"),
    _event(2, "ChoiceStateEntered", name="QualityGate"),
    _event(3, "ChoiceStateExited", name="QualityGate"),
    _event(4, "TaskStateEntered", name="RequestApproval"),
    _event(5, "TaskScheduled"),
    _event(6, "TaskStarted"),
    _event(7, "TaskSubmitted", payload=REQUEST),
]
DECIDED = [*WAITING, _event(8, "TaskSucceeded"), _event(9, "TaskStateExited", name="RequestApproval")]


class WaitingExecution:
    """An execution that waits for approval for ``polls`` DescribeExecution calls, then succeeds."""

    def __init__(self, polls: int) -> None:
        self.polls, self.describes = polls, 0

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        self.describes += 1
        return {"executionArn": executionArn, "status": "SUCCEEDED" if self.describes >= self.polls else "RUNNING"}

    def get_execution_history(self, **kwargs: Any) -> dict[str, Any]:
        events = DECIDED if self.describes >= self.polls else WAITING
        return {"events": list(reversed(events)) if kwargs.get("reverseOrder") else list(events)}


def test_the_wait_is_announced_with_the_commands_once() -> None:
    out = io.StringIO()
    follow(WaitingExecution(polls=4), "arn", out, poll_seconds=0.01, target_flags=" --target aws")
    text = out.getvalue()
    assert text.count("waits for approval until 2026-11-30T01:00:00+00:00") == 1, text
    assert "      stepml approve iris 3 --reason 'WHY' --target aws\n" in text
    assert "      stepml reject iris 3 --reason 'WHY' --target aws\n" in text


def test_under_json_the_notice_goes_to_the_notices_stream() -> None:
    notices = io.StringIO()
    follow(WaitingExecution(polls=4), "arn", None, poll_seconds=0.01, notices=notices)
    assert "stepml approve iris 3" in notices.getvalue()


def test_a_run_that_still_waits_says_so_again() -> None:
    out = io.StringIO()
    notice = WaitingNotice(out, every=60)
    reader = HistoryReader()
    notice.seen(reader.feed(WAITING))
    first = out.getvalue()
    assert "stepml approve iris 3" in first
    notice.remind(now=10**9)  # far later than a minute
    assert out.getvalue()[len(first) :].startswith("  … still waiting for approval of iris v3 (")
    # once the state ends (decided), nothing more is said
    notice.seen(reader.feed(DECIDED))
    said = out.getvalue()
    notice.remind(now=10**10)
    assert out.getvalue() == said


def test_other_callback_states_are_not_taken_for_an_approval() -> None:
    reader = HistoryReader()
    events = [
        _event(1, "TaskStateEntered", name="Train"),
        _event(2, "TaskSubmitted", payload={"version": 1, "model_name": "x"}),
    ]
    [_entered, (change, visit)] = reader.feed(events)
    assert change == "submitted" and visit.approval_request is None


def _outcome(registration: dict[str, Any], events: list[dict[str, Any]], status: str = "SUCCEEDED") -> RunOutcome:
    reader = HistoryReader()
    reader.feed(events)
    description = {
        "executionArn": "arn",
        "status": status,
        "startDate": START,
        "stopDate": START + timedelta(seconds=30),
        "output": json.dumps({"registration": registration, "evaluation": {"reason": "gate passed"}}),
    }
    return outcome_of(description, reader)


def test_the_outcome_carries_the_decision() -> None:
    decided = {
        "status": "rejected",
        "decided_by": "bob",
        "decided_at": "2026-11-30T00:10:00+00:00",
        "reason": "drift",
        "timed_out": False,
        "deadline": "2026-11-30T01:00:00+00:00",
    }
    registration = {"model_name": "iris", "version": 3, "status": "rejected", "approval": decided, "gate_reason": "no"}
    outcome = _outcome(registration, DECIDED)
    assert outcome.to_json()["approval"] == {**decided, "version": 3}
    assert outcome.gate_reason == "no"  # Register's reason, not the gate's
    out = io.StringIO()
    print_summary(outcome, out)
    assert "Approval    rejected by bob at 2026-11-30T00:10:00+00:00: drift" in out.getvalue()
    assert "Endpoint    (not deployed: the model was not approved)" in out.getvalue()


def test_a_run_that_ended_while_waiting_left_its_version_pending() -> None:
    outcome = _outcome({}, WAITING, status="ABORTED")
    assert outcome.approval == {"status": "pending", "version": 3, "deadline": "2026-11-30T01:00:00+00:00"}
    assert approval_line(outcome.approval) == "pending: v3 was left waiting (until 2026-11-30T01:00:00+00:00)"


def test_a_run_without_approval_says_nothing_of_it() -> None:
    outcome = _outcome({"model_name": "iris", "version": 1, "status": "approved"}, [])
    assert outcome.approval is None and outcome.to_json()["approval"] is None


def test_a_timeout_reads_as_such() -> None:
    line = approval_line({"status": "rejected", "timed_out": True, "deadline": "2026-11-30T01:00:00+00:00"})
    assert line == "rejected: nobody approved or rejected it by 2026-11-30T01:00:00+00:00 (timed out)"
