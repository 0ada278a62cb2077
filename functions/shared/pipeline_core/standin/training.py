"""CreateTrainingJob of the stand-in: run ``train.py`` in its own process under SageMaker's script-mode
contract, then upload ``model.tar.gz`` and ``output.tar.gz`` where SageMaker would.

What the scikit-learn container does, reproduced on local targets:

* the channels' S3 prefixes are downloaded (streamed, for InputMode File and FastFile alike) to
  ``input/data/<channel>/`` of a directory laid out like ``/opt/ml``; ``input/config/hyperparameters.json``
  holds the request's hyperparameters;
* the ``sagemaker_submit_directory`` tarball is extracted to ``code/`` and ``sagemaker_program`` is run
  from there with this interpreter, hyperparameters as ``--name value`` arguments and in ``SM_HPS``, paths
  in ``SM_MODEL_DIR``, ``SM_OUTPUT_DATA_DIR``, ``SM_CHANNEL_<NAME>`` (as the SageMaker training toolkit);
* ``model/`` becomes ``<S3OutputPath>/<job>/output/model.tar.gz`` and ``output/data/`` becomes
  ``output.tar.gz`` beside it; a non-zero exit fails the job with ``output/failure`` as the reason.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline_core.aws.s3 import S3Uri
from pipeline_core.errors import ConfigurationError, DatasetNotFoundError, TrainingFailedError
from pipeline_core.observability import logger
from pipeline_core.standin import warm_interpreter
from pipeline_core.standin.archives import extract_tar_gz, files_under, tar_gz
from pipeline_core.standin.errors import ResourceInUse, ResourceNotFound, ValidationException
from pipeline_core.standin.metrics import compile_definitions, final_metric_values
from pipeline_core.standin.script_exit import signal_reason, wait_with_peak
from pipeline_core.standin.store import RecordStore, check_name, now_iso, same_request, validate_request
from pipeline_core.trainer_contract import empty_model_problem, entry_point_problem, predictions_problem

# How much of the script's stdout/stderr the job record keeps (the whole output goes to the log).
LOG_TAIL_BYTES = 4096
# A failure reason longer than this is cut to its end, where a traceback's last line is.
FAILURE_REASON_BYTES = 8192
_CURRENT_HOST = "algo-1"


def decode_hyperparameter(value: str) -> Any:
    """A hyperparameter as the training toolkit reads it: JSON if it parses, else the string itself
    (the SageMaker SDK JSON-encodes values, the ASL passes plain strings; both work)."""
    try:
        return json.loads(value)
    except ValueError:
        return value


# What a tuning job adds to each of its training jobs' hyperparameters; the training toolkit keeps it from
# the script, like the sagemaker_* ones (sagemaker_training.params.SAGEMAKER_HYPERPARAMETERS).
TUNING_OBJECTIVE_PARAMETER = "_tuning_objective_metric"


def _is_framework_parameter(name: str) -> bool:
    return name.startswith("sagemaker_") or name == TUNING_OBJECTIVE_PARAMETER


def split_hyperparameters(raw: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(user hyperparameters, framework parameters: ``sagemaker_*`` and ``_tuning_objective_metric``), decoded."""
    decoded = {name: decode_hyperparameter(value) for name, value in raw.items()}
    user = {name: value for name, value in decoded.items() if not _is_framework_parameter(name)}
    framework = {name: value for name, value in decoded.items() if _is_framework_parameter(name)}
    return user, framework


def _arg_value(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{key}={item}" for key, item in sorted(value.items()))
    return str(value)


def to_cmd_args(hyperparameters: Mapping[str, Any]) -> list[str]:
    """``--name value`` per hyperparameter in name order (``-n`` for one-letter names), as the toolkit."""
    args: list[str] = []
    for name in sorted(hyperparameters):
        args += [f"--{name}" if len(name) > 1 else f"-{name}", _arg_value(hyperparameters[name])]
    return args


def _env_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))


def file_tail(path: Path, limit: int) -> str:
    """The last ``limit`` bytes of ``path`` as text (undecodable bytes replaced)."""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - limit))
        return handle.read().decode("utf-8", errors="replace")


