"""`stepml monitor`'s own parts: its options, the request it sends, the summary it prints, its refusals."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from stepml.cli import build_parser
from stepml.monitor_commands import data_uri, format_result, monitor_function, request_of, threshold_pair
from stepml.targets import StackOutputs, TargetError


def parse(*args: str) -> argparse.Namespace:
    return build_parser().parse_args(["monitor", *args])


def test_options_become_the_functions_request() -> None:
    args = parse("--model", "shop", "--version", "3", "--since", "6", "--max-rows", "1000",
                 "--threshold", "psi=0.3", "--threshold", "min_rows=50")  # fmt: skip
    assert request_of(args, "shop", "s3://b/monitoring/x.csv") == {
        "model_name": "shop",
        "version": 3,
        "data": "s3://b/monitoring/x.csv",
        "since_hours": 6.0,
        "max_rows": 1000,
        "thresholds": {"psi": 0.3, "min_rows": 50},
    }
    assert request_of(parse(), "shop", None) == {"model_name": "shop"}  # the function's defaults otherwise
    assert parse("--target", "aws").target == "aws"


def test_a_threshold_is_name_equals_number() -> None:
    assert threshold_pair("p_value=0.001") == ("p_value", 0.001)
    assert threshold_pair(" min_rows = 20") == ("min_rows", 20)
    for bad in ("psi", "=0.2", "psi=high"):
        with pytest.raises(argparse.ArgumentTypeError):
            threshold_pair(bad)


class Outputs:
    def __init__(self, monitor: str | None, s3: Any = None) -> None:
        self.outputs = StackOutputs("arn:sm", "bucket", "registry", "runs", monitor_function=monitor)
        self.name = "aws"
        self.s3 = s3

    def client(self, service: str) -> Any:
        return self.s3


def test_a_stack_from_before_monitoring_is_named(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="no MonitorFunctionName output: it was deployed before drift monitoring"):
        monitor_function(Outputs(None))
    assert monitor_function(Outputs("stepml-dev-Monitor")) == "stepml-dev-Monitor"


def test_a_local_file_is_uploaded_under_the_models_prefix_and_others_are_refused(
    tmp_path: Path, moto_clients: Any
) -> None:
    s3 = moto_clients("s3")
    s3.create_bucket(Bucket="bucket")
    target = Outputs("fn", s3)
    path = tmp_path / "new.csv"
    path.write_text("a,b\n1,2\n")
    uri = data_uri(target, "shop", str(path))
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket="bucket")["Contents"]]
    assert uri == f"s3://bucket/{key}" and key.startswith("monitoring/shop/inputs/")
    assert key.endswith("-new.csv") and s3.get_object(Bucket="bucket", Key=key)["Body"].read() == b"a,b\n1,2\n"
    assert data_uri(target, "shop", "s3://elsewhere/x.parquet") == "s3://elsewhere/x.parquet"
    with pytest.raises(TargetError, match="no such file"):
        data_uri(target, "shop", str(tmp_path / "missing.csv"))
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    with pytest.raises(TargetError, match=r"a \.csv or \.parquet file is needed"):
        data_uri(target, "shop", str(tmp_path / "data.xlsx"))


def test_the_summary_has_a_line_per_feature_and_the_reports_location() -> None:
    feature = {
        "name": "price", "role": "numeric", "verdict": "drift", "drifted": True, "psi": 0.91234, "p_value": 1e-30,
        "missing_rate": 0.0, "baseline_missing_rate": 0.0, "reasons": ["the distribution shifted"],
    }  # fmt: skip
    quiet = {**feature, "name": "when", "role": "datetime", "verdict": "not_compared", "drifted": False,
             "psi": None, "p_value": None, "reasons": ["a datetime feature"]}  # fmt: skip
    result = {
        "model_name": "shop", "version": 2, "baseline_uri": "s3://b/processed/r/baseline.json",
        "source": {"kind": "prediction_log", "since": "a", "until": "b", "requests": 3, "model_versions": {"2": 400}},
        "rows": 400, "verdict": "drift", "message": "drift in 1 of 2 features: price",
        "thresholds": {"psi": 0.2, "p_value": 0.01, "missing_rate_increase": 0.1, "type_error_rate": 0.01,
                       "min_rows": 100},
        "features": [feature, quiet], "missing_columns": [], "unseen_columns": ["coupon"],
        "report_uri": "s3://b/monitoring/shop/r/report.json", "report_html_uri": "s3://b/monitoring/shop/r/report.html",
    }  # fmt: skip
    text = format_result(result, "/tmp/r.html")
    lines = text.splitlines()
    assert lines[1] == "Data        prediction log a to b: 3 requests, 400 rows (v2 400)"
    assert lines[2] == "Verdict     DRIFT: drift in 1 of 2 features: price"
    assert "Unseen      coupon (not columns of the training data)" in lines
    price = next(line for line in lines if line.startswith("price"))
    assert price.split()[:5] == ["price", "numeric", "drift", "*", "0.912"] and "1e-30" in price
    when = next(line for line in lines if line.startswith("when "))
    assert "not compared" in when and " - " in when
    assert lines[-3:] == [
        "Report      s3://b/monitoring/shop/r/report.html",
        "            s3://b/monitoring/shop/r/report.json (JSON)",
        "            open /tmp/r.html",
    ]
