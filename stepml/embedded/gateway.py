"""The WSGI layer in front of moto: what the local AWS does that moto alone does not.

* Lambda invocations run in the project's workers (moto would need Docker), with planned faults.
* A stored S3 object is sent from its file in pieces, and copied as a view of it (:mod:`.s3_objects`).
* Every accepted S3 and DynamoDB write is written through to the durable store before the caller hears
  back; when the disk refuses it the caller gets AWS's 500 InternalError, as for any write AWS could not
  complete, and nothing half-written is kept.
* Uploads into the stack's buckets raise S3's "Object Created" event, once, when they happen.
* Step Functions answers for executions earlier processes ran; StartExecution checks names one at a
  time; ValidateStateMachineDefinition (which moto lacks) answers with real diagnostics; SendTaskFailure
  keeps its cause (moto's own handler drops it).
* Safe by default: requests from another web origin are refused (no CORS), moto's admin routes
  (``/moto-api/...``: reset, seed, ...) are off, and stepml's own control routes need the service's token.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, unquote

from stepml.embedded.blob_keys import blobs_in_use, upload_blobs
from stepml.embedded.durable import StateWriteError
from stepml.embedded.executions import TERMINAL
from stepml.embedded.recording import s3_location, s3_object_written
from stepml.embedded.s3_objects import lazy_read, reads_one_object
from stepml.embedded.s3_uploads import IncompleteBody, streamable, streamed

if TYPE_CHECKING:
    from stepml.embedded.runtime import EmbeddedAws

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
StartResponse = Callable[..., Any]

INTERNAL_HEADER = "x-stepml-internal"
TOKEN_HEADER = "x-stepml-token"
_DYNAMODB = "DynamoDB_20120810."
_DYNAMODB_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"})
_SFN = "AWSStepFunctions."
_INVOKE_PREFIX, _INVOKE_SUFFIX = "/2015-03-31/functions/", "/invocations"


def _read_body(environ: dict[str, Any]) -> bytes:
    """The request body, read once; moto reads it again from the replaced stream."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(raw)
    return bytes(raw)


