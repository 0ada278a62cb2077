"""A user's trainer on the SageMaker stand-in: the run's trainer reaches the Train and CreateModel requests, a
trainer that breaks the script-mode contract fails saying what is missing, and two trainers' own modules of one
name live side by side in the endpoint runtime's process."""

from __future__ import annotations

import hashlib
import json
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
from pipeline_core.errors import TrainingFailedError
from pipeline_core.stages.trainer_input import UserTrainer, trainer_config
from pipeline_core.standin import endpoints
from pipeline_core.standin.archives import package_training_source
from pipeline_core.standin.errors import ModelError, ValidationException
from pipeline_core.standin.runtime import invoke_endpoint, reset_model_cache
from pipeline_core.standin.store import RecordStore
from pipeline_core.standin.training import create_training_job
from pipeline_core.trainer_contract import serving_problem

from tests.conftest import FakeAws
from tests.unit.test_standin import SUBSTITUTIONS, asl_request, iris_splits, pipeline_state, upload_splits

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-trainer:1"


@pytest.fixture
def store(aws: FakeAws) -> RecordStore:
    return RecordStore(aws.bucket, aws.s3)


@pytest.fixture(autouse=True)
def _fresh_model_cache() -> Any:
    reset_model_cache()
    yield
    reset_model_cache()


def put_trainer(fake: FakeAws, tmp: Path, name: str, files: dict[str, str]) -> str:
    """``files`` as a trainer directory, packed like ``stepml run --trainer DIR`` and uploaded."""
    folder = tmp / name
    folder.mkdir(parents=True)
    for file, code in files.items():
        (folder / file).write_text(textwrap.dedent(code))
    return fake.put(f"code/trainers/{name}.tar.gz", package_training_source(folder))


def user_state(fake: FakeAws, run: str, source: str, **trainer: Any) -> dict[str, Any]:
    overrides = trainer_config(UserTrainer(source=source, **trainer)).overrides
    state = pipeline_state(fake, run, {"target": "species"}, trainer=overrides)
    state["config"]["endpoint_name"] = f"{run}-ep"
    return state


# --- the definition carries the trainer ----------------------------------------------------------------


def test_a_builtin_trainer_runs_the_deployments_source_and_images(aws: FakeAws) -> None:
    state = pipeline_state(aws, "builtin")
    state["training"] = {"ModelArtifacts": "s3://b/m.tar.gz"}
    train, model = asl_request("Train", state), asl_request("CreateModel", state)

    assert train["AlgorithmSpecification"]["TrainingImage"] == SUBSTITUTIONS["TrainingImageUri"]
    assert train["HyperParameters"]["sagemaker_program"] == "train.py"
    assert train["HyperParameters"]["sagemaker_submit_directory"] == SUBSTITUTIONS["TrainingSourceUri"]
    assert model["PrimaryContainer"]["Image"] == SUBSTITUTIONS["InferenceImageUri"]
    assert model["PrimaryContainer"]["Environment"] == {
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": SUBSTITUTIONS["TrainingSourceUri"],
    }


def test_a_user_trainers_source_entry_points_and_image_reach_train_and_create_model(aws: FakeAws) -> None:
    source = f"s3://{aws.bucket}/code/trainers/abc.tar.gz"
    state = user_state(aws, "own", source, entry_point="fit.py", serving_entry_point="serve.py", image=IMAGE)
    state["training"] = {"ModelArtifacts": "s3://b/m.tar.gz"}
    train, model = asl_request("Train", state), asl_request("CreateModel", state)

    assert train["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert train["HyperParameters"] == {
        "target": "species",
        "sagemaker_program": "fit.py",
        "sagemaker_submit_directory": source,
        "sagemaker_container_log_level": "20",
    }
    assert model["PrimaryContainer"]["Image"] == IMAGE
    assert model["PrimaryContainer"]["Environment"] == {
        "SAGEMAKER_PROGRAM": "serve.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": source,
    }


# --- a trainer that breaks the contract --------------------------------------------------------------

WRITES_MODEL = 'import os, pathlib\npathlib.Path(os.environ["SM_MODEL_DIR"], "m.txt").write_text("m")\n'


