"""Every Retry and every Catch of the definition, driven by injected faults on the embedded target.

The paths come from ``statemachine/pipeline.asl.json`` itself, so a Task added without Retry, Catch or
TimeoutSeconds fails the first tests, and a Retry entry added later gets its own injected fault here.
Whether a path was exercised is read back from the executions' histories (a failed attempt followed by
another attempt; a last failed attempt followed by the Catch's Next state), not from what was injected.

Runs are grouped to keep the wall time down: one execution carries one fault per state (every Task on
its path retried once, then succeeding), and independent executions run side by side in one embedded
AWS. Phase B needs what phase A left: an endpoint to update, a champion to roll back to. Its rollout runs
update with a canary (PrepareRollout, UpdateEndpointWithRollout) and have the test set the endpoint's 5XX
alarm to ALARM while the canary takes traffic, so the stand-in rolls the update back (RegisterRolledBack).

Not reachable on the embedded target: ``EndpointDeployFailed``: the SageMaker stand-in's endpoints never end
Failed. It is not a Task, so no Retry or Catch path is lost. (``WaitForEndpoint`` is: an endpoint rolling
out is Updating until its canary and baking are over or an alarm rolls it back.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pipeline_core.models import MAX_APPROVAL_TIMEOUT_SECONDS
from pipeline_core.standin.errors import TrainingJobInProgress

from tests.integration.harness import IRIS, REJECTED_MODEL, Finished, Harness, Job, embedded_harness, load_asl

pytestmark = pytest.mark.slow

ASL = load_asl()
STATES: dict[str, Any] = ASL["States"]
ALL_TASKS: dict[str, Any] = {name: state for name, state in STATES.items() if state["Type"] == "Task"}
# The sharded validation's and sharded Preprocess's tasks run only for a CSV over ShardThresholdBytes
# (docs/data-scale.md), never for this campaign's small datasets: their Retry, Catch and timeout are checked for
# shape below (ALL_TASKS) and the path itself in test_sharded_validation.py.
SHARDED_ONLY = {"SplitDataset", "MergeProfiles", "PlanSplit", "WriteSplits"}
TASKS: dict[str, Any] = {name: state for name, state in ALL_TASKS.items() if name not in SHARDED_ONLY}
# Matched by no Retry (only by the Catch's States.ALL): what a permanent failure looks like.
PERMANENT = "InjectedPermanentError"
# Step Functions names every SNS error "SNS.<Code>Exception": a topic that is gone is permanent.
PERMANENT_SNS = "SNS.NotFoundException"
# ValidateInput accepts thresholds up to 1.0 (a metric cannot exceed it); the data and seed here give
# f1_macro 0.93 on iris, so 1.0 sends the model to RegisterRejected.

CREATE_PATH = [
    "ValidateInput",
    "Ingest",
    "ChooseValidationPath",
    "ValidateData",
    "UseModelIdentity",
    # the step cache's states around each cached step; the harness turns the cache off, so each misses
    "LookupPreprocess",
    "PreprocessCached",
    "ChoosePreprocessPath",
    "Preprocess",
    "RememberPreprocess",
    "TrainerDefaults",
    "PrepareTrainingJob",
    "LookupTraining",
    "TrainingCached",
    "TuneOrTrain",
    "Train",
    "RememberTraining",
    "LookupEvaluation",
    "EvaluationCached",
    "Evaluate",
    "RememberEvaluation",
    "QualityGate",
    "CreateModel",
    "CreateEndpointConfig",
    "AcquireDeployLease",
    "GateUnderLease",
    "StillPassesGate",
    "FindEndpoint",
    "CreateOrUpdateEndpoint",
    "CreateEndpoint",
    "DescribeEndpoint",
    "EndpointReady",
    "Register",
    "Notify",
    "Succeeded",
]
UPDATE_PATH = [("UpdateEndpoint" if s == "CreateEndpoint" else s) for s in CREATE_PATH]
# An update with a rollout (the endpoint-wait loop's WaitForEndpoint visits left out: see without_waits)
ROLLOUT_STATES = ["PrepareRollout", "UpdateEndpointWithRollout"]
ROLLOUT_PATH = [t for s in UPDATE_PATH for t in (ROLLOUT_STATES if s == "UpdateEndpoint" else [s])]
# ... that an alarm rolled back: the version is registered as rolled_back and the run fails
ROLLED_BACK_PATH = [
    *ROLLOUT_PATH[: ROLLOUT_PATH.index("EndpointReady") + 1],
    "RegisterRolledBack",
    "DeploymentRolledBack",
    "RecordFailure",
    "NotifyFailure",
    "Failed",
]
# A canary long enough for the test to trip the alarm while it takes traffic (the rollback ends it then).
SLOW_CANARY = {"rollout": {"strategy": "canary", "wait_seconds": 600, "baking_seconds": 0}, "endpoint_poll_seconds": 1}
QUICK_CANARY = {"rollout": {"strategy": "canary", "wait_seconds": 1, "baking_seconds": 0}, "endpoint_poll_seconds": 1}
# A run with tuning on: one training job keeps it cheap, and a range with no degenerate setting keeps its
# model above the threshold (the built-in min_samples_leaf reaches 50, a whole class of iris's train split).
TUNING = {"tuning": {"max_trials": 1, "max_parallel": 1, "ranges": {"learning_rate": {"min": 0.05, "max": 0.2}}}}
TUNE_STATES = ["Tune", "DescribeBestTrainingJob"]
TUNE_PATH = [t for s in CREATE_PATH for t in (TUNE_STATES if s == "Train" else [s])]
REJECTED_PATH = [*CREATE_PATH[: CREATE_PATH.index("QualityGate") + 1], "RegisterRejected", "Notify", "Succeeded"]
# approval "manual" and nobody decided: RequestApproval times out, its Catch registers the model rejected
APPROVAL = {"approval": "manual", "approval_timeout_seconds": 10}
APPROVAL_STATES = ["RequestApproval"]
APPROVAL_TIMEOUT_PATH = [*CREATE_PATH[: CREATE_PATH.index("QualityGate") + 1], *APPROVAL_STATES]
APPROVAL_TIMEOUT_PATH += ["RegisterRejected", "Notify", "Succeeded"]
# approval "manual", approved: on to CreateModel and the deployment
APPROVED_PATH = [t for s in CREATE_PATH for t in ([s, *APPROVAL_STATES] if s == "QualityGate" else [s])]
# passed QualityGate, then a better champion was registered before it held the deploy lease
SUPERSEDED_PATH = [*CREATE_PATH[: CREATE_PATH.index("StillPassesGate") + 1], "RegisterRejected", "Notify", "Succeeded"]
FAILURE_TASKS = ["RecordFailure", "NotifyFailure"]
# Order of the states on the create path: later states have more input pointers.
ORDER = {name: i for i, name in enumerate(CREATE_PATH)}
ORDER.update({name: ORDER["Train"] for name in TUNE_STATES})  # in place of Train: no model yet if they fail
# The states that wait for a decision: their timeout comes from the input (TimeoutSecondsPath), at most this.
TIMEOUT_FROM_INPUT = {"$.config.approval_timeout_seconds": MAX_APPROVAL_TIMEOUT_SECONDS}


def without_waits(path: list[str]) -> list[str]:
    """``path`` with the endpoint-wait loop's extra rounds left out: each WaitForEndpoint and the DescribeEndpoint
    and EndpointReady visits it led to (how often an endpoint is polled is timing, not the path)."""
    kept: list[str] = []
    skip = 0
    for state in path:
        if state == "WaitForEndpoint":
            skip = 2
        elif skip and state in ("DescribeEndpoint", "EndpointReady"):
            skip -= 1
        else:
            kept.append(state)
    return kept


def permanent_error(state: str) -> str:
    """The permanent error injected at ``state`` (SNS publishes can only fail with SNS names)."""
    return PERMANENT_SNS if ":::sns:" in TASKS[state]["Resource"] else PERMANENT


def _tasks_on(path: list[str]) -> list[str]:
    return [s for s in path if s in TASKS]


def retry_paths() -> list[tuple[str, int]]:
    return [(name, i) for name, state in TASKS.items() for i in range(len(state.get("Retry", [])))]


def catch_paths() -> list[tuple[str, int]]:
    return [(name, i) for name, state in TASKS.items() for i in range(len(state.get("Catch", [])))]


def _first_error(state: str, index: int) -> str:
    return str(TASKS[state]["Retry"][index]["ErrorEquals"][0])


def _matching_retrier(retriers: list[dict[str, Any]], error: str) -> int | None:
    """The Retry entry Step Functions uses for ``error``: the first whose ErrorEquals matches it."""
    for index, retrier in enumerate(retriers):
        names = retrier["ErrorEquals"]
        if error in names or "States.ALL" in names or ("States.TaskFailed" in names and error != "States.Timeout"):
            return index
    return None


def _matching_catcher(catchers: list[dict[str, Any]], error: str) -> int | None:
    return _matching_retrier(catchers, error)


def exercised(runs: list[Finished]) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
    """Retry and Catch paths the runs' histories show taken.

    A Retry entry is taken when an attempt failed with an error it matches and another attempt followed;
    a Catch when the state's last attempt failed and the next state entered is that Catch's Next.
    """
    retried: set[tuple[str, int]] = set()
    caught: set[tuple[str, int]] = set()
    for run in runs:
        for position, visit in enumerate(run.visits):
            state = TASKS.get(visit.name)
            if state is None:
                continue
            for error in visit.errors[: max(0, visit.attempts - 1)]:
                index = _matching_retrier(state.get("Retry", []), error)
                if index is not None:
                    retried.add((visit.name, index))
            following = run.visits[position + 1].name if position + 1 < len(run.visits) else None
            if visit.errors and len(visit.errors) == visit.attempts:
                index = _matching_catcher(state.get("Catch", []), visit.errors[-1])
                if index is not None and following == state["Catch"][index]["Next"]:
                    caught.add((visit.name, index))
    return retried, caught


# ------------------------------------------------------------------------------------------ definition


def _timeout(state: dict[str, Any]) -> int:
    """A task's timeout: its TimeoutSeconds, or the most its TimeoutSecondsPath can hold."""
    return int(state.get("TimeoutSeconds") or TIMEOUT_FROM_INPUT[state["TimeoutSecondsPath"]])


