"""ValidateStateMachineDefinition on the embedded target (stepml/embedded/asl_validation.py).

The project's own definition validates OK on both targets; broken variants of it, and small definitions for what
it does not use (Parallel, Map), give AWS's codes at AWS's locations; the answers parse with botocore's
stepfunctions model, both directly and through a real client.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.parsers import create_parser

from stepml.embedded.asl_validation import (
    TARGET,
    RequestError,
    handles,
    http_response,
    validate_state_machine_definition,
)
from stepml.embedded.template import stack_model, substitute_definition

ROOT = Path(__file__).parents[2]
LAMBDA = "arn:aws:lambda:us-east-1:123456789012:function:f"


@pytest.fixture(scope="module")
def pipeline() -> dict[str, Any]:
    """statemachine/pipeline.asl.json as the embedded runtime creates it (Target=local substitutions)."""
    stack = stack_model(ROOT / "infra" / "template.yaml", "stepml-test", {"Target": "local"})
    assert stack.state_machine_definition is not None
    return dict(json.loads(substitute_definition(stack.state_machine_definition.read_text(), stack.substitutions)))


def validate(definition: dict[str, Any] | str, **request: Any) -> dict[str, Any]:
    text = definition if isinstance(definition, str) else json.dumps(definition)
    return validate_state_machine_definition({"definition": text, **request})


def codes_at(answer: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(d["code"], d.get("location")) for d in answer["diagnostics"]]


def machine(states: dict[str, Any], start_at: str = "A") -> dict[str, Any]:
    return {"StartAt": start_at, "States": states}


# ------------------------------------------------------------------ the project's definition


@pytest.mark.parametrize("severity", ["ERROR", "WARNING"])
def test_the_pipeline_validates_ok(pipeline: dict[str, Any], severity: str) -> None:
    assert validate(pipeline, severity=severity) == {"result": "OK", "diagnostics": [], "truncated": False}


def test_the_pipeline_as_deployed_to_aws_validates_ok() -> None:
    """Target=aws puts SageMaker's .sync integrations in; STANDARD takes them, EXPRESS does not."""
    from tests.unit.test_template import load_template, resolved_definition

    definition = resolved_definition(load_template(), "aws")
    assert validate(definition)["result"] == "OK"
    express = validate(definition, type="EXPRESS")
    assert express["result"] == "FAIL"
    assert [d["code"] for d in express["diagnostics"]] == ["SCHEMA_VALIDATION_FAILED"]
    assert "sync" in express["diagnostics"][0]["message"]


# ------------------------------------------------------------------ broken variants of it


def test_bad_json_is_invalid_json_description_without_location(pipeline: dict[str, Any]) -> None:
    answer = validate(json.dumps(pipeline)[:-1])
    assert answer["result"] == "FAIL"
    [diagnostic] = answer["diagnostics"]
    assert diagnostic["code"] == "INVALID_JSON_DESCRIPTION" and "location" not in diagnostic


@pytest.mark.parametrize("text", ["null", "   "])
def test_an_empty_definition_is_missing_description(text: str) -> None:
    assert codes_at(validate(text)) == [("MISSING_DESCRIPTION", None)]


def test_missing_start_at(pipeline: dict[str, Any]) -> None:
    broken = copy.deepcopy(pipeline)
    del broken["StartAt"]
    answer = validate(broken)
    assert codes_at(answer) == [("SCHEMA_VALIDATION_FAILED", "/")]
    assert "StartAt" in answer["diagnostics"][0]["message"]


def test_next_to_a_missing_state(pipeline: dict[str, Any]) -> None:
    """The state that only Ingest led to is then one nothing names: AWS reports both."""
    broken = copy.deepcopy(pipeline)
    broken["States"]["Ingest"]["Next"] = "Nowhere"
    answer = validate(broken)
    assert answer["result"] == "FAIL"
    assert answer["diagnostics"] == [
        {
            "severity": "ERROR",
            "code": "MISSING_TRANSITION_TARGET",
            "message": "Missing 'Next' target: Nowhere",
            "location": "/States/Ingest/Next",
        },
        {
            "severity": "ERROR",
            "code": "MISSING_TRANSITION_TARGET",
            "message": 'State "ChooseValidationPath" is not reachable.',
            "location": "/States/ChooseValidationPath",
        },
    ]


def test_unknown_state_type(pipeline: dict[str, Any]) -> None:
    broken = copy.deepcopy(pipeline)
    broken["States"]["Evaluate"]["Type"] = "Lambda"
    assert codes_at(validate(broken)) == [("SCHEMA_VALIDATION_FAILED", "/States/Evaluate/Type")]


