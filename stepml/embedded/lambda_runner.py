"""Run the project's Lambda handlers for the embedded target.

Each function gets warm worker processes of its own, like Lambda's execution environments: the
function's own environment variables (Lambda functions do not share them), its code directory on
``sys.path`` and its handler imported once. A busy function gets another worker, so concurrent
invocations (Map states, parallel runs) never share a process. Workers are forked from a forkserver that
has already imported the heavy libraries, so a cold start costs milliseconds, not seconds.
"""

from __future__ import annotations

import contextlib
import decimal
import importlib
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import resource
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.forkserver import ensure_running
from pathlib import Path
from typing import Any

from stepml.embedded.lambda_memory import (
    MEMORY_POLL_SECONDS,
    memory_limit_enabled,
    out_of_memory_message,
    peak_memory_mb,
    status_kb,
)
from stepml.embedded.lambda_pool import WorkerPools, idle_seconds
from stepml.embedded.template import REGION, FunctionSpec

# Imported once by the forkserver so that every worker starts with them already loaded.
PRELOAD = [
    "json",
    "boto3",
    "botocore.session",
    "pydantic",
    "numpy",
    "pandas",
    "aws_lambda_powertools",
    "aws_lambda_powertools.metrics",
    "aws_lambda_powertools.tracing",
    # Powertools' Tracer imports the X-Ray SDK on first use, whose recorder builds an X-Ray client (a
    # botocore session and two service models): ~0.1 s per cold function when each worker does it itself.
    "aws_xray_sdk.core",
    "stepml.embedded.prewarm",
]

# What a worker sends once its handler is imported; Lambda limits that init phase to 10 s.
_READY = "ready"
INIT_LIMIT_SECONDS = 10

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)


def warm_up() -> None:
    """Start the forkserver (and its imports) now, e.g. in a thread while other work goes on."""
    ensure_running()


@dataclass(frozen=True)
class InvocationResult:
    function_name: str
    payload: Any
    error_type: str | None
    duration_ms: float
    request_id: str

    @property
    def failed(self) -> bool:
        return self.error_type is not None


@dataclass
class InvocationLog:
    """Every invocation's function and duration, for progress output and the benchmark."""

    entries: list[InvocationResult] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, result: InvocationResult) -> None:
        with self.lock:
            self.entries.append(result)


class _LambdaContext:
    """The parts of Lambda's context object handlers and Powertools read."""

    def __init__(self, spec_name: str, arn: str, memory_mb: int, timeout_s: int, request_id: str) -> None:
        self.function_name = spec_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = arn
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", f"/aws/lambda/{spec_name}")
        self.log_stream_name = "embedded"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class _ImportModuleError(Exception):
    """The handler module could not be imported (Lambda reports it as Runtime.ImportModuleError)."""


def _error_type(error: BaseException) -> str:
    return "Runtime.ImportModuleError" if isinstance(error, _ImportModuleError) else type(error).__name__


def _lambda_json_default(value: Any) -> Any:
    # Lambda's Python runtime serialises a Decimal (what DynamoDB reads return) as a number and fails
    # anything else that is not JSON (a datetime, a set) with Runtime.MarshalError; so must we, or a
    # handler that works here would fail on AWS.
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def platform_start(log_format: str, request_id: str) -> str:
    """The line Lambda logs as an invocation starts (a JSON ``platform.start`` record under LogFormat JSON)."""
    if log_format == "JSON":
        return _platform_record("platform.start", {"requestId": request_id, "version": "$LATEST"})
    return f"START RequestId: {request_id} Version: $LATEST\n"


