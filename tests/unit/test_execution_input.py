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
    assert request.hyperparameters.max_iter == example["hyperparameters"]["max_iter"]


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
    ],
)
def test_schema_and_validate_input_reject_the_same_mistakes(bad: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(load("execution-input.schema.json"))
    assert list(validator.iter_errors(bad)), f"the schema accepts {bad}"
    with pytest.raises(InputValidationError):
        parse_input(bad)