def test_field_of_the_wrong_type(pipeline: dict[str, Any]) -> None:
    broken = copy.deepcopy(pipeline)
    broken["States"]["Ingest"]["TimeoutSeconds"] = "300"
    assert codes_at(validate(broken)) == [("SCHEMA_VALIDATION_FAILED", "/States/Ingest/TimeoutSeconds")]


def test_unsupported_field_is_located_at_its_state(pipeline: dict[str, Any]) -> None:
    broken = copy.deepcopy(pipeline)
    broken["States"]["Notify"]["Retries"] = 3
    answer = validate(broken)
    assert codes_at(answer) == [("SCHEMA_VALIDATION_FAILED", "/States/Notify")]
    assert answer["diagnostics"][0]["message"] == "Field 'Retries' is not supported"


@pytest.mark.parametrize("severity", ["ERROR", "WARNING"])
def test_unreachable_state_is_an_error_as_on_aws(pipeline: dict[str, Any], severity: str) -> None:
    """AWS refuses a state nothing leads to (MISSING_TRANSITION_TARGET, ERROR), whatever severity asks for."""
    broken = copy.deepcopy(pipeline)
    broken["States"]["Orphan"] = {"Type": "Succeed"}
    answer = validate(broken, severity=severity)
    assert answer["result"] == "FAIL"
    assert answer["diagnostics"] == [
        {
            "severity": "ERROR",
            "code": "MISSING_TRANSITION_TARGET",
            "message": 'State "Orphan" is not reachable.',
            "location": "/States/Orphan",
        }
    ]


def test_warnings_only_with_severity_warning_and_result_stays_ok(pipeline: dict[str, Any]) -> None:
    """A path without '.$' is passed as a literal string: AWS warns (NO_DOLLAR) but creates the machine."""
    warned = copy.deepcopy(pipeline)
    warned["States"]["Ingest"]["Parameters"]["config"] = warned["States"]["Ingest"]["Parameters"].pop("config.$")
    assert validate(warned) == {"result": "OK", "diagnostics": [], "truncated": False}
    answer = validate(warned, severity="WARNING")
    assert answer["result"] == "OK"
    assert [(d["severity"], d["code"], d["location"]) for d in answer["diagnostics"]] == [
        ("WARNING", "NO_DOLLAR", "/States/Ingest/Parameters/config")
    ]


def test_retrier_limits_and_states_all(pipeline: dict[str, Any]) -> None:
    broken = copy.deepcopy(pipeline)
    retry = broken["States"]["Ingest"]["Retry"]
    retry[0]["IntervalSeconds"] = 0
    retry[1]["BackoffRate"] = 0.5
    retry.insert(0, {"ErrorEquals": ["States.ALL"]})  # the wildcard must be the last retrier
    assert codes_at(validate(broken)) == [
        ("SCHEMA_VALIDATION_FAILED", "/States/Ingest/Retry[0]/ErrorEquals[0]"),
        ("SCHEMA_VALIDATION_FAILED", "/States/Ingest/Retry[1]/IntervalSeconds"),
        ("SCHEMA_VALIDATION_FAILED", "/States/Ingest/Retry[2]/BackoffRate"),
    ]


def test_what_only_the_engine_refuses_is_reported_without_location(pipeline: dict[str, Any]) -> None:
    """Error names under States. are reserved; moto's parser (the engine that runs the machine) refuses them."""
    broken = copy.deepcopy(pipeline)
    broken["States"]["Ingest"]["Catch"][0]["ErrorEquals"] = ["States.Oops"]
    answer = validate(broken)
    assert codes_at(answer) == [("SCHEMA_VALIDATION_FAILED", None)]
    assert "States.Oops" in answer["diagnostics"][0]["message"]


# ------------------------------------------------------------------ what the pipeline does not use


@pytest.mark.parametrize(
    ("states", "where"),
    [
        ({"A": {"Type": "Choice", "Choices": [{"Variable": "$.x", "IsNull": True, "Next": "Z"}], "Default": "B"}},
         "/States/A/Choices[0]/Next"),
        ({"A": {"Type": "Choice", "Choices": [{"Variable": "$.x", "IsNull": True, "Next": "B"}], "Default": "Z"}},
         "/States/A/Default"),
        ({"A": {"Type": "Task", "Resource": LAMBDA, "Next": "B", "Catch": [{"ErrorEquals": ["E"], "Next": "Z"}]}},
         "/States/A/Catch[0]/Next"),
    ],
)  # fmt: skip
def test_every_transition_field_is_checked(states: dict[str, Any], where: str) -> None:
    answer = validate(machine({**states, "B": {"Type": "Succeed"}}))
    assert codes_at(answer) == [("MISSING_TRANSITION_TARGET", where)]
    assert answer["diagnostics"][0]["message"] == "Missing 'Next' target: Z"


