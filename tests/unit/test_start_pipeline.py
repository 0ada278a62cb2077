"""StartPipeline: an S3 upload under incoming/ starts exactly one run; other objects are ignored with a reason."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.errors import ConfigurationError, DatasetNotFoundError, InputValidationError
from pipeline_core.stages.start_pipeline import (
    EXECUTION_NAME_MAX,
    StartPipelineResult,
    execution_arn_for,
    execution_name,
    start_pipeline,
)
from sklearn.datasets import load_iris

from functions.start_pipeline import app as start_app
from tests.conftest import REGION, FakeAws, load_event

PASS_DEFINITION = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def iris_csv() -> bytes:
    """The iris dataset bundled with scikit-learn, as the CSV a user would upload."""
    return load_iris(as_frame=True).frame.to_csv(index=False).encode()


class Pipeline:
    """A moto state machine standing in for the pipeline (only its executions matter here)."""

    def __init__(self, aws: FakeAws, monkeypatch: pytest.MonkeyPatch) -> None:
        self.aws = aws
        self.sfn = boto3.client("stepfunctions", region_name=REGION)
        self.arn = self.sfn.create_state_machine(
            name="stepml-test-pipeline",
            definition=PASS_DEFINITION,
            roleArn="arn:aws:iam::123456789012:role/stepml-test-states",
        )["stateMachineArn"]
        monkeypatch.setenv("STATE_MACHINE_ARN", self.arn)

    def executions(self) -> list[dict[str, Any]]:
        return list(self.sfn.list_executions(stateMachineArn=self.arn)["executions"])

    def input_of(self, execution_arn: str) -> Any:
        return json.loads(self.sfn.describe_execution(executionArn=execution_arn)["input"])

    def start(self, event: dict[str, Any]) -> StartPipelineResult:
        return start_pipeline(event, sfn=self.sfn, store=ObjectStore(self.aws.s3))


@pytest.fixture
def pipeline(aws: FakeAws, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    yield Pipeline(aws, monkeypatch)


def upload_event(key: str, *, size: int = 2777, version_id: str | None = "v1", etag: str | None = "e1") -> dict:
    """The documented sample event with another key/size/version (fields absent when None)."""
    event = load_event("s3_object_created")
    obj = event["detail"]["object"]
    obj.update({"key": key, "size": size})
    for field, value in (("version-id", version_id), ("etag", etag)):
        if value is None:
            obj.pop(field, None)
        else:
            obj[field] = value
    return event


def test_upload_starts_one_run_with_the_dataset_as_input(aws: FakeAws, pipeline: Pipeline) -> None:
    event = load_event("s3_object_created")
    aws.put("incoming/iris.csv", iris_csv())

    result = pipeline.start(event)

    assert result.status == "started"
    assert result.dataset == f"s3://{aws.bucket}/incoming/iris.csv"
    [execution] = pipeline.executions()
    assert execution["executionArn"] == result.execution_arn
    assert execution["name"] == result.execution_name
    assert NAME_PATTERN.match(execution["name"]) and execution["name"].startswith("iris-csv-")
    dataset = f"s3://{aws.bucket}/incoming/iris.csv"
    assert pipeline.input_of(execution["executionArn"]) == {"dataset": dataset, "trigger": f"upload of {dataset}"}


def test_duplicate_delivery_starts_no_second_run(aws: FakeAws, pipeline: Pipeline) -> None:
    aws.put("incoming/iris.csv", iris_csv())
    event = load_event("s3_object_created")

    first = pipeline.start(event)
    second = pipeline.start(copy.deepcopy(event))

    assert (first.status, second.status) == ("started", "already_started")
    assert second.execution_arn == first.execution_arn
    assert len(pipeline.executions()) == 1


def test_a_new_version_of_the_same_key_starts_a_new_run(aws: FakeAws, pipeline: Pipeline) -> None:
    aws.put("incoming/iris.csv", iris_csv())

    first = pipeline.start(upload_event("incoming/iris.csv", version_id="v1"))
    second = pipeline.start(upload_event("incoming/iris.csv", version_id="v2"))

    assert (first.status, second.status) == ("started", "started")
    assert first.execution_name != second.execution_name
    assert len(pipeline.executions()) == 2


def test_race_between_two_deliveries_is_already_started(aws: FakeAws) -> None:
    """Both deliveries saw no execution; Step Functions refuses the loser's start: not an error."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    state_machine = "arn:aws:states:us-east-1:123456789012:stateMachine:stepml-test-pipeline"
    event = upload_event("incoming/iris.csv")
    name = execution_name(aws.bucket, "incoming/iris.csv", "v1", "e1")
    with Stubber(sfn) as stub:
        stub.add_client_error("describe_execution", "ExecutionDoesNotExist", http_status_code=400)
        stub.add_client_error("start_execution", "ExecutionAlreadyExists", http_status_code=400)
        result = start_pipeline(event, sfn=sfn, store=ObjectStore(aws.s3), environ={"STATE_MACHINE_ARN": state_machine})
        stub.assert_no_pending_responses()
    assert result.status == "already_started"
    assert result.execution_arn == execution_arn_for(state_machine, name)
    assert result.execution_arn == f"arn:aws:states:us-east-1:123456789012:execution:stepml-test-pipeline:{name}"