def test_every_task_has_retry_catch_and_timeout() -> None:
    missing = [
        f"{name}: no {what}"
        for name, state in ALL_TASKS.items()
        for what in ("Retry", "Catch", "TimeoutSeconds")
        if not state.get(what) and not (what == "TimeoutSeconds" and state.get("TimeoutSecondsPath"))
    ]
    assert not missing, missing
    assert len(ALL_TASKS) >= 15  # the parse found the pipeline's tasks, not an empty definition
    assert [n for n, s in ALL_TASKS.items() if "TimeoutSecondsPath" in s] == ["RequestApproval"]


def test_execution_has_a_timeout_above_every_task_timeout() -> None:
    assert ASL.get("TimeoutSeconds", 0) > 0
    assert ASL["TimeoutSeconds"] > max(_timeout(state) for state in ALL_TASKS.values())


def test_retriers_back_off_with_jitter_and_skip_permanent_errors() -> None:
    permanent = {"InputValidationError", "DataValidationError", "DatasetNotFoundError", "ConfigurationError"}
    # a retrier on work still running waits for it again at a steady pace (tests/unit/test_standin_training_runner.py)
    waiting = {TrainingJobInProgress.__name__}
    for name, state in ALL_TASKS.items():
        for retrier in state["Retry"]:
            where = f"{name} Retry {retrier['ErrorEquals']}"
            if set(retrier["ErrorEquals"]) <= waiting:
                assert retrier["IntervalSeconds"] >= 1 and retrier["BackoffRate"] == 1.0, where
                continue
            assert retrier["IntervalSeconds"] >= 1, where
            assert retrier["BackoffRate"] > 1, where
            assert retrier.get("MaxDelaySeconds"), where
            assert retrier.get("JitterStrategy") == "FULL", where
            assert not permanent & set(retrier["ErrorEquals"]), where
            assert not {"States.ALL", "States.TaskFailed"} & set(retrier["ErrorEquals"]), where


