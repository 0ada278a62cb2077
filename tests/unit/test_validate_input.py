"""ValidateInput: the execution input is checked, defaults filled, and names derived within SageMaker's limits."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pipeline_core.errors import ConfigurationError, InputValidationError
from pipeline_core.models import (
    DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    EXECUTION_TIMEOUT_SECONDS,
    MAX_APPROVAL_TIMEOUT_SECONDS,
    RunConfig,
)
from pipeline_core.sagemaker_names import run_token, slugify
from pipeline_core.stages.validate_input import build_run_config, input_json_schema, parse_input

from functions.validate_input.app import lambda_handler

SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def event(execution_input: Any, name: str = "run-2026-11-24") -> dict[str, Any]:
    """The event the ValidateInput state builds from its Parameters."""
    return {
        "input": execution_input,
        "execution_name": name,
        "execution_arn": f"arn:aws:states:us-east-1:123456789012:execution:stepml:{name}",
        "start_time": "2026-11-24T10:00:00.000Z",
    }


@pytest.fixture
def env(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The function's environment (the aws fixture sets what infra/template.yaml gives every function)."""
    from pipeline_core import observability

    # Powertools Metrics reads POWERTOOLS_METRICS_NAMESPACE when built (at import), before the fixture ran.
    if observability.metrics.provider.namespace is None:
        monkeypatch.setattr(observability.metrics.provider, "namespace", "stepml-test")


def config_of(result: dict[str, Any]) -> RunConfig:
    assert set(result) == {"config"}  # ResultPath "$": the whole state becomes {"config": ...}
    return RunConfig.model_validate(result["config"])


def test_only_dataset_given_fills_every_default(env: None) -> None:
    config = config_of(lambda_handler(event({"dataset": "s3://stepml-test-data/incoming/Iris Data.csv"}), None))

    # the default model name is the file and the target: ValidateData resolves it (test_identity.py)
    assert (config.model_name, config.endpoint_name, config.endpoint_name_prefix) == (None, None, "stepml-test")
    assert (config.target, config.problem_type, config.quality_threshold) == (None, None, None)
    assert (config.test_size, config.validation_size, config.seed, config.endpoint_poll_seconds) == (0.2, 0.2, 42, 30)
    assert config.hyperparameters == {}
    assert config.run_id == "run-2026-11-24"
    assert config.data_bucket == "stepml-test-data"
    assert config.raw_prefix == "s3://stepml-test-data/raw/run-2026-11-24/"
    assert config.processed_prefix == "s3://stepml-test-data/processed/run-2026-11-24/"
    assert config.models_prefix == "s3://stepml-test-data/models"


def test_full_input_is_kept_and_hyperparameters_become_strings(env: None) -> None:
    given = {
        "dataset": "s3://bucket/incoming/iris.csv",
        "target": "species",
        "problem_type": "classification",
        "model_name": "iris",
        "quality_threshold": 0.8,
        "hyperparameters": {"max_iter": 200, "learning_rate": 0.05, "l2_regularization": 0},
        "test_size": 0.25,
        "validation_size": 0.15,
        "seed": 7,
        "endpoint_poll_seconds": 5,
    }
    config = config_of(lambda_handler(event(given), None))

    assert config.hyperparameters == {"max_iter": "200", "learning_rate": "0.05", "l2_regularization": "0.0"}
    assert all(isinstance(v, str) for v in config.hyperparameters.values())
    assert (config.target, config.problem_type, config.model_name) == ("species", "classification", "iris")
    assert (config.quality_threshold, config.test_size, config.validation_size) == (0.8, 0.25, 0.15)
    assert (config.seed, config.endpoint_poll_seconds) == (7, 5)


