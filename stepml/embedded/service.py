"""One local AWS per state directory, owning its state; every command is its client.

``stepml local up`` runs it in the foreground; the first command that needs it and finds none starts it
in the background (``stepml local down`` stops it, ``stepml local status`` shows it; a background one
stops itself after ``STEPML_LOCAL_IDLE_TIMEOUT`` seconds without requests or running executions). One
instance per state directory is enforced by an exclusive lock it holds for its whole life
(``local.lock``); ``local.json`` (readable by the user only) says where it listens and holds the token its
control routes (``/_stepml/...``) require. Clients reach it as they reach LocalStack or AWS: boto3 at its
endpoint, with the stack's outputs from CloudFormation.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs

from stepml.embedded.durable import LocalStateError, atomic_write
from stepml.project import ProjectLayout
from stepml.targets import TargetError

INFO_FILE = "local.json"
LOCK_FILE = "local.lock"
START_LOCK_FILE = "local.start.lock"
DEFAULT_IDLE_TIMEOUT = 1800.0
START_TIMEOUT = 180.0
# "0": the background local AWS prestarts no pipeline workers until its first execution (set for stepml serve)
PRESTART_ENV = "STEPML_LOCAL_PRESTART"
# Code the running service has loaded. A change to the project's handlers, training code, definition or
# template is taken up by a reload; the service's own code and the shared layer (which its workers'
# forkserver imported once) need a new process.
PROJECT_CODE = ("functions", "training", "statemachine", "infra/template.yaml")
SERVICE_CODE = ("stepml", "functions/shared")


class LocalServiceError(TargetError):
    """The local AWS cannot be started, reached or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class ServiceInfo:
    pid: int
    endpoint_url: str
    token: str
    state_dir: str
    started_at: float
    background: bool
    log: str


def info_path(layout: ProjectLayout) -> Path:
    return layout.state_dir / INFO_FILE


def log_path(layout: ProjectLayout) -> Path:
    return layout.state_dir / "logs" / "local-aws.log"