class _Layout:
    """A directory laid out like the container's ``/opt/ml``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.input = root / "input"
        self.config = self.input / "config"
        self.data = self.input / "data"
        self.model = root / "model"
        self.output = root / "output"
        self.output_data = self.output / "data"
        self.code = root / "code"
        self.logs = root / "logs"  # the process's stdout/stderr, outside what the script sees
        for directory in (self.config, self.data, self.model, self.output_data, self.code, self.logs):
            directory.mkdir(parents=True, exist_ok=True)

    def channel(self, name: str) -> Path:
        return self.data / name


def script_environment(
    layout: _Layout,
    channels: list[str],
    hyperparameters: Mapping[str, Any],
    framework: Mapping[str, Any],
    input_data_config: Any,
    resource_config: Any,
    base: Mapping[str, str],
) -> dict[str, str]:
    """The environment the training toolkit gives the script (``SM_*``), on top of ``base``."""
    program = str(framework["sagemaker_program"])
    env = dict(base)
    env.update(
        {
            "SM_MODEL_DIR": str(layout.model),
            "SM_OUTPUT_DATA_DIR": str(layout.output_data),
            "SM_OUTPUT_DIR": str(layout.output),
            "SM_INPUT_DIR": str(layout.input),
            "SM_INPUT_CONFIG_DIR": str(layout.config),
            "SM_CHANNELS": json.dumps(sorted(channels)),
            "SM_HPS": json.dumps(dict(hyperparameters), sort_keys=True),
            "SM_USER_ARGS": json.dumps(to_cmd_args(hyperparameters)),
            "SM_INPUT_DATA_CONFIG": json.dumps(input_data_config, sort_keys=True),
            "SM_RESOURCE_CONFIG": json.dumps(resource_config, sort_keys=True),
            "SM_CURRENT_HOST": _CURRENT_HOST,
            "SM_HOSTS": json.dumps([_CURRENT_HOST]),
            "SM_NUM_GPUS": "0",
            "SM_NUM_CPUS": str(os.cpu_count() or 1),
            "SM_MODULE_DIR": str(framework.get("sagemaker_submit_directory", "")),
            "SM_USER_ENTRY_POINT": program,
            "SM_MODULE_NAME": program.removesuffix(".py"),
            "SM_LOG_LEVEL": str(framework.get("sagemaker_container_log_level", 20)),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    # A SageMaker instance is the job's alone; the stand-in's job shares the machine with the local AWS, its
    # workers and whatever else runs there. OpenMP's default wait spins: a HistGradientBoosting fit (1M rows,
    # 2 threads) beside two busy processes took 1.6x the wall of the same fit with passive waits, which on an
    # idle machine cost nothing (docs/data-scale.md). So passive, unless the environment chose a policy.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for name in channels:
        env[f"SM_CHANNEL_{name.upper()}"] = str(layout.channel(name))
    for name, value in hyperparameters.items():
        env[f"SM_HP_{name.upper()}"] = _env_value(value)
    return env


def training_interpreter(env: Mapping[str, str]) -> str:
    """The Python that runs the training script: ``STANDIN_TRAINING_PYTHON`` if set, else this one.

    The SageMaker image has its own Python and library versions (the template's default, scikit-learn
    1.2-1, runs Python 3.9 with scikit-learn 1.2.1); pointing this at an interpreter with those versions
    shows locally whether train.py runs there (see tests/integration/test_sagemaker_container.py).
    """
    chosen = env.get("STANDIN_TRAINING_PYTHON") or sys.executable
    if not os.access(chosen, os.X_OK):
        raise ConfigurationError(f"STANDIN_TRAINING_PYTHON={chosen!r} is not an executable Python interpreter")
    return chosen


def _run_script(
    command: list[str],
    cwd: Path,
    env: dict[str, str],
    layout: _Layout,
    time_limit: float,
    should_stop: Callable[[], bool] | None = None,
    prepare_next: bool = True,
) -> tuple[int | None, int | None, Path, Path]:
    """Run ``command``; the exit status (None if it ran out of time, or ``should_stop`` said so, and was
    killed) and the process's peak resident memory in bytes (None where unknown)."""
    stdout_path, stderr_path = layout.logs / "stdout.log", layout.logs / "stderr.log"
    posix = os.name == "posix"
    warm = warm_interpreter.enabled(env)
    process = warm_interpreter.interpreters.start_job(command, cwd, env, stdout_path, stderr_path) if warm else None
    if process is None:
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            # Its own session, so a timeout kills whatever the script started too (joblib workers).
            process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=posix)
    try:
        status, peak = wait_with_peak(process, time_limit, should_stop)
        return status, peak, stdout_path, stderr_path
    except subprocess.TimeoutExpired:
        if posix:
            os.killpg(process.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows has no process groups to kill
            process.kill()
        process.wait()
        return None, None, stdout_path, stderr_path
    finally:
        if warm and prepare_next:  # the next job's interpreter imports while the pipeline goes on
            warm_interpreter.interpreters.prepare(command[0], os.environ)


def _failure_reason(
    layout: _Layout,
    stderr_tail: str,
    stdout_tail: str,
    program: str,
    status: int,
    peak_bytes: int | None = None,
    instance_type: str | None = None,
) -> str:
    """What the script said went wrong: ``output/failure`` if written, else the end of its stderr; for a
    process a signal ended, that signal first (with its peak memory and the job's instance type)."""
    failure = layout.output / "failure"
    said = file_tail(failure, FAILURE_REASON_BYTES).strip() if failure.is_file() and failure.stat().st_size else ""
    if status < 0:
        reason = signal_reason(program, -status, peak_bytes, instance_type)
        if said:
            return f"{reason}; output/failure said: {said}"
        if stderr_tail.strip():
            return f"{reason}; its stderr ended: {stderr_tail.strip()}"
        return f"{reason}; its output ended: {stdout_tail.strip()}" if stdout_tail.strip() else reason
    if said:
        return said
    if stderr_tail.strip():
        return stderr_tail.strip()
    return f"{program} exited with status {status} without an error message; its output ended: {stdout_tail}"


# File copies a channel's objects to the volume before the script starts; FastFile streams them on demand
# through a file system. Either way the script sees files under input/data/<channel>/, which is what the
# stand-in gives both: it streams each object to that directory (never whole in memory). That one copy stays:
# the stand-in reaches objects through the S3 API as SageMaker does (the embedded AWS's blob files under
# state/blobs/ are that service's own layout, packed at offsets, and may be on another machine's target), so
# it cannot link them; the job's directory is deleted when the job ends.
CHANNEL_INPUT_MODES = ("File", "FastFile")


def _download_channels(store: RecordStore, request: Mapping[str, Any], layout: _Layout) -> list[str]:
    channels = []
    for channel in request.get("InputDataConfig", []):
        name = channel["ChannelName"]
        uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
        files = store.objects.download_prefix(uri, layout.channel(name))
        if not files:
            raise TrainingFailedError(f"ClientError: no S3 objects found under {uri} for channel {name!r}")
        channels.append(name)
    return channels


def _check_channels(request: Mapping[str, Any]) -> None:
    for channel in request.get("InputDataConfig", []):
        source = channel.get("DataSource", {}).get("S3DataSource")
        if source is None:
            raise ValidationException(f"channel {channel['ChannelName']!r}: the stand-in reads only S3 sources")
        if source.get("S3DataType", "S3Prefix") != "S3Prefix":
            raise ValidationException(
                f"channel {channel['ChannelName']!r}: the stand-in supports S3DataType S3Prefix, "
                f"not {source['S3DataType']}"
            )
        mode = channel.get("InputMode", request["AlgorithmSpecification"].get("TrainingInputMode"))
        if mode not in CHANNEL_INPUT_MODES:
            raise ValidationException(
                f"channel {channel['ChannelName']!r}: the stand-in supports InputMode "
                f"{' or '.join(CHANNEL_INPUT_MODES)}, not {mode} (Pipe hands the script a FIFO per epoch, which "
                "train.py does not read)"
            )


def _final_metric_data(request: Mapping[str, Any], logs: Iterable[Path]) -> dict[str, Any]:
    """``{"FinalMetricDataList": [...]}`` from the whole of the script's output, when the request defines
    metrics (SageMaker reads them from the job's log); else nothing."""
    definitions = request["AlgorithmSpecification"].get("MetricDefinitions") or []
    if not definitions:
        return {}
    lines: list[str] = []
    for path in logs:
        lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
    values = final_metric_values(definitions, lines)
    at = now_iso()
    return {"FinalMetricDataList": [{"MetricName": n, "Value": v, "Timestamp": at} for n, v in values.items()]}


def artifact_uris(request: Mapping[str, Any]) -> tuple[str, str]:
    """Where SageMaker puts a job's model.tar.gz and output.tar.gz."""
    output = S3Uri.parse(request["OutputDataConfig"]["S3OutputPath"]).child(request["TrainingJobName"], "output")
    return str(output.child("model.tar.gz")), str(output.child("output.tar.gz"))


@dataclass
class PreparedJob:
    """A CreateTrainingJob request checked and recorded: either already ``completed`` (its record is the
    answer), or ``record`` holds the job as InProgress, ready for :func:`run_job`."""

    record: dict[str, Any]
    completed: bool


def prepare_job(store: RecordStore, request: dict[str, Any], existing: dict[str, Any] | None = None) -> PreparedJob:
    """Check ``request`` as CreateTrainingJob does and record the job as InProgress.

    A Completed job with the same name and request whose model artifact exists is returned as it is: a retry
    of the task must not train again. A job of that name from a different request is ResourceInUse; one
    that failed or was cut off is recorded anew, to run again under the same name. ``existing`` is the
    job's record when the caller has just read it.
    """
    validate_request("CreateTrainingJob", request)
    name = check_name("training-jobs", request["TrainingJobName"])
    _check_channels(request)
    compile_definitions(request["AlgorithmSpecification"].get("MetricDefinitions") or [])
    _user_hps, framework = split_hyperparameters(request.get("HyperParameters", {}))
    for required in ("sagemaker_program", "sagemaker_submit_directory"):
        if not framework.get(required):
            raise ValidationException(
                f"training job {name}: HyperParameters has no {required}; the stand-in runs script mode only"
            )
    model_uri, _output_uri = artifact_uris(request)

    existing = existing if existing is not None else store.get("training-jobs", name)
    if existing is not None:
        if not same_request(existing, request):
            raise ResourceInUse(f"Training job names must be unique within an AWS account and region: {name}")
        if existing["TrainingJobStatus"] == "Completed" and store.objects.exists(model_uri):
            logger.info("training job already completed; returning it", extra={"training_job": name})
            return PreparedJob(existing, completed=True)

    created = existing["CreationTime"] if existing else now_iso()
    record: dict[str, Any] = {
        **{key: value for key, value in request.items() if key != "Tags"},
        "TrainingJobArn": store.arn("training-jobs", name),
        "TrainingJobStatus": "InProgress",
        "SecondaryStatus": "Starting",
        "CreationTime": created,
        "LastModifiedTime": now_iso(),  # a job run again is modified now (training_runner reads it as a sign of life)
    }
    store.put("training-jobs", name, record)
    return PreparedJob(record, completed=False)


def create_training_job(
    store: RecordStore,
    request: dict[str, Any],
    time_budget_seconds: float | None = None,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """CreateTrainingJob run to the end in this process: returns DescribeTrainingJob with status
    ``Completed`` (what the ``createTrainingJob.sync`` integration returns), or raises TrainingFailedError
    with the script's reason.

    ``time_budget_seconds`` caps the run below ``StoppingCondition.MaxRuntimeInSeconds`` (a tuning job passes
    what is left of its own time). The pipeline's Train state goes through ``training_runner``, whose job runs
    in a process of its own for as long as MaxRuntimeInSeconds allows.
    """
    prepared = prepare_job(store, request)
    if prepared.completed:
        return prepared.record
    return run_job(store, prepared.record, time_budget_seconds=time_budget_seconds, base_env=base_env)


def run_job(
    store: RecordStore,
    record: dict[str, Any],
    time_budget_seconds: float | None = None,
    base_env: Mapping[str, str] | None = None,
    should_stop: Callable[[], bool] | None = None,
    prepare_next: bool = True,
) -> dict[str, Any]:
    """Run the InProgress job ``record`` (from :func:`prepare_job`): download, train, upload, and record how it
    ended. Returns the Completed record or raises TrainingFailedError (the record says the same).

    ``should_stop`` is asked while the script runs; True stops it as running out of time would.
    ``prepare_next`` has a warm interpreter importing for the next job once this one's script ends.
    """
    request = record
    name = str(record["TrainingJobName"])
    user_hps, framework = split_hyperparameters(request.get("HyperParameters", {}))
    model_uri, output_uri = artifact_uris(request)
    max_runtime = float(request["StoppingCondition"].get("MaxRuntimeInSeconds", 86400))
    time_limit = max_runtime if time_budget_seconds is None else min(max_runtime, time_budget_seconds)
    started_at, started = now_iso(), time.monotonic()
    record.update(TrainingStartTime=started_at, SecondaryStatus="Downloading", LastModifiedTime=started_at)

    def finish(status: str, secondary: str, **fields: Any) -> dict[str, Any]:
        ended = now_iso()
        seconds = max(1, round(time.monotonic() - started))
        record.update(
            TrainingJobStatus=status,
            SecondaryStatus=secondary,
            TrainingEndTime=ended,
            LastModifiedTime=ended,
            TrainingTimeInSeconds=seconds,
            BillableTimeInSeconds=seconds,
            **fields,
        )
        return store.put("training-jobs", name, record)

    with tempfile.TemporaryDirectory(prefix=f"standin-{name}-") as temp:
        layout = _Layout(Path(temp))
        try:
            try:
                source = store.objects.read_bytes(str(framework["sagemaker_submit_directory"]))
            except DatasetNotFoundError as error:
                raise TrainingFailedError(
                    f"sagemaker_submit_directory {framework['sagemaker_submit_directory']} does not exist"
                ) from error
            extract_tar_gz(source, layout.code, f"sagemaker_submit_directory of {name}")
            program = str(framework["sagemaker_program"])
            missing_program = entry_point_problem(layout.code, program)
            if missing_program:
                raise TrainingFailedError(
                    f"{missing_program}: sagemaker_program {program} is not in "
                    f"{framework['sagemaker_submit_directory']}"
                )
            channels = _download_channels(store, request, layout)
        except TrainingFailedError as error:
            finish("Failed", "Failed", FailureReason=str(error))
            raise

        input_data_config = {
            c["ChannelName"]: {k: v for k, v in c.items() if k not in {"ChannelName", "DataSource"}}
            for c in request.get("InputDataConfig", [])
        }
        resource_config = {"current_host": _CURRENT_HOST, "hosts": [_CURRENT_HOST]}
        (layout.config / "hyperparameters.json").write_text(json.dumps(request.get("HyperParameters", {})))
        (layout.config / "inputdataconfig.json").write_text(json.dumps(input_data_config))
        (layout.config / "resourceconfig.json").write_text(json.dumps(resource_config))
        base = os.environ if base_env is None else base_env
        env = script_environment(layout, channels, user_hps, framework, input_data_config, resource_config, base)
        command = [training_interpreter(base), program, *to_cmd_args(user_hps)]
        logger.info("training started", extra={"training_job": name, "command": command})
        record.update(SecondaryStatus="Training", LastModifiedTime=now_iso())
        elapsed_before = time.monotonic() - started
        status, peak_bytes, stdout_path, stderr_path = _run_script(
            command, layout.code, env, layout, max(1.0, time_limit - elapsed_before), should_stop, prepare_next
        )
        logs = {"stdout": file_tail(stdout_path, LOG_TAIL_BYTES), "stderr": file_tail(stderr_path, LOG_TAIL_BYTES)}
        final_metrics = _final_metric_data(request, (stdout_path, stderr_path))
        logger.info("training process output", extra={"training_job": name, "exit_status": status, **logs})

        if status is None and should_stop is not None and should_stop():
            reason = f"training job {name} was stopped: {program} was killed because the local AWS stopped answering"
            finish("Stopped", "Stopped", FailureReason=reason, StandInLogs=logs)
            raise TrainingFailedError(reason)
        if status is None:
            limit = (
                f"StoppingCondition.MaxRuntimeInSeconds={max_runtime:g}"
                if time_limit == max_runtime
                else f"the {time_limit:g} s left to the stand-in's Lambda"
            )
            reason = f"training job {name} ran out of time: {program} was stopped after {time_limit:g} s ({limit})"
            finish("Stopped", "MaxRuntimeExceeded", FailureReason=reason, StandInLogs=logs)
            raise TrainingFailedError(reason)
        if status != 0:
            instance_type = request["ResourceConfig"].get("InstanceType")
            reason = _failure_reason(layout, logs["stderr"], logs["stdout"], program, status, peak_bytes, instance_type)
            finish("Failed", "Failed", FailureReason=reason, StandInLogs=logs)
            raise TrainingFailedError(reason)
        # the contract's outputs (docs/bring-your-model.md); SageMaker itself would upload whatever is there
        # and leave Evaluate or the endpoint to fail later, less clearly
        reason = (
            empty_model_problem(program)
            if not files_under(layout.model)
            else predictions_problem(layout.output_data, program)
        )
        if reason:
            finish("Failed", "Failed", FailureReason=reason, StandInLogs=logs)
            raise TrainingFailedError(reason)

        record.update(SecondaryStatus="Uploading", LastModifiedTime=now_iso())
        store.objects.write_bytes(model_uri, tar_gz(files_under(layout.model)), "application/x-gzip")
        store.objects.write_bytes(output_uri, tar_gz(files_under(layout.output_data)), "application/x-gzip")
    described = finish(
        "Completed", "Completed", ModelArtifacts={"S3ModelArtifacts": model_uri}, StandInLogs=logs, **final_metrics
    )
    logger.info("training completed", extra={"training_job": name, "model_artifacts": model_uri})
    return described


def describe_training_job(store: RecordStore, request: dict[str, Any]) -> dict[str, Any]:
    """DescribeTrainingJob; a missing job is SageMaker's ResourceNotFound."""
    validate_request("DescribeTrainingJob", request)
    record = store.get("training-jobs", request["TrainingJobName"])
    if record is None:
        raise ResourceNotFound(f"Requested resource not found: training job {request['TrainingJobName']}")
    return record
