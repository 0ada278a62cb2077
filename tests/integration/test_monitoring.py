"""Drift monitoring end to end on the embedded target: a real run's baseline, `stepml monitor` against a shifted
file and a fresh sample of the training distribution, and against the prediction log's window after requests
through `stepml serve`; the metrics reach CloudWatch as EMF from the function's log.

One model for the module, trained on 4,000 generated rows (three numeric features, two categorical, one
boolean): the shifted data moves two numeric features and one categorical, and only those may be called drifted.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stepml.cli import main
from tests.integration.conftest import PipelineRun, run_cli
from tests.integration.test_serve import serve_model

pytestmark = pytest.mark.slow
__all__ = ["serve_model"]  # the module-scoped `stepml serve` fixture, used here by name

MODEL = "monitor-shop"
SHIFTED = ["price", "weight", "channel"]


def shop(rows: int, seed: int, shift: bool = False) -> pd.DataFrame:
    """Generated shop orders; ``shift`` moves price (up by ~80%), weight (spread doubled) and channel (shares)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "price": rng.lognormal(3.0 + (0.6 if shift else 0.0), 0.4, rows).round(2),
            "weight": (5 + rng.normal(0, 2.0 if shift else 1.0, rows)).round(3),
            "items": rng.integers(1, 6, rows),
            "channel": rng.choice(["web", "app", "shop"], rows, p=[0.2, 0.2, 0.6] if shift else [0.5, 0.3, 0.2]),
            "region": rng.choice(["north", "south", "east", "west"], rows),
            "member": rng.choice(["true", "false"], rows, p=[0.3, 0.7]),
        }
    )
    noise = rng.normal(0, 5, rows)
    return frame.assign(bought=np.where(frame["price"] + 3 * frame["items"] + noise > 28, "yes", "no"))


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), out=out)
    return code, out.getvalue()


