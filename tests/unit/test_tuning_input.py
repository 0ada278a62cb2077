"""The execution input's ``tuning``: off by default, one field turns it on, built-in ranges per trainer, and
the objective regex that reads the built-in trainer's validation line."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pipeline_core.errors import InputValidationError
from pipeline_core.models import TuningConfig
from pipeline_core.stages.validate_input import build_run_config
from pipeline_core.standin.metrics import final_metric_values
from pipeline_core.tuning import BUILT_IN_METRIC_DEFINITIONS, OBJECTIVE_METRIC, default_ranges, parameter_ranges

DATASET = "s3://stepml-test-data/incoming/iris.csv"
# SageMaker's HyperParameterTuningJobName: at most 32 characters.
TUNING_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}$")


def tuning_of(execution_input: dict[str, Any], name: str = "run-2026-11-29") -> TuningConfig | None:
    return build_run_config({"dataset": DATASET, **execution_input}, name, "stepml-test-data", "stepml-test").tuning


def ranges_by_name(config: TuningConfig) -> dict[str, dict[str, Any]]:
    return {r["Name"]: r for kind in config.parameter_ranges.values() for r in kind}


def test_tuning_is_off_unless_the_input_turns_it_on() -> None:
    assert tuning_of({}) is None
    assert tuning_of({"tuning": None}) is None
    assert tuning_of({"tuning": False}) is None


def test_tuning_true_means_the_built_in_gradient_boosting_search() -> None:
    config = tuning_of({"tuning": True})

    assert config is not None
    assert (config.max_trials, config.max_parallel, config.strategy) == (6, 2, "Bayesian")
    assert config.objective_metric == OBJECTIVE_METRIC
    assert config.objective_metric in {d["Name"] for d in config.metric_definitions}
    assert ranges_by_name(config) == {
        "learning_rate": {"Name": "learning_rate", "MinValue": "0.02", "MaxValue": "0.3", "ScalingType": "Logarithmic"},
        "max_leaf_nodes": {"Name": "max_leaf_nodes", "MinValue": "8", "MaxValue": "64", "ScalingType": "Linear"},
        "min_samples_leaf": {"Name": "min_samples_leaf", "MinValue": "5", "MaxValue": "50", "ScalingType": "Linear"},
        "l2_regularization": {
            "Name": "l2_regularization",
            "MinValue": "0.0",
            "MaxValue": "1.0",
            "ScalingType": "Linear",
        },
    }
    assert {d["Name"] for d in config.parameter_ranges["IntegerParameterRanges"]} == {
        "max_leaf_nodes",
        "min_samples_leaf",
    }


@pytest.mark.parametrize("name", ["x", "a-very-long-execution-name-from-the-console-2026-11-29T23:59:59"])
def test_the_tuning_job_name_fits_sagemaker_and_leaves_room_for_its_training_jobs(name: str) -> None:
    config = tuning_of({"tuning": True}, name=name)

    assert config is not None and TUNING_NAME.match(config.job_name)
    assert config.job_name.startswith("stepml-")
    assert len(f"{config.job_name}-001-0123abcd") <= 63
    assert config.job_name != tuning_of({"tuning": True}, name=name + "2").job_name  # type: ignore[union-attr]


def test_a_hyperparameter_the_input_fixes_is_not_tuned() -> None:
    config = tuning_of({"tuning": {"max_trials": 3}, "hyperparameters": {"learning_rate": 0.1}})

    assert config is not None and "learning_rate" not in ranges_by_name(config)
    assert config.max_trials == 3


def test_given_ranges_replace_the_built_in_ones() -> None:
    config = tuning_of(
        {
            "tuning": {
                "max_trials": 4,
                "max_parallel": 8,
                "strategy": "Random",
                "ranges": {
                    "max_iter": {"min": 10, "max": 300, "scale": "log"},
                    "l2_regularization": {"min": 0, "max": 2, "type": "continuous"},
                    "loss": ["log_loss", "auto"],
                },
            }
        }
    )

    assert config is not None
    assert config.max_parallel == 4  # never more at a time than in all
    assert config.strategy == "Random"
    assert config.parameter_ranges == {
        "CategoricalParameterRanges": [{"Name": "loss", "Values": ["log_loss", "auto"]}],
        "ContinuousParameterRanges": [
            {"Name": "l2_regularization", "MinValue": "0.0", "MaxValue": "2.0", "ScalingType": "Linear"}
        ],
        "IntegerParameterRanges": [
            {"Name": "max_iter", "MinValue": "10", "MaxValue": "300", "ScalingType": "Logarithmic"}
        ],
    }


@pytest.mark.parametrize(
    ("tuning", "message"),
    [
        (
            {"ranges": {"learning_rate": {"min": 0, "max": 1, "scale": "log"}}},
            "learning_rate: a log scale needs min > 0",
        ),
        ({"ranges": {"max_iter": {"min": 50, "max": 10}}}, "max_iter: min 50 is above max 10"),
        ({"ranges": {"max_iter": {"min": 1.5, "max": 10, "type": "integer"}}}, "integer range needs integer min"),
        (
            {"ranges": {"max_iter": {"lo": 1, "hi": 10}}},
            "max_iter: min: Field required; max: Field required; lo: Extra inputs are not permitted",
        ),
        ({"ranges": {"max_iter": 5}}, "max_iter: must be {min, max"),
        ({"ranges": {"loss": []}}, "loss: a list of values needs at least one"),
        ({"ranges": {"target": ["a"]}}, "'target' is set by the pipeline"),
        ({"ranges": {}}, "must name at least one hyperparameter"),
        ({"max_trials": 0}, "tuning.max_trials"),
        ({"strategy": "Hyperband"}, "tuning.strategy"),
        ({"objective_regex": "score=([0-9.]+) (x)"}, "exactly one capture group"),
        ({"objective_regex": "score=([0-9."}, "not a valid regular expression"),
        ("yes", "tuning: Input should be a valid dictionary"),
    ],
)
def test_bad_tuning_input_is_reported_naming_what_is_wrong(tuning: Any, message: str) -> None:
    with pytest.raises(InputValidationError, match=re.escape(message)):
        tuning_of({"tuning": tuning})


def test_a_range_for_a_fixed_hyperparameter_is_refused() -> None:
    with pytest.raises(InputValidationError, match="learning_rate also fixed in hyperparameters"):
        tuning_of(
            {
                "tuning": {"ranges": {"learning_rate": {"min": 0.01, "max": 0.3}}},
                "hyperparameters": {"learning_rate": 0.1},
            }
        )


def test_a_user_objective_regex_is_the_only_metric() -> None:
    config = tuning_of({"tuning": {"objective_regex": r"val_auc=([0-9.]+)"}})

    assert config is not None
    assert config.metric_definitions == [{"Name": OBJECTIVE_METRIC, "Regex": r"val_auc=([0-9.]+)"}]


def test_linear_ranges_follow_the_problem_type() -> None:
    assert set(default_ranges("linear", "classification")) == {"C"}
    assert set(default_ranges("text", "regression")) == {"alpha"}
    assert set(default_ranges("linear", None)) == {"C", "alpha"}  # not known before ValidateData
    assert parameter_ranges(default_ranges("linear", "classification")) == {
        "ContinuousParameterRanges": [
            {"Name": "C", "MinValue": "0.01", "MaxValue": "100.0", "ScalingType": "Logarithmic"}
        ]
    }
    with pytest.raises(InputValidationError, match=r"give tuning\.ranges"):
        default_ranges("my-trainer", None)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "[train] validation metrics: f1_macro=0.9123, accuracy=0.9333, precision_macro=0.9",
            {OBJECTIVE_METRIC: 0.9123, "validation:f1_macro": 0.9123},
        ),
        (
            "[train] validation metrics: r2=-0.0412, rmse=12.5, mae=3e-2",
            {OBJECTIVE_METRIC: -0.0412, "validation:r2": -0.0412},
        ),
        ("[train] validation metrics: rmse=12.5, r2=8.5e-01", {OBJECTIVE_METRIC: 0.85, "validation:r2": 0.85}),
        ("[train] test metrics: f1_macro=0.5000, accuracy=0.5", {}),  # the test split never steers the tuning
        ("[train] validation metrics: accuracy=0.93, f1_macro=nan", {}),
    ],
)
def test_the_built_in_regexes_read_the_validation_line_of_train_py(line: str, expected: dict[str, float]) -> None:
    assert final_metric_values(BUILT_IN_METRIC_DEFINITIONS, ["[train] fitted ...", line]) == expected


def test_the_last_match_is_the_final_value() -> None:
    lines = ["[train] validation metrics: f1_macro=0.5", "noise", "[train] validation metrics: f1_macro=0.75"]
    assert final_metric_values(BUILT_IN_METRIC_DEFINITIONS, lines)[OBJECTIVE_METRIC] == 0.75


@pytest.mark.parametrize(
    ("argv", "tuning"),
    [([], None), (["--tune"], True), (["--tune", "3"], {"max_trials": 3})],
)
def test_the_cli_turns_tuning_on_with_one_flag(argv: list[str], tuning: Any) -> None:
    from stepml.cli import build_parser
    from stepml.run_input import options_input

    run = options_input(build_parser().parse_args(["run", *argv]), "target")
    start = options_input(build_parser().parse_args(["start", *argv]), "target_column")
    for execution_input in (run, start):
        assert execution_input.get("tuning") == tuning
        config = tuning_of({k: v for k, v in execution_input.items() if k != "dataset"})
        assert (config is None) == (tuning is None)  # and ValidateInput accepts what the flag made


def test_the_run_summary_says_which_training_job_won() -> None:
    from stepml.session import tuning_note

    note = tuning_note(
        {
            "HyperParameterTuningJobName": "stepml-run-1234abcd",
            "BestTrainingJobName": "stepml-run-1234abcd-002-0a1b2c3d",
            "TunedHyperParameters": {"max_leaf_nodes": "12", "learning_rate": "0.05"},
            "Objective": {"MetricName": "validation:objective", "Value": 0.96},
            "TrainingJobStatusCounters": {"Completed": 2, "NonRetryableError": 1, "Stopped": 0},
        }
    )
    assert note == (
        "best of 3 training jobs (1 not completed): stepml-run-1234abcd-002-0a1b2c3d, "
        "validation:objective 0.9600 with learning_rate=0.05, max_leaf_nodes=12"
    )
