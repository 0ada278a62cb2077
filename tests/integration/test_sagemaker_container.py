"""train.py and inference.py under the library versions of the SageMaker image the template deploys.

On AWS the Train state runs ``training/train.py`` in ``sagemaker-scikit-learn:1.2-1-cpu-py3`` (Python 3.9,
scikit-learn 1.2.1, pandas 1.1.3, numpy 1.24) and the endpoint serves ``inference.py`` there; the embedded
target runs both with this project's much newer versions. Here the SageMaker stand-in's real
CreateTrainingJob (the ASL's own Train request) runs train.py under ``.venv/sagemaker-sklearn`` (built by
the Makefile from ``tests/data/sagemaker-sklearn-1.2-1.txt``), and the serving functions then load and
serve the artifact in that interpreter, so a script that only works with new Python or new libraries fails
here and not first on AWS.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pipeline_core.standin.store import RecordStore
from pipeline_core.standin.training import create_training_job
from sklearn.datasets import load_breast_cancer, load_diabetes

from tests.conftest import FakeAws
from tests.unit.test_standin import asl_request, iris_splits, pipeline_state, untar, upload_source, upload_splits

REPO = Path(__file__).resolve().parents[2]
CONTAINER_PYTHON = REPO / ".venv" / "sagemaker-sklearn" / "bin" / "python"
IMAGE_VERSIONS = {"python": "3.9", "scikit-learn": "1.2.1", "pandas": "1.1.3"}

# Run by the container's interpreter: the serving contract as the scikit-learn image's server calls it.
SERVE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import inference, pandas, sklearn
model = inference.model_fn(sys.argv[2])
features = pandas.read_csv(sys.argv[3])
csv_body = features.to_csv(index=False)
json_body = json.dumps({"instances": json.loads(features.to_json(orient="records"))})
answers = {}
for content_type, body in (("text/csv", csv_body), ("application/json", json_body)):
    text, accept = inference.output_fn(inference.predict_fn(inference.input_fn(body, content_type), model),
                                       "application/json")
    answers[content_type] = json.loads(text)["predictions"]
# what a batch transform sends (SplitType Line, a MultiRecord mini-batch) and asks for back
lines_body = "\\n".join(json.dumps(r) for r in json.loads(json_body)["instances"]).encode()
text, accept = inference.output_fn(inference.predict_fn(inference.input_fn(lines_body, "application/jsonlines"), model),
                                   "application/jsonlines")
answers["application/jsonlines"] = [json.loads(line)["prediction"] for line in text.splitlines()]
answers["records"] = inference.predict_records(model, json.loads(json_body)["instances"])
answers["versions"] = {"python": "%d.%d" % sys.version_info[:2], "scikit-learn": sklearn.__version__,
                       "pandas": pandas.__version__}
print(json.dumps(answers))
"""


def _binary_mixed() -> dict[str, pd.DataFrame]:
    """Breast cancer plus a categorical column and missing values: both kinds of features, imputed."""
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.iloc[:, :6].copy()
    rng = np.random.default_rng(3)
    frame["clinic"] = rng.choice(["north", "south", "east"], len(frame))
    frame.loc[rng.random(len(frame)) < 0.1, "mean texture"] = np.nan
    frame.loc[rng.random(len(frame)) < 0.1, "clinic"] = None
    frame["diagnosis"] = np.where(data.target == 1, "benign", "malignant")
    frame = frame.sample(frac=1.0, random_state=5).reset_index(drop=True)
    return {"train": frame.iloc[:400], "validation": frame.iloc[400:480], "test": frame.iloc[480:]}


def _diabetes() -> dict[str, pd.DataFrame]:
    frame = load_diabetes(as_frame=True, scaled=False).frame.sample(frac=1.0, random_state=5).reset_index(drop=True)
    return {"train": frame.iloc[:300], "validation": frame.iloc[300:370], "test": frame.iloc[370:]}


