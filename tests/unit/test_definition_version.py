"""The definition version an execution runs: the published version on AWS, else the definition's hash."""

from __future__ import annotations

import json
from typing import Any

from pipeline_core.aws.definition_version import definition_hash, definition_version

ROLE = "arn:aws:iam::123456789012:role/stepml-states"


def pass_machine(result: str) -> str:
    return json.dumps({"StartAt": "Only", "States": {"Only": {"Type": "Pass", "Result": result, "End": True}}})


def test_an_unversioned_execution_is_named_by_its_definitions_hash(moto_clients: Any) -> None:
    sfn = moto_clients("stepfunctions")
    first_definition = pass_machine("a")
    arn = sfn.create_state_machine(name="pipeline", definition=first_definition, roleArn=ROLE)["stateMachineArn"]
    first = sfn.start_execution(stateMachineArn=arn, name="run-1")["executionArn"]

    version = definition_version(sfn, first)

    assert version == definition_hash(first_definition)
    assert version is not None and version.startswith("sha256:") and len(version) == len("sha256:") + 12
    # the same definition again is the same version; a changed one is another
    second = sfn.start_execution(stateMachineArn=arn, name="run-2")["executionArn"]
    assert definition_version(sfn, second) == version
    sfn.update_state_machine(stateMachineArn=arn, definition=pass_machine("b"))
    third = sfn.start_execution(stateMachineArn=arn, name="run-3")["executionArn"]
    assert definition_version(sfn, third) not in {None, version}


class AliasStartedExecutions:
    """DescribeExecution as AWS answers it for an execution started through an alias (moto cannot)."""

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        return {
            "executionArn": executionArn,
            "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:pipeline",
            "stateMachineVersionArn": "arn:aws:states:us-east-1:123456789012:stateMachine:pipeline:7",
            "stateMachineAliasArn": "arn:aws:states:us-east-1:123456789012:stateMachine:pipeline:live",
        }

    def describe_state_machine_for_execution(self, executionArn: str) -> dict[str, Any]:
        raise AssertionError("a versioned execution needs no hash")


def test_an_execution_started_through_the_alias_is_named_by_its_version_number() -> None:
    arn = "arn:aws:states:us-east-1:123456789012:execution:pipeline:run-1"
    assert definition_version(AliasStartedExecutions(), arn) == "7"


def test_outside_an_execution_there_is_no_version(moto_clients: Any) -> None:
    sfn = moto_clients("stepfunctions")
    sfn.create_state_machine(name="pipeline", definition=pass_machine("a"), roleArn=ROLE)
    assert definition_version(sfn, "arn:aws:states:us-east-1:123456789012:execution:pipeline:never-ran") is None
