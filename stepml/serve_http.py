"""The HTTP side of ``stepml serve``: gunicorn in front of the function, and requests as API Gateway events.

gunicorn (a maintained pre-fork WSGI server) does the HTTP: parsing (a ``Content-Length`` that is not a
non-negative number, a bad chunk size or request line is a 400 it answers itself, in JSON here), chunked
bodies, keep-alive and its timeouts, and the processes. The model is:

* ``workers`` processes forked from the ``stepml serve`` process once it has imported the handler (a warm
  Lambda execution environment each); a worker that dies or hangs past ``timeout`` is replaced;
* in each, gunicorn's ``gthread`` worker: one poller holds the idle and kept-alive connections (at most
  ``worker_connections``; past that the worker stops accepting and the kernel's backlog holds the rest)
  and ``threads`` threads handle requests. A new connection goes to a thread only once it has bytes to
  read; one that sends nothing is closed after ``keepalive`` seconds; a read or write that waits more than
  ``READ_TIMEOUT_SECONDS`` closes the connection. Threads are a fixed pool: 2,000 idle or slow connections
  cost 2,000 sockets in a poller, not 2,000 threads. The limit: a client that sends part of a request and
  stalls holds a thread for up to READ_TIMEOUT_SECONDS, so many such clients at once delay the others by
  that much (an asynchronous server, or a proxy that buffers requests, would not; API Gateway buffers).

Each request becomes the API Gateway REST proxy event (:func:`proxy_event`) the function gets on AWS, and its
proxy answer the HTTP response. API Gateway refuses a payload over 10 MB before the function runs; so does
this server, whether the size is declared (``Content-Length``) or found while reading a chunked body.
"""

from __future__ import annotations

import base64
import errno
import json
import socket
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from gunicorn.app.base import BaseApplication
from gunicorn.workers import gthread
from gunicorn.workers.gthread import ThreadWorker

STAGE = "local"
# API Gateway refuses a payload over 10 MB before the integration runs; so does this server.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
# Connections one worker holds at once (idle, kept alive or in a request); the rest wait in the backlog.
WORKER_CONNECTIONS = 1000
# Request threads per worker: the handler runs one request at a time (see serve.in_process_invoker), the
# others read requests and write responses meanwhile.
THREADS = 8
# Seconds a kept-alive connection may stay idle (API Gateway's own idle timeout is longer, but a local
# server has no reason to hold thousands of idle sockets).
KEEPALIVE_SECONDS = 5
# A request's bytes (headers, body) must keep coming: a read that waits longer closes the connection, so a
# client that sends part of a request and stalls holds a request thread at most this long.
READ_TIMEOUT_SECONDS = 5.0
# A worker silent this long is killed and replaced: the function's own timeout (29 s, API Gateway's) plus
# margin.
WORKER_TIMEOUT_SECONDS = 35
# What a stopping worker gives its requests in flight and its prediction log before it is killed.
GRACEFUL_SECONDS = 5

Invoke = Callable[[dict[str, Any]], dict[str, Any]]


class ServeError(RuntimeError):
    """The API cannot be served (no InferenceFunction in the template, port in use...)."""


# --- API Gateway REST proxy events --------------------------------------------------------------------


