"""The handler's fast path for ``POST /predict`` (``inference_api.fast_predict``): for every request it
answers, the answer is the resolver's own, byte for byte, and what it does not answer goes to the resolver."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pipeline_core.aws.sagemaker import StandInEndpoints
from pipeline_core.stages import inference_api
from pipeline_core.standin.errors import ModelError

from functions.inference import app as inference_app
from tests.conftest import FakeAws
from tests.unit.test_inference_api import CATEGORICAL, MALFORMED, get_event, log_items, predict_event, publish, rows
from tests.unit.test_inference_api import api as api


def both(event: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """(the handler's answer with the fast path, the resolver's answer alone, whether the fast path answered)."""
    app, service = inference_app._app()
    taken = inference_api.fast_predict(service, json.loads(json.dumps(event)), None) is not None
    fast = inference_api.handle(app, json.loads(json.dumps(event)), None, service)
    resolver = inference_api.handle(app, json.loads(json.dumps(event)), None)
    return fast, resolver, taken


def test_valid_requests_take_the_fast_path_and_get_the_resolvers_answer(api: FakeAws) -> None:
    publish(api, "run-a")
    with_null = rows(3)
    with_null[0]["petal_width_cm"] = None
    with_null[1][CATEGORICAL] = None
    with_null[2]["id"] = "not a feature"
    bodies = [{"instances": rows(1)}, {"instances": rows(30)}, {"instances": with_null}]
    for body in bodies:
        fast, resolver, taken = both(predict_event(body))
        assert taken, body
        assert fast == resolver and fast["statusCode"] == 200, (fast, resolver)
    (item,) = log_items(api)  # logged on either path (items are keyed by the request id: the events share it)
    assert item["n_rows"] == {"N": "3"}


def test_invalid_rows_and_failures_on_the_fast_path_are_the_resolvers_answers(
    api: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    instances = rows(2)
    del instances[1]["petal_width_cm"]
    instances[0]["petal_length_cm"] = "long"
    fast, resolver, taken = both(predict_event({"instances": rows(1)}))  # no approved model yet: 503
    assert taken and fast == resolver and fast["statusCode"] == 503, fast

    publish(api, "run-a")
    fast, resolver, taken = both(predict_event({"instances": instances}))  # rows that fail the checks: 400
    assert taken and fast == resolver and fast["statusCode"] == 400, fast

    def fail(self: Any, endpoint: str, records: Any) -> Any:
        raise ModelError("the model failed")

    monkeypatch.setattr(StandInEndpoints, "predict", fail)
    fast, resolver, _ = both(predict_event({"instances": rows(1)}))  # 502
    assert fast == resolver and fast["statusCode"] == 502, fast

    def crash(self: Any, endpoint: str, records: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(StandInEndpoints, "predict", crash)
    fast, resolver, _ = both(predict_event({"instances": rows(1)}))  # 500 naming the request id
    assert fast == resolver and fast["statusCode"] == 500, fast


def test_what_the_fast_path_does_not_take_is_the_resolvers(api: FakeAws) -> None:
    publish(api, "run-a")
    for body, raw, _where, _message in MALFORMED:
        fast, resolver, taken = both(predict_event(body, raw))
        assert not taken, body
        assert fast == resolver and fast["statusCode"] == 400, (body, fast)
    for path in ("/health", "/model"):
        fast, resolver, taken = both(get_event(path))
        assert not taken and fast == resolver and fast["statusCode"] == 200, fast
    deep = predict_event(None, "[" * 100_000 + "]" * 100_000)
    fast, resolver, taken = both(deep)
    assert not taken and fast == resolver and fast["statusCode"] == 400, fast