def _json(raw: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def respond(start_response: StartResponse, status: str, body: bytes, content_type: str, **extra: str) -> list[bytes]:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    headers += [(name.replace("_", "-"), value) for name, value in extra.items()]
    start_response(status, headers)
    return [body]


def json_error(start_response: StartResponse, status: str, error_type: str, message: str) -> list[bytes]:
    """An error in the AWS JSON protocols' shape (Step Functions, DynamoDB, Lambda)."""
    body = json.dumps({"__type": error_type, "message": message}).encode()
    return respond(start_response, status, body, "application/x-amz-json-1.0")


def xml_error(start_response: StartResponse, status: str, code: str, message: str) -> list[bytes]:
    """An error in S3's XML shape."""
    body = (
        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{_escape(message)}</Message>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    ).encode()
    return respond(start_response, status, body, "application/xml")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _Captured:
    """A WSGI start_response that holds the status and headers until the gateway decides."""

    def __init__(self) -> None:
        self.status = "500 Internal Server Error"
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        self.status, self.headers = status, list(headers)
        return lambda _data: None

    @property
    def ok(self) -> bool:
        return self.status.startswith("2")


class Gateway:
    """The local AWS's front door; see the module docstring."""

    def __init__(self, moto_app: WsgiApp, runtime: EmbeddedAws) -> None:
        self._moto_app = moto_app
        self._runtime = runtime
        self._dynamodb_write_lock = threading.Lock()
        self._start_execution_lock = threading.Lock()

    # -- routing ----------------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        start_response = _cors_stripped(start_response)
        refusal = self._refusal(environ, start_response, path, method)
        if refusal is not None:
            return refusal
        self._runtime.touch()
        internal = environ.get(f"HTTP_{INTERNAL_HEADER.upper().replace('-', '_')}") == self._runtime.token
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if path.startswith("/_stepml/"):
            return self._runtime.control(environ, start_response, path, method, _read_body(environ))
        if method == "POST" and path.startswith(_INVOKE_PREFIX) and path.endswith(_INVOKE_SUFFIX):
            name = unquote(path[len(_INVOKE_PREFIX) : -len(_INVOKE_SUFFIX)])
            if self._runtime.runner.spec(name):
                return self._invoke(environ, start_response, name)
        if target.startswith(_DYNAMODB) and target[len(_DYNAMODB) :] in _DYNAMODB_WRITES:
            return self._dynamodb_write(environ, start_response, target[len(_DYNAMODB) :], internal)
        if target.startswith(_SFN) and not internal:
            answered = self._step_functions(environ, start_response, target[len(_SFN) :])
            if answered is not None:
                return answered
        if method == "POST" and path == "/" and self._runtime.faults:
            injected = self._sns_fault(environ, start_response)
            if injected is not None:
                return injected
        if method in {"PUT", "POST", "DELETE"} and not target:
            return self._s3_write(environ, start_response, internal)
        if method == "GET" and not target and reads_one_object(environ):
            with lazy_read():  # a stored object's content is sent from its blob in pieces
                return self._moto_app(environ, start_response)
        return self._moto_app(environ, start_response)

    def _refusal(
        self, environ: dict[str, Any], start_response: StartResponse, path: str, method: str
    ) -> list[bytes] | None:
        # A web page the user has open may send requests to 127.0.0.1; only pages of this origin (none are
        # served) may, and moto's admin routes, which can wipe every resource, are not served at all.
        origin = environ.get("HTTP_ORIGIN")
        own = {f"http://127.0.0.1:{self._runtime.port}", f"http://localhost:{self._runtime.port}"}
        if origin is not None and origin not in own:
            return json_error(
                start_response, "403 Forbidden", "AccessDeniedException", "cross-origin requests are refused"
            )
        if path.startswith("/moto-api"):
            return json_error(
                start_response, "404 Not Found", "UnknownOperationException", "moto's admin API is off in stepml"
            )
        return None

    # -- S3 ---------------------------------------------------------------------------------------------
    def _s3_write(self, environ: dict[str, Any], start_response: StartResponse, internal: bool) -> Iterable[bytes]:
        # An upload's content (PUT) is moto's to read, once; the gateway needs only a POST's (DeleteObjects).
        body = _read_body(environ) if environ.get("REQUEST_METHOD") == "POST" else b""
        captured = _Captured()
        recorder = self._runtime.recorder
        # A large PutObject's or UploadPart's body goes from the socket into a blob of the store, which moto's key
        # then reads (a bucket the store does not keep, or the service's own writes, keep moto's path).
        location = s3_location(environ, recorder.buckets) if recorder is not None and not internal else None
        upload: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if recorder is not None and location is not None and location[1] and streamable(environ):
            upload = streamed(environ, recorder.store.held_blob)
        # The blobs of an upload's streamed parts, which its completion (written as one blob) or abort leaves unused.
        parts: set[str] = set()
        if location is not None and environ.get("REQUEST_METHOD") in {"POST", "DELETE"}:
            upload_id = parse_qs(environ.get("QUERY_STRING", "")).get("uploadId", [""])[0]
            parts = upload_blobs(location[0], upload_id) if upload_id else set()
        try:
            with upload, lazy_read() if reads_one_object(environ) else contextlib.nullcontext():  # a copy: a view
                answer = b"".join(self._moto_app(environ, captured))
        except IncompleteBody as error:
            return xml_error(start_response, "400 Bad Request", "IncompleteBody", str(error))
        except StateWriteError as error:
            return xml_error(start_response, "500 Internal Server Error", "InternalError", str(error))
        if captured.ok and not internal:
            if recorder is not None:
                try:
                    recorder.sync_objects(recorder.s3_keys_changed(environ, body))
                except StateWriteError as error:
                    return xml_error(start_response, "500 Internal Server Error", "InternalError", str(error))
                if parts:
                    recorder.store.release(parts, blobs_in_use)
            if self._runtime.notifications_enabled and s3_object_written(environ):
                location = s3_location(environ, set(self._runtime.stack.buckets.values()))
                if location and location[1]:
                    self._runtime.object_created(*location)
        start_response(captured.status, _without_cors(captured.headers))
        return [answer]

    # -- DynamoDB ---------------------------------------------------------------------------------------
    def _dynamodb_write(
        self, environ: dict[str, Any], start_response: StartResponse, operation: str, internal: bool
    ) -> Iterable[bytes]:
        request = _json(_read_body(environ))
        captured = _Captured()
        # DynamoDB applies a conditional write atomically; moto checks and writes without a lock. The
        # write and its recording happen under one lock, so the disk sees writes in the order moto applied them.
        with self._dynamodb_write_lock:
            answer = b"".join(self._moto_app(environ, captured))
            recorder = self._runtime.recorder
            if captured.ok and recorder is not None and not internal:
                try:
                    recorder.sync_items(recorder.dynamodb_keys_changed(operation, request))
                except StateWriteError as error:
                    return json_error(
                        start_response,
                        "500 Internal Server Error",
                        "com.amazonaws.dynamodb.v20120810#InternalServerError",
                        str(error),
                    )
        start_response(captured.status, _without_cors(captured.headers))
        return [answer]

    # -- Step Functions ---------------------------------------------------------------------------------
    def _step_functions(
        self, environ: dict[str, Any], start_response: StartResponse, operation: str
    ) -> Iterable[bytes] | None:
        if operation == "StartExecution":
            return self._start_execution(environ, start_response)
        if operation == "SendTaskFailure":
            return self._send_task_failure(environ, start_response)
        if operation == "StopExecution":
            return self._stop_execution(environ, start_response)
        if operation == "ValidateStateMachineDefinition":
            from http import HTTPStatus

            from stepml.embedded.asl_validation import http_response

            code, headers, body = http_response(_read_body(environ))
            start_response(f"{code} {HTTPStatus(code).phrase}", headers)
            return [body]
        archive = self._runtime.archive
        if archive is None or operation not in {"DescribeExecution", "GetExecutionHistory", "ListExecutions"}:
            return None
        request = _json(_read_body(environ))
        if operation == "ListExecutions":
            live = self._runtime.live_executions(request)
            if live is None:
                return None  # moto's own error (an unknown state machine, a bad filter) answers
            return self._json_answer(start_response, archive.listing(request, live))
        captured = _Captured()
        answer = b"".join(self._moto_app(environ, captured))
        if captured.ok and operation == "DescribeExecution" and _json(answer).get("status") in TERMINAL:
            try:
                archive.ended(request["executionArn"])
            except StateWriteError as error:
                return json_error(start_response, "500 Internal Server Error", "States.InternalError", str(error))
        if not captured.ok and b"ExecutionDoesNotExist" in answer:
            stored = (
                archive.describe(request.get("executionArn", ""))
                if operation == "DescribeExecution"
                else archive.history(request)
            )
            if stored is not None:
                return self._json_answer(start_response, stored)
        start_response(captured.status, _without_cors(captured.headers))
        return [answer]

    @staticmethod
    def _json_answer(start_response: StartResponse, answer: dict[str, Any]) -> list[bytes]:
        return respond(start_response, "200 OK", json.dumps(answer).encode(), "application/x-amz-json-1.0")

    def _start_execution(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """StartExecution as AWS answers it, also for executions an earlier process ran.

        moto returns the running execution for a repeated name and input, and refuses a name otherwise used,
        but only for executions it holds: it forgets them when the process ends, while AWS keeps a name 90
        days. A stored execution of an earlier process has ended, so AWS would refuse its name whatever the
        input. moto also checks the name and then creates the execution without a lock: one start at a time.
        """
        request = _json(_read_body(environ))
        name, machine = request.get("name"), request.get("stateMachineArn")
        self._runtime.prestart_pipeline()  # a local AWS started for serving has not yet
        archive = self._runtime.archive
        with self._start_execution_lock:
            stored = (
                archive.stored_for(machine, name)
                if archive is not None and isinstance(name, str) and isinstance(machine, str)
                else None
            )
            if stored is not None and not self._runtime.holds(stored["executionArn"]):
                return json_error(
                    start_response,
                    "400 Bad Request",
                    "ExecutionAlreadyExists",
                    f"Execution Already Exists: '{stored.get('executionArn')}'",
                )
            captured = _Captured()
            answer = b"".join(self._moto_app(environ, captured))
            if captured.ok and archive is not None:
                try:
                    archive.started(request, _json(answer))
                except StateWriteError as error:
                    return json_error(start_response, "500 Internal Server Error", "States.InternalError", str(error))
        start_response(captured.status, _without_cors(captured.headers))
        return [answer]

    def _send_task_failure(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """SendTaskFailure with its cause. moto's response handler passes the engine the error alone, so the
        failed task's Cause (what a Catch puts in the state, e.g. why a person rejected a model) would be
        null; the engine call itself takes the cause, and is made here as moto's handler would.

        Like moto, this answers InvalidToken for the token of a task that no longer waits (it timed out, or its
        execution ended), where AWS answers TaskTimedOut; ``stepml approve|reject`` treat both alike.
        """
        from moto.core.exceptions import JsonRESTError
        from moto.stepfunctions.parser.models import stepfunctions_parser_backends

        from stepml.embedded.template import ACCOUNT_ID, REGION

        request = _json(_read_body(environ))
        token = request.get("taskToken")
        if not isinstance(token, str) or not token:
            return json_error(start_response, "400 Bad Request", "ValidationException", "taskToken is required")
        backend = stepfunctions_parser_backends[ACCOUNT_ID][REGION]
        try:
            # both optional, as on AWS (moto's signature says str)
            backend.send_task_failure(token, cast(str, request.get("error")), cast(str, request.get("cause")))
        except JsonRESTError as error:
            return json_error(start_response, f"{error.code} Bad Request", error.error_type, error.message)
        return self._json_answer(start_response, {})

    def _stop_execution(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """StopExecution, also of an execution whose task waits for a callback (a run waiting for approval).

        moto's engine marks the execution stopped but goes on waiting for the task token until the task's
        timeout, whose error then ends it FAILED; AWS ends it ABORTED at once. After moto's own StopExecution
        the execution's waits are released with an empty success, which its stopped program does not act on:
        it ends ABORTED, as on AWS. (Its history then has a TaskSucceeded event just before ExecutionAborted,
        which AWS's would not: the only trace of the difference.)
        """
        request = _json(_read_body(environ))
        captured = _Captured()
        answer = b"".join(self._moto_app(environ, captured))
        if captured.ok:
            _release_callbacks(str(request.get("executionArn", "")))
        start_response(captured.status, _without_cors(captured.headers))
        return [answer]

    # -- Lambda -----------------------------------------------------------------------------------------
    def _invoke(self, environ: dict[str, Any], start_response: StartResponse, name: str) -> Iterable[bytes]:
        raw = _read_body(environ)
        event = json.loads(raw) if raw.strip() else {}
        runner = self._runtime.runner
        spec = runner.spec(name)
        assert spec is not None
        # The payload tells apart two executions invoking the same function at the same moment.
        injection = self._runtime.injected_fault(lambda d: _invokes(d, {spec.arn, spec.name}, event))
        if injection is not None:
            throw = injection.throw
            if throw.when == "after":
                # The function runs to the end (its writes happen) and the attempt is still reported as
                # failed: what Step Functions sees when a response is lost or a timeout hits after the writes.
                ran = runner.invoke(name, event)
                injection.ran, injection.outcome_error = True, ran.error_type
            body = json.dumps({"errorType": throw.error, "errorMessage": throw.cause}).encode()
            return respond(start_response, "200 OK", body, "application/json", X_Amz_Function_Error="Unhandled")
        if environ.get("HTTP_X_AMZ_INVOCATION_TYPE") == "Event":
            threading.Thread(target=runner.invoke, args=(name, event), daemon=True).start()
            return respond(start_response, "202 Accepted", b"", "application/json")
        result = runner.invoke(name, event)
        extra = {"X_Amz_Executed_Version": "$LATEST"}
        if result.failed:
            extra["X_Amz_Function_Error"] = "Unhandled"
        return respond(start_response, "200 OK", json.dumps(result.payload).encode(), "application/json", **extra)

    # -- SNS --------------------------------------------------------------------------------------------
    def _sns_fault(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes] | None:
        raw = _read_body(environ)
        if b"Action=Publish" not in raw:
            return None
        message = parse_qs(raw.decode("utf-8", "replace")).get("Message", [None])[0]
        injection = self._runtime.injected_fault(
            lambda d: d.get("resourceType") == "sns" and _same_message(d.get("parameters"), message)
        )
        if injection is None:
            return None
        throw = injection.throw
        if throw.when == "after":
            # The message is published, then the call fails: a retry publishes it again (at least once).
            captured = _Captured()
            b"".join(self._moto_app(environ, captured))
            injection.ran = True
            injection.outcome_error = None if captured.ok else captured.status
        # Step Functions names an SNS error "SNS.<Code>Exception"; inject the code that yields the asked name.
        code = throw.error.removeprefix("SNS.").removesuffix("Exception") or throw.error
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
            f"<Message>{throw.cause}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
        ).encode()
        return respond(start_response, "400 Bad Request", body, "text/xml")


def _cors_stripped(start_response: StartResponse) -> StartResponse:
    def strip(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        headers = _without_cors(headers)
        return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

    return strip


def _without_cors(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    # moto's server answers every origin with Access-Control-Allow-Origin: *; the local AWS answers none.
    return [(k, v) for k, v in headers if not k.lower().startswith("access-control-")]


def _release_callbacks(execution_arn: str) -> int:
    """End every callback wait of a stopped execution (see ``Gateway._stop_execution``); how many."""
    from moto.stepfunctions.parser.asl.eval.callback.callback import CallbackOutcomeSuccess
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    from stepml.embedded.template import ACCOUNT_ID, REGION

    released = 0
    for machine in stepfunctions_parser_backends[ACCOUNT_ID][REGION].state_machines:
        for execution in machine.executions:
            worker = getattr(execution, "exec_worker", None)
            if getattr(execution, "exec_arn", None) != execution_arn or worker is None:
                continue
            # moto keeps the waiting tasks' endpoints by token in its pool manager (no public listing)
            for token, endpoint in list(worker.env.callback_pool_manager._pool.items()):
                endpoint.notify(CallbackOutcomeSuccess(callback_id=token, output="{}"))
                released += 1
    return released


def _invokes(details: dict[str, Any], function: set[str], event: Any) -> bool:
    """Whether a scheduled task (its history event's details) is this invocation of ``function`` (its ARN or
    name) with ``event``: a Task whose Resource is the function, or the ``lambda:invoke`` service integration
    (``.waitForTaskToken`` included), whose parameters name the function and carry the event as Payload."""
    if details.get("resource") in function:
        return _same_json(details.get("input"), event)
    if details.get("resourceType") != "lambda" or not str(details.get("resource", "")).startswith("invoke"):
        return False
    try:
        parameters = json.loads(details.get("parameters") or "{}")
    except ValueError:
        return False
    if not isinstance(parameters, dict) or parameters.get("FunctionName") not in function:
        return False
    payload = parameters.get("Payload")
    return _same_json(payload, event) if isinstance(payload, str) else payload is None or payload == event


def _same_json(recorded: Any, sent: Any) -> bool:
    """Whether a history event's recorded JSON text is ``sent`` (True when the event does not say)."""
    if not isinstance(recorded, str):
        return True
    try:
        return bool(json.loads(recorded) == sent)
    except ValueError:
        return True


def _same_message(parameters: Any, message: str | None) -> bool:
    """Whether an SNS task's recorded parameters carry the Message being published now."""
    if not isinstance(parameters, str) or message is None:
        return True
    try:
        recorded = json.loads(parameters).get("Message")
    except (ValueError, AttributeError):
        return True
    return recorded is None or recorded == message
