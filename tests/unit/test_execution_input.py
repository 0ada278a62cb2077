"""The documented execution input: events/ holds its JSON schema (generated from PipelineInput) and an example.

After changing PipelineInput, regenerate the schema file with:

    .venv/bin/python -c "import json; from pipeline_core.stages.validate_input import input_json_schema as s; \
open('events/execution-input.schema.json', 'w').write(json.dumps(s(), indent=2) + '\\n')"
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pipeline_core.errors import InputValidationError
from pipeline_core.stages.validate_input import input_json_schema, parse_input

EVENTS = Path(__file__).parents[2] / "events"


def load(name: str) -> Any:
    return json.loads((EVENTS / name).read_text())


def test_committed_schema_is_the_one_pipeline_input_generates() -> None:
    assert load("execution-input.schema.json") == input_json_schema(), (
        "events/execution-input.schema.json is stale: regenerate it (see this module's docstring)"
    )


def test_schema_is_a_valid_json_schema() -> None:
    schema = load("execution-input.schema.json")
    jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)


def test_example_is_accepted_by_the_schema_and_by_validate_input() -> None:
    example = load("execution-input.example.json")

    jsonschema.Draft202012Validator(load("execution-input.schema.json")).validate(example)
    request = parse_input(example)

    assert request.dataset == example["dataset"]
    assert request.hyperparameters["max_iter"] == example["hyperparameters"]["max_iter"]


def test_schema_lets_a_user_trainer_take_any_scalar_hyperparameter() -> None:
    validator = jsonschema.Draft202012Validator(load("execution-input.schema.json"))
    given = {
        "dataset": "s3://b/i.csv",
        "trainer": {"source": "s3://b/code/trainers/abc.tar.gz", "entry_point": "fit.py"},
        "hyperparameters": {"ngram_max": 2, "lowercase": True, "analyzer": "word"},
    }
    assert not list(validator.iter_errors(given))
    parse_input(given)
    linear = {"dataset": "s3://b/i.csv", "trainer": "linear", "hyperparameters": {"C": 0.5, "alpha": 1}}
    assert not list(validator.iter_errors(linear))
    parse_input(linear)


def test_example_sets_every_documented_field() -> None:
    """A console user copies the example: it should show every field they can set."""
    assert set(load("execution-input.example.json")) == set(input_json_schema()["properties"])


@pytest.mark.parametrize(
    "bad",
    [
        {"target": "species"},  # dataset missing
        {"dataset": "s3://bucket/incoming/iris.csv", "epochs": 3},  # unknown field
        {"dataset": "s3://bucket/incoming/iris.csv", "seed": "42"},  # wrong type
        {"dataset": "s3://bucket/incoming/iris.csv", "hyperparameters": {"max_iter": 0}},  # out of range
        {"dataset": "s3://bucket/incoming/iris.csv", "hyperparameters": {"n_estimators": 10}},  # not a built-in's
        {"dataset": "s3://b/i.csv", "trainer": "linear", "hyperparameters": {"max_iter": 10}},  # not linear's
        {"dataset": "s3://b/i.csv", "trainer": "xgboost"},  # no such built-in
        {"dataset": "s3://b/i.csv", "trainer": {"entry_point": "train.py"}},  # no source
        {"dataset": "s3://b/i.csv", "trainer": {"source": "s3://b/t.tar.gz"}, "hyperparameters": {"k": [1]}},
        {"dataset": "s3://b/i.csv", "rollout": "blue-green"},  # no such strategy
        {"dataset": "s3://b/i.csv", "rollout": {"strategy": "canary", "wait_seconds": 4000}},  # over SageMaker's 3600
        {"dataset": "s3://b/i.csv", "rollout": {"strategy": "canary", "canary_percent": 10}},  # unknown setting
    ],
)
def test_schema_and_validate_input_reject_the_same_mistakes(bad: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(load("execution-input.schema.json"))
    assert list(validator.iter_errors(bad)), f"the schema accepts {bad}"
    with pytest.raises(InputValidationError):
        parse_input(bad)
