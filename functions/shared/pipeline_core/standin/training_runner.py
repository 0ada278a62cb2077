"""The pipeline's training jobs on local targets: each runs in a process of its own, outside the Lambda
invocation that created it, for as long as its ``StoppingCondition.MaxRuntimeInSeconds`` allows.

On AWS the Train state calls ``createTrainingJob.sync``: SageMaker runs the job on its own instance and Step
Functions polls it, for up to the state's TimeoutSeconds. On local targets the state calls the stand-in's
CreateTrainingJob function, a Lambda, which no invocation can keep for more than 900 s. So the function:

1. checks and records the job (``training.prepare_job``) and hands it to a *runner*, a process in its own
   session that downloads the channels, runs the script, uploads the artifacts and writes the job's record,
   whatever becomes of the invocation (or of the worker it ran in);
2. waits for the record to say Completed, Failed or Stopped while its invocation lasts, and answers as
   ``.sync`` would: the described job, or TrainingFailedError with the job's reason;
3. if the job still runs when the invocation's time is nearly out, raises :class:`TrainingJobInProgress`.
   The Train state retries that error (an error AWS never raises, so the retrier is inert there); the next
   attempt finds the job InProgress under its name and waits again, without starting it twice.

The runner writes a heartbeat object every :data:`HEARTBEAT_SECONDS`; an InProgress job whose heartbeat is
older than :data:`STALE_AFTER_SECONDS` lost its runner (the machine restarted, the process was killed) and is
run again by the next CreateTrainingJob with its name, or failed by a waiter. A runner whose heartbeat writes
fail for :data:`STALE_AFTER_SECONDS` (the local AWS is gone) stops its script and exits.

A runner is kept warm like the training interpreter (``warm_interpreter``): one waits per worker with the
stand-in's modules imported and its own warm training interpreter beside it, so a small job starts at once.

Where this differs from AWS: stopping the execution, or the Train state timing out, does not stop the job
(``.sync`` would call StopTrainingJob); it ends at MaxRuntimeInSeconds. Tuning jobs still run their training
jobs inside the one invocation of CreateHyperParameterTuningJob (``tuning.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pipeline_core
from pipeline_core.aws.clients import client
from pipeline_core.errors import DatasetNotFoundError, TrainingFailedError
from pipeline_core.observability import logger
from pipeline_core.standin import training, warm_interpreter
from pipeline_core.standin.errors import TrainingJobInProgress
from pipeline_core.standin.store import PREFIX, RecordStore, now_iso

# How often a runner says it is alive, and after how long without a word it is taken for gone. The waiter
# and the runner use the same figure: a runner that cannot write for that long stops its script.
HEARTBEAT_SECONDS = 15.0
STALE_AFTER_SECONDS = 90.0
# How often a waiter that did not start the job reads its record (one small S3 GET).
POLL_SECONDS = 2.0
# How much of a runner's own log a failure reason keeps when the runner died without writing one.
RUNNER_LOG_TAIL_BYTES = 4096

_ENDED = frozenset({"Completed", "Failed", "Stopped"})
# What a runner writes on its output once the job's final record is written.
_DONE = b"done\n"


# The runner's entry: the shared layer goes on sys.path here, not in PYTHONPATH, which the training interpreter
# it keeps warm would inherit (a script must not import pipeline_core locally when it cannot on SageMaker).
_RUNNER_MAIN = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from pipeline_core.standin.training_runner import main; sys.exit(main(sys.argv[1:]))"
)


def _runner_boot(python: str) -> list[str]:
    # this interpreter runs the job (it has boto3 and pipeline_core); ``python`` runs the training script
    shared = str(Path(pipeline_core.__file__).resolve().parent.parent)
    return [sys.executable, "-c", _RUNNER_MAIN, shared, python]


runners = warm_interpreter.WarmInterpreters(boot=_runner_boot)


def _heartbeat_uri(store: RecordStore, name: str) -> str:
    return f"s3://{store.bucket}/{PREFIX}/heartbeats/training-jobs/{name}.json"


def _heartbeat_age(store: RecordStore, name: str) -> float | None:
    """Seconds since the job's runner last said it was alive; None if it never did."""
    try:
        beat = json.loads(store.objects.read_bytes(_heartbeat_uri(store, name)))
    except DatasetNotFoundError:
        return None
    return (datetime.now(UTC) - datetime.fromisoformat(beat["time"])).total_seconds()


def _is_alive(store: RecordStore, record: Mapping[str, Any]) -> bool:
    """Whether an InProgress ``record``'s runner still beats (a job just recorded has had no time to)."""
    age = _heartbeat_age(store, str(record["TrainingJobName"]))
    if age is None:
        created = datetime.fromisoformat(str(record["LastModifiedTime"]))
        age = (datetime.now(UTC) - created).total_seconds()
    return age < STALE_AFTER_SECONDS