def test_start_at_naming_no_state() -> None:
    answer = validate(machine({"A": {"Type": "Pass", "Next": "B"}, "B": {"Type": "Succeed"}}, start_at="Z"))
    assert codes_at(answer) == [
        ("MISSING_TRANSITION_TARGET", "/StartAt"),
        ("MISSING_TRANSITION_TARGET", "/States/A"),
    ]


def test_no_terminal_state_has_no_location_and_hides_unreachable_states() -> None:
    loop = {"A": {"Type": "Pass", "Next": "B"}, "B": {"Type": "Pass", "Next": "A"}, "C": {"Type": "Pass", "Next": "A"}}
    answer = validate(machine(loop))
    assert answer["diagnostics"] == [
        {"severity": "ERROR", "code": "MISSING_END_STATE", "message": "Workflow has no terminal state"}
    ]


def test_branches_are_their_own_scopes_and_names_are_unique_across_them() -> None:
    parallel = {
        "Type": "Parallel",
        "Next": "Done",
        "Branches": [
            {"StartAt": "X", "States": {"X": {"Type": "Pass", "Next": "Done"}}},  # may not leave its branch
            {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}},
        ],
    }
    answer = validate(machine({"A": parallel, "Done": {"Type": "Succeed"}}))
    assert codes_at(answer) == [
        ("MISSING_TRANSITION_TARGET", "/States/A/Branches[0]/States/X/Next"),
        ("MISSING_END_STATE", "/States/A/Branches[0]"),
        ("DUPLICATE_STATE_NAME", "/States/A/Branches[1]/States/Done"),
    ]


def test_map_item_processor_is_validated() -> None:
    processor = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}, "Q": {"Type": "Pass", "End": True}}}
    answer = validate(machine({"A": {"Type": "Map", "ItemProcessor": processor, "End": True, "TimeoutSeconds": 5}}))
    assert codes_at(answer) == [
        ("SCHEMA_VALIDATION_FAILED", "/States/A"),  # Map states have no TimeoutSeconds
        ("MISSING_TRANSITION_TARGET", "/States/A/ItemProcessor/States/Q"),
    ]


def test_duplicate_keys_in_states_are_duplicate_state_names() -> None:
    text = '{"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}, "A": {"Type": "Succeed"}}}'
    assert codes_at(validate(text)) == [("DUPLICATE_STATE_NAME", "/States/A")]


@pytest.mark.parametrize(
    ("state", "code", "where"),
    [
        ({"Type": "Task", "Resource": "not-an-arn", "End": True}, "INVALID_RESOURCE", "/States/A/Resource"),
        ({"Type": "Pass", "Next": "B", "End": True}, "SCHEMA_VALIDATION_FAILED", "/States/A"),
        ({"Type": "Task", "End": True}, "SCHEMA_VALIDATION_FAILED", "/States/A"),
    ],
)
def test_schema_codes(state: dict[str, Any], code: str, where: str) -> None:
    assert codes_at(validate(machine({"A": state, "B": {"Type": "Succeed"}})))[:1] == [(code, where)]


def test_state_name_longer_than_80_characters() -> None:
    name = "N" * 81
    answer = validate(machine({"A": {"Type": "Pass", "Next": name}, name: {"Type": "Succeed"}}))
    assert codes_at(answer) == [("INVALID_STATE_NAME", f"/States/{name}")]


def test_jsonata_expressions_stand_for_any_value() -> None:
    task: dict[str, Any] = {
        "Type": "Task",
        "Resource": LAMBDA,
        "Arguments": {"n": "{% 1 %}"},
        "Output": "{% 2 %}",
        "End": True,
    }
    states = {"W": {"Type": "Wait", "Seconds": "{% $states.input.delay %}", "Next": "T"}, "T": task}
    definition = {"QueryLanguage": "JSONata", **machine(states, start_at="W")}
    assert validate(definition)["result"] == "OK"
    task["Parameters"] = {"n": 1}  # a JSONPath field in a JSONata state
    answer = validate(definition)
    assert codes_at(answer) == [("SCHEMA_VALIDATION_FAILED", "/States/T")]
    assert "'Parameters' is only supported for the 'JSONPath' QueryLanguage" in answer["diagnostics"][0]["message"]


# ------------------------------------------------------------------ the request


def dangling(count: int) -> dict[str, Any]:
    states = {f"S{i}": {"Type": "Pass", "Next": f"Missing{i}"} for i in range(count)}
    states["S0"]["Next"] = "End"
    states["End"] = {"Type": "Succeed"}
    return machine(states, start_at="S0")


def test_max_results_truncates_and_zero_means_all() -> None:
    """S1..S4 each miss their Next target and nothing names them: 8 errors."""
    assert len(validate(dangling(5))["diagnostics"]) == 8
    answer = validate(dangling(5), maxResults=3)
    assert answer["result"] == "FAIL" and answer["truncated"] is True and len(answer["diagnostics"]) == 3
    assert validate(dangling(5), maxResults=8)["truncated"] is False
    assert validate(dangling(5), maxResults=0) == validate(dangling(5))


