"""SageMaker endpoints behind domain verbs, whether real SageMaker or the local stand-in serves them.

``SAGEMAKER_BACKEND`` (set by infra/template.yaml) picks the backend: ``sagemaker`` on AWS, ``standin`` on
the local targets, where the SageMaker stand-in keeps its records in ``DATA_BUCKET``. Callers (the rollback
in RecordFailure, the inference API) code against :class:`EndpointControl` and :class:`EndpointRuntime`
and never see which one is behind them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from botocore.exceptions import ClientError

from pipeline_core.aws.clients import client, transient_errors_as
from pipeline_core.errors import ConfigurationError
from pipeline_core.settings import require_env
from pipeline_core.standin import endpoints as standin_endpoints
from pipeline_core.standin.errors import ModelError, ValidationException
from pipeline_core.standin.store import RecordStore

BACKENDS = ("sagemaker", "standin")


class EndpointControl(Protocol):
    def describe_endpoint(self, endpoint_name: str) -> dict[str, Any] | None:
        """DescribeEndpoint's answer (timestamps as ISO strings), or None if the endpoint does not exist."""
        ...

    def update_endpoint(self, endpoint_name: str, endpoint_config_name: str) -> None:
        """Point the endpoint at another endpoint config; a missing endpoint or config raises."""
        ...

    def delete_endpoint(self, endpoint_name: str) -> None:
        """Delete the endpoint; one that does not exist (any more) is not an error."""
        ...


class ModelCatalog(Protocol):
    def model_exists(self, model_name: str) -> bool:
        """Whether SageMaker holds a model of this name (DescribeModel answers). Batch scoring asks before it
        stages a file: a version whose SageMaker model is gone (deleted by hand, or never created: a rejected
        version) fails at once, by name."""
        ...


class EndpointRuntime(Protocol):
    def predict(self, endpoint_name: str, records: list[dict[str, Any]]) -> list[Any]:
        """One prediction per record (a record maps feature names to values)."""
        ...


