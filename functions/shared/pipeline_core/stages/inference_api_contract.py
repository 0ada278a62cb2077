"""The inference API's contract: what a request may be, what each answer carries, the OpenAPI document.

Used by :mod:`pipeline_core.stages.inference_api` (the service and the resolver). Everything here is pure:
the request models, the error answer, the checks a body passes before anything parses it (size, base64,
UTF-8, media type), the JSON parser the resolver uses (nesting and number limits), the public model card
``GET /model`` answers, and the OpenAPI document completed with the served model's features.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import math
import re
import reprlib
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from pydantic import BaseModel, ConfigDict, Field

from pipeline_core.models import ProblemType, RegistryRecord, RegistryStatus

MAX_ROWS = 1000
# Below Lambda's 6 MB synchronous payload limit (the whole proxy event counts) and SageMaker's 6 MB
# InvokeEndpoint limit, with room for the event envelope.
MAX_BODY_BYTES = 4 * 1024 * 1024
# A response lists at most this many problems; the message says how many there were in all.
MAX_LISTED_ERRORS = 50
# Python's int() refuses longer digit strings (sys.get_int_max_str_digits); longer ones are read as a float
# (infinite beyond a double), which the row checks then name.
MAX_INT_DIGITS = 4300

# The largest magnitude a feature's number may have: a float32's (numpy.finfo("float32").max). scikit-learn's
# tree models read features as float32, and a fitted scaler can overflow a double near its maximum (schemathesis
# found 1.8e308 answered with a 502); past this bound a number is the client's error, a 400 naming the field.
MAX_FEATURE_NUMBER = 3.4028234663852886e38
NUMBER_RANGE = {"minimum": -MAX_FEATURE_NUMBER, "maximum": MAX_FEATURE_NUMBER}

# The feature roles train.py writes as feature_kinds (docs: column roles); only numeric ones are type-checked here,
# the others take a string, number, boolean or null and the model converts them as in training.
FeatureKind = Literal["numeric", "categorical", "boolean", "datetime", "text"]
FEATURE_KINDS: tuple[str, ...] = ("numeric", "categorical", "boolean", "datetime", "text")
FeatureValue = float | int | str | bool | None

# The methods each path answers; any other method on these paths is a 405 naming them (Allow).
ROUTES: dict[str, tuple[str, ...]] = {
    "/predict": ("POST",),
    "/health": ("GET",),
    "/model": ("GET",),
    "/openapi.json": ("GET",),
}


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
            "boolean, datetime (ISO 8601 text) and text ones a string, number, boolean or null. Numbers must "
            f"be within ±3.4e38. Fields that are not features are ignored."
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


class ServedModel(BaseModel):
    """What a client needs of the served model: its features, its classes, how well it did.

    A subset of the registry record: no account, execution, bucket, artifact or dataset detail."""

    model_name: str
    version: int
    status: RegistryStatus
    problem_type: ProblemType
    target: str = Field(description="The column the model predicts.")
    class_labels: list[str] = Field(description="The classes a classifier answers (empty for a regression).")
    feature_columns: list[str] = Field(description="The columns every row must carry, in training order.")
    feature_kinds: dict[str, FeatureKind] = Field(
        description="numeric, categorical, boolean, datetime or text per feature column: numeric ones take a "
        "number or null, the others a string, number, boolean or null."
    )
    metrics: dict[str, float] = Field(description="The evaluation's metrics on the held-out test split.")
    primary_metric: str
    created_at: str = Field(description="When this version was registered (ISO 8601).")


def model_card(record: RegistryRecord, feature_kinds: Mapping[str, str]) -> ServedModel:
    """The public view of a registry record (see :class:`ServedModel`)."""
    return ServedModel.model_validate(
        {
            **record.model_dump(include=set(ServedModel.model_fields) - {"feature_kinds"}),
            "feature_kinds": {c: feature_kinds[c] for c in record.feature_columns if c in feature_kinds},
        }
    )


def kinds_from_roles(record: RegistryRecord) -> dict[str, str]:
    """The registry's column roles of the features (Preprocess's), where they are feature kinds."""
    roles = record.column_roles
    return {c: roles[c] for c in record.feature_columns if roles.get(c) in FEATURE_KINDS}


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


def proxy_response(error: ApiError) -> dict[str, Any]:
    """``error`` as the REST proxy response the resolver would give (multiValueHeaders only, as Powertools)."""
    response = error_response(error)
    headers = {"Content-Type": [content_types.APPLICATION_JSON], **{k: [v] for k, v in error.headers.items()}}
    return {
        "statusCode": response.status_code,
        "multiValueHeaders": headers,
        "body": response.body,
        "isBase64Encoded": False,
    }


def method_not_allowed(method: str, path: str) -> ApiError | None:
    """A 405 naming the allowed methods (Allow) for a known path asked with another method."""
    allowed = ROUTES.get(path)
    if allowed is None or method in allowed:
        return None
    methods = ", ".join(allowed)
    return ApiError(
        HTTPStatus.METHOD_NOT_ALLOWED, f"{method} {path} is not allowed: use {methods}", headers={"Allow": methods}
    )


_short = reprlib.Repr()  # Python 3.11's takes no keyword arguments
_short.maxlevel, _short.maxlist, _short.maxdict, _short.maxstring, _short.maxother = 2, 4, 4, 40, 40


def described(value: Any) -> str:
    """A value for an error message: short, whatever its size or nesting."""
    kind = {bool: "a boolean", str: "a string", int: "a number", float: "a number", type(None): "null"}
    text = f"a number of {len(str(abs(value)))} digits" if type(value) is int and value.bit_length() > 64 else None
    return text or f"{_short.repr(value)} ({kind.get(type(value), type(value).__name__)})"


# --- row checks ------------------------------------------------------------------------------------------


def _number_problem(value: Any) -> str | None:
    """Why a JSON number cannot be a feature value (None if it can): NaN, infinite or too large."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number (null marks a missing value), got {value!r}"
    if abs(value) > MAX_FEATURE_NUMBER:
        return f"must be within ±3.4e38 (what the model reads), got {described(value)}"
    return None


