"""``stepml serve`` after real embedded runs: a real HTTP client against the local inference API.

The server runs as its own process (``python -m stepml.serve``, the same code as ``stepml serve``) on a free
port; predictions are compared with the registered artifact's own predictions (model_fn + predict_fn, the
pipeline's slow path, while the API goes through the stand-in's fast path).
"""

from __future__ import annotations

import importlib.util
import io
import json
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from openapi_spec_validator import validate

from stepml.embedded.runtime import free_port
from tests.integration.conftest import REPO, PipelineRun

pytestmark = pytest.mark.slow


class Served:
    def __init__(self, url: str, process: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.process = process

    def request(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None, content_type: str = "application/json"
    ) -> tuple[int, dict[str, Any]]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def serve_model(state_dir: Path) -> Iterator[Any]:
    """Start ``stepml serve --model NAME`` processes on free ports; all are stopped (SIGTERM) at the end."""
    started: list[Served] = []

    def start(model: str | None) -> Served:
        port = free_port()
        args = [sys.executable, "-m", "stepml.serve", "--port", str(port), *(["--model", model] if model else [])]
        output = state_dir / f"serve-{port}.out"
        with output.open("wb") as sink:  # a file, not a pipe: a full pipe would block the server
            process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT)
        served = Served(f"http://127.0.0.1:{port}", process)
        started.append(served)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, output.read_text()
            try:
                if served.request("GET", "/health")[0] == 200:
                    return served
            except OSError:
                time.sleep(0.2)
        raise AssertionError("stepml serve did not answer /health within 60 s")

    yield start
    for served in started:
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=30) == 0


def artifact_predictions(state_dir: Path, model: dict[str, Any], frame: pd.DataFrame) -> list[Any]:
    """The served model's own predictions: its model.tar.gz from the local AWS (the registry record names it;
    GET /model does not), model_fn, predict_fn."""
    from pipeline_core.aws.registry import ModelRegistry

    from stepml.project import project_layout
    from stepml.targets import embedded_target

    target = embedded_target(project_layout())
    record = ModelRegistry(target.outputs.registry_table, target.client("dynamodb")).get(
        model["model_name"], model["version"]
    )
    assert record is not None, model
    artifact = record.model_artifact
    bucket, key = artifact.removeprefix("s3://").split("/", 1)
    blob = target.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    spec = importlib.util.spec_from_file_location("_serve_test_inference", REPO / "training" / "inference.py")
    assert spec is not None and spec.loader is not None
    inference = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = inference
    spec.loader.exec_module(inference)
    with tempfile.TemporaryDirectory() as model_dir:
        with tarfile.open(fileobj=io.BytesIO(blob)) as archive:
            archive.extractall(model_dir, filter="data")
        bundle = inference.model_fn(model_dir)
        return list(inference.predict_fn(frame, bundle))


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records"))


def test_iris_over_http(iris_run: PipelineRun, state_dir: Path, serve_model: Any) -> None:
    assert iris_run.exit_code == 0, iris_run.output
    api = serve_model("iris-species")

    assert api.request("GET", "/health") == (200, {"status": "ok", "model_name": "iris-species"})
    status, model = api.request("GET", "/model")
    assert status == 200
    assert model["model_name"] == "iris-species" and model["status"] == "approved"
    assert model["version"] >= iris_run.result["model_version"]
    features = model["feature_columns"]
    assert model["feature_kinds"] == dict.fromkeys(features, "numeric")

    frame = pd.read_csv(REPO / "data" / "iris.csv").drop(columns="species").sample(40, random_state=3)
    status, answer = api.request("POST", "/predict", {"instances": records(frame)})
    assert status == 200, answer
    assert answer["model_name"] == "iris-species" and answer["model_version"] == model["version"]
    assert answer["predictions"] == artifact_predictions(state_dir, model, frame)

    # each class of invalid input, with what is wrong named
    rows = records(frame.head(3))
    del rows[1][features[0]]
    rows[2][features[1]] = "wide"
    status, answer = api.request("POST", "/predict", {"instances": rows})
    assert status == 400
    assert [(e.get("row"), e.get("field")) for e in answer["errors"]] == [(1, features[0]), (2, features[1])]
    assert f"row 2: feature '{features[1]}' is numeric" in answer["errors"][1]["message"]

    status, answer = api.request("POST", "/predict", raw=b'{"instances": [{"a": 1}')
    assert status == 400 and "not valid JSON" in answer["message"]
    status, answer = api.request("POST", "/predict", {"instances": []})
    assert status == 400 and "instances is empty" in answer["message"]
    status, answer = api.request("POST", "/predict", {"instances": records(frame.head(1)) * 1001})
    assert status == 413 and "at most 1000" in answer["message"]
    status, answer = api.request("POST", "/predict", raw=b'{"instances": [' + b" " * (5 * 1024 * 1024) + b"]}")
    assert status == 413 and "bytes" in answer["message"]
    status, answer = api.request("POST", "/predict", raw=b"a,b\n1,2\n", content_type="text/csv")
    assert status == 415
    status, answer = api.request("GET", "/nowhere")
    assert status == 404

    status, document = api.request("GET", "/openapi.json")
    assert status == 200
    validate(document)
    assert {"/predict", "/health", "/model"} <= set(document["paths"])


def test_a_regression_model_it_has_not_seen(diabetes_run: PipelineRun, state_dir: Path, serve_model: Any) -> None:
    assert diabetes_run.exit_code == 0, diabetes_run.output
    api = serve_model(diabetes_run.result["model_name"])
    status, model = api.request("GET", "/model")
    assert status == 200 and model["model_name"] == diabetes_run.result["model_name"]
    frame = pd.read_csv(REPO / "data" / "diabetes.csv").drop(columns="target").tail(25)
    status, answer = api.request("POST", "/predict", {"instances": records(frame)})
    assert status == 200, answer
    expected = artifact_predictions(state_dir, model, frame)
    assert answer["predictions"] == pytest.approx(expected, rel=1e-9)
    assert all(isinstance(p, float) for p in answer["predictions"])


def test_no_approved_model_is_503(state_dir: Path, iris_run: PipelineRun, serve_model: Any) -> None:
    api = serve_model("never-trained")
    status, answer = api.request("POST", "/predict", {"instances": [{"x": 1.0}]})
    assert status == 503
    assert "no approved version of model 'never-trained' is deployed yet" in answer["message"]
