"""Idempotency end to end on the embedded target, through the real definition.

* A stage retried after its code already ran (``STATE=TransientStoreError:1:after``: the first attempt
  writes everything, then reports failure, as when a Lambda's response is lost) leaves exactly one of each
  effect: one raw copy, one version of every split and artifact, one registry version, one endpoint change.
* A repeated StartExecution with the same name starts one run (Step Functions' idempotency for a running
  execution with the same input); other reuses of the name are refused, by the CLI too, without a traceback.

Which states are checked comes from the definition: every Task with a Retry for TransientStoreError is
either listed with the effects it leaves (``EFFECTS``) or declared read-only, so a new state must be
classified before this module passes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pipeline_core.aws.runs import utc_now

from stepml.cli import main
from stepml.embedded.faults import FaultPlan, Injection, Throw
from stepml.embedded.runtime import wait_until
from tests.integration.conftest import REPO, PipelineRun
from tests.integration.harness import (
    IRIS,
    REJECTED_MODEL,
    WEAK_MODEL,
    Finished,
    Harness,
    Job,
    embedded_harness,
    load_asl,
)
from tests.integration.test_failure_paths import (
    APPROVED_PATH,
    CREATE_PATH,
    REJECTED_PATH,
    ROLLED_BACK_PATH,
    SHARDED_ONLY,
    SLOW_CANARY,
    SUPERSEDED_PATH,
    TUNE_PATH,
    TUNING,
    UPDATE_PATH,
    without_waits,
)

pytestmark = pytest.mark.slow

ASL = load_asl()
# the sharded validation's tasks are not on a small dataset's path (test_failure_paths.SHARDED_ONLY)
TASKS: dict[str, Any] = {
    name: s for name, s in ASL["States"].items() if s["Type"] == "Task" and name not in SHARDED_ONLY
}
ERROR = "TransientStoreError"
RETRIED = sorted(name for name, s in TASKS.items() if any(ERROR in r["ErrorEquals"] for r in s.get("Retry", [])))
# What each state with side effects writes (checked below), and the states that only read.
EFFECTS = {
    "Ingest": "raw copy of the dataset, run record",
    "Preprocess": "train/validation/test splits",
    "Train": "training job record, model.tar.gz, output.tar.gz (SageMaker stand-in)",
    "Tune": "tuning job record; each training job's record, model.tar.gz, output.tar.gz (SageMaker stand-in)",
    "Evaluate": "evaluation.json, report.html",
    "CreateModel": "model record (SageMaker stand-in)",
    "CreateEndpointConfig": "endpoint config record (SageMaker stand-in)",
    "AcquireDeployLease": "the model's deploy lease (its holder takes it again; a superseded run gives it back again)",
    "CreateEndpoint": "endpoint record (SageMaker stand-in)",
    "UpdateEndpoint": "endpoint record: config switched, the old one appended to its history",
    "PrepareRollout": "the endpoint's two rollback alarms (put again as they are), the run record's rollout plan",
    "UpdateEndpointWithRollout": "endpoint record: a blue/green deployment started (a retry finds it under way)",
    "RegisterRolledBack": "registry version (rolled_back), run record",
    "Register": "registry version, run record",
    "RegisterRejected": "registry version (rejected), run record",
    # a retried attempt waits on a new task token: the version must hold that one, not the first attempt's
    "RequestApproval": "registry version (pending_approval) and the task token it waits on, run record, notification",
    "RecordFailure": "failure record, endpoint rollback",
    # a put of the whole item under the step's key: a retry writes the same item again
    "RememberPreprocess": "step cache entry (one item per key)",
    "RememberTraining": "step cache entry (one item per key)",
    "RememberEvaluation": "step cache entry (one item per key)",
}
# The lookups only read (with the cache on, a hit also SETs the run record's reused_steps to the same value).
LOOKUPS = {"LookupPreprocess", "LookupTraining", "LookupEvaluation"}
READ_ONLY = {"ValidateInput", "ValidateData", "FindEndpoint", "DescribeEndpoint", "DescribeBestTrainingJob", *LOOKUPS}


# "after-superseded": its first AcquireDeployLease attempts are told the lease is taken (without running),
# a better model is registered meanwhile, and the first attempt that runs is superseded, gives the lease
# back, and its answer is lost. Five refusals: the registration below needs well under a second, and the
# backoff between them (full jitter over 2, 3, 4.5 and 6.75 s) leaves that with near certainty.
SUPERSEDED_RUN = "after-superseded"
REFUSALS = 5
ROLLED_OUT = "after-rollout"
ROLLOUT_EFFECTS = ("PrepareRollout", "UpdateEndpointWithRollout", "RegisterRolledBack")


def after(*states: str) -> tuple[str, ...]:
    return tuple(f"{state}={ERROR}:1:after" for state in states)


def _superseding_faults(name: str) -> FaultPlan:
    plan = FaultPlan()
    busy = "fault injected by the test: the deploy lease looks taken"
    plan.add("AcquireDeployLease", Throw("DeployLeaseBusyError", busy, 0, REFUSALS - 1, name, "before"))
    lost = "fault injected by the test: the superseded answer is lost"
    plan.add("AcquireDeployLease", Throw(ERROR, lost, REFUSALS, REFUSALS, name, "after"))
    return plan


def _better_model_deployed_elsewhere(h: Harness, model: str) -> dict[str, Any]:
    """An approved version that beats any iris model here (f1_macro 1.0), as another run would register it."""
    name = "deployed-elsewhere"
    return {
        "model_name": model,
        "status": "approved",
        "problem_type": "multiclass_classification",
        "target": "species",
        "feature_columns": ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"],
        "metrics": {"f1_macro": 1.0},
        "primary_metric": "f1_macro",
        "model_artifact": f"s3://{h.bucket}/models/{name}/output/model.tar.gz",
        "dataset_uri": f"s3://{h.bucket}/raw/{name}/iris.csv",
        "dataset_sha256": "0" * 64,
        "training_job_name": name,
        "endpoint_name": h.endpoint_name(model),
        "endpoint_config_name": name,
        "execution_arn": h.execution_arn(name),
        "evaluation_uri": f"s3://{h.bucket}/models/{name}/evaluation/evaluation.json",
        "report_uri": f"s3://{h.bucket}/models/{name}/evaluation/report.html",
        "created_at": utc_now(),
    }


def _register_better_model_once_waiting(h: Harness, name: str, errors: list[BaseException]) -> threading.Thread:
    """Once ``name`` has evaluated and waits for the lease, register a better model of its model."""

    def work() -> None:
        try:
            assert wait_until(lambda: h.lease_refusals(name) >= 1, timeout=600, interval=0.1), "never waited"
            h.registry.register_model(_better_model_deployed_elsewhere(h, name))
        except BaseException as error:  # reported by the fixture
            errors.append(error)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


APPROVAL_RUN = "after-approval"


def _approve_once_retried(h: Harness, errors: list[BaseException]) -> threading.Thread:
    """Once APPROVAL_RUN's RequestApproval has been retried and waits, approve it with the token the registry
    holds: the retry's own, or the run would never hear (a stale token is answered InvalidToken)."""

    def waits_again() -> bool:
        try:
            events = h.sfn.get_execution_history(executionArn=h.execution_arn(APPROVAL_RUN))["events"]
        except h.sfn.exceptions.ExecutionDoesNotExist:
            return False
        # the first attempt ran and then failed (no TaskSubmitted); the retry's invocation has answered
        kinds = [e["type"] for e in events]
        return kinds.count("TaskScheduled") >= 2 and "TaskSubmitted" in kinds

    def work() -> None:
        try:
            assert wait_until(waits_again, timeout=600, interval=0.2), "RequestApproval never waited twice"
            token = h.registry.approval_token(APPROVAL_RUN, 1)
            assert token is not None
            h.sfn.send_task_success(taskToken=token, output=json.dumps({"decided_by": "the test"}))
        except BaseException as error:  # reported by the fixture
            errors.append(error)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


