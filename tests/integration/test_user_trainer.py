"""docs/examples/text-classifier, the "bring your model" example, run end to end on the embedded target:
``stepml run --trainer DIR`` on a generated text dataset, then a prediction through the inference API
(``stepml serve``), which loads the trainer's own serving code in the stand-in's endpoint runtime."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO, run_cli
from tests.integration.test_serve import Served, serve_model  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "docs" / "examples" / "text-classifier"
WORDS = {
    "positive": ["great", "excellent", "love", "wonderful", "perfect", "happy", "recommend", "superb"],
    "negative": ["awful", "terrible", "hate", "broken", "worst", "refund", "disappointed", "useless"],
    "neutral": ["arrived", "tuesday", "package", "ordered", "colour", "size", "delivered", "box"],
}
FILLER = ["the", "it", "was", "and", "this", "product", "my", "a", "very", "really", "i", "item"]


def review(rng: random.Random, label: str) -> str:
    words = rng.sample(WORDS[label], 3) + rng.sample(FILLER, 4)
    rng.shuffle(words)
    return " ".join(words)


def reviews_csv(path: Path, rows: int = 240) -> Path:
    rng = random.Random(10)
    labels = [list(WORDS)[i % len(WORDS)] for i in range(rows)]
    lines = ["review,sentiment"] + [f"{review(rng, label)},{label}" for label in labels]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_text_classifier_example_trains_deploys_and_answers(
    tmp_path: Path,
    state_dir: Path,
    serve_model: Callable[[str | None], Served],  # noqa: F811 - the fixture imported above
) -> None:
    trainer = tmp_path / "text-classifier"
    shutil.copytree(EXAMPLE, trainer)
    data = reviews_csv(tmp_path / "reviews.csv")

    run = run_cli(
        *("--data", str(data), "--target", "sentiment", "--model-name", "reviews"),
        # no metrics.json from this trainer: Evaluate scores its test_predictions.csv
        *("--trainer", str(trainer)),
        *("--hyperparameter", "C=20", "--hyperparameter", "ngram_max=1"),
    )

    assert run.exit_code == 0, run.output
    result: dict[str, Any] = run.result
    assert result["status"] == "SUCCEEDED", result
    assert result["metrics"]["f1_macro"] > 0.8
    assert result["registry"]["status"] == "approved"

    api = serve_model("reviews")
    rows = [{"review": "i really love it, excellent and superb"}, {"review": "awful and broken, i want a refund"}]
    status, answer = api.request("POST", "/predict", {"instances": rows})
    assert status == 200, answer
    assert answer["predictions"] == ["positive", "negative"]
    assert answer["model_name"] == "reviews"
