"""Executions outlive the process that ran them, as on AWS.

moto keeps executions in memory only. The archive stores each one when it starts (RUNNING) and again when
it ends (description and whole history), and answers Step Functions' read APIs (ListExecutions,
DescribeExecution, GetExecutionHistory) for the stored ones moto no longer holds, merged with moto's own
answers. An execution the archive still holds as RUNNING when the local AWS starts was cut short by a
kill or crash: it is marked ABORTED with a cause saying so, never left RUNNING or taken for SUCCEEDED.

Differences from AWS: pagination tokens of merged listings are this archive's own (opaque, as AWS's are);
an execution stopped by ``stepml local down`` is ABORTED here where AWS would have carried on running it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from stepml.embedded.durable import DurableStore

TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}
INTERRUPTED_ERROR = "stepml.LocalAwsStopped"
_DESCRIPTION_FIELDS = (
    "executionArn",
    "stateMachineArn",
    "name",
    "status",
    "startDate",
    "stopDate",
    "input",
    "inputDetails",
    "output",
    "outputDetails",
    "error",
    "cause",
)


def _epoch(value: Any) -> Any:
    """Dates as epoch seconds, the form Step Functions' JSON protocol sends them in."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, dict):
        return {k: _epoch(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_epoch(v) for v in value]
    return value


def ended_in_moto(state_machine_arns: Iterable[str]) -> Iterator[str]:
    """The ARNs of the ended executions moto holds for ``state_machine_arns``, read from its backend in this
    process. The sweep asks every half second: through ListExecutions (every execution serialised, sent to
    itself and parsed, page by page) it took a sixth of the local AWS's CPU during a run, more the more
    executions moto holds."""
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    from stepml.embedded.template import ACCOUNT_ID, REGION

    wanted = set(state_machine_arns)
    for machine in list(stepfunctions_parser_backends[ACCOUNT_ID][REGION].state_machines):
        if machine.arn not in wanted:
            continue
        for execution in list(machine.executions):  # a copy: the engine appends as executions start
            status = getattr(execution, "exec_status", None)
            if status is not None and status.value in TERMINAL:
                yield execution.execution_arn


class ExecutionArchive:
    """Store executions as they start and end; answer the read APIs for those moto has forgotten.

    Executions are stored by name, as the pipeline's always were; those of the stack's other state machines
    (batch scoring) by ``<state machine name>:<name>`` (a colon is never part of an execution name), since on
    AWS a name is unique per state machine, not per account.
    """

    def __init__(
        self,
        store: DurableStore,
        client: Callable[[str], Any],
        state_machine_arn: str,
        on_ended: Callable[[dict[str, Any]], None] | None = None,
        other_state_machine_arns: list[str] | None = None,
    ) -> None:
        self.store = store
        self._client = client
        self._on_ended = on_ended
        self.state_machine_arn = state_machine_arn
        self.state_machine_arns = [state_machine_arn] + [
            arn for arn in other_state_machine_arns or [] if arn != state_machine_arn
        ]
        self._pipeline = state_machine_arn.rsplit(":", 1)[-1]
        self._ended: set[str] = {self.key(r["executionArn"]) for r in store.executions() if r["status"] in TERMINAL}
        self._lock = threading.Lock()

    def key(self, execution_arn: str) -> str:
        """What an execution is stored under: its name (the pipeline's), or ``<state machine>:<name>``."""
        # arn:aws:states:<region>:<account>:execution:<state machine>:<name>
        machine, name = execution_arn.split(":")[-2:]
        return self.key_of(machine, name)

    def key_of(self, machine: str, name: str) -> str:
        """The key of execution ``name`` of ``machine`` (a state machine's ARN, qualified or not, or its name)."""
        machine = machine.split(":stateMachine:", 1)[-1].split(":", 1)[0]
        return name if machine == self._pipeline else f"{machine}:{name}"

    # -- recording --------------------------------------------------------------------------------------
    def started(self, request: dict[str, Any], answer: dict[str, Any]) -> None:
        """Store a new execution as RUNNING, as soon as StartExecution has answered."""
        arn = answer["executionArn"]
        name = arn.rsplit(":", 1)[-1]
        key = self.key(arn)
        if self.store.execution(key) is not None:
            return  # a repeated start answered with the running execution
        self.store.put_execution(
            {
                "executionArn": arn,
                "stateMachineArn": request.get("stateMachineArn", self.state_machine_arn),
                "name": name,
                "status": "RUNNING",
                "startDate": float(answer.get("startDate") or time.time()),
                "input": request.get("input", "{}"),
                "events": [],
            },
            key,
        )

    def sweep(self) -> int:
        """Store every execution moto holds that ended since the last sweep; how many were stored."""
        return sum(
            self.ended(arn) for arn in ended_in_moto(self.state_machine_arns) if self.key(arn) not in self._ended
        )

    def ended(self, execution_arn: str) -> bool:
        """Store an execution moto reports ended, unless stored already; whether it was stored now.

        Called by the sweep and as soon as a client is told an execution ended, so a command that reports
        an outcome never reports one the disk does not hold yet.
        """
        key = self.key(execution_arn)
        with self._lock:
            if key in self._ended:
                return False
            record = self.snapshot(execution_arn)
            self.store.put_execution(record, key)
            self._ended.add(key)
        if self._on_ended is not None:
            self._on_ended(record)
        return True

    def snapshot(self, execution_arn: str) -> dict[str, Any]:
        """An execution's description and full history, as moto has them now."""
        sfn = self._client("stepfunctions")
        description = sfn.describe_execution(executionArn=execution_arn)
        events = [
            event
            for page in sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn)
            for event in page["events"]
        ]
        record = {k: description[k] for k in _DESCRIPTION_FIELDS if k in description}
        return dict(_epoch({**record, "events": events}))

    def abort_running(self, cause: str) -> list[str]:
        """Mark every stored RUNNING execution ABORTED with ``cause`` (the local AWS stops or stopped)."""
        names = []
        now = time.time()
        for record in self.store.executions(status="RUNNING"):
            with contextlib.suppress(Exception):  # moto no longer holds it: keep what was stored
                record = {**self.snapshot(record["executionArn"]), "status": "RUNNING"}
            events = list(record.get("events") or [])
            events.append(
                {
                    "timestamp": now,
                    "type": "ExecutionAborted",
                    "id": len(events) + 1,
                    "previousEventId": len(events),
                    "executionAbortedEventDetails": {"error": INTERRUPTED_ERROR, "cause": cause},
                }
            )
            key = self.key(record["executionArn"])
            self.store.put_execution(
                {
                    **record,
                    "status": "ABORTED",
                    "stopDate": now,
                    "error": INTERRUPTED_ERROR,
                    "cause": cause,
                    "events": events,
                },
                key,
            )
            self._ended.add(key)
            names.append(record["name"])
        return names

    # -- answering ----------------------------------------------------------------------------------------
    def stored(self, name_or_arn: str) -> dict[str, Any] | None:
        """The stored execution of this ARN, or of this name (a name alone: the pipeline's)."""
        key = self.key(name_or_arn) if name_or_arn.startswith("arn:") else name_or_arn
        record = self.store.execution(key)
        if record is None or (name_or_arn.startswith("arn:") and record["executionArn"] != name_or_arn):
            return None
        return record

    def stored_for(self, state_machine_arn: str, name: str) -> dict[str, Any] | None:
        """The stored execution named ``name`` of that state machine."""
        return self.store.execution(self.key_of(state_machine_arn, name))

    def describe(self, execution_arn: str) -> dict[str, Any] | None:
        record = self.stored(execution_arn)
        return {k: v for k, v in record.items() if k != "events"} if record else None

    def history(self, request: dict[str, Any]) -> dict[str, Any] | None:
        record = self.stored(request.get("executionArn", ""))
        if record is None:
            return None
        events = list(record.get("events") or [])
        if request.get("reverseOrder"):
            events.reverse()
        if request.get("includeExecutionData") is False:
            events = [_without_data(e) for e in events]
        return _page(events, "events", request)

    def listing(self, request: dict[str, Any], live: list[dict[str, Any]]) -> dict[str, Any]:
        """ListExecutions over moto's ``live`` executions and the stored ones it no longer holds."""
        names = {e["name"] for e in live}
        status = request.get("statusFilter")
        machine = request.get("stateMachineArn")
        stored: list[dict[str, Any]] = [
            {k: r[k] for k in ("executionArn", "stateMachineArn", "name", "status", "startDate", "stopDate") if k in r}
            for r in self.store.executions(machine, status)
            if r["name"] not in names
        ]
        merged: list[dict[str, Any]] = sorted([*live, *stored], key=lambda e: float(e["startDate"]), reverse=True)
        return _page(merged, "executions", request)


def _without_data(event: dict[str, Any]) -> dict[str, Any]:
    details = {
        k: {f: x for f, x in v.items() if f not in {"input", "output"}} if k.endswith("EventDetails") else v
        for k, v in event.items()
    }
    return details


def _page(entries: list[dict[str, Any]], field: str, request: dict[str, Any]) -> dict[str, Any]:
    """One page of ``entries`` and a token for the next (AWS's default page is 100, at most 1000)."""
    size = min(int(request.get("maxResults") or 100), 1000) or 100
    start = 0
    if request.get("nextToken"):
        start = int(json.loads(base64.b64decode(request["nextToken"]))["offset"])
    page: dict[str, Any] = {field: entries[start : start + size]}
    if start + size < len(entries):
        page["nextToken"] = base64.b64encode(json.dumps({"offset": start + size}).encode()).decode()
    return page
