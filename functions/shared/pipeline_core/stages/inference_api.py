"""The inference REST API: API Gateway (REST, proxy integration) -> this Lambda -> the model's endpoint.

Routes (Powertools ``APIGatewayRestResolver`` with request validation; the OpenAPI document it generates
is served at ``GET /openapi.json``):

* ``POST /predict`` ``{"instances": [{feature: value, ...}, ...]}`` (1 to :data:`MAX_ROWS` rows, at most
  :data:`MAX_BODY_BYTES` bytes) -> ``{"predictions": [...], "model_version": N, "model_name": "..."}``
* ``GET /health`` liveness (touches nothing)
* ``GET /model`` the served model's registry record, with the feature kinds the API checks rows against

Which model: ``MODEL_NAME`` (a registry model name) -> its champion (newest approved version) -> the
record's ``endpoint_name``. The champion is cached for ``REGISTRY_CACHE_SECONDS`` (default 5 s), so the hot
path does not read DynamoDB per request and a newly registered version is served within that time.

Rows are checked before the endpoint is called, so a client gets one 400 naming every bad row and field
rather than the container's first error: the registry record gives the feature columns; the feature
kinds (numeric, categorical, boolean, datetime, text) come from ``metadata.json`` inside the model artifact
(train.py writes it next to model.joblib), read once per artifact (artifacts are immutable). If the artifact
cannot be read, only the columns are checked and the endpoint's own checks remain.

Status codes: 400 invalid rows or body (every problem listed in ``errors``), 413 too many rows or bytes,
415 a body that is not JSON,
503 no approved model yet / endpoint not deployed / registry or endpoint unavailable, 502 the model
failed on valid rows, 500 anything else (the message carries the request id, the detail goes to the log).
"""

from __future__ import annotations

import functools
import io
import json
import math
import tarfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field

from pipeline_core.aws.prediction_log import PredictionLog, PredictionRecord, input_sha256
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.aws.sagemaker import EndpointRuntime, endpoint_runtime
from pipeline_core.errors import ConfigurationError, TransientError
from pipeline_core.models import RegistryRecord
from pipeline_core.observability import logger, metrics, tracer
from pipeline_core.settings import optional_env, require_env
from pipeline_core.standin.errors import ModelError, ValidationException

API_TITLE = "stepml inference API"
API_VERSION = "1.0.0"
MAX_ROWS = 1000
# Below Lambda's 6 MB synchronous payload limit (the whole proxy event counts) and SageMaker's 6 MB
# InvokeEndpoint limit, with room for the event envelope.
MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_REGISTRY_CACHE_SECONDS = 5.0
# A response lists at most this many problems; the message says how many there were in all.
MAX_LISTED_ERRORS = 50

# The feature roles train.py writes as feature_kinds (docs: column roles); only numeric ones are type-checked here,
# the others take a string, number, boolean or null and the model converts them as in training.
FeatureKind = Literal["numeric", "categorical", "boolean", "datetime", "text"]
FeatureValue = float | int | str | bool | None


# --- request and response models (they are also the OpenAPI document) ---------------------------------


