"""Which version of the state machine definition an execution runs.

On AWS the stack publishes each deployed definition as a numbered version and points the alias ``live`` at it
(SAM ``AutoPublishAlias``); runs start through the alias, and DescribeExecution names the version it picked
(``stateMachineVersionArn``). The Context object has no field for it, so the execution asks.

An execution started without a version or alias (the unqualified ARN: the embedded target, whose moto engine
cannot start through an alias, or someone starting from the console) has no version number. Its version is
then the content hash of the definition it runs (``sha256:`` and 12 hex digits), from
DescribeStateMachineForExecution: equal definitions give equal versions, any change gives a new one.
"""

from __future__ import annotations

import hashlib
from typing import Any

from botocore.exceptions import ClientError

from pipeline_core.aws.clients import transient_errors_as

HASH_PREFIX = "sha256:"
HASH_DIGITS = 12


def definition_hash(definition: str) -> str:
    """The content version of a definition: ``sha256:`` and the first 12 hex digits of its hash."""
    return HASH_PREFIX + hashlib.sha256(definition.encode()).hexdigest()[:HASH_DIGITS]


def version_of_arn(version_arn: str) -> str:
    """The version number a state machine version ARN ends with (``...:stateMachine:name:3`` → ``"3"``)."""
    return version_arn.rsplit(":", 1)[-1]


def definition_version(sfn: Any, execution_arn: str) -> str | None:
    """The definition version ``execution_arn`` runs: its published version number, else its definition's hash.

    None when Step Functions knows no such execution: the function was invoked outside one (a console test
    event, a unit test), so there is no definition to name.
    """
    with transient_errors_as(f"describing execution {execution_arn}"):
        try:
            described = sfn.describe_execution(executionArn=execution_arn)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
                return None
            raise
        version_arn = described.get("stateMachineVersionArn")
        if version_arn:
            return version_of_arn(str(version_arn))
        machine = sfn.describe_state_machine_for_execution(executionArn=execution_arn)
    return definition_hash(str(machine["definition"]))