def code_fingerprint(root: Path, parts: Iterable[str] = PROJECT_CODE) -> str:
    """A hash of the names, sizes and modification times of the project code the service runs."""
    digest = hashlib.sha256()
    for part in parts:
        path = root / part
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" in file.parts:
                continue
            stat = file.stat()
            digest.update(f"{file.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _lock_is_held(layout: ProjectLayout) -> bool:
    """Whether a live process holds the state directory's service lock (the lock dies with its holder)."""
    path = layout.state_dir / LOCK_FILE
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def running_service(layout: ProjectLayout) -> ServiceInfo | None:
    """The local AWS serving this state directory, if one is up and answering."""
    found = _running(layout)
    return found[0] if found else None


def _running(layout: ProjectLayout) -> tuple[ServiceInfo, dict[str, Any]] | None:
    """The serving local AWS and its health answer (one request: every command asks this)."""
    path = info_path(layout)
    try:
        info = ServiceInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if not _lock_is_held(layout):
        return None
    try:
        return info, control(info, "GET", "/_stepml/health", timeout=5)
    except LocalServiceError:
        return None


def control(info: ServiceInfo, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
    """Call one of the service's control routes; its JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{info.endpoint_url}{path}",
        data=data,
        method=method,
        headers={"X-Stepml-Token": info.token, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        raise LocalServiceError(f"the local AWS refused {path}: {error.read().decode(errors='replace')}") from error
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise LocalServiceError(f"the local AWS at {info.endpoint_url} did not answer {path}: {error}") from error


@contextlib.contextmanager
def _start_lock(layout: ProjectLayout) -> Iterator[None]:
    """Serialise starting the service among clients, so that two commands at once start one service."""
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    with open(layout.state_dir / START_LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_service(layout: ProjectLayout, progress: TextIO | None = None, prestart_workers: bool = True) -> ServiceInfo:
    """The running local AWS for this state directory, started in the background when there is none.

    ``prestart_workers=False`` (``stepml serve``, which runs no pipeline): a local AWS started here does not
    prestart the pipeline functions' workers until its first execution starts.

    A service that runs older project code (functions, training, the definition, the template) is told to
    reload it; one that runs an older stepml is restarted when it was started in the background.
    """
    found = _running(layout)
    if found is None:
        with _start_lock(layout):
            found = _running(layout)
            if found is None:
                info = _start_background(layout, progress, prestart_workers)
                found = info, control(info, "GET", "/_stepml/health")
    return _up_to_date(layout, *found, progress, prestart_workers)


def _up_to_date(
    layout: ProjectLayout,
    info: ServiceInfo,
    health: dict[str, Any],
    progress: TextIO | None,
    prestart_workers: bool = True,
) -> ServiceInfo:
    if health.get("service_code") != code_fingerprint(layout.root, SERVICE_CODE):
        if info.background and not health.get("running_executions"):
            if progress:
                print("stepml's code changed since the local AWS started: restarting it", file=progress, flush=True)
            stop_service(layout)
            with _start_lock(layout):
                return running_service(layout) or _start_background(layout, progress, prestart_workers)
        if progress:
            print(
                "note: stepml's code (stepml/, functions/shared/) changed since the local AWS started; "
                "`stepml local down` (or restarting `stepml local up`) takes it up",
                file=progress,
            )
        return info
    if health.get("project_code") != code_fingerprint(layout.root):
        answer = control(info, "POST", "/_stepml/reload", timeout=120)
        if progress and answer.get("reloaded"):
            print("Reloaded the project's code into the local AWS", file=progress, flush=True)
    return info


def _start_background(layout: ProjectLayout, progress: TextIO | None, prestart_workers: bool = True) -> ServiceInfo:
    log = log_path(layout)
    log.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        print(
            f"Starting the local AWS for {layout.state_dir} in the background "
            f"(`stepml local down` stops it; log: {log})",
            file=progress,
            flush=True,
        )
    env = {**os.environ, "STEPML_STATE_DIR": str(layout.state_dir), "STEPML_PROJECT_ROOT": str(layout.root)}
    env[PRESTART_ENV] = "1" if prestart_workers else "0"
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "stepml.cli", "local", "up", "--port", "0", "--background-child"],
            cwd=layout.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # it outlives this command and its terminal's Ctrl-C
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        info = running_service(layout)
        if info is not None:
            for note in control(info, "GET", "/_stepml/health").get("notes") or []:
                if progress:
                    print(f"note: {note}", file=progress, flush=True)
            return info
        if process.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise LocalServiceError(f"the local AWS did not start (exit {process.returncode}):\n" + "\n".join(tail))
        time.sleep(0.1)
    process.kill()
    raise LocalServiceError(f"the local AWS did not start within {START_TIMEOUT:.0f} s; see {log}")


def stop_service(layout: ProjectLayout, timeout: float = 120) -> ServiceInfo | None:
    """Stop the local AWS of this state directory (it saves nothing at exit: all is on disk already)."""
    info = running_service(layout)
    if info is None:
        return None
    with contextlib.suppress(LocalServiceError):
        control(info, "POST", "/_stepml/shutdown", timeout=10)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _lock_is_held(layout):
        time.sleep(0.1)
    if _lock_is_held(layout):
        with contextlib.suppress(OSError):
            os.kill(info.pid, signal.SIGKILL)
    return info


# --- the service process -------------------------------------------------------------------------------


class ControlApi:
    """The service's own routes under ``/_stepml/``, for its clients (token required)."""

    def __init__(self, aws: Any, stop: threading.Event, started_at: float) -> None:
        self.aws = aws
        self.stop = stop
        self.started_at = started_at
        self.service_code = code_fingerprint(aws.layout.root, SERVICE_CODE)
        self.project_code = code_fingerprint(aws.layout.root)

    def __call__(
        self, environ: dict[str, Any], start_response: Any, path: str, method: str, body: bytes
    ) -> Iterable[bytes]:
        from stepml.embedded.gateway import json_error, respond

        if environ.get("HTTP_X_STEPML_TOKEN") != self.aws.token:
            return json_error(start_response, "403 Forbidden", "AccessDeniedException", "the service token is wrong")
        request = json.loads(body or b"{}") if method == "POST" else {}
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        route = getattr(self, f"{method.lower()}_{path.removeprefix('/_stepml/').replace('-', '_')}", None)
        if route is None:
            return json_error(start_response, "404 Not Found", "UnknownOperationException", f"no route {method} {path}")
        try:
            answer = route(request, query)
        except Exception as error:  # answered to the client, which shows it, rather than lost in the log
            return json_error(start_response, "500 Internal Server Error", type(error).__name__, str(error))
        return respond(start_response, "200 OK", json.dumps(answer, default=str).encode(), "application/json")

    def get_health(self, _request: dict[str, Any], _query: dict[str, str]) -> dict[str, Any]:
        running = self.aws.running_executions()
        return {
            "pid": os.getpid(),
            "state_dir": str(self.aws.layout.state_dir),
            "started_at": self.started_at,
            "service_code": self.service_code,
            "project_code": self.project_code,
            "running_executions": running,
            "notes": self.aws.notes,
            "usage": self.aws.store.usage() if self.aws.store else {},
        }

    def post_faults(self, request: dict[str, Any], _query: dict[str, str]) -> dict[str, Any]:
        from stepml.embedded.faults import Throw

        execution = request.get("execution")
        for planned in request.get("throws") or []:
            fields = {k: planned[k] for k in ("error", "cause", "first_attempt", "last_attempt", "when")}
            self.aws.faults.add(planned["state"], Throw(**fields, execution=execution))
        return {"planned": len(request.get("throws") or [])}

    def get_invocations(self, _request: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        entries = list(self.aws.runner.log.entries)
        after = int(query.get("after", 0))
        return {
            "next": len(entries),
            "entries": [
                {"function": e.function_name, "ms": round(e.duration_ms, 2), "error": e.error_type}
                for e in entries[after:]
            ],
        }

    def post_reload(self, _request: dict[str, Any], _query: dict[str, str]) -> dict[str, Any]:
        fingerprint = code_fingerprint(self.aws.layout.root)
        if fingerprint == self.project_code:
            return {"reloaded": False}
        self.aws.reload()
        self.project_code = fingerprint
        return {"reloaded": True}

    def post_shutdown(self, _request: dict[str, Any], _query: dict[str, str]) -> dict[str, Any]:
        self.stop.set()
        return {"stopping": True}

    def post_alarms(self, _request: dict[str, Any], _query: dict[str, str]) -> dict[str, Any]:
        from stepml.embedded.alarms import render_alarm_table

        evaluations = self.aws.evaluate_alarms()
        return {"alarms": [asdict(e) for e in evaluations], "table": render_alarm_table(evaluations)}

    def post_collect_garbage(self, _request: dict[str, Any], _query: dict[str, str]) -> dict[str, Any]:
        from stepml.embedded.blob_keys import blobs_in_use

        # moto's noncurrent versions still read their blobs (the store keeps current versions only)
        return {"freed_bytes": self.aws.store.collect_garbage(blobs_in_use) if self.aws.store else 0}


def serve(layout: ProjectLayout, port: int, out: TextIO, background: bool = False) -> int:
    """Run the local AWS for ``layout``'s state directory until stopped; the body of ``stepml local up``."""
    from stepml.embedded.runtime import EmbeddedAws

    layout.state_dir.mkdir(parents=True, exist_ok=True)
    lock = open(layout.state_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held for the process's life)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise LocalServiceError(
            f"a local AWS already serves {layout.state_dir} (see `stepml local status`; `stepml local down` stops it)"
        ) from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    started_at = time.time()
    idle_timeout = float(os.environ.get("STEPML_LOCAL_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT)) if background else None
    aws = EmbeddedAws(layout, port=port or None, persist=True)
    try:
        aws.start()
        aws.publish_stack_outputs()
        aws.control_api = ControlApi(aws, stop, started_at)
        info = ServiceInfo(
            os.getpid(),
            aws.endpoint_url,
            aws.token,
            str(layout.state_dir),
            started_at,
            background,
            str(log_path(layout)),
        )
        atomic_write(info_path(layout), json.dumps(asdict(info)).encode())
        os.chmod(info_path(layout), 0o600)
        _banner(aws, out)
        _run_until_stopped(aws, stop, idle_timeout)
    finally:
        info_path(layout).unlink(missing_ok=True)
        aws.stop()
        for note in aws.notes[-1:] if aws.notes else ():
            print(note, file=out, flush=True)
        lock.close()
    return 0


def _run_until_stopped(aws: Any, stop: threading.Event, idle_timeout: float | None) -> None:
    """Keep the execution records current; stop when asked, idle too long, or the state directory is gone."""
    state_dir = aws.layout.state_dir
    last_alarm_check = time.monotonic()
    while not stop.wait(0.5):
        try:
            aws.sweep_executions()
        except LocalStateError as error:  # a full disk: said once per sweep, tried again at the next
            print(f"cannot store ended executions yet: {error}", flush=True)
        try:
            aws.ship_logs()
            # A state set by SetAlarmState is announced (event, notifications) at the next look.
            aws.alarm_changes()
            # CloudWatch evaluates alarms every minute; so does the local AWS.
            if time.monotonic() - last_alarm_check > 60:
                last_alarm_check = time.monotonic()
                aws.evaluate_alarms()
        except Exception as error:  # logs and alarms are for looking at; they never stop the service
            print(f"function logs or alarms: {type(error).__name__}: {error}", flush=True)
        try:
            for schedule, due in aws.scheduler.tick():
                print(f"schedule {schedule.name} fired (due {due.isoformat(timespec='seconds')})", flush=True)
        except Exception as error:  # a schedule that cannot start its target is said, and tried at its next time
            print(f"schedules: {type(error).__name__}: {error}", flush=True)
        if not state_dir.exists():
            print(f"{state_dir} was removed: stopping", flush=True)
            return
        idle = idle_timeout is not None and time.monotonic() - aws.last_request > idle_timeout
        if idle and not aws.running_executions():
            print(f"idle for {idle_timeout:.0f} s: stopping", flush=True)
            return


def _banner(aws: Any, out: TextIO) -> None:
    print(f"Local AWS listening on {aws.endpoint_url} (stack {aws.stack.stack_name})", file=out)
    print(f"  state          {aws.layout.state_dir}", file=out)
    print(f"  state machine  {aws.stack.state_machine_arn}", file=out)
    print(f"  data bucket    s3://{aws.stack.data_bucket}", file=out)
    print(f"  try: aws --endpoint-url {aws.endpoint_url} stepfunctions list-executions \\", file=out)
    print(f"         --state-machine-arn {aws.stack.state_machine_arn}", file=out)
    for schedule in aws.scheduler.schedules:
        print(f"  schedule       {schedule.name}: {schedule.expression} ({schedule.timezone})", file=out)
    for note in aws.notes:
        print(f"  note: {note}", file=out)
    print("Every change is on disk as it happens; Ctrl-C stops.", file=out, flush=True)
