"""Fault injection for the embedded target, in the spirit of Step Functions' mock configuration.

AWS's Step Functions Local reads a mock-config file whose mocked responses ``Throw`` an error for a range
of attempts ("0", "1-2"). moto does not load those files, and a mocked state would not run the real
handler anyway. Here a fault plan names a state and the attempts that fail; every other attempt runs the
real code, so a user can watch a Retry happen and succeed, or a Catch record the failure.

A failing attempt fails *before* the task's code runs (the default: the invocation never reached the
handler, as when Lambda throttles), or *after* it (the handler runs to the end, its writes happen, and the
attempt still fails: what Step Functions sees when a Lambda's response is lost or it times out after
writing). ``after`` shows whether a retried stage repeats its side effects. It applies to Lambda tasks
(the project's functions and the SageMaker stand-in) and SNS publishes (the message goes out, then the
publish fails: a retry sends it again, as SNS's at-least-once delivery allows).

    stepml run --inject-fault Preprocess=TransientStoreError:2        # attempts 0 and 1 fail before running
    stepml run --inject-fault Register=TransientStoreError:1:after    # attempt 0 registers, then fails
    stepml run --fault-config faults.json

``--inject-fault STATE=ERROR[:COUNT][:WHEN]``: COUNT attempts (default 1) fail; WHEN is ``before``
(default) or ``after``. ``faults.json`` maps state → attempt range → ``Throw``, with an optional ``When``::

    {"Preprocess": {"0-1": {"Throw": {"Error": "TransientStoreError", "Cause": "..."}}},
     "Register": {"0": {"Throw": {"Error": "TransientStoreError", "When": "after"}}}}
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

When = Literal["before", "after"]
WHENS: tuple[When, ...] = ("before", "after")
# WHEN is matched loosely so that a misspelt one gets its own message rather than the generic one.
_SPEC = re.compile(
    r"^(?P<state>[A-Za-z0-9_-]+)=(?P<error>[A-Za-z0-9_.]+)(?::(?P<count>\d+))?(?::(?P<when>[A-Za-z]*))?$"
)
_SPEC_FORM = "STATE=ERROR[:COUNT][:WHEN]"
_SPEC_EXAMPLES = "e.g. Preprocess=TransientStoreError:2 or Register=TransientStoreError:1:after"
_RANGE = re.compile(r"^(?P<start>\d+)(?:-(?P<end>\d+))?$")
_THROW_KEYS = frozenset({"Error", "Cause", "When"})


class FaultSpecError(ValueError):
    """A fault specification that cannot be understood; the message shows the accepted forms."""


@dataclass(frozen=True)
class Throw:
    error: str
    cause: str
    first_attempt: int
    last_attempt: int
    # Only this execution's attempts fail (None: every execution's), so concurrent executions in one
    # embedded AWS can each carry their own faults.
    execution: str | None = None
    # "before": the attempt fails without running the task's code; "after": the code runs, then it fails.
    when: When = "before"

    def covers(self, attempt: int) -> bool:
        return self.first_attempt <= attempt <= self.last_attempt

    def applies_to(self, execution_name: str) -> bool:
        return self.execution is None or self.execution == execution_name


@dataclass
class Injection:
    """One attempt that was made to fail, and (for ``after``) how the real code it let run ended."""

    execution: str
    state: str
    attempt: int
    throw: Throw
    ran: bool = False
    # the code's own error type when it ran and failed (None: it succeeded, or did not run)
    outcome_error: str | None = None


@dataclass
class FaultPlan:
    """Which attempts of which states fail, and how; counts attempts per execution and state, and keeps
    every injection made (``injections``) so a test can check what happened rather than what was planned."""

    throws: dict[str, list[Throw]] = field(default_factory=dict)
    injections: list[Injection] = field(default_factory=list)
    _attempts: dict[tuple[str, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __bool__(self) -> bool:
        return bool(self.throws)

    def add(self, state: str, throw: Throw) -> None:
        self.throws.setdefault(state, []).append(throw)

    def next_fault(self, execution_name: str, state: str) -> Injection | None:
        """Count one attempt of ``state`` in ``execution_name``; the injection that applies to it, if any."""
        if state not in self.throws:
            return None
        with self._lock:
            attempt = self._attempts.get((execution_name, state), 0)
            self._attempts[(execution_name, state)] = attempt + 1
            throw = next((t for t in self.throws[state] if t.applies_to(execution_name) and t.covers(attempt)), None)
            if throw is None:
                return None
            injection = Injection(execution_name, state, attempt, throw)
            self.injections.append(injection)
        return injection

    @classmethod
    def from_specs(cls, specs: list[str], execution: str | None = None) -> FaultPlan:
        """Parse ``STATE=ERROR[:COUNT][:WHEN]`` (COUNT attempts fail, default 1; WHEN ``before``, the
        default, or ``after`` the real code ran); ``execution`` limits them to one execution."""
        plan = cls()
        for spec in specs:
            match = _SPEC.match(spec.strip())
            if not match:
                raise FaultSpecError(f"--inject-fault {spec!r}: expected {_SPEC_FORM}, {_SPEC_EXAMPLES}")
            count = int(match.group("count") or 1)
            if count < 1:
                raise FaultSpecError(f"--inject-fault {spec!r}: COUNT must be at least 1; {_SPEC_EXAMPLES}")
            when = match.group("when")
            if when is not None and when not in WHENS:
                raise FaultSpecError(
                    f"--inject-fault {spec!r}: WHEN must be 'before' (fail without running the task) or 'after' "
                    f"(run it, then fail), got {when!r}; {_SPEC_EXAMPLES}"
                )
            plan.add(
                match.group("state"),
                Throw(
                    match.group("error"),
                    f"fault injected by stepml ({spec})",
                    0,
                    count - 1,
                    execution,
                    cast(When, when or "before"),  # checked against WHENS above
                ),
            )
        return plan

    @classmethod
    def from_file(cls, path: Path) -> FaultPlan:
        """Read a fault-config file (state → attempt range → Throw)."""
        try:
            document = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise FaultSpecError(f"fault config {path}: {error}") from error
        plan = cls()
        if not isinstance(document, dict):
            raise FaultSpecError(f"fault config {path}: expected an object of state names")
        for state, ranges in document.items():
            if not isinstance(ranges, dict):
                raise FaultSpecError(f"fault config {path}: {state}: expected an object of attempt ranges")
            for attempt_range, response in ranges.items():
                match = _RANGE.match(str(attempt_range))
                throw = response.get("Throw") if isinstance(response, dict) else None
                if not match or not isinstance(throw, dict) or "Error" not in throw:
                    raise FaultSpecError(
                        f'fault config {path}: {state}: {attempt_range!r} must be an attempt range like "0" or '
                        f'"0-2" mapping to {{"Throw": {{"Error": ..., "Cause": ..., "When": "before"|"after"}}}}'
                    )
                where = f"fault config {path}: {state}: {attempt_range}"
                unknown = sorted(set(throw) - _THROW_KEYS)
                if unknown:
                    raise FaultSpecError(f"{where}: unknown Throw field(s) {unknown}; allowed: Error, Cause, When")
                when = throw.get("When", "before")
                if when not in WHENS:
                    raise FaultSpecError(
                        f'{where}: "When" must be "before" (fail without running the task) or "after" '
                        f"(run it, then fail), got {when!r}"
                    )
                start = int(match.group("start"))
                end = int(match.group("end") or start)
                if end < start:
                    raise FaultSpecError(f"fault config {path}: {state}: range {attempt_range!r} ends before it starts")
                cause = str(throw.get("Cause", "fault injected by stepml"))
                plan.add(state, Throw(str(throw["Error"]), cause, start, end, when=cast(When, when)))
        return plan

    def to_json(self) -> list[dict[str, Any]]:
        """The planned throws as JSON (what ``stepml run`` sends the local AWS for its execution)."""
        return [
            {
                "state": state,
                "error": t.error,
                "cause": t.cause,
                "first_attempt": t.first_attempt,
                "last_attempt": t.last_attempt,
                "when": t.when,
            }
            for state, throws in self.throws.items()
            for t in throws
        ]

    def merge(self, other: FaultPlan) -> FaultPlan:
        for state, throws in other.throws.items():
            for throw in throws:
                self.add(state, throw)
        return self


_IN_FLIGHT = {"LambdaFunctionScheduled", "TaskScheduled", "LambdaFunctionStarted", "TaskStarted"}


def running_state(sfn: Any, state_machine_arn: str, resource_matches: Any) -> tuple[str, str] | None:
    """The (execution name, state name) whose task is being scheduled now on a resource that matches.

    The gateway sees a Lambda invocation or an SNS publish, not the state that made it; the execution
    history says which state scheduled it (the newest ``*Scheduled`` event, and the state entered before it).
    """
    running = sfn.list_executions(stateMachineArn=state_machine_arn, statusFilter="RUNNING")["executions"]
    for execution in running:
        # Newest first (moto ignores reverseOrder and always answers oldest first, so sort here).
        history = sfn.get_execution_history(executionArn=execution["executionArn"], reverseOrder=True)["events"]
        events = sorted(history, key=lambda e: e["id"], reverse=True)
        # The task being invoked right now is the newest event, or followed only by its Started event.
        newest = [e for e in events[:2] if e["type"] in _IN_FLIGHT]
        scheduled = next((e for e in newest if e["type"] in {"LambdaFunctionScheduled", "TaskScheduled"}), None)
        if scheduled is None:
            continue
        details: dict[str, Any] = next((v for k, v in scheduled.items() if k.endswith("EventDetails")), {})
        if not resource_matches(details):
            continue
        entered = next((e for e in events if e["type"].endswith("StateEntered") and e["id"] < scheduled["id"]), None)
        if entered is not None:
            return execution["name"], entered["stateEnteredEventDetails"]["name"]
    return None
