"""``stepml serve``: the inference API on 127.0.0.1, as API Gateway + Lambda would serve it.

Each HTTP request becomes an API Gateway REST proxy event (AWS's documented shape) for the real handler of
the template's ``InferenceFunction``, run with that function's environment from ``infra/template.yaml``
(table names, backend) against the state directory's local AWS (started in the background when none
serves it): the registry, the SageMaker stand-in's endpoint records and the model artifacts runs left
there. The model served is the one the last run deployed (newest approved registry version) unless
``--model`` names another.

The HTTP server is gunicorn (:mod:`stepml.serve_http`): ``--workers`` processes (default: one per core),
each importing the handler in process with the function's environment and calling it one request at a time
under a lock (one warm Lambda execution environment each). The prediction log goes to the local AWS from a
background thread in each worker, in batches, through a bounded queue (full: the item is dropped and
counted); a stopping worker gives it at most ``LOG_FLUSH_SECONDS`` and counts what it could not write, so a
stop takes seconds whatever the log holds. The local AWS keeps what it is sent on disk as it changes:
stopping this server saves nothing and can overwrite nothing a run wrote meanwhile.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib.util
import io
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any, TextIO

from stepml.serve_http import (
    MAX_PAYLOAD_BYTES,
    GunicornServer,
    Invoke,
    ServeError,
    gateway_error,
    listening_socket,
    proxy_event,
)

__all__ = ["MAX_PAYLOAD_BYTES", "LocalApi", "ServeError", "last_deployed_model", "proxy_event", "serve"]

FUNCTION_ID = "InferenceFunction"
# What a stopping worker gives the prediction log's queue (the local AWS may be slow, or gone).
LOG_FLUSH_SECONDS = 2.0
# The HTTP servers `--server` chooses from, the default first.
SERVERS = ("granian", "gunicorn")


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
                return gateway_error(HTTPStatus.BAD_GATEWAY, "Internal server error")
        return answer

    return invoke


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
            # no pipeline runs here: a local AWS started for serving warms no pipeline workers until a run
            self.target = embedded_target(self.layout, sys.stderr, prestart_workers=False)
        except TargetError as error:
            raise ServeError(str(error)) from error

    @property
    def endpoint_url(self) -> str:
        return str(self.target.endpoint_url)

    def client(self, service: str) -> Any:
        return self.target.client(service)


def default_workers() -> int:
    """One serving process per core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class LocalApi:
    """The served function: the state directory's local AWS, the model, and the function's environment.

    :meth:`prepare` attaches to the local AWS (starting it in the background when none serves the state
    directory) and works out the model and the environment; :meth:`invoker` then imports the handler into
    the calling process (each serving worker calls it after the fork; benchmarks call it directly).
    """

    def __init__(
        self, model_name: str | None = None, log_mode: str = "background", log_sample_rate: float | None = None
    ) -> None:
        from stepml.project import project_layout

        self.layout = project_layout()
        # The local AWS owns the registry, the artifacts and the prediction log; this server is its client.
        self.aws = _LocalAws(self.layout)
        if FUNCTION_ID not in self.aws.stack.functions:
            raise ServeError(f"{self.layout.template} declares no {FUNCTION_ID}: nothing to serve")
        self.spec = self.aws.stack.functions[FUNCTION_ID]
        self.requested_model = model_name
        self.log_mode = log_mode
        self.log_sample_rate = log_sample_rate
        self.model_name: str | None = None
        self.environment: dict[str, str] = {}

    @property
    def log_path(self) -> Path:
        return self.layout.state_dir / "logs" / f"{self.spec.name}.log"

    def prepare(self) -> None:
        self.aws.start()
        self.model_name = (
            self.requested_model or last_deployed_model(self.aws) or self.spec.environment.get("MODEL_NAME")
        )
        self.environment = function_environment(
            self.aws, self.spec, self.model_name, self.log_mode, self.log_sample_rate
        )

    def invoker(self) -> Invoke:
        return in_process_invoker(self.spec, self.environment)


