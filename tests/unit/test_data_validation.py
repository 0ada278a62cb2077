"""ValidateData: good datasets are profiled; every bad input is rejected naming the problem, raw data kept."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from moto import mock_aws
from pipeline_core.aws.clients import client
from pipeline_core.aws.runs import RunLog
from pipeline_core.aws.s3 import ObjectStore, S3Uri
from pipeline_core.errors import ConfigurationError, DataValidationError
from pipeline_core.models import DataProfile, IngestResult, RunConfig
from pipeline_core.stages.data_path import DataPathSettings
from pipeline_core.stages.data_validation import (
    MIB,
    Limits,
    load_table,
    profile_table,
    rows_needed,
    split_sizes,
    validate_data,
)
from pipeline_core.stages.ingest import ingest
from pipeline_core.stages.validate_input import build_run_config
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from functions.validate_data.app import lambda_handler
from tests.conftest import REGION, FakeAws

BAD_INPUTS = Path(__file__).parents[1] / "data" / "bad_inputs"
_run_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def aws() -> Iterator[FakeAws]:
    """The conftest ``aws`` account, built once per module: moto's setup dominates these fast tests.

    Every upload and run uses fresh keys and run ids, so the tests do not see each other's objects.
    """
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
            patch.setenv(name, "testing")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        fake = FakeAws()
        for key, value in fake.env().items():
            patch.setenv(key, value)
        client.cache_clear()
        yield fake
        client.cache_clear()


def raw_key(ingested: IngestResult) -> str:
    return S3Uri.parse(ingested.raw_uri).key


def source_key(ingested: IngestResult) -> str:
    return S3Uri.parse(ingested.source_uri).key


def iris_frame() -> pd.DataFrame:
    bunch = load_iris(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["species"] = frame.pop("target").map(dict(enumerate(bunch.target_names)))
    return frame


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def run_ingest(aws: Any, name: str, data: bytes, **given: Any) -> tuple[RunConfig, IngestResult]:
    """Upload ``data`` as a user would and ingest it: the raw copy is what ValidateData reads."""
    run_id = f"run-{next(_run_numbers)}"
    source = aws.put(f"incoming/{run_id}/{name}", data)
    config = build_run_config({"dataset": source, **given}, run_id, aws.bucket, "stepml-test")
    execution = f"arn:aws:states:::execution:stepml:{run_id}"
    settings = DataPathSettings.from_env(aws.env())
    result = ingest(config, execution, ObjectStore(aws.s3), RunLog(aws.runs_table), settings=settings)
    return config, result


def profile(aws: Any, name: str, data: bytes, limits: Limits | None = None, **given: Any) -> DataProfile:
    config, ingested = run_ingest(aws, name, data, **given)
    return validate_data(config, ingested, ObjectStore(aws.s3), limits or Limits())


# --------------------------------------------------------------------------- good data


def test_iris_with_named_species_is_multiclass_by_inference(aws: Any) -> None:
    result = profile(aws, "iris.csv", csv_bytes(iris_frame()))

    assert (result.n_rows, result.n_columns) == (150, 5)
    assert (result.target, result.target_chosen_by) == ("species", "last_column")
    assert (result.problem_type, result.problem_type_chosen_by) == ("multiclass_classification", "inferred")
    assert "not numeric" in result.problem_type_reason and "'setosa'" in result.problem_type_reason
    assert result.class_labels == ["setosa", "versicolor", "virginica"]
    assert result.feature_columns == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert {c.name: c.dtype for c in result.columns} == {
        "sepal_length": "numeric",
        "sepal_width": "numeric",
        "petal_length": "numeric",
        "petal_width": "numeric",
        "species": "categorical",
    }


def test_diabetes_is_regression_because_the_target_has_many_values(aws: Any) -> None:
    frame = load_diabetes(as_frame=True, scaled=False).frame
    result = profile(aws, "diabetes.csv", csv_bytes(frame))

    assert result.problem_type == "regression"
    assert result.target == "target"
    n_distinct = frame["target"].nunique()
    assert result.problem_type_reason == (
        f"target 'target' holds non-negative integers with {n_distinct} distinct values (more than 10: counts or "
        "an ordinal scale), so it is regression"
    )
    assert result.class_labels == []


def test_breast_cancer_integer_target_is_binary_with_string_labels(aws: Any) -> None:
    frame = load_breast_cancer(as_frame=True).frame
    frame["target"] = frame["target"].astype(float)  # "1.0" in the file: labels still come out as "0", "1"
    result = profile(aws, "cancer.csv", csv_bytes(frame))

    assert result.problem_type == "binary_classification"
    assert result.class_labels == ["0", "1"]
    assert "integer-valued with 2 distinct values" in result.problem_type_reason


def test_target_and_problem_type_from_the_input(aws: Any) -> None:
    frame = iris_frame()
    frame["species"] = frame["species"].eq("virginica")
    result = profile(aws, "iris.csv", csv_bytes(frame), target="petal_length", problem_type="regression")

    assert (result.target, result.target_chosen_by) == ("petal_length", "input")
    assert (result.problem_type, result.problem_type_chosen_by) == ("regression", "input")
    assert "species" in result.feature_columns
    assert next(c for c in result.columns if c.name == "species").dtype == "boolean"


def test_parquet_input_is_read_with_pyarrow(aws: Any) -> None:
    frame = iris_frame()
    frame.loc[3, "sepal_width"] = None
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)

    result = profile(aws, "iris.parquet", buffer.getvalue())

    assert result.problem_type == "multiclass_classification"
    assert result.class_labels == ["setosa", "versicolor", "virginica"]
    assert next(c for c in result.columns if c.name == "sepal_width").missing == 1


def test_missing_values_and_whitespace_are_read_as_such() -> None:
    text = "a,b,label\n 1 ,x,yes\nNA,y,no\n?, z ,yes\n3,,no\n" + "".join(
        f"{i},w,{'yes' if i % 2 else 'no'}\n" for i in range(30)
    )
    table = load_table(text.encode(), "csv", Limits())
    config = build_run_config({"dataset": "s3://b/t.csv"}, "run", "b", "stepml-test")
    result = profile_table(table, config)

    columns = {c.name: c for c in result.columns}
    assert (columns["a"].dtype, columns["a"].missing) == ("numeric", 2)
    assert (columns["b"].dtype, columns["b"].missing) == ("categorical", 1)
    assert table.frame.loc[2, "b"] == "z"
    assert result.problem_type == "binary_classification"


def test_handler_reads_the_size_limit_from_the_environment(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline_core import observability

    if observability.metrics.provider.namespace is None:
        monkeypatch.setattr(observability.metrics.provider, "namespace", "stepml-test")
    config, ingested = run_ingest(aws, "iris.csv", csv_bytes(iris_frame()))
    event = {"config": config.model_dump(mode="json"), "ingest": ingested.model_dump(mode="json")}

    assert DataProfile.model_validate(lambda_handler(event, None)).n_rows == 150

    monkeypatch.setenv("MAX_DATASET_BYTES", "1000")
    with pytest.raises(DataValidationError) as caught:
        lambda_handler(event, None)
    assert f"is {ingested.size_bytes} bytes; the limit is 1000 bytes (MAX_DATASET_BYTES)" in str(caught.value)


def test_limits_from_env_reject_nonsense() -> None:
    assert Limits.from_env({}) == Limits(512 * MIB, MIB)
    assert Limits.from_env({"MAX_DATASET_BYTES": "2048"}).max_dataset_bytes == 2048
    with pytest.raises(ConfigurationError, match="MAX_DATASET_BYTES must be a number of bytes, got '1GB'"):
        Limits.from_env({"MAX_DATASET_BYTES": "1GB"})
    with pytest.raises(ConfigurationError, match="MAX_LINE_BYTES must be positive"):
        Limits.from_env({"MAX_LINE_BYTES": "0"})


# --------------------------------------------------------------------------- the bad-input corpus

CORPUS = [
    ("empty.csv", {}, ["the file is empty (0 bytes)"]),
    ("header_only.csv", {}, ["header line (5 columns: 'sepal_length'", "but no data rows"]),
    (
        "ragged_rows.csv",
        {},
        [
            "2 rows have a different number of fields than the header's 5",
            "row 5 (line 6) has 6 fields",
            "row 12 (line 13) has 3 fields",
        ],
    ),
    ("latin1.csv", {}, ["not valid UTF-8: byte 0xe8 at byte offset 149 (line 4, byte 27 of that line)", "Gen"]),
    (
        "missing_target.csv",
        {"target": "label"},
        ["target column 'label' is not in the dataset", "'sepal_length', 'sepal_width', 'petal_length'", "'species'"],
    ),
    (
        "text_in_numeric.csv",
        {},
        ["column 'age' is numeric in 96% of rows (29 of 30 non-empty values) but row 14 (line 15) has 'abc'"],
    ),
    ("empty_target.csv", {}, ["target column 'species' (the last column) is empty in all 30 rows"]),
    ("binary_garbage.csv", {}, ["NUL byte at byte offset 8 (line 3, byte 1 of that line)", "binary"]),
    ("gzip_named_csv.csv", {}, ["its first bytes say it is gzip-compressed"]),
    ("duplicate_columns.csv", {}, ["duplicate column names: 'sepal_width' at columns 2, 4"]),
    ("empty_column_name.csv", {}, ["header (line 1): column 4 of 5 has an empty name"]),
    (
        "too_few_rows.csv",
        {},
        ["not enough rows: 11 rows with a target", "validation 2, test 2", "at least 23 rows are needed"],
    ),
    (
        "rare_class.csv",
        {},
        [
            "target 'species': 1 of 2 classes have fewer than 3 rows: 'virginica' (1 row: row 41 (line 42))",
            "needs at least 3 rows of a class to put 1 in the test split and 2 in training",
            'Set rare_classes to "drop"',
        ],
    ),
    ("unclosed_quote.csv", {}, ["a quoted field starting on line 8 is never closed"]),
    ("no_header.csv", {}, ["the first line does not look like a header: 4 of its 5 values are numbers", "'5.1'"]),
    ("semicolon.csv", {}, ["has a single column", "it seems to use ';' as separator"]),
    ("not_parquet.parquet", {}, ["cannot be read as Parquet", "starts with b'sepal_le'"]),
]


@pytest.mark.parametrize(("name", "given", "fragments"), CORPUS, ids=[case[0] for case in CORPUS])
def test_bad_input_is_rejected_naming_the_problem(
    aws: Any, name: str, given: dict[str, Any], fragments: list[str]
) -> None:
    data = (BAD_INPUTS / name).read_bytes()
    config, ingested = run_ingest(aws, name, data, **given)

    with pytest.raises(DataValidationError) as caught:
        validate_data(config, ingested, ObjectStore(aws.s3), Limits())

    message = str(caught.value)
    assert message.startswith(f"dataset {ingested.raw_uri} (from {ingested.source_uri}): ")
    for fragment in fragments:
        assert fragment in message
    assert aws.get(raw_key(ingested)) == data  # the raw copy is kept, byte for byte
    assert aws.get(source_key(ingested)) == data


def test_corpus_readme_lists_every_file() -> None:
    readme = (BAD_INPUTS / "README.md").read_text()
    for path in BAD_INPUTS.iterdir():
        if path.name != "README.md":
            assert f"`{path.name}`" in readme


def test_a_single_enormous_line_is_rejected(aws: Any) -> None:
    data = b"a,b\n" + b"1," + b"9" * (MIB + MIB // 2 - 2) + b"\n2,3\n"
    config, ingested = run_ingest(aws, "long.csv", data)

    with pytest.raises(DataValidationError) as caught:
        validate_data(config, ingested, ObjectStore(aws.s3), Limits())

    assert "line 2 is 1572864 bytes long; the limit is 1048576 bytes per line (MAX_LINE_BYTES" in str(caught.value)
    assert aws.get(raw_key(ingested)) == data


def test_a_file_without_newlines_is_one_enormous_line(aws: Any) -> None:
    row = "5.1,3.5,1.4,0.2,setosa\r"  # old Mac line endings: no '\n' at all
    data = ("a,b,c,d,e\r" + row * 2000).encode()
    with pytest.raises(DataValidationError, match=r"line 1 is 46010 bytes long; the limit is 4096 bytes"):
        profile(aws, "mac.csv", data, limits=Limits(max_line_bytes=4096))


def test_a_dataset_over_the_size_limit_is_rejected_before_it_is_read(aws: Any) -> None:
    data = csv_bytes(iris_frame())
    with pytest.raises(DataValidationError) as caught:
        profile(aws, "iris.csv", data, limits=Limits(max_dataset_bytes=1024))
    assert f"the dataset is {len(data)} bytes; the limit is 1024 bytes (MAX_DATASET_BYTES)" in str(caught.value)


def test_text_in_several_numeric_cells_lists_rows_values_and_columns(aws: Any) -> None:
    frame = iris_frame().astype({"sepal_length": object, "petal_width": object})
    for row in (3, 9, 20, 21, 22, 23, 24):
        frame.loc[row, "sepal_length"] = f"n/a-{row}"
    frame.loc[100, "petal_width"] = "inf"

    with pytest.raises(DataValidationError) as caught:
        profile(aws, "iris.csv", csv_bytes(frame))

    message = str(caught.value)
    assert "column 'sepal_length' is numeric in 95% of rows (143 of 150 non-empty values)" in message
    assert "row 4 (line 5) has 'n/a-3', row 10 (line 11) has 'n/a-9'" in message
    assert "and 2 more" in message
    assert "column 'petal_width' is numeric in 100% of rows" in message
    assert "row 101 (line 102) has 'inf'" in message


def test_regression_forced_on_a_text_target_names_a_value(aws: Any) -> None:
    with pytest.raises(DataValidationError, match=r"needs a numeric target, but column 'species' is categorical"):
        profile(aws, "iris.csv", csv_bytes(iris_frame()), problem_type="regression")


def test_a_single_class_target_is_rejected(aws: Any) -> None:
    frame = iris_frame().head(50)  # all setosa
    with pytest.raises(DataValidationError, match=r"single class 'setosa' in all 50 rows"):
        profile(aws, "setosa.csv", csv_bytes(frame))


def test_rows_with_an_empty_target_do_not_count_towards_the_split(aws: Any) -> None:
    frame = iris_frame().iloc[::5].reset_index(drop=True).astype({"species": object})  # 30 rows, 10 per class
    frame.loc[~frame.index.isin([0, 1, 2, 10, 11, 12, 20, 21, 22]), "species"] = None  # 3 per class left
    with pytest.raises(DataValidationError) as caught:
        profile(aws, "iris.csv", csv_bytes(frame), problem_type="classification")
    assert "9 rows with a target (21 of 30 rows have an empty target and are not used)" in str(caught.value)


def test_split_sizes_and_rows_needed_agree() -> None:
    assert split_sizes(150, 0.2, 0.2) == (90, 30, 30)
    needed = rows_needed(0.2, 0.2)
    assert min(split_sizes(needed, 0.2, 0.2)) >= 5 > min(split_sizes(needed - 1, 0.2, 0.2))


# --------------------------------------------------------------------------- missing-value tokens


def _with_none_category(n: int = 84) -> pd.DataFrame:
    """84 rows whose target has a literal "None" class in half of them (the issue's case)."""
    return pd.DataFrame(
        {
            "dose": [float(i % 7) for i in range(n)],
            "smoker": ["None" if i % 2 else "Heavy" for i in range(n)],
            "effect": ["None" if i % 2 else "Strong" for i in range(n)],
        }
    )


def test_a_literal_none_category_is_a_value_not_missing(aws: Any) -> None:
    result = profile(aws, "effects.csv", csv_bytes(_with_none_category()))

    assert result.class_labels == ["None", "Strong"]
    columns = {c.name: c for c in result.columns}
    assert columns["smoker"].missing == 0 and columns["effect"].missing == 0
    assert result.n_rows == 84
