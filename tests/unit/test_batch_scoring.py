"""PrepareBatch and AssembleBatch on a moto account: which version scores, what is checked before a transform
job would fail late, what the transform job gets, the scored file, and retries that find the work done."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.errors import BatchOutputError, DataValidationError, InputValidationError
from pipeline_core.stages.batch_request import (
    BatchPlan,
    TransformSummary,
    parse_request,
    request_json_schema,
    transform_job_name,
)
from pipeline_core.stages.batch_scoring import assemble_output, prepare

from tests.conftest import FakeAws

FEATURES = ["sepal_length", "petal_length"]
KINDS = {"sepal_length": "numeric", "petal_length": "numeric"}
RUN = "batch-scores-20261130T000000-abc123"
PREFIX = "stepml-test"  # ENDPOINT_NAME_PREFIX (tests/conftest.py)
CSV = 'id,petal_length,sepal_length,note\nr1,1.4,5.1,ok\nr2,4.5,6.0,"a, b"\nr3,,5.5,\n'


class Catalog:
    """The SageMaker models that exist (the stand-in's or SageMaker's answer to DescribeModel)."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)

    def model_exists(self, model_name: str) -> bool:
        return model_name in self.names


def register(fake: FakeAws, status: str, model: str = "iris") -> dict[str, Any]:
    registry = ModelRegistry(fake.registry_table, fake.dynamodb)
    version = registry.latest_version(model) + 1
    job = f"stepml-run-{version}"
    record = {
        "model_name": model,
        "status": status,
        "problem_type": "multiclass_classification",
        "target": "species",
        "feature_columns": FEATURES,
        "metrics": {"f1_macro": 0.9},
        "primary_metric": "f1_macro",
        "model_artifact": f"s3://{fake.bucket}/models/{job}/output/model.tar.gz",
        "dataset_uri": f"s3://{fake.bucket}/raw/run-{version}/iris.csv",
        "dataset_sha256": "0" * 64,
        "training_job_name": job,
        "endpoint_name": "stepml-test-iris-ep" if status == "approved" else None,
        "endpoint_config_name": job if status != "rejected" else None,
        "execution_arn": f"arn:aws:states:us-east-1:123456789012:execution:pipeline:run-{version}",
        "evaluation_uri": f"s3://{fake.bucket}/models/{job}/evaluation/evaluation.json",
        "report_uri": f"s3://{fake.bucket}/models/{job}/evaluation/report.html",
        "created_at": "2026-11-01T00:00:00+00:00",
    }
    return registry.register_model(record).model_dump()


def run_prepare(fake: FakeAws, request: dict[str, Any], catalog: Catalog | None = None, **kwargs: Any) -> BatchPlan:
    return prepare(
        request,
        RUN,
        PREFIX,
        fake.bucket,
        ModelRegistry(fake.registry_table, fake.dynamodb),
        catalog or Catalog("stepml-run-1", "stepml-run-2", "stepml-run-3"),
        ObjectStore(fake.s3),
        lambda _artifact: KINDS,
        **kwargs,
    )


def request(fake: FakeAws, key: str = f"batch/{RUN}/input/scores.csv", **fields: Any) -> dict[str, Any]:
    return {"model_name": "iris", "input": f"s3://{fake.bucket}/{key}", **fields}


