"""``stepml predict`` on the embedded target: the BatchScoring state machine's real definition (PrepareBatch ->
Transform on the SageMaker stand-in -> AssembleBatch) scores a 100,000-row file with the model the session's iris
run registered, and every row's prediction is the one the endpoint answers online for the same row.

The file is drawn deterministically from the training data's distribution (per species, each feature's mean and
standard deviation in data/iris.csv), with an id column, the features in another order than in training, a text
column with commas and quotes, and missing values. One trained model serves every test (the session's iris_run).
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.sagemaker import StandInEndpoints
from pipeline_core.standin.runtime import reset_model_cache
from pipeline_core.standin.store import RecordStore

from stepml.cli import main
from stepml.project import project_layout
from stepml.targets import embedded_target
from tests.integration.conftest import REPO, PipelineRun

pytestmark = pytest.mark.slow

ROWS = 100_000
# the inference API's largest request (MAX_ROWS): the online side asks as a client of the API would
ONLINE_CHUNK = 1000


def scoring_frame(rows: int, seed: int = 12) -> pd.DataFrame:
    """``rows`` iris-like rows: each species' features drawn from its mean and spread in data/iris.csv."""
    iris = pd.read_csv(REPO / "data" / "iris.csv")
    features = [c for c in iris.columns if c != "species"]
    stats = iris.groupby("species")[features].agg(["mean", "std"])
    rng = np.random.default_rng(seed)
    species = rng.choice(stats.index.to_numpy(), size=rows)
    frame = pd.DataFrame({"id": [f"cust-{i:07d}" for i in range(rows)]})
    for feature in reversed(features):  # another column order than the model's
        mean = stats.loc[species, (feature, "mean")].to_numpy()
        std = stats.loc[species, (feature, "std")].to_numpy()
        frame[feature] = np.round(rng.normal(mean, std), 2)
    frame.insert(2, "note", np.where(np.arange(rows) % 9 == 0, 'called, said "later"', ""))
    frame.loc[frame.index % 101 == 0, features[1]] = np.nan  # missing values, imputed like in training
    return frame