def _output_to(path: Path) -> None:
    """Send this process's stdout and stderr (the handler's Powertools logs and EMF metrics, gunicorn's
    worker messages) to the function's log file, as Lambda sends them to CloudWatch Logs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    # The handler's loggers hold the streams they found at import (before the fork): line by line, as
    # Lambda ships each line, whatever those streams were buffered for (a pipe, a terminal).
    for stream in {sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__}:
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)


def _stop_prediction_log() -> None:
    """A stopping worker: write what the prediction log's queue holds for up to LOG_FLUSH_SECONDS, then
    give the rest up (counted in the function log)."""
    from pipeline_core.aws.prediction_log import close_background_writers

    lost = close_background_writers(LOG_FLUSH_SECONDS)
    if lost:
        print(f"stepml serve: {lost} prediction log item(s) not written at stop", file=sys.stderr, flush=True)
    for stream in {sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__}:
        if stream is not None:
            stream.flush()
    # Nothing of the worker is left to save: end it here. The interpreter's own shutdown would wait for the
    # request threads (a thread waiting for a slow client's bytes, up to 5 s each) and the atexit handlers,
    # and a worker still there after GRACEFUL_SECONDS is killed: the stop would take that long every time.
    os._exit(0)


def serve(
    port: int,
    out: TextIO,
    *,
    model_name: str | None = None,
    workers: int | None = None,
    log_mode: str = "background",
    log_sample_rate: float | None = None,
    server: str = "granian",
) -> int:
    """Serve the inference API on 127.0.0.1:``port`` until interrupted (SIGINT or SIGTERM stop it within
    seconds: requests in flight get GRACEFUL_SECONDS, the prediction log LOG_FLUSH_SECONDS)."""
    workers = workers or default_workers()
    if workers < 1:
        print(f"stepml serve: --workers must be >= 1, got {workers}", file=sys.stderr)
        return 2
    try:
        api = LocalApi(model_name, log_mode=log_mode, log_sample_rate=log_sample_rate)
        listener = listening_socket(port)  # first: a port in use is said at once, before the local AWS starts
        api.prepare()
    except ServeError as error:
        print(f"stepml serve: {error}", file=sys.stderr)
        return 2

    if server == "granian":
        return _serve_granian(api, listener, workers, out)
    return _serve_gunicorn(api, listener, workers, out)


def _banner(api: LocalApi, listener: socket.socket, workers: int, server: str, out: TextIO) -> None:
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    print(f"stepml inference API on {url} ({workers} {server} worker(s); Ctrl-C stops)", file=out)
    if api.model_name:
        print(f"  model        {api.model_name} (GET /model shows the version served)", file=out)
    print(f"  try          curl -s {url}/model", file=out)
    print(f"               curl -s -X POST {url}/predict -H 'Content-Type: application/json' \\", file=out)
    print('                    -d \'{"instances": [{"<feature>": 1.0, ...}]}\'', file=out)
    print(f"  OpenAPI      {url}/openapi.json", file=out)
    print(f"  function log {api.log_path}", file=out, flush=True)


def _serve_granian(api: LocalApi, listener: socket.socket, workers: int, out: TextIO) -> int:
    """granian's workers (forked from this process once it has imported the handler) around the function."""
    from stepml.serve_granian import GranianServer, RsgiApp

    try:
        invoke = api.invoker()  # the handler imported here: the banner below means requests are answered
    except ServeError as error:
        print(f"stepml serve: {error}", file=sys.stderr)
        return 2
    app = RsgiApp(invoke, on_start=lambda: _output_to(api.log_path), on_stop=_stop_prediction_log)
    server = GranianServer(listener, app, workers)
    _banner(api, listener, workers, "granian", out)
    # `kill -USR1 <pid>` prints every thread's stack to the terminal (stderr): where a serve that does not
    # stop is waiting (the workers, forked after this, inherit it and print to the function log)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    server.run()  # returns once every worker has stopped (SystemExit(1) if one had died unasked)
    return 0


def _serve_gunicorn(api: LocalApi, listener: socket.socket, workers: int, out: TextIO) -> int:
    """gunicorn's gthread workers around the function (``--server gunicorn``)."""

    def ready(_arbiter: Any) -> None:
        # `kill -USR1 <pid>` prints every thread's stack to the terminal (stderr): how to see where a serve
        # that does not stop is waiting (registered after gunicorn's own signal handlers, so it wins)
        faulthandler.register(signal.SIGUSR1, all_threads=True)

    server = GunicornServer(
        listener,
        api.invoker,
        workers,
        hooks={
            "when_ready": ready,
            "post_fork": lambda _arbiter, _worker: _output_to(api.log_path),
            "worker_exit": lambda _arbiter, _worker: _stop_prediction_log(),
        },
    )
    try:
        server.ready()  # the handler imported: the banner below means requests are answered
    except ServeError as error:
        print(f"stepml serve: {error}", file=sys.stderr)
        return 2
    _banner(api, listener, workers, "gunicorn", out)
    master = os.getpid()
    try:
        server.run()  # gunicorn's arbiter: returns by SystemExit, in this process and in each worker
    except SystemExit as stopped:
        if os.getpid() != master:
            raise  # a worker ending: its exit status is gunicorn's
        return stopped.code if isinstance(stopped.code, int) else 0
    return 0


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    return serve(
        args.port,
        out,
        model_name=args.model,
        workers=args.workers,
        log_mode=args.log_mode,
        log_sample_rate=args.log_sample_rate,
        server=args.server,
    )


def add_parser(subparsers: Any) -> None:
    """Add ``stepml serve`` to the CLI's subcommands."""
    parser = subparsers.add_parser("serve", help="serve the inference API on 127.0.0.1 (API Gateway + Lambda, locally)")
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080; 0 picks a free one)")
    parser.add_argument("--model", help="registry model name to serve (default: the one the last run deployed)")
    parser.add_argument(
        "--workers",
        type=int,
        help="serving processes, each with the handler in process (default: one per core)",
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
    parser.add_argument(
        "--server",
        choices=SERVERS,
        default=SERVERS[0],
        help="the HTTP server: granian (default; Rust I/O, one loop per worker) or gunicorn (threads per worker)",
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
