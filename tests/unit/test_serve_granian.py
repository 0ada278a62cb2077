"""stepml serve's granian application (stepml/serve_granian.py) on RSGI calls: the request as the proxy event,
the body guards (size, declared or chunked; a stalled read), the answer as the response. The server around
it (hyper's limits, the workers, the stop) is tested on a real process in tests/integration/test_serve_limits.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from stepml import serve_granian
from stepml.serve_granian import RsgiApp
from stepml.serve_http import MAX_PAYLOAD_BYTES


class Headers:
    """RSGI's headers: lower-case names as hyper gives them, a repeated header once per value."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def items(self) -> list[tuple[str, str]]:
        return self.pairs

    def get(self, key: str, default: Any = None) -> Any:
        return next((value for name, value in self.pairs if name == key), default)


class Scope:
    proto = "http"

    def __init__(self, method: str, path: str, query: str, headers: list[tuple[str, str]]) -> None:
        self.method, self.path, self.query_string = method, path, query
        self.client = "10.1.2.3:50000"
        self.headers = Headers(headers)


class Protocol:
    """The body in ``chunks`` (after ``stall`` seconds at ``stall_at``), and what the app answers."""

    def __init__(self, chunks: list[bytes], stall_at: int | None = None, stall: float = 0.0) -> None:
        self.chunks, self.stall_at, self.stall = chunks, stall_at, stall
        self.read = 0
        self.answer: tuple[int, list[tuple[str, str]], bytes] | None = None

    async def _body(self) -> AsyncIterator[bytes]:
        for index, chunk in enumerate(self.chunks):
            if index == self.stall_at:
                await asyncio.sleep(self.stall)
            self.read += len(chunk)
            yield chunk

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._body()

    async def __call__(self) -> bytes:
        return b"".join([chunk async for chunk in self._body()])

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.answer = (status, headers, body)


def call(scope: Scope, protocol: Protocol) -> tuple[list[dict[str, Any]], int, dict[str, str], Any]:
    events: list[dict[str, Any]] = []

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        events.append(event)
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": '{"ok": true}'}

    asyncio.run(RsgiApp(invoke).__rsgi__(scope, protocol))
    assert protocol.answer is not None
    status, headers, body = protocol.answer
    return events, status, {name.lower(): value for name, value in headers}, json.loads(body)


def test_a_request_in_chunks_is_one_proxy_event_with_the_usual_header_names() -> None:
    # granian passes a declared body in one call and a chunked one chunk by chunk: here the chunked way
    headers = [("content-type", "application/json"), ("x-tag", "a"), ("x-tag", "b"), ("transfer-encoding", "chunked")]
    events, status, answer_headers, answer = call(
        Scope("POST", "/predict", "verbose=1", headers), Protocol([b'{"instances": ', b"[]}"])
    )
    assert (status, answer) == (200, {"ok": True}) and answer_headers["content-type"] == "application/json"
    [event] = events
    assert event["body"] == '{"instances": []}' and event["path"] == "/predict"
    assert event["queryStringParameters"] == {"verbose": "1"}
    assert event["multiValueHeaders"]["X-Tag"] == ["a", "b"] and event["headers"]["Content-Type"] == "application/json"
    assert event["requestContext"]["identity"]["sourceIp"] == "10.1.2.3"


def test_a_declared_body_over_the_limit_is_413_unread() -> None:
    headers = [("content-length", str(MAX_PAYLOAD_BYTES + 1))]
    protocol = Protocol([b"x" * 1024])
    events, status, answer_headers, answer = call(Scope("POST", "/predict", "", headers), protocol)
    assert (status, answer, events, protocol.read) == (413, {"message": "Request Too Long"}, [], 0)
    assert answer_headers["connection"] == "close"


def test_a_declared_body_is_the_event_body() -> None:
    headers = [("content-type", "application/json"), ("content-length", "17")]
    events, status, _, _ = call(Scope("POST", "/predict", "", headers), Protocol([b'{"instances": ', b"[]}"]))
    assert status == 200 and events[0]["body"] == '{"instances": []}'


def test_a_chunked_body_over_the_limit_is_413_once_read_past_it() -> None:
    protocol = Protocol([b"x" * (1024 * 1024)] * 12)
    events, status, _, answer = call(Scope("POST", "/predict", "", []), protocol)
    assert (status, answer, events) == (413, {"message": "Request Too Long"}, [])
    assert MAX_PAYLOAD_BYTES < protocol.read <= MAX_PAYLOAD_BYTES + 1024 * 1024  # not the 12 MB sent


@pytest.mark.parametrize("headers", [[("content-length", "17")], []], ids=["declared", "chunked"])
def test_a_body_that_stops_coming_is_408_and_the_function_is_not_called(
    monkeypatch: pytest.MonkeyPatch, headers: list[tuple[str, str]]
) -> None:
    monkeypatch.setattr(serve_granian, "READ_TIMEOUT_SECONDS", 0.05)
    protocol = Protocol([b'{"instances"', b": []}"], stall_at=1, stall=1.0)
    events, status, answer_headers, answer = call(Scope("POST", "/predict", "", headers), protocol)
    assert (status, answer, events) == (408, {"message": "Request Timeout"}, [])
    assert answer_headers["connection"] == "close"


def test_the_watchdog_ends_a_worker_whose_call_runs_past_the_limit() -> None:
    # a real process: the watchdog ends it with os._exit (granian then starts another worker)
    code = (
        "import time\n"
        "from stepml.serve_granian import _Watchdog\n"
        "dog = _Watchdog(0.5)\n"
        "dog.start()\n"
        "dog.enter(); time.sleep(0.2); dog.leave()\n"  # a call within the limit: nothing happens
        "time.sleep(2.0)\n"  # no call running: nothing happens
        "dog.enter(); time.sleep(10)\n"  # a hung call
        "print('not ended')\n"
    )
    started = time.monotonic()
    repo = Path(__file__).resolve().parents[2]  # `python -c` imports from its working directory first
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, cwd=repo)
    assert done.returncode == 70 and "not ended" not in done.stdout, (done.stdout, done.stderr)
    assert "a function call ran over" in done.stderr
    assert 2.5 < time.monotonic() - started < 9
