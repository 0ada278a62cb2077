"""Tuning on the embedded target through the real definition: TuneOrTrain → Tune (the stand-in's
CreateHyperParameterTuningJob, 3 training jobs, 2 at a time) → DescribeBestTrainingJob → Evaluate, and the
best training job's model is the one evaluated, registered and deployed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator
from pipeline_core.standin.store import RecordStore
from pipeline_core.standin.tuning import (
    describe_hyper_parameter_tuning_job,
    list_training_jobs_for_hyper_parameter_tuning_job,
)

from tests.integration.harness import IRIS, Finished, Harness, Job, embedded_harness

pytestmark = pytest.mark.slow

SAGEMAKER = botocore.session.get_session().get_service_model("sagemaker")


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    yield from embedded_harness()


@pytest.fixture(scope="module")
def tuned(h: Harness) -> Finished:
    dataset = h.upload("datasets/tuned/iris.csv", IRIS)
    job = Job(
        "tuned-iris", {"dataset": dataset, "model_name": "tuned-iris", "tuning": {"max_trials": 3, "max_parallel": 2}}
    )
    return h.run(job)


def _shape_problems(value: dict[str, Any], shape_name: str) -> str:
    """What botocore finds wrong in ``value`` as a ``shape_name`` (timestamps travel as ISO strings)."""
    report = ParamValidator().validate(value, SAGEMAKER.shape_for(shape_name))
    return report.generate_report() if report.has_errors() else ""


def test_the_best_training_job_goes_on_through_evaluate_and_is_registered(h: Harness, tuned: Finished) -> None:
    assert tuned.status == "SUCCEEDED", tuned.describe()
    path = tuned.path
    assert path[path.index("PrepareTrainingJob") :][:10] == [
        "PrepareTrainingJob",
        "LookupTraining",
        "TrainingCached",
        "TuneOrTrain",
        "Tune",
        "DescribeBestTrainingJob",
        "RememberTraining",
        "LookupEvaluation",
        "EvaluationCached",
        "Evaluate",
    ], path
    assert "Train" not in path

    tuning = tuned.output_of("Tune")["tuning"]
    config = tuned.output_of("ValidateInput")["config"]
    best = tuning["BestTrainingJobName"]
    assert tuning["HyperParameterTuningJobName"] == config["tuning"]["job_name"]
    assert re.fullmatch(rf"{config['tuning']['job_name']}-\d{{3}}-[0-9a-f]{{8}}", best)
    # under the stage's prefix, as the stack's IAM (stepml-${Stage}-*) requires, and within SageMaker's 32
    assert config["tuning"]["job_name"].startswith(f"{h.name_prefix}-") and len(config["tuning"]["job_name"]) <= 32
    assert set(tuning["TunedHyperParameters"]) == {
        "learning_rate",
        "max_leaf_nodes",
        "min_samples_leaf",
        "l2_regularization",
    }
    assert tuned.outcome.tuning == tuning  # what `stepml run` reports (its "Tuning" line, and --json)
    # DescribeBestTrainingJob put the best job in $.training as Train would have
    training = tuned.output_of("DescribeBestTrainingJob")["training"]
    assert {k: training[k] for k in ("TrainingJobName", "TrainingJobStatus", "ModelArtifacts")} == {
        "TrainingJobName": best,
        "TrainingJobStatus": "Completed",
        "ModelArtifacts": f"s3://{h.bucket}/models/{best}/output/model.tar.gz",
    }
    # the lineage keeps the best job's hyperparameters: the tuned values, not only the run's own
    assert {k: training["hyperparameters"][k] for k in tuning["TunedHyperParameters"]} == tuning["TunedHyperParameters"]
    [version] = h.model_versions("tuned-iris")
    assert {k: version.hyperparameters[k] for k in tuning["TunedHyperParameters"]} == tuning["TunedHyperParameters"]
    assert version.training_job_name == best and version.model_artifact == training["ModelArtifacts"]
    assert version.status == "approved" and version.metrics["f1_macro"] > 0.8
    endpoint = h.endpoint(h.endpoint_name("tuned-iris"))
    assert endpoint is not None and endpoint["EndpointStatus"] == "InService"


def test_describe_hyper_parameter_tuning_job_answers_sagemakers_shape(h: Harness, tuned: Finished) -> None:
    name = tuned.output_of("Tune")["tuning"]["HyperParameterTuningJobName"]
    store = RecordStore(h.bucket, h.s3)

    described = describe_hyper_parameter_tuning_job(store, {"HyperParameterTuningJobName": name})

    shape = SAGEMAKER.shape_for("DescribeHyperParameterTuningJobResponse")
    assert set(shape.required_members) <= set(described) <= set(shape.members)
    assert _shape_problems(described, "DescribeHyperParameterTuningJobResponse") == ""
    assert described["HyperParameterTuningJobStatus"] == "Completed"
    assert described["TrainingJobStatusCounters"]["Completed"] == 3
    assert described["ObjectiveStatusCounters"]["Succeeded"] == 3
    # the best is the training job with the highest objective, the one the run went on with
    jobs = list_training_jobs_for_hyper_parameter_tuning_job(store, {"HyperParameterTuningJobName": name})
    summaries = jobs["TrainingJobSummaries"]
    assert _shape_problems(jobs, "ListTrainingJobsForHyperParameterTuningJobResponse") == ""
    assert len(summaries) == 3
    best = max(summaries, key=lambda s: s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
    assert described["BestTrainingJob"] == best
    assert best["TrainingJobName"] == tuned.output_of("DescribeBestTrainingJob")["training"]["TrainingJobName"]
    # its objective is the validation f1_macro train.py printed, as the job's FinalMetricDataList has it
    record = store.get("training-jobs", best["TrainingJobName"])
    assert record is not None
    final = {m["MetricName"]: m["Value"] for m in record["FinalMetricDataList"]}
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == final["validation:f1_macro"]
