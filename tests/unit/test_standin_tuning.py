"""CreateHyperParameterTuningJob of the SageMaker stand-in: the ASL's Tune request, training jobs run as
normal CreateTrainingJobs some at a time, ranked by the objective read from their output."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from pipeline_core.errors import TuningFailedError
from pipeline_core.standin.actions import run_action
from pipeline_core.standin.errors import ResourceInUse, ValidationException
from pipeline_core.standin.store import RecordStore
from pipeline_core.standin.tuning import (
    ParameterRange,
    create_hyper_parameter_tuning_job,
    describe_hyper_parameter_tuning_job,
    list_training_jobs_for_hyper_parameter_tuning_job,
    parse_ranges,
    sample_hyperparameters,
)
from pipeline_core.tuning import BUILT_IN_METRIC_DEFINITIONS, OBJECTIVE_METRIC

from tests.conftest import FakeAws
from tests.unit.test_standin import ASL, asl_request, iris_splits, pipeline_state, select, upload_source, upload_splits

# A trainer whose validation score is its hyperparameter x; it notes when it ran, and fails or stays
# silent when told to.
SCORE_IS_X = """
    import json, os, sys, time
    from pathlib import Path
    started = time.time()
    hps = json.loads(os.environ["SM_HPS"])
    assert "_tuning_objective_metric" not in hps, "the toolkit keeps the tuner's parameter from the script"
    time.sleep(float(hps.get("sleep", 0)))
    x = float(hps["x"])
    if x < float(hps.get("fail_below", -1)):
        sys.exit("x too small: %s" % x)
    Path(os.environ["SM_MODEL_DIR"], "model.txt").write_text(str(x))
    # the script-mode contract's test predictions (the stand-in checks they are there)
    Path(os.environ["SM_OUTPUT_DATA_DIR"], "test_predictions.csv").write_text("y_true,y_pred\\na,a\\n")
    if not hps.get("quiet"):
        print("[train] validation metrics: f1_macro=%.6f, accuracy=0.5" % x, flush=True)
    Path(hps["log_dir"], "%s.json" % x).write_text(json.dumps({"start": started, "end": time.time()}))
"""
SERVICE = botocore.session.get_session().get_service_model("sagemaker")
TRAINING_JOB_NAME = r"^{}-\d{{3}}-[0-9a-f]{{8}}$"


@pytest.fixture
def store(aws: FakeAws) -> RecordStore:
    return RecordStore(aws.bucket, aws.s3)


def tune_request(
    aws: FakeAws, tmp_path: Path, run: str, trials: int, parallel: int, **hps: str
) -> tuple[dict[str, Any], Path]:
    """The Tune state's request for a run tuning ``x`` in [0, 1] of SCORE_IS_X; (request, its log folder)."""
    log_dir = tmp_path / "ran"
    log_dir.mkdir()
    upload_splits(aws, run, iris_splits())
    upload_source(aws, {"train.py": SCORE_IS_X}, tmp_path)
    state = pipeline_state(aws, run, {"target": "species", "log_dir": str(log_dir), **hps})
    state["config"]["tuning"] = {
        "job_name": f"tune-{run}",
        "strategy": "Bayesian",
        "max_trials": trials,
        "max_parallel": parallel,
        "objective_metric": OBJECTIVE_METRIC,
        "metric_definitions": list(BUILT_IN_METRIC_DEFINITIONS),
        "parameter_ranges": {
            "ContinuousParameterRanges": [{"Name": "x", "MinValue": "0", "MaxValue": "1", "ScalingType": "Linear"}]
        },
    }
    return asl_request("Tune", state), log_dir


def keys_of(shape_name: str) -> set[str]:
    return set(SERVICE.shape_for(shape_name).members)


def most_at_once(log_dir: Path) -> int:
    spans = [json.loads(p.read_text()) for p in log_dir.glob("*.json")]
    return max(sum(1 for o in spans if o["start"] <= s["start"] < o["end"]) for s in spans)


# --- sampling ---------------------------------------------------------------------------------------


def test_samples_stay_in_their_ranges_and_cover_each_one() -> None:
    ranges = parse_ranges(
        {
            "IntegerParameterRanges": [
                {"Name": "leaves", "MinValue": "8", "MaxValue": "64", "ScalingType": "Logarithmic"}
            ],
            "ContinuousParameterRanges": [
                {"Name": "rate", "MinValue": "0.02", "MaxValue": "0.3", "ScalingType": "Logarithmic"},
                {"Name": "l2", "MinValue": "0", "MaxValue": "1", "ScalingType": "Auto"},
                {"Name": "keep", "MinValue": "0.9", "MaxValue": "0.999", "ScalingType": "ReverseLogarithmic"},
            ],
            "CategoricalParameterRanges": [{"Name": "loss", "Values": ["a", "b", "c"]}],
        }
    )
    samples = sample_hyperparameters(ranges, 12, seed=7)

    assert len(samples) == 12 and all(set(s) == {"leaves", "rate", "l2", "keep", "loss"} for s in samples)
    assert all(re.fullmatch(r"\d+", s["leaves"]) and 8 <= int(s["leaves"]) <= 64 for s in samples)
    assert all(0.02 <= float(s["rate"]) <= 0.3 for s in samples)
    assert all(0.9 <= float(s["keep"]) <= 0.999 for s in samples)
    # a Latin hypercube: each twelfth of [0, 1) holds exactly one l2, of the log range exactly one rate
    assert sorted(math.floor(float(s["l2"]) * 12) for s in samples) == list(range(12))
    log_strata = [
        math.floor((math.log(float(s["rate"])) - math.log(0.02)) / math.log(0.3 / 0.02) * 12) for s in samples
    ]
    assert sorted(log_strata) == list(range(12))
    assert sorted(s["loss"] for s in samples) == ["a"] * 4 + ["b"] * 4 + ["c"] * 4  # every value equally often
    assert sample_hyperparameters(ranges, 12, seed=7) == samples  # a retry samples the same settings
    assert sample_hyperparameters(ranges, 12, seed=8) != samples


