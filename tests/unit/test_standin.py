"""The SageMaker stand-in: CreateTrainingJob under the script-mode contract, the endpoint actions, the
endpoint runtime and the Lambda handler, on a moto account (the ``aws`` fixture)."""

from __future__ import annotations

import functools
import io
import json
import re
import sys
import tarfile
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from pipeline_core.errors import ConfigurationError, TrainingFailedError
from pipeline_core.standin import endpoints
from pipeline_core.standin.archives import package_training_source
from pipeline_core.standin.errors import ModelError, ResourceInUse, ValidationException
from pipeline_core.standin.runtime import ModelServer, invoke_endpoint, reset_model_cache
from pipeline_core.standin.store import RecordStore
from pipeline_core.standin.training import create_training_job
from sklearn.datasets import load_iris

from tests.conftest import FakeAws

ROOT = Path(__file__).resolve().parents[2]
ASL = json.loads((ROOT / "statemachine" / "pipeline.asl.json").read_text())
SOURCE_KEY = "code/training-source.tar.gz"
SUBSTITUTIONS = {
    "TrainingImageUri": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
    "InferenceImageUri": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
    "SageMakerRoleArn": "arn:aws:iam::123456789012:role/stepml-sagemaker",
    "TrainingInstanceType": "ml.m5.large",
    "InferenceInstanceType": "ml.t2.medium",
}
IRIS_HPS = {"target": "species", "problem_type": "multiclass_classification", "seed": "42", "max_iter": "50"}


# --- the ASL's own Parameters, resolved against a state ---------------------------------------------


def _path(state: dict[str, Any], path: str) -> Any:
    value: Any = state
    for part in path.removeprefix("$.").split("."):
        value = value[part]
    return value


def _resolve(template: Any, state: dict[str, Any]) -> Any:
    """Enough of JSONPath Parameters for the SageMaker states: paths, JsonMerge and ${placeholders}."""
    if isinstance(template, list):
        return [_resolve(item, state) for item in template]
    if isinstance(template, str):
        return re.sub(r"\$\{(\w+)\}", lambda m: SUBSTITUTIONS[m.group(1)], template)
    if not isinstance(template, dict):
        return template
    resolved: dict[str, Any] = {}
    for key, value in template.items():
        if not key.endswith(".$"):
            resolved[key] = _resolve(value, state)
            continue
        merge = re.fullmatch(r"States\.JsonMerge\((\$[\w.]+), (\$[\w.]+), false\)", value)
        if merge:
            resolved[key[:-2]] = {**_path(state, merge.group(1)), **_path(state, merge.group(2))}
        else:
            resolved[key[:-2]] = _path(state, value)
    return resolved


def asl_request(state_name: str, state: dict[str, Any]) -> dict[str, Any]:
    """The request the state machine's ``state_name`` sends, for ``state``."""
    request: dict[str, Any] = _resolve(ASL["States"][state_name]["Parameters"], state)
    return request


def pipeline_state(
    fake: FakeAws, run: str, hyperparameters: dict[str, str] | None = None, trainer: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The state data the Train .. DescribeEndpoint states read (see docs/architecture.md); ``trainer`` is the
    run's ``config.trainer.overrides`` (ValidateInput's TrainerConfig)."""
    SUBSTITUTIONS["TrainingSourceUri"] = f"s3://{fake.bucket}/{SOURCE_KEY}"
    state: dict[str, Any] = {
        "config": {
            "run_id": run,
            "training_job_name": f"stepml-{run}",
            "sagemaker_model_name": f"stepml-{run}",
            "endpoint_config_name": f"stepml-{run}",
            "endpoint_name": "stepml-test-iris-ep",
            "endpoint_instance_count": 1,
            "models_prefix": f"s3://{fake.bucket}/models",
            "trainer": {"overrides": trainer or {}},
        },
        "prep": {
            "hyperparameters": dict(IRIS_HPS if hyperparameters is None else hyperparameters),
            "train_uri": f"s3://{fake.bucket}/processed/{run}/train",
            "validation_uri": f"s3://{fake.bucket}/processed/{run}/validation",
            "test_uri": f"s3://{fake.bucket}/processed/{run}/test",
        },
    }
    state["trainer"] = _resolve(ASL["States"]["TrainerDefaults"]["Result"], state)
    state["trainer"] = _resolve(ASL["States"]["PrepareTrainingJob"]["Parameters"], state)
    return state


def select(result_selector: dict[str, str], response: dict[str, Any]) -> dict[str, Any]:
    """A ResultSelector of plain paths applied to ``response``."""
    return {key[:-2]: _path(response, path) for key, path in result_selector.items()}


# --- data and code ----------------------------------------------------------------------------------


def iris_splits() -> dict[str, pd.DataFrame]:
    iris = load_iris(as_frame=True)
    frame = iris.frame.drop(columns="target")
    frame["species"] = [str(iris.target_names[i]) for i in iris.target]
    frame = frame.sample(frac=1.0, random_state=7).reset_index(drop=True)
    return {"train": frame.iloc[:90], "validation": frame.iloc[90:120], "test": frame.iloc[120:]}


def upload_splits(fake: FakeAws, run: str, splits: dict[str, pd.DataFrame]) -> None:
    for name, frame in splits.items():
        fake.put(f"processed/{run}/{name}/{name}.csv", frame.to_csv(index=False).encode())


def upload_source(fake: FakeAws, files: dict[str, str] | None = None, tmp: Path | None = None) -> None:
    """The repository's training/ folder, or ``files`` (name -> code) packed the same way."""
    if files is None:
        fake.put(SOURCE_KEY, package_training_source(ROOT / "training"))
        return
    assert tmp is not None
    folder = tmp / "source"
    folder.mkdir(parents=True)
    for name, code in files.items():
        (folder / name).write_text(textwrap.dedent(code))
    fake.put(SOURCE_KEY, package_training_source(folder))


