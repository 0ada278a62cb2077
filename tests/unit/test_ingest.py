"""Ingest: the dataset is copied into raw/<run_id>/, hashed and recorded; the source is never touched."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from botocore.response import StreamingBody
from pipeline_core.aws.runs import RunLog
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.errors import ConfigurationError, DatasetNotFoundError, DatasetTooLargeError, DataValidationError
from pipeline_core.models import IngestResult, RunConfig
from pipeline_core.stages.data_path import LAMBDA_MAX_MEMORY_MB, MIB, DataPathSettings, choose_path
from pipeline_core.stages.ingest import detect_format, ingest
from pipeline_core.stages.validate_input import build_run_config
from sklearn.datasets import load_iris

from functions.ingest.app import lambda_handler
from stepml.embedded.template import stack_model

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

    first = ingest(config, EXECUTION_ARN, store, runs, settings=SETTINGS)
    second = ingest(config, EXECUTION_ARN, store, runs, settings=SETTINGS)

    assert first == second
    assert store.list_uris(config.raw_prefix) == [first.raw_uri]
    assert len(runs.runs()) == 1


def test_parquet_is_detected_by_extension(aws: Any) -> None:
    frame = pd.read_csv(io.BytesIO(iris_csv()))
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    source = aws.put("incoming/Iris.PARQUET", buffer.getvalue())

    result = ingest(
        config_for(aws, source), EXECUTION_ARN, ObjectStore(aws.s3), RunLog(aws.runs_table), settings=SETTINGS
    )

    assert result.format == "parquet"
    assert result.raw_uri.endswith("/raw/run-1/Iris.PARQUET")
    assert aws.get("raw/run-1/Iris.PARQUET") == buffer.getvalue()


def test_missing_dataset_names_the_uri_and_writes_nothing(aws: Any) -> None:
    source = f"s3://{aws.bucket}/incoming/nope.csv"
    store = ObjectStore(aws.s3)

    with pytest.raises(DatasetNotFoundError, match=f"dataset {source} does not exist"):
        ingest(config_for(aws, source), EXECUTION_ARN, store, RunLog(aws.runs_table), settings=SETTINGS)

    assert store.list_uris(f"s3://{aws.bucket}/raw/") == []


def test_missing_bucket_is_dataset_not_found(aws: Any) -> None:
    source = "s3://no-such-bucket-stepml/incoming/iris.csv"
    with pytest.raises(DatasetNotFoundError, match="no-such-bucket-stepml"):
        ingest(config_for(aws, source), EXECUTION_ARN, ObjectStore(aws.s3), RunLog(aws.runs_table), settings=SETTINGS)


def test_unsupported_extension_is_rejected_and_the_source_kept(aws: Any) -> None:
    data = (BAD_INPUTS / "wrong_extension.txt").read_bytes()
    source = aws.put("incoming/wrong_extension.txt", data)

    with pytest.raises(DataValidationError) as caught:
        ingest(config_for(aws, source), EXECUTION_ARN, ObjectStore(aws.s3), RunLog(aws.runs_table), settings=SETTINGS)

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


# --------------------------------------------------------------------------- size routing (issue 14)

SETTINGS = DataPathSettings(large_dataset_threshold_bytes=200 * MIB, data_stage_memory_mb=2048, memory_factor=9.5)
TEMPLATE = Path(__file__).parents[2] / "infra" / "template.yaml"


def test_a_dataset_within_the_threshold_takes_the_single_lambda_path_and_says_why() -> None:
    path, reason = choose_path(150 * MIB, SETTINGS)
    assert path == "single"
    assert "150.0 MiB" in reason and "LargeDatasetThresholdBytes (200.0 MiB" in reason
    assert "hold up to 215.6 MiB (226050910 bytes) with DataStageMemorySize 2048 MB" in reason


def test_over_the_threshold_without_sharding_the_message_names_both_ways_out() -> None:
    with pytest.raises(DatasetTooLargeError) as caught:
        choose_path(920 * 1000 * 1000, SETTINGS)
    message = str(caught.value)
    assert "over LargeDatasetThresholdBytes (200.0 MiB (209715200 bytes)), the largest the single-Lambda" in message
    assert "ShardThresholdBytes is not set, so it cannot take the sharded path: set it" in message
    assert "use a sample of at most 200.0 MiB (209715200 bytes)." in message
    assert "raise the LargeDatasetThresholdBytes parameter to at least 920000000 and," in message
    assert message.endswith("raise DataStageMemorySize to at least 8336 MB - docs/data-scale.md")


def test_over_a_low_threshold_the_message_says_how_far_to_raise_it() -> None:
    low = DataPathSettings(large_dataset_threshold_bytes=1000, data_stage_memory_mb=2048, memory_factor=9.5)
    with pytest.raises(DatasetTooLargeError) as caught:
        choose_path(3870, low)
    message = str(caught.value)
    assert "use a sample of at most 1000 bytes. To take it whole, raise the LargeDatasetThresholdBytes" in message
    assert "parameter to at least 3870 (ValidateData and Preprocess hold up to 215.6 MiB" in message
    assert "raise DataStageMemorySize" not in message


SHARDED = DataPathSettings(
    large_dataset_threshold_bytes=200 * MIB,
    data_stage_memory_mb=2048,
    memory_factor=9.5,
    shard_threshold_bytes=100 * MIB,
)


def test_a_csv_over_the_threshold_takes_the_sharded_path_up_to_what_writesplits_holds() -> None:
    path, reason = choose_path(1600 * 1000 * 1000, SHARDED)  # issue 14's 10M rows
    assert path == "sharded"
    assert "validation and preprocessing are sharded on Distributed Maps" in reason
    assert "takes a CSV up to 5120.0 MiB (5368709120 bytes)" in reason
    assert "about 53,687,091 rows (PlanSplit and WriteSplits hold about 40 bytes a row" in reason
    with pytest.raises(DatasetTooLargeError, match=r"Use a sample of at most 5120.0 MiB"):
        choose_path(6 * 1024 * MIB, SHARDED)


def test_parquet_over_the_threshold_is_still_refused_and_told_to_use_a_csv() -> None:
    with pytest.raises(DatasetTooLargeError, match="only a CSV takes the sharded path, and this dataset is parquet"):
        choose_path(300 * MIB, SHARDED, "parquet")


def test_a_threshold_above_what_the_memory_holds_is_refused_naming_both_settings() -> None:
    disagreeing = DataPathSettings(
        large_dataset_threshold_bytes=512 * MIB, data_stage_memory_mb=2048, memory_factor=9.5
    )
    with pytest.raises(DatasetTooLargeError) as caught:
        choose_path(300 * MIB, disagreeing)
    message = str(caught.value)
    assert "would run out of memory" in message
    assert "raise DataStageMemorySize to at least 2850 MB, or lower LargeDatasetThresholdBytes to 226050910" in message


def test_beyond_lambdas_largest_memory_the_advice_is_a_sample() -> None:
    with pytest.raises(DatasetTooLargeError, match=r"more than Lambda's largest MemorySize \(10240 MB\): use a sample"):
        choose_path(2000 * MIB, SETTINGS)


def test_settings_come_from_the_environment_and_a_bad_one_is_named() -> None:
    env = {
        "LARGE_DATASET_THRESHOLD_BYTES": "209715200",
        "DATA_STAGE_MEMORY_MB": "2048",
        "DATA_STAGE_MEMORY_FACTOR": "9.5",
    }
    assert DataPathSettings.from_env(env) == SETTINGS
    with pytest.raises(ConfigurationError, match="DATA_STAGE_MEMORY_MB is not set"):
        DataPathSettings.from_env({**env, "DATA_STAGE_MEMORY_MB": ""})
    with pytest.raises(ConfigurationError, match="LARGE_DATASET_THRESHOLD_BYTES must be a positive number, got '1GB'"):
        DataPathSettings.from_env({**env, "LARGE_DATASET_THRESHOLD_BYTES": "1GB"})
    with pytest.raises(ConfigurationError, match="DATA_STAGE_MEMORY_FACTOR must be positive"):
        DataPathSettings.from_env({**env, "DATA_STAGE_MEMORY_FACTOR": "0"})


def test_the_templates_threshold_agrees_with_the_data_stages_memory() -> None:
    """The defaults a deployment gets: the threshold is within what ValidateData and Preprocess hold, and
    Ingest, ValidateData and Preprocess all read the same parameters."""
    stack = stack_model(TEMPLATE, "stepml-local", {"Target": "local"})
    functions = {spec.logical_id: spec for spec in stack.functions.values()}
    ingest_env = functions["IngestFunction"].environment
    settings = DataPathSettings.from_env(ingest_env)
    assert settings.large_dataset_threshold_bytes <= settings.single_lambda_capacity_bytes
    for stage in ("ValidateDataFunction", "PreprocessFunction"):
        assert functions[stage].memory_mb == settings.data_stage_memory_mb
        assert functions[stage].environment["MAX_DATASET_BYTES"] == ingest_env["LARGE_DATASET_THRESHOLD_BYTES"]


def test_the_sharded_stages_have_what_the_sharded_limit_assumes() -> None:
    """WriteSplits has the /tmp the sharded cap counts on, the sharded stages DataStageMemorySize (the row cap),
    and PlanSplit finds SplitDataset's manifest by the same ShardSizeBytes."""
    from pipeline_core.stages.data_path import SHARDED_STORAGE_MB

    from tests.unit.test_template import load_template

    resources = load_template()["Resources"]
    assert resources["WriteSplitsFunction"]["Properties"]["EphemeralStorage"]["Size"] == SHARDED_STORAGE_MB
    stack = stack_model(TEMPLATE, "stepml-local", {"Target": "local"})
    functions = {spec.logical_id: spec for spec in stack.functions.values()}
    memory = DataPathSettings.from_env(functions["IngestFunction"].environment).data_stage_memory_mb
    for stage in ("PlanSplitFunction", "PreprocessShardFunction", "WriteSplitsFunction"):
        assert functions[stage].memory_mb == memory, stage
    shard_size = functions["SplitDatasetFunction"].environment["SHARD_SIZE_BYTES"]
    assert functions["PlanSplitFunction"].environment["SHARD_SIZE_BYTES"] == shard_size


