"""Run a stage's side effects once per execution, with Powertools idempotency.

Step Functions retries a task whose Lambda answered with an error or timed out, and Lambda itself may
deliver an invocation twice. A stage wrapped here stores its result in the idempotency table keyed by
the event fields named in ``key_jmespath`` (e.g. the execution ARN), so a repeated invocation returns the
stored result instead of acting again. The persistence layer is built per call: its table name comes
from the environment, which must not be read at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

from pipeline_core.aws.clients import client
from pipeline_core.settings import require_env

# A run's retries happen within hours; a day keeps the record long enough without growing the table.
RECORD_TTL_SECONDS = 24 * 3600


def run_once(
    event: dict[str, Any], context: Any, key_jmespath: str, action: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """``action(event)``, or the result an earlier invocation with the same key stored."""
    persistence = DynamoDBPersistenceLayer(table_name=require_env("IDEMPOTENCY_TABLE"), boto3_client=client("dynamodb"))
    config = IdempotencyConfig(
        event_key_jmespath=key_jmespath, expires_after_seconds=RECORD_TTL_SECONDS, raise_on_no_idempotency_key=True
    )
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        config.register_lambda_context(context)

    @idempotent_function(data_keyword_argument="event", persistence_store=persistence, config=config)
    def once(event: dict[str, Any]) -> dict[str, Any]:
        return action(event)

    return once(event=event)
