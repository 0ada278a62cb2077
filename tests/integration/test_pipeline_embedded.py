"""The real definition, run end to end on the embedded target, for a classification and a regression set."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from stepml.cli import main
from stepml.embedded.runtime import EmbeddedAws
from stepml.project import project_layout
from tests.integration.conftest import REPO, PipelineRun
from tests.integration.test_failure_paths import CREATE_PATH

pytestmark = pytest.mark.slow

# the path of a first run: every step runs (the step cache has nothing to offer yet), up to the deployment
HAPPY_PATH = CREATE_PATH[: CREATE_PATH.index("CreateOrUpdateEndpoint") + 1]


def _visited(run: PipelineRun) -> list[str]:
    return [state["name"] for state in run.result["states"]]


def _load_model(aws: EmbeddedAws, artifact: str) -> list[str]:
    import importlib.util

    bucket, key = artifact.removeprefix("s3://").split("/", 1)
    blob = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    spec = importlib.util.spec_from_file_location("stepml_inference_test", REPO / "training" / "inference.py")
    assert spec and spec.loader
    inference = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = inference  # dataclasses in the module look themselves up there
    spec.loader.exec_module(inference)
    with tempfile.TemporaryDirectory() as model_dir:
        with tarfile.open(fileobj=io.BytesIO(blob)) as archive:
            archive.extractall(model_dir, filter="data")
        bundle = inference.model_fn(model_dir)
        frame = pd.read_csv(REPO / "data" / "iris.csv").drop(columns="species").head(5)
        return list(inference.predict_fn(frame, bundle))


def test_classification_run_succeeds_and_registers(iris_run: PipelineRun) -> None:
    assert iris_run.exit_code == 0, iris_run.output
    result = iris_run.result
    assert result["status"] == "SUCCEEDED"
    assert _visited(iris_run)[: len(HAPPY_PATH)] == HAPPY_PATH
    assert _visited(iris_run)[-3:] == ["Register", "Notify", "Succeeded"]
    assert "CreateEndpoint" in _visited(iris_run) or "UpdateEndpoint" in _visited(iris_run)
    assert result["metrics"]["f1_macro"] > 0.8
    assert result["metrics"]["accuracy"] > 0.8
    registry = result["registry"]
    assert registry["model_name"] == "iris-species"  # the file and the target
    assert registry["status"] == "approved"
    assert registry["version"] == result["model_version"] >= 1
    assert registry["target"] == "species"
    assert registry["problem_type"] == "multiclass_classification"
    assert registry["training_job_name"] in result["model_artifact"]
    assert registry["endpoint_name"] == result["endpoint_name"]
    # every SageMaker name of the run is under the stage's prefix stepml-<Stage>- (the stack's IAM allows no other)
    stage_prefix = result["endpoint_name"].removesuffix(f"{registry['model_name']}-ep")
    assert stage_prefix.count("-") == 2 and registry["training_job_name"].startswith(stage_prefix)
    assert registry["endpoint_config_name"].startswith(stage_prefix)
    assert registry["execution_arn"] == result["execution_arn"]
    assert len(registry["dataset_sha256"]) == 64
    assert Path(result["report_path"]).read_text().count("<img") >= 1


def test_regression_run_succeeds(diabetes_run: PipelineRun) -> None:
    assert diabetes_run.exit_code == 0, diabetes_run.output
    result = diabetes_run.result
    assert result["registry"]["problem_type"] == "regression"
    assert result["metrics"]["r2"] > 0.2
    assert result["metrics"]["rmse"] > 0


def test_artifact_in_s3_loads_with_model_fn(iris_run: PipelineRun, state_dir: Path) -> None:
    with EmbeddedAws(project_layout()) as aws:
        predictions = _load_model(aws, iris_run.result["model_artifact"])
    assert list(predictions) == ["setosa"] * 5


def test_state_persists_for_later_commands(iris_run: PipelineRun, diabetes_run: PipelineRun) -> None:
    out = io.StringIO()
    assert main(["models", "--json"], out=out) == 0
    models = {(m["model_name"], m["version"]) for m in json.loads(out.getvalue())}
    assert (iris_run.result["model_name"], iris_run.result["model_version"]) in models
    assert (diabetes_run.result["model_name"], diabetes_run.result["model_version"]) in models
    # the table says why each version was approved or rejected (the registry record keeps the reason)
    out = io.StringIO()
    assert main(["models", "--model", "iris-species"], out=out) == 0
    reason = iris_run.result["registry"]["gate_reason"]
    assert reason and reason.startswith("f1_macro") and "threshold" in reason
    assert reason in out.getvalue() and out.getvalue().splitlines()[0].endswith("GATE")
    out = io.StringIO()
    assert main(["runs", "--json"], out=out) == 0
    arns = {r["execution_arn"] for r in json.loads(out.getvalue())}
    assert {iris_run.result["execution_arn"], diabetes_run.result["execution_arn"]} <= arns


def test_the_run_record_registry_and_runs_name_the_definition_version(iris_run: PipelineRun) -> None:
    from pipeline_core.aws.definition_version import definition_hash
    from pipeline_core.aws.runs import RunLog

    from stepml.embedded.template import substitute_definition

    assert iris_run.exit_code == 0, iris_run.output
    # the embedded target starts runs unversioned (moto cannot start through an alias), so the version is
    # the hash of the definition it deployed: the checkout's definition with the local substitutions
    with EmbeddedAws(project_layout()) as aws:
        assert aws.stack.state_machine_definition is not None
        deployed = substitute_definition(aws.stack.state_machine_definition.read_text(), aws.stack.substitutions)
        run_id = iris_run.result["execution_arn"].rsplit(":", 1)[-1]
        record = RunLog(aws.outputs.runs_table, aws.client("dynamodb")).get_run(run_id)
    version = definition_hash(deployed)
    assert record is not None and record["definition_version"] == version
    assert iris_run.result["registry"]["definition_version"] == version

    out = io.StringIO()
    assert main(["runs", "--json"], out=out) == 0
    [row] = [r for r in json.loads(out.getvalue()) if r["execution_arn"] == iris_run.result["execution_arn"]]
    assert row["definition_version"] == version
    out = io.StringIO()
    assert main(["runs"], out=out) == 0
    header, *lines = out.getvalue().splitlines()
    assert header.split()[:3] == ["NAME", "STATUS", "VERSION"]
    assert any(line.startswith(run_id) and f" {version} " in line for line in lines)
    out = io.StringIO()
    assert main(["models", "--json"], out=out) == 0
    models = {(m["model_name"], m["version"]): m for m in json.loads(out.getvalue())}
    assert models[(iris_run.result["model_name"], iris_run.result["model_version"])]["definition_version"] == version


def test_second_run_updates_endpoint_and_bumps_version(iris_run: PipelineRun, state_dir: Path) -> None:
    from tests.integration.conftest import run_cli

    again = run_cli("--data", str(REPO / "data" / "iris.csv"), "--no-cache")  # a new model, not the cached one
    assert again.exit_code == 0, again.output
    assert again.result["model_version"] == iris_run.result["model_version"] + 1
    assert "UpdateEndpoint" in _visited(again)