def test_every_catch_leads_to_the_failure_record_and_a_fail_state() -> None:
    for name, state in ALL_TASKS.items():
        catchers = state["Catch"]
        if name == "RequestApproval":
            # a rejection or a timeout is a decision, not a failure: the model is registered rejected
            decided, *catchers = catchers
            assert decided["ErrorEquals"] == ["ModelRejected", "States.Timeout"]
            assert decided["Next"] == "RegisterRejected" and decided["ResultPath"] == "$.evaluation.approval"
        [catcher] = catchers
        assert catcher["ErrorEquals"] == ["States.ALL"], name
        target = catcher["Next"]
        if name == "Notify":
            assert target == "Succeeded"
        elif name == "RecordFailure":
            assert target == "NotifyFailure"
        elif name == "NotifyFailure":
            assert STATES[target]["Type"] == "Fail"
        elif name.startswith("Remember"):
            # a step cache entry not stored costs a later run a miss, never this run its result
            assert target == state["Next"] and catcher["ResultPath"].startswith("$.cache_errors."), name
        else:
            assert target == f"{name}Failed" and STATES[target]["Next"] == "RecordFailure", name
    assert STATES["RecordFailure"]["Next"] == "NotifyFailure"
    assert STATES[STATES["NotifyFailure"]["Next"]]["Type"] == "Fail"