@dataclass
class Runs:
    harness: Harness
    finished: dict[str, Finished] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Finished:
        return self.finished[name]


def _job(h: Harness, name: str, faults: tuple[str, ...] = (), model: str | None = None, **extra: Any) -> Job:
    dataset = h.upload(f"datasets/{name}/iris.csv", IRIS)
    return Job(name, {"dataset": dataset, "model_name": model or name, **extra}, faults)


@pytest.fixture(scope="module")
def runs(state_dir: Path) -> Iterator[Runs]:
    for h in embedded_harness():
        found = Runs(h)
        create_states = [s for s in CREATE_PATH if s in EFFECTS]
        phase_a = [
            # every state with effects on the create path fails once after its code ran
            _job(h, "after-create", after(*create_states)),
            # also an SNS publish that went out and still failed (its Retry matches SNS error names only)
            _job(
                h,
                "after-rejected",
                (*after("RegisterRejected"), "Notify=SNS.InternalErrorException:1:after"),
                **REJECTED_MODEL,
            ),
            # tunes (two training jobs at once), then the tuning job's answer is lost
            _job(h, "after-tune", after("Tune"), tuning={**TUNING["tuning"], "max_trials": 2, "max_parallel": 2}),
            # deploys a first model (no faults), which phase B updates
            _job(h, "update-base", model="after-update"),
            # fails for good after creating the endpoint; RecordFailure deletes it, then its response is lost
            _job(h, "after-failure", ("DescribeEndpoint=InjectedPermanentError:1", *after("RecordFailure"))),
            # deploys a first model, which phase B rolls out an update to (rolled back on an alarm)
            _job(h, "rollout-base", model=ROLLED_OUT),
            # asks for approval, its answer is lost; the retry waits on a new token, which approves it
            _job(h, APPROVAL_RUN, after("RequestApproval"), approval="manual", approval_timeout_seconds=300),
        ]
        approval_errors: list[BaseException] = []
        approving = _approve_once_retried(h, approval_errors)
        found.finished.update(h.run_all(phase_a))
        approving.join(timeout=60)
        assert not approval_errors, approval_errors
        # the superseded run's model passes its own gate (threshold 0) and loses to the better one under the lease
        superseded = _job(h, SUPERSEDED_RUN, **WEAK_MODEL, quality_threshold=0.0)
        phase_b = [_job(h, "after-update", after("UpdateEndpoint", "Register")), superseded]
        # a canary update whose rollout states each lose their first answer; the test trips the endpoint's alarm
        phase_b.append(_job(h, "after-rollout", after(*ROLLOUT_EFFECTS), model=ROLLED_OUT, **SLOW_CANARY))
        endpoint = h.endpoint_name(ROLLED_OUT)
        tripped = h.trip_alarm_during_rollout(endpoint, f"{endpoint}-5xx-errors", "after-rollout")
        h.aws.faults.merge(_superseding_faults(SUPERSEDED_RUN))
        errors: list[BaseException] = []
        registering = _register_better_model_once_waiting(h, SUPERSEDED_RUN, errors)
        found.finished.update(h.run_all(phase_b))
        registering.join(timeout=60)
        assert not errors, errors
        tripped.result(timeout=5)
        yield found


