"""Batch scoring's files: reading CSV and Parquet inputs, the JSON Lines the model gets, and the scored file the
predictions are joined into (order, ids, headers, quoting, types, empty files, wrong columns, bad values)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_core.errors import BatchOutputError, DataValidationError
from pipeline_core.stages import batch_files
from pipeline_core.stages.batch_files import InputFile, assemble, check_columns, open_input, write_records

FEATURES = ["x", "colour"]
KINDS = {"x": "numeric", "colour": "categorical"}


def csv_file(tmp_path: Path, text: str, name: str = "in.csv") -> InputFile:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return open_input(path, name)


def records_of(source: InputFile, features: list[str] = FEATURES, kinds: dict[str, str] = KINDS) -> list[Any]:
    out = io.BytesIO()
    count = write_records(source, "in", features, kinds, out)
    lines = out.getvalue().decode().splitlines()
    assert count == len(lines)
    return [json.loads(line) for line in lines]


def scored(
    source: InputFile, predictions: list[Any], tmp_path: Path, fmt: str = "csv", regression: bool = False
) -> Path:
    output = io.BytesIO("".join(json.dumps({"prediction": p}) + "\n" for p in predictions).encode())
    path = tmp_path / f"scored.{fmt}"
    rows = assemble(source, "in", len(predictions), output, "out", "prediction", fmt, regression, path)
    assert rows == len(predictions)
    return path


# --- reading ---------------------------------------------------------------------------------------------


def test_a_csv_row_keeps_its_ids_order_and_text_and_the_model_gets_only_its_features(tmp_path: Path) -> None:
    text = (
        "\ufeffid,colour,note,x\n"  # a byte-order mark, as Excel writes, is not part of the first name
        '007,red,"a note, with ""quotes""",1.5\n'
        '008, blue ,"two\nlines",-2\n'
        "009,,,\n"
    )
    source = csv_file(tmp_path, text)
    assert source.format == "csv" and source.columns == ["id", "colour", "note", "x"]
    assert records_of(source) == [
        {"x": 1.5, "colour": "red"},
        {"x": -2, "colour": "blue"},  # text stripped, as the pipeline reads it; numbers as JSON numbers
        {"x": None, "colour": None},  # an empty cell is a missing value
    ]
    path = scored(source, ["a", "b", "c"], tmp_path)
    with path.open(newline="", encoding="utf-8") as handle:
        assert list(csv.reader(handle)) == [
            ["id", "colour", "note", "x", "prediction"],
            ["007", "red", 'a note, with "quotes"', "1.5", "a"],  # "007" stays "007"
            ["008", " blue ", "two\nlines", "-2", "b"],  # cells as they were read, quoted where they need it
            ["009", "", "", "", "c"],
        ]


def test_missing_value_tokens_and_numbers_are_read_as_the_pipeline_reads_a_dataset(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "x,colour\n?,NA\nNULL,None\n1,234.5,n/a\n-1e3,#N/A\n".replace("1,234.5", '"1,234.5"'))
    assert records_of(source) == [
        {"x": None, "colour": "NA"},  # "NA"/"None" are categories in a text column, missing in a numeric one
        {"x": None, "colour": "None"},
        {"x": 1234.5, "colour": None},  # thousands separators in groups of three
        {"x": -1000.0, "colour": None},
    ]
    assert records_of(csv_file(tmp_path, "x,colour\nNA,a\n", "na.csv")) == [{"x": None, "colour": "a"}]


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("abc", "row 2: feature 'x' is numeric: 'abc' is not a number"),
        ("1,23", "row 2: feature 'x' is numeric: '1,23' is not a number"),
        ("inf", "row 2: feature 'x' is numeric: 'inf' is not a number"),
    ],
)
def test_a_value_a_numeric_feature_cannot_take_is_named_by_row_and_column(
    tmp_path: Path, cell: str, message: str
) -> None:
    source = csv_file(tmp_path, f'x,colour\n1,a\n"{cell}",b\n')
    with pytest.raises(DataValidationError, match=message):
        records_of(source)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "in.csv is empty: a CSV file needs a header row"),
        ("\n\n", "in.csv has no header row"),
        ("x,,colour\n1,2,3\n", r"column\(s\) \[2\] of the header have no name"),
        ("x,colour,x\n1,2,3\n", r"column name\(s\) \['x'\] appear more than once"),
        ("x,colour\n1,a\n2\n", r"row 2 \(line 3\) has 1 values, the header names 2 columns"),
        ('x,colour\n1,"a\n', "row 1"),
    ],
)
def test_a_file_that_cannot_be_read_says_where(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataValidationError, match=message):
        records_of(csv_file(tmp_path, text))


