"""Start a pipeline run on a running target and collect its outcome."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from stepml.progress import HistoryReader, StateVisit, failure_details, follow
from stepml.targets import TargetError


class ExecutionNameTaken(TargetError):
    """Step Functions refuses the execution name (ExecutionAlreadyExists); the message says what to do."""


def name_taken(name: str, detail: str) -> ExecutionNameTaken:
    return ExecutionNameTaken(
        f"an execution named {name!r} already exists ({detail}). Step Functions keeps a name for 90 days and "
        "accepts it again only to return the same execution, while it is still running with the same input. "
        f"Choose another --name, or see that run with `stepml watch {name}`"
    )


def start_execution(sfn: Any, state_machine_arn: str, name: str, execution_input: dict[str, Any]) -> str:
    """StartExecution; the ARN of the new execution, or of the running one with this name and input.

    Step Functions (and moto) answer a repeated start with the same name and input, while that execution
    runs, with the same execution: one run. Any other reuse of a name is ExecutionNameTaken.
    """
    try:
        answer = sfn.start_execution(stateMachineArn=state_machine_arn, name=name, input=json.dumps(execution_input))
    except sfn.exceptions.ExecutionAlreadyExists as error:
        raise name_taken(name, str(error.response.get("Error", {}).get("Message", error))) from error
    return str(answer["executionArn"])


def execution_name_for(dataset: Path | str, now: datetime | None = None) -> str:
    """A readable, unique execution name: ``<dataset>-<UTC time>-<random>`` within AWS's 80 characters."""
    stem = re.sub(r"[^A-Za-z0-9-]+", "-", Path(str(dataset)).stem).strip("-")[:40] or "run"
    moment = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S")
    salt = hashlib.sha256(f"{stem}{time.time_ns()}".encode()).hexdigest()[:6]
    return f"{stem}-{moment}-{salt}"


@dataclass
class RunOutcome:
    """What a finished execution produced, in the shape ``stepml run --json`` prints."""

    execution_arn: str
    status: str
    duration_seconds: float
    error: str | None = None
    cause: str | None = None
    failed_state: str | None = None
    model_name: str | None = None
    model_version: int | None = None
    registry_status: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    model_artifact: str | None = None
    endpoint_name: str | None = None
    evaluation_uri: str | None = None
    report_uri: str | None = None
    report_path: str | None = None
    gate_reason: str | None = None
    model_choice: str | None = None  # which model the trainer kept and why (Evaluate's model_choice)
    trainer_notes: list[str] = field(default_factory=list)
    problem_type: str | None = None
    problem_type_note: str | None = None
    registry_record: dict[str, Any] | None = None
    tuning: dict[str, Any] | None = None  # $.tuning (TuningSummary) when the run tuned
    # each column's role and why ({"name", "role", "reason", "missing"}), and rows left out by reason
    columns: list[dict[str, Any]] = field(default_factory=list)
    dropped_rows: dict[str, int] = field(default_factory=dict)
    states: list[dict[str, Any]] = field(default_factory=list)
    # steps the step cache supplied: step (Preprocess, Train, Evaluate) → the run it came from
    reused_steps: dict[str, str] = field(default_factory=dict)
    reused_version: bool = False  # Register returned the version this training job already had
    invocations: list[dict[str, Any]] = field(default_factory=list)
    # how the endpoint update's rollout ended (RegistrationResult.rollout), a rolled-back run's too
    rollout: dict[str, Any] | None = None
    # the run's manual approval (approval "manual" and the gate passed): status pending|approved|rejected,
    # timed_out, version, deadline, decided_by, decided_at, reason; None for a run that asked for none
    approval: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "execution_arn": self.execution_arn,
            "status": self.status,
            "error": self.error,
            "cause": self.cause,
            "failed_state": self.failed_state,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "metrics": self.metrics,
            "model_artifact": self.model_artifact,
            "endpoint_name": self.endpoint_name,
            "report_uri": self.report_uri,
            "report_path": self.report_path,
            "registry": self.registry_record,
            "tuning": self.tuning,
            "model_choice": self.model_choice,
            "trainer_notes": self.trainer_notes,
            "columns": self.columns,
            "dropped_rows": self.dropped_rows,
            "duration_seconds": round(self.duration_seconds, 3),
            "states": self.states,
            "reused_steps": self.reused_steps,
            "reused_version": self.reused_version,
            "rollout": self.rollout,
            "approval": self.approval,
            "invocations": self.invocations,
        }