@pytest.mark.parametrize(
    ("files", "entry_point", "expected"),
    [
        (
            {"train.py": "print('hi')\n"},
            "fit.py",
            "the trainer's entry point fit.py is not in its directory (it holds train.py)",
        ),
        (
            {"train.py": "print('trained, saved nothing')\n"},
            "train.py",
            "train.py exited successfully but wrote nothing",
        ),
        (
            {"train.py": WRITES_MODEL},
            "train.py",
            "train.py wrote no test_predictions.csv to SM_OUTPUT_DATA_DIR: a trainer writes its predictions",
        ),
        (
            {
                "train.py": WRITES_MODEL
                + 'pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "test_predictions.csv").write_text("a,b\\n")\n'
            },
            "train.py",
            "test_predictions.csv from train.py has no column y_true, y_pred",
        ),
    ],
    ids=["no-entry-point", "no-model", "no-predictions", "wrong-columns"],
)
def test_a_trainer_that_breaks_the_contract_fails_naming_what_is_missing(
    aws: FakeAws, store: RecordStore, tmp_path: Path, files: dict[str, str], entry_point: str, expected: str
) -> None:
    run = "breaks"
    upload_splits(aws, run, iris_splits())
    source = put_trainer(aws, tmp_path, "broken", files)

    with pytest.raises(TrainingFailedError) as raised:
        create_training_job(store, asl_request("Train", user_state(aws, run, source, entry_point=entry_point)))

    assert expected in str(raised.value)
    record = json.loads(aws.get(f"_sagemaker/training-jobs/stepml-{run}.json"))
    assert record["TrainingJobStatus"] == "Failed" and expected in record["FailureReason"]


REPORTS_WAIT_POLICY = 'import os, sys\nsys.exit("policy " + os.environ.get("OMP_WAIT_POLICY", "unset"))\n'


@pytest.mark.parametrize(("given", "expected"), [(None, "policy PASSIVE"), ("ACTIVE", "policy ACTIVE")])
def test_the_training_process_waits_passively_in_openmp_unless_told_otherwise(
    aws: FakeAws, store: RecordStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str | None, expected: str
) -> None:
    """The stand-in's job shares the machine: OpenMP's spinning waits slowed a fit 1.6x beside busy processes."""
    if given is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", given)
    run = "policy"
    upload_splits(aws, run, iris_splits())
    source = put_trainer(aws, tmp_path, "policy", {"train.py": REPORTS_WAIT_POLICY})

    with pytest.raises(TrainingFailedError) as raised:
        create_training_job(store, asl_request("Train", user_state(aws, run, source)))

    assert expected in str(raised.value)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("def model_fn(model_dir):\n    return 1\n", "serve.py defines no predict_fn"),
        ("def predict_fn(data, model):\n    return data\n", "serve.py defines no model_fn"),
        ("x = 1\n", "serve.py defines no model_fn and no predict_fn"),
        ("def model_fn(:\n", "serve.py does not parse"),
        ("from helpers import model_fn, predict_fn\n", None),
        ("def model_fn(d):\n    return 1\n\ndef predict_records(model, rows):\n    return rows\n", None),
    ],
)
def test_the_serving_entry_point_must_define_model_fn_and_predict_fn(
    tmp_path: Path, code: str, expected: str | None
) -> None:
    (tmp_path / "serve.py").write_text(code)
    problem = serving_problem(tmp_path, "serve.py")
    assert (problem is None) if expected is None else (expected in str(problem))
    assert "serving entry point other.py is not in its directory" in str(serving_problem(tmp_path, "other.py"))


def test_create_model_refuses_serving_code_without_predict_fn(aws: FakeAws, store: RecordStore, tmp_path: Path) -> None:
    source = put_trainer(aws, tmp_path, "noserve", {"train.py": "def model_fn(model_dir):\n    return 1\n"})
    state = user_state(aws, "noserve", source)
    state["training"] = {"ModelArtifacts": f"s3://{aws.bucket}/models/x/output/model.tar.gz"}

    with pytest.raises(ValidationException, match=r"model stepml-noserve: the trainer's serving entry point train.py "):
        endpoints.create_model(store, asl_request("CreateModel", state))
    assert store.get("models", "stepml-noserve") is None


# --- two trainers, one module name -------------------------------------------------------------------