def test_an_integer_range_reaches_both_ends() -> None:
    [flag] = parse_ranges({"IntegerParameterRanges": [{"Name": "n", "MinValue": "0", "MaxValue": "1"}]})
    assert {flag.at(0.0), flag.at(0.49), flag.at(0.5), flag.at(0.999999)} == {"0", "1"}
    assert ParameterRange("c", "categorical", values=("x", "y")).at(0.999999) == "y"


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        (
            {
                "ContinuousParameterRanges": [
                    {"Name": "r", "MinValue": "0", "MaxValue": "1", "ScalingType": "Logarithmic"}
                ]
            },
            "MinValue > 0",
        ),
        ({"IntegerParameterRanges": [{"Name": "n", "MinValue": "5", "MaxValue": "1"}]}, "above MaxValue"),
        ({"IntegerParameterRanges": [{"Name": "n", "MinValue": "1.5", "MaxValue": "3"}]}, "must be integers"),
        ({"ContinuousParameterRanges": [{"Name": "r", "MinValue": "x", "MaxValue": "1"}]}, "'x' is not a number"),
        (
            {"CategoricalParameterRanges": [{"Name": "c", "Values": ["a"]}, {"Name": "c", "Values": ["b"]}]},
            "c more than once",
        ),
        ({}, "no range to tune"),
    ],
)
def test_bad_ranges_are_refused_as_sagemaker_refuses_them(ranges: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationException, match=re.escape(message)):
        parse_ranges(ranges)


# --- the tuning job ---------------------------------------------------------------------------------


def test_the_tune_request_runs_training_jobs_and_answers_with_the_best(
    aws: FakeAws, store: RecordStore, tmp_path: Path
) -> None:
    request, log_dir = tune_request(aws, tmp_path, "tune-best", trials=4, parallel=2)

    response = create_hyper_parameter_tuning_job(store, request)

    jobs = list_training_jobs_for_hyper_parameter_tuning_job(store, {"HyperParameterTuningJobName": "tune-tune-best"})
    summaries = jobs["TrainingJobSummaries"]
    assert len(summaries) == 4 == len(list(log_dir.glob("*.json")))
    assert all(re.match(TRAINING_JOB_NAME.format("tune-tune-best"), s["TrainingJobName"]) for s in summaries)
    best = max(summaries, key=lambda s: float(s["TunedHyperParameters"]["x"]))
    assert response["HyperParameterTuningJobStatus"] == "Completed"
    assert response["BestTrainingJob"] == best
    assert best["FinalHyperParameterTuningJobObjectiveMetric"] == {
        "Type": "Maximize",
        "MetricName": OBJECTIVE_METRIC,
        "Value": round(float(best["TunedHyperParameters"]["x"]), 6),
    }
    assert response["TrainingJobStatusCounters"] == {
        "Completed": 4, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0,
    }  # fmt: skip
    assert response["ObjectiveStatusCounters"] == {"Succeeded": 4, "Pending": 0, "Failed": 0}

    # the answer is DescribeHyperParameterTuningJob's shape, nothing the stand-in keeps for itself
    assert set(response) <= keys_of("DescribeHyperParameterTuningJobResponse")
    assert set(best) <= keys_of("HyperParameterTrainingJobSummary")
    assert describe_hyper_parameter_tuning_job(store, {"HyperParameterTuningJobName": "tune-tune-best"}) == response
    # each training job is a normal one: the static and tuned hyperparameters, and SageMaker's own
    trained = store.get("training-jobs", best["TrainingJobName"])
    assert trained is not None and trained["TrainingJobStatus"] == "Completed"
    assert trained["HyperParameters"] == {
        **request["TrainingJobDefinition"]["StaticHyperParameters"],
        "x": best["TunedHyperParameters"]["x"],
        "_tuning_objective_metric": OBJECTIVE_METRIC,
    }
    assert aws.get(trained["ModelArtifacts"]["S3ModelArtifacts"].split(f"{aws.bucket}/", 1)[1])
    # the ASL's ResultSelector finds what it selects
    selected = select(ASL["States"]["Tune"]["ResultSelector"], response)
    assert selected["BestTrainingJobName"] == best["TrainingJobName"]

    # A retried task finds the job completed: nothing trains again; another request under its name is refused.
    assert create_hyper_parameter_tuning_job(store, request) == response
    assert len(list(log_dir.glob("*.json"))) == 4
    other = json.loads(json.dumps(request))
    other["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"] = 5
    with pytest.raises(ResourceInUse, match="tune-tune-best"):
        create_hyper_parameter_tuning_job(store, other)


