"""Inference API: API Gateway REST proxy events to the served model (pipeline_core.stages.inference_api)."""

import functools
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from pipeline_core.stages.inference_api import InferenceService, create_app, handle


@functools.cache
def _app() -> tuple[APIGatewayRestResolver, InferenceService]:
    # Built on the first request, not at import: it reads the environment (model name, table names).
    service = InferenceService.from_env()
    return create_app(service), service


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Event: an API Gateway REST proxy event; returns the proxy response (statusCode, headers, body)."""
    app, service = _app()
    return handle(app, event, context, service)