def test_preprocess_has_the_tmp_space_any_admitted_dataset_needs() -> None:
    """Preprocess streams through /tmp (~2.5x the dataset at its peak: the download, the spools, the splits);
    Lambda's default 512 MB would fail a dataset of ~200 MB, the default threshold, on AWS."""
    from tests.unit.test_template import load_template

    properties = load_template()["Resources"]["PreprocessFunction"]["Properties"]
    stack = stack_model(TEMPLATE, "stepml-local", {"Target": "local"})
    ingest = next(s for s in stack.functions.values() if s.logical_id == "IngestFunction")
    factor = DataPathSettings.from_env(ingest.environment).memory_factor
    largest_admitted_mb = LAMBDA_MAX_MEMORY_MB / factor  # what the largest MemorySize holds
    assert properties["EphemeralStorage"]["Size"] >= 2.5 * largest_admitted_mb


def test_a_dataset_too_large_is_refused_before_anything_is_copied(aws: Any) -> None:
    source = aws.put("incoming/iris.csv", iris_csv())
    small = DataPathSettings(large_dataset_threshold_bytes=1000, data_stage_memory_mb=2048, memory_factor=9.5)
    store = ObjectStore(aws.s3)

    with pytest.raises(DatasetTooLargeError, match=r"LargeDatasetThresholdBytes \(1000 bytes\)"):
        ingest(config_for(aws, source), EXECUTION_ARN, store, RunLog(aws.runs_table), settings=small)

    assert store.list_uris(f"s3://{aws.bucket}/raw/") == []


