"""The Monitor function on moto: a registered version's baseline against a file or the prediction log's window
(a Query of the template's ModelFeatures index), the report in S3, the EMF metrics, and its errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pipeline_core.aws.prediction_log import MAX_FEATURE_BYTES, PredictionLog, PredictionRecord, bounded_rows
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.errors import BaselineNotFoundError, ModelNotFoundError, MonitoringError
from pipeline_core.stages.baseline import baseline_document, build_baseline
from pipeline_core.stages.monitor import DEFAULT_WINDOW_HOURS, input_key

from functions.monitor import app as monitor_app
from stepml.embedded.template import stack_model
from tests.conftest import FakeAws
from tests.unit.test_baseline import profile_of

TEMPLATE = Path(__file__).parents[2] / "infra" / "template.yaml"
LOG_TABLE = "stepml-test-prediction-log"
MODEL = "shop"
ROLES = {
    "price": ("numeric", "numeric"),
    "weight": ("numeric", "numeric"),
    "items": ("numeric", "numeric"),
    "channel": ("categorical", "categorical"),
    "member": ("boolean", "boolean"),
    "bought": ("categorical", "target"),
}


def shop_frame(rows: int, seed: int, shift: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "price": rng.lognormal(3 + (0.6 if shift else 0), 0.4, rows).round(2),
            "weight": rng.normal(5, 1, rows).round(3),
            "items": rng.integers(1, 6, rows).astype(float),
            "channel": rng.choice(["web", "app", "shop"], rows, p=[0.2, 0.2, 0.6] if shift else [0.5, 0.3, 0.2]),
            "member": rng.choice(["true", "false"], rows),
        }
    )
    return frame.assign(bought=np.where(frame["price"] > 20, "yes", "no"))


def registry_record(version_tag: str, baseline_uri: str | None) -> dict[str, Any]:
    return {
        "model_name": MODEL, "status": "approved", "problem_type": "binary_classification", "target": "bought",
        "feature_columns": list(ROLES)[:-1], "metrics": {"f1_macro": 0.9}, "primary_metric": "f1_macro",
        "model_artifact": f"s3://b/models/{version_tag}/output/model.tar.gz", "dataset_uri": "s3://b/raw/r/d.csv",
        "dataset_sha256": "0" * 64, "training_job_name": f"stepml-{version_tag}", "endpoint_name": "shop-ep",
        "execution_arn": f"arn:aws:states:us-east-1:123456789012:execution:stepml:{version_tag}",
        "evaluation_uri": "s3://b/e.json", "report_uri": "s3://b/r.html", "created_at": "2026-11-30T09:00:00+00:00",
        "baseline_uri": baseline_uri,
    }  # fmt: skip


@pytest.fixture
def monitored(aws: FakeAws, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAws]:
    """The prediction log table as the template declares it, and model shop: v1 from before baselines, v2 with
    the baseline of 3,000 training rows."""
    spec = stack_model(TEMPLATE, "stepml-test", {"Target": "local"}).tables["PredictionLogTable"]
    aws.dynamodb.create_table(
        TableName=LOG_TABLE, KeySchema=spec.key_schema, AttributeDefinitions=spec.attribute_definitions,
        GlobalSecondaryIndexes=list(spec.global_secondary_indexes), BillingMode="PAY_PER_REQUEST",
    )  # fmt: skip
    monkeypatch.setenv("PREDICTION_LOG_TABLE", LOG_TABLE)
    train = shop_frame(3000, seed=1)
    baseline = build_baseline(train, profile_of(train, ROLES, "bought"), "1" * 64)
    uri = aws.put("processed/run-2/baseline.json", baseline_document(baseline))
    registry = ModelRegistry(aws.registry_table, aws.dynamodb)
    registry.register_model(registry_record("run-1", None))
    registry.register_model(registry_record("run-2", uri))
    yield aws


def csv_upload(aws: FakeAws, key: str, frame: pd.DataFrame) -> str:
    return aws.put(key, frame.to_csv(index=False).encode())


def emf_documents(text: str) -> list[dict[str, Any]]:
    """The EMF documents the function printed in stepml/Monitoring."""
    found = []
    for line in text.splitlines():
        if '"_aws"' in line:
            document = json.loads(line)
            if document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "stepml/Monitoring":
                found.append(document)
    return found


def test_a_shifted_file_drifts_on_exactly_the_shifted_features(
    monitored: FakeAws, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = csv_upload(monitored, "monitoring/shop/inputs/shifted.csv", shop_frame(1500, seed=9, shift=True))
    result = monitor_app.lambda_handler({"model_name": MODEL, "data": uri}, None)

    assert (result["version"], result["verdict"]) == (2, "drift")  # v2: the champion
    assert result["drifted_features"] == ["price", "channel"]
    by_name = {f["name"]: f for f in result["features"]}
    assert by_name["price"]["test"] == "ks" and by_name["channel"]["test"] == "chi_square"
    assert all(by_name[f]["verdict"] == "ok" for f in ("weight", "items", "member"))
    assert result["drift_score_max"] == max(f["psi"] for f in result["features"])
    assert result["source"] == {**result["source"], "kind": "file", "uri": uri}
    report = json.loads(monitored.get(result["report_uri"].removeprefix(f"s3://{monitored.bucket}/")))
    assert report["drifted_features"] == ["price", "channel"]
    assert result["report_uri"].startswith(f"s3://{monitored.bucket}/monitoring/shop/")
    page = monitored.get(result["report_html_uri"].removeprefix(f"s3://{monitored.bucket}/")).decode()
    assert page.count("<svg") == 5 and "Drift report: shop v2" in page

    (metrics,) = emf_documents(capsys.readouterr().out)
    assert metrics["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["ModelName"]]  # nothing but ModelName
    assert metrics["ModelName"] == MODEL and metrics["DriftedFeatures"] == [2.0]
    assert metrics["DriftScoreMax"] == [pytest.approx(result["drift_score_max"])]
    units = {m["Name"]: m["Unit"] for m in metrics["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units == {"DriftedFeatures": "Count", "DriftScoreMax": "None", "MonitoredRows": "Count"}


def test_a_fresh_sample_of_the_training_data_does_not_drift(monitored: FakeAws) -> None:
    uri = csv_upload(monitored, "datasets/fresh.csv", shop_frame(1500, seed=10))
    result = monitor_app.lambda_handler({"model_name": MODEL, "data": uri}, None)
    assert (result["verdict"], result["drifted_features"]) == ("no_drift", [])
    assert result["unseen_columns"] == [] and result["missing_columns"] == []  # the target is a known column


def test_too_few_rows_is_insufficient_data_and_publishes_no_drift_metrics(
    monitored: FakeAws, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = csv_upload(monitored, "datasets/few.csv", shop_frame(30, seed=11, shift=True))
    result = monitor_app.lambda_handler({"model_name": MODEL, "data": uri}, None)
    assert (result["verdict"], result["drifted_features"]) == ("insufficient_data", [])
    assert result["message"] == "insufficient data: 30 rows, at least 100 are needed to judge drift"
    (metrics,) = emf_documents(capsys.readouterr().out)
    assert "DriftedFeatures" not in metrics and metrics["MonitoredRows"] == [30.0]
    # the thresholds are the request's to change
    lowered = monitor_app.lambda_handler({"model_name": MODEL, "data": uri, "thresholds": {"min_rows": 20}}, None)
    assert lowered["verdict"] == "drift" and lowered["thresholds"]["min_rows"] == 20


def log_requests(
    aws: FakeAws, hours_ago: float, frames: list[pd.DataFrame], model: str = MODEL, version: int = 2
) -> None:
    log = PredictionLog(LOG_TABLE, dynamodb_client=aws.dynamodb, clock=lambda: time.time() - hours_ago * 3600)
    for index, frame in enumerate(frames):
        rows = frame.drop(columns="bought").to_dict("records")
        log.write(
            PredictionRecord(f"{model}-{hours_ago}-{index}", model, version, 3.0, 1.0, len(rows), "0" * 64, rows=rows)
        )


def test_the_window_reads_the_models_logged_rows_of_the_last_hours_only(monitored: FakeAws) -> None:
    shifted = shop_frame(400, seed=12, shift=True)
    log_requests(monitored, 1, [shifted.iloc[:200], shifted.iloc[200:300]])
    log_requests(monitored, 3, [shifted.iloc[300:]], version=1)
    log_requests(monitored, DEFAULT_WINDOW_HOURS + 2, [shop_frame(500, seed=13)])  # too old
    log_requests(monitored, 1, [shop_frame(500, seed=14)], model="other")  # another model
    # a request logged without its rows is not in the index (sparse)
    PredictionLog(LOG_TABLE, dynamodb_client=monitored.dynamodb).write(
        PredictionRecord("no-rows", MODEL, 2, 1.0, 1.0, 5, "0" * 64)
    )

    result = monitor_app.lambda_handler({"model_name": MODEL}, None)
    assert result["rows"] == 400 and result["source"]["kind"] == "prediction_log"
    assert result["source"]["requests"] == 3 and result["source"]["model_versions"] == {"1": 100, "2": 300}
    assert result["drifted_features"] == ["price", "channel"]
    capped = monitor_app.lambda_handler({"model_name": MODEL, "max_rows": 250}, None)
    assert capped["rows"] == 100 and capped["source"]["capped"]  # whole requests, newest first (the 100 rows)
    narrow = monitor_app.lambda_handler({"model_name": MODEL, "since_hours": 2}, None)
    assert narrow["rows"] == 300


def test_errors_name_what_is_wrong_and_what_to_do(monitored: FakeAws) -> None:
    with pytest.raises(ModelNotFoundError, match="no model named 'shoe' in the registry: `stepml models` lists"):
        monitor_app.lambda_handler({"model_name": "shoe"}, None)
    with pytest.raises(ModelNotFoundError, match="has no version 7: its versions are 1, 2"):
        monitor_app.lambda_handler({"model_name": MODEL, "version": 7}, None)
    with pytest.raises(BaselineNotFoundError, match="shop v1 has no baseline: it was registered before drift"):
        monitor_app.lambda_handler({"model_name": MODEL, "version": 1}, None)
    with pytest.raises(MonitoringError, match="since_hours: Input should be greater than 0"):
        monitor_app.lambda_handler({"model_name": MODEL, "since_hours": 0}, None)
    with pytest.raises(MonitoringError, match=r"thresholds\.psi: Input should be greater than or equal to 0"):
        monitor_app.lambda_handler({"model_name": MODEL, "thresholds": {"psi": -1}}, None)
    monitored.s3.delete_object(Bucket=monitored.bucket, Key="processed/run-2/baseline.json")
    with pytest.raises(BaselineNotFoundError, match="no longer exists"):
        monitor_app.lambda_handler({"model_name": MODEL}, None)


def test_rows_are_kept_whole_within_the_item_bound() -> None:
    rows = [{"a": i, "b": "x" * 100} for i in range(1000)]
    text, kept, truncated = bounded_rows(rows)
    assert truncated and 0 < kept < 1000 and len(text) <= MAX_FEATURE_BYTES
    assert json.loads(text) == rows[:kept]
    small = rows[:3]
    assert bounded_rows(small) == (json.dumps(small, separators=(",", ":")), 3, False)
    assert bounded_rows([{"a": "x" * 100}], max_bytes=50) == ("[]", 0, True)


def test_a_truncated_request_is_marked_in_the_log(monitored: FakeAws) -> None:
    rows = [{"price": 1.0, "note": "y" * 500} for _ in range(400)]
    log = PredictionLog(LOG_TABLE, dynamodb_client=monitored.dynamodb)
    log.write(PredictionRecord("big", MODEL, 2, 1.0, 1.0, len(rows), "0" * 64, rows=rows))
    item = monitored.dynamodb.get_item(TableName=LOG_TABLE, Key={"request_id": {"S": "big"}})["Item"]
    assert item["features_truncated"] == {"BOOL": True} and int(item["features_rows"]["N"]) < 400
    assert item["features_at"] == item["timestamp"]
    assert len(io.BytesIO(item["features"]["S"].encode()).getvalue()) <= MAX_FEATURE_BYTES


def test_local_files_are_uploaded_under_the_models_monitoring_prefix() -> None:
    moment = pd.Timestamp("2026-11-30T12:00:00Z").to_pydatetime()
    assert input_key("shop", "/tmp/x/new data.csv", moment) == "monitoring/shop/inputs/20261130T120000Z-new data.csv"


def test_the_monitor_function_runs_without_scipy_sklearn_matplotlib_or_pandera() -> None:
    """On AWS its package is the shared layer and the AWS SDK for pandas layer (pandas, numpy, pyarrow) only
    (functions/monitor/requirements.txt): the statistics, the reading of data and the report need nothing else."""
    repo = Path(__file__).parents[2]
    paths = [str(repo / "functions" / "monitor"), str(repo / "functions" / "shared")]
    script = f"""