@pytest.mark.parametrize(
    ("request_body", "error_type"),
    [
        ({}, "ValidationException"),
        ({"definition": ""}, "ValidationException"),
        ({"definition": "{}", "severity": "INFO"}, "ValidationException"),
        ({"definition": "{}", "type": "BATCH"}, "ValidationException"),
        ({"definition": "{}", "maxResults": 101}, "ValidationException"),
        ({"definition": "{}", "maxResults": -1}, "ValidationException"),
        ({"definition": "{}", "maxResults": "5"}, "SerializationException"),
        ({"definition": {"StartAt": "A"}}, "SerializationException"),
    ],
)
def test_requests_aws_refuses(request_body: dict[str, Any], error_type: str) -> None:
    with pytest.raises(RequestError) as refused:
        validate_state_machine_definition(request_body)
    assert refused.value.error_type == error_type


def test_handles_only_its_target() -> None:
    assert handles(TARGET) and handles("AWSStepFunctions.ValidateStateMachineDefinition")
    assert not handles("AWSStepFunctions.CreateStateMachine")


# ------------------------------------------------------------------ HTTP and botocore


def sfn_model() -> Any:
    return botocore.session.get_session().get_service_model("stepfunctions")


def parse(status: int, headers: list[tuple[str, str]], body: bytes) -> dict[str, Any]:
    operation = sfn_model().operation_model("ValidateStateMachineDefinition")
    # Header names are case-insensitive on the wire; botocore reads them lower-cased.
    raw = {"status_code": status, "headers": {name.lower(): value for name, value in headers}, "body": body}
    return dict(create_parser("json").parse(raw, operation.output_shape))


def test_botocores_parser_reads_the_answer(pipeline: dict[str, Any]) -> None:
    broken = copy.deepcopy(pipeline)
    broken["States"]["Ingest"]["Next"] = "Nowhere"
    status, headers, body = http_response(json.dumps({"definition": json.dumps(broken), "maxResults": 1}).encode())
    assert status == 200 and ("Content-Type", "application/x-amz-json-1.0") in headers
    parsed = parse(status, headers, body)
    assert parsed["result"] == "FAIL" and parsed["truncated"] is True
    assert parsed["diagnostics"] == [
        {
            "severity": "ERROR",
            "code": "MISSING_TRANSITION_TARGET",
            "message": "Missing 'Next' target: Nowhere",
            "location": "/States/Ingest/Next",
        }
    ]
    assert parsed["ResponseMetadata"]["RequestId"] == dict(headers)["x-amzn-RequestId"]


@pytest.mark.parametrize(
    ("body", "error_type"),
    [(b"{not json", "SerializationException"), (b'{"severity": "ERROR"}', "ValidationException")],
)
def test_botocores_parser_reads_the_errors(body: bytes, error_type: str) -> None:
    status, headers, payload = http_response(body)
    assert status == 400
    parsed = parse(status, headers, payload)
    assert parsed["Error"]["Code"] == error_type and parsed["Error"]["Message"]


class _Raw:
    """Just enough of urllib3's response for botocore to read a body."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, *_: Any, **__: Any) -> Any:
        yield self.body


def test_a_real_client_round_trip(pipeline: dict[str, Any]) -> None:
    """botocore serializes the request, http_response answers it, botocore parses the answer: no network."""
    session = botocore.session.get_session()
    client = session.create_client(
        "stepfunctions",
        region_name="us-east-1",
        endpoint_url="http://embedded.invalid",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    seen_targets: list[str] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        target = request.headers["X-Amz-Target"]
        seen_targets.append(target.decode() if isinstance(target, bytes) else target)
        status, headers, body = http_response(request.body)
        return AWSResponse(request.url, status, dict(headers), _Raw(body))

    client.meta.events.register("before-send.sfn.ValidateStateMachineDefinition", answer)
    ok = client.validate_state_machine_definition(definition=json.dumps(pipeline), severity="WARNING")
    assert (ok["result"], ok["diagnostics"], ok["truncated"]) == ("OK", [], False)
    broken = copy.deepcopy(pipeline)
    broken["States"]["Orphan"] = {"Type": "Succeed"}
    fail = client.validate_state_machine_definition(definition=json.dumps(broken))
    assert fail["result"] == "FAIL" and fail["diagnostics"][0]["location"] == "/States/Orphan"
    assert fail["ResponseMetadata"]["HTTPStatusCode"] == 200 and fail["ResponseMetadata"]["RequestId"]
    assert seen_targets == [TARGET, TARGET] and all(handles(t) for t in seen_targets)
