"""``stepml serve``'s default HTTP server: granian (Rust, hyper + tokio) in front of the function.

granian parses HTTP, holds the connections and writes the answers in Rust; Python sees one call per request
on one asyncio loop per worker, where the function runs inline, one request at a time (as a warm Lambda
environment does). No Python thread hands requests around, so the GIL is the function's and the prediction
log writer's only (gunicorn's ``gthread`` spent most of a worker's CPU there: docs/serving.md).

The guarantees and where they come from:

* ``workers`` processes forked from the ``stepml serve`` process once it has imported the handler (they
  share its pages); a worker that dies is replaced (granian's ``respawn_failed_workers``); one whose function
  call runs past ``WORKER_TIMEOUT_SECONDS`` ends itself (:class:`_Watchdog`) and is replaced.
* Connections per worker are bounded by granian's ``backpressure`` (``WORKER_CONNECTIONS``): past it the
  worker accepts no more and the kernel's backlog holds the rest.
* HTTP/1.1 only (``http1``): hyper's header-read timeout then runs from a connection's start, so a connection
  that sends nothing, stays idle after an answer, or sends part of its headers is closed after
  ``KEEPALIVE_SECONDS`` (with HTTP/2 auto-detection granian waits for the first bytes with no limit).
* The body is read here, asynchronously (a slow body holds no thread): each read may wait
  ``READ_TIMEOUT_SECONDS``, then the answer is a JSON 408 and the connection is closed; a body over
  ``MAX_PAYLOAD_BYTES``, declared or found while reading a chunked one, is a 413 without invoking the function.
* A request hyper cannot parse (a ``Content-Length`` that is not a number, a bad request line or chunk) is
  answered by hyper itself: ``400`` with an empty body, connection closed. The function never sees it, so it
  cannot be JSON (gunicorn's could). API Gateway never sees such a request either: CloudFront answers it.
* Stop (SIGINT/SIGTERM): each worker stops accepting, finishes its requests, gives the prediction log
  ``LOG_FLUSH_SECONDS`` (``__rsgi_del__``) and ends; one still there after ``KILL_SECONDS`` is killed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.mp import MPServer

from stepml.serve_http import (
    GRACEFUL_SECONDS,
    KEEPALIVE_SECONDS,
    MAX_PAYLOAD_BYTES,
    READ_TIMEOUT_SECONDS,
    WORKER_CONNECTIONS,
    WORKER_TIMEOUT_SECONDS,
    Invoke,
    gateway_error,
    http_response,
    proxy_event,
)

# What a stopping worker may take (requests in flight, then the prediction log) before it is killed.
KILL_SECONDS = GRACEFUL_SECONDS + 3


def _header_name(name: str) -> str:
    """hyper hands header names in lower case; API Gateway passes them as the client sent them, which is
    usually ``Content-Type``: that spelling, as the gunicorn server gave too."""
    return "-".join(part.capitalize() for part in name.split("-"))


class _Watchdog:
    """Ends the worker when one function call runs past ``limit`` seconds (gunicorn's worker timeout): the
    function runs on the worker's only loop, so a hung call would hang every connection of the worker.
    granian replaces the worker. Checks once a second, and only while a call is running."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.started: float | None = None
        self._running = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._watch, name="stepml-serve-watchdog", daemon=True).start()

    def enter(self) -> None:
        self.started = time.monotonic()
        self._running.set()

    def leave(self) -> None:
        self.started = None
        self._running.clear()

    def _watch(self) -> None:
        while True:
            self._running.wait()
            time.sleep(1.0)
            started = self.started
            if started is not None and time.monotonic() - started > self.limit:
                print(
                    f"stepml serve: a function call ran over {self.limit:.0f} s: worker {os.getpid()} ends",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(70)


# A declared body up to this size is read in one call (the common case: a request of a few rows); a larger one,
# or a chunked one, chunk by chunk with its size counted.
WHOLE_BODY_BYTES = 64 * 1024


async def _read_body(protocol: Any, declared: str | None) -> bytes | int:
    """The request body, or the status that refuses it: 413 over MAX_PAYLOAD_BYTES (at most one chunk past
    it is read), 408 when a read waits over READ_TIMEOUT_SECONDS. One timer per request (``asyncio.timeout``,
    moved on at each chunk), not a task per read as ``wait_for`` would make."""
    size = 0
    if declared is not None:  # hyper has checked it is a whole number
        size = int(declared)
        if size > MAX_PAYLOAD_BYTES:
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(READ_TIMEOUT_SECONDS) as stall:
            if declared is not None and size <= WHOLE_BODY_BYTES:
                body: bytes = await protocol()
                return body
            chunks: list[bytes] = []
            size = 0
            async for chunk in protocol:
                size += len(chunk)
                if size > MAX_PAYLOAD_BYTES:
                    return HTTPStatus.REQUEST_ENTITY_TOO_LARGE
                chunks.append(chunk)
                stall.reschedule(loop.time() + READ_TIMEOUT_SECONDS)
            return b"".join(chunks)
    except TimeoutError:
        return HTTPStatus.REQUEST_TIMEOUT


class RsgiApp:
    """The RSGI application: each request as an API Gateway proxy event to ``invoke`` (inline, on the
    worker's loop), its proxy answer as the response. ``on_start`` and ``on_stop`` run in each worker, at its
    start and after it has stopped serving."""

    def __init__(
        self,
        invoke: Invoke,
        on_start: Callable[[], None] | None = None,
        on_stop: Callable[[], None] | None = None,
        call_limit: float = WORKER_TIMEOUT_SECONDS,
    ) -> None:
        self.invoke = invoke
        self.on_start = on_start
        self.on_stop = on_stop
        self.watchdog = _Watchdog(call_limit)

    def __rsgi_init__(self, _loop: Any) -> None:
        if self.on_start:
            self.on_start()
        self.watchdog.start()

    def __rsgi_del__(self, _loop: Any) -> None:
        if self.on_stop:
            self.on_stop()

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto != "http":  # granian's websockets are off; nothing else reaches here
            return
        headers = [(_header_name(name), value) for name, value in scope.headers.items()]
        body = await _read_body(protocol, scope.headers.get("content-length"))
        if isinstance(body, int):
            # API Gateway's words for a payload over its limit
            message = "Request Too Long" if body == HTTPStatus.REQUEST_ENTITY_TOO_LARGE else "Request Timeout"
            answer = gateway_error(HTTPStatus(body), message)
            answer["multiValueHeaders"]["Connection"] = ["close"]  # the rest of the body is not read
        else:
            query = scope.query_string
            client = scope.client.rpartition(":")[0] if scope.client else ""
            event = proxy_event(
                scope.method, f"{scope.path}?{query}" if query else scope.path, headers, body, client or "127.0.0.1"
            )
            self.watchdog.enter()
            try:
                answer = self.invoke(event)
            finally:
                self.watchdog.leave()
        status, response_headers, data = http_response(answer)
        protocol.response_bytes(int(status.split(" ", 1)[0]), response_headers, data)


class GranianServer(MPServer):
    """granian's multi-process server on a socket this process has bound (``listener``), serving ``app``.

    granian binds its own socket by default; ``stepml serve`` binds first, so a port in use is said before
    the local AWS starts and ``--port 0`` means one port for every worker. Workers are forked (the handler,
    imported here, is shared, and ``app`` needs no pickling)."""

    def __init__(self, listener: socket.socket, app: RsgiApp, workers: int) -> None:
        self.listener = listener
        self.app = app
        super().__init__(
            "stepml-serve",
            interface=Interfaces.RSGI,
            workers=workers,
            http=HTTPModes.http1,
            http1_settings=HTTP1Settings(header_read_timeout=int(KEEPALIVE_SECONDS * 1000)),
            backlog=2048,
            backpressure=WORKER_CONNECTIONS,
            respawn_failed_workers=True,
            workers_kill_timeout=KILL_SECONDS,
            log_level=LogLevels.warning,
        )

    def _init_shared_socket(self) -> None:
        from granian._granian import SocketHolder

        # what granian's own _init_shared_socket leaves (granian is pinned: pyproject.toml), on our socket;
        # its type stubs give the attributes as None and SocketHolder no constructor
        holder: Any = SocketHolder
        fd: Any = self.listener.fileno()
        self.listener.set_inheritable(True)
        self._ssp = None
        self._sfd = fd
        self._shd = holder(fd, False, 2048)
        self._sso = self.listener

    def _drop_shared_socket(self) -> None:
        self.listener.close()

    def run(self) -> None:
        import multiprocessing

        if multiprocessing.get_start_method() != "fork":  # granian follows the default; the app is not picklable
            multiprocessing.set_start_method("fork", force=True)

        def loader(*_args: Any) -> Any:
            return self.app  # built (and the handler imported) in this process before the fork

        self.serve(target_loader=loader, wrap_loader=False)