import sys
for name in ('scipy', 'sklearn', 'matplotlib', 'pandera'):
    sys.modules[name] = None  # importing it raises ImportError
sys.path[:0] = {paths!r}
import app
import numpy as np
import pandas as pd
from pipeline_core.models import ColumnProfile, DataProfile
from pipeline_core.stages.baseline import build_baseline
from pipeline_core.stages.drift import Thresholds
from pipeline_core.stages.monitor import MonitorResult, SourceSummary, assess
from pipeline_core.stages.monitor_data import monitored_data
from pipeline_core.stages.monitor_report import render_report

def frame(rows, shift):
    rng = np.random.default_rng(rows)
    return pd.DataFrame({{"x": rng.normal(shift, 1, rows), "c": rng.choice(["a", "b"], rows), "y": ["t"] * rows}})

columns = [ColumnProfile(name="x", dtype="numeric", role="numeric", reason="", missing=0),
           ColumnProfile(name="c", dtype="categorical", role="categorical", reason="", missing=0),
           ColumnProfile(name="y", dtype="categorical", role="target", reason="", missing=0)]
profile = DataProfile(n_rows=500, n_columns=3, target="y", target_chosen_by="input",
    problem_type="binary_classification", problem_type_chosen_by="input", problem_type_reason="",
    feature_columns=["x", "c"], columns=columns)
baseline = build_baseline(frame(500, 0.0), profile, "0" * 64)
verdict, features, message = assess(baseline, monitored_data(frame(300, 2.0), baseline), Thresholds())
result = MonitorResult(model_name="m", version=1, baseline_uri="s3://b/k", report_id="r", created_at="t",
    verdict=verdict, message=message, rows=300, drifted_features=[f.name for f in features if f.drifted],
    drift_score_max=None, features=features, source=SourceSummary(kind="file"), thresholds=Thresholds(),
    report_uri="s3://b/r.json", report_html_uri="s3://b/r.html")
assert "<svg" in render_report(result) and result.drifted_features == ["x"], message
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