# ------------------------------------------------------------------------------------------ helpers


def _output(run: Finished) -> dict[str, Any]:
    return dict(json.loads(run.description["output"]))


def _config(run: Finished) -> dict[str, Any]:
    return dict(run.output_of("ValidateInput")["config"])


def _versions(h: Harness, uri: str) -> int:
    return len(h.versions_of(uri))


def _standin(h: Harness, kind: str, name: str) -> str:
    return f"s3://{h.bucket}/_sagemaker/{kind}/{name}.json"


def _injections(h: Harness, run: Finished) -> dict[str, Injection]:
    return {i.state: i for i in h.aws.faults.injections if i.execution == run.job.name}


def _retried_after_running(h: Harness, run: Finished, states: list[str]) -> None:
    """Each state's first attempt ran its code to success and was still reported failed; one retry."""
    injected = _injections(h, run)
    for state in states:
        visit = run.visit(state)
        assert visit.attempts == 2 and visit.errors == [ERROR], run.describe()
        injection = injected.get(state)
        assert injection is not None and injection.attempt == 0 and injection.throw.when == "after", state
        # the code really ran (so its writes happened) and succeeded before the attempt was failed
        assert injection.ran and injection.outcome_error is None, (state, injection)


# ------------------------------------------------------------------------------------------ the states