def column_roles(data: dict[str, Any], prep: dict[str, Any]) -> list[dict[str, Any]]:
    """Each column of ValidateData's profile with its role and why (Preprocess's roles and exclusions where it
    gives them; a profile without roles shows its storage type, or ``excluded`` if training did not see it)."""
    target = data.get("target")
    roles = prep.get("column_roles") or {}
    excluded = {**(data.get("excluded_columns") or {}), **(prep.get("excluded_columns") or {})}
    features = set(prep.get("feature_columns") or data.get("feature_columns") or [])
    rows = []
    for column in data.get("columns") or []:
        name, reason = column.get("name"), column.get("reason") or ""
        if name == target:
            role = "target"
        elif name in excluded:
            role, reason = column.get("role") or "excluded", excluded[name]
        else:
            role = roles.get(name) or column.get("role") or (column.get("dtype") if name in features else "excluded")
        rows.append({"name": name, "role": role, "reason": reason, "missing": column.get("missing")})
    return rows


def dropped_rows(data: dict[str, Any], prep: dict[str, Any]) -> dict[str, int]:
    """Rows left out of training by reason (ValidateData's and Preprocess's), nonzero counts only."""
    counts = {**(data.get("dropped_rows") or {}), **(prep.get("dropped_rows_by_reason") or {})}
    if not counts and prep.get("dropped_rows"):
        counts["dropped by Preprocess"] = prep["dropped_rows"]
    return {str(reason): int(count) for reason, count in counts.items() if count}


def columns_line(columns: list[dict[str, Any]]) -> str:
    """``7 used: a numeric, b text; excluded: id (identifier: every value distinct)``; the target apart."""
    used = [c for c in columns if c["role"] not in ("target", "excluded", "identifier", "constant")]
    left_out = [c for c in columns if c["role"] in ("excluded", "identifier", "constant")]
    text = f"{len(used)} used: " + (", ".join(f"{c['name']} {c['role']}" for c in used) or "none")
    if left_out:
        reasons = [f"{c['name']} ({c['role']}: {c['reason']})" if c["reason"] else f"{c['name']} ({c['role']})"
                   for c in left_out]  # fmt: skip
        text += "; excluded: " + ", ".join(reasons)
    return text


def state_json(visit: StateVisit) -> dict[str, Any]:
    """One entry of ``states[]``: a Reuse* state is ``cached`` (with the run and the step it stands for)."""
    state: dict[str, Any] = {
        "name": visit.name,
        "type": visit.kind,
        "seconds": visit.seconds,
        "retries": visit.retries,
        "errors": visit.errors,
        "cached": visit.reused_step is not None,
    }
    if visit.reused_step:
        state.update(cached_from=visit.cached_from, step=visit.reused_step)
    return state


def reused_line(reused_steps: dict[str, str]) -> str:
    """``Preprocess, Train from run-a; Evaluate from run-b``: the reused steps grouped by the run they came from."""
    by_run: dict[str, list[str]] = {}
    for step, run in reused_steps.items():
        by_run.setdefault(run, []).append(step)
    return "; ".join(f"{', '.join(steps)} from {run}" for run, steps in by_run.items())


def approval_of(registration: dict[str, Any], reader: HistoryReader) -> dict[str, Any] | None:
    """The run's approval as ``--json`` gives it: Register's record of the decision, or, for a run that ended
    while it waited (failed, stopped), the request it left pending; None for a run that asked for none."""
    decided = registration.get("approval")
    if isinstance(decided, dict):
        return {**decided, "version": registration.get("version")}
    requests = [v.approval_request for v in reader.visits if v.approval_request is not None]
    if not requests:
        return None
    request = requests[-1]
    return {"status": "pending", "version": request.get("version"), "deadline": request.get("deadline")}


