"""moto's engine parses a definition once, however many executions run it (stepml/embedded/asl_programs.py)."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core.config import default_user_config

from stepml.embedded import asl_programs
from stepml.embedded.template import ACCOUNT_ID, REGION


def _definition(suffix: str) -> str:
    return json.dumps(
        {
            "StartAt": "Shape",
            "States": {
                "Shape": {
                    "Type": "Pass",
                    "Parameters": {"greeting.$": f"States.Format('hello {{}}{suffix}', $.name)"},
                    "Next": "Choose",
                },
                "Choose": {
                    "Type": "Choice",
                    "Choices": [{"Variable": "$.greeting", "StringMatches": "*!", "Next": "Loud"}],
                    "Default": "Done",
                },
                "Loud": {"Type": "Pass", "Result": "loud", "ResultPath": "$.tone", "Next": "Done"},
                "Done": {"Type": "Succeed"},
            },
        }
    )


def _outputs(sfn: Any, arns: list[str]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        described = [sfn.describe_execution(executionArn=arn) for arn in arns]
        if all(d["status"] != "RUNNING" for d in described) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [d["status"] for d in described] == ["SUCCEEDED"] * len(arns)
    return [json.loads(d["output"]) for d in described]


def test_executions_of_one_definition_parse_it_once_and_a_changed_one_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(default_user_config, "stepfunctions", {"execute_state_machine": True})
    asl_programs.install()
    with mock_aws():
        sfn = boto3.client("stepfunctions", region_name=REGION)
        before = asl_programs.parses
        role = f"arn:aws:iam::{ACCOUNT_ID}:role/r"
        machine = sfn.create_state_machine(name="m", definition=_definition(""), roleArn=role)["stateMachineArn"]
        arns = [
            sfn.start_execution(stateMachineArn=machine, name=n, input=json.dumps({"name": n}))["executionArn"]
            for n in ("ann", "bob", "cy")
        ]
        assert _outputs(sfn, arns) == [{"greeting": f"hello {n}"} for n in ("ann", "bob", "cy")]
        assert asl_programs.parses - before == 1  # CreateStateMachine's check and three executions: one parse

        sfn.update_state_machine(stateMachineArn=machine, definition=_definition("!"))
        started = sfn.start_execution(stateMachineArn=machine, name="dee", input=json.dumps({"name": "dee"}))
        arn = started["executionArn"]
        assert _outputs(sfn, [arn]) == [{"greeting": "hello dee!", "tone": "loud"}]  # the new definition ran
        assert asl_programs.parses - before == 2

        # a definition the parser refuses is refused as moto refuses it, and nothing is kept of it
        with pytest.raises(ClientError, match="ASLParserException"):
            sfn.create_state_machine(
                name="bad", definition='{"StartAt": "A", "States": {"A": {"Type": "Nope"}}}', roleArn=role
            )
        assert asl_programs.parses - before == 2


def test_each_execution_gets_its_own_copy() -> None:
    definition = _definition("")
    first, second = asl_programs.program_for(definition), asl_programs.program_for(definition)
    assert first is not second and type(first) is type(second)
    assert first.states.states.keys() == second.states.states.keys()
    assert first.states.states["Shape"] is not second.states.states["Shape"]
