"""The inference REST API: API Gateway (REST, proxy integration) -> this Lambda -> the model's endpoint.

Routes (Powertools ``APIGatewayRestResolver`` with request validation; the OpenAPI document it generates
is served at ``GET /openapi.json``; a valid ``POST /predict`` is answered by :func:`fast_predict` with the
resolver's own answer, without the resolver's cost):

* ``POST /predict`` ``{"instances": [{feature: value, ...}, ...]}`` (1 to :data:`MAX_ROWS` rows, at most
  :data:`MAX_BODY_BYTES` bytes) -> ``{"predictions": [...], "model_version": N, "model_name": "..."}``
* ``GET /health`` liveness (touches nothing)
* ``GET /model`` what a client needs of the served model (features and their kinds, classes, metrics), and
  no account, execution or storage detail
* any other method on these paths: 405 with ``Allow``; any other path: 404

Which model: ``MODEL_NAME`` (a registry model name) -> its champion (newest approved version) -> the
record's ``endpoint_name``. The champion is cached for ``REGISTRY_CACHE_SECONDS`` (default 5 s), so the hot
path does not read DynamoDB per request and a newly registered version is served within that time.

Rows are checked before the endpoint is called, so a client gets one 400 naming every bad row and field
rather than the container's first error: the registry record gives the feature columns; the feature
kinds (numeric, categorical, boolean, datetime, text) come from ``metadata.json`` inside the model artifact
(train.py writes it next to model.joblib), read once per artifact (artifacts are immutable). If the artifact
cannot be read, the registry record's column roles stand in.

Status codes: 400 invalid rows or body (every problem listed in ``errors``; also a body that is not UTF-8,
nested too deep, with a lone surrogate escape, or with a number beyond ±3.4e38), 404 an unknown path, 405 a
wrong method, 413 too many rows or bytes, 415 a body that is not JSON, 503 no approved model yet / endpoint
not deployed / registry or endpoint unavailable, 502 the model failed on valid rows, 500 anything else (the
message carries the request id). Messages never carry what the endpoint or registry said (it can name the
account or the artifact): that goes to the log. The request contract and the OpenAPI document:
:mod:`.inference_api_contract`.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import tarfile
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.metrics import MetricUnit

from pipeline_core.aws.prediction_log import PredictionLog, PredictionRecord, input_sha256
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.aws.sagemaker import EndpointRuntime, endpoint_runtime
from pipeline_core.errors import ConfigurationError, TransientError
from pipeline_core.models import RegistryRecord
from pipeline_core.observability import logger, metrics, tracer
from pipeline_core.settings import optional_env, require_env
from pipeline_core.stages.inference_api_contract import (
    MAX_ROWS,
    ApiError,
    HealthResponse,
    PredictRequest,
    PredictResponse,
    ServedModel,
    body_too_large,
    check_rows,
    error_response,
    json_body_event,
    kinds_from_roles,
    method_not_allowed,
    model_card,
    openapi_document,
    parse_json,
    proxy_response,
    summary,
    text_body_event,
    validation_problems,
)
from pipeline_core.standin.errors import ModelError, ValidationException

API_TITLE = "stepml inference API"
API_VERSION = "1.0.0"
DEFAULT_REGISTRY_CACHE_SECONDS = 5.0


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
            # the artifact's metadata.json says what the model was fitted with; the registry's column roles
            # (Preprocess's, the same in a normal run) stand in when the artifact cannot be read
            self._served = (
                None
                if record is None
                else Served(record, self._kinds_for(record.model_artifact) or kinds_from_roles(record))
            )
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
            logger.warning("the model registry is unavailable", extra={"error": str(error)})
            raise ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE, "the model registry is unavailable, retry", headers={"Retry-After": "1"}
            ) from error
        if served is None:
            raise ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"no approved version of model {self.model_name!r} is deployed yet: run the pipeline "
                "(e.g. `stepml run`) until a version passes the quality gate",
            )
        return served

    def served_or_none(self) -> Served | None:
        """The served model, or None if there is none or the registry cannot say (for the OpenAPI document)."""
        try:
            return self.models.get()
        except TransientError:
            return None

    def predict(self, instances: list[dict[str, Any]], request_id: str) -> PredictResponse:
        started = time.perf_counter()
        served = self.served()
        record = served.record
        problems = check_rows(instances, record.feature_columns, served.feature_kinds)
        if problems:
            raise ApiError(HTTPStatus.BAD_REQUEST, summary(problems), problems)
        if not record.endpoint_name:
            raise ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE, f"{record.model_name} v{record.version} names no endpoint to serve it"
            )
        should_log = self.prediction_log.sampled()
        model_started = time.perf_counter()
        predictions = self._invoke(record, instances, request_id)
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

    def _invoke(self, record: RegistryRecord, instances: list[dict[str, Any]], request_id: str) -> list[Any]:
        """The endpoint's predictions. What the endpoint or the model said goes to the log, not to the client:
        it can name the account, the artifact and the bucket."""
        endpoint = str(record.endpoint_name)
        try:
            predictions = self.runtime.predict(endpoint, instances)
        except ValidationException as error:  # SageMaker's answer for an endpoint that does not exist
            logger.warning("the endpoint is not available", extra={"endpoint": endpoint, "error": str(error)})
            raise ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"{record.model_name} v{record.version} is registered but its endpoint {endpoint} is not available",
            ) from error
        except TransientError as error:
            logger.warning("the endpoint is busy or unavailable", extra={"endpoint": endpoint, "error": str(error)})
            raise ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"endpoint {endpoint} is busy or unavailable, retry",
                headers={"Retry-After": "1"},
            ) from error
        except ModelError as error:
            logger.warning("the model failed on valid rows", extra={"endpoint": endpoint, "error": str(error)})
            raise ApiError(
                HTTPStatus.BAD_GATEWAY,
                f"the model failed on rows that passed the API's checks (request id {request_id}); "
                "the function log has the model's error",
            ) from error
        if len(predictions) != len(instances):
            raise ApiError(
                HTTPStatus.BAD_GATEWAY,
                f"endpoint {endpoint} answered {len(predictions)} predictions for {len(instances)} rows",
            )
        return predictions

    def model(self) -> ServedModel:
        served = self.served()
        return model_card(served.record, served.feature_kinds)


# --- the resolver ---------------------------------------------------------------------------------------


def create_app(service: InferenceService) -> APIGatewayRestResolver:
    """The API's routes over ``service`` (one resolver per service; Powertools keeps per-request state on it,
    so a resolver serves one request at a time, as a Lambda execution environment does)."""
    # parse_json: a body nested too deep or with a number too long for int() is a 400, not a 500
    app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=parse_json)

    @app.get("/health", summary="Liveness", tags=["serving"])
    def health() -> HealthResponse:
        return HealthResponse(model_name=service.model_name)

    @app.get("/model", summary="The served model: features, classes, metrics", tags=["serving"])
    def model() -> ServedModel:
        return service.model()

    @app.post("/predict", summary=f"Predict for 1 to {MAX_ROWS} rows", tags=["serving"])
    def predict(request: PredictRequest) -> PredictResponse:
        return service.predict(request.instances, _request_id(app.current_event.raw_event, app.lambda_context))

    @functools.cache
    def generated() -> dict[str, Any]:
        description = __doc__.split("\n\n", 1)[0] if __doc__ else None
        schema: dict[str, Any] = json.loads(
            app.get_openapi_json_schema(title=API_TITLE, version=API_VERSION, description=description)
        )
        return schema

    @functools.lru_cache(maxsize=4)
    def document(card: str | None) -> str:
        served = None if card is None else ServedModel.model_validate_json(card)
        return json.dumps(openapi_document(generated(), served))

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> Response[str]:
        # the served model's card is the cache key: a new version gets its own document
        served = service.served_or_none()
        card = None if served is None else model_card(served.record, served.feature_kinds).model_dump_json()
        return Response(200, content_types.APPLICATION_JSON, document(card))

    @app.exception_handler(ApiError)
    def api_error(error: ApiError) -> Response[str]:
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    def invalid_request(error: RequestValidationError) -> Response[str]:
        problems, too_many = validation_problems(list(error.errors()))
        status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE if too_many else HTTPStatus.BAD_REQUEST
        message = f"too many rows: at most {MAX_ROWS} per request" if too_many else summary(problems)
        return error_response(ApiError(status, message, problems))

    @app.not_found
    def not_found(error: Exception) -> Response[str]:
        event = app.current_event
        wrong_method = method_not_allowed(event.http_method, event.path)
        if wrong_method is not None:
            return error_response(wrong_method)
        return error_response(
            ApiError(
                HTTPStatus.NOT_FOUND,
                f"no route {event.http_method} {event.path}: use POST /predict, GET /health, GET /model "
                "or GET /openapi.json",
            )
        )

    @app.exception_handler(Exception)
    def unexpected(error: Exception) -> Response[str]:
        return error_response(_failed(error, app.current_event.request_context.request_id))

    return app


def _failed(error: Exception, request_id: str | None) -> ApiError:
    """The 500 for an unexpected failure, logged with its traceback and counted."""
    logger.exception("request failed", extra={"error_type": type(error).__name__})
    metrics.add_metric(name="RequestsFailed", unit=MetricUnit.Count, value=1)
    return ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error (request id {request_id}); see the function log")


def _request_id(event: dict[str, Any], context: Any) -> str:
    """The request id the predict route uses: API Gateway's, else the invocation's."""
    request_id = (event.get("requestContext") or {}).get("requestId")
    return str(request_id or getattr(context, "aws_request_id", "") or "unknown")


def fast_predict(service: InferenceService, event: dict[str, Any], context: Any) -> dict[str, Any] | None:
    """A valid ``POST /predict`` answered without the resolver, or None for the resolver to answer.

    Powertools' routing, request validation and response serialisation were ~40 % of a request's CPU (a
    cProfile of the handler on one row). This path takes only a body that parses and validates as a
    :class:`PredictRequest` with the same parser and model the resolver uses; anything else (another route,
    a body that does not parse or validate) is left to the resolver, so every refusal is the resolver's own
    answer. The answer is the one the resolver builds (tests/unit/test_inference_api_fast.py compares them)."""
    if event.get("httpMethod") != "POST" or event.get("path") != "/predict" or not event.get("body"):
        return None
    try:
        request = PredictRequest.model_validate(parse_json(str(event["body"])))
    except Exception:  # the resolver parses it again and says what is wrong
        return None
    request_id = _request_id(event, context)
    try:
        answer = service.predict(request.instances, request_id)
    except ApiError as error:
        return proxy_response(error)
    except Exception as error:  # the resolver's `unexpected` handler, as it would answer
        return proxy_response(_failed(error, request_id))
    # Powertools' own serialiser for a JSON body (compact separators) on the model's JSON form
    body = json.dumps(answer.model_dump(mode="json"), separators=(",", ":"))
    return {
        "statusCode": int(HTTPStatus.OK),
        "body": body,
        "isBase64Encoded": False,
        "multiValueHeaders": {"Content-Type": [content_types.APPLICATION_JSON]},
    }


def _checked_event(event: dict[str, Any]) -> dict[str, Any] | ApiError:
    """The event the resolver can read, or the 4xx answered before it parses the body."""
    too_large = body_too_large(event)
    if too_large is not None:
        return too_large
    text = text_body_event(event)
    return text if isinstance(text, ApiError) else json_body_event(text)


def handle(
    app: APIGatewayRestResolver, event: dict[str, Any], context: Any, service: InferenceService | None = None
) -> dict[str, Any]:
    """One API Gateway proxy event through the API, with the request id as the log correlation id; with
    ``service`` (the one ``app`` serves), a valid ``POST /predict`` takes :func:`fast_predict`."""
    require_env("POWERTOOLS_METRICS_NAMESPACE")  # checked first: metrics must flush, whatever happens
    request_context = event.get("requestContext") or {}
    logger.set_correlation_id(request_context.get("requestId"))
    started = time.perf_counter()
    try:
        # no subsegment at all when tracing is off (locally): an X-Ray SDK no-op still costs ~60 µs a request
        with nullcontext() if tracer.disabled else tracer.provider.in_subsegment("## inference"):
            # Answered before the resolver parses the body (the proxy response shape API Gateway expects).
            checked = _checked_event(event)
            if isinstance(checked, ApiError):
                answer = proxy_response(checked)
            else:
                fast = None if service is None else fast_predict(service, checked, context)
                answer = app.resolve(checked, context) if fast is None else fast
        status = int(answer.get("statusCode", 500))
        metrics.add_metric(name=f"Responses{status // 100}XX", unit=MetricUnit.Count, value=1)
        # A line per refused or failed request; a successful one only at DEBUG. The stage's access log
        # (AccessLogSetting) has every request, and the metrics above count them: a line per 2xx was a sixth
        # of a request's time here, and on AWS a CloudWatch Logs ingestion charge per request.
        if status >= 400 or logger.log_level <= logging.DEBUG:
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