CASES: dict[str, tuple[Callable[[], dict[str, pd.DataFrame]], dict[str, str], str, float]] = {
    # name: (splits, hyperparameters, primary metric, floor)
    "iris": (iris_splits, {"target": "species", "problem_type": "multiclass_classification"}, "f1_macro", 0.8),
    "mixed": (_binary_mixed, {"target": "diagnosis", "problem_type": "binary_classification"}, "f1_macro", 0.7),
    "diabetes": (_diabetes, {"target": "target", "problem_type": "regression"}, "r2", 0.2),
}


def upload_train_parts_with_roles(aws: FakeAws, run: str, frame: pd.DataFrame, target: str) -> None:
    """The train channel as two part files and the columns.json Preprocess writes: the image has no pyarrow,
    so train.py's pandas reader reads the parts (stepml_tabular.channels), on the image's pandas."""
    aws.s3.delete_object(Bucket=aws.bucket, Key=f"processed/{run}/train/train.csv")
    half = len(frame) // 2
    for index, part in enumerate((frame.iloc[:half], frame.iloc[half:])):
        aws.put(f"processed/{run}/train/part-{index:05d}.csv", part.to_csv(index=False).encode())
    roles = {c: "numeric" if pd.api.types.is_numeric_dtype(frame[c]) else "categorical" for c in frame if c != target}
    document = {"format": 1, "target": target, "roles": roles}
    aws.put(f"processed/{run}/train/columns.json", json.dumps(document).encode())


@pytest.fixture(scope="module")
def container_python() -> Path:
    if not CONTAINER_PYTHON.exists():
        pytest.fail(f"{CONTAINER_PYTHON} is missing: `make install` builds it (it needs a Python 3.9)")
    return CONTAINER_PYTHON


@pytest.mark.parametrize("case", list(CASES))
def test_trains_and_serves_with_the_images_versions(
    case: str, container_python: Path, aws: FakeAws, tmp_path: Path
) -> None:
    make_splits, hyperparameters, primary, floor = CASES[case]
    splits = make_splits()
    run = f"container-{case}"
    upload_splits(aws, run, splits)
    if case == "mixed":
        upload_train_parts_with_roles(aws, run, splits["train"], target="diagnosis")
    upload_source(aws)
    request = asl_request("Train", pipeline_state(aws, run, {**hyperparameters, "seed": "42"}))
    store = RecordStore(aws.bucket, aws.s3)

    job = create_training_job(store, request, base_env={"STANDIN_TRAINING_PYTHON": str(container_python)})

    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    model_tar = aws.get(job["ModelArtifacts"]["S3ModelArtifacts"].removeprefix(f"s3://{aws.bucket}/"))
    model_dir = tmp_path / "model"
    with tarfile.open(fileobj=io.BytesIO(model_tar), mode="r:gz") as tar:
        tar.extractall(model_dir, filter="data")
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["sklearn_version"] == IMAGE_VERSIONS["scikit-learn"]  # trained in the image's versions
    outputs = untar(aws.get(f"models/stepml-{run}/output/output.tar.gz"))
    metrics = json.loads(outputs["metrics.json"])
    assert metrics["primary_metric"] == primary and metrics["test"][primary] > floor, metrics["test"]

    target = hyperparameters["target"]
    features_csv = tmp_path / "features.csv"
    splits["test"].drop(columns=target).to_csv(features_csv, index=False)
    served = subprocess.run(
        [str(container_python), "-c", SERVE, str(REPO / "training"), str(model_dir), str(features_csv)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert served.returncode == 0, served.stderr[-3000:]
    answers: dict[str, Any] = json.loads(served.stdout.strip().splitlines()[-1])
    assert answers["versions"] == IMAGE_VERSIONS

    # train.py's own test-split predictions, made in the same image, are what serving must answer
    trained = pd.read_csv(io.BytesIO(outputs["test_predictions.csv"]))
    expected = trained["y_pred"].tolist()
    assert len(expected) == len(splits["test"])
    for route in ("text/csv", "application/json", "application/jsonlines", "records"):
        got = answers[route]
        if hyperparameters["problem_type"] == "regression":
            assert np.allclose(got, expected, rtol=1e-9, atol=1e-9), route
        else:
            assert [str(p) for p in got] == [str(p) for p in expected], route