class PredictRequest(BaseModel):
    """Rows to predict, each an object of feature name -> value."""

    model_config = ConfigDict(extra="forbid")

    instances: list[dict[str, FeatureValue]] = Field(
        min_length=1,
        max_length=MAX_ROWS,
        description=(
            f"1 to {MAX_ROWS} rows. Each row carries every feature column of the served model (GET /model); "
            "numeric features take a JSON number or null (missing, imputed like in training); categorical, "
            "boolean, datetime (ISO 8601 text) and text ones a string, number, boolean or null. Fields that "
            "are not features are ignored."
        ),
        examples=[[{"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}]],
    )


class PredictResponse(BaseModel):
    predictions: list[str | float] = Field(
        description="One per row, in order: the class label (string) or the regression value (number)."
    )
    model_version: int = Field(description="Registry version of the model that answered.")
    model_name: str


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    model_name: str = Field(description="The registry model this API serves (MODEL_NAME).")


class ServedModel(RegistryRecord):
    """The served model's registry record, with the feature kinds rows are checked against."""

    feature_kinds: dict[str, FeatureKind] = Field(
        default_factory=dict,
        description=(
            "numeric, categorical, boolean, datetime or text per feature column (empty if the artifact could "
            "not be read)."
        ),
    )


class ErrorDetail(BaseModel):
    row: int | None = Field(default=None, description="0-based index of the row in instances, if any.")
    field: str | None = Field(default=None, description="The body field or feature column, if any.")
    message: str


class ErrorResponse(BaseModel):
    message: str
    errors: list[ErrorDetail] = Field(default_factory=list)


class ApiError(Exception):
    """An answer other than 2xx, with the problems it lists."""

    def __init__(
        self,
        status: HTTPStatus,
        message: str,
        errors: list[ErrorDetail] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []
        self.headers = headers or {}


def error_response(error: ApiError) -> Response[str]:
    body = ErrorResponse(message=error.message, errors=error.errors[:MAX_LISTED_ERRORS])
    return Response(
        status_code=int(error.status),
        content_type=content_types.APPLICATION_JSON,
        body=body.model_dump_json(exclude_none=True),
        headers=error.headers,
    )


# --- row checks --------------------------------------------------------------------------------------


def _described(value: Any) -> str:
    kind = {bool: "a boolean", str: "a string", int: "a number", float: "a number", type(None): "null"}
    return f"{value!r:.60} ({kind.get(type(value), type(value).__name__)})"


def check_rows(
    instances: list[dict[str, Any]], feature_columns: list[str], feature_kinds: Mapping[str, str]
) -> list[ErrorDetail]:
    """Every problem with the rows for a model with these features: missing columns, wrong types."""
    problems: list[ErrorDetail] = []
    numeric = [c for c in feature_columns if feature_kinds.get(c) == "numeric"]
    for index, row in enumerate(instances):
        missing = [c for c in feature_columns if c not in row]
        if missing:
            problems.append(
                ErrorDetail(
                    row=index,
                    field=missing[0] if len(missing) == 1 else None,
                    message=f"row {index}: missing feature column(s) {missing}",
                )
            )
        for column in numeric:
            value = row.get(column)
            if value is None:
                continue  # absent (reported above) or null: a missing value, imputed like in training
            if type(value) is bool or not isinstance(value, (int, float)):
                problems.append(
                    ErrorDetail(
                        row=index,
                        field=column,
                        message=f"row {index}: feature {column!r} is numeric: expected a number or null, "
                        f"got {_described(value)}",
                    )
                )
            elif isinstance(value, float) and not math.isfinite(value):
                problems.append(
                    ErrorDetail(
                        row=index,
                        field=column,
                        message=f"row {index}: feature {column!r} must be a finite number (null marks a "
                        f"missing value), got {value!r}",
                    )
                )
    return problems


def _validation_problems(errors: list[dict[str, Any]]) -> tuple[list[ErrorDetail], bool]:
    """Powertools/pydantic validation errors as row/field problems; True if only the row count was too big."""
    problems: dict[tuple[Any, ...], ErrorDetail] = {}
    too_many = False
    for error in errors:
        loc = tuple(error.get("loc", ()))
        kind = error.get("type", "")
        where = loc[1:] if loc[:1] == ("body",) else loc
        if kind == "json_invalid":
            detail = ErrorDetail(
                message=f"the body is not valid JSON: {error.get('ctx', {}).get('error', error['msg'])}"
            )
            where = ()
        elif not where:
            detail = ErrorDetail(message='the body must be a JSON object {"instances": [...]}')
        elif where[0] != "instances":
            detail = ErrorDetail(
                field=str(where[0]), message=f"unknown field {where[0]!r}: the body has only 'instances'"
            )
            where = where[:1]
        elif len(where) == 1:
            if kind == "too_long":
                too_many = True
                detail = ErrorDetail(field="instances", message=f"at most {MAX_ROWS} rows per request")
            elif kind == "too_short":
                detail = ErrorDetail(field="instances", message=f"instances is empty: send 1 to {MAX_ROWS} rows")
            elif kind == "missing":
                detail = ErrorDetail(field="instances", message="the body needs 'instances': a list of rows")
            else:
                detail = ErrorDetail(field="instances", message="instances must be a list of row objects")
        elif len(where) == 2:
            row = where[1]
            detail = ErrorDetail(
                row=row if isinstance(row, int) else None,
                message=f"row {row}: must be an object of feature: value, got {_described(error.get('input'))}",
            )
        else:
            row, column = where[1], str(where[2])
            where = where[:3]  # one problem per value, however many union members rejected it
            detail = ErrorDetail(
                row=row if isinstance(row, int) else None,
                field=column,
                message=f"row {row}: feature {column!r} must be a number, string, boolean or null, "
                f"got {_described(error.get('input'))}",
            )
        problems.setdefault(where, detail)
    return list(problems.values()), too_many and len(problems) == 1


def _summary(problems: list[ErrorDetail]) -> str:
    first = problems[0].message
    if len(problems) == 1:
        return f"invalid request: {first}"
    return f"invalid request: {len(problems)} problems, the first: {first}"


# --- the served model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    record: RegistryRecord
    feature_kinds: dict[str, str]


def read_feature_kinds(objects: ObjectStore, model_artifact: str) -> dict[str, str]:
    """``feature_kinds`` from the ``metadata.json`` train.py packed into model.tar.gz."""
    data = objects.read_bytes(model_artifact)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.name.lstrip("./") == "metadata.json"), None)
        handle = tar.extractfile(member) if member is not None else None
        if handle is None:
            raise ValueError(f"{model_artifact} holds no metadata.json")
        metadata = json.loads(handle.read())
    kinds = metadata.get("feature_kinds")
    if not isinstance(kinds, dict):
        raise ValueError(f"metadata.json in {model_artifact} has no feature_kinds")
    return {str(k): str(v) for k, v in kinds.items()}


class ServedModelCache:
    """The champion record, re-read at most every ``ttl_seconds``; feature kinds per artifact.

    A failed refresh keeps serving the record already known (a registry hiccup must not take the API
    down); without one it raises. Thread-safe: a local server may call it from several threads.
    """

    def __init__(
        self,
        model_name: str,
        registry: ModelRegistry,
        kinds_reader: Callable[[str], dict[str, str]],
        ttl_seconds: float = DEFAULT_REGISTRY_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model_name = model_name
        self._registry = registry
        self._kinds_reader = kinds_reader
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._served: Served | None = None
        self._fetched_at: float | None = None
        self._kinds: dict[str, dict[str, str]] = {}

    def get(self) -> Served | None:
        """The served model, or None when no version is approved yet."""
        now = self._clock()
        with self._lock:
            if self._fetched_at is not None and now - self._fetched_at < self._ttl:
                return self._served
            try:
                record = self._registry.champion(self.model_name)
            except TransientError as error:
                if self._served is None:
                    raise
                logger.warning(
                    "registry refresh failed; serving the version already known", extra={"error": str(error)}
                )
                self._fetched_at = now
                return self._served
            self._served = None if record is None else Served(record, self._kinds_for(record.model_artifact))
            self._fetched_at = now
            return self._served

    def _kinds_for(self, artifact: str) -> dict[str, str]:
        if artifact not in self._kinds:
            try:
                self._kinds[artifact] = self._kinds_reader(artifact)
            except Exception as error:  # the checks degrade to columns only; the endpoint still checks types
                logger.warning(
                    "cannot read the feature kinds of the model; checking feature columns only",
                    extra={"model_artifact": artifact, "error": f"{type(error).__name__}: {error}"},
                )
                self._kinds[artifact] = {}
        return self._kinds[artifact]


# --- the service ---------------------------------------------------------------------------------------


class InferenceService:
    """Resolve the served model, check rows, call the endpoint, log the prediction."""

    def __init__(
        self,
        model_name: str,
        models: ServedModelCache,
        runtime: EndpointRuntime,
        prediction_log: PredictionLog,
    ) -> None:
        self.model_name = model_name
        self.models = models
        self.runtime = runtime
        self.prediction_log = prediction_log

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> InferenceService:
        """Built from the function's environment (see infra/template.yaml's InferenceFunction)."""
        model_name = require_env("MODEL_NAME", environ)
        ttl_text = optional_env("REGISTRY_CACHE_SECONDS", str(DEFAULT_REGISTRY_CACHE_SECONDS), environ)
        try:
            ttl = float(ttl_text)
        except ValueError:
            ttl = -1.0
        if ttl < 0:
            raise ConfigurationError(f"REGISTRY_CACHE_SECONDS must be a number of seconds >= 0, got {ttl_text!r}")
        registry = ModelRegistry(require_env("MODEL_REGISTRY_TABLE", environ))
        objects = ObjectStore()
        cache = ServedModelCache(model_name, registry, functools.partial(read_feature_kinds, objects), ttl)
        return cls(model_name, cache, endpoint_runtime(environ), PredictionLog.from_env(environ))

    def served(self) -> Served:
        try:
            served = self.models.get()
        except TransientError as error:
            raise ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"the model registry is unavailable, retry: {error}",
                headers={"Retry-After": "1"},
            ) from error
        if served is None:
            raise ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"no approved version of model {self.model_name!r} is deployed yet: run the pipeline "
                "(e.g. `stepml run`) until a version passes the quality gate",
            )
        return served

    def predict(self, instances: list[dict[str, Any]], request_id: str) -> PredictResponse:
        started = time.perf_counter()
        served = self.served()
        record = served.record
        problems = check_rows(instances, record.feature_columns, served.feature_kinds)
        if problems:
            raise ApiError(HTTPStatus.BAD_REQUEST, _summary(problems), problems)
        if not record.endpoint_name:
            raise ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE, f"{record.model_name} v{record.version} names no endpoint to serve it"
            )
        should_log = self.prediction_log.sampled()
        model_started = time.perf_counter()
        predictions = self._invoke(record, instances)
        model_ms = (time.perf_counter() - model_started) * 1000
        metrics.add_metric(name="PredictionRows", unit=MetricUnit.Count, value=len(instances))
        metrics.add_metric(name="ModelLatency", unit=MetricUnit.Milliseconds, value=model_ms)
        if should_log:
            failure = self.prediction_log.record(
                PredictionRecord(
                    request_id=request_id,
                    model_name=record.model_name,
                    model_version=record.version,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    model_latency_ms=model_ms,
                    n_rows=len(instances),
                    input_sha256=input_sha256(instances),
                    # the rows themselves, for a sample: what drift monitoring compares with the baseline
                    rows=instances if self.prediction_log.features_sampled() else None,
                )
            )
            failures = [f"{type(failure).__name__}: {failure}"] if failure is not None else []
            failures += self.prediction_log.take_failures()  # from earlier background batches
            for message in failures:
                logger.warning(
                    "could not write the prediction log; the prediction is answered anyway",
                    extra={"error": message, "table": self.prediction_log.table_name},
                )
            if failures:
                metrics.add_metric(name="PredictionLogFailures", unit=MetricUnit.Count, value=len(failures))
        return PredictResponse(predictions=predictions, model_version=record.version, model_name=record.model_name)

    def _invoke(self, record: RegistryRecord, instances: list[dict[str, Any]]) -> list[Any]:
        endpoint = str(record.endpoint_name)
        try:
            predictions = self.runtime.predict(endpoint, instances)
        except ValidationException as error:  # SageMaker's answer for an endpoint that does not exist
            raise ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"{record.model_name} v{record.version} is registered but its endpoint {endpoint} is not "
                f"available: {error}",
            ) from error
        except TransientError as error:
            raise ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"endpoint {endpoint} is busy or unavailable, retry: {error}",
                headers={"Retry-After": "1"},
            ) from error
        except ModelError as error:
            raise ApiError(HTTPStatus.BAD_GATEWAY, f"the model failed on the request: {error}") from error
        if len(predictions) != len(instances):
            raise ApiError(
                HTTPStatus.BAD_GATEWAY,
                f"endpoint {endpoint} answered {len(predictions)} predictions for {len(instances)} rows",
            )
        return predictions

    def model(self) -> ServedModel:
        served = self.served()
        return ServedModel.model_validate({**served.record.model_dump(), "feature_kinds": served.feature_kinds})