TRAIN_AND_SERVE = """
    import os, pathlib, pickle
    from model import Model  # this trainer's own model.py

    def model_fn(model_dir):
        with open(os.path.join(model_dir, "model.pkl"), "rb") as handle:
            return pickle.load(handle)  # finds model.Model: the one beside this file

    def predict_fn(data, model):
        return model.predict(data.to_dict(orient="records") if hasattr(data, "to_dict") else data)

    if __name__ == "__main__":
        with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.pkl"), "wb") as handle:
            pickle.dump(Model(), handle)
        pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "test_predictions.csv").write_text("y_true,y_pred\\na,a\\n")
"""


def model_module(answer: str) -> str:
    return f"""
    class Model:
        def predict(self, rows):
            return ["{answer}" for _ in rows]
    """


def deploy_state(store: RecordStore, state: dict[str, Any]) -> None:
    """CreateModel, CreateEndpointConfig and CreateEndpoint as the definition sends them for ``state``."""
    endpoints.create_model(store, asl_request("CreateModel", state))
    endpoints.create_endpoint_config(store, asl_request("CreateEndpointConfig", state))
    endpoints.create_endpoint(store, asl_request("CreateEndpoint", state))


def train_and_deploy(store: RecordStore, fake: FakeAws, tmp: Path, run: str, answer: str) -> str:
    source = put_trainer(fake, tmp, run, {"train.py": TRAIN_AND_SERVE, "model.py": model_module(answer)})
    upload_splits(fake, run, iris_splits())
    state = user_state(fake, run, source)
    described = create_training_job(store, asl_request("Train", state))
    state["training"] = {"ModelArtifacts": described["ModelArtifacts"]["S3ModelArtifacts"]}
    deploy_state(store, state)
    return str(state["config"]["endpoint_name"])


