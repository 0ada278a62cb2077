"""``stepml serve``: the inference API on 127.0.0.1, as API Gateway + Lambda would serve it.

Each HTTP request becomes an API Gateway REST proxy event (AWS's documented shape) for the real handler of
the template's ``InferenceFunction``, run with that function's environment from ``infra/template.yaml``
(table names, backend) against the state directory's local AWS (started in the background when none
serves it): the registry, the SageMaker stand-in's endpoint records and the model artifacts runs left
there. The model served is the one the last run deployed (newest approved registry version) unless
``--model`` names another.

Two ways to run the handler (``--backend``):

* ``inprocess`` (default): the handler module is imported into this process with the function's
  environment applied, and called under a lock (one request at a time, like one Lambda execution
  environment). No pipe, no pickling: the fastest path for one client.
* ``runner``: ``LambdaRunner.invoke`` in warm worker processes, as ``stepml run`` calls functions: each
  request pays a pipe round trip and JSON (de)serialisation, but concurrent requests run in parallel
  worker processes (one per concurrent request, like Lambda scaling out).

Both are measured in ``benchmarks/inference.py`` (docs/serving.md has the figures). The prediction log
goes to the local AWS as requests are served, which keeps it on disk as it changes: stopping this server
saves nothing and can overwrite nothing a run wrote meanwhile.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import faulthandler
import importlib.util
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import parse_qsl, urlsplit

FUNCTION_ID = "InferenceFunction"
STAGE = "local"
# API Gateway refuses a payload over 10 MB before the integration runs; so does this server.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
Backend = Literal["inprocess", "runner"]
BACKENDS: tuple[Backend, ...] = ("inprocess", "runner")


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


def _gateway_error(status: HTTPStatus, message: str) -> dict[str, Any]:
    """An answer API Gateway itself gives (the function is not invoked), in the proxy response shape."""
    return {
        "statusCode": int(status),
        "multiValueHeaders": {"Content-Type": ["application/json"]},
        "body": json.dumps({"message": message}),
        "isBase64Encoded": False,
    }


# --- invoking the function ----------------------------------------------------------------------------


class _Context:
    """The parts of Lambda's context object the handler and Powertools read."""

    def __init__(self, name: str, arn: str, memory_mb: int, timeout_s: int) -> None:
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = arn
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "stepml-serve"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


Invoke = Callable[[dict[str, Any]], dict[str, Any]]