def last_json(text: str) -> Any:
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def data_dir(state_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("monitoring")
    shop(4000, seed=1).to_csv(path / "shop.csv", index=False)
    shop(1500, seed=2, shift=True).drop(columns="bought").to_csv(path / "shifted.csv", index=False)
    shop(1500, seed=3).to_csv(path / "fresh.csv", index=False)  # with the target column: a known column
    shop(40, seed=4, shift=True).to_csv(path / "few.csv", index=False)
    return path


@pytest.fixture(scope="module")
def trained(data_dir: Path) -> PipelineRun:
    run = run_cli(
        "--data", str(data_dir / "shop.csv"), "--target", "bought", "--model-name", MODEL, "--trainer", "linear",
        "--no-cache",
    )  # fmt: skip
    assert run.exit_code == 0 and run.result["status"] == "SUCCEEDED", run.output
    return run


def target() -> Any:
    from stepml.project import project_layout
    from stepml.targets import embedded_target

    return embedded_target(project_layout())


def test_the_run_registers_a_baseline_of_its_training_data(trained: PipelineRun) -> None:
    from pipeline_core.stages.baseline import read_baseline

    record = trained.result["registry"]
    assert record["baseline_uri"].endswith("/baseline.json")
    bucket, key = record["baseline_uri"].removeprefix("s3://").split("/", 1)
    baseline = read_baseline(target().client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    assert baseline.feature_names == record["feature_columns"]
    assert {f.name: f.role for f in baseline.features} == record["column_roles"]
    assert baseline.n_rows == 2400  # the train split of 4,000 rows at the default 20 % test, 20 % validation
    items = baseline.feature("items")
    # 5 values: one bin each, and one (empty in training) for values above the training maximum
    assert items.numeric is not None and items.numeric.edges == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert items.numeric.proportions[-1] == 0.0


def test_a_shifted_file_drifts_on_exactly_the_shifted_features(trained: PipelineRun, data_dir: Path) -> None:
    code, text = cli("monitor", "--model", MODEL, "--data", str(data_dir / "shifted.csv"), "--json")
    assert code == 0, text
    result = last_json(text)
    assert result["verdict"] == "drift" and sorted(result["drifted_features"]) == sorted(SHIFTED)
    assert result["version"] == trained.result["model_version"]
    features = {f["name"]: f for f in result["features"]}
    assert all(features[name]["psi"] >= 0.2 and features[name]["p_value"] < 0.01 for name in SHIFTED)
    assert result["source"]["uri"].startswith(f"s3://{target().outputs.data_bucket}/monitoring/{MODEL}/inputs/")
    assert Path(result["report_path"]).read_text().count("<svg") == 6
    # the human form says the same
    code, text = cli("monitor", "--model", MODEL, "--data", result["source"]["uri"])
    assert code == 0 and "DRIFT: drift in 3 of 6 features: price, weight, channel" in text
    assert "Report      s3://" in text


def test_a_fresh_sample_of_the_training_data_does_not_drift(trained: PipelineRun, data_dir: Path) -> None:
    code, text = cli("monitor", "--model", MODEL, "--data", str(data_dir / "fresh.csv"), "--json")
    assert code == 0, text
    result = last_json(text)
    assert (result["verdict"], result["drifted_features"], result["unseen_columns"]) == ("no_drift", [], [])
    assert max(f["psi"] for f in result["features"]) < 0.05


def test_too_few_rows_is_insufficient_data(trained: PipelineRun, data_dir: Path) -> None:
    code, text = cli("monitor", "--model", MODEL, "--data", str(data_dir / "few.csv"), "--json")
    result = last_json(text)
    assert code == 0 and (result["verdict"], result["drifted_features"]) == ("insufficient_data", [])
    code, text = cli("monitor", "--model", MODEL, "--data", result["source"]["uri"], "--threshold", "min_rows=30")
    assert code == 0 and "Thresholds  PSI ≥ 0.2 and p < 0.01" in text and "at least 30 rows" in text


def test_the_prediction_logs_window_after_requests_through_the_api(
    trained: PipelineRun, data_dir: Path, serve_model: Any
) -> None:
    log_table = target().client("dynamodb").describe_table(TableName="stepml-local-PredictionLogTable")["Table"]
    assert [i["IndexName"] for i in log_table["GlobalSecondaryIndexes"]] == ["ModelFeatures"]

    api = serve_model(MODEL)
    shifted = pd.read_csv(data_dir / "shifted.csv").head(600)
    for start in range(0, len(shifted), 100):
        rows = json.loads(shifted.iloc[start : start + 100].to_json(orient="records"))
        status, answer = api.request("POST", "/predict", {"instances": rows})
        assert status == 200, answer

    deadline, result = time.monotonic() + 30, {}
    while time.monotonic() < deadline:  # `stepml serve` writes the log in the background (within ~0.2 s)
        code, text = cli("monitor", "--model", MODEL, "--since", "1", "--json")
        assert code == 0, text
        result = last_json(text)
        if result["rows"] >= 600:
            break
        time.sleep(0.5)
    assert result["rows"] == 600 and result["source"]["kind"] == "prediction_log"
    assert result["source"]["requests"] == 6
    assert sorted(result["drifted_features"]) == sorted(SHIFTED)


def test_the_drift_metrics_reach_cloudwatch(trained: PipelineRun, data_dir: Path) -> None:
    """The function prints EMF; the local AWS ships it from the function log to CloudWatch, as Lambda does."""
    code, _ = cli("monitor", "--model", MODEL, "--data", str(data_dir / "shifted.csv"))
    assert code == 0
    cloudwatch = target().client("cloudwatch")
    dimensions = [{"Name": "ModelName", "Value": MODEL}]
    deadline, maximum = time.monotonic() + 30, None
    while time.monotonic() < deadline and maximum is None:
        points = cloudwatch.get_metric_statistics(
            Namespace="stepml/Monitoring", MetricName="DriftedFeatures", Dimensions=dimensions,
            StartTime=pd.Timestamp.now("UTC") - pd.Timedelta(hours=1), EndTime=pd.Timestamp.now("UTC"),
            Period=3600, Statistics=["Maximum"],
        )["Datapoints"]  # fmt: skip
        maximum = max((p["Maximum"] for p in points), default=None)
        time.sleep(0.5)
    assert maximum == 3.0


def test_errors_say_what_to_do(trained: PipelineRun, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline_core.aws.registry import ModelRegistry

    code, text = cli("monitor", "--model", "no-such-model")
    assert (code, text) == (2, "")
    assert "no model named 'no-such-model' in the registry" in capsys.readouterr().err
    code, _ = cli("monitor", "--model", MODEL, "--version", "99")
    assert code == 2 and "has no version 99" in capsys.readouterr().err
    # a version registered before monitoring existed has no baseline
    local = target()
    legacy = {**trained.result["registry"], "model_name": "monitor-legacy", "baseline_uri": None}
    ModelRegistry(local.outputs.registry_table, local.client("dynamodb")).register_model(legacy)
    code, _ = cli("monitor", "--model", "monitor-legacy")
    error = capsys.readouterr().err
    assert code == 2 and "monitor-legacy v1 has no baseline: it was registered before drift monitoring" in error
    assert "stepml run --data FILE --model-name monitor-legacy" in error