def test_two_trainers_with_a_module_of_one_name_each_serve_their_own(
    aws: FakeAws, store: RecordStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a module named "model" the process already has (another library's) is not the trainers' and survives
    elsewhere = types.ModuleType("model")
    monkeypatch.setitem(sys.modules, "model", elsewhere)
    first = train_and_deploy(store, aws, tmp_path, "first", "from the first trainer")
    second = train_and_deploy(store, aws, tmp_path, "second", "from the second trainer")
    rows = [{"x": 1}, {"x": 2}]

    assert invoke_endpoint(first, rows, store=store, refresh_seconds=0) == ["from the first trainer"] * 2
    assert invoke_endpoint(second, rows, store=store, refresh_seconds=0) == ["from the second trainer"] * 2
    assert invoke_endpoint(first, rows[:1], store=store, refresh_seconds=0) == ["from the first trainer"]
    assert sys.modules["model"] is elsewhere
    assert not any(str(tmp_path) in str(entry) for entry in sys.path)


def test_input_fn_and_output_fn_serve_the_inference_apis_json(aws: FakeAws, store: RecordStore, tmp_path: Path) -> None:
    serialisers = """
    import json

    def input_fn(body, content_type):
        assert content_type == "application/json"
        return json.loads(body)["instances"]

    def output_fn(prediction, accept):
        return json.dumps({"predictions": ["served: " + p for p in prediction]}), accept
    """
    code = textwrap.dedent(TRAIN_AND_SERVE) + textwrap.dedent(serialisers)
    source = put_trainer(aws, tmp_path, "serde", {"train.py": code, "model.py": model_module("yes")})
    upload_splits(aws, "serde", iris_splits())
    state = user_state(aws, "serde", source)
    described = create_training_job(store, asl_request("Train", state))
    state["training"] = {"ModelArtifacts": described["ModelArtifacts"]["S3ModelArtifacts"]}
    deploy_state(store, state)

    assert invoke_endpoint("serde-ep", [{"x": 1}], store=store, refresh_seconds=0) == ["served: yes"]


def test_a_new_version_of_a_trainer_loads_its_own_modules(aws: FakeAws, store: RecordStore, tmp_path: Path) -> None:
    endpoint = train_and_deploy(store, aws, tmp_path / "v1", "v1", "version 1")
    assert invoke_endpoint(endpoint, [{"x": 1}], store=store, refresh_seconds=0) == ["version 1"]
    other = train_and_deploy(store, aws, tmp_path / "v2", "v2", "version 2")
    assert invoke_endpoint(other, [{"x": 1}], store=store, refresh_seconds=0) == ["version 2"]
    assert invoke_endpoint(endpoint, [{"x": 1}], store=store, refresh_seconds=0) == ["version 1"]


def test_a_trainer_whose_model_fn_fails_is_a_model_error(aws: FakeAws, store: RecordStore, tmp_path: Path) -> None:
    code = TRAIN_AND_SERVE.replace("return pickle.load(handle)", "raise RuntimeError('cannot load')")
    source = put_trainer(aws, tmp_path, "badload", {"train.py": code, "model.py": model_module("x")})
    upload_splits(aws, "badload", iris_splits())
    state = user_state(aws, "badload", source)
    state["training"] = {
        "ModelArtifacts": create_training_job(store, asl_request("Train", state))["ModelArtifacts"]["S3ModelArtifacts"]
    }
    deploy_state(store, state)

    with pytest.raises(ModelError, match="RuntimeError: cannot load"):
        invoke_endpoint("badload-ep", [{"x": 1}], store=store, refresh_seconds=0)
    assert "model" not in sys.modules  # what the trainer imported went back with its source


def test_the_builtin_trainers_are_one_list() -> None:
    from typing import get_args

    from pipeline_core import models, trainer_contract

    assert get_args(models.BuiltinTrainer) == trainer_contract.BUILTIN_TRAINERS


# --- the CLI's --trainer and --hyperparameter --------------------------------------------------------


class _Target:
    """What stepml.trainers needs of a target: the data bucket and an S3 client."""

    name = "test"

    def __init__(self, fake: FakeAws) -> None:
        from stepml.targets import StackOutputs

        self.outputs = StackOutputs("arn:aws:states:us-east-1:123456789012:stateMachine:x", fake.bucket, "r", "t")
        self._s3 = fake.s3

    def client(self, service: str) -> Any:
        assert service == "s3"
        return self._s3


def test_hyperparameters_from_the_command_line() -> None:
    from stepml.trainers import TrainerError, parse_hyperparameters

    given = ["max_iter=200", "learning_rate=0.05", "lowercase=true", "analyzer=char_wb", "note=two words", "n=1e3"]
    assert parse_hyperparameters(given) == {
        "max_iter": 200,
        "learning_rate": 0.05,
        "lowercase": True,
        "analyzer": "char_wb",
        "note": "two words",
        "n": 1000.0,
    }
    assert parse_hyperparameters(['tokens=["a"]']) == {"tokens": '["a"]'}  # JSON other than a scalar stays text
    with pytest.raises(TrainerError, match="expected NAME=VALUE"):
        parse_hyperparameters(["max_iter"])
    with pytest.raises(TrainerError, match="max_iter is given twice"):
        parse_hyperparameters(["max_iter=1", "max_iter=2"])


def test_a_trainer_directory_is_checked_packed_and_uploaded_once(aws: FakeAws, tmp_path: Path) -> None:
    from stepml.trainers import TrainerError, trainer_input

    target = _Target(aws)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "train.py").write_text(textwrap.dedent(TRAIN_AND_SERVE))
    (folder / "model.py").write_text(textwrap.dedent(model_module("x")))

    chosen = trainer_input(target, str(folder), None, None)["trainer"]
    archive = package_training_source(folder)
    digest = hashlib.sha256(archive).hexdigest()
    assert chosen == {"source": f"s3://{aws.bucket}/code/trainers/{digest}.tar.gz", "entry_point": "train.py"}
    assert aws.get(f"code/trainers/{digest}.tar.gz") == archive
    # the same directory again: the same object, not written again
    written = aws.s3.head_object(Bucket=aws.bucket, Key=f"code/trainers/{digest}.tar.gz")["LastModified"]
    assert trainer_input(target, str(folder), "train.py", None)["trainer"] == chosen
    assert aws.s3.head_object(Bucket=aws.bucket, Key=f"code/trainers/{digest}.tar.gz")["LastModified"] == written

    assert trainer_input(target, "linear", None, None) == {"trainer": "linear"}
    assert trainer_input(target, None, None, None) == {}
    with pytest.raises(TrainerError, match=r"neither a built-in trainer .* nor a directory"):
        trainer_input(target, "xgboost", None, None)
    with pytest.raises(TrainerError, match=r"entry point fit\.py is not in its directory"):
        trainer_input(target, str(folder), "fit.py", None)
    with pytest.raises(TrainerError, match="need --trainer DIR"):
        trainer_input(target, None, "train.py", None)
    (folder / "train.py").write_text("print('no serving functions')\n")
    with pytest.raises(TrainerError, match="defines no model_fn and no predict_fn"):
        trainer_input(target, str(folder), None, None)