def check_rows(
    instances: list[dict[str, Any]], feature_columns: list[str], feature_kinds: Mapping[str, str]
) -> list[ErrorDetail]:
    """Every problem with the rows for a model with these features: missing columns, wrong types, numbers
    that are not finite or beyond :data:`MAX_FEATURE_NUMBER` (whatever the feature's kind)."""
    problems: list[ErrorDetail] = []
    numeric = {c for c in feature_columns if feature_kinds.get(c) == "numeric"}
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
        for column in feature_columns:
            value = row.get(column)
            if value is None:
                continue  # absent (reported above) or null: a missing value, imputed like in training
            is_number = type(value) is not bool and isinstance(value, (int, float))
            why: str | None
            if column in numeric and not is_number:
                why = f"is numeric: expected a number or null, got {described(value)}"
            elif is_number:
                why = _number_problem(value)
            else:
                why = None
            if why is not None:
                problems.append(ErrorDetail(row=index, field=column, message=f"row {index}: feature {column!r} {why}"))
    return problems


def validation_problems(errors: list[dict[str, Any]]) -> tuple[list[ErrorDetail], bool]:
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
                message=f"row {row}: must be an object of feature: value, got {described(error.get('input'))}",
            )
        else:
            row, column = where[1], str(where[2])
            where = where[:3]  # one problem per value, however many union members rejected it
            detail = ErrorDetail(
                row=row if isinstance(row, int) else None,
                field=column,
                message=f"row {row}: feature {column!r} must be a number, string, boolean or null, "
                f"got {described(error.get('input'))}",
            )
        problems.setdefault(where, detail)
    return list(problems.values()), too_many and len(problems) == 1


def summary(problems: list[ErrorDetail]) -> str:
    first = problems[0].message
    if len(problems) == 1:
        return f"invalid request: {first}"
    return f"invalid request: {len(problems)} problems, the first: {first}"


# --- the body, before and while it is parsed --------------------------------------------------------------


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


def text_body_event(event: dict[str, Any]) -> dict[str, Any] | ApiError:
    """The event with a base64-encoded body decoded to text, or a 400 if it is not base64 or not UTF-8.

    API Gateway base64-encodes a body it takes for binary (``isBase64Encoded``); JSON is UTF-8 (RFC 8259),
    so a body that does not decode is malformed, not an internal error."""
    if not event.get("isBase64Encoded") or not event.get("body"):
        return event
    try:
        data = base64.b64decode(str(event["body"]), validate=True)
    except (binascii.Error, ValueError):
        return ApiError(HTTPStatus.BAD_REQUEST, "the body is marked base64-encoded but is not valid base64")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return ApiError(
            HTTPStatus.BAD_REQUEST,
            f"the body is not UTF-8 text (byte {error.start} is {data[error.start]:#04x}): send JSON in UTF-8",
        )
    return {**event, "body": text, "isBase64Encoded": False}


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


