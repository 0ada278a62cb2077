"""Lineage and column roles: what trained a model and on which columns, in evaluation.json, the report, the
registry record and the CLI's summary (issue 10 items 1 and 7)."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.models import DataProfile, PreprocessResult, RunConfig, TrainingSummary
from pipeline_core.stages.lineage import code_lineage, column_rows, dropped_rows

from stepml.session import RunOutcome, column_roles, columns_line, print_summary
from tests.conftest import FakeAws
from tests.unit.test_evaluate import run_evaluate, state_for, trained
from tests.unit.test_register import run_register

CODE = b"trainer code tar.gz bytes"


def _with_roles(state: dict[str, Any]) -> dict[str, Any]:
    """The state as ValidateData and Preprocess with column roles leave it: an ID column excluded, two rows
    dropped, and the job's hyperparameters and image kept by Train's ResultSelector."""
    features = state["prep"]["feature_columns"]
    columns = [
        {"name": name, "dtype": "numeric", "role": "numeric", "reason": "numbers", "missing": 0} for name in features
    ]
    columns.insert(0, {"name": "id", "dtype": "numeric", "role": "identifier", "reason": "every value distinct",
                       "missing": 0})  # fmt: skip
    target = state["data"]["target"]
    columns.append({"name": target, "dtype": "categorical", "role": "target", "reason": "given in the input",
                    "missing": 2})  # fmt: skip
    state["data"] = {
        **state["data"],
        "columns": columns,
        "excluded_columns": {"id": "identifier: every value distinct"},
    }
    state["prep"] = {
        **state["prep"],
        "column_roles": dict.fromkeys(features, "numeric"),
        "excluded_columns": {"id": "identifier: every value distinct"},
        "dropped_rows": 2,
        "dropped_rows_by_reason": {"empty target": 2},
    }
    state["training"] = {
        **state["training"],
        "hyperparameters": {"sagemaker_program": "train.py", "sagemaker_submit_directory": "", "seed": "7"},
        "image": "123.dkr.ecr.us-east-1.amazonaws.com/sklearn:1.2-1",
    }
    return state


def test_evaluate_records_the_trainer_codes_hash_and_s3_version(aws: FakeAws) -> None:
    aws.s3.put_bucket_versioning(Bucket=aws.bucket, VersioningConfiguration={"Status": "Enabled"})
    code_uri = aws.put("code/trainers/abc.tar.gz", CODE)
    version = aws.s3.head_object(Bucket=aws.bucket, Key="code/trainers/abc.tar.gz")["VersionId"]
    state = _with_roles(state_for(aws, trained("iris")))
    state["training"]["hyperparameters"]["sagemaker_submit_directory"] = code_uri
    result = run_evaluate(aws, state)

    assert result.lineage is not None
    assert result.lineage.code_uri == code_uri
    assert result.lineage.code_sha256 == hashlib.sha256(CODE).hexdigest()
    assert result.lineage.code_version_id == version
    document = json.loads(aws.get("models/stepml-run-1-0a1b2c3d/evaluation/evaluation.json"))
    assert document["lineage"]["code_sha256"] == hashlib.sha256(CODE).hexdigest()
    assert document["lineage"]["image"].endswith("sklearn:1.2-1")
    assert document["identity"] == {"model_name": "iris", "target": "species",
                                    "problem_type": "multiclass_classification"}  # fmt: skip
    assert document["dropped_rows"] == {"empty target": 2}
    roles = {c["name"]: (c["role"], c["reason"]) for c in document["columns"]}
    assert roles["id"] == ("identifier", "identifier: every value distinct") and roles["species"][0] == "target"
    assert list(document["column_roles"]) == state["prep"]["feature_columns"]

    # the registry record carries it next to the data hash
    state["evaluation"] = result.model_dump(mode="json")
    registered = run_register(aws, state, "run-1")
    record = ModelRegistry(aws.registry_table, aws.dynamodb).get("iris", registered.version)
    assert record is not None
    assert (record.code_uri, record.code_sha256, record.code_version_id) == (
        code_uri,
        hashlib.sha256(CODE).hexdigest(),
        version,
    )
    assert record.image == state["training"]["image"] and record.hyperparameters["seed"] == "7"
    assert record.column_roles == dict.fromkeys(state["prep"]["feature_columns"], "numeric")
    assert record.trainer


def test_the_report_has_a_columns_table_and_the_rows_dropped(aws: FakeAws) -> None:
    state = _with_roles(state_for(aws, trained("iris"), job="stepml-report-1"))
    run_evaluate(aws, state)
    page = aws.get("models/stepml-report-1/evaluation/report.html").decode()
    assert "<h2>Columns</h2>" in page
    assert "<td>id</td><td>identifier</td><td>identifier: every value distinct</td><td>0</td>" in page
    assert "<li>empty target: 2</li>" in page


def test_code_that_is_gone_is_recorded_as_unknown_not_a_failure(aws: FakeAws) -> None:
    training = TrainingSummary.model_validate(
        {
            "TrainingJobName": "j",
            "TrainingJobStatus": "Completed",
            "ModelArtifacts": "s3://b/models/j/output/model.tar.gz",
            "hyperparameters": {"sagemaker_submit_directory": f'"s3://{aws.bucket}/code/gone.tar.gz"'},
        }
    )
    config = RunConfig.model_validate(state_for(aws, trained("iris"), job="stepml-gone")["config"])
    lineage = code_lineage(config, training, ObjectStore(aws.s3))
    # the SDK's JSON-quoted value is read as the URI it holds
    assert lineage.code_uri == f"s3://{aws.bucket}/code/gone.tar.gz" and lineage.code_sha256 is None


def test_columns_show_preprocess_roles_exclusions_and_the_target() -> None:
    def column(name: str, dtype: str, role: str, reason: str) -> dict[str, object]:
        return {"name": name, "dtype": dtype, "role": role, "reason": reason, "missing": 0}

    data = DataProfile.model_validate(
        {
            "n_rows": 10, "n_columns": 3, "target": "y", "target_chosen_by": "last_column",
            "problem_type": "regression", "problem_type_chosen_by": "inferred", "problem_type_reason": "r",
            "feature_columns": ["a", "b"],
            "columns": [column("a", "numeric", "numeric", "numbers"), column("b", "categorical", "text", "words"),
                        column("y", "numeric", "target", "")],
            "dropped_rows": {"empty target": 2, "none": 0},
        }
    )  # fmt: skip
    prep = PreprocessResult.model_validate(
        {"train_uri": "s3://b/t/", "validation_uri": "s3://b/v/", "test_uri": "s3://b/s/", "n_train": 6,
         "n_validation": 2, "n_test": 2, "feature_columns": ["a"], "dropped_rows": 3, "hyperparameters": {},
         "excluded_columns": {"b": "given in exclude_columns"}, "dropped_rows_by_reason": {"rare class": 1}}
    )  # fmt: skip
    rows = column_rows(data, prep)
    assert [(r.name, r.role, r.reason) for r in rows] == [
        ("a", "numeric", "numbers"),
        ("b", "text", "given in exclude_columns"),
        ("y", "target", "last column: the target"),
    ]
    assert dropped_rows(data, prep) == {"empty target": 2, "rare class": 1}
    bare = prep.model_copy(update={"dropped_rows_by_reason": {}})
    assert dropped_rows(data.model_copy(update={"dropped_rows": {}}), bare) == {"dropped by Preprocess": 3}


def test_the_summary_shows_each_columns_role_and_the_rows_dropped() -> None:
    data = {
        "target": "species",
        "feature_columns": ["sepal_length", "notes"],
        "columns": [
            {"name": "id", "dtype": "numeric", "role": "identifier", "reason": "every value distinct", "missing": 0},
            {"name": "sepal_length", "dtype": "numeric", "role": "numeric", "reason": "numbers", "missing": 0},
            {"name": "notes", "dtype": "categorical", "role": "text", "reason": "long free text", "missing": 3},
            {"name": "species", "dtype": "categorical", "role": "target", "reason": "last column", "missing": 0},
        ],
        "excluded_columns": {"id": "every value distinct"},
        "dropped_rows": {"empty target": 3},
    }
    prep = {"feature_columns": ["sepal_length", "notes"], "dropped_rows_by_reason": {"rare class (dropped)": 2}}
    columns = column_roles(data, prep)
    assert columns_line(columns) == (
        "2 used: sepal_length numeric, notes text; excluded: id (identifier: every value distinct)"
    )
    outcome = RunOutcome("arn", "SUCCEEDED", 1.0, model_name="iris-species", model_version=1, columns=columns)
    outcome.dropped_rows = {"empty target": 3, "rare class (dropped)": 2}
    outcome.model_choice = "linear scored r2=0.0100 vs gradient-boosting -0.0200 by 5-fold CV"
    outcome.trainer_notes = ["a constant model is all the data supports: linear scored r2=0.0100"]
    out = io.StringIO()
    print_summary(outcome, out)
    assert "Trainer     linear scored r2=0.0100 vs gradient-boosting" in out.getvalue()
    assert "Note        a constant model is all the data supports" in out.getvalue()
    assert "Columns     2 used: sepal_length numeric" in out.getvalue()
    assert "Dropped     5 rows: empty target 3, rare class (dropped) 2" in out.getvalue()
    as_json = outcome.to_json()
    assert as_json["columns"] == columns and as_json["dropped_rows"] == outcome.dropped_rows
    assert as_json["trainer_notes"] == outcome.trainer_notes and as_json["model_choice"] == outcome.model_choice