def proxy_event(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str = "127.0.0.1",
    request_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The event API Gateway's REST API (Lambda proxy integration) sends for this HTTP request."""
    parts = urlsplit(target)
    path = parts.path or "/"
    query = parse_qsl(parts.query, keep_blank_values=True)
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        multi_headers.setdefault(name, []).append(value)
    multi_query: dict[str, list[str]] = {}
    for name, value in query:
        multi_query.setdefault(name, []).append(value)
    text: str | None
    try:
        text, encoded = (body.decode("utf-8"), False) if body else (None, False)
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True  # API Gateway base64-encodes binary bodies
    now = now or datetime.now(UTC)
    request_id = request_id or str(uuid.uuid4())
    user_agent = next((v for k, v in headers if k.lower() == "user-agent"), None)
    host = next((v for k, v in headers if k.lower() == "host"), "127.0.0.1")
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {name: values[-1] for name, values in multi_headers.items()} or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {name: values[-1] for name, values in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": path,
            "httpMethod": method,
            "extendedRequestId": request_id,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{STAGE}{path}",
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": STAGE,
            "domainPrefix": "local",
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": source_ip,
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": user_agent,
                "user": None,
            },
            "domainName": host,
            "deploymentId": "local",
            "apiId": "local",
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


def gateway_error(status: HTTPStatus, message: str) -> dict[str, Any]:
    """An answer API Gateway itself gives (the function is not invoked), in the proxy response shape."""
    return {
        "statusCode": int(status),
        "multiValueHeaders": {"Content-Type": ["application/json"]},
        "body": json.dumps({"message": message}),
        "isBase64Encoded": False,
    }


# --- WSGI ---------------------------------------------------------------------------------------------


def _request_headers(environ: dict[str, Any]) -> list[tuple[str, str]]:
    """The request's headers as (name, value), names in their usual spelling. WSGI keeps no original case
    and joins a repeated header's values with commas, so multiValueHeaders has one value per name here
    (API Gateway keeps each)."""
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:]
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            name = key
        else:
            continue
        headers.append(("-".join(part.capitalize() for part in name.split("_")), str(value)))
    return headers


