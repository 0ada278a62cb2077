"""inference.py's fast path is taken, and exact, under the SageMaker image's versions.

The serving container (``sagemaker-scikit-learn:1.2-1-cpu-py3``: Python 3.9, scikit-learn 1.2.1, numpy 1.24)
runs the same inference.py, and its fast path leans on things that differ between versions: zip's
``strict`` (Python 3.10+: it once made the plan silently None there, so the container always ran the whole
pipeline) and HistGradientBoosting's fitted node arrays. tests/integration/test_sagemaker_container.py
checks the answers; this checks that they come from the fast path: the plan and the tree walk are built
and pass their load checks in that interpreter, and equal the pipeline's predictions.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTAINER_PYTHON = REPO / ".venv" / "sagemaker-sklearn" / "bin" / "python"

# Run by the image's interpreter: train with train.py, save and load back through model_fn, then compare.
CHECK = """
import json, sys, tempfile
sys.path.insert(0, sys.argv[1])
import numpy as np, pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
import inference, train

def mixed():
    rng = np.random.default_rng(4)
    n = 400
    frame = pd.DataFrame({"size": rng.normal(10, 2, n), "color": rng.choice(["red", "green", "blue"], n)})
    frame["label"] = np.where((frame["color"] == "red") | (frame["size"] > 12), "yes", "no")
    frame.loc[frame.index % 9 == 0, "size"] = np.nan
    frame.loc[frame.index % 11 == 0, "color"] = None
    return frame

cases = {
    "iris": (load_iris(as_frame=True).frame.astype({"target": str}), "multiclass_classification"),
    "breast_cancer": (load_breast_cancer(as_frame=True).frame, "binary_classification"),
    "diabetes": (load_diabetes(as_frame=True).frame, "regression"),
    "mixed": (mixed().rename(columns={"label": "target"}), "binary_classification"),
}
report = {}
for name, (frame, problem_type) in cases.items():
    outcome = train.train(
        frame, frame, frame, target="target", problem_type=problem_type, seed=0, algorithm="gradient-boosting"
    )
    directory = tempfile.mkdtemp()
    train.write_outputs(outcome, __import__("pathlib").Path(directory), __import__("pathlib").Path(directory))
    bundle = inference.model_fn(directory)
    plan = bundle["_fast_plan"]
    features = frame.drop(columns="target")
    records = features.to_dict("records") + [dict.fromkeys(features.columns)]
    expected = inference._to_list(
        bundle["pipeline"].predict(inference._prepare_frame(pd.DataFrame(records), bundle)), bundle
    )
    one_by_one = [inference.predict_records(bundle, [record])[0] for record in records]
    csv = inference.predict_fn(inference.input_fn(features.to_csv(index=False), "text/csv"), bundle)
    report[name] = {
        "plan": plan is not None,
        "forest": plan is not None and plan.forest is not None,
        "records_equal": one_by_one == expected,
        "csv_equal": csv == expected[:-1],
    }
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def container_python() -> Path:
    if not CONTAINER_PYTHON.exists():
        pytest.fail(f"{CONTAINER_PYTHON} is missing: `make install` builds it (it needs a Python 3.9)")
    return CONTAINER_PYTHON


def test_fast_path_is_built_and_exact_in_the_images_interpreter(container_python: Path) -> None:
    done = subprocess.run(
        [str(container_python), "-c", CHECK, str(REPO / "training")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(report) == {"iris", "breast_cancer", "diabetes", "mixed"}
    for name, checks in report.items():
        assert checks == {"plan": True, "forest": True, "records_equal": True, "csv_equal": True}, name