def platform_end(
    log_format: str,
    request_id: str,
    duration_ms: float,
    memory_mb: int,
    max_memory_used_mb: int,
    init_duration_ms: float | None = None,
    error_type: str | None = None,
) -> str:
    """END and REPORT as Lambda logs them (one ``platform.report`` record under LogFormat JSON).

    ``error_type`` is set only for what ends the execution environment (a timeout, an exit), the cases in
    which Lambda's REPORT has a Status; an error the handler raises leaves REPORT as for a success.
    """
    billed_ms = max(1, math.ceil(duration_ms))  # Lambda bills by the millisecond, rounded up
    status = None if error_type is None else ("timeout" if error_type == "Sandbox.Timedout" else "error")
    if log_format == "JSON":
        metrics: dict[str, Any] = {
            "durationMs": round(duration_ms, 3),
            "billedDurationMs": billed_ms,
            "memorySizeMB": memory_mb,
            "maxMemoryUsedMB": max_memory_used_mb,
        }
        if init_duration_ms is not None:
            metrics["initDurationMs"] = round(init_duration_ms, 3)
        record: dict[str, Any] = {"requestId": request_id, "metrics": metrics, "status": status or "success"}
        if status == "error":
            record["errorType"] = error_type
        return _platform_record("platform.report", record)
    # REPORT's fields are tab-separated, with a trailing tab, as Lambda writes them
    report = (
        f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\tBilled Duration: {billed_ms} ms\t"
        f"Memory Size: {memory_mb} MB\tMax Memory Used: {max_memory_used_mb} MB\t"
    )
    if init_duration_ms is not None:
        report += f"Init Duration: {init_duration_ms:.2f} ms\t"
    if status == "timeout":
        report += "Status: timeout"
    elif status == "error":
        report += f"Status: error\tError Type: {error_type}"
    return f"END RequestId: {request_id}\n{report}\n"


def _platform_record(kind: str, record: dict[str, Any]) -> str:
    return json.dumps({"time": _utc_now(), "type": kind, "record": record}) + "\n"


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _max_memory_used_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # (kilobytes on Linux)


def _worker_main(conn: multiprocessing.connection.Connection, spec: FunctionSpec, env: dict[str, str]) -> None:
    log_path = env.get("STEPML_FUNCTION_LOG")
    if log_path:
        # Handler output goes to a per-function log file, as it would to CloudWatch Logs.
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    sys.path.insert(0, str(spec.code_dir))
    module_name, _, attribute = spec.handler.rpartition(".")
    log_format = env.get("AWS_LAMBDA_LOG_FORMAT", "Text")
    handler: Callable[[Any, Any], Any] | None = None
    import_error: BaseException | None = None
    init_started = time.perf_counter()
    try:
        handler = getattr(importlib.import_module(module_name), attribute)
    except BaseException as error:  # reported on every invocation, as Lambda reports Runtime.ImportModuleError
        import_error = error
    init_duration_ms: float | None = (time.perf_counter() - init_started) * 1000  # REPORTed once, on a cold start
    conn.send(_READY)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        request_id, event = message
        context = _LambdaContext(spec.name, spec.arn, spec.memory_mb, spec.timeout_seconds, request_id)
        sys.stdout.write(platform_start(log_format, request_id))
        sys.stdout.flush()
        started = time.perf_counter()
        try:
            if handler is None:
                raise _ImportModuleError(f"Unable to import module '{module_name}': {import_error}")
            outcome: tuple[Any, str | None] = (handler(event, context), None)
        except Exception as error:
            outcome = (
                {
                    "errorMessage": str(error),
                    "errorType": _error_type(error),
                    "requestId": request_id,
                    "stackTrace": traceback.format_exception(error)[-8:],
                },
                _error_type(error),
            )
            traceback.print_exc()
        payload, error_type = outcome
        try:
            body = json.dumps(payload, default=_lambda_json_default)
        except (TypeError, ValueError) as error:
            body = json.dumps(
                {"errorMessage": f"Unable to marshal response: {error}", "errorType": "Runtime.MarshalError"}
            )
            error_type = "Runtime.MarshalError"
        duration_ms = (time.perf_counter() - started) * 1000
        sys.stderr.flush()
        sys.stdout.write(
            platform_end(log_format, request_id, duration_ms, spec.memory_mb, _max_memory_used_mb(), init_duration_ms)
        )
        sys.stdout.flush()
        init_duration_ms = None
        conn.send((body, error_type, duration_ms))