def test_unknown_field_wrong_type_and_missing_dataset_are_reported_together(env: None) -> None:
    bad = {"datset": "s3://bucket/iris.csv", "seed": "forty-two", "test_size": "0.2"}
    with pytest.raises(InputValidationError) as caught:
        lambda_handler(event(bad), None)
    message = str(caught.value)

    assert "(4 problems)" in message
    assert "- dataset: required field is missing" in message
    assert "- datset: unknown field" in message
    assert "- seed: Input should be a valid integer (got 'forty-two')" in message
    assert "- test_size: Input should be a valid number (got '0.2')" in message
    # ...followed by every allowed field with its type and default
    assert "Allowed fields" in message
    assert "dataset: string; required" in message
    assert "seed: integer (>= 0, <= 4294967295); default 42" in message
    assert "endpoint_poll_seconds: integer (>= 1, <= 600); default 30" in message
    assert 'problem_type: "classification" | "regression" or null; optional' in message
    assert 'trainer: "auto" | "gradient-boosting" | "linear" | "text" or object with keys source (string; ' in message
    assert "linear, text: C, alpha" in message


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"hyperparameters": {"max_iter": 0}}, "hyperparameters.max_iter: Input should be greater than or equal to 1"),
        ({"hyperparameters": {"max_iter": 20000}}, "hyperparameters.max_iter: Input should be less than or equal"),
        ({"hyperparameters": {"learning_rate": 0}}, "hyperparameters.learning_rate: Input should be greater than 0"),
        ({"hyperparameters": {"max_leaf_nodes": 1}}, "hyperparameters.max_leaf_nodes: Input should be greater"),
        (
            {"hyperparameters": {"n_estimators": 10}},
            "hyperparameters.n_estimators: not a setting of the built-in trainer 'auto', which takes learning_rate",
        ),
        (
            {"trainer": "linear", "hyperparameters": {"max_iter": 10}},
            "hyperparameters.max_iter: not a setting of the built-in trainer 'linear', which takes C, alpha (got 10)",
        ),
        (
            {"trainer": "text", "hyperparameters": {"c": 1.0}},
            "hyperparameters.c: not a setting of the built-in trainer 'text', which takes C, alpha; did you mean 'C'?",
        ),
        ({"trainer": "linear", "hyperparameters": {"C": 0}}, "hyperparameters.C: Input should be greater than 0"),
        ({"trainer": "xgboost"}, "trainer: Input should be 'auto', 'gradient-boosting', 'linear' or 'text'"),
        ({"trainer": 3}, "trainer: must be a built-in trainer name or an object with a source (got 3)"),
        ({"trainer": {"entry_point": "train.py"}}, "trainer.source: required field is missing"),
        ({"trainer": {"source": "s3://b/t.zip"}}, "trainer.source: must be the S3 URI of a .tar.gz"),
        ({"trainer": {"source": "s3://b/t.tar.gz", "entry_point": "../x.py"}}, "trainer.entry_point: must be a .py"),
        ({"trainer": {"source": "s3://b/t.tar.gz", "image": "latest"}}, "trainer.image: must be a container image"),
        ({"trainer": {"source": "s3://b/t.tar.gz", "code": "x"}}, "trainer.code: unknown field"),
        (
            {"trainer": {"source": "s3://b/t.tar.gz"}, "hyperparameters": {"seed": 1}},
            "hyperparameters.seed: is set by the pipeline; choose another name (got 1)",
        ),
        (
            {"trainer": {"source": "s3://b/t.tar.gz"}, "hyperparameters": {"sagemaker_program": "x.py"}},
            "hyperparameters.sagemaker_program: is set by the pipeline",
        ),
        (
            {"trainer": {"source": "s3://b/t.tar.gz"}, "hyperparameters": {"ngram": [1, 2]}},
            "hyperparameters.ngram: must be a string, number or boolean (got [1, 2])",
        ),
        (
            {"trainer": {"source": "s3://b/t.tar.gz"}, "hyperparameters": {"--x": 1}},
            "hyperparameters.--x: a name is letters, digits",
        ),
        ({"hyperparameters": {"max_depth": 2.5}}, "hyperparameters.max_depth: Input should be a valid integer"),
        ({"seed": True}, "seed: Input should be a valid integer (got true)"),
        ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
        ({"test_size": 0.5}, "test_size: Input should be less than or equal to 0.4"),
        ({"test_size": 0.4, "validation_size": 0.3}, "test_size + validation_size is 0.7; it must be at most 0.6"),
        ({"endpoint_poll_seconds": 0}, "endpoint_poll_seconds: Input should be greater than or equal to 1"),
        ({"problem_type": "clustering"}, "problem_type: Input should be 'classification' or 'regression'"),
        ({"quality_threshold": "high"}, "quality_threshold: Input should be a valid number (got 'high')"),
        ({"model_name": "Iris_Model"}, "model_name: must be lowercase letters and digits, optionally separated"),
        ({"model_name": "my-stepml-model"}, "model_name: must not contain 'stepml-'"),
        ({"model_name": "a" * 41}, "model_name: String should have at most 40 characters"),
        ({"dataset": "https://bucket/iris.csv"}, "dataset: must be an S3 URI like s3://bucket/"),
        ({"dataset": "s3://bucket/folder/"}, "dataset: must name an object (s3://bucket/key), not a bucket"),
    ],
)
def test_each_bad_value_is_named(given: dict[str, Any], expected: str) -> None:
    with pytest.raises(InputValidationError) as caught:
        parse_input({"dataset": "s3://bucket/iris.csv", **given})
    assert expected in str(caught.value)
    assert "Allowed fields" in str(caught.value)