# --- the resolver ---------------------------------------------------------------------------------------

_ERROR_RESPONSES: dict[int, dict[str, Any]] = {
    400: {"description": "Invalid body or rows: every problem is listed with its row and field."},
    413: {"description": f"More than {MAX_ROWS} rows or a body over {MAX_BODY_BYTES} bytes."},
    415: {"description": "A body that is not JSON (send Content-Type: application/json)."},
    502: {"description": "The model endpoint failed on valid rows."},
    503: {"description": "No approved model is deployed yet, or the registry/endpoint is unavailable."},
}


def _with_error_model(codes: tuple[int, ...]) -> dict[int, Any]:
    return {
        code: {**_ERROR_RESPONSES[code], "content": {"application/json": {"model": ErrorResponse}}} for code in codes
    }


def create_app(service: InferenceService) -> APIGatewayRestResolver:
    """The API's routes over ``service`` (one resolver per service; Powertools keeps per-request state on it,
    so a resolver serves one request at a time, as a Lambda execution environment does)."""
    app = APIGatewayRestResolver(enable_validation=True)

    @app.get("/health", summary="Liveness", tags=["serving"])
    def health() -> HealthResponse:
        return HealthResponse(model_name=service.model_name)

    @app.get(
        "/model",
        summary="The served model's registry record",
        tags=["serving"],
        responses={200: {"description": "The champion version"}, **_with_error_model((503,))},
    )
    def model() -> ServedModel:
        return service.model()

    @app.post(
        "/predict",
        summary="Predict for 1 to 1000 rows",
        tags=["serving"],
        responses={200: {"description": "One prediction per row"}, **_with_error_model((400, 413, 415, 502, 503))},
    )
    def predict(request: PredictRequest) -> PredictResponse:
        context = app.current_event.request_context
        request_id = context.request_id or getattr(app.lambda_context, "aws_request_id", "") or "unknown"
        return service.predict(request.instances, request_id)

    @functools.cache
    def document() -> str:
        return app.get_openapi_json_schema(
            title=API_TITLE,
            version=API_VERSION,
            description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
        )

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> Response[str]:
        return Response(200, content_types.APPLICATION_JSON, document())

    @app.exception_handler(ApiError)
    def api_error(error: ApiError) -> Response[str]:
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    def invalid_request(error: RequestValidationError) -> Response[str]:
        problems, too_many = _validation_problems(list(error.errors()))
        status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE if too_many else HTTPStatus.BAD_REQUEST
        message = f"too many rows: at most {MAX_ROWS} per request" if too_many else _summary(problems)
        return error_response(ApiError(status, message, problems))

    @app.not_found
    def not_found(error: Exception) -> Response[str]:
        event = app.current_event
        return error_response(
            ApiError(
                HTTPStatus.NOT_FOUND,
                f"no route {event.http_method} {event.path}: use POST /predict, GET /health, GET /model "
                "or GET /openapi.json",
            )
        )

    @app.exception_handler(Exception)
    def unexpected(error: Exception) -> Response[str]:
        request_id = app.current_event.request_context.request_id
        logger.exception("request failed", extra={"error_type": type(error).__name__})
        metrics.add_metric(name="RequestsFailed", unit=MetricUnit.Count, value=1)
        return error_response(
            ApiError(
                HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error (request id {request_id}); see the function log"
            )
        )

    return app