def approval_line(approval: dict[str, Any]) -> str:
    """One line on the run's approval: who decided what and when, or that nobody did in time."""
    status = approval.get("status")
    if status == "pending":
        return f"pending: v{approval.get('version')} was left waiting (until {approval.get('deadline')})"
    if approval.get("timed_out"):
        return f"rejected: nobody approved or rejected it by {approval.get('deadline')} (timed out)"
    who = approval.get("decided_by") or "someone who did not say who"
    reason = f": {approval['reason']}" if approval.get("reason") else ""
    return f"{status} by {who} at {approval.get('decided_at')}{reason}"


def outcome_of(description: dict[str, Any], reader: HistoryReader) -> RunOutcome:
    """Summarise a finished execution from its description and history."""
    stop, start = description.get("stopDate"), description["startDate"]
    outcome = RunOutcome(
        execution_arn=description["executionArn"],
        status=description["status"],
        duration_seconds=(stop - start).total_seconds() if stop else 0.0,
        states=[state_json(v) for v in reader.visits],
        reused_steps={v.reused_step: v.cached_from or "?" for v in reader.visits if v.reused_step},
    )
    output = json.loads(description.get("output") or "{}") if description["status"] == "SUCCEEDED" else {}
    outcome.approval = approval_of(output.get("registration") or {}, reader)
    if description["status"] != "SUCCEEDED":
        details = failure_details(reader, description)
        outcome.error, outcome.cause, outcome.failed_state = (
            details["error"],
            details["cause"],
            details.get("state"),
        )
        # a run whose deployment was rolled back registered its version before it failed
        _registered(outcome, details.get("registration") or {})
        return outcome
    registration = output.get("registration", {})
    evaluation = output.get("evaluation", {})
    data = output.get("data", {})
    _registered(outcome, registration)
    outcome.reused_version = bool(registration.get("reused_version"))
    outcome.model_artifact = registration.get("model_artifact") or output.get("training", {}).get("ModelArtifacts")
    outcome.metrics = evaluation.get("metrics", {})
    outcome.evaluation_uri = evaluation.get("evaluation_uri")
    outcome.report_uri = evaluation.get("report_uri")
    # Register's reason once a person decided (or nobody did in time); else the gate's
    outcome.gate_reason = registration.get("gate_reason") or evaluation.get("reason")
    outcome.model_choice = evaluation.get("model_choice")
    outcome.trainer_notes = list(evaluation.get("trainer_notes") or [])
    outcome.problem_type = data.get("problem_type")
    outcome.tuning = output.get("tuning")
    outcome.columns = column_roles(data, output.get("prep") or {})
    outcome.dropped_rows = dropped_rows(data, output.get("prep") or {})
    if data:
        outcome.problem_type_note = (
            f"target '{data.get('target')}' ({data.get('target_chosen_by')}), "
            f"{data.get('problem_type')} ({data.get('problem_type_chosen_by')}: {data.get('problem_type_reason')})"
        )
    return outcome


def _registered(outcome: RunOutcome, registration: dict[str, Any]) -> None:
    outcome.model_name = registration.get("model_name")
    outcome.model_version = registration.get("version")
    outcome.registry_status = registration.get("status")
    outcome.endpoint_name = registration.get("endpoint_name")
    outcome.rollout = registration.get("rollout")


def rollout_line(rollout: dict[str, Any]) -> str:
    """``canary completed: ...``, ``canary rolled back: alarm X in ALARM at T`` (the reason too when it says
    something else: a rollback without an alarm, or SageMaker's own words)."""
    strategy = rollout.get("strategy") or "all at once (no rollout)"
    reason = str(rollout.get("reason") or "")
    if rollout.get("outcome") != "rolled_back":
        return f"{strategy} completed: {reason}"
    alarm = rollout.get("alarm")
    if not alarm:
        return f"{strategy} rolled back: {reason}"
    line = f"{strategy} rolled back: alarm {alarm} in ALARM at {rollout.get('alarm_at')}"
    return line if alarm in reason else f"{line}; {reason}"