def test_a_builtin_trainer_needs_no_overrides(env: None) -> None:
    config = config_of(lambda_handler(event({"dataset": "s3://b/i.csv", "trainer": "text"}), None))
    assert (config.trainer.name, config.trainer.builtin, config.trainer.overrides) == ("text", True, {})
    # the default trainer
    config = config_of(lambda_handler(event({"dataset": "s3://b/i.csv"}), None))
    assert (config.trainer.name, config.trainer.builtin, config.trainer.overrides) == ("auto", True, {})


def test_a_user_trainer_overrides_the_script_and_serving_program(env: None) -> None:
    source = "s3://stepml-test-data/code/trainers/abc.tar.gz"
    hyperparameters = {"ngram_max": 2, "lower": True}
    given = {"dataset": "s3://b/i.csv", "trainer": {"source": source}, "hyperparameters": hyperparameters}
    config = config_of(lambda_handler(event(given), None))

    assert (config.trainer.name, config.trainer.builtin, config.trainer.source) == ("custom", False, source)
    assert config.trainer.overrides == {
        "script": {
            "sagemaker_program": "train.py",
            "sagemaker_submit_directory": source,
            "sagemaker_container_log_level": "20",
        },
        "serving_program": "train.py",  # the training entry point serves too unless told otherwise
    }
    assert config.hyperparameters == {"ngram_max": "2", "lower": "true"}


def test_a_user_trainer_may_bring_its_images_and_serving_script(env: None) -> None:
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-trainer:1"
    trainer = {"source": "s3://b/t.tar.gz", "entry_point": "fit.py", "serving_entry_point": "serve.py", "image": image}
    config = config_of(lambda_handler(event({"dataset": "s3://b/i.csv", "trainer": trainer}), None))

    overrides = config.trainer.overrides
    assert overrides["script"]["sagemaker_program"] == "fit.py"
    assert overrides["serving_program"] == "serve.py"
    # one image for both unless an inference image is given
    assert overrides["image"] == overrides["inference_image"] == image
    other = {**trainer, "inference_image": image.replace("my-trainer", "my-server")}
    config = config_of(lambda_handler(event({"dataset": "s3://b/i.csv", "trainer": other}), None))
    assert config.trainer.overrides["inference_image"].endswith("/my-server:1")


@pytest.mark.parametrize("raw", [None, "s3://bucket/iris.csv", ["s3://bucket/iris.csv"]])
def test_input_that_is_not_an_object_is_rejected(raw: Any) -> None:
    with pytest.raises(InputValidationError, match="input: must be a JSON object"):
        parse_input(raw)


def test_names_for_an_80_character_execution_name_are_deterministic_and_within_limits() -> None:
    long_name = "Nightly_Retrain_" + "x" * 40 + "_2026-11-24T10-00-00Z_" + "abc"
    long_name = long_name[:80]
    assert len(long_name) == 80
    same_start = long_name[:-1] + "d"  # differs only after the first 30 characters

    given = {"dataset": "s3://b/iris.csv", "model_name": "iris"}
    first = build_run_config(given, long_name, "b", "stepml-test")
    again = build_run_config(given, long_name, "b", "stepml-test")
    other = build_run_config(given, same_start, "b", "stepml-test")

    assert first == again
    assert first.training_job_name == first.sagemaker_model_name == first.endpoint_config_name
    assert first.training_job_name.startswith("stepml-test-nightly-retrain-xxxxxxxxxxxxxx-")
    assert other.training_job_name != first.training_job_name
    for config in (first, other):
        for name in (config.training_job_name, config.endpoint_name or ""):
            assert len(name) <= 63
            assert SAGEMAKER_NAME.match(name), name


def test_run_token_follows_the_documented_recipe() -> None:
    import hashlib

    name = "My Run__2026"
    assert run_token(name) == "my-run-2026-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    # the slug is cut at 30 characters, then a trailing dash is dropped
    cut = "a" * 29 + "-b"
    assert run_token(cut).startswith("a" * 29 + "-") and not run_token(cut).startswith("a" * 29 + "--")
    assert re.fullmatch(r"[0-9a-f]{8}", run_token("___"))


def test_model_name_too_long_for_the_endpoint_prefix_is_rejected() -> None:
    long_prefix = "stepml-" + "s" * 16  # the longest prefix (see sagemaker_names): leaves 36 for the model name
    with pytest.raises(InputValidationError, match="allows at most 36"):
        build_run_config({"dataset": "s3://b/iris.csv", "model_name": "m" * 40}, "run", "b", long_prefix)
    fits = build_run_config({"dataset": "s3://b/iris.csv", "model_name": "m" * 36}, "run", "b", long_prefix)
    assert fits.endpoint_name is not None and len(fits.endpoint_name) == 63