def body_too_large(event: Mapping[str, Any]) -> ApiError | None:
    """A 413 for a body over MAX_BODY_BYTES, checked before anything parses it."""
    body = event.get("body") or ""
    # len() of a str counts characters; UTF-8 has up to 4 bytes each, so encode only when it could matter.
    size = len(body) if len(body) * 4 <= MAX_BODY_BYTES else len(str(body).encode())
    if event.get("isBase64Encoded"):
        size = size * 3 // 4
    if size <= MAX_BODY_BYTES:
        return None
    return ApiError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        f"the body has {size} bytes; at most {MAX_BODY_BYTES} bytes and {MAX_ROWS} rows per request",
    )


def _proxy_response(error: ApiError) -> dict[str, Any]:
    response = error_response(error)
    return {
        "statusCode": response.status_code,
        # REST proxy responses from Powertools carry multiValueHeaders only; so does this one.
        "multiValueHeaders": {"Content-Type": [content_types.APPLICATION_JSON]},
        "body": response.body,
        "isBase64Encoded": False,
    }


_JSON_TYPES = ("application/json", "application/x-www-form-urlencoded", "")


def json_body_event(event: dict[str, Any]) -> dict[str, Any] | ApiError:
    """The event with its body declared JSON, or a 415 for a body of another media type.

    The API speaks JSON only. A missing Content-Type, or curl's default for ``-d``
    (application/x-www-form-urlencoded), is read as JSON rather than as a form.
    """
    if not event.get("body"):
        return event
    headers = {str(k): v for k, v in (event.get("headers") or {}).items()}
    declared = next((str(v) for k, v in headers.items() if k.lower() == "content-type"), "")
    media = declared.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return event
    if media not in _JSON_TYPES:
        return ApiError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"the body must be JSON (Content-Type: application/json), got Content-Type {declared!r}",
        )
    multi = {k: v for k, v in (event.get("multiValueHeaders") or {}).items() if k.lower() != "content-type"}
    headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    return {
        **event,
        "headers": {**headers, "Content-Type": "application/json"},
        "multiValueHeaders": {**multi, "Content-Type": ["application/json"]},
    }


def handle(app: APIGatewayRestResolver, event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One API Gateway proxy event through the API, with the request id as the log correlation id."""
    require_env("POWERTOOLS_METRICS_NAMESPACE")  # checked first: metrics must flush, whatever happens
    request_context = event.get("requestContext") or {}
    logger.set_correlation_id(request_context.get("requestId"))
    started = time.perf_counter()
    try:
        with tracer.provider.in_subsegment("## inference"):
            # Answered before the resolver parses the body (the proxy response shape API Gateway expects).
            checked = body_too_large(event) or json_body_event(event)
            answer = _proxy_response(checked) if isinstance(checked, ApiError) else app.resolve(checked, context)
        status = int(answer.get("statusCode", 500))
        metrics.add_metric(name=f"Responses{status // 100}XX", unit=MetricUnit.Count, value=1)
        logger.info(
            "request",
            extra={
                "method": event.get("httpMethod"),
                "path": event.get("path"),
                "status": status,
                "ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )
        return answer
    finally:
        metrics.add_metric(
            name="RequestLatency", unit=MetricUnit.Milliseconds, value=(time.perf_counter() - started) * 1000
        )
        metrics.flush_metrics(raise_on_empty_metrics=False)
