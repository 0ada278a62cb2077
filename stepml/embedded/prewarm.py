"""Imported once by the Lambda workers' forkserver: load what every worker would otherwise load itself.

Forked workers inherit this memory, so a function's cold start skips importing the shared layer and
botocore's service models (loading and parsing a model costs ~0.1 s per service and process). No client
that a worker uses is made here: clients are built in the worker, from its own environment.
"""

from __future__ import annotations

import importlib
import pkgutil

import boto3
import pipeline_core
from pipeline_core.standin.store import sagemaker_service_model

_SERVICES = ("s3", "dynamodb", "stepfunctions", "sns", "sagemaker", "sagemaker-runtime")


def _import_shared_layer() -> None:
    for module in pkgutil.walk_packages(pipeline_core.__path__, prefix="pipeline_core."):
        importlib.import_module(module.name)


def _load_service_models() -> None:
    session = boto3.setup_default_session() or boto3.DEFAULT_SESSION
    assert session is not None
    for service in _SERVICES:
        # Throwaway clients with explicit dummy credentials: this fills the session's model caches
        # without resolving credentials or reading any endpoint setting.
        session.client(
            service,
            region_name="us-east-1",
            endpoint_url="http://127.0.0.1:9",
            aws_access_key_id="prewarm",
            aws_secret_access_key="prewarm",
        )


_import_shared_layer()
_load_service_models()
sagemaker_service_model()
