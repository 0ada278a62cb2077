"""Inference API: API Gateway REST proxy events to the served model (pipeline_core.stages.inference_api)."""

import functools
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from pipeline_core.stages.inference_api import InferenceService, create_app, handle


@functools.cache
def _app() -> APIGatewayRestResolver:
    # Built on the first request, not at import: it reads the environment (model name, table names).
    return create_app(InferenceService.from_env())


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Event: an API Gateway REST proxy event; returns the proxy response (statusCode, headers, body)."""
    return handle(_app(), event, context)