def _json_ready(value: Any) -> Any:
    """boto3's answer with datetimes as ISO strings, like the stand-in's records."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items() if key != "ResponseMetadata"}
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    return value


def _is_missing(error: ClientError, kind: str = "endpoint") -> bool:
    # SageMaker answers a missing endpoint (model) with ValidationException "Could not find endpoint (model) ...".
    details = error.response.get("Error", {})
    return details.get("Code") == "ValidationException" and f"Could not find {kind}" in details.get("Message", "")


class SageMakerEndpoints:
    """EndpointControl, EndpointRuntime and ModelCatalog on real SageMaker (clients injected, built lazily)."""

    def __init__(self, sagemaker_client: Any | None = None, runtime_client: Any | None = None) -> None:
        self._sagemaker = sagemaker_client
        self._runtime = runtime_client

    @property
    def sagemaker(self) -> Any:
        if self._sagemaker is None:
            self._sagemaker = client("sagemaker")
        return self._sagemaker

    @property
    def runtime(self) -> Any:
        if self._runtime is None:
            self._runtime = client("sagemaker-runtime")
        return self._runtime

    def describe_endpoint(self, endpoint_name: str) -> dict[str, Any] | None:
        with transient_errors_as(f"describing endpoint {endpoint_name}"):
            try:
                answer = self.sagemaker.describe_endpoint(EndpointName=endpoint_name)
            except ClientError as error:
                if _is_missing(error):
                    return None
                raise
        described: dict[str, Any] = _json_ready(answer)
        return described

    def update_endpoint(self, endpoint_name: str, endpoint_config_name: str) -> None:
        with transient_errors_as(f"updating endpoint {endpoint_name} to {endpoint_config_name}"):
            try:
                self.sagemaker.update_endpoint(EndpointName=endpoint_name, EndpointConfigName=endpoint_config_name)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") == "ValidationException":
                    raise ValidationException(str(error)) from error
                raise

    def delete_endpoint(self, endpoint_name: str) -> None:
        with transient_errors_as(f"deleting endpoint {endpoint_name}"):
            try:
                self.sagemaker.delete_endpoint(EndpointName=endpoint_name)
            except ClientError as error:
                if not _is_missing(error):
                    raise

    def model_exists(self, model_name: str) -> bool:
        with transient_errors_as(f"describing model {model_name}"):
            try:
                self.sagemaker.describe_model(ModelName=model_name)
            except ClientError as error:
                if _is_missing(error, "model"):
                    return False
                raise
        return True

    def predict(self, endpoint_name: str, records: list[dict[str, Any]]) -> list[Any]:
        """InvokeEndpoint with ``{"instances": records}``; the container's output_fn answers
        ``{"predictions": [...]}``."""
        with transient_errors_as(f"invoking endpoint {endpoint_name}"):
            try:
                answer = self.runtime.invoke_endpoint(
                    EndpointName=endpoint_name,
                    ContentType="application/json",
                    Accept="application/json",
                    Body=json.dumps({"instances": records}).encode(),
                )
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code")
                if code == "ModelError":
                    raise ModelError(str(error)) from error
                if code in {"ValidationError", "ValidationException"}:
                    raise ValidationException(str(error)) from error
                raise
        payload = json.loads(answer["Body"].read())
        if not isinstance(payload, dict) or not isinstance(payload.get("predictions"), list):
            raise ModelError(f"endpoint {endpoint_name} answered without predictions: {payload!s:.200}")
        predictions: list[Any] = payload["predictions"]
        return predictions


class StandInEndpoints:
    """EndpointControl, EndpointRuntime and ModelCatalog on the SageMaker stand-in (records in DATA_BUCKET)."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store

    def describe_endpoint(self, endpoint_name: str) -> dict[str, Any] | None:
        if self.store.get("endpoints", endpoint_name) is None:
            return None
        return standin_endpoints.describe_endpoint(self.store, {"EndpointName": endpoint_name})

    def update_endpoint(self, endpoint_name: str, endpoint_config_name: str) -> None:
        standin_endpoints.update_endpoint(
            self.store, {"EndpointName": endpoint_name, "EndpointConfigName": endpoint_config_name}
        )

    def delete_endpoint(self, endpoint_name: str) -> None:
        if self.store.get("endpoints", endpoint_name) is not None:
            standin_endpoints.delete_endpoint(self.store, {"EndpointName": endpoint_name})

    def model_exists(self, model_name: str) -> bool:
        return self.store.get("models", model_name) is not None

    def predict(self, endpoint_name: str, records: list[dict[str, Any]]) -> list[Any]:
        # Imported here: the runtime needs pandas and the model's own code, the control verbs do not.
        from pipeline_core.standin.runtime import invoke_endpoint

        return invoke_endpoint(endpoint_name, records, store=self.store)


def _backend(environ: Mapping[str, str] | None) -> SageMakerEndpoints | StandInEndpoints:
    env = None if environ is None else dict(environ)
    backend = require_env("SAGEMAKER_BACKEND", env)
    if backend == "sagemaker":
        return SageMakerEndpoints()
    if backend == "standin":
        return StandInEndpoints(RecordStore.from_env(env))
    raise ConfigurationError(f"SAGEMAKER_BACKEND must be one of {', '.join(BACKENDS)}, got {backend!r}")


def endpoint_control(environ: Mapping[str, str] | None = None) -> EndpointControl:
    """Endpoint management for the backend ``SAGEMAKER_BACKEND`` names (os.environ unless given)."""
    return _backend(environ)


def model_catalog(environ: Mapping[str, str] | None = None) -> ModelCatalog:
    """The SageMaker models of the backend ``SAGEMAKER_BACKEND`` names (os.environ unless given)."""
    return _backend(environ)


def endpoint_runtime(environ: Mapping[str, str] | None = None) -> EndpointRuntime:
    """Endpoint inference for the backend ``SAGEMAKER_BACKEND`` names (os.environ unless given)."""
    return _backend(environ)