def test_every_retried_state_is_classified() -> None:
    assert set(RETRIED) == set(EFFECTS) | READ_ONLY, f"classify: {set(RETRIED) ^ (set(EFFECTS) | READ_ONLY)}"
    assert {"Ingest", "Register"} <= set(EFFECTS)


def test_every_state_with_effects_is_retried_after_running(runs: Runs) -> None:
    covered = {i.state for i in runs.harness.aws.faults.injections if i.throw.when == "after" and i.ran}
    assert set(EFFECTS) <= covered, f"never retried after running: {sorted(set(EFFECTS) - covered)}"


def test_create_run_leaves_one_of_each_effect(runs: Runs) -> None:
    h, run = runs.harness, runs["after-create"]
    assert run.status == "SUCCEEDED" and run.path == CREATE_PATH, run.describe()
    _retried_after_running(h, run, [s for s in CREATE_PATH if s in EFFECTS])
    out, config = _output(run), _config(run)

    # Ingest: one raw copy, holding the uploaded bytes, hashed once
    assert _versions(h, out["ingest"]["raw_uri"]) == 1
    assert h.read(out["ingest"]["raw_uri"]) == IRIS
    assert out["ingest"]["sha256"] == hashlib.sha256(IRIS).hexdigest()
    # Preprocess: one version of each split
    for split in ("train", "validation", "test"):
        assert _versions(h, f"{out['prep'][f'{split}_uri']}{split}.csv") == 1, split
    # Train: trained once (the retry found the completed job)
    artifact = out["training"]["ModelArtifacts"]
    assert _versions(h, artifact) == 1
    assert _versions(h, artifact.replace("/model.tar.gz", "/output.tar.gz")) == 1
    # Evaluate: written once, and the state carries what the file says
    evaluation = out["evaluation"]
    assert _versions(h, evaluation["evaluation_uri"]) == 1 and _versions(h, evaluation["report_uri"]) == 1
    assert json.loads(h.read(evaluation["evaluation_uri"]))["gate"]["primary_value"] == evaluation["primary_value"]
    # the stand-in's create calls: one record each, the endpoint created once and never updated
    assert _versions(h, _standin(h, "models", config["sagemaker_model_name"])) == 1
    assert _versions(h, _standin(h, "endpoint-configs", config["endpoint_config_name"])) == 1
    assert _versions(h, _standin(h, "endpoints", config["endpoint_name"])) == 1
    endpoint = h.endpoint(config["endpoint_name"])
    assert endpoint and endpoint["EndpointConfigName"] == config["endpoint_config_name"]
    assert endpoint["PreviousEndpointConfigNames"] == []
    # Register: one version, the run record points at it
    [record] = h.model_versions("after-create")
    assert record.version == 1 and record.execution_arn == run.arn and record.status == "approved"
    assert out["registration"]["version"] == 1
    run_record = h.run_record("after-create")
    assert run_record and run_record["status"] == "SUCCEEDED" and run_record["model_version"] == 1
    # AcquireDeployLease: taken twice by the same execution, given back once by Register
    assert h.registry.deploy_lease("after-create") is None
    # Remember*: one step cache entry per step, under the key its lookup computed, naming this run
    table = h.aws.stack.tables["StepCacheTable"].name
    for lookup in ("preprocess", "training", "evaluation"):
        key = out["cache"][lookup]["key"]
        item = h.aws.client("dynamodb").get_item(TableName=table, Key={"cache_key": {"S": key}})["Item"]
        assert item["run_id"]["S"] == "after-create", lookup