def test_missing_data_bucket_is_a_configuration_error(env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATA_BUCKET")
    with pytest.raises(ConfigurationError, match="DATA_BUCKET"):
        lambda_handler(event({"dataset": "s3://b/iris.csv"}), None)


def test_json_schema_documents_the_console_input() -> None:
    schema = input_json_schema()
    assert schema["required"] == ["dataset"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {
        "dataset",
        "target",
        "problem_type",
        "model_name",
        "quality_threshold",
        "trainer",
        "hyperparameters",
        "test_size",
        "validation_size",
        "seed",
        "endpoint_poll_seconds",
        "no_cache",
        "resume_of",
        "trigger",
        "column_roles",
        "exclude_columns",
        "rare_classes",
        "tuning",
        "rollout",
        "approval",
        "approval_timeout_seconds",
    }
    assert schema["properties"]["model_name"]["pattern"] == "^[a-z0-9](-?[a-z0-9])*$"
    assert schema["properties"]["approval"]["enum"] == ["none", "manual"]
    assert schema["properties"]["approval_timeout_seconds"]["maximum"] == MAX_APPROVAL_TIMEOUT_SECONDS
    assert schema["properties"]["approval_timeout_seconds"]["minimum"] == 10


def test_approval_is_off_unless_asked_for_and_its_timeout_reaches_the_config() -> None:
    plain = build_run_config({"dataset": "s3://b/iris.csv"}, "run", "b", "stepml-dev")
    assert (plain.approval, plain.approval_timeout_seconds) == ("none", DEFAULT_APPROVAL_TIMEOUT_SECONDS)
    manual = build_run_config(
        {"dataset": "s3://b/iris.csv", "approval": "manual", "approval_timeout_seconds": 90}, "run", "b", "stepml-dev"
    )
    assert (manual.approval, manual.approval_timeout_seconds) == ("manual", 90)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"approval": "auto"}, "approval: Input should be 'none' or 'manual' (got 'auto')"),
        ({"approval": True}, "approval: Input should be 'none' or 'manual' (got true)"),
        (
            {"approval_timeout_seconds": 9},
            "approval_timeout_seconds: must be at least 10 seconds: the wait includes the invocation that registers "
            "the model and says how to approve it (got 9)",
        ),
        ({"approval_timeout_seconds": "60"}, "approval_timeout_seconds: Input should be a valid integer"),
        (
            {"approval": "manual", "approval_timeout_seconds": 7200},
            "approval_timeout_seconds: must be at most 5400 seconds: the whole run (training, the wait for approval "
            "and deployment) must end within the state machine's 2-hour timeout (TimeoutSeconds 7200) (got 7200)",
        ),
    ],
)
def test_bad_approval_settings_name_the_field_and_the_rule(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InputValidationError) as error:
        parse_input({"dataset": "s3://b/iris.csv", **fields})
    assert f"- {message}" in str(error.value)


def test_the_longest_approval_leaves_the_execution_time_to_deploy() -> None:
    asl = json.loads((Path(__file__).parents[2] / "statemachine" / "pipeline.asl.json").read_text())
    assert asl["TimeoutSeconds"] == EXECUTION_TIMEOUT_SECONDS
    assert MAX_APPROVAL_TIMEOUT_SECONDS <= EXECUTION_TIMEOUT_SECONDS - 1800


def test_slugify() -> None:
    assert slugify("  Hello, World!! 2026 ") == "hello-world-2026"
    assert slugify("ÄÖÜ") == ""


def test_column_roles_exclusions_and_rare_classes_reach_the_run_config(env: None) -> None:
    given = {
        "dataset": "s3://b/iris.csv",
        "column_roles": {"when": "datetime", "code": "identifier"},
        "exclude_columns": ["notes"],
        "rare_classes": "merge",
    }
    config = RunConfig.model_validate(lambda_handler(event(given), None)["config"])

    assert config.column_roles == {"when": "datetime", "code": "identifier"}
    assert config.exclude_columns == ["notes"]
    assert config.rare_classes == "merge"
    defaults = RunConfig.model_validate(lambda_handler(event({"dataset": "s3://b/iris.csv"}), None)["config"])
    assert (defaults.column_roles, defaults.exclude_columns, defaults.rare_classes) == ({}, [], "error")


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        ({"column_roles": {"a": "target"}}, "column_roles.a: Input should be 'numeric', 'categorical'"),
        ({"column_roles": {"a": "excluded"}}, "column_roles.a"),
        ({"exclude_columns": "a"}, "exclude_columns: Input should be a valid list"),
        ({"rare_classes": "keep"}, "rare_classes: Input should be 'error', 'drop' or 'merge'"),
    ],
)
def test_bad_column_options_are_rejected_naming_the_field(env: None, given: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InputValidationError) as caught:
        lambda_handler(event({"dataset": "s3://b/iris.csv", **given}), None)
    assert fragment in str(caught.value)
