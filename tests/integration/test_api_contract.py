"""The inference API's contract over HTTP: ``stepml serve`` (a black box: its own process on a free port)
serving the iris model the session trained once, checked by schemathesis with all its checks against the
API's own ``GET /openapi.json``, and the malformed requests of issue 13 sent as raw HTTP.

schemathesis runs as its CLI in a subprocess, bounded and reproducible: a fixed ``--max-examples`` per
operation and ``--generation-deterministic`` (the same cases every run; it uses no seed and no example
database).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from openapi_spec_validator import validate

from tests.integration.conftest import PipelineRun
from tests.integration.test_serve import Served
from tests.integration.test_serve import serve_model as serve_model  # the fixture, reused

pytestmark = pytest.mark.slow

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CONFIG = Path(__file__).with_name("schemathesis.toml")  # 413 is an expected rejection (see the file)
MAX_EXAMPLES = 15  # per operation: ~115 cases (the coverage phase gives most), 15-30 s on a loaded 2-core machine
# what no answer may carry: an account id, an ARN, a bucket or an object URI
SECRETS = ("123456789012", "arn:aws", "s3://", "model.tar.gz")


@pytest.fixture(scope="module")
def api(iris_run: PipelineRun, serve_model: Any) -> Served:
    assert iris_run.exit_code == 0, iris_run.output
    served: Served = serve_model("iris-species")
    # one prediction before the checks, so they start on a loaded model
    status, model = served.request("GET", "/model")
    assert status == 200, model
    row = dict.fromkeys(model["feature_columns"], 1.0)
    assert served.request("POST", "/predict", {"instances": [row]})[0] == 200
    return served


def send(api: Served, method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> Any:
    """(status, headers, raw body) of one raw HTTP request: nothing re-encodes the body."""
    parts = urlsplit(api.url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        headers = {"Content-Type": content_type} if body else {}
        connection.request(method, path, body=body or None, headers=headers)
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()


def json_error(status: int, headers: dict[str, str], data: bytes) -> dict[str, Any]:
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, data[:200])
    body: dict[str, Any] = json.loads(data)
    assert body.get("message"), body
    assert not any(secret.encode() in data for secret in SECRETS), data
    return body


def test_malformed_requests_are_4xx_with_a_clear_message(api: Served) -> None:
    status, model = api.request("GET", "/model")
    assert status == 200
    feature = model["feature_columns"][0]
    row = dict.fromkeys(model["feature_columns"], 1.0)

    cases: list[tuple[str, bytes, int, str]] = [
        ("not UTF-8", b'{"instances": [{"x": "\xff\xfe"}]}', 400, "not UTF-8"),
        ("nested 10,000 deep", b'{"instances": [' + b"[" * 10_000 + b"]" * 10_000 + b"]}", 400, "nested too deep"),
        ("10^5000", json.dumps({"instances": [{**row, feature: "@"}]}).replace('"@"', "1" + "0" * 5000).encode(),
         400, feature),
        ("10^400", json.dumps({"instances": [{**row, feature: "@"}]}).replace('"@"', "1" + "0" * 400).encode(),
         400, feature),
    ]  # fmt: skip
    for name, body, expected, words in cases:
        status, headers, data = send(api, "POST", "/predict", body)
        answer = json_error(status, headers, data)
        assert status == expected, (name, answer)
        assert words in answer["message"], (name, answer)

    # TRACE reaches the function only through a server that passes every method on (http.server answered 501)
    wrong = [("GET", "/predict", "POST"), ("DELETE", "/model", "GET"), ("PUT", "/health", "GET")]
    wrong.append(("TRACE", "/model", "GET"))
    for method, path, allowed in wrong:
        status, headers, data = send(api, method, path)
        answer = json_error(status, headers, data)
        assert (status, headers.get("allow")) == (405, allowed), (method, path, answer)
    status, headers, data = send(api, "GET", "/nowhere")
    assert status == 404 and "allow" not in headers and json_error(status, headers, data)


def test_model_and_openapi_describe_the_served_model_and_nothing_of_the_account(api: Served) -> None:
    status, _, data = send(api, "GET", "/model")
    assert status == 200 and not any(secret.encode() in data for secret in SECRETS), data
    model = json.loads(data)
    assert model["model_name"] == "iris-species" and model["target"] == "species"
    assert set(model["class_labels"]) == {"setosa", "versicolor", "virginica"}
    assert model["feature_kinds"] == dict.fromkeys(model["feature_columns"], "numeric")

    status, document = api.request("GET", "/openapi.json")
    assert status == 200
    validate(document)
    row = document["components"]["schemas"]["PredictRequest"]["properties"]["instances"]["items"]
    assert row["required"] == model["feature_columns"]
    assert all(row["properties"][c]["type"] == ["number", "null"] for c in model["feature_columns"])
    assert "422" not in json.dumps(document["paths"])


def test_schemathesis_with_all_checks_finds_nothing(api: Served, tmp_path: Path) -> None:
    command = [
        str(SCHEMATHESIS), "--config-file", str(CONFIG), "run", f"{api.url}/openapi.json",
        "--checks", "all",
        "--max-examples", str(MAX_EXAMPLES),
        "--generation-deterministic",  # the same cases every run (no seed, no example database)
        "--workers", "1",
        # a hang guard, not a speed goal (those are benchmarks/inference.py's): --checks all turns on
        # schemathesis's response-time check at 10 s, which a loaded 2-core CI machine can exceed
        "--request-timeout", "60",
        "--max-response-time", "60",
        "--no-color",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-2000:]