def test_approval_retried_after_running_waits_on_one_version_with_the_new_token(runs: Runs) -> None:
    h, run = runs.harness, runs[APPROVAL_RUN]
    assert run.status == "SUCCEEDED" and run.path == APPROVED_PATH, run.describe()
    _retried_after_running(h, run, ["RequestApproval"])
    # one version, asked for twice, approved by the decision sent with the token the retry stored
    [record] = h.model_versions(APPROVAL_RUN)
    assert (record.version, record.status, record.execution_arn) == (1, "approved", run.arn)
    assert record.approval is not None and record.approval.decided_by == "the test"
    assert h.registry.approval_token(APPROVAL_RUN, 1) is None
    events = h.sfn.get_execution_history(executionArn=run.arn)["events"]
    [submitted] = [e for e in events if e["type"] == "TaskSubmitted"]  # the failed attempt submitted nothing
    assert json.loads(submitted["taskSubmittedEventDetails"]["output"])["Payload"]["version"] == 1


def test_tune_retried_after_running_trains_each_job_once(runs: Runs) -> None:
    h, run = runs.harness, runs["after-tune"]
    assert run.status == "SUCCEEDED" and run.path == TUNE_PATH, run.describe()
    _retried_after_running(h, run, ["Tune"])
    name = _config(run)["tuning"]["job_name"]
    # the retry found the tuning job completed: its record written twice (started, completed), not four times
    assert _versions(h, _standin(h, "hyper-parameter-tuning-jobs", name)) == 2
    jobs = [k.rsplit("/", 1)[1].removesuffix(".json") for k in h.keys(f"_sagemaker/training-jobs/{name}-")]
    assert len(jobs) == 2
    for job in jobs:  # each training job ran once: started and finished, one model and one output
        assert _versions(h, _standin(h, "training-jobs", job)) == 2, job
        assert _versions(h, f"s3://{h.bucket}/models/{job}/output/model.tar.gz") == 1, job
        assert _versions(h, f"s3://{h.bucket}/models/{job}/output/output.tar.gz") == 1, job
    assert _output(run)["training"]["TrainingJobName"] in jobs


def test_update_run_switches_the_endpoint_once(runs: Runs) -> None:
    h, base, run = runs.harness, runs["update-base"], runs["after-update"]
    assert base.status == "SUCCEEDED" and base.path == CREATE_PATH, base.describe()
    assert run.status == "SUCCEEDED" and run.path == UPDATE_PATH, run.describe()
    _retried_after_running(h, run, ["UpdateEndpoint", "Register"])
    endpoint = h.endpoint(_config(run)["endpoint_name"])
    assert endpoint and endpoint["EndpointConfigName"] == _config(run)["endpoint_config_name"]
    # one switch: the base run's config once in the history, not this run's own config after it
    assert endpoint["PreviousEndpointConfigNames"] == [_config(base)["endpoint_config_name"]]
    versions = h.model_versions("after-update")
    assert [(v.version, v.execution_arn) for v in versions] == [(2, run.arn), (1, base.arn)]
    assert h.registry.deploy_lease("after-update") is None