def test_prepare_scores_with_the_champion_and_writes_the_features_as_json_lines(aws: FakeAws) -> None:
    register(aws, "approved")
    register(aws, "approved")
    register(aws, "rejected")
    aws.put(f"batch/{RUN}/input/scores.csv", CSV.encode())
    plan = run_prepare(aws, request(aws))
    assert (plan.model_name, plan.model_version, plan.sagemaker_model_name) == ("iris", 2, "stepml-run-2")
    assert (plan.rows, plan.input_format, plan.output_format) == (3, "csv", "csv")
    assert plan.input_columns == ["id", "petal_length", "sepal_length", "note"]
    lines = aws.get(f"batch/{RUN}/transform-input/records.jsonl").decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"sepal_length": 5.1, "petal_length": 1.4},
        {"sepal_length": 6.0, "petal_length": 4.5},
        {"sepal_length": 5.5, "petal_length": None},
    ]
    assert plan.transform_input_prefix == f"s3://{aws.bucket}/batch/{RUN}/transform-input/"
    assert plan.transform_output_uri == f"s3://{aws.bucket}/batch/{RUN}/transform-output/records.jsonl.out"
    assert plan.output_uri == f"s3://{aws.bucket}/batch/{RUN}/output/scores.scored.csv"
    assert plan.transform_job_name == transform_job_name(RUN, PREFIX)
    # a named version, in another format
    named = run_prepare(aws, request(aws, model_version=1, output_format="parquet"))
    assert (named.model_version, named.sagemaker_model_name, named.output_format) == (1, "stepml-run-1", "parquet")
    assert named.output_uri.endswith("/output/scores.scored.parquet")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model_name": "penguins"}, "model 'penguins' is not in the registry; its models: iris"),
        (
            {"model_version": 9},
            "model 'iris' has no version 9; its versions: v3 rejected, v2 rolled_back, v1 approved$",
        ),
        ({"model_version": 3}, r"iris v3 \(rejected\) was never deployed, so it has no SageMaker model"),
        (
            {"model_version": 2},
            r"iris v2 \(rolled_back\): its SageMaker model stepml-run-2 does not exist \(any more\)",
        ),
        ({"key": "datasets/x/scores.csv"}, "batch scoring reads files under s3://stepml-test-data/batch/ only"),
        ({"speed": "fast"}, "invalid batch scoring input: speed: Extra inputs are not permitted"),
        ({"output_format": "xlsx"}, "output_format: Input should be 'csv' or 'parquet'"),
    ],
)
def test_what_cannot_be_scored_is_refused_before_the_file_is_read(
    aws: FakeAws, fields: dict[str, Any], message: str
) -> None:
    register(aws, "approved")
    register(aws, "rolled_back")
    register(aws, "rejected")
    aws.put(f"batch/{RUN}/input/scores.csv", CSV.encode())
    with pytest.raises(InputValidationError, match=message):
        run_prepare(aws, request(aws, **fields), Catalog("stepml-run-1"))
    assert not aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix=f"batch/{RUN}/transform-input/").get("Contents")


def test_no_approved_version_names_the_versions_there_are(aws: FakeAws) -> None:
    register(aws, "rejected")
    with pytest.raises(
        InputValidationError,
        match=re.escape("no approved version to score with (its versions: v1 rejected); name one with model_version"),
    ):
        run_prepare(aws, request(aws))


def test_file_problems_are_named_and_nothing_is_staged(aws: FakeAws) -> None:
    register(aws, "approved")
    aws.put(f"batch/{RUN}/input/scores.csv", b"id,petal_length\nr1,1.4\n")
    with pytest.raises(
        DataValidationError, match=r"lacks the feature column\(s\) \['sepal_length'\] that iris v1 needs"
    ):
        run_prepare(aws, request(aws))
    aws.put(f"batch/{RUN}/input/clash.csv", b"sepal_length,petal_length,prediction\n1,2,x\n")
    with pytest.raises(DataValidationError, match=r"already has a column 'prediction'.*--prediction-column"):
        run_prepare(aws, request(aws, key=f"batch/{RUN}/input/clash.csv"))
    with pytest.raises(
        DataValidationError, match=r"has \d+ bytes; batch scoring takes at most 10 \(BATCH_MAX_INPUT_BYTES\)"
    ):
        run_prepare(aws, request(aws, key=f"batch/{RUN}/input/clash.csv"), max_input_bytes=10)
    assert not aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix=f"batch/{RUN}/transform-input/").get("Contents")


def test_a_header_only_file_needs_no_transform_and_scores_to_a_header(aws: FakeAws) -> None:
    register(aws, "approved")
    aws.put(f"batch/{RUN}/input/scores.csv", b"id,sepal_length,petal_length\n")
    plan = run_prepare(aws, request(aws))
    assert plan.rows == 0
    assert not aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix=f"batch/{RUN}/transform-input/").get("Contents")
    result = assemble_output(plan, None, ObjectStore(aws.s3))
    assert aws.get(f"batch/{RUN}/output/scores.scored.csv") == b"id,sepal_length,petal_length,prediction\n"
    assert result.rows == 0 and result.transform_job_name is None


