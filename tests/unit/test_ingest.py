"""Ingest: the dataset is copied into raw/<run_id>/, hashed and recorded; the source is never touched."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pipeline_core.aws.runs import RunLog
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.errors import DatasetNotFoundError, DataValidationError
from pipeline_core.models import IngestResult, RunConfig
from pipeline_core.stages.ingest import detect_format, ingest
from pipeline_core.stages.validate_input import build_run_config
from sklearn.datasets import load_iris

from functions.ingest.app import lambda_handler

BAD_INPUTS = Path(__file__).parents[1] / "data" / "bad_inputs"
EXECUTION_ARN = "arn:aws:states:us-east-1:123456789012:execution:stepml:run-1"


def iris_csv() -> bytes:
    """The iris dataset (bundled with scikit-learn) as a CSV with named species."""
    bunch = load_iris(as_frame=True)
    frame = bunch.frame.copy()
    frame["species"] = frame.pop("target").map(dict(enumerate(bunch.target_names)))
    return frame.to_csv(index=False).encode()


def config_for(aws: Any, dataset: str, run_id: str = "run-1") -> RunConfig:
    return build_run_config({"dataset": dataset}, run_id, aws.bucket, "stepml-test")


@pytest.fixture
def metrics_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Powertools Metrics reads its namespace at import, before the aws fixture sets the variable."""
    from pipeline_core import observability

    if observability.metrics.provider.namespace is None:
        monkeypatch.setattr(observability.metrics.provider, "namespace", "stepml-test")


@pytest.mark.usefixtures("metrics_namespace")
def test_csv_is_copied_hashed_and_recorded(aws: Any) -> None:
    data = iris_csv()
    source = aws.put("incoming/iris.csv", data)
    config = config_for(aws, source)

    answer = lambda_handler({"config": config.model_dump(mode="json"), "execution_arn": EXECUTION_ARN}, None)
    result = IngestResult.model_validate(answer)

    assert result.raw_uri == f"s3://{aws.bucket}/raw/run-1/iris.csv"
    assert result.source_uri == source
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.size_bytes == len(data)
    assert result.format == "csv"
    assert aws.get("raw/run-1/iris.csv") == data
    assert aws.get("incoming/iris.csv") == data  # the source is left as it was

    record = RunLog(aws.runs_table).get_run("run-1")
    assert record is not None
    assert record["status"] == "RUNNING"
    assert record["dataset"] == source
    assert record["raw_uri"] == result.raw_uri
    assert record["sha256"] == result.sha256
    assert record["execution_arn"] == EXECUTION_ARN
    assert record["started_at"]


@pytest.mark.usefixtures("metrics_namespace")
def test_the_run_records_the_definition_version_its_execution_runs(aws: Any) -> None:
    import boto3
    from pipeline_core.aws.definition_version import definition_hash

    definition = '{"StartAt": "Only", "States": {"Only": {"Type": "Pass", "End": true}}}'
    sfn = boto3.client("stepfunctions")
    machine = sfn.create_state_machine(name="stepml", definition=definition, roleArn="arn:aws:iam::123456789012:role/r")
    started = sfn.start_execution(stateMachineArn=machine["stateMachineArn"], name="run-1")
    assert started["executionArn"] == EXECUTION_ARN
    config = config_for(aws, aws.put("incoming/iris.csv", iris_csv()))

    answer = lambda_handler({"config": config.model_dump(mode="json"), "execution_arn": EXECUTION_ARN}, None)

    # moto's executions start unversioned (no alias), so the version is the definition's hash
    assert IngestResult.model_validate(answer).definition_version == definition_hash(definition)
    record = RunLog(aws.runs_table).get_run("run-1")
    assert record is not None and record["definition_version"] == definition_hash(definition)


def test_a_retry_gives_the_same_result_and_one_raw_copy(aws: Any) -> None:
    source = aws.put("incoming/iris.csv", iris_csv())
    config = config_for(aws, source)
    store, runs = ObjectStore(aws.s3), RunLog(aws.runs_table, aws.dynamodb)

    first = ingest(config, EXECUTION_ARN, store, runs)
    second = ingest(config, EXECUTION_ARN, store, runs)

    assert first == second
    assert store.list_uris(config.raw_prefix) == [first.raw_uri]
    assert len(runs.runs()) == 1


def test_parquet_is_detected_by_extension(aws: Any) -> None:
    frame = pd.read_csv(io.BytesIO(iris_csv()))
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    source = aws.put("incoming/Iris.PARQUET", buffer.getvalue())

    result = ingest(config_for(aws, source), EXECUTION_ARN, ObjectStore(aws.s3), RunLog(aws.runs_table))

    assert result.format == "parquet"
    assert result.raw_uri.endswith("/raw/run-1/Iris.PARQUET")
    assert aws.get("raw/run-1/Iris.PARQUET") == buffer.getvalue()


def test_missing_dataset_names_the_uri_and_writes_nothing(aws: Any) -> None:
    source = f"s3://{aws.bucket}/incoming/nope.csv"
    store = ObjectStore(aws.s3)

    with pytest.raises(DatasetNotFoundError, match=f"dataset {source} does not exist"):
        ingest(config_for(aws, source), EXECUTION_ARN, store, RunLog(aws.runs_table))

    assert store.list_uris(f"s3://{aws.bucket}/raw/") == []


def test_missing_bucket_is_dataset_not_found(aws: Any) -> None:
    source = "s3://no-such-bucket-stepml/incoming/iris.csv"
    with pytest.raises(DatasetNotFoundError, match="no-such-bucket-stepml"):
        ingest(config_for(aws, source), EXECUTION_ARN, ObjectStore(aws.s3), RunLog(aws.runs_table))


def test_unsupported_extension_is_rejected_and_the_source_kept(aws: Any) -> None:
    data = (BAD_INPUTS / "wrong_extension.txt").read_bytes()
    source = aws.put("incoming/wrong_extension.txt", data)

    with pytest.raises(DataValidationError) as caught:
        ingest(config_for(aws, source), EXECUTION_ARN, ObjectStore(aws.s3), RunLog(aws.runs_table))

    assert "has extension '.txt'; accepted extensions: .csv, .parquet" in str(caught.value)
    assert aws.get("incoming/wrong_extension.txt") == data


@pytest.mark.parametrize(
    ("key", "expected"),
    [("a/b.csv", "csv"), ("a/b.CSV", "csv"), ("b.parquet", "parquet"), ("a/b.csv.gz", None), ("a/README", None)],
)
def test_detect_format(key: str, expected: str | None) -> None:
    if expected:
        assert detect_format(f"s3://bucket/{key}") == expected
    else:
        with pytest.raises(DataValidationError, match=r"accepted extensions: \.csv, \.parquet"):
            detect_format(f"s3://bucket/{key}")