def test_rolled_back_rollout_starts_once_and_registers_once(runs: Runs) -> None:
    h, base, run = runs.harness, runs["rollout-base"], runs["after-rollout"]
    assert base.status == "SUCCEEDED" and base.path == CREATE_PATH, base.describe()
    assert run.status == "FAILED" and run.outcome.error == "DeploymentRolledBack", run.describe()
    assert without_waits(run.path) == ROLLED_BACK_PATH, run.describe()
    _retried_after_running(h, run, list(ROLLOUT_EFFECTS))
    endpoint_name = _config(run)["endpoint_name"]
    endpoint = h.endpoint(endpoint_name)
    # one deployment, started once and rolled back: the base's config serves, its history unchanged
    assert endpoint and endpoint["EndpointConfigName"] == _config(base)["endpoint_config_name"]
    assert endpoint["PreviousEndpointConfigNames"] == [] and "PendingDeploymentSummary" not in endpoint
    # the endpoint record's writes: created, the deployment started, rolled back (a second start would add two)
    assert _versions(h, _standin(h, "endpoints", endpoint_name)) == 3
    alarms = h.aws.client("cloudwatch").describe_alarms(AlarmNamePrefix=endpoint_name)["MetricAlarms"]
    assert sorted(a["AlarmName"] for a in alarms) == [f"{endpoint_name}-5xx-errors", f"{endpoint_name}-model-latency"]
    versions = h.model_versions(ROLLED_OUT)
    assert [(v.version, v.status, v.execution_arn) for v in versions] == [
        (2, "rolled_back", run.arn),
        (1, "approved", base.arn),
    ]
    assert h.registry.deploy_lease(ROLLED_OUT) is None


def test_rejected_run_registers_once(runs: Runs) -> None:
    h, run = runs.harness, runs["after-rejected"]
    assert run.status == "SUCCEEDED" and run.path == REJECTED_PATH, run.describe()
    _retried_after_running(h, run, ["RegisterRejected"])
    [record] = h.model_versions("after-rejected")
    assert (record.version, record.status, record.execution_arn) == (1, "rejected", run.arn)
    # the notification was published, then the publish failed and was retried: SNS delivers at least once
    notify = _injections(h, run)["Notify"]
    assert notify.ran and notify.outcome_error is None and notify.throw.when == "after"
    assert run.visit("Notify").errors == ["SNS.InternalErrorException"] and run.visit("Notify").attempts == 2


def test_superseded_run_retried_after_its_answer_was_lost_gives_the_lease_back_and_rejects_once(runs: Runs) -> None:
    """The retry takes the lease again, decides against the same champion, gives the lease back again."""
    h, run = runs.harness, runs[SUPERSEDED_RUN]
    assert run.status == "SUCCEEDED" and run.path == SUPERSEDED_PATH, run.describe()
    visit = run.visit("AcquireDeployLease")
    assert visit.errors == ["DeployLeaseBusyError"] * REFUSALS + [ERROR], run.describe()
    assert visit.attempts == REFUSALS + 2
    lost = _injections(h, run)["AcquireDeployLease"]
    # the last injection: the attempt that ran, was superseded (no error of its own) and lost its answer
    assert (lost.attempt, lost.throw.when, lost.ran, lost.outcome_error) == (REFUSALS, "after", True, None)
    out = _output(run)
    assert out["lease"]["superseded"] is True and out["evaluation"]["passed"] is False
    assert out["evaluation"]["reason"].startswith("superseded while waiting for the deploy lease: f1_macro ")
    assert h.registry.deploy_lease(SUPERSEDED_RUN) is None  # given back by both attempts that took it
    champion, record = sorted(h.model_versions(SUPERSEDED_RUN), key=lambda r: r.version)
    assert champion.execution_arn == h.execution_arn("deployed-elsewhere") and champion.status == "approved"
    assert (record.version, record.status, record.execution_arn) == (2, "rejected", run.arn)
    assert record.gate_reason == out["evaluation"]["reason"] and "champion v1 1.0000" in record.gate_reason
    assert h.endpoint(_config(run)["endpoint_name"]) is None  # it never deployed


def test_failure_is_recorded_and_rolled_back_once(runs: Runs) -> None:
    h, run = runs.harness, runs["after-failure"]
    assert run.status == "FAILED" and run.outcome.failed_state == "DescribeEndpoint", run.describe()
    _retried_after_running(h, run, ["RecordFailure"])
    record = h.run_record("after-failure")
    assert record and record["status"] == "FAILED" and record["failed_state"] == "DescribeEndpoint"
    # the first attempt deleted the endpoint; a second rollback would have recorded "does not exist"
    assert record["rollback"] == f"endpoint {_config(run)['endpoint_name']} deleted: no earlier approved model"
    assert run.output_of("RecordFailure")["failure_record"]["rollback"] == record["rollback"]
    assert h.endpoint(_config(run)["endpoint_name"]) is None
    assert not h.model_versions("after-failure")
    assert h.registry.deploy_lease("after-failure") is None  # RecordFailure gave it back