def _load_handler(code_dir: Path, handler: str, logical_id: str) -> Callable[[Any, Any], Any]:
    """The function's handler, imported from its code folder under a name of its own (every function's
    module is ``app``, so the plain name could collide)."""
    module_file, _, attribute = handler.rpartition(".")
    path = code_dir / f"{module_file.replace('.', '/')}.py"
    spec = importlib.util.spec_from_file_location(f"_stepml_serve_{logical_id}", path)
    if spec is None or spec.loader is None:
        raise ServeError(f"cannot import the handler {handler} from {code_dir}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    function: Callable[[Any, Any], Any] = getattr(module, attribute)
    return function


def in_process_invoker(spec: Any, environment: dict[str, str]) -> Invoke:
    """Call the handler in this process with ``environment`` applied to os.environ, one call at a time."""
    os.environ.update(environment)
    from pipeline_core.aws.clients import client

    client.cache_clear()  # clients built before now point elsewhere
    handler = _load_handler(spec.code_dir, spec.handler, spec.logical_id)
    lock = threading.Lock()

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        context = _Context(spec.name, spec.arn, spec.memory_mb, spec.timeout_seconds)
        with lock:  # Powertools keeps per-request state on the resolver: one request at a time
            try:
                answer: dict[str, Any] = handler(event, context)
            except Exception as error:  # what API Gateway answers when the function fails
                print(f"{type(error).__name__}: {error}", file=sys.stderr)
                return _gateway_error(HTTPStatus.BAD_GATEWAY, "Internal server error")
        return answer

    return invoke


def runner_invoker(runner: Any, function_name: str) -> Invoke:
    """Invoke through the embedded target's LambdaRunner (a worker process per concurrent request)."""

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        result = runner.invoke(function_name, event)
        if result.failed or not isinstance(result.payload, dict) or "statusCode" not in result.payload:
            return _gateway_error(HTTPStatus.BAD_GATEWAY, "Internal server error")
        payload: dict[str, Any] = result.payload
        return payload

    return invoke


# --- HTTP ---------------------------------------------------------------------------------------------


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as API Gateway and CloudFront offer
    # Headers and body go out in two writes; with Nagle's algorithm on, the body waits for the client's
    # delayed ACK of the headers (40 ms on Linux) on every keep-alive request.
    disable_nagle_algorithm = True
    server_version = "stepml-serve"
    server: ApiServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_PAYLOAD_BYTES:
            self.close_connection = True  # the body is not read
            self._respond(_gateway_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request Too Long"))
            return
        body = self.rfile.read(length) if length else b""
        event = proxy_event(self.command, self.path, list(self.headers.items()), body, self.client_address[0])
        self._respond(self.server.invoke(event))

    def _respond(self, answer: dict[str, Any]) -> None:
        body = answer.get("body") or ""
        data = base64.b64decode(body) if answer.get("isBase64Encoded") else str(body).encode()
        self.send_response(int(answer.get("statusCode", 502)))
        sent: set[str] = set()
        for name, values in (answer.get("multiValueHeaders") or {}).items():
            for value in values:
                self.send_header(name, str(value))
            sent.add(name.lower())
        for name, value in (answer.get("headers") or {}).items():
            if name.lower() not in sent:
                self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would dominate the terminal; the function log has each request


class ApiServer(ThreadingHTTPServer):
    """The HTTP server: one thread per connection, every request to ``invoke``."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, port: int, invoke: Invoke, reuse_port: bool = False) -> None:
        self.reuse_port = reuse_port
        self.invoke = invoke
        super().__init__(("127.0.0.1", port), _RequestHandler)

    def server_bind(self) -> None:
        if self.reuse_port:  # several worker processes listen on one port; the kernel spreads connections
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def _worker_main(port: int, spec: Any, environment: dict[str, str], log_path: str, ready: Any) -> None:
    """One serving process of ``--workers N``: its own HTTP server and handler on the shared port."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    server = ApiServer(port, in_process_invoker(spec, environment), reuse_port=True)
    # SIGTERM ends serve_forever from another thread, so atexit handlers (the log writer's flush) run.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    ready.set()
    try:
        server.serve_forever()
    finally:
        server.server_close()


# --- the embedded AWS and the served model ------------------------------------------------------------


def last_deployed_model(aws: Any) -> str | None:
    """The model name of the newest approved registry version (what the last successful run deployed)."""
    from pipeline_core.aws.registry import ModelRegistry

    table = aws.stack.tables["ModelRegistryTable"].name
    approved = [r for r in ModelRegistry(table, aws.client("dynamodb")).versions() if r.status == "approved"]
    return max(approved, key=lambda r: r.created_at).model_name if approved else None


def function_environment(
    aws: Any, spec: Any, model_name: str | None, log_mode: str = "background", log_sample_rate: float | None = None
) -> dict[str, str]:
    """The function's environment from the template, pointed at the embedded AWS (as LambdaRunner does)."""
    from stepml.embedded.runtime import fake_credentials
    from stepml.embedded.template import REGION

    environment = {
        **fake_credentials(),
        "AWS_ENDPOINT_URL": aws.endpoint_url,
        "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
        **spec.environment,
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
    }
    if model_name:
        environment["MODEL_NAME"] = model_name
    # This server is a long-running process (Lambda freezes its environments between requests): the
    # prediction log is written by a background thread unless --log-mode sync asks for Lambda's way.
    environment["PREDICTION_LOG_MODE"] = log_mode
    if log_sample_rate is not None:
        environment["PREDICTION_LOG_SAMPLE_RATE"] = str(log_sample_rate)
    return environment


class _LocalAws:
    """The state directory's local AWS as the serving process sees it: endpoint, stack and clients."""

    def __init__(self, layout: Any) -> None:
        from stepml.embedded.runtime import STACK_NAME
        from stepml.embedded.template import stack_model

        self.layout = layout
        self.stack = stack_model(layout.template, STACK_NAME, {"Target": "local"})
        self.target: Any = None

    def start(self) -> None:
        from stepml.targets import TargetError, embedded_target

        try:
            self.target = embedded_target(self.layout, sys.stderr)
        except TargetError as error:
            raise ServeError(str(error)) from error

    @property
    def endpoint_url(self) -> str:
        return str(self.target.endpoint_url)

    def client(self, service: str) -> Any:
        return self.target.client(service)


class LocalApi:
    """The embedded AWS restored from the state directory plus the API server; a context manager."""

    def __init__(
        self,
        port: int = 0,
        model_name: str | None = None,
        backend: Backend = "inprocess",
        watch: bool = True,
        workers: int = 1,
        log_mode: str = "background",
        log_sample_rate: float | None = None,
    ) -> None:
        from stepml.project import project_layout

        if backend not in BACKENDS:
            raise ServeError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if workers < 1 or (workers > 1 and backend != "inprocess"):
            raise ServeError(f"--workers must be >= 1, and above 1 only with the inprocess backend (got {workers})")
        self.layout = project_layout()
        # The local AWS owns the registry, the artifacts and the prediction log; this server is its client.
        self.aws = _LocalAws(self.layout)
        if FUNCTION_ID not in self.aws.stack.functions:
            raise ServeError(f"{self.layout.template} declares no {FUNCTION_ID}: nothing to serve")
        self.requested_port = port
        self.requested_model = model_name
        self.backend = backend
        self.watch = watch
        self.workers = workers
        self.log_mode = log_mode
        self.log_sample_rate = log_sample_rate
        self.port = port
        self._processes: list[Any] = []
        self.model_name: str | None = None
        self.server: ApiServer | None = None
        self._runner: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.layout.state_dir / "logs" / f"{self.aws.stack.functions[FUNCTION_ID].name}.log"

    def __enter__(self) -> LocalApi:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.aws.start()
        spec = self.aws.stack.functions[FUNCTION_ID]
        self.model_name = self.requested_model or last_deployed_model(self.aws) or spec.environment.get("MODEL_NAME")
        environment = function_environment(self.aws, spec, self.model_name, self.log_mode, self.log_sample_rate)
        if self.backend == "runner":
            from stepml.embedded.lambda_runner import LambdaRunner

            self._runner = LambdaRunner(
                {FUNCTION_ID: replace(spec, environment=environment)}, {"PATH": os.environ.get("PATH", "")},
                self.log_path.parent,
            )  # fmt: skip
            invoke = runner_invoker(self._runner, spec.name)
        elif self.workers > 1:
            self._start_workers(spec, environment)
        else:
            invoke = in_process_invoker(spec, environment)
        if not self._processes:
            try:
                self.server = ApiServer(self.requested_port, invoke)
            except OSError as error:
                raise ServeError(f"cannot listen on 127.0.0.1:{self.requested_port}: {error}") from error
            self.port = int(self.server.server_address[1])
            self._thread = threading.Thread(target=self.server.serve_forever, name="stepml-serve", daemon=True)
            self._thread.start()

    def _start_workers(self, spec: Any, environment: dict[str, str]) -> None:
        """``workers`` processes, each an HTTP server with the handler in process, on one port (SO_REUSEPORT)."""
        import multiprocessing

        from stepml.embedded.runtime import free_port

        self.port = self.requested_port or free_port()
        context = multiprocessing.get_context("forkserver")  # the embedded runner's preloaded forkserver
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for index in range(self.workers):
            ready = context.Event()
            process = context.Process(
                target=_worker_main,
                args=(self.port, spec, environment, str(self.log_path), ready),
                name=f"stepml-serve-{index}",
                daemon=True,
            )
            process.start()
            self._processes.append(process)
            if not ready.wait(60) or not process.is_alive():
                self.stop()
                raise ServeError(f"serving worker {index} did not start (see {self.log_path})")

    def stop(self) -> None:
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        self._processes = []
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self._runner is not None:
            self._runner.close()
        if self.backend == "inprocess" and not self._processes:
            from pipeline_core.aws.prediction_log import flush_background_writers

            flush_background_writers()  # what the in-process handler's log writer still holds


@contextlib.contextmanager
def _function_output_to(path: Path) -> Iterator[None]:
    """Send what the handler prints (Powertools logs, EMF metrics) to the function's log file, as Lambda
    sends it to CloudWatch Logs, instead of the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", buffering=1) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield


def serve(
    port: int,
    out: TextIO,
    *,
    model_name: str | None = None,
    backend: Backend = "inprocess",
    workers: int = 1,
    log_mode: str = "background",
    log_sample_rate: float | None = None,
) -> int:
    """Serve the inference API on 127.0.0.1:``port`` until interrupted (SIGINT or SIGTERM)."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # `kill -USR1 <pid>` prints every thread's stack to the terminal (stderr): how to see where a serve that
    # does not stop is waiting
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        api = LocalApi(port, model_name, backend, workers=workers, log_mode=log_mode, log_sample_rate=log_sample_rate)
        with _function_output_to(api.log_path), api:
            how = f"{backend}, {workers} worker(s)" if backend == "inprocess" else backend
            print(f"stepml inference API on {api.url} ({how}; Ctrl-C stops)", file=out)
            if api.model_name:
                print(f"  model        {api.model_name} (GET /model shows the version served)", file=out)
            print(f"  try          curl -s {api.url}/model", file=out)
            print(f"               curl -s -X POST {api.url}/predict -H 'Content-Type: application/json' \\", file=out)
            print('                    -d \'{"instances": [{"<feature>": 1.0, ...}]}\'', file=out)
            print(f"  OpenAPI      {api.url}/openapi.json", file=out)
            print(f"  function log {api.log_path}", file=out, flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while not stop.wait(0.5):
                    pass
    except ServeError as error:
        print(f"stepml serve: {error}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
        faulthandler.unregister(signal.SIGUSR1)
    return 0


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    return serve(
        args.port,
        out,
        model_name=args.model,
        backend=args.backend,
        workers=args.workers,
        log_mode=args.log_mode,
        log_sample_rate=args.log_sample_rate,
    )


def add_parser(subparsers: Any) -> None:
    """Add ``stepml serve`` to the CLI's subcommands."""
    parser = subparsers.add_parser("serve", help="serve the inference API on 127.0.0.1 (API Gateway + Lambda, locally)")
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080; 0 picks a free one)")
    parser.add_argument("--model", help="registry model name to serve (default: the one the last run deployed)")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="inprocess",
        help="run the handler in the serving process (default, fastest) or in Lambda-like worker processes",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="serving processes sharing the port, each with the handler in process (inprocess backend; default 1)",
    )
    parser.add_argument(
        "--log-mode",
        choices=["background", "sync"],
        default="background",
        help="write the prediction log from a background thread (default) or before each response, as on Lambda",
    )
    parser.add_argument(
        "--log-sample-rate",
        type=float,
        metavar="RATE",
        help="share of requests written to the prediction log, 0 to 1 (default: the template's value)",
    )
    parser.set_defaults(func=cmd_serve)


def main(argv: list[str] | None = None) -> int:
    """``python -m stepml.serve`` (the same options as ``stepml serve``)."""
    parser = argparse.ArgumentParser(prog="stepml")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args, sys.stdout))


if __name__ == "__main__":
    sys.exit(main())
