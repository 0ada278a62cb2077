"""A text classifier for stepml: TF-IDF features and logistic regression, as a SageMaker script-mode trainer.

Training (the pipeline's Train state runs ``python train.py --target <column> --problem_type ... --seed ...``):
reads the train, validation and test channels (``SM_CHANNEL_*``: one CSV each, plus ``columns.json`` when the
pipeline wrote one), fits on train, reports its validation accuracy, refits on train + validation, saves the
model to ``SM_MODEL_DIR`` and its test predictions to ``SM_OUTPUT_DATA_DIR/test_predictions.csv``; the pipeline
scores those for the quality gate. Serving: ``model_fn``, ``input_fn``, ``predict_fn`` and ``output_fn`` below.

Runs on the SageMaker scikit-learn image 1.2-1 (Python 3.9): no syntax newer than that.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from text_features import TextColumns

MODEL_FILE = "model.joblib"


# --- training ----------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    # what the pipeline passes every trainer
    parser.add_argument("--target", required=True)
    parser.add_argument("--problem_type", default="multiclass_classification")
    parser.add_argument("--seed", type=int, default=42)
    # this trainer's own settings: `stepml run --hyperparameter C=3` or the input's "hyperparameters"
    # SageMaker passes a one-letter name with one dash: -C 20
    parser.add_argument("-C", "--C", dest="C", type=float, default=10.0, help="inverse regularisation strength")
    parser.add_argument("--ngram_max", type=int, default=2, help="word n-grams from 1 to this")
    parser.add_argument("--max_features", type=int, default=50000)
    return parser.parse_args(argv)


def read_channel(name: str) -> pd.DataFrame:
    """The channel's CSV as text (no value is taken for missing: "None" is a word here)."""
    directory = Path(os.environ[f"SM_CHANNEL_{name.upper()}"])
    files = sorted(directory.glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no CSV in the {name} channel ({directory})")
    return pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in files], ignore_index=True)


def text_columns(frame: pd.DataFrame, target: str) -> list[str]:
    """The columns to read: those the pipeline's columns.json calls text, else every column but the target."""
    roles_file = Path(os.environ["SM_CHANNEL_TRAIN"]) / "columns.json"
    if roles_file.is_file():
        roles = json.loads(roles_file.read_text()).get("roles", {})
        chosen = [name for name, role in roles.items() if role == "text"]
        if chosen:
            return chosen
    return [c for c in frame.columns if c != target]


def build_model(columns: list[str], args: argparse.Namespace) -> Pipeline:
    return Pipeline(
        [
            ("text", TextColumns(columns)),
            (
                "tfidf",
                TfidfVectorizer(ngram_range=(1, args.ngram_max), max_features=args.max_features, sublinear_tf=True),
            ),
            ("classify", LogisticRegression(C=args.C, max_iter=2000, random_state=args.seed)),
        ]
    )


def train(args: argparse.Namespace) -> None:
    if args.problem_type == "regression":
        raise ValueError("this trainer classifies text; the target is numeric (problem_type regression)")
    train_rows, validation_rows, test_rows = (read_channel(n) for n in ("train", "validation", "test"))
    columns = text_columns(train_rows, args.target)

    model = build_model(columns, args).fit(train_rows, train_rows[args.target])
    accuracy = float((model.predict(validation_rows) == validation_rows[args.target]).mean())
    print(f"[train] validation metrics: accuracy={accuracy:.5f}", flush=True)

    # the validation rows were only for that check: the final model learns from them too
    both = pd.concat([train_rows, validation_rows], ignore_index=True)
    model = build_model(columns, args).fit(both, both[args.target])
    joblib.dump(model, Path(os.environ["SM_MODEL_DIR"]) / MODEL_FILE)

    predictions = pd.DataFrame({"y_true": test_rows[args.target], "y_pred": model.predict(test_rows)})
    probabilities = model.predict_proba(test_rows)
    for index, label in enumerate(model.classes_):
        predictions[f"proba_{label}"] = probabilities[:, index]
    predictions.to_csv(Path(os.environ["SM_OUTPUT_DATA_DIR"]) / "test_predictions.csv", index=False)


# --- serving -----------------------------------------------------------------------------------------


def model_fn(model_dir: str) -> Pipeline:
    """Load what train() saved (the serving container calls this once)."""
    return joblib.load(Path(model_dir) / MODEL_FILE)


def input_fn(body: Any, content_type: str) -> pd.DataFrame:
    """The inference API's request, ``{"instances": [{column: value, ...}, ...]}`` as JSON, or batch scoring's
    (``application/jsonlines``: one ``{column: value, ...}`` per line), as a frame."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    if content_type.startswith("application/jsonlines"):
        return pd.DataFrame.from_records([json.loads(line) for line in text.splitlines() if line.strip()])
    if not content_type.startswith("application/json"):
        raise ValueError(f"unsupported content type {content_type!r}: send application/json")
    payload = json.loads(text)
    rows = payload["instances"] if isinstance(payload, dict) else payload
    return pd.DataFrame.from_records(rows)


def predict_fn(data: pd.DataFrame, model: Pipeline) -> list[str]:
    return [str(label) for label in model.predict(data)]


def output_fn(prediction: list[str], accept: str) -> Any:
    """``{"predictions": [...]}``, the answer the inference API reads; for batch scoring (``application/jsonlines``)
    one ``{"prediction": ...}`` line per row, in order."""
    if accept.startswith("application/jsonlines"):
        return "".join(json.dumps({"prediction": p}) + "\n" for p in prediction), "application/jsonlines"
    return json.dumps({"predictions": prediction}), "application/json"


if __name__ == "__main__":
    try:
        train(parse_args(sys.argv[1:]))
    except Exception as error:
        # SageMaker reports this file's text as the job's FailureReason
        Path(os.environ.get("SM_OUTPUT_DIR", "/opt/ml/output"), "failure").write_text(
            f"{type(error).__name__}: {error}"
        )
        raise