def test_registry_versions_are_unique_per_model(runs: Runs) -> None:
    records = runs.harness.registry.versions()
    keys = [(r.model_name, r.version) for r in records]
    assert len(keys) == len(set(keys))
    executions = [r.execution_arn for r in records]
    assert len(executions) == len(set(executions)), "an execution registered twice"


# ------------------------------------------------------------------------------------------ starts


def test_repeated_start_with_the_same_name_starts_one_run(runs: Runs) -> None:
    h = runs.harness
    job = _job(h, "started-twice")
    execution_input = json.dumps(job.execution_input)
    machine = h.aws.stack.state_machine_arn
    answers: list[str] = []
    failures: list[BaseException] = []

    def start() -> None:
        try:
            answer = h.sfn.start_execution(stateMachineArn=machine, name=job.name, input=execution_input)
            answers.append(answer["executionArn"])
        except Exception as error:  # reported by the assertion below
            failures.append(error)

    # a duplicated request (a client retry, a double click) sent at the same moment, then once more
    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    start()
    assert not failures, failures
    assert len(answers) == 7 and len(set(answers)) == 1, answers

    # while it runs, the same name with another input is refused, as on AWS
    other = json.dumps({**job.execution_input, "model_name": "another"})
    with pytest.raises(ClientError) as refused:
        h.sfn.start_execution(stateMachineArn=machine, name=job.name, input=other)
    assert refused.value.response["Error"]["Code"] == "ExecutionAlreadyExists"

    finished = h.wait(job, answers[0])
    assert finished.status == "SUCCEEDED", finished.describe()
    assert [e["name"] for e in h.executions()].count(job.name) == 1
    assert [v.execution_arn for v in h.model_versions("started-twice")] == [answers[0]]
    assert _versions(h, _output(finished)["ingest"]["raw_uri"]) == 1

    # once it has ended the name stays taken, whatever the input (AWS keeps it for 90 days)
    with pytest.raises(ClientError) as ended:
        h.sfn.start_execution(stateMachineArn=machine, name=job.name, input=execution_input)
    assert ended.value.response["Error"]["Code"] == "ExecutionAlreadyExists"


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_refuses_a_used_name_clearly_and_keeps_that_runs_file(
    iris_run: PipelineRun, state_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A later local AWS (restarted, its state loaded from disk) refuses the name of a stored execution:
    moto forgot it, AWS would not. The refusal comes before the upload that would replace its file."""
    from stepml.embedded.service import stop_service
    from stepml.project import project_layout
    from stepml.targets import embedded_target

    assert iris_run.exit_code == 0, iris_run.output
    assert stop_service(project_layout()) is not None
    name = iris_run.result["execution_arn"].rsplit(":", 1)[-1]
    other = tmp_path / "iris.csv"
    other.write_bytes(IRIS.replace(b"setosa", b"Setosa"))

    for command in (["run", "--name", name, "--data", str(other)], ["start", "--name", name, "--data", str(other)]):
        code, out, err = _cli(capsys, *command)
        assert code == 2, (command, out, err)
        assert f"stepml: an execution named {name!r} already exists" in err, err
        assert "Traceback" not in err + out and f"stepml watch {name}" in err

    # the earlier run's staged file is still the one it ran on (the refused commands uploaded nothing)
    code, out, err = _cli(capsys, "watch", name, "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["status"] == "SUCCEEDED", err
    target = embedded_target(project_layout())
    saved = target.client("s3").get_object(Bucket=target.outputs.data_bucket, Key=f"datasets/{name}/iris.csv")
    assert saved["Body"].read() == (REPO / "data" / "iris.csv").read_bytes() != other.read_bytes()
