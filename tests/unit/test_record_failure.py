"""RecordFailure: the run record of a failed run, from partial or full state, and the endpoint rollback.

Rollback goes through the real ``endpoint_control()`` on the SageMaker stand-in (``SAGEMAKER_BACKEND`` is
``standin`` in the ``aws`` fixture), whose records live in the moto bucket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.runs import RunLog
from pipeline_core.aws.sagemaker import endpoint_control
from pipeline_core.stages.record_failure import MAX_CAUSE_CHARS, FailureSummary, record_failure
from pipeline_core.standin import endpoints as standin
from pipeline_core.standin.store import RecordStore

from functions.record_failure import app as record_failure_app
from tests.conftest import FakeAws
from tests.unit.test_evaluate import champion_record, metrics_namespace, state_for, trained

__all__ = ["metrics_namespace"]  # a fixture used here by name

EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:stepml-pipeline:{}"
ENDPOINT = "stepml-test-iris-ep"
OLD_CONFIG, NEW_CONFIG = "stepml-old-00000000", "stepml-run-1-0a1b2c3d"


def not_needed() -> Any:
    raise AssertionError("an early failure must not need the registry or SageMaker")


def run(aws: FakeAws, event: dict[str, Any], endpoints: Callable[[], Any] = endpoint_control) -> FailureSummary:
    return record_failure(
        event,
        runs=RunLog(aws.runs_table, aws.dynamodb),
        registry=lambda: ModelRegistry(aws.registry_table, aws.dynamodb),
        endpoints=endpoints,
    )


def run_record(aws: FakeAws, run_id: str) -> dict[str, Any]:
    record = RunLog(aws.runs_table, aws.dynamodb).get_run(run_id)
    assert record is not None, f"no run record for {run_id}"
    return record


def failure_event(state: dict[str, Any], failed_state: str, error: str, cause: str, name: str) -> dict[str, Any]:
    """RecordFailure's Parameters: ``$.failure``, the whole state, the execution's ARN and name."""
    failure = {"state": failed_state, "error": error, "cause": cause}
    return {
        "failure": failure,
        "state": {**state, "failure": failure},
        "execution_arn": EXECUTION.format(name),
        "execution_name": name,
    }


def full_state(aws: FakeAws) -> dict[str, Any]:
    return state_for(aws, trained("iris"))


def deploy(store: RecordStore, config_name: str, endpoint_config: str) -> None:
    """A stand-in model and endpoint config named ``config_name``, as CreateModel/CreateEndpointConfig make."""
    standin.create_model(
        store,
        {
            "ModelName": config_name,
            "ExecutionRoleArn": "arn:aws:iam::123456789012:role/stepml-sagemaker",
            "PrimaryContainer": {"Image": "sklearn", "ModelDataUrl": f"s3://{store.bucket}/models/{config_name}.tgz"},
        },
    )
    standin.create_endpoint_config(
        store,
        {
            "EndpointConfigName": endpoint_config,
            "ProductionVariants": [
                {"VariantName": "AllTraffic", "ModelName": config_name, "InitialInstanceCount": 1,
                 "InstanceType": "ml.t2.medium"}
            ],
        },
    )  # fmt: skip


def serving(store: RecordStore) -> str | None:
    record = store.get("endpoints", ENDPOINT)
    return None if record is None else str(record["EndpointConfigName"])


# --- recording ----------------------------------------------------------------------------------------


def test_validate_input_failure_has_only_the_raw_input(aws: FakeAws) -> None:
    raw_input = {"dataset": f"s3://{aws.bucket}/incoming/iris.csv", "colour": "blue"}
    event = failure_event(raw_input, "ValidateInput", "InputValidationError", "unknown field colour", "exec-7")
    summary = record_failure(
        event, runs=RunLog(aws.runs_table, aws.dynamodb), registry=not_needed, endpoints=not_needed
    )
    assert summary.run_id == "exec-7" and summary.rollback is None
    record = run_record(aws, "exec-7")
    assert record["status"] == "FAILED" and record["failed_state"] == "ValidateInput"
    assert record["error"] == "InputValidationError" and record["cause"] == "unknown field colour"
    assert record["input_pointers"] == {"dataset": raw_input["dataset"]}
    assert record["execution_arn"] == EXECUTION.format("exec-7") and record["failed_at"]


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"failure": "Lambda.Unknown", "state": ["not", "a", "dict"], "execution_arn": EXECUTION.format("odd-1")},
        {"failure": {"state": None, "error": 3, "cause": None}, "state": {"config": "?", "prep": 1}},
        {"failure": {"state": "Register"}, "state": {"config": {"endpoint_name": 5}, "existing": {}}},
    ],
)
def test_malformed_events_are_still_recorded(aws: FakeAws, event: dict[str, Any]) -> None:
    summary = record_failure(event, runs=RunLog(aws.runs_table, aws.dynamodb), registry=not_needed,
                             endpoints=not_needed)  # fmt: skip
    record = run_record(aws, summary.run_id)
    assert record["status"] == "FAILED" and record["failed_state"] and record["error"] and record["cause"]


def test_full_state_records_pointers_and_truncates_a_long_cause(aws: FakeAws) -> None:
    state = full_state(aws)
    state["evaluation"] = {"evaluation_uri": "s3://b/e.json", "report_uri": "s3://b/r.html"}
    cause = "EvaluationError: the first line says what went wrong\n" + "x" * 100_000 + "\nlast frame: evaluate.py"
    summary = run(aws, failure_event(state, "Evaluate", "EvaluationError", cause, "run-1"), endpoints=not_needed)

    assert summary.run_id == "run-1"  # config.run_id
    record = run_record(aws, "run-1")
    assert len(record["cause"]) <= MAX_CAUSE_CHARS
    assert record["cause"].startswith("EvaluationError: the first line says what went wrong")
    assert record["cause"].endswith("last frame: evaluate.py")
    assert "characters cut to fit the run record" in record["cause"]
    pointers = record["input_pointers"]
    assert pointers["dataset"] == state["config"]["dataset"]
    assert pointers["raw_uri"] == state["ingest"]["raw_uri"]
    assert pointers["dataset_sha256"] == state["ingest"]["sha256"]
    assert pointers["processed_prefix"] == state["config"]["processed_prefix"]
    assert pointers["train_uri"] == state["prep"]["train_uri"]
    assert pointers["training_job_name"] == state["training"]["TrainingJobName"]
    assert pointers["model_artifact"] == state["training"]["ModelArtifacts"]
    assert pointers["report_uri"] == "s3://b/r.html"
    assert "rollback" not in record


# --- rollback -----------------------------------------------------------------------------------------


def test_failed_register_rolls_the_endpoint_back_to_the_champion(aws: FakeAws) -> None:
    store = RecordStore(aws.bucket, aws.s3)
    deploy(store, "stepml-old-model", OLD_CONFIG)
    deploy(store, "stepml-new-model", NEW_CONFIG)
    standin.create_endpoint(store, {"EndpointName": ENDPOINT, "EndpointConfigName": OLD_CONFIG})
    standin.update_endpoint(store, {"EndpointName": ENDPOINT, "EndpointConfigName": NEW_CONFIG})  # this run
    registry = ModelRegistry(aws.registry_table, aws.dynamodb)
    registry.register_model(champion_record("iris", "f1_macro", 0.9))  # v1, serves OLD_CONFIG
    registry.register_model({**champion_record("iris", "f1_macro", 0.2), "status": "rejected"})  # v2
    # v3: this run's Register wrote its version, then failed (e.g. on the run record)
    registry.register_model(
        champion_record("iris", "f1_macro", 0.95)
        | {"endpoint_config_name": NEW_CONFIG, "execution_arn": EXECUTION.format("run-1")}
    )

    state = full_state(aws) | {"existing": {"count": 1}, "endpoint": {"EndpointName": ENDPOINT,
                                                                      "EndpointStatus": "InService"}}  # fmt: skip
    summary = run(aws, failure_event(state, "Register", "TransientStoreError", "throttled", "run-1"))

    assert serving(store) == OLD_CONFIG
    assert summary.rollback == f"endpoint {ENDPOINT} rolled back to model v1 ({OLD_CONFIG})"
    assert run_record(aws, "run-1")["rollback"] == summary.rollback
    assert [(r.version, r.status) for r in registry.versions("iris")] == [
        (3, "rolled_back"),
        (2, "rejected"),
        (1, "approved"),
    ]
    assert registry.champion("iris") == registry.get("iris", 1)


def test_failed_first_deploy_deletes_the_endpoint(aws: FakeAws) -> None:
    store = RecordStore(aws.bucket, aws.s3)
    deploy(store, "stepml-new-model", NEW_CONFIG)
    standin.create_endpoint(store, {"EndpointName": ENDPOINT, "EndpointConfigName": NEW_CONFIG})
    state = full_state(aws) | {"existing": {"count": 0}, "endpoint": {"EndpointName": ENDPOINT,
                                                                      "EndpointStatus": "Failed"}}  # fmt: skip
    event = failure_event(state, "DescribeEndpoint", "EndpointDeployFailed", "ended in status Failed", "run-1")
    summary = run(aws, event)

    assert endpoint_control().describe_endpoint(ENDPOINT) is None
    assert summary.rollback == f"endpoint {ENDPOINT} deleted: no earlier approved model"
    assert run_record(aws, "run-1")["rollback"] == summary.rollback


def test_a_failed_endpoint_is_deleted_even_with_a_champion(aws: FakeAws) -> None:
    store = RecordStore(aws.bucket, aws.s3)
    deploy(store, "stepml-new-model", NEW_CONFIG)
    standin.create_endpoint(store, {"EndpointName": ENDPOINT, "EndpointConfigName": NEW_CONFIG})
    # the stand-in's endpoints are always InService; a real one can end up Failed
    store.put("endpoints", ENDPOINT, {**standin.describe_endpoint(store, {"EndpointName": ENDPOINT}),
                                      "EndpointStatus": "Failed"})  # fmt: skip
    ModelRegistry(aws.registry_table, aws.dynamodb).register_model(champion_record("iris", "f1_macro", 0.9))
    state = full_state(aws) | {"existing": {"count": 1}}
    summary = run(aws, failure_event(state, "UpdateEndpoint", "ValidationException", "bad", "run-1"))
    assert serving(store) is None
    assert summary.rollback is not None and "SageMaker cannot update" in summary.rollback
    assert OLD_CONFIG in summary.rollback  # names what has to be redeployed


def test_an_endpoint_serving_another_config_is_left_alone(aws: FakeAws) -> None:
    store = RecordStore(aws.bucket, aws.s3)
    deploy(store, "stepml-other-model", "stepml-other-00000000")
    standin.create_endpoint(store, {"EndpointName": ENDPOINT, "EndpointConfigName": "stepml-other-00000000"})
    state = full_state(aws) | {"existing": {"count": 0}}
    # e.g. another execution created the endpoint between this run's FindEndpoint and CreateEndpoint
    summary = run(aws, failure_event(state, "CreateEndpoint", "ValidationException", "already exists", "run-1"))
    assert serving(store) == "stepml-other-00000000"
    assert summary.rollback is not None and "left as it is" in summary.rollback


def test_no_rollback_before_the_endpoint_was_touched(aws: FakeAws) -> None:
    store = RecordStore(aws.bucket, aws.s3)
    deploy(store, "stepml-old-model", OLD_CONFIG)
    standin.create_endpoint(store, {"EndpointName": ENDPOINT, "EndpointConfigName": OLD_CONFIG})
    # CreateEndpointConfig failed: the run never reached FindEndpoint, so $.existing is absent
    event = failure_event(full_state(aws), "CreateEndpointConfig", "ValidationException", "bad", "run-1")
    summary = run(aws, event, endpoints=not_needed)
    assert summary.rollback is None and serving(store) == OLD_CONFIG


def test_a_missing_endpoint_needs_no_rollback(aws: FakeAws) -> None:
    state = full_state(aws) | {"existing": {"count": 0}}
    summary = run(aws, failure_event(state, "CreateEndpoint", "ResourceLimitExceeded", "quota", "run-1"))
    assert summary.rollback == f"endpoint {ENDPOINT} does not exist: nothing to roll back"


@pytest.mark.usefixtures("metrics_namespace")
def test_handler_rolls_back_through_the_configured_backend(aws: FakeAws) -> None:
    store = RecordStore(aws.bucket, aws.s3)
    deploy(store, "stepml-new-model", NEW_CONFIG)
    standin.create_endpoint(store, {"EndpointName": ENDPOINT, "EndpointConfigName": NEW_CONFIG})
    state = full_state(aws) | {"existing": {"count": 0}}
    event = failure_event(state, "CreateEndpoint", "States.Timeout", "timed out", "run-1")
    answer = record_failure_app.lambda_handler(event, None)
    assert answer["status"] == "FAILED" and answer["failed_state"] == "CreateEndpoint"
    assert answer["rollback"] == f"endpoint {ENDPOINT} deleted: no earlier approved model"
    assert serving(store) is None


def test_rejected_upload_is_quarantined_with_its_reason_and_the_original_kept(aws: FakeAws) -> None:
    import json

    from pipeline_core.aws.s3 import ObjectStore

    original = b"age,label\n1,a\nabc,b\n"
    dataset = aws.put("incoming/people.csv", original)
    state = {"config": {"run_id": "up-1", "dataset": dataset, "model_name": "people"}}
    event = failure_event(state, "ValidateData", "DataValidationError", "column 'age' row 2 has 'abc'", "up-1")
    summary = record_failure(
        event,
        runs=RunLog(aws.runs_table, aws.dynamodb),
        registry=not_needed,
        endpoints=not_needed,
        store=lambda: ObjectStore(aws.s3),
    )
    assert summary.quarantine_uri == f"s3://{aws.bucket}/quarantine/up-1/people.csv"
    assert aws.get("quarantine/up-1/people.csv") == original
    assert aws.get("incoming/people.csv") == original  # nothing is lost: the upload stays
    reason = json.loads(aws.get("quarantine/up-1/people.csv.reason.json"))
    assert reason["error"] == "DataValidationError"
    assert "row 2" in reason["cause"]
    assert run_record(aws, "up-1")["quarantine_uri"] == summary.quarantine_uri


@pytest.mark.parametrize(
    ("key", "error"),
    [("datasets/run/people.csv", "DataValidationError"), ("incoming/people.csv", "TransientStoreError")],
)
def test_only_rejected_uploads_are_quarantined(aws: FakeAws, key: str, error: str) -> None:
    from pipeline_core.aws.s3 import ObjectStore

    dataset = aws.put(key, b"a,b\n1,2\n")
    event = failure_event({"config": {"run_id": "r-2", "dataset": dataset}}, "ValidateData", error, "x", "r-2")
    summary = record_failure(
        event,
        runs=RunLog(aws.runs_table, aws.dynamodb),
        registry=not_needed,
        endpoints=not_needed,
        store=lambda: ObjectStore(aws.s3),
    )
    assert summary.quarantine_uri is None
    assert aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix="quarantine/").get("KeyCount", 0) == 0


# --- once per execution -------------------------------------------------------------------------------


def test_a_retry_after_the_rollback_returns_the_recorded_summary(aws: FakeAws) -> None:
    """A RecordFailure retried after it finished (its response lost) must not act again: the endpoint
    now serves the champion, so acting again would record "left as it is" over the real rollback."""
    store = RecordStore(aws.bucket, aws.s3)
    deploy(store, "stepml-old-model", OLD_CONFIG)
    deploy(store, "stepml-new-model", NEW_CONFIG)
    standin.create_endpoint(store, {"EndpointName": ENDPOINT, "EndpointConfigName": OLD_CONFIG})
    standin.update_endpoint(store, {"EndpointName": ENDPOINT, "EndpointConfigName": NEW_CONFIG})
    ModelRegistry(aws.registry_table, aws.dynamodb).register_model(champion_record("iris", "f1_macro", 0.9))
    state = full_state(aws) | {"existing": {"count": 1}, "endpoint": {"EndpointName": ENDPOINT,
                                                                      "EndpointStatus": "InService"}}  # fmt: skip
    event = failure_event(state, "Register", "TransientStoreError", "throttled", "run-1")

    first = run(aws, event)
    history = store.get("endpoints", ENDPOINT)
    second = run(aws, event)

    assert first.rollback == f"endpoint {ENDPOINT} rolled back to model v1 ({OLD_CONFIG})"
    assert second == first
    assert store.get("endpoints", ENDPOINT) == history  # no second update
    record = run_record(aws, "run-1")
    assert record["rollback"] == first.rollback and record["failed_at"] == first.failed_at


def test_a_retry_without_rollback_returns_the_recorded_summary(aws: FakeAws) -> None:
    state = {"config": {"run_id": "r-3", "dataset": "s3://b/datasets/r-3/x.csv"}}
    event = failure_event(state, "ValidateData", "DataValidationError", "bad row", "r-3")
    first = run(aws, event, endpoints=not_needed)
    RunLog(aws.runs_table, aws.dynamodb).update_run("r-3", cause="changed by someone else")
    second = run(aws, event, endpoints=not_needed)
    assert second == first.model_copy(update={"cause": "changed by someone else"})  # read back, not redone
    assert run_record(aws, "r-3")["failure_handled_at"]


def test_another_execution_with_the_run_id_is_recorded_again(aws: FakeAws) -> None:
    state = {"config": {"run_id": "r-4", "dataset": "s3://b/datasets/r-4/x.csv"}}
    run(aws, failure_event(state, "ValidateData", "DataValidationError", "first", "r-4"), endpoints=not_needed)
    other = failure_event(state, "Ingest", "DatasetNotFoundError", "second", "r-4")
    other["execution_arn"] = EXECUTION.format("r-4").replace("stepml-pipeline", "another-machine")
    summary = run(aws, other, endpoints=not_needed)
    assert summary.failed_state == "Ingest" and run_record(aws, "r-4")["cause"] == "second"