def test_assemble_joins_the_predictions_removes_the_intermediates_and_answers_a_retry_alike(aws: FakeAws) -> None:
    register(aws, "approved")
    aws.put(f"batch/{RUN}/input/scores.csv", CSV.encode())
    plan = run_prepare(aws, request(aws))
    aws.put(
        f"batch/{RUN}/transform-output/records.jsonl.out",
        b'{"prediction": "setosa"}\n"versicolor"\n\n{"prediction": "virginica"}\n',
    )
    transform = TransformSummary(TransformJobName=plan.transform_job_name, TransformJobStatus="Completed")
    result = assemble_output(plan, transform, ObjectStore(aws.s3))
    assert aws.get(f"batch/{RUN}/output/scores.scored.csv").decode().splitlines() == [
        "id,petal_length,sepal_length,note,prediction",
        "r1,1.4,5.1,ok,setosa",
        'r2,4.5,6.0,"a, b",versicolor',
        "r3,,5.5,,virginica",
    ]
    assert result.columns == [*plan.input_columns, "prediction"] and result.rows == 3
    assert aws.get(f"batch/{RUN}/input/scores.csv") == CSV.encode()  # the input is never changed
    for gone in ("transform-input/records.jsonl", "transform-output/records.jsonl.out"):
        assert not aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix=f"batch/{RUN}/{gone}").get("Contents")
    # a retried AssembleBatch (its answer lost) finds the scored file and answers the same
    assert assemble_output(plan, transform, ObjectStore(aws.s3)) == result


def test_assemble_refuses_an_output_that_does_not_line_up_and_writes_nothing(aws: FakeAws) -> None:
    register(aws, "approved")
    aws.put(f"batch/{RUN}/input/scores.csv", CSV.encode())
    plan = run_prepare(aws, request(aws))
    with pytest.raises(BatchOutputError, match=r"wrote no output at .*records\.jsonl\.out"):
        assemble_output(plan, None, ObjectStore(aws.s3))
    aws.put(f"batch/{RUN}/transform-output/records.jsonl.out", b'"a"\n"b"\n')
    with pytest.raises(BatchOutputError, match="has 2 predictions for 3 input rows"):
        assemble_output(plan, None, ObjectStore(aws.s3))
    aws.put(f"batch/{RUN}/input/scores.csv", b"other,columns\n1,2\n")
    with pytest.raises(
        BatchOutputError, match=r"changed while it was scored: its columns are now \['other', 'columns'\]"
    ):
        assemble_output(plan, None, ObjectStore(aws.s3))
    assert not aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix=f"batch/{RUN}/output/").get("Contents")


def test_transform_job_names_are_valid_unique_and_readable() -> None:
    pattern = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's
    names = [transform_job_name(n, PREFIX) for n in (RUN, RUN + "x", "batch-" + "y" * 74, "___", "batch-___")]
    assert all(pattern.match(n) and len(n) <= 63 for n in names)
    assert len(set(names)) == len(names)
    assert names[0] == f"stepml-test-batch-scores-20261130t000000-abc123-{names[0].rsplit('-', 1)[1]}"


def test_the_committed_schema_is_the_requests_and_the_example_passes_both() -> None:
    """After changing BatchRequest, regenerate the schema: ``python -c "import json; from
    pipeline_core.stages.batch_request import request_json_schema as s; open('events/batch-input.schema.json',
    'w').write(json.dumps(s(), indent=2) + '\\n')"``."""
    import jsonschema

    events = Path(__file__).parents[2] / "events"
    schema = json.loads((events / "batch-input.schema.json").read_text())
    assert schema == request_json_schema(), "events/batch-input.schema.json is stale: regenerate it"
    example = json.loads((events / "batch-input.example.json").read_text())
    jsonschema.validate(example, schema)
    assert parse_request(example).model_name == "iris-species"
    assert set(example) == set(schema["properties"])  # the example shows every field