def untar(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


@pytest.fixture
def store(aws: FakeAws) -> RecordStore:
    return RecordStore(aws.bucket, aws.s3)


@pytest.fixture(autouse=True)
def _fresh_model_cache() -> Iterator[None]:
    # Each test has a new moto account reusing the bucket name: models cached by URL must not leak.
    reset_model_cache()
    yield
    reset_model_cache()


# --- packaging --------------------------------------------------------------------------------------


def test_package_training_source_is_deterministic_and_skips_caches(tmp_path: Path) -> None:
    folder = tmp_path / "training"
    (folder / "__pycache__").mkdir(parents=True)
    (folder / "train.py").write_text("print('hi')\n")
    (folder / "lib").mkdir()
    (folder / "lib" / "util.py").write_text("X = 1\n")
    (folder / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    (folder / "stale.pyc").write_bytes(b"\0")
    first = package_training_source(folder)
    # touching files (new mtimes) must not change the archive
    for path in folder.rglob("*.py"):
        path.write_text(path.read_text())
    assert package_training_source(folder) == first
    assert untar(first) == {"lib/util.py": b"X = 1\n", "train.py": b"print('hi')\n"}


def test_package_training_source_of_the_repository_holds_the_scripts_at_its_root() -> None:
    names = set(untar(package_training_source(ROOT / "training")))
    assert {"train.py", "inference.py"} <= names
    assert not any("__pycache__" in name for name in names)


# --- CreateTrainingJob ------------------------------------------------------------------------------


def test_create_training_job_runs_the_real_train_py_on_iris(aws: FakeAws, store: RecordStore) -> None:
    run = "iris-run-1"
    upload_splits(aws, run, iris_splits())
    upload_source(aws)
    request = asl_request("Train", pipeline_state(aws, run))

    response = create_training_job(store, request)

    model_key = f"models/stepml-{run}/output/model.tar.gz"
    selected = select(ASL["States"]["Train"]["ResultSelector"], response)
    assert selected == {
        "TrainingJobName": f"stepml-{run}",
        "TrainingJobStatus": "Completed",
        "ModelArtifacts": f"s3://{aws.bucket}/{model_key}",
        # kept for the registry's lineage
        "hyperparameters": request["HyperParameters"],
        "image": request["AlgorithmSpecification"]["TrainingImage"],
    }
    assert {"model.joblib", "metadata.json"} <= set(untar(aws.get(model_key)))
    outputs = untar(aws.get(f"models/stepml-{run}/output/output.tar.gz"))
    assert {"metrics.json", "test_predictions.csv"} <= set(outputs)
    metrics = json.loads(outputs["metrics.json"])
    assert metrics["primary_metric"] == "f1_macro" and metrics["test"]["f1_macro"] > 0.8
    assert response["HyperParameters"] == request["HyperParameters"]
    assert response["TrainingJobArn"].endswith(f":training-job/stepml-{run}")
    assert response["TrainingStartTime"] <= response["TrainingEndTime"]
    assert response["TrainingTimeInSeconds"] >= 1
    assert "[train]" in response["StandInLogs"]["stdout"]  # train.py's own log lines
    # the record is the DescribeTrainingJob answer
    assert json.loads(aws.get(f"_sagemaker/training-jobs/stepml-{run}.json")) == response

    # A retry of the task returns the completed job: no second run (same start time), and a different
    # request under the same name is refused like SageMaker does.
    assert create_training_job(store, request) == response
    with pytest.raises(ResourceInUse, match=f"stepml-{run}"):
        create_training_job(store, {**request, "HyperParameters": {**request["HyperParameters"], "seed": "1"}})


# the least a trainer writes: a model and its test predictions
MINIMAL_TRAINER = """
import os, pathlib
pathlib.Path(os.environ["SM_MODEL_DIR"], "m.txt").write_text("ok")
pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "test_predictions.csv").write_text("y_true,y_pred\\na,a\\n")
"""

CONTRACT_PROBE = """
    import json, os, sys
    from pathlib import Path
    channels = json.loads(os.environ["SM_CHANNELS"])
    seen = {
        "argv": sys.argv[1:],
        "cwd_files": sorted(os.listdir(".")),
        "hps": json.loads(os.environ["SM_HPS"]),
        "hp_env": {k: v for k, v in os.environ.items() if k.startswith("SM_HP_")},
        "channels": channels,
        "channel_files": {c: sorted(os.listdir(os.environ["SM_CHANNEL_" + c.upper()])) for c in channels},
        "hyperparameters_json": json.loads(
            (Path(os.environ["SM_INPUT_DIR"]) / "config" / "hyperparameters.json").read_text()),
        "helper": __import__("helper").VALUE,
    }
    Path(os.environ["SM_MODEL_DIR"], "seen.json").write_text(json.dumps(seen))
    Path(os.environ["SM_OUTPUT_DATA_DIR"], "note.txt").write_text("output data")
    Path(os.environ["SM_OUTPUT_DATA_DIR"], "test_predictions.csv").write_text("y_true,y_pred\\na,a\\n")
    print("probe done")
"""


def test_the_script_gets_the_script_mode_contract(aws: FakeAws, store: RecordStore, tmp_path: Path) -> None:
    run = "contract"
    upload_splits(aws, run, iris_splits())
    upload_source(aws, {"train.py": CONTRACT_PROBE, "helper.py": "VALUE = 'sibling import works'\n"}, tmp_path)
    hps = {"target": "species", "max_iter": "200", "learning_rate": "0.05", "note": "two words"}
    request = asl_request("Train", pipeline_state(aws, run, hps))

    response = create_training_job(store, request)

    seen = json.loads(untar(aws.get(f"models/stepml-{run}/output/model.tar.gz"))["seen.json"])
    # --name value per hyperparameter in name order, values decoded like the training toolkit
    assert seen["argv"] == [
        "--learning_rate", "0.05", "--max_iter", "200", "--note", "two words", "--target", "species",
    ]  # fmt: skip
    assert seen["hps"] == {"target": "species", "max_iter": 200, "learning_rate": 0.05, "note": "two words"}
    assert seen["hp_env"] == {
        "SM_HP_TARGET": "species",
        "SM_HP_MAX_ITER": "200",
        "SM_HP_LEARNING_RATE": "0.05",
        "SM_HP_NOTE": "two words",
    }
    # the hyperparameters file holds the request's strings, sagemaker_* included (as in the container)
    assert seen["hyperparameters_json"] == request["HyperParameters"]
    assert request["HyperParameters"]["sagemaker_program"] == "train.py"
    assert sorted(seen["channels"]) == ["test", "train", "validation"]
    assert seen["channel_files"] == {"test": ["test.csv"], "train": ["train.csv"], "validation": ["validation.csv"]}
    assert seen["cwd_files"] == ["helper.py", "train.py"]  # run from the extracted source
    assert seen["helper"] == "sibling import works"
    assert untar(aws.get(f"models/stepml-{run}/output/output.tar.gz")) == {
        "note.txt": b"output data",
        "test_predictions.csv": b"y_true,y_pred\na,a\n",
    }
    assert response["StandInLogs"]["stdout"].strip() == "probe done"


def test_a_failing_script_fails_with_its_failure_file(aws: FakeAws, store: RecordStore, tmp_path: Path) -> None:
    run = "fails"
    upload_splits(aws, run, iris_splits())
    script = """
        import os, sys
        from pathlib import Path
        Path(os.environ["SM_OUTPUT_DIR"], "failure").write_text("DataValidation: column 'petal' has 3 NaN")
        print("some noise", file=sys.stderr)
        sys.exit(2)
    """
    upload_source(aws, {"train.py": script}, tmp_path)
    request = asl_request("Train", pipeline_state(aws, run))

    with pytest.raises(TrainingFailedError) as raised:
        create_training_job(store, request)

    assert str(raised.value) == "DataValidation: column 'petal' has 3 NaN"
    record = json.loads(aws.get(f"_sagemaker/training-jobs/stepml-{run}.json"))
    assert record["TrainingJobStatus"] == "Failed"
    assert record["FailureReason"] == "DataValidation: column 'petal' has 3 NaN"
    assert "some noise" in record["StandInLogs"]["stderr"]
    assert not aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix=f"models/stepml-{run}/").get("Contents")


def test_a_crashing_script_fails_with_the_end_of_its_stderr(aws: FakeAws, store: RecordStore, tmp_path: Path) -> None:
    run = "crashes"
    upload_splits(aws, run, iris_splits())
    upload_source(aws, {"train.py": "print('x' * 10000)\nraise KeyError('no column named petal_width')\n"}, tmp_path)

    with pytest.raises(TrainingFailedError, match="KeyError: 'no column named petal_width'") as raised:
        create_training_job(store, asl_request("Train", pipeline_state(aws, run)))

    assert "Traceback" in str(raised.value)
    assert len(str(raised.value)) <= 4096


def test_a_script_killed_by_sigkill_is_said_to_be_out_of_memory_with_its_peak_and_what_to_do(
    aws: FakeAws, store: RecordStore, tmp_path: Path
) -> None:
    run = "killed"
    upload_splits(aws, run, iris_splits())
    script = """
        import os, signal, sys, time
        held = bytearray(96 << 20)  # resident: zero pages are not, written ones are
        for i in range(0, len(held), 4096):
            held[i] = 1
        print("reading the channels", file=sys.stderr, flush=True)
        time.sleep(1.5)  # the stand-in reads a small process's peak while it runs (an OOM-killed one's is exact)
        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's out-of-memory killer sends
    """
    upload_source(aws, {"train.py": script}, tmp_path)

    with pytest.raises(TrainingFailedError) as raised:
        create_training_job(store, asl_request("Train", pipeline_state(aws, run)))

    message = str(raised.value)
    # SageMaker's own FailureReason for a job out of memory, then what the stand-in knows
    assert message.startswith("ClientError: Please use an instance type with more memory"), message
    assert "train.py was killed by signal 9 (SIGKILL)" in message
    assert "out-of-memory killer" in message
    assert "TrainingInstanceType" in message and "ml.m5.large" in message  # the instance the job asked for
    assert "on the embedded target" in message and "sample" in message
    peak = re.search(r"peak resident memory ([\d,]+) MiB", message)
    assert peak and int(peak.group(1).replace(",", "")) >= 96, message
    assert message.endswith("its stderr ended: reading the channels"), message
    record = json.loads(aws.get(f"_sagemaker/training-jobs/stepml-{run}.json"))
    assert record["TrainingJobStatus"] == "Failed" and record["FailureReason"] == message


def test_a_script_killed_by_another_signal_names_it_without_blaming_memory(
    aws: FakeAws, store: RecordStore, tmp_path: Path
) -> None:
    run = "terminated"
    upload_splits(aws, run, iris_splits())
    upload_source(aws, {"train.py": "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n"}, tmp_path)

    with pytest.raises(TrainingFailedError) as raised:
        create_training_job(store, asl_request("Train", pipeline_state(aws, run)))

    message = str(raised.value)
    assert message.startswith("train.py was killed by signal 15 (SIGTERM)"), message
    assert "out-of-memory" not in message and "TrainingInstanceType" not in message


def test_a_script_that_runs_too_long_is_stopped(aws: FakeAws, store: RecordStore, tmp_path: Path) -> None:
    run = "slow"
    upload_splits(aws, run, iris_splits())
    upload_source(aws, {"train.py": "import time\nprint('starting', flush=True)\ntime.sleep(60)\n"}, tmp_path)
    request = asl_request("Train", pipeline_state(aws, run))
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": 1}

    with pytest.raises(TrainingFailedError, match=r"ran out of time.*MaxRuntimeInSeconds=1"):
        create_training_job(store, request)

    record = json.loads(aws.get(f"_sagemaker/training-jobs/stepml-{run}.json"))
    assert (record["TrainingJobStatus"], record["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    assert "starting" in record["StandInLogs"]["stdout"]


def test_the_time_budget_of_the_lambda_also_stops_the_script(aws: FakeAws, store: RecordStore, tmp_path: Path) -> None:
    run = "budget"
    upload_splits(aws, run, iris_splits())
    upload_source(aws, {"train.py": "import time\ntime.sleep(60)\n"}, tmp_path)

    with pytest.raises(TrainingFailedError, match=r"ran out of time.*stand-in's Lambda"):
        create_training_job(store, asl_request("Train", pipeline_state(aws, run)), time_budget_seconds=1)


def test_a_failed_job_can_be_run_again_under_its_name(aws: FakeAws, store: RecordStore, tmp_path: Path) -> None:
    run = "again"
    upload_splits(aws, run, iris_splits())
    upload_source(aws, {"train.py": "import sys\nsys.exit('not yet')\n"}, tmp_path / "a")
    request = asl_request("Train", pipeline_state(aws, run))
    with pytest.raises(TrainingFailedError, match="not yet"):
        create_training_job(store, request)
    upload_source(aws, {"train.py": MINIMAL_TRAINER}, tmp_path / "b")

    assert create_training_job(store, request)["TrainingJobStatus"] == "Completed"


def test_training_input_problems_are_named(aws: FakeAws, store: RecordStore, tmp_path: Path) -> None:
    upload_source(aws, {"train.py": "print('never runs')\n"}, tmp_path)
    request = asl_request("Train", pipeline_state(aws, "nodata"))
    with pytest.raises(TrainingFailedError, match=r"no S3 objects found under .*processed/nodata/train"):
        create_training_job(store, request)

    with pytest.raises(ValidationException, match="sagemaker_submit_directory"):
        hps = {k: v for k, v in request["HyperParameters"].items() if k != "sagemaker_submit_directory"}
        create_training_job(store, {**request, "TrainingJobName": "other", "HyperParameters": hps})
    with pytest.raises(ValidationException, match='Unknown parameter in input: "Hyperparameters"'):
        create_training_job(store, {**request, "Hyperparameters": {}})
    with pytest.raises(ValidationException, match="name 'bad_name'"):
        create_training_job(store, {**request, "TrainingJobName": "bad_name"})

    upload_splits(aws, "nocode", iris_splits())
    request = asl_request("Train", pipeline_state(aws, "nocode"))
    aws.s3.delete_object(Bucket=aws.bucket, Key=SOURCE_KEY)
    with pytest.raises(TrainingFailedError, match=r"sagemaker_submit_directory .* does not exist"):
        create_training_job(store, request)


# --- models, endpoint configs, endpoints ------------------------------------------------------------


def deploy_requests(
    fake: FakeAws,
    run: str,
    model_data_url: str,
    instance_count: int = 1,
    deployment_config: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The deploy section's SageMaker requests for ``run``, as the ASL's Parameters build them (with
    ``deployment_config`` as PrepareRollout's plan, UpdateEndpointWithRollout's too)."""
    state = pipeline_state(fake, run)
    state["config"]["endpoint_instance_count"] = instance_count
    state["training"] = {"ModelArtifacts": model_data_url}
    names = ("CreateModel", "CreateEndpointConfig", "FindEndpoint", "CreateEndpoint", "UpdateEndpoint")
    requests = {name: asl_request(name, state) for name in names}
    requests["DescribeEndpoint"] = asl_request("DescribeEndpoint", state)
    if deployment_config is not None:
        state["rollout"] = {"deployment_config": deployment_config}
        requests["UpdateEndpointWithRollout"] = asl_request("UpdateEndpointWithRollout", state)
    return requests


def test_create_model_config_and_endpoint_like_sagemaker(aws: FakeAws, store: RecordStore) -> None:
    first = deploy_requests(aws, "run-a", f"s3://{aws.bucket}/models/stepml-run-a/output/model.tar.gz")

    # no endpoint yet: FindEndpoint counts 0, DescribeEndpoint fails
    assert endpoints.list_endpoints(store, first["FindEndpoint"]) == {"Endpoints": []}
    with pytest.raises(ValidationException, match="Could not find endpoint"):
        endpoints.describe_endpoint(store, first["DescribeEndpoint"])
    with pytest.raises(ValidationException, match="Could not find model"):
        endpoints.create_endpoint_config(store, first["CreateEndpointConfig"])

    model_arn = endpoints.create_model(store, first["CreateModel"])["ModelArn"]
    assert model_arn.endswith(":model/stepml-run-a")
    # the identical request again (a retried task) succeeds; a different one under that name does not
    assert endpoints.create_model(store, first["CreateModel"]) == {"ModelArn": model_arn}
    changed = {**first["CreateModel"], "PrimaryContainer": {**first["CreateModel"]["PrimaryContainer"]}}
    changed["PrimaryContainer"]["ModelDataUrl"] = "s3://elsewhere/model.tar.gz"
    with pytest.raises(ValidationException, match="Cannot create already existing model"):
        endpoints.create_model(store, changed)

    endpoints.create_endpoint_config(store, first["CreateEndpointConfig"])
    endpoints.create_endpoint_config(store, first["CreateEndpointConfig"])
    with pytest.raises(ValidationException, match="Cannot create already existing endpoint configuration"):
        endpoints.create_endpoint_config(
            store,
            {
                **first["CreateEndpointConfig"],
                "ProductionVariants": [{"VariantName": "Other", "ModelName": "stepml-run-a"}],
            },
        )
    with pytest.raises(ValidationException, match="Could not find endpoint configuration"):
        endpoints.create_endpoint(store, {"EndpointName": "other-ep", "EndpointConfigName": "missing"})

    arn = endpoints.create_endpoint(store, first["CreateEndpoint"])["EndpointArn"]
    assert endpoints.create_endpoint(store, first["CreateEndpoint"]) == {"EndpointArn": arn}
    described = endpoints.describe_endpoint(store, first["DescribeEndpoint"])
    assert select(ASL["States"]["DescribeEndpoint"]["ResultSelector"], described) == {
        "EndpointStatus": "InService",
        "EndpointName": "stepml-test-iris-ep",
        "EndpointConfigName": "stepml-run-a",
    }
    assert described["EndpointConfigName"] == "stepml-run-a"
    assert (
        described["ProductionVariants"][0]["DeployedImages"][0]["SpecifiedImage"] == SUBSTITUTIONS["InferenceImageUri"]
    )
    listed = endpoints.list_endpoints(store, first["FindEndpoint"])["Endpoints"]
    assert [e["EndpointName"] for e in listed] == ["stepml-test-iris-ep"]
    assert endpoints.list_endpoints(store, {"NameContains": "IRIS-EP"})["Endpoints"] == listed
    assert endpoints.list_endpoints(store, {"NameContains": "penguins"}) == {"Endpoints": []}
    with pytest.raises(ValidationException, match="Cannot create already existing endpoint"):
        endpoints.create_endpoint(store, {**first["CreateEndpoint"], "EndpointConfigName": "stepml-run-b"})

    # a second run updates the endpoint to its own config; the previous config is remembered
    second = deploy_requests(aws, "run-b", f"s3://{aws.bucket}/models/stepml-run-b/output/model.tar.gz")
    with pytest.raises(ValidationException, match="Could not find endpoint configuration"):
        endpoints.update_endpoint(store, second["UpdateEndpoint"])
    endpoints.create_model(store, second["CreateModel"])
    endpoints.create_endpoint_config(store, second["CreateEndpointConfig"])
    assert endpoints.update_endpoint(store, second["UpdateEndpoint"]) == {"EndpointArn": arn}
    endpoints.update_endpoint(store, second["UpdateEndpoint"])  # a retry changes nothing
    updated = endpoints.describe_endpoint(store, second["DescribeEndpoint"])
    assert updated["EndpointConfigName"] == "stepml-run-b"
    assert updated["PreviousEndpointConfigNames"] == ["stepml-run-a"]
    assert updated["EndpointStatus"] == "InService"
    assert updated["CreationTime"] == described["CreationTime"]
    # once updated, the first run's CreateEndpoint is no longer "the same request"
    with pytest.raises(ValidationException, match="Cannot create already existing endpoint"):
        endpoints.create_endpoint(store, first["CreateEndpoint"])
    with pytest.raises(ValidationException, match="Could not find endpoint"):
        endpoints.update_endpoint(store, {**second["UpdateEndpoint"], "EndpointName": "nobody-ep"})

    endpoints.delete_endpoint(store, {"EndpointName": "stepml-test-iris-ep"})
    assert endpoints.list_endpoints(store, {}) == {"Endpoints": []}


def test_list_endpoints_filters_and_sorts(aws: FakeAws, store: RecordStore) -> None:
    url = f"s3://{aws.bucket}/models/m/output/model.tar.gz"
    requests = deploy_requests(aws, "run-a", url)
    endpoints.create_model(store, requests["CreateModel"])
    endpoints.create_endpoint_config(store, requests["CreateEndpointConfig"])
    for name in ("stepml-dev-iris-ep", "stepml-dev-wine-ep", "stepml-dev-iris2-ep"):
        endpoints.create_endpoint(store, {"EndpointName": name, "EndpointConfigName": "stepml-run-a"})

    by_name = endpoints.list_endpoints(store, {"NameContains": "iris", "SortBy": "Name", "SortOrder": "Ascending"})
    assert [e["EndpointName"] for e in by_name["Endpoints"]] == ["stepml-dev-iris-ep", "stepml-dev-iris2-ep"]
    assert len(endpoints.list_endpoints(store, {"MaxResults": 2})["Endpoints"]) == 2
    assert endpoints.list_endpoints(store, {"StatusEquals": "Failed"}) == {"Endpoints": []}
    with pytest.raises(ValidationException, match="CreationTimeAfter"):
        endpoints.list_endpoints(store, {"CreationTimeAfter": "2026-01-01T00:00:00Z"})


# --- the endpoint runtime ---------------------------------------------------------------------------


def relabelled(splits: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The same features with the species names rotated: a model that answers differently."""
    rotate = {"setosa": "versicolor", "versicolor": "virginica", "virginica": "setosa"}
    return {name: frame.assign(species=frame["species"].map(rotate)) for name, frame in splits.items()}


@functools.cache
def trained_model(relabel: bool) -> tuple[bytes, Any]:
    """model.tar.gz bytes of train.py's own ``train`` on iris (species rotated if ``relabel``), and the
    fitted pipeline so a test can predict independently; trained once per session, in process."""
    from training.train import train, write_outputs

    splits = relabelled(iris_splits()) if relabel else iris_splits()
    outcome = train(
        splits["train"], splits["validation"], splits["test"],
        target="species", problem_type="multiclass_classification", params={"max_iter": 30},
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as temp:
        model_dir = Path(temp) / "model"
        write_outputs(outcome, model_dir, Path(temp) / "data")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in sorted(model_dir.iterdir()):
                tar.add(path, arcname=path.name)
        return buffer.getvalue(), joblib.load(model_dir / "model.joblib")["pipeline"]


def publish_model(fake: FakeAws, name: str, relabel: bool = False) -> tuple[str, Any]:
    """Upload a trained model.tar.gz as the stand-in would; returns (ModelDataUrl, fitted pipeline)."""
    data, pipeline = trained_model(relabel)
    return fake.put(f"models/{name}/output/model.tar.gz", data), pipeline


def deploy(store: RecordStore, fake: FakeAws, run: str, url: str, *, update: bool = False) -> None:
    requests = deploy_requests(fake, run, url)
    endpoints.create_model(store, requests["CreateModel"])
    endpoints.create_endpoint_config(store, requests["CreateEndpointConfig"])
    if update:
        endpoints.update_endpoint(store, requests["UpdateEndpoint"])
    else:
        endpoints.create_endpoint(store, requests["CreateEndpoint"])


def test_invoke_endpoint_serves_the_model_and_follows_updates(aws: FakeAws, store: RecordStore, tmp_path: Path) -> None:
    splits = iris_splits()
    upload_source(aws)
    url_a, pipeline_a = publish_model(aws, "model-a")
    url_b, pipeline_b = publish_model(aws, "model-b", relabel=True)
    features = splits["test"].drop(columns="species")
    records = features.to_dict(orient="records")
    expected_a = [str(p) for p in pipeline_a.predict(features)]
    expected_b = [str(p) for p in pipeline_b.predict(features)]
    assert expected_a != expected_b
    deploy(store, aws, "run-a", url_a)

    assert invoke_endpoint("stepml-test-iris-ep", records, store=store, refresh_seconds=0) == expected_a
    assert np.mean(np.array(expected_a) == splits["test"]["species"].to_numpy()) > 0.8

    # warm: the model is not read again while the endpoint's config is unchanged
    aws.s3.delete_object(Bucket=aws.bucket, Key="models/model-a/output/model.tar.gz")
    assert invoke_endpoint("stepml-test-iris-ep", records[:3], store=store, refresh_seconds=0) == expected_a[:3]

    deploy(store, aws, "run-b", url_b, update=True)
    assert invoke_endpoint("stepml-test-iris-ep", records, store=store, refresh_seconds=0) == expected_b


def test_the_endpoint_record_is_reread_at_most_every_refresh_interval(
    aws: FakeAws, store: RecordStore, tmp_path: Path
) -> None:
    splits = iris_splits()
    upload_source(aws)
    url_a, pipeline_a = publish_model(aws, "model-a")
    url_b, pipeline_b = publish_model(aws, "model-b", relabel=True)
    record = splits["test"].drop(columns="species").iloc[[0]]
    expected_a, expected_b = [str(pipeline_a.predict(record)[0])], [str(pipeline_b.predict(record)[0])]
    deploy(store, aws, "run-a", url_a)
    now = [100.0]
    server = ModelServer(clock=lambda: now[0])
    records = record.to_dict(orient="records")

    assert server.invoke(store, "stepml-test-iris-ep", records, refresh_seconds=1.0) == expected_a
    deploy(store, aws, "run-b", url_b, update=True)
    now[0] = 100.5
    assert server.invoke(store, "stepml-test-iris-ep", records, refresh_seconds=1.0) == expected_a
    now[0] = 101.5
    assert server.invoke(store, "stepml-test-iris-ep", records, refresh_seconds=1.0) == expected_b
    server.clear()


def test_invoke_endpoint_errors(
    aws: FakeAws, store: RecordStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationException, match="Could not find endpoint"):
        invoke_endpoint("stepml-test-iris-ep", [{"a": 1}], store=store)
    splits = iris_splits()
    upload_source(aws)
    url, _ = publish_model(aws, "model-a")
    deploy(store, aws, "run-a", url)

    # a record without a feature: the model's own message, as sagemaker-runtime's ModelError
    with pytest.raises(ModelError, match="missing feature column"):
        invoke_endpoint("stepml-test-iris-ep", [{"sepal length (cm)": 5.1}], store=store)
    # DATA_BUCKET from the environment when no store is given
    monkeypatch.setenv("DATA_BUCKET", aws.bucket)
    record = splits["test"].drop(columns="species").iloc[:2].to_dict(orient="records")
    assert len(invoke_endpoint("stepml-test-iris-ep", record)) == 2


def test_a_model_without_source_code_cannot_be_served(aws: FakeAws, store: RecordStore) -> None:
    request = deploy_requests(aws, "run-a", f"s3://{aws.bucket}/models/x/output/model.tar.gz")["CreateModel"]
    request["PrimaryContainer"]["Environment"] = {}
    endpoints.create_model(store, request)
    endpoints.create_endpoint_config(store, deploy_requests(aws, "run-a", "unused")["CreateEndpointConfig"])
    endpoints.create_endpoint(store, {"EndpointName": "bare-ep", "EndpointConfigName": "stepml-run-a"})

    with pytest.raises(ModelError, match="SAGEMAKER_SUBMIT_DIRECTORY"):
        invoke_endpoint("bare-ep", [{"a": 1}], store=store)


# --- the Lambda handler -----------------------------------------------------------------------------


def _context() -> SimpleNamespace:
    return SimpleNamespace(
        invoked_function_arn="arn:aws:lambda:us-east-1:111122223333:function:LocalSageMakerCreateModel",
        get_remaining_time_in_millis=lambda: 900_000,
        function_name="LocalSageMakerCreateModel",
        memory_limit_in_mb=1024,
        aws_request_id="req-1",
    )


def test_handler_runs_the_action_its_environment_names(aws: FakeAws, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline_core import observability

    from functions.local_sagemaker import app

    # Powertools' Metrics reads POWERTOOLS_METRICS_NAMESPACE once, when first used: perhaps by an earlier
    # test that ran without the aws fixture's environment.
    if observability.metrics.provider.namespace is None:
        monkeypatch.setattr(observability.metrics.provider, "namespace", "stepml-test")

    requests = deploy_requests(aws, "run-a", f"s3://{aws.bucket}/models/x/output/model.tar.gz")
    monkeypatch.setenv("STANDIN_ACTION", "CreateModel")
    answer = app.lambda_handler(requests["CreateModel"], _context())
    assert answer == {"ModelArn": "arn:aws:sagemaker:us-east-1:111122223333:model/stepml-run-a"}

    monkeypatch.setenv("STANDIN_ACTION", "ListEndpoints")
    assert app.lambda_handler(requests["FindEndpoint"], _context()) == {"Endpoints": []}

    monkeypatch.setenv("STANDIN_ACTION", "DescribeEndpoint")
    with pytest.raises(ValidationException):
        app.lambda_handler(requests["DescribeEndpoint"], _context())

    monkeypatch.setenv("STANDIN_ACTION", "CreateTrainingJobs")
    with pytest.raises(ConfigurationError, match="CreateTrainingJobs"):
        app.lambda_handler({}, _context())
    monkeypatch.delenv("STANDIN_ACTION")
    with pytest.raises(ConfigurationError, match="STANDIN_ACTION"):
        app.lambda_handler({}, _context())


def test_every_stand_in_function_of_the_template_has_an_action() -> None:
    from pipeline_core.standin.actions import ACTIONS

    template = (ROOT / "infra" / "template.yaml").read_text()
    named = re.findall(r"STANDIN_ACTION: (\w+)", template)
    assert named and set(named) <= set(ACTIONS)


def test_a_job_after_the_first_runs_in_an_interpreter_that_imported_the_libraries_already(
    aws: FakeAws, store: RecordStore, tmp_path: Path
) -> None:
    from pipeline_core.standin.warm_interpreter import interpreters

    script = (
        "import os, sys\n"
        "print('preloaded' if 'sklearn.ensemble' in sys.modules else 'fresh', sys.argv[1:], os.getcwd() == "
        "os.path.dirname(os.path.abspath(__file__)), os.environ['SM_CURRENT_HOST'], flush=True)\n"
        "open(os.path.join(os.environ['SM_MODEL_DIR'], 'model.txt'), 'w').write('m')\n"
        "open(os.path.join(os.environ['SM_OUTPUT_DATA_DIR'], 'test_predictions.csv'), 'w').write('y_true,y_pred\\n')\n"
        "sys.exit(0)\n"
    )
    upload_source(aws, {"train.py": script}, tmp_path)
    interpreters.close()  # no interpreter waits: the first job starts Python itself
    outputs = []
    for run in ("warm-1", "warm-2"):
        upload_splits(aws, run, iris_splits())
        described = create_training_job(store, asl_request("Train", pipeline_state(aws, run)))
        outputs.append(described["StandInLogs"]["stdout"].strip())
        deadline = time.monotonic() + 120
        while not interpreters.is_ready(sys.executable) and time.monotonic() < deadline:
            time.sleep(0.1)
    first, second = outputs
    assert first.startswith("fresh") and second.startswith("preloaded"), outputs
    assert first.removeprefix("fresh") == second.removeprefix("preloaded")  # same argv, cwd and environment
    interpreters.close()
