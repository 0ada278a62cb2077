"""Register: monotonic versions, idempotent retries, concurrent registrations, the run record."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Literal

import pytest
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.runs import RunLog
from pipeline_core.errors import RegistryConflictError
from pipeline_core.models import (
    DataProfile,
    EvaluationResult,
    IngestResult,
    PreprocessResult,
    RegistrationResult,
    RunConfig,
    TrainingSummary,
)
from pipeline_core.stages.register import register

from functions.register_model import app as register_app
from tests.conftest import FakeAws
from tests.unit.test_evaluate import metrics_namespace, run_evaluate, state_for, trained

__all__ = ["metrics_namespace"]  # a fixture used here by name

ARN = "arn:aws:states:us-east-1:123456789012:execution:stepml-pipeline:{}"


def evaluated_state(aws: FakeAws, run_id: str = "run-1") -> dict[str, Any]:
    """The state data Register receives: a real iris model's output, evaluated."""
    state = state_for(aws, trained("iris"), run_id=run_id, job=f"stepml-{run_id}-0a1b2c3d")
    state["evaluation"] = run_evaluate(aws, state).model_dump(mode="json")
    return state


def run_register(
    aws: FakeAws,
    state: dict[str, Any],
    execution: str,
    status: Literal["approved", "rejected"] = "approved",
    ddb: Any = None,
    training_job: str | None = None,
) -> RegistrationResult:
    """Register as ``execution``, whose own training job (as on every target) is named after it unless
    ``training_job`` names another (a run that reused a training job from the step cache)."""
    training = TrainingSummary.model_validate(state["training"])
    training = training.model_copy(update={"TrainingJobName": training_job or f"stepml-{execution}-job"})
    return register(
        RunConfig.model_validate(state["config"]),
        IngestResult.model_validate(state["ingest"]),
        DataProfile.model_validate(state["data"]),
        PreprocessResult.model_validate(state["prep"]),
        training,
        EvaluationResult.model_validate(state["evaluation"]),
        ARN.format(execution),
        status,
        registry=ModelRegistry(aws.registry_table, ddb or aws.dynamodb),
        runs=RunLog(aws.runs_table, aws.dynamodb),
    )


def test_versions_are_assigned_in_order_and_the_record_is_complete(aws: FakeAws) -> None:
    state = evaluated_state(aws)
    results = [
        run_register(aws, state, "first"),
        run_register(aws, state, "second", "rejected"),
        run_register(aws, state, "third"),
    ]
    assert [r.version for r in results] == [1, 2, 3]
    assert results[0].endpoint_name == "stepml-test-iris-ep" and results[1].endpoint_name is None
    assert results[0].model_artifact == state["training"]["ModelArtifacts"]

    registry = ModelRegistry(aws.registry_table, aws.dynamodb)
    approved, rejected = registry.get("iris", 1), registry.get("iris", 2)
    assert approved is not None and rejected is not None
    assert approved.endpoint_config_name == state["config"]["endpoint_config_name"]
    assert rejected.status == "rejected" and rejected.endpoint_config_name is None
    assert approved.metrics == pytest.approx(state["evaluation"]["metrics"])
    assert approved.dataset_sha256 == state["ingest"]["sha256"]
    assert approved.dataset_uri == state["ingest"]["raw_uri"]
    assert approved.feature_columns == state["prep"]["feature_columns"]
    assert approved.class_labels == ["setosa", "versicolor", "virginica"]
    assert approved.report_uri == state["evaluation"]["report_uri"]
    # why the gate let it through (or not): what `stepml models` shows
    assert approved.gate_reason == rejected.gate_reason == state["evaluation"]["reason"]
    assert registry.champion("iris") == registry.get("iris", 3)

    record = RunLog(aws.runs_table, aws.dynamodb).get_run("run-1")
    assert record is not None
    assert record["status"] == "SUCCEEDED" and record["model_version"] == 3
    assert record["registry_status"] == "approved" and record["finished_at"]


