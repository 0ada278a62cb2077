"""SageMaker models behind one domain verb (does a model exist?), on SageMaker or the local stand-in.

Batch scoring asks it before staging a file for a transform job: a registry version whose SageMaker model is
gone (deleted by hand, or never created: a rejected version) fails at once with its name, rather than after the
file was prepared. ``SAGEMAKER_BACKEND`` picks the backend, as for endpoints (:mod:`pipeline_core.aws.sagemaker`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from botocore.exceptions import ClientError

from pipeline_core.aws.clients import client, transient_errors_as
from pipeline_core.errors import ConfigurationError
from pipeline_core.settings import require_env
from pipeline_core.standin.store import RecordStore


class ModelCatalog(Protocol):
    def model_exists(self, model_name: str) -> bool:
        """Whether SageMaker holds a model of this name (DescribeModel answers)."""
        ...


class SageMakerModelCatalog:
    """DescribeModel on SageMaker (client injected, built lazily)."""

    def __init__(self, sagemaker_client: Any | None = None) -> None:
        self._sagemaker = sagemaker_client

    def model_exists(self, model_name: str) -> bool:
        sagemaker = self._sagemaker or client("sagemaker")
        with transient_errors_as(f"describing model {model_name}"):
            try:
                sagemaker.describe_model(ModelName=model_name)
            except ClientError as error:
                # SageMaker answers a missing model with ValidationException "Could not find model ..."
                details = error.response.get("Error", {})
                if details.get("Code") == "ValidationException" and "Could not find" in details.get("Message", ""):
                    return False
                raise
        return True


class StandInModelCatalog:
    """The stand-in's model records (in DATA_BUCKET)."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store

    def model_exists(self, model_name: str) -> bool:
        return self.store.get("models", model_name) is not None


def model_catalog(environ: Mapping[str, str] | None = None) -> ModelCatalog:
    """The catalog of the backend ``SAGEMAKER_BACKEND`` names (os.environ unless given)."""
    env = None if environ is None else dict(environ)
    backend = require_env("SAGEMAKER_BACKEND", env)
    if backend == "sagemaker":
        return SageMakerModelCatalog()
    if backend == "standin":
        return StandInModelCatalog(RecordStore.from_env(env))
    raise ConfigurationError(f"SAGEMAKER_BACKEND must be sagemaker or standin, got {backend!r}")
