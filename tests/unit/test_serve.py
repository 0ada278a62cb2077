"""stepml serve's pieces: HTTP requests as API Gateway REST proxy events, proxy answers as HTTP responses,
and the choice of the served model (the end-to-end server is tested in tests/integration/test_serve.py)."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from pipeline_core.aws.registry import ModelRegistry

from stepml.serve import MAX_PAYLOAD_BYTES, last_deployed_model, proxy_event
from stepml.serve_http import wsgi_app
from tests.conftest import FakeAws, load_event
from tests.unit.test_inference_api import registry_record


def test_a_request_becomes_the_event_api_gateway_sends() -> None:
    headers = [("Host", "127.0.0.1:8080"), ("Content-Type", "application/json"), ("User-Agent", "curl/8"),
               ("X-Multi", "a"), ("X-Multi", "b")]  # fmt: skip
    now = datetime(2026, 11, 14, 9, 12, 45, tzinfo=UTC)
    event = proxy_event("POST", "/predict?verbose=1&tag=a&tag=b", headers, b'{"instances": []}', "10.0.0.9", "r-1", now)

    sample = load_event("apigw_predict")
    assert set(event) == set(sample)
    assert set(event["requestContext"]) == set(sample["requestContext"])
    assert set(event["requestContext"]["identity"]) == set(sample["requestContext"]["identity"])
    assert (event["httpMethod"], event["path"], event["resource"]) == ("POST", "/predict", "/predict")
    assert event["queryStringParameters"] == {"verbose": "1", "tag": "b"}
    assert event["multiValueQueryStringParameters"] == {"verbose": ["1"], "tag": ["a", "b"]}
    assert event["headers"]["X-Multi"] == "b" and event["multiValueHeaders"]["X-Multi"] == ["a", "b"]
    assert event["body"] == '{"instances": []}' and event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["requestId"] == "r-1" and context["path"] == "/local/predict" and context["stage"] == "local"
    assert context["identity"]["sourceIp"] == "10.0.0.9" and context["identity"]["userAgent"] == "curl/8"
    assert context["requestTime"] == "14/Nov/2026:09:12:45 +0000"
    assert context["requestTimeEpoch"] == int(now.timestamp() * 1000)

    binary = proxy_event("POST", "/predict", [], b"\xff\xfe")
    assert binary["isBase64Encoded"] is True and base64.b64decode(binary["body"]) == b"\xff\xfe"
    empty = proxy_event("GET", "/health", [], b"")
    assert empty["body"] is None and empty["queryStringParameters"] is None


def _environ(method: str, path: str, body: bytes, **extra: str) -> dict[str, Any]:
    return {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "REMOTE_ADDR": "127.0.0.9",
            "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)), **extra}  # fmt: skip


def test_the_proxy_answer_becomes_the_http_response() -> None:
    seen: list[dict[str, Any]] = []

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        seen.append(event)
        return {
            "statusCode": 418,
            "multiValueHeaders": {"Content-Type": ["application/json"], "X-Two": ["1", "2"]},
            "headers": {"X-Single": "yes"},
            "body": base64.b64encode(json.dumps({"echo": event["body"]}).encode()).decode(),
            "isBase64Encoded": True,
        }

    app = wsgi_app(invoke)
    started: list[tuple[str, list[tuple[str, str]]]] = []
    environ = _environ("POST", "/predict", b"body-0", CONTENT_TYPE="text/plain", HTTP_X_REQUEST_TAG="t")
    answer = b"".join(app(environ, lambda status, headers: started.append((status, headers))))
    assert json.loads(answer) == {"echo": "body-0"}
    status, headers = started[0]
    assert status == "418 I'm a Teapot"
    assert [v for k, v in headers if k == "X-Two"] == ["1", "2"] and ("X-Single", "yes") in headers
    assert ("Content-Length", str(len(answer))) in headers
    event = seen[0]
    assert event["headers"]["Content-Type"] == "text/plain" and event["headers"]["X-Request-Tag"] == "t"
    assert event["requestContext"]["identity"]["sourceIp"] == "127.0.0.9"

    # over API Gateway's 10 MB payload limit: answered without invoking the function, declared or not
    for declared in (str(MAX_PAYLOAD_BYTES + 1), ""):
        started.clear()
        environ = _environ("POST", "/predict", b"x" * (MAX_PAYLOAD_BYTES + 1), CONTENT_LENGTH=declared)
        answer = b"".join(app(environ, lambda status, headers: started.append((status, headers))))
        assert started[0][0] == "413 Request Entity Too Large" and json.loads(answer) == {"message": "Request Too Long"}
    assert len(seen) == 1


def test_the_served_model_is_the_newest_approved_version(aws: FakeAws) -> None:
    registry = ModelRegistry(aws.registry_table, aws.dynamodb)
    fake = SimpleNamespace(
        stack=SimpleNamespace(tables={"ModelRegistryTable": SimpleNamespace(name=aws.registry_table)}),
        client=lambda service: aws.dynamodb,
    )
    assert last_deployed_model(fake) is None
    for name, created, status in (
        ("iris", "2026-11-14T09:00:00+00:00", "approved"),
        ("diabetes", "2026-11-14T10:00:00+00:00", "approved"),
        ("wine", "2026-11-14T11:00:00+00:00", "rejected"),
    ):
        registry.register_model({**registry_record(name, "s3://b/m.tar.gz", status), "model_name": name,
                                 "created_at": created})  # fmt: skip
    assert last_deployed_model(fake) == "diabetes"