def start_training_job(
    store: RecordStore,
    request: dict[str, Any],
    time_budget_seconds: float | None = None,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """CreateTrainingJob as the Train state's ``.sync`` call: start the job in a runner (or find it running),
    then wait up to ``time_budget_seconds`` (None: until it ends). Returns the Completed job's description;
    raises TrainingFailedError with a failed or stopped job's reason, or TrainingJobInProgress."""
    deadline = None if time_budget_seconds is None else time.monotonic() + time_budget_seconds
    name = str(request.get("TrainingJobName", ""))
    existing = store.get("training-jobs", name) if name else None
    process: subprocess.Popen[bytes] | None = None
    running = (
        existing is not None
        and existing.get("TrainingJobStatus") == "InProgress"
        and training.same_request(existing, request)
        and _is_alive(store, existing)
    )
    if running:
        logger.info("training job already running; waiting for it", extra={"training_job": name})
    else:
        prepared = training.prepare_job(store, request, existing)
        if prepared.completed:
            return prepared.record
        process = _start_runner(store, prepared.record, os.environ if base_env is None else base_env)
    try:
        return _wait(store, name, process, deadline)
    finally:
        env = os.environ if base_env is None else base_env
        if warm_interpreter.enabled(env):
            # the next job's runner imports now, not while this job trained: on 2 cores its imports (and its
            # training interpreter's) slowed a small job by a third
            runners.prepare(training.training_interpreter(env), dict(os.environ))


def _start_runner(store: RecordStore, record: dict[str, Any], base_env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    name = str(record["TrainingJobName"])
    python = training.training_interpreter(base_env)
    log = _runner_log(name)
    job = {
        "bucket": store.bucket,
        "region": store.region,
        "account": store.account,
        "name": name,
        "env": dict(base_env),
        "log": str(log),
        "heartbeat_seconds": HEARTBEAT_SECONDS,
        "stale_after_seconds": STALE_AFTER_SECONDS,
    }
    env = dict(os.environ)
    process = runners.hand(python, job) if warm_interpreter.enabled(base_env) else None
    if process is None:
        try:
            process = subprocess.Popen(
                [*_runner_boot(python), "--cold"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=os.name == "posix",
            )
        except OSError as error:
            reason = f"the stand-in could not start the process of training job {name}: {error}"
            _record_failure(store, name, reason)
            raise TrainingFailedError(reason) from error
        assert process.stdin is not None
        process.stdin.write(json.dumps(job).encode() + b"\n")
        process.stdin.close()
    logger.info("training job handed to its runner", extra={"training_job": name, "runner_pid": process.pid})
    return process


def _record_failure(store: RecordStore, name: str, reason: str) -> None:
    record = store.get("training-jobs", name)
    if record is not None and record.get("TrainingJobStatus") == "InProgress":
        ended = now_iso()
        record.update(
            TrainingJobStatus="Failed", SecondaryStatus="Failed", FailureReason=reason, LastModifiedTime=ended
        )
        record.setdefault("TrainingEndTime", ended)
        store.put("training-jobs", name, record)


def _runner_log(name: str) -> Path:
    """Where a runner writes its own output (the job's script writes to the job's directory)."""
    return Path(tempfile.gettempdir()) / f"stepml-training-runner-{name}.log"


def _runner_log_tail(name: str) -> str:
    log = _runner_log(name)
    return training.file_tail(log, RUNNER_LOG_TAIL_BYTES).strip() if log.is_file() else ""


def _wait(
    store: RecordStore, name: str, process: subprocess.Popen[bytes] | None, deadline: float | None
) -> dict[str, Any]:
    """Wait for job ``name`` to end; its runner is ``process`` when this invocation started it."""
    while True:
        if process is not None:
            _wait_for_word(process, _left(deadline, 3600.0))
        record = store.get("training-jobs", name)
        if record is None:  # deleted under us: nothing more to wait for
            raise TrainingFailedError(f"training job {name} disappeared while the stand-in waited for it")
        status = record["TrainingJobStatus"]
        if status == "Completed":
            return record
        if status in _ENDED:
            raise TrainingFailedError(str(record.get("FailureReason") or f"training job {name} ended {status}"))
        if process is not None and _exited(process):
            reason = f"the stand-in's process for training job {name} exited with status {process.returncode} "
            reason += f"before the job ended; its log ended: {_runner_log_tail(name)}"
            _record_failure(store, name, reason)
            raise TrainingFailedError(reason)
        if process is None and not _is_alive(store, record):
            reason = (
                f"training job {name} lost its process: no heartbeat for {STALE_AFTER_SECONDS:g} s (the machine "
                "or the local AWS restarted, or the process was killed)"
            )
            _record_failure(store, name, reason)
            raise TrainingFailedError(reason)
        if deadline is not None and time.monotonic() >= deadline:
            raise TrainingJobInProgress(
                f"training job {name} is still {record.get('SecondaryStatus', 'InProgress')}; the invocation's "
                "time is nearly out, so the Train state's retry waits for it again"
            )
        if process is None:
            time.sleep(min(POLL_SECONDS, _left(deadline, POLL_SECONDS)))


def _wait_for_word(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Until the runner says the job's record is written (its "done" line, :data:`_DONE`), closes its output
    (it exited), or ``timeout`` passes. Its clean-up and exit come after the word, unwaited for."""
    pipe = process.stdout
    if pipe is None or pipe.closed:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
        return
    readable, _, _ = select.select([pipe], [], [], timeout)
    if readable:
        line = pipe.readline()  # a cold runner's "ready" first (a warm one's was read before it got the job)
        if not line:  # it exited without the word
            pipe.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


def _exited(process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        return True
    if process.stdout is not None and process.stdout.closed:  # its output ended: give it a moment to be reaped
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    return process.poll() is not None


def _left(deadline: float | None, default: float) -> float:
    return default if deadline is None else max(0.0, deadline - time.monotonic())


class _Heartbeat:
    """Writes the job's heartbeat object every ``every`` s from a thread; ``lost`` once the writes have failed
    for ``stale_after`` s (nobody is left to read the job's outcome)."""

    def __init__(self, store: RecordStore, name: str, every: float, stale_after: float) -> None:
        self._store, self._uri = store, _heartbeat_uri(store, name)
        self._every, self._stale_after = every, stale_after
        self._lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{name}", daemon=True)

    def lost(self) -> bool:
        return self._lost.is_set()

    def _beat(self) -> None:
        body = json.dumps({"time": now_iso(), "pid": os.getpid()}).encode()
        self._store.objects.write_bytes(self._uri, body, "application/json")

    def _run(self) -> None:  # the first beat at once: a waiter reads the record's time until then
        failing_since: float | None = None
        while not self._done.is_set():
            try:
                self._beat()
                failing_since = None
            except Exception as error:  # any failure to reach the store counts as silence
                failing_since = failing_since or time.monotonic()
                logger.warning("heartbeat not written", extra={"error": str(error)})
                if time.monotonic() - failing_since >= self._stale_after:
                    self._lost.set()
                    return
            self._done.wait(self._every)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()
        with contextlib.suppress(Exception):  # a heartbeat left behind is read only while the job is InProgress
            self._store.objects.delete(self._uri)


def run(job: Mapping[str, Any], done: Callable[[], None] = lambda: None) -> int:
    """Run the recorded job ``job["name"]`` to its end (in the runner process); the process's exit status.
    ``done`` is called once the job's final record is written, before the runner cleans up."""
    store = RecordStore(str(job["bucket"]), region=str(job["region"]), account=str(job["account"]))
    name = str(job["name"])
    record = store.get("training-jobs", name)
    if record is None or record.get("TrainingJobStatus") != "InProgress":
        logger.error("no InProgress training job to run", extra={"training_job": name})
        return 1
    try:
        every = float(job.get("heartbeat_seconds", HEARTBEAT_SECONDS))
        stale_after = float(job.get("stale_after_seconds", STALE_AFTER_SECONDS))
        with _Heartbeat(store, name, every, stale_after) as heartbeat:
            with contextlib.suppress(TrainingFailedError):  # the job's record says how it failed
                training.run_job(
                    store, record, base_env=dict(job["env"]), should_stop=heartbeat.lost, prepare_next=False
                )
            done()
    except Exception as error:
        _record_failure(store, name, f"the stand-in's process for training job {name} failed: {error!r}")
        raise
    return 0


def main(argv: list[str]) -> int:
    """Say ready with the imports done, then run the one job read from stdin (its output to the job's log
    file). A runner kept warm has a training interpreter for ``argv[0]`` warming beside it; a cold one
    (``--cold``, the job already waiting) starts the script cold rather than import twice at once."""
    python, cold = argv[0], "--cold" in argv[1:]
    if not cold:
        warm_interpreter.interpreters.prepare(python, os.environ)
    client("s3")  # built (service model loaded) before the job comes: the record store's client
    with contextlib.suppress(OSError):  # a waiter that gave up before this runner was ready closed the pipe
        sys.stdout.write("ready\n")
        sys.stdout.flush()
    line = sys.stdin.readline()
    if not line:  # the worker that kept this runner warm is gone
        warm_interpreter.interpreters.close()
        return 0
    job = json.loads(line)
    word = os.dup(1)  # the pipe to the worker that waits, kept for the one word (not inherited by the script)
    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for fd in (1, 2):  # the worker's pipe may close while the job runs: prints go to the log
        os.dup2(log, fd)
    os.close(log)

    def done() -> None:
        with contextlib.suppress(OSError):  # the waiter is gone: the record says it all
            os.write(word, _DONE)

    try:
        status = run(job, done)
    finally:
        warm_interpreter.interpreters.close()
    if status == 0:  # the job's record holds what its log said; a runner that failed keeps its log for the waiter
        Path(job["log"]).unlink(missing_ok=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