def _read_body(environ: dict[str, Any]) -> bytes | None:
    """The request body, or None when it is over MAX_PAYLOAD_BYTES (declared, or found while reading a
    chunked body: at most one byte over the limit is read)."""
    declared = environ.get("CONTENT_LENGTH")
    if declared and int(declared) > MAX_PAYLOAD_BYTES:  # gunicorn accepts only digits here
        return None
    stream = environ["wsgi.input"]
    chunks, size = [], 0
    while size <= MAX_PAYLOAD_BYTES:
        chunk = stream.read(min(65536, MAX_PAYLOAD_BYTES + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return None if size > MAX_PAYLOAD_BYTES else b"".join(chunks)


def wsgi_app(invoke: Invoke) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """The WSGI application: each request as a proxy event to ``invoke``, its answer as the response."""

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = _read_body(environ)
        if body is None:
            answer = gateway_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request Too Long")
            answer["multiValueHeaders"]["Connection"] = ["close"]  # the rest of the body is not read
        else:
            query = environ.get("QUERY_STRING")
            target = environ.get("PATH_INFO") or "/"
            answer = invoke(
                proxy_event(
                    environ["REQUEST_METHOD"],
                    f"{target}?{query}" if query else target,
                    _request_headers(environ),
                    body,
                    environ.get("REMOTE_ADDR") or "127.0.0.1",
                )
            )
        status, headers, data = http_response(answer)
        start_response(status, headers)
        return [data]

    return application


def http_response(answer: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """A proxy answer as (status line, headers, body) the way API Gateway turns it into HTTP."""
    body = answer.get("body") or ""
    data = base64.b64decode(body) if answer.get("isBase64Encoded") else str(body).encode()
    code = int(answer.get("statusCode", 502))
    try:
        reason = HTTPStatus(code).phrase
    except ValueError:
        reason = "Unknown"
    headers: list[tuple[str, str]] = []
    sent: set[str] = set()
    for name, values in (answer.get("multiValueHeaders") or {}).items():
        headers += [(name, str(value)) for value in values]
        sent.add(name.lower())
    for name, value in (answer.get("headers") or {}).items():
        if name.lower() not in sent:
            headers.append((name, str(value)))
            sent.add(name.lower())
    if "content-length" not in sent:
        headers.append(("Content-Length", str(len(data))))
    return f"{code} {reason}", headers, data


# --- gunicorn -----------------------------------------------------------------------------------------


class JsonErrorWorker(ThreadWorker):
    """gunicorn's threaded worker, with the errors it answers itself (a malformed request line, header,
    ``Content-Length`` or chunk) in the API's JSON shape instead of gunicorn's HTML page.

    gunicorn writes those answers with ``gunicorn.util.write_error``, its one function for them; the worker
    process (forked for this server alone) replaces it with :func:`write_json_error` before serving.
    """

    def init_process(self) -> None:
        from gunicorn import util

        util.write_error = write_json_error
        self.sockets: list[Any] = [_TimedListener(listener) for listener in self.sockets]
        super().init_process()

    def handle(self, conn: Any) -> Any:
        # gunicorn gives a new connection's first bytes up to 5 s in a request thread before handing it to
        # the poller: a few hundred idle connections would then hold every thread for minutes. Here a new
        # connection with nothing to read yet goes to the poller at once (gunicorn's own deferral).
        if not conn.initialized and not conn.wait_for_data(0):
            return gthread._DEFER
        return super().handle(conn)


class _ReadTimeoutSocket(socket.socket):
    """A client connection whose blocking mode has a timeout: gunicorn's threaded worker waits up to 5 s for
    a request's first bytes in the poller, but then reads the rest in blocking mode with no limit, so a
    client that stalls mid-request (slow loris) would hold the thread for good. Every blocking read or write
    here gives up after READ_TIMEOUT_SECONDS instead, and gunicorn closes the connection."""

    def setblocking(self, flag: bool) -> None:
        if flag:
            self.settimeout(READ_TIMEOUT_SECONDS)
        else:
            super().setblocking(False)


class _TimedListener:
    """gunicorn's listening socket, handing out :class:`_ReadTimeoutSocket` connections."""

    def __init__(self, listener: Any) -> None:
        self._listener = listener

    def __getattr__(self, name: str) -> Any:
        return getattr(self._listener, name)

    def accept(self) -> tuple[socket.socket, Any]:
        connection, address = self._listener.accept()
        timed = _ReadTimeoutSocket(connection.family, connection.type, connection.proto, fileno=connection.detach())
        return timed, address


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own error answer (status, reason, what it found wrong) as ``{"message": ...}``."""
    from gunicorn import util

    body = json.dumps({"message": f"{reason}: {mesg}" if mesg else reason}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    util.write_nonblock(sock, head + body)


def listening_socket(port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:``port`` (0: a free one); a clear ServeError when it cannot."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
        listener.listen(2048)
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise ServeError(f"port {port} on 127.0.0.1 is in use (pass --port 0 for a free one)") from error
        raise ServeError(f"cannot listen on 127.0.0.1:{port}: {error.strerror or error}") from error
    return listener


class GunicornServer(BaseApplication):
    """gunicorn, configured here rather than from its command line, serving ``load()``'s application.

    Preloaded: the handler is imported once, in the ``stepml serve`` process, before the workers fork (they
    share its pages, and the server is ready when :meth:`ready` returns). Nothing the import does starts a
    thread or opens a connection: AWS clients are built on first use, and the prediction log's writer thread
    starts on a worker's first logged request, so none crosses a fork."""

    def __init__(
        self,
        listener: socket.socket,
        load: Callable[[], Invoke],
        workers: int,
        *,
        threads: int = THREADS,
        worker_connections: int = WORKER_CONNECTIONS,
        keepalive: int = KEEPALIVE_SECONDS,
        hooks: dict[str, Callable[..., Any]] | None = None,
    ) -> None:
        self.listener = listener
        self._load = load
        self.options: dict[str, Any] = {
            "bind": [f"fd://{listener.fileno()}"],
            "workers": workers,
            "worker_class": JsonErrorWorker,
            "threads": threads,
            "worker_connections": worker_connections,
            "keepalive": keepalive,
            "timeout": WORKER_TIMEOUT_SECONDS,
            "graceful_timeout": GRACEFUL_SECONDS,
            "preload_app": True,
            "loglevel": "warning",
            "errorlog": "-",
            "accesslog": None,
            "proc_name": "stepml-serve",
            # the request line and headers: gunicorn's defaults (4094 bytes, 100 fields of 8190 bytes)
            **(hooks or {}),
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Callable[..., Any]:
        return wsgi_app(self._load())

    def ready(self) -> None:
        """Import the handler now (gunicorn keeps it for the workers)."""
        self.wsgi()
