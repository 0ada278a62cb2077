"""Lazily built boto3 clients, shared per process (a warm Lambda reuses them across invocations)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

from pipeline_core.errors import TransientStoreError

# Adaptive retries absorb short throttling bursts inside one invocation; what is left surfaces as
# TransientStoreError so the state machine's Retry (with backoff and jitter) takes over.
_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 4}, connect_timeout=5, read_timeout=60)

_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "RequestThrottled",
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "InternalServerError",
        "TransactionInProgressException",
        # S3's answer to two conditional writes of one key at the same moment: "retry the request".
        "ConditionalRequestConflict",
    }
)


@functools.cache
def client(service: str) -> Any:
    """A boto3 client for ``service`` built on first use (endpoint from AWS_ENDPOINT_URL if set)."""
    return boto3.client(service, config=_CONFIG)


@functools.cache
def unvalidated_client(service: str) -> Any:
    """:func:`client` without botocore's client-side parameter validation, for requests this code builds in
    bulk on a serving hot path (the prediction log's BatchWriteItem of 25 items): the validation walks every
    nested attribute value and was ~30 % of the call's client CPU (7.0 -> 4.9 ms a batch, measured against the
    local AWS); the service still validates every request and answers a bad one with a ValidationException."""
    return boto3.client(service, config=_CONFIG.merge(Config(parameter_validation=False)))


def is_transient(error: ClientError) -> bool:
    """Whether an AWS error is worth another attempt."""
    code = error.response.get("Error", {}).get("Code", "")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return code in _TRANSIENT_CODES or status >= 500


@contextmanager
def transient_errors_as(what: str) -> Iterator[None]:
    """Re-raise throttling and 5xx answers as TransientStoreError naming ``what`` was being done."""
    try:
        yield
    except ClientError as error:
        if is_transient(error):
            raise TransientStoreError(f"{what}: {error}") from error
        raise
    except EndpointConnectionError as error:
        raise TransientStoreError(f"{what}: {error}") from error


T = TypeVar("T")


def with_transient_errors(what: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator form of :func:`transient_errors_as`."""

    def decorate(func: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            with transient_errors_as(what):
                return func(*args, **kwargs)

        return wrapper

    return decorate