def test_the_result_says_which_path_the_run_takes(aws: Any) -> None:
    source = aws.put("incoming/iris.csv", iris_csv())
    result = ingest(
        config_for(aws, source), EXECUTION_ARN, ObjectStore(aws.s3), RunLog(aws.runs_table), settings=SETTINGS
    )
    assert (
        result.path == "single"
        and result.path_reason is not None
        and "within LargeDatasetThresholdBytes" in result.path_reason
    )


class _GeneratedBytes(io.RawIOBase):
    """A stream of ``size`` deterministic bytes made as they are read: an S3 body that is never whole in memory."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = bytes(range(256)) * 4096  # 1 MiB

    def readable(self) -> bool:
        return True

    def read(self, amount: int = -1) -> bytes:
        amount = self.left if amount is None or amount < 0 else min(amount, self.left)
        self.left -= amount
        return (self.block * (amount // len(self.block) + 1))[:amount]


class _LargeObjectS3:
    """The S3 calls Ingest makes, over an object of ``size`` generated bytes (moto would hold it whole)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.copies: list[dict[str, Any]] = []

    def head_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        return {"ContentLength": self.size}

    def copy_object(self, **request: Any) -> dict[str, Any]:
        self.copies.append(request)
        return {}

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        return {"Body": StreamingBody(_GeneratedBytes(self.size), self.size)}


def test_ingest_hashes_a_large_object_in_bounded_memory(aws: Any) -> None:
    """Before: Ingest read the whole object to hash it (a ~920 MB file ran out of memory before any check)."""
    size = 96 * MIB
    expected = hashlib.sha256()
    body = _GeneratedBytes(size)
    while chunk := body.read(8 * MIB):
        expected.update(chunk)
    config = config_for(aws, f"s3://{aws.bucket}/incoming/big.csv")

    tracemalloc.start()
    try:
        result = ingest(
            config, EXECUTION_ARN, ObjectStore(_LargeObjectS3(size)), RunLog(aws.runs_table), settings=SETTINGS
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (result.sha256, result.size_bytes) == (expected.hexdigest(), size)
    assert peak < 40 * MIB  # measured 26 MiB (8 MiB chunks and the fake body making them); whole: 194 MiB


def test_an_object_over_the_single_copy_limit_is_copied_in_parts(aws: Any) -> None:
    data = bytes(range(256)) * (11 * 4096)  # 11 MiB: three parts of 5 MiB at most
    source = aws.put("incoming/big.csv", data)
    store = ObjectStore(aws.s3)
    destination = f"s3://{aws.bucket}/raw/run-1/big.csv"

    store.copy(source, destination, size=len(data), max_single_copy_bytes=5 * MIB, part_bytes=5 * MIB)

    assert aws.get("raw/run-1/big.csv") == data
    head = aws.s3.head_object(Bucket=aws.bucket, Key="raw/run-1/big.csv")
    assert head["ETag"].strip('"').endswith("-3")  # S3's ETag of a three-part upload