def test_compressed_files_and_bad_encodings_are_refused(tmp_path: Path) -> None:
    (tmp_path / "in.csv.gz").write_bytes(b"\x1f\x8b\x08rest")
    with pytest.raises(DataValidationError, match="gzip-compressed: score an uncompressed CSV or a Parquet file"):
        open_input(tmp_path / "in.csv.gz", "in.csv.gz")
    (tmp_path / "latin.csv").write_bytes("x,colour\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataValidationError, match=r"latin.csv is not UTF-8 text \(save it as UTF-8\)"):
        records_of(open_input(tmp_path / "latin.csv", "latin.csv"))
    # further in than the first read, the row is named
    (tmp_path / "late.csv").write_bytes(b"x,colour\n" + b"1,a\n" * 5000 + "1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataValidationError, match=r"^in is not UTF-8 text \(save it as UTF-8\) near row \d+"):
        records_of(open_input(tmp_path / "late.csv", "late.csv"))


def test_missing_feature_columns_are_named_with_the_columns_the_file_has() -> None:
    with pytest.raises(DataValidationError) as raised:
        check_columns(["id", "colour"], FEATURES, "s3://b/in.csv", "m v2")
    assert str(raised.value) == (
        "s3://b/in.csv lacks the feature column(s) ['x'] that m v2 needs (it has ['id', 'colour']; every feature "
        "column must be there: ['x', 'colour']; other columns are kept in the output)"
    )
    check_columns(["colour", "x", "id"], FEATURES, "s3://b/in.csv", "m v2")  # any order, extra columns fine


def test_a_header_without_rows_scores_to_a_header_with_the_prediction_column(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "id,x,colour\n")
    assert records_of(source) == []
    assert scored(source, [], tmp_path).read_text() == "id,x,colour,prediction\n"
    assert pq.read_table(scored(source, [], tmp_path, "parquet")).num_rows == 0


def test_many_rows_stay_in_order_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_files, "CHUNK_ROWS", 7)
    rows = [f"id-{i},{i % 5}.5,{'abc'[i % 3]}" for i in range(50)]
    source = csv_file(tmp_path, "id,x,colour\n" + "\n".join(rows) + "\n")
    assert [r["x"] for r in records_of(source)] == [i % 5 + 0.5 for i in range(50)]
    path = scored(source, [f"p{i}" for i in range(50)], tmp_path)
    lines = path.read_text().splitlines()[1:]
    assert lines == [f"{row},p{i}" for i, row in enumerate(rows)]


# --- Parquet ---------------------------------------------------------------------------------------------


def parquet_file(tmp_path: Path) -> InputFile:
    table = pa.table(
        {
            "id": pa.array([10, 11, 12], pa.int64()),
            "x": pa.array([1.25, None, float("nan")], pa.float64()),
            "colour": pa.array(["red", None, "blue"], pa.string()),
            "flag": pa.array([True, False, None], pa.bool_()),
        }
    )
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=2)
    return open_input(tmp_path / "in.parquet", "in.parquet")


def test_parquet_values_keep_their_types_and_the_output_keeps_the_schema(tmp_path: Path) -> None:
    source = parquet_file(tmp_path)
    assert source.format == "parquet" and source.columns == ["id", "x", "colour", "flag"]
    assert records_of(source) == [
        {"x": 1.25, "colour": "red"},
        {"x": None, "colour": None},
        {"x": None, "colour": "blue"},  # NaN is a missing value
    ]
    table = pq.read_table(scored(source, [0.5, 1.5, 2.5], tmp_path, "parquet", regression=True))
    assert table.schema.names == ["id", "x", "colour", "flag", "prediction"]
    assert table.schema.field("id").type == pa.int64() and table.schema.field("prediction").type == pa.float64()
    assert table.column("id").to_pylist() == [10, 11, 12]
    assert table.column("prediction").to_pylist() == [0.5, 1.5, 2.5]


def test_an_infinite_parquet_number_is_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": [1.0, float("inf")], "colour": ["a", "b"]}), tmp_path / "inf.parquet")
    with pytest.raises(DataValidationError, match=r"^in row 2: feature 'x' must be a finite number, got inf$"):
        records_of(open_input(tmp_path / "inf.parquet", "inf.parquet"))


def test_formats_convert_either_way(tmp_path: Path) -> None:
    source = parquet_file(tmp_path)
    text = scored(source, ["a", "b", "c"], tmp_path, "csv").read_text()
    assert text.splitlines() == ["id,x,colour,flag,prediction", "10,1.25,red,true,a", "11,,,false,b", "12,,blue,,c"]
    as_text = csv_file(tmp_path, "id,x\n007,1.5\n", "t.csv")
    table = pq.read_table(scored(as_text, ["a"], tmp_path, "parquet"))
    assert table.to_pylist() == [{"id": "007", "x": "1.5", "prediction": "a"}]  # CSV cells stay text
    assert table.schema.field("prediction").type == pa.string()


def test_nested_parquet_columns_are_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": [1.0], "tags": [["a", "b"]]}), tmp_path / "n.parquet")
    with pytest.raises(DataValidationError, match=r"nested Parquet columns \['tags'\]"):
        open_input(tmp_path / "n.parquet", "n.parquet")


# --- the transform output ---------------------------------------------------------------------------------


def test_blank_lines_between_mini_batches_and_bare_values_are_read(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "id,x,colour\na,1,r\nb,2,g\nc,3,b\n")
    output = io.BytesIO(b'{"prediction": "p"}\n\n"q"\n\n{"prediction": "p"}\n')
    path = tmp_path / "s.csv"
    assemble(source, "in", 3, output, "out", "prediction", "csv", False, path)
    assert [line.rsplit(",", 1)[1] for line in path.read_text().splitlines()[1:]] == ["p", "q", "p"]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (b'{"prediction": 1}\n{"prediction": 2}\n', "out has 2 predictions for 3 input rows"),
        (b'{"prediction": 1}\n' * 4, "out has 4 predictions for 3 input rows"),
        (b'{"prediction": 1}\nnot json\n{"prediction": 1}\n', "line 2 of out is not JSON"),
        (b'{"prediction": 1}\n{"label": 1}\n{"prediction": 1}\n', 'line 2 of out has no "prediction"'),
        (b'{"prediction": 1}\n[1, 2]\n{"prediction": 1}\n', "line 2 of out: a prediction must be a value"),
    ],
)
def test_an_output_that_does_not_line_up_with_the_input_is_an_error(
    tmp_path: Path, output: bytes, message: str
) -> None:
    source = csv_file(tmp_path, "id,x,colour\na,1,r\nb,2,g\nc,3,b\n")
    with pytest.raises(BatchOutputError, match=message):
        assemble(source, "in", 3, io.BytesIO(output), "out", "prediction", "csv", False, tmp_path / "s.csv")
