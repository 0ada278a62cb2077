"""Follow a Step Functions execution's history and report it state by state."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}
_SCHEDULED = {"TaskScheduled", "LambdaFunctionScheduled"}
# The state that waits for a person's decision (docs/approval.md); its TaskSubmitted event carries the
# function's answer: which version waits, until when, and the commands that decide.
APPROVAL_STATE = "RequestApproval"
# While a run waits for approval, the progress view says so again this often, so it does not look hung.
STILL_WAITING_SECONDS = 60.0
_FAILED = {"TaskFailed", "LambdaFunctionFailed", "TaskTimedOut", "LambdaFunctionTimedOut"}
HISTORY_MIN_SECONDS = 0.2
# A step the step cache supplied: its Reuse* Pass state stands for the step, and the lookup's result (at
# $.cache.<key> in the state's input and output) says which run it came from.
REUSE_STATES = {
    "ReusePreprocess": ("Preprocess", "preprocess"),
    "ReuseTraining": ("Train", "training"),
    "ReuseEvaluation": ("Evaluate", "evaluation"),
}


@dataclass
class StateVisit:
    """One visit of one state: when it ran, how it ended, how often its task was retried."""

    name: str
    kind: str
    entered: datetime
    exited: datetime | None = None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    output: str | None = None
    input: str | None = None
    # a callback task's TaskSubmitted output (lambda:invoke.waitForTaskToken: the invocation's response)
    submitted: str | None = None

    @property
    def approval_request(self) -> dict[str, Any] | None:
        """What RequestApproval's function answered (model_name, version, deadline, approve_command, ...),
        once the run waits for a decision; None for any other state or before then."""
        if self.name != APPROVAL_STATE or not self.submitted:
            return None
        try:
            payload = (json.loads(self.submitted) or {}).get("Payload")
        except (ValueError, AttributeError):
            return None
        return payload if isinstance(payload, dict) and payload.get("version") is not None else None

    @property
    def reused_step(self) -> str | None:
        """The step this visit stands for when it is a Reuse* state (Preprocess, Train, Evaluate), else None."""
        reuse = REUSE_STATES.get(self.name)
        return reuse[0] if reuse else None

    @property
    def cached_from(self) -> str | None:
        """The run a Reuse* state's result came from (the lookup's ``from_run``), else None."""
        reuse = REUSE_STATES.get(self.name)
        if reuse is None:
            return None
        for text in (self.output, self.input):
            try:
                lookup = (json.loads(text or "null") or {}).get("cache", {}).get(reuse[1]) or {}
            except (ValueError, AttributeError):
                continue
            if isinstance(lookup, dict) and lookup.get("from_run"):
                return str(lookup["from_run"])
        return None

    @property
    def bookkeeping(self) -> bool:
        """A step cache state that only looks up, chooses or remembers: the progress view leaves it out
        (``--json`` keeps it) unless it was retried or failed."""
        cache_state = self.name.startswith(("Lookup", "Remember")) or self.name.endswith("Cached")
        return cache_state and not self.name.endswith("Failed") and not self.errors and self.attempts <= 1

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)

    @property
    def seconds(self) -> float | None:
        return (self.exited - self.entered).total_seconds() if self.exited else None


def _details(event: dict[str, Any]) -> dict[str, Any]:
    return next((v for k, v in event.items() if k.endswith("EventDetails")), {})


class HistoryReader:
    """Turn history events (in order, possibly arriving in batches) into state visits."""

    def __init__(self) -> None:
        self.visits: list[StateVisit] = []
        self.seen_ids: set[int] = set()
        self._open: StateVisit | None = None

    def feed(self, events: list[dict[str, Any]]) -> list[tuple[str, StateVisit]]:
        """Consume new events; return (``entered``|``retry``|``exited``, visit) changes in order."""
        changes: list[tuple[str, StateVisit]] = []
        for event in sorted(events, key=lambda e: e["id"]):
            if event["id"] in self.seen_ids:
                continue
            self.seen_ids.add(event["id"])
            kind, details = event["type"], _details(event)
            if kind.endswith("StateEntered"):
                visit = StateVisit(
                    details["name"],
                    kind.removesuffix("StateEntered"),
                    event["timestamp"],
                    input=details.get("input"),
                )
                self.visits.append(visit)
                self._open = visit
                changes.append(("entered", visit))
            elif kind in _SCHEDULED and self._open:
                self._open.attempts += 1
                if self._open.attempts > 1:
                    changes.append(("retry", self._open))
            elif kind == "TaskSubmitted" and self._open:
                self._open.submitted = details.get("output")
                changes.append(("submitted", self._open))
            elif kind in _FAILED and self._open:
                self._open.errors.append(str(details.get("error", kind)))
            elif kind.endswith("StateExited") and self._open:
                self._open.exited = event["timestamp"]
                self._open.output = details.get("output")
                changes.append(("exited", self._open))
                self._open = None
        return changes


def _line(status: str, visit: StateVisit) -> str:
    if visit.reused_step:
        return f"  ↺ {visit.reused_step:<28} reused from run {visit.cached_from or '?'}"
    seconds = f"{visit.seconds:6.2f} s" if visit.seconds is not None else "        "
    retries = f"  {visit.retries} retr{'y' if visit.retries == 1 else 'ies'}" if visit.retries else ""
    errors = f"  errors: {', '.join(visit.errors)}" if visit.errors else ""
    return f"  {status} {visit.name:<28} {visit.kind:<8} {seconds}{retries}{errors}"


def _new_events(sfn: Any, execution_arn: str, seen: set[int]) -> list[dict[str, Any]]:
    """Events not seen yet, read newest first so a long history is not fetched again on every poll."""
    events: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"executionArn": execution_arn, "reverseOrder": True, "maxResults": 25}
        if token:
            kwargs["nextToken"] = token
        page = sfn.get_execution_history(**kwargs)
        fresh = [e for e in page["events"] if e["id"] not in seen]
        events.extend(fresh)
        token = page.get("nextToken")
        if not token or len(fresh) < len(page["events"]):
            return events


def follow(
    sfn: Any,
    execution_arn: str,
    out: TextIO | None,
    poll_seconds: float = 0.2,
    timeout_seconds: float = 7200,
    on_change: Callable[[str, StateVisit], None] | None = None,
    history_max_seconds: float = 1.0,
    notices: TextIO | None = None,
    target_flags: str = "",
) -> tuple[dict[str, Any], HistoryReader]:
    """Poll until the execution ends, printing each state as it starts and ends; return its description.

    A run that waits for approval is said to (with the commands that decide, ``target_flags`` added to them,
    e.g. `` --target aws``), on ``out``, or on ``notices`` when nothing else is printed (``--json``), and
    again every ``STILL_WAITING_SECONDS`` while it waits.

    DescribeExecution is polled every ``poll_seconds``: it says when the execution ends. The history is what
    costs (GetExecutionHistory is throttled hardest on AWS, and the local AWS answers it with every event,
    data included, whatever ``maxResults``), so it is read once at the end when nobody watches (no ``out``,
    no ``on_change``), and otherwise every 0.2 s (or ``poll_seconds`` if longer) growing to
    ``history_max_seconds`` while no new event arrives, back to the shortest when one does.
    """
    reader = HistoryReader()
    notice_to = out or notices
    watched = out is not None or on_change is not None or notices is not None
    waiting = WaitingNotice(notice_to, target_flags)
    deadline = time.monotonic() + timeout_seconds
    history_min = max(poll_seconds, HISTORY_MIN_SECONDS)
    history_every, history_due = history_min, 0.0
    while True:
        description = sfn.describe_execution(executionArn=execution_arn)
        ended = description["status"] in TERMINAL
        if ended or (watched and time.monotonic() >= history_due):
            changes = reader.feed(_new_events(sfn, execution_arn, reader.seen_ids))
            history_every = history_min if changes else min(history_every * 1.5, history_max_seconds)
            history_due = time.monotonic() + history_every
            _report(changes, out, on_change)
            waiting.seen(changes)
        if ended:
            return description, reader
        waiting.remind()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{execution_arn} still {description['status']} after {timeout_seconds} s")
        time.sleep(poll_seconds)


def _report(
    changes: list[tuple[str, StateVisit]], out: TextIO | None, on_change: Callable[[str, StateVisit], None] | None
) -> None:
    for change, visit in changes:
        if on_change:
            on_change(change, visit)
        if out is None:
            continue
        if visit.bookkeeping and change != "retry":
            continue
        if change == "entered" and visit.kind in {"Task", "Wait"}:
            print(f"  … {visit.name} running", file=out, flush=True)
        elif change == "retry":
            print(f"  ↻ {visit.name} retrying after {visit.errors[-1] if visit.errors else 'an error'}", file=out)
        elif change == "exited":
            print(exited_line(visit), file=out, flush=True)


class WaitingNotice:
    """Tells the user a run waits for approval, how to decide, and (every STILL_WAITING_SECONDS) that it
    still does, so that a run waiting for a person never looks hung."""

    def __init__(self, out: TextIO | None, target_flags: str = "", every: float = STILL_WAITING_SECONDS) -> None:
        self._out, self._flags, self._every = out, target_flags, every
        self._visit: StateVisit | None = None
        self._last = 0.0

    def seen(self, changes: list[tuple[str, StateVisit]]) -> None:
        for change, visit in changes:
            if change == "submitted" and visit.approval_request is not None:
                self._visit, self._last = visit, time.monotonic()
                self._print(waiting_lines(visit.approval_request, self._flags))
            elif change == "exited" and visit is self._visit:
                self._visit = None

    def remind(self, now: float | None = None) -> None:
        moment = time.monotonic() if now is None else now
        request = self._visit.approval_request if self._visit else None
        if request is None or moment - self._last < self._every:
            return
        self._last = moment
        self._print(
            [f"  … still waiting for approval of {request['model_name']} v{request['version']}{_left(request)}"]
        )

    def _print(self, lines: list[str]) -> None:
        if self._out is not None:
            print("\n".join(lines), file=self._out, flush=True)


def _left(request: dict[str, Any]) -> str:
    try:
        deadline = datetime.fromisoformat(str(request.get("deadline")))
    except ValueError:
        return ""
    seconds = (deadline - datetime.now(deadline.tzinfo)).total_seconds()
    return f" ({max(0, round(seconds))} s left, until {request['deadline']})"


def waiting_lines(request: dict[str, Any], target_flags: str = "") -> list[str]:
    """The notice that a run waits for approval: which version, until when, and the commands that decide."""
    model, version = request["model_name"], request["version"]
    approve = str(request.get("approve_command") or f"stepml approve {model} {version}") + target_flags
    reject = str(request.get("reject_command") or f"stepml reject {model} {version}") + target_flags
    return [
        f"  ⏸ {model} v{version} passed the quality gate and waits for approval until {request.get('deadline')} "
        "(then it is rejected); nothing is deployed until then. Decide with:",
        f"      {approve}",
        f"      {reject}",
    ]


def exited_line(visit: StateVisit) -> str:
    """The progress line of a state that ended: ✓ (or ✗ on the failure path), ↺ for a reused step; a
    DescribeEndpoint says what it found (Updating while a rollout runs, InService and on which config)."""
    mark = "✗" if visit.name.endswith("Failed") or visit.name in ("RecordFailure", "DeploymentRolledBack") else "✓"
    return _line(mark, visit) + (_endpoint_status(visit) if visit.name == "DescribeEndpoint" else "")


def _endpoint_status(visit: StateVisit) -> str:
    try:
        endpoint = (json.loads(visit.output or "null") or {}).get("endpoint") or {}
    except (ValueError, AttributeError):
        return ""
    status, config = endpoint.get("EndpointStatus"), endpoint.get("EndpointConfigName")
    if not status:
        return ""
    return f"  → {status}" + (f" ({config})" if config and status == "InService" else "")


def readable_cause(cause: str | None) -> str | None:
    """A Lambda error's cause is its whole error payload as JSON; the message is what a person needs."""
    if not cause:
        return cause
    try:
        payload = json.loads(cause)
    except ValueError:
        return cause
    if isinstance(payload, dict) and "errorMessage" in payload:
        return str(payload["errorMessage"])
    return cause


def failure_details(reader: HistoryReader, description: dict[str, Any]) -> dict[str, Any]:
    """The failed state, error and cause of a failed execution (from what RecordFailure received)."""
    details: dict[str, Any] = {"error": description.get("error"), "cause": description.get("cause")}
    for visit in reversed(reader.visits):
        if visit.name == "RecordFailure" and visit.input:
            state = json.loads(visit.input)
            failure = state.get("failure", {})
            details.update(
                state=failure.get("state"),
                error=failure.get("error") or details["error"],
                cause=failure.get("cause") or details["cause"],
                # a version registered before the run failed (RegisterRolledBack: a rolled-back deployment)
                registration=state.get("registration"),
            )
            break
    details["cause"] = readable_cause(details["cause"])
    return details