@pytest.mark.parametrize(("parallel", "cores", "expected"), [(3, 2, 2), (2, 1, 1)])
def test_training_jobs_run_at_most_max_parallel_and_cores_at_a_time(
    aws: FakeAws, store: RecordStore, tmp_path: Path, parallel: int, cores: int, expected: int
) -> None:
    request, log_dir = tune_request(aws, tmp_path, f"par-{parallel}", trials=3, parallel=parallel, sleep="1.5")

    create_hyper_parameter_tuning_job(store, request, cpu_count=cores)

    assert most_at_once(log_dir) == expected


def test_a_failed_training_job_is_counted_and_the_best_of_the_others_wins(
    aws: FakeAws, store: RecordStore, tmp_path: Path
) -> None:
    # x in [0, 1) cut in 4 strata: the two below 0.5 fail
    request, _ = tune_request(aws, tmp_path, "some-fail", trials=4, parallel=2, fail_below="0.5")

    response = create_hyper_parameter_tuning_job(store, request)

    assert response["HyperParameterTuningJobStatus"] == "Completed"
    assert response["TrainingJobStatusCounters"]["Completed"] == 2
    assert response["TrainingJobStatusCounters"]["NonRetryableError"] == 2
    assert response["ObjectiveStatusCounters"] == {"Succeeded": 2, "Pending": 0, "Failed": 2}
    assert float(response["BestTrainingJob"]["TunedHyperParameters"]["x"]) >= 0.75
    summaries = list_training_jobs_for_hyper_parameter_tuning_job(
        store, {"HyperParameterTuningJobName": "tune-some-fail", "StatusEquals": "Failed"}
    )["TrainingJobSummaries"]
    assert len(summaries) == 2 and all("x too small" in s["FailureReason"] for s in summaries)


def test_when_every_training_job_fails_the_tuning_job_fails_with_their_reasons(
    aws: FakeAws, store: RecordStore, tmp_path: Path
) -> None:
    request, _ = tune_request(aws, tmp_path, "all-fail", trials=2, parallel=2, fail_below="2")

    with pytest.raises(TuningFailedError) as failed:
        create_hyper_parameter_tuning_job(store, request)

    message = str(failed.value)
    assert message.count("x too small") == 2
    assert re.search(r"tune-all-fail-001-[0-9a-f]{8}: .*x too small", message)
    described = describe_hyper_parameter_tuning_job(store, {"HyperParameterTuningJobName": "tune-all-fail"})
    assert described["HyperParameterTuningJobStatus"] == "Failed"
    assert described["FailureReason"] == message
    assert described["TrainingJobStatusCounters"]["NonRetryableError"] == 2
    assert "BestTrainingJob" not in described


def test_a_training_job_without_the_objective_in_its_output_does_not_count(
    aws: FakeAws, store: RecordStore, tmp_path: Path
) -> None:
    request, _ = tune_request(aws, tmp_path, "quiet", trials=2, parallel=2, quiet="1")

    with pytest.raises(TuningFailedError, match="validation:objective was not found in the training job's output"):
        create_hyper_parameter_tuning_job(store, request)

    described = describe_hyper_parameter_tuning_job(store, {"HyperParameterTuningJobName": "tune-quiet"})
    assert described["TrainingJobStatusCounters"]["Completed"] == 2
    assert described["ObjectiveStatusCounters"]["Failed"] == 2


def test_no_training_job_starts_without_time_left_in_the_budget(
    aws: FakeAws, store: RecordStore, tmp_path: Path
) -> None:
    request, log_dir = tune_request(aws, tmp_path, "no-time", trials=2, parallel=2)

    with pytest.raises(TuningFailedError, match="2 of 2 training jobs were not started: the stand-in's time budget"):
        run_action("CreateHyperParameterTuningJob", request, store, time_budget_seconds=5)

    assert not list(log_dir.iterdir())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["HyperParameterTuningJobConfig"].update(Strategy="Hyperband"), "runs Bayesian and Random"),
        (
            lambda r: r["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"].update(MetricName="loss"),
            "objective metric 'loss' is not in",
        ),
        (lambda r: r["TrainingJobDefinition"]["StaticHyperParameters"].update(x="0.5"), "both static and tuned"),
        (lambda r: r.update(HyperParameterTuningJobName="a" * 33), "at most 32 characters"),
    ],
)
def test_a_request_sagemaker_would_refuse_is_refused_before_anything_runs(
    aws: FakeAws, store: RecordStore, tmp_path: Path, change: Any, message: str
) -> None:
    request, log_dir = tune_request(aws, tmp_path, "refused", trials=2, parallel=2)
    change(request)

    with pytest.raises(ValidationException, match=re.escape(message)):
        create_hyper_parameter_tuning_job(store, request)

    assert not list(log_dir.iterdir())