def test_the_registry_records_the_definition_version_ingest_learned(aws: FakeAws) -> None:
    state = evaluated_state(aws)
    run_register(aws, state, "unknown")  # an IngestResult from before the version was recorded
    state["ingest"] = {**state["ingest"], "definition_version": "7"}
    run_register(aws, state, "versioned")

    registry = ModelRegistry(aws.registry_table, aws.dynamodb)
    before, versioned = registry.get("iris", 1), registry.get("iris", 2)
    assert before is not None and before.definition_version is None
    assert versioned is not None and versioned.definition_version == "7"


def test_a_retry_returns_the_version_already_registered(aws: FakeAws) -> None:
    state = evaluated_state(aws)
    first = run_register(aws, state, "retried")
    run_register(aws, state, "someone-else")
    again = run_register(aws, state, "retried")  # the state machine's Retry after a lost response
    assert again == first and again.version == 1
    versions = ModelRegistry(aws.registry_table, aws.dynamodb).versions("iris")
    assert [(r.version, r.execution_arn) for r in versions] == [
        (2, ARN.format("someone-else")),
        (1, ARN.format("retried")),
    ]


def test_a_rerun_that_reused_the_training_job_gets_the_version_already_registered(aws: FakeAws) -> None:
    state = evaluated_state(aws)
    first = run_register(aws, state, "first", training_job="stepml-shared-job")
    rerun = run_register(aws, state, "rerun", training_job="stepml-shared-job")
    assert rerun.version == first.version == 1 and rerun.reused_version and not first.reused_version
    # another decision about the same model is a new version: rejected now, say, under a higher threshold
    rejected = run_register(aws, state, "stricter", "rejected", training_job="stepml-shared-job")
    assert rejected.version == 2 and not rejected.reused_version
    assert [r.version for r in ModelRegistry(aws.registry_table, aws.dynamodb).versions("iris")] == [2, 1]
    record = RunLog(aws.runs_table, aws.dynamodb).get_run("run-1")
    assert record is not None and record["model_version"] == 2


class BarrierOnLatestVersion:
    """The real DynamoDB client, except that the first latest-version reads of two threads wait for each
    other, so both registrations pick the same next version before either writes."""

    def __init__(self, ddb: Any, barrier: threading.Barrier) -> None:
        self._ddb, self._barrier = ddb, barrier

    def query(self, **request: Any) -> Any:
        answer = self._ddb.query(**request)
        if request.get("ProjectionExpression") == "version" and not self._barrier.broken:
            with contextlib.suppress(threading.BrokenBarrierError):  # the other thread already gave up
                self._barrier.wait(timeout=10)
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ddb, name)


def test_concurrent_registrations_get_distinct_versions(aws: FakeAws) -> None:
    state = evaluated_state(aws)
    barrier = threading.Barrier(2)
    conflicts: list[str] = []
    results: dict[str, RegistrationResult] = {}
    errors: list[BaseException] = []

    def execution(name: str) -> None:
        ddb = BarrierOnLatestVersion(aws.dynamodb, barrier)
        try:
            for _ in range(5):  # what the ASL's Retry on RegistryConflictError does
                try:
                    results[name] = run_register(aws, state, name, ddb=ddb)
                    return
                except RegistryConflictError as error:
                    conflicts.append(str(error))
                    barrier.abort()  # the retry must not wait for the other thread again
        except BaseException as error:  # surfaced below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=execution, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert sorted(r.version for r in results.values()) == [1, 2]
    assert len(conflicts) == 1 and "version 1 of iris was registered concurrently" in conflicts[0]
    versions = ModelRegistry(aws.registry_table, aws.dynamodb).versions("iris")
    assert sorted(r.execution_arn for r in versions) == [ARN.format("a"), ARN.format("b")]


@pytest.mark.usefixtures("metrics_namespace")
def test_handler_takes_the_states_parameters(aws: FakeAws) -> None:
    state = evaluated_state(aws, run_id="run-9")
    event = {key: state[key] for key in ("config", "ingest", "data", "prep", "training", "evaluation")}
    event |= {"execution_arn": ARN.format("run-9"), "status": "rejected"}  # RegisterRejected's Parameters
    answer = RegistrationResult.model_validate(register_app.lambda_handler(event, None))
    assert answer.version == 1 and answer.status == "rejected" and answer.endpoint_name is None
    record = RunLog(aws.runs_table, aws.dynamodb).get_run("run-9")
    assert record is not None and record["registry_status"] == "rejected"