def start_and_follow(
    sfn: Any,
    state_machine_arn: str,
    name: str,
    execution_input: dict[str, Any],
    out: TextIO | None,
    on_started: Callable[[str], None] | None = None,
    poll_seconds: float = 0.2,
    notices: TextIO | None = None,
    target_flags: str = "",
) -> tuple[RunOutcome, dict[str, Any]]:
    """Start an execution, report its states live, and return its outcome and description.

    ``on_started`` is called with the execution's ARN once it runs (before following it); DescribeExecution
    is polled every ``poll_seconds``. A wait for approval is announced on ``out``, else on ``notices``
    (``progress.follow``).
    """
    arn = start_execution(sfn, state_machine_arn, name, execution_input)
    if out:
        print(f"Started {arn}", file=out, flush=True)
    if on_started:
        on_started(arn)
    description, reader = follow(sfn, arn, out, poll_seconds=poll_seconds, notices=notices, target_flags=target_flags)
    return outcome_of(description, reader), description


def tuning_note(tuning: dict[str, Any]) -> str:
    """One line on a tuning job: which training job won, with what score and hyperparameters, of how many."""
    counters = tuning.get("TrainingJobStatusCounters", {})
    objective = tuning.get("Objective", {})
    score = float(objective.get("Value", float("nan")))
    tuned = ", ".join(f"{k}={v}" for k, v in sorted(tuning.get("TunedHyperParameters", {}).items()))
    failed = sum(v for k, v in counters.items() if k != "Completed")
    jobs = f"best of {sum(counters.values())} training jobs ({failed} not completed)"
    return f"{jobs}: {tuning.get('BestTrainingJobName')}, {objective.get('MetricName')} {score:.4f} with {tuned}"


def print_summary(outcome: RunOutcome, out: TextIO) -> None:
    """The human summary at the end of a run."""
    print("", file=out)
    print(f"Execution   {outcome.status} in {outcome.duration_seconds:.1f} s", file=out)
    print(f"            {outcome.execution_arn}", file=out)
    if outcome.reused_steps:
        print(f"Reused      {reused_line(outcome.reused_steps)}", file=out)
    if outcome.approval:
        print(f"Approval    {approval_line(outcome.approval)}", file=out)
    if outcome.status != "SUCCEEDED":
        print(f"Failed in   {outcome.failed_state or '?'}", file=out)
        print(f"Error       {outcome.error}", file=out)
        print(f"Cause       {outcome.cause}", file=out)
        if outcome.model_version:
            print(f"Model       {outcome.model_name} v{outcome.model_version} ({outcome.registry_status})", file=out)
        if outcome.rollout:
            print(f"Rollout     {rollout_line(outcome.rollout)}", file=out)
        return
    if outcome.problem_type_note:
        print(f"Problem     {outcome.problem_type_note}", file=out)
    if outcome.tuning:
        print(f"Tuning      {tuning_note(outcome.tuning)}", file=out)
    if outcome.columns:
        print(f"Columns     {columns_line(outcome.columns)}", file=out)
    dropped = ", ".join(f"{reason} {count}" for reason, count in outcome.dropped_rows.items())
    print(f"Dropped     {sum(outcome.dropped_rows.values())} rows" + (f": {dropped}" if dropped else ""), file=out)
    status = outcome.registry_status or "?"
    existing = ", the version this training job already had" if outcome.reused_version else ""
    print(f"Model       {outcome.model_name} v{outcome.model_version} ({status}{existing})", file=out)
    if outcome.rollout:
        print(f"Rollout     {rollout_line(outcome.rollout)}", file=out)
    if outcome.model_choice:
        print(f"Trainer     {outcome.model_choice}", file=out)
    for note in outcome.trainer_notes:
        print(f"Note        {note}", file=out)
    if outcome.gate_reason:
        print(f"Gate        {outcome.gate_reason}", file=out)
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(outcome.metrics.items()))
    print(f"Metrics     {metrics}", file=out)
    print(f"Artifact    {outcome.model_artifact}", file=out)
    not_deployed = "(not deployed: the model did not pass the gate)"
    if outcome.approval and outcome.approval.get("status") == "rejected":
        not_deployed = "(not deployed: the model was not approved)"
    print(f"Endpoint    {outcome.endpoint_name or not_deployed}", file=out)
    print(f"Report      {outcome.report_uri}", file=out)
    if outcome.report_path:
        print(f"            open {outcome.report_path}", file=out)