# ------------------------------------------------------------------------------------------ the campaign


@dataclass
class Campaign:
    """Every execution run for this module, and which path each one was meant to drive."""

    harness: Harness
    runs: dict[str, Finished] = field(default_factory=dict)
    retry_run: dict[tuple[str, int], str] = field(default_factory=dict)
    catch_run: dict[str, str] = field(default_factory=dict)
    kind: dict[str, str] = field(default_factory=dict)  # run name -> create|update|rejected|rolled-back|catch
    exhausted_run: str = ""
    champion: dict[str, str] = field(default_factory=dict)  # phase-B catch run -> champion run


def _slug(state: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", state).lower()


def _job(h: Harness, name: str, model: str, faults: list[str], **extra: Any) -> Job:
    dataset = h.upload(f"datasets/{name}/iris.csv", IRIS)
    return Job(name, {"dataset": dataset, "model_name": model, **extra}, tuple(faults))


def _plan_retries(
    campaign: Campaign, path: list[str], kind: str, prefix: str, models: list[str] | None = None
) -> list[tuple[str, str, list[str]]]:
    """Runs along ``path`` that together take every Retry entry of its tasks not planned yet, once each."""
    pending: dict[str, list[int]] = {
        s: [i for i in range(len(TASKS[s]["Retry"])) if (s, i) not in campaign.retry_run] for s in _tasks_on(path)
    }
    planned = []
    for k in range(max((len(v) for v in pending.values()), default=0)):
        name = f"{prefix}-{k}"
        model = models[k] if models else name
        faults = []
        for state, indexes in pending.items():
            if k < len(indexes):
                faults.append(f"{state}={_first_error(state, indexes[k])}:1")
                campaign.retry_run[(state, indexes[k])] = name
        campaign.kind[name] = kind
        planned.append((name, model, faults))
    return planned


def _expected_length(job: Job) -> int:
    """How far a job is expected to get: where its permanent fault is, or the whole way."""
    stops = [f.split("=")[0] for f in job.faults if f.split("=")[1].startswith((PERMANENT, PERMANENT_SNS))]
    stops = ["Ingest" if s in FAILURE_TASKS else s for s in stops]
    return min((ORDER.get(s, len(ORDER)) for s in stops), default=len(ORDER) + 1)


def _run_campaign(h: Harness) -> Campaign:
    campaign = Campaign(h)
    phase_a: list[Job] = []

    # Retry: runs that deploy a new model (every create-path task retried once), rejected models.
    creates = _plan_retries(campaign, CREATE_PATH, "create", "retry-create")
    phase_a += [_job(h, name, model, faults) for name, model, faults in creates]
    for name, model, faults in _plan_retries(campaign, REJECTED_PATH, "rejected", "retry-rejected"):
        phase_a.append(_job(h, name, model, faults, **REJECTED_MODEL))
    tunes = _plan_retries(campaign, TUNE_PATH, "tune", "retry-tune")
    phase_a += [_job(h, name, model, faults, **TUNING) for name, model, faults in tunes]
    # RequestApproval's retries (its only ones left): nobody decides, so its Catch of the timeout is taken too
    for name, model, faults in _plan_retries(campaign, APPROVAL_TIMEOUT_PATH, "approval-timeout", "retry-approval"):
        phase_a.append(_job(h, name, model, faults, **APPROVAL))

    # Catch: one run per Task that fails there for good (phase B ones need an earlier model).
    # RecordFailure and NotifyFailure run only in failing runs: early catch runs take their Retry entries.
    failure_retries = [(state, i) for state in FAILURE_TASKS for i in range(len(TASKS[state]["Retry"]))]
    hosts = ["Ingest", "ValidateData", "Preprocess", "Train", "Evaluate"]
    catch_jobs: dict[str, Job] = {}
    phase_b_states = {"UpdateEndpoint", "DescribeEndpoint", *ROLLOUT_STATES, "RegisterRolledBack"}
    for state in TASKS:
        name = f"catch-{_slug(state)}"
        campaign.catch_run[state] = name
        campaign.kind[name] = "catch"
        if state in phase_b_states:
            continue
        extra: dict[str, Any] = {}
        if state == "RegisterRejected":
            extra.update(REJECTED_MODEL)
        if state in TUNE_STATES:
            extra.update(TUNING)
        if state == "RequestApproval":
            extra.update(APPROVAL)
        faults = [f"{state}={permanent_error(state)}:1"]
        if state in FAILURE_TASKS:
            # the handlers run only after another state failed: make Ingest fail too. NotifyFailure's message
            # is $.failure, and the gateway matches an SNS publish to its execution by message only, so the
            # run whose NotifyFailure fails gets a cause of its own (":before" is the default WHEN, spelt out):
            # with the same cause as catch-ingest's or catch-record-failure's, a publish of theirs at the same
            # moment could take its fault.
            faults.append(f"Ingest={PERMANENT}:1" + (":before" if state == "NotifyFailure" else ""))
        elif state in hosts and failure_retries:
            handler, index = failure_retries.pop(0)
            faults.append(f"{handler}={_first_error(handler, index)}:1")
            campaign.retry_run[(handler, index)] = name
            campaign.kind[name] = "catch+failure-retry"
        catch_jobs[state] = _job(h, name, name, faults, **extra)
    assert not failure_retries, f"failure-handler Retry entries left without a run: {failure_retries}"
    phase_a += list(catch_jobs.values())

    # A Retry that runs out ends in the Catch: the entry with the fewest attempts, failed once more.
    state, index = (
        "ValidateData",
        min(range(len(TASKS["ValidateData"]["Retry"])), key=lambda i: TASKS["ValidateData"]["Retry"][i]["MaxAttempts"]),
    )
    attempts = TASKS[state]["Retry"][index]["MaxAttempts"] + 1
    campaign.exhausted_run = "exhausted-retry"
    phase_a.append(_job(h, "exhausted-retry", "exhausted-retry", [f"{state}={_first_error(state, index)}:{attempts}"]))

    # Full runs first: the short failing ones fill the gaps.
    phase_a.sort(key=_expected_length, reverse=True)
    campaign.runs.update(h.run_all(phase_a))

    # Phase B: update runs of the models the create runs deployed, and failures after an update. Rollouts that
    # an alarm rolls back (the test trips it) take the Retry entries of the rollout's states.
    phase_b: list[Job] = []
    models = [m for _, m, _ in creates]
    updates = _plan_retries(campaign, UPDATE_PATH, "update", "retry-update", models)
    phase_b += [_job(h, name, model, faults) for name, model, faults in updates]
    # on the tuned models' endpoints: the update runs' versions of the created models stay v2
    rolled_back = _plan_retries(
        campaign, ROLLED_BACK_PATH, "rolled-back", "retry-rolled-back", [m for _, m, _ in tunes]
    )
    phase_b += [_job(h, name, model, faults, **SLOW_CANARY) for name, model, faults in rolled_back]
    tripped = [(name, model) for name, model, _ in rolled_back]
    champion = campaign.catch_run["Notify"]  # SUCCEEDED: an approved v1 with an endpoint
    for state in sorted(phase_b_states):
        name = campaign.catch_run[state]
        campaign.champion[name] = champion
        extra = SLOW_CANARY if state == "RegisterRolledBack" else QUICK_CANARY if state in ROLLOUT_STATES else {}
        if state == "RegisterRolledBack":
            tripped.append((name, champion))
        phase_b.append(_job(h, name, champion, [f"{state}={PERMANENT}:1"], **extra))
    trips = [
        h.trip_alarm_during_rollout(h.endpoint_name(model), f"{h.endpoint_name(model)}-5xx-errors", name)
        for name, model in tripped
    ]
    campaign.runs.update(h.run_all(phase_b))
    for trip in trips:
        trip.result(timeout=5)  # every rollback was the test's doing
    return campaign


@pytest.fixture(scope="module")
def campaign(state_dir: Path) -> Iterator[Campaign]:
    for harness in embedded_harness():
        yield _run_campaign(harness)


# ------------------------------------------------------------------------------------------ Retry


@pytest.mark.parametrize(("state", "index"), retry_paths(), ids=[f"{s}-{i}" for s, i in retry_paths()])
def test_retry_entry_retries_then_succeeds(campaign: Campaign, state: str, index: int) -> None:
    name = campaign.retry_run.get((state, index))
    assert name, f"no run planned for {state} Retry[{index}]"
    run = campaign.runs[name]
    visit = run.visit(state)
    kind = campaign.kind[name]
    assert visit.retries == 1, run.describe()
    # the retried attempt of a run nobody approves ends in the approval's timeout
    timed_out = ["States.Timeout"] if kind == "approval-timeout" and state == "RequestApproval" else []
    assert visit.errors == [_first_error(state, index), *timed_out], run.describe()
    assert run.next_after(state) != f"{state}Failed", run.describe()
    model = run.job.execution_input["model_name"]
    if kind == "rolled-back":
        # the execution ends as a rollback does: the version registered as rolled_back, the run failed
        assert run.status == "FAILED" and run.outcome.error == "DeploymentRolledBack", run.describe()
        assert without_waits(run.path) == ROLLED_BACK_PATH, run.describe()
        [registered] = [v for v in campaign.harness.model_versions(model) if v.execution_arn == run.arn]
        assert registered.status == "rolled_back" and registered.rollout and registered.rollout.alarm
        return
    if kind in {"create", "update", "rejected", "tune", "approval-timeout"}:
        # the execution ends as it would have without the fault
        expected = {
            "create": CREATE_PATH,
            "update": UPDATE_PATH,
            "rejected": REJECTED_PATH,
            "tune": TUNE_PATH,
            "approval-timeout": APPROVAL_TIMEOUT_PATH,
        }[kind]
        assert run.status == "SUCCEEDED" and run.path == expected, run.describe()
        [registered] = [v for v in campaign.harness.model_versions(model) if v.execution_arn == run.arn]
        assert registered.status == ("rejected" if kind in {"rejected", "approval-timeout"} else "approved")
        assert registered.version == (2 if kind == "update" else 1)
        if kind == "approval-timeout":
            assert registered.approval is not None and registered.approval.timed_out
    else:
        assert kind == "catch+failure-retry", kind
        # a failure handler retried: the failure is still recorded and the run still fails
        assert run.status == "FAILED", run.describe()
        record = campaign.harness.run_record(name)
        assert record and record["status"] == "FAILED" and record["failed_state"] == run.outcome.failed_state


def test_exhausted_retry_ends_in_the_catch(campaign: Campaign) -> None:
    run = campaign.runs[campaign.exhausted_run]
    [spec] = run.job.faults
    state, rest = spec.split("=")
    error = rest.split(":")[0]
    retrier = TASKS[state]["Retry"][_matching_retrier(TASKS[state]["Retry"], error) or 0]
    visit = run.visit(state)
    assert visit.attempts == retrier["MaxAttempts"] + 1, run.describe()
    assert visit.errors == [error] * visit.attempts
    assert run.next_after(state) == f"{state}Failed"
    assert run.status == "FAILED" and run.outcome.failed_state == state and run.outcome.error == error
    record = campaign.harness.run_record(run.job.name)
    assert record and record["status"] == "FAILED" and record["error"] == error


# ------------------------------------------------------------------------------------------ Catch


def _pointers_expected(state: str) -> set[str]:
    """Input pointers a run failing in ``state`` must have on its record (more as it got further)."""
    expected = {"dataset"}
    reached = ORDER.get(state, ORDER["Register"])
    for after, keys in (
        ("Ingest", {"raw_uri", "dataset_sha256"}),
        ("Preprocess", {"train_uri", "validation_uri", "test_uri"}),
        ("Train", {"model_artifact"}),
        ("Evaluate", {"evaluation_uri", "report_uri"}),
    ):
        if reached > ORDER[after]:
            expected |= keys
    return expected


def _published_messages(h: Harness, execution_arn: str) -> list[str]:
    """The Message of every SNS publish the execution scheduled, as Step Functions resolved it."""
    events = h.sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
    scheduled = [e["taskScheduledEventDetails"] for e in events if "taskScheduledEventDetails" in e]
    return [json.loads(d["parameters"])["Message"] for d in scheduled if d["resourceType"] == "sns"]


@pytest.mark.parametrize("state", list(TASKS))
def test_catch_records_the_failure(campaign: Campaign, state: str) -> None:
    h = campaign.harness
    name = campaign.catch_run[state]
    run = campaign.runs[name]
    model = run.job.execution_input["model_name"]
    visit = run.visit(state)
    # a permanent error: caught at once, no retry
    assert visit.errors == [permanent_error(state)] and visit.retries == 0, run.describe()
    catcher = _matching_catcher(TASKS[state]["Catch"], permanent_error(state))
    assert catcher is not None and run.next_after(state) == TASKS[state]["Catch"][catcher]["Next"], run.describe()
    record = h.run_record(name)
    own_versions = [v for v in h.model_versions(model) if v.execution_arn == run.arn]

    if state == "Notify":
        # a failed notification does not fail a run whose model is registered
        assert run.status == "SUCCEEDED" and run.path == CREATE_PATH, run.describe()
        assert [v.status for v in own_versions] == ["approved"]
        assert record and record["status"] == "SUCCEEDED"
        assert "notify_error" in json.loads(run.description["output"])
        return
    if state.startswith("Remember"):
        # the step's result was not stored in the step cache: the run goes on and deploys all the same
        assert run.status == "SUCCEEDED" and run.path == CREATE_PATH, run.describe()
        assert [v.status for v in own_versions] == ["approved"]
        assert record and record["status"] == "SUCCEEDED"
        assert set(json.loads(run.description["output"])["cache_errors"]) == {state.removeprefix("Remember").lower()}
        return

    assert run.status == "FAILED", run.describe()
    if state in FAILURE_TASKS:
        # the handlers fail only after another state did: the run reports that state's failure
        assert run.outcome.failed_state == "Ingest" and run.outcome.error == PERMANENT, run.describe()
        assert run.path[-1] == "Failed"
        if state == "RecordFailure":
            assert "record_failure_error" in run.output_of("RecordFailure")
            assert run.visit("NotifyFailure").errors == [], "the notification still goes out"
        else:
            assert record and record["status"] == "FAILED" and record["failed_state"] == "Ingest"
        assert not own_versions
        return

    assert run.outcome.failed_state == state and run.outcome.error == PERMANENT, run.describe()
    assert record, f"no run record for {name}"
    assert record["status"] == "FAILED" and record["failed_state"] == state and record["error"] == PERMANENT
    assert "fault injected" in record["cause"] and record["execution_arn"] == run.arn
    assert record.get("finished_at") and record.get("failed_at")
    pointers = record["input_pointers"]
    assert pointers["dataset"] == run.job.execution_input["dataset"]
    assert _pointers_expected(state) <= set(pointers), pointers
    assert not own_versions, f"{state}: a failed run registered {own_versions}"
    # the alert says which run failed, where and with what, before the details
    [message] = set(_published_messages(h, run.arn))
    headline, details = message.split(". Details: ", 1)
    assert headline == f"stepml run {name} failed in state {state} with {PERMANENT}"
    assert json.loads(details)["state"] == state and "fault injected" in json.loads(details)["cause"]

    endpoint = h.endpoint(h.endpoint_name(model))
    if name in campaign.champion:
        champion = campaign.runs[campaign.champion[name]]
        [champion_version] = [v for v in h.model_versions(model) if v.execution_arn == champion.arn]
        # the endpoint serves the earlier approved model again (or never stopped serving it)
        assert endpoint and endpoint["EndpointConfigName"] == champion_version.endpoint_config_name, endpoint
        if state == "DescribeEndpoint":
            assert f"rolled back to model v{champion_version.version}" in record["rollback"]
        elif state == "PrepareRollout":
            assert "rollback" not in record  # it failed before the endpoint was touched
        else:
            # UpdateEndpoint(WithRollout) failed before the update; RegisterRolledBack after the guardrail's
            assert "left as it is" in record["rollback"]
    elif state == "Register":
        # deployed, then failed: with no earlier approved model the endpoint is deleted
        assert endpoint is None
        assert "deleted: no earlier approved model" in record["rollback"]
    elif state == "CreateEndpoint":
        assert endpoint is None and "does not exist" in record["rollback"]
    else:
        # failed before any endpoint change: no endpoint, no rollback
        assert endpoint is None and "rollback" not in record
        assert not h.model_versions(model)


# ------------------------------------------------------------------------------------------ coverage


def test_every_retry_and_catch_path_was_exercised(campaign: Campaign, capsys: pytest.CaptureFixture[str]) -> None:
    retried, caught = exercised(list(campaign.runs.values()))
    retries, catches = set(retry_paths()), set(catch_paths())
    summary = (
        f"Retry paths: {len(retries)} exist, {len(retries & retried)} exercised; "
        f"Catch paths: {len(catches)} exist, {len(catches & caught)} exercised "
        f"({len(TASKS)} Task states, {len(campaign.runs)} executions)"
    )
    with capsys.disabled():  # shown in every test report, for the closing note
        print(f"\n{summary}")
    assert retries - retried == set(), f"Retry paths never exercised: {sorted(retries - retried)}"
    assert catches - caught == set(), f"Catch paths never exercised: {sorted(catches - caught)}"