@pytest.mark.parametrize(
    ("key", "size", "why"),
    [
        ("raw/run-1/iris.csv", 2777, "not under incoming/"),
        ("incoming/readme.txt", 120, "not a .csv or .parquet file"),
        ("incoming/empty.csv", 0, "empty"),
        ("incoming/2026/", 0, "folder marker"),
    ],
)
def test_objects_that_are_not_data_are_ignored_with_the_reason(
    pipeline: Pipeline, key: str, size: int, why: str
) -> None:
    result = pipeline.start(upload_event(key, size=size))

    assert result.status == "ignored"
    assert result.reason is not None and why in result.reason
    assert result.key == key
    assert pipeline.executions() == []


def test_events_other_than_object_created_are_ignored(pipeline: Pipeline) -> None:
    event = load_event("s3_object_created")
    event["detail-type"] = "Object Deleted"

    result = pipeline.start(event)

    assert result.status == "ignored" and "Object Deleted" in (result.reason or "")
    assert pipeline.executions() == []


def test_parquet_uploads_start_runs(aws: FakeAws, pipeline: Pipeline) -> None:
    aws.put("incoming/iris.parquet", b"PAR1")
    assert pipeline.start(upload_event("incoming/iris.parquet", size=4)).status == "started"


def test_url_encoded_key_is_resolved_to_the_object_that_exists(aws: FakeAws, pipeline: Pipeline) -> None:
    aws.put("incoming/iris data.csv", iris_csv())

    result = pipeline.start(upload_event("incoming/iris+data.csv"))

    assert result.status == "started"
    assert result.dataset == f"s3://{aws.bucket}/incoming/iris data.csv"


def test_a_literal_plus_in_a_key_is_kept(aws: FakeAws, pipeline: Pipeline) -> None:
    aws.put("incoming/iris+setosa.csv", iris_csv())

    result = pipeline.start(upload_event("incoming/iris+setosa.csv"))

    assert result.dataset == f"s3://{aws.bucket}/incoming/iris+setosa.csv"


def test_key_found_in_neither_form_names_both(aws: FakeAws, pipeline: Pipeline) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"incoming/gone\+away\.csv.*incoming/gone away\.csv"):
        pipeline.start(upload_event("incoming/gone+away.csv"))
    assert pipeline.executions() == []


def test_execution_name_is_deterministic_short_and_valid() -> None:
    long_key = "incoming/" + "Quarterly Sales (EMEA) résumé v2 " * 6 + ".csv"

    name = execution_name("bucket", long_key, "v1", None)

    assert name == execution_name("bucket", long_key, "v1", None)
    assert len(name) <= EXECUTION_NAME_MAX and NAME_PATTERN.match(name)
    assert name != execution_name("other-bucket", long_key, "v1", None)
    assert name != execution_name("bucket", long_key, "v2", None)


def test_unversioned_upload_is_identified_by_its_etag() -> None:
    quoted = execution_name("bucket", "incoming/a.csv", None, '"abc"')
    assert quoted == execution_name("bucket", "incoming/a.csv", None, "abc")
    assert quoted != execution_name("bucket", "incoming/a.csv", None, "abd")


def test_upload_without_version_or_etag_is_refused(aws: FakeAws, pipeline: Pipeline) -> None:
    aws.put("incoming/iris.csv", iris_csv())
    with pytest.raises(InputValidationError, match=r"neither detail\.object\.version-id nor detail\.object\.etag"):
        pipeline.start(upload_event("incoming/iris.csv", version_id=None, etag=None))


def test_missing_state_machine_arn_fails_loudly(aws: FakeAws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_MACHINE_ARN", raising=False)
    aws.put("incoming/iris.csv", iris_csv())
    with pytest.raises(ConfigurationError, match="STATE_MACHINE_ARN"):
        start_pipeline(load_event("s3_object_created"), store=ObjectStore(aws.s3))


def test_handler_starts_a_run_and_answers_json(
    aws: FakeAws, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline_core import observability

    # Powertools Metrics reads its namespace at import, before the aws fixture sets the variable.
    if observability.metrics.provider.namespace is None:
        monkeypatch.setattr(observability.metrics.provider, "namespace", "stepml-test")
    aws.put("incoming/iris.csv", iris_csv())

    answer = start_app.lambda_handler(load_event("s3_object_created"), None)

    assert answer["status"] == "started"
    assert [e["executionArn"] for e in pipeline.executions()] == [answer["execution_arn"]]


def test_an_execution_started_through_the_alias_has_the_unqualified_execution_arn() -> None:
    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:pipeline"
    expected = "arn:aws:states:us-east-1:123456789012:execution:pipeline:run-1"
    assert execution_arn_for(machine + ":live", "run-1") == expected
    assert execution_arn_for(machine, "run-1") == expected