def _number(text: str) -> int | float:
    return int(text) if len(text) <= MAX_INT_DIGITS else float(text)


# A \uD800-\uDFFF escape: half of a UTF-16 pair; alone it decodes to a lone surrogate, which is not text.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json(text: str) -> Any:
    """The resolver's JSON parser: a body nested too deep for Python's parser, or with a string holding a
    lone surrogate escape (valid JSON grammar, not Unicode text), is a 400; an integer too long for int() is
    read as a float (infinite past a double), which the row checks reject by field."""
    try:
        value = json.loads(text, parse_int=_number)
    except RecursionError:
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            "invalid request: the body is nested too deep; a row is an object of feature: value",
            [ErrorDetail(message="the body is nested too deep")],
        ) from None
    if _SURROGATE_ESCAPE.search(text):  # only then is the walk needed: the body text itself is UTF-8
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as error:
            message = (
                f"a string holds a lone surrogate escape (\\u{ord(error.object[error.start]):04x}): JSON "
                "strings must be Unicode text"
            )
            raise ApiError(
                HTTPStatus.BAD_REQUEST, f"invalid request: {message}", [ErrorDetail(message=message)]
            ) from None
    return value


# --- the OpenAPI document ---------------------------------------------------------------------------------

THROTTLED = {
    "description": "Too many requests: API Gateway's throttle or the caller's usage-plan quota (on AWS; "
    "answered by API Gateway, not by the function)."
}
ERROR_RESPONSES: dict[int, str] = {
    400: "Invalid body or rows: every problem is listed with its row and field.",
    413: f"More than {MAX_ROWS} rows or a body over {MAX_BODY_BYTES} bytes.",
    415: "A body that is not JSON (send Content-Type: application/json).",
    500: "An unexpected failure; the message carries the request id to find it in the function log.",
    502: "The model failed on valid rows.",
    503: "No approved model is deployed yet, or the registry/endpoint is unavailable (retry).",
}
# what each operation can answer besides 200 and 429 (the resolver's 405 and 404 are per path, not operation)
OPERATION_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("/predict", "post"): (400, 413, 415, 500, 502, 503),
    ("/model", "get"): (500, 503),
    ("/health", "get"): (500,),
}


def _feature_schema(kind: str) -> dict[str, Any]:
    if kind == "numeric":
        return {**NUMBER_RANGE, "type": ["number", "null"], "description": "numeric: a number or null (missing)"}
    described_kind = f"{kind} (ISO 8601 text)" if kind == "datetime" else kind
    return {
        **NUMBER_RANGE,
        "type": ["string", "number", "boolean", "null"],
        "description": f"{described_kind}: a string, number, boolean or null",
    }


def openapi_document(base: Mapping[str, Any], served: ServedModel | None) -> dict[str, Any]:
    """Powertools' generated document made true to what is sent: no 422 (validation errors are 400), the
    statuses each operation really answers, and, when a model is served, its rows: every feature column
    required, with the JSON types its kind takes."""
    document = copy.deepcopy(dict(base))
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for (path, method), codes in OPERATION_ERRORS.items():
        operation = document["paths"][path][method]
        responses = {k: v for k, v in operation["responses"].items() if k == "200"}
        responses.update({str(code): {"description": ERROR_RESPONSES[code], "content": error_ref} for code in codes})
        responses["429"] = THROTTLED
        operation["responses"] = dict(sorted(responses.items()))
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schemas.pop(unused, None)
    error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorResponse"] = error_schema
    if served is None:
        return document
    instances = schemas["PredictRequest"]["properties"]["instances"]
    instances.pop("examples", None)  # they are another model's rows
    kinds = served.feature_kinds
    instances["items"] = {
        "type": "object",
        "properties": {c: _feature_schema(kinds.get(c, "categorical")) for c in served.feature_columns},
        "required": list(served.feature_columns),
        "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
    }
    info = document["info"]
    info["description"] = (
        f"{info.get('description') or ''}\n\nServing {served.model_name} v{served.version} "
        f"({served.problem_type}, target {served.target!r}): rows carry {', '.join(served.feature_columns)}."
    ).strip()
    return document