class _Worker:
    def __init__(self, spec: FunctionSpec, env: dict[str, str]) -> None:
        self.conn, child_conn = _context.Pipe()
        self.process = _context.Process(
            target=_worker_main, args=(child_conn, spec, env), name=f"lambda:{spec.name}", daemon=True
        )
        self.process.start()
        child_conn.close()
        self.ready = False

    def alive(self) -> bool:
        return self.process.is_alive()

    def wait_ready(self, limit: float) -> bool:
        """Wait up to ``limit`` seconds for the worker's init (its handler's import) to end; whether it did."""
        if not self.ready and self.conn.poll(limit):
            with contextlib.suppress(EOFError):  # it died in its init; the invocation finds it dead
                self.ready = self.conn.recv() == _READY
        return self.ready

    def stop(self) -> None:
        self.conn.close()
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()


class LambdaRunner:
    """Invoke functions by name or ARN; one pool of warm workers per function."""

    def __init__(self, functions: dict[str, FunctionSpec], base_env: dict[str, str], log_dir: Path) -> None:
        self._functions = {spec.name: spec for spec in functions.values()}
        self._base_env = base_env
        self._log_dir = log_dir
        self._limit_memory = memory_limit_enabled()
        self._pools: WorkerPools[_Worker] = WorkerPools(list(self._functions), idle_seconds())
        self.log = InvocationLog()
        log_dir.mkdir(parents=True, exist_ok=True)

    def spec(self, name_or_arn: str) -> FunctionSpec | None:
        name = name_or_arn.split(":function:", 1)[-1].split(":", 1)[0]
        return self._functions.get(name)

    def _environment(self, spec: FunctionSpec) -> dict[str, str]:
        return {
            **self._base_env,
            **spec.environment,
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_LAMBDA_LOG_FORMAT": spec.log_format,
            "AWS_LAMBDA_LOG_GROUP_NAME": spec.log_group_name,
            "STEPML_FUNCTION_LOG": str(self._log_path(spec)),
        }

    def _log_path(self, spec: FunctionSpec) -> Path:
        return self._log_dir / f"{spec.name}.log"

    def _log_platform_end(self, spec: FunctionSpec, lines: str) -> None:
        """What Lambda itself logs for an invocation the worker could not finish (it was killed or it died)."""
        with self._log_path(spec).open("a", encoding="utf-8") as log:
            log.write(lines)

    def prestart(self, names_or_arns: Iterable[str]) -> None:
        """Start one idle worker per named function now, so its first invocation finds it ready.

        Like Lambda's provisioned concurrency: the handler's import (its init phase) happens before the
        first request rather than inside the first state that calls it, which on a fresh ``stepml run``
        is every state. Unknown names are ignored (a definition may name functions of other stacks).
        """
        for name_or_arn in names_or_arns:
            spec = self.spec(name_or_arn)
            if spec is None:
                continue
            worker = _Worker(spec, self._environment(spec))
            if not self._pools.checkin(spec.name, worker):
                worker.stop()
                return

    def _checkout(self, spec: FunctionSpec) -> _Worker:
        return self._pools.checkout(spec.name) or _Worker(spec, self._environment(spec))

    def invoke(self, name_or_arn: str, event: Any) -> InvocationResult:
        """Run the function's handler on ``event`` in one of its workers and return what it returned."""
        spec = self.spec(name_or_arn)
        if spec is None:
            raise KeyError(f"no function {name_or_arn!r} in the embedded stack")
        request_id = str(uuid.uuid4())
        worker = self._checkout(spec)
        # Lambda's init phase (up to 10 s) is not part of the function's timeout; a longer one is retried within
        # the invocation, under its timeout. A worker whose init took longer than both fails as a timeout below.
        initialised = worker.wait_ready(INIT_LIMIT_SECONDS + spec.timeout_seconds)
        started = time.perf_counter()
        if initialised or not worker.process.is_alive():
            worker.conn.send((request_id, event))
            answered, used_kb = self._await_reply(worker, spec)
        else:  # still in its init: killed as a timeout
            answered, used_kb = False, 0
        if used_kb:
            result = self._out_of_memory(worker, spec, request_id, started, used_kb)
            self.log.add(result)
            return result
        try:
            reply = worker.conn.recv() if answered else None
        except EOFError:  # the worker died mid-invocation (os._exit, a crash in native code)
            worker.process.join(timeout=2)
            elapsed_ms = (time.perf_counter() - started) * 1000
            exit_line = (
                f"RequestId: {request_id} Error: Runtime exited with error: exit status {worker.process.exitcode}\n"
                "Runtime.ExitError\n"
            )
            self._log_platform_end(
                spec,
                (exit_line if spec.log_format != "JSON" else "")
                + platform_end(spec.log_format, request_id, elapsed_ms, spec.memory_mb, 0, None, "Runtime.ExitError"),
            )
            reply = (
                json.dumps(
                    {
                        "errorType": "Runtime.ExitError",
                        "errorMessage": f"RequestId: {request_id} Error: Runtime exited with "
                        f"exit code {worker.process.exitcode}",
                    }
                ),
                "Runtime.ExitError",
                (time.perf_counter() - started) * 1000,
            )
        if reply is not None:
            body, error_type, duration_ms = reply
            if error_type != "Runtime.ExitError" and not self._pools.checkin(spec.name, worker):
                worker.stop()
            result = InvocationResult(spec.name, json.loads(body), error_type, duration_ms, request_id)
        else:
            # Lambda kills an execution environment that runs past its timeout; so do we.
            peak_mb = peak_memory_mb(worker.process.pid)
            worker.process.kill()
            elapsed = time.perf_counter() - started
            timed_out = f"{_utc_now()} {request_id} Task timed out after {elapsed:.2f} seconds\n"
            self._log_platform_end(
                spec,
                (timed_out if spec.log_format != "JSON" else "")
                + platform_end(
                    spec.log_format, request_id, elapsed * 1000, spec.memory_mb, peak_mb, None, "Sandbox.Timedout"
                ),
            )
            result = InvocationResult(
                spec.name,
                {
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": f"Task timed out after {elapsed:.2f} seconds",
                },
                "Sandbox.Timedout",
                elapsed * 1000,
                request_id,
            )
        self.log.add(result)
        return result

    def _await_reply(self, worker: _Worker, spec: FunctionSpec) -> tuple[bool, int]:
        """Wait for the worker's reply up to the function's timeout: (answered, 0); or, when the worker goes
        over its MemorySize first, (False, its resident memory in kB)."""
        deadline = time.monotonic() + spec.timeout_seconds
        limit_kb = spec.memory_mb * 1024
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, 0
            if not self._limit_memory:
                return worker.conn.poll(remaining), 0
            if worker.conn.poll(min(remaining, MEMORY_POLL_SECONDS)):
                return True, 0
            resident_kb = status_kb(worker.process.pid, "VmRSS")
            if resident_kb > limit_kb:
                return False, resident_kb

    def _out_of_memory(
        self, worker: _Worker, spec: FunctionSpec, request_id: str, started: float, used_kb: int
    ) -> InvocationResult:
        """Kill a worker over its MemorySize and fail the invocation as Lambda does (Runtime.OutOfMemory)."""
        # rounded up: it is over MemorySize, and "used 170 MB of 170 MB" would read as if it fitted
        used_mb = math.ceil(max(used_kb, status_kb(worker.process.pid, "VmHWM")) / 1024)
        worker.process.kill()
        worker.process.join(timeout=2)
        elapsed_ms = (time.perf_counter() - started) * 1000
        error_line = f"RequestId: {request_id} Error: Runtime exited with error: signal: killed\nRuntime.OutOfMemory\n"
        self._log_platform_end(
            spec,
            (error_line if spec.log_format != "JSON" else "")
            + platform_end(
                spec.log_format, request_id, elapsed_ms, spec.memory_mb, used_mb, None, "Runtime.OutOfMemory"
            ),
        )
        payload = {
            "errorType": "Runtime.OutOfMemory",
            "errorMessage": out_of_memory_message(request_id, spec.name, spec.memory_mb, used_mb),
        }
        return InvocationResult(spec.name, payload, "Runtime.OutOfMemory", elapsed_ms, request_id)

    def close(self) -> None:
        for worker in self._pools.close():
            worker.stop()