def predict_cli(*args: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = main(["predict", "--json", *args], out=out)
    return code, json.loads(out.getvalue().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def model(iris_run: PipelineRun) -> dict[str, Any]:
    """The iris model's champion as this module starts: the session's run registered a version, and a test
    file that ran earlier in this process (which files, depends on how they were dealt to workers) may have
    registered a later one, which the endpoint and `stepml predict` then serve."""
    assert iris_run.exit_code == 0, iris_run.output
    target = embedded_target(project_layout())
    registry = ModelRegistry(target.outputs.registry_table, target.client("dynamodb"))
    champion = registry.champion(iris_run.result["registry"]["model_name"], consistent=True)
    assert champion is not None, "the session's iris run registered no champion"
    return champion.model_dump()


@pytest.fixture(scope="module")
def online(model: dict[str, Any]) -> Any:
    """The endpoint's own answers (the stand-in's runtime, as the inference API calls it), in API-sized requests."""
    target = embedded_target(project_layout())
    endpoint = StandInEndpoints(RecordStore(target.outputs.data_bucket, target.client("s3")))
    reset_model_cache()

    def answer(frame: pd.DataFrame) -> list[Any]:
        features = frame[model["feature_columns"]]
        records = [{k: (None if v != v else v) for k, v in r.items()} for r in features.to_dict("records")]
        predictions: list[Any] = []
        for start in range(0, len(records), ONLINE_CHUNK):
            predictions += endpoint.predict(model["endpoint_name"], records[start : start + ONLINE_CHUNK])
        return predictions

    return answer


def test_a_100k_row_file_scores_row_for_row_as_the_endpoint_answers(
    model: dict[str, Any], online: Any, tmp_path: Path
) -> None:
    frame = scoring_frame(ROWS)
    data = tmp_path / "customers.csv"
    frame.to_csv(data, index=False)
    original = data.read_bytes()
    out = tmp_path / "scored.csv"

    started = time.monotonic()
    code, result = predict_cli("--model", model["model_name"], "--data", str(data), "--out", str(out))
    seconds = time.monotonic() - started
    assert code == 0, result
    print(f"\nstepml predict: {ROWS} rows in {seconds:.1f} s ({ROWS / seconds:,.0f} rows/s), states {result['states']}")
    assert (result["rows"], result["model_version"], result["output"]) == (ROWS, model["version"], str(out))
    assert [s["name"] for s in result["states"]] == ["PrepareBatch", "AnyRows", "Transform", "AssembleBatch", "Scored"]

    with out.open(newline="", encoding="utf-8") as handle:
        scored = list(csv.reader(handle))
    with data.open(newline="", encoding="utf-8") as handle:
        given = list(csv.reader(handle))
    assert scored[0] == [*given[0], "prediction"]
    assert len(scored) == len(given) == ROWS + 1
    assert [row[:-1] for row in scored] == given  # every input cell, id and row order as they were
    expected = online(frame)
    batch = [row[-1] for row in scored[1:]]
    mismatches = [i for i, (b, o) in enumerate(zip(batch, expected, strict=True)) if b != o]
    assert not mismatches, f"{len(mismatches)} rows differ, the first: {mismatches[:5]}"
    assert len(set(batch)) == 3  # every species is predicted: a row shifted by one would show
    assert data.read_bytes() == original


def test_parquet_in_parquet_out_keeps_the_types_and_matches_too(
    model: dict[str, Any], online: Any, tmp_path: Path
) -> None:
    frame = scoring_frame(3000, seed=5)
    data = tmp_path / "customers.parquet"
    frame.to_parquet(data, index=False)
    code, result = predict_cli(
        "--model", model["model_name"], "--version", str(model["version"]), "--data", str(data),
        "--out", str(tmp_path / "scored.pq"), "--prediction-column", "species_predicted",
    )  # fmt: skip
    assert code == 0, result
    table = pq.read_table(tmp_path / "scored.pq")
    assert table.schema.names == [*frame.columns, "species_predicted"]
    scored = table.to_pandas()
    pd.testing.assert_frame_equal(scored[frame.columns], frame)
    assert scored["species_predicted"].tolist() == online(frame)


def test_a_bad_file_fails_naming_what_is_wrong_and_loses_nothing(model: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "scored.csv"
    out.write_text("the scores of yesterday\n")
    frame = scoring_frame(50)
    missing = model["feature_columns"][-1]
    cases = {
        "no-column.csv": (frame.drop(columns=missing), f"lacks the feature column(s) ['{missing}']"),
        "bad-value.csv": (frame.assign(**{missing: frame[missing].astype(object)}), "row 7: feature"),
    }
    cases["bad-value.csv"][0].loc[6, missing] = "n/a?"
    for name, (bad, message) in cases.items():
        data = tmp_path / name
        bad.to_csv(data, index=False)
        original = data.read_bytes()
        code, result = predict_cli("--model", model["model_name"], "--data", str(data), "--out", str(out))
        assert code == 1, result
        assert (result["status"], result["failed_state"], result["error"]) == (
            "FAILED",
            "PrepareBatch",
            "DataValidationError",
        )
        assert message in result["cause"] and missing in result["cause"], result["cause"]
        assert result["cause"].startswith(str(data)), result["cause"]  # named as the user named it
        assert data.read_bytes() == original  # the input as it was
        assert out.read_text() == "the scores of yesterday\n"  # --out untouched
        assert result["output"] is None and result["output_uri"] is None


def test_an_unknown_version_is_refused_before_anything_is_uploaded(model: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "few.csv"
    scoring_frame(5).to_csv(data, index=False)
    out = io.StringIO()
    code = main(
        [
            "predict",
            "--model",
            model["model_name"],
            "--version",
            "999",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "o.csv"),
        ],
        out=out,
    )
    assert code == 2
    assert not (tmp_path / "o.csv").exists()


def test_a_header_only_file_scores_to_a_header(model: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "empty.csv"
    data.write_text("id," + ",".join(model["feature_columns"]) + "\n")
    code, result = predict_cli("--model", model["model_name"], "--data", str(data), "--out", str(tmp_path / "e.csv"))
    assert code == 0, result
    assert result["rows"] == 0 and "Transform" not in [s["name"] for s in result["states"]]
    assert (tmp_path / "e.csv").read_text() == data.read_text().rstrip("\n") + ",prediction\n"
