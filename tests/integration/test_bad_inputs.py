"""Bad data and bad execution input through the real pipeline on the embedded target.

Every file of the bad-input corpus (``tests/data/bad_inputs``, see its README) and files the corpus does
not have (generated here) must end FAILED with an error that names the problem, a failure record in the
runs table, the uploaded object and its raw/ copy byte-identical to what was uploaded, and no registry
entry. Uploads under incoming/ (what starts a run on AWS) are also quarantined with their reason.
"""

from __future__ import annotations

import io
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_core.stages.validate_input import PipelineInput

from stepml.progress import readable_cause
from tests.integration.harness import IRIS, REPO, Finished, Harness, Job, embedded_harness

pytestmark = pytest.mark.slow

CORPUS = REPO / "tests" / "data" / "bad_inputs"


@dataclass(frozen=True)
class Case:
    """A bad file and what the pipeline must say about it: where it fails and words that locate the problem."""

    file: str
    body: bytes
    fragments: tuple[str, ...]
    state: str = "ValidateData"
    error: str = "DataValidationError"
    extra_input: dict[str, Any] = field(default_factory=dict)

    @property
    def run_name(self) -> str:
        return "bad-" + re.sub(r"[^a-z0-9]+", "-", self.file.lower()).strip("-")


# file -> (fragments of the cause, state, extra input); the fragments are the README's messages.
CORPUS_EXPECTED: dict[str, tuple[tuple[str, ...], str, dict[str, Any]]] = {
    "empty.csv": (("the file is empty (0 bytes)",), "ValidateData", {}),
    "header_only.csv": (("header line (5 columns: 'sepal_length'", "but no data rows"), "ValidateData", {}),
    "ragged_rows.csv": (("row 5 (line 6) has 6 fields", "row 12 (line 13) has 3 fields"), "ValidateData", {}),
    "latin1.csv": (("not valid UTF-8: byte 0xe8 at byte offset 149 (line 4",), "ValidateData", {}),
    "missing_target.csv": (
        ("target column 'label' is not in the dataset; its columns are 'sepal_length'",),
        "ValidateData",
        {"target": "label"},
    ),
    "text_in_numeric.csv": (
        ("column 'age' is numeric in 96% of rows (29 of 30 non-empty values) but row 14 (line 15) has 'abc'",),
        "ValidateData",
        {},
    ),
    "empty_target.csv": (("target column 'species' (the last column) is empty in all 30 rows",), "ValidateData", {}),
    "binary_garbage.csv": (("NUL byte at byte offset 8 (line 3",), "ValidateData", {}),
    "gzip_named_csv.csv": (("first bytes say it is gzip-compressed",), "ValidateData", {}),
    "duplicate_columns.csv": (("duplicate column names: 'sepal_width' at columns 2, 4",), "ValidateData", {}),
    "empty_column_name.csv": (("column 4 of 5 has an empty name",), "ValidateData", {}),
    "too_few_rows.csv": (("not enough rows: 11 rows", "at least 23 rows are needed"), "ValidateData", {}),
    "rare_class.csv": (("'virginica' (1 row: row 41 (line 42))", 'Set rare_classes to "drop"'), "ValidateData", {}),
    "unclosed_quote.csv": (("a quoted field starting on line 8 is never closed",), "ValidateData", {}),
    "no_header.csv": (
        ("the first line does not look like a header: 4 of its 5 values are numbers",),
        "ValidateData",
        {},
    ),
    "semicolon.csv": (("has a single column", "it seems to use ';' as separator"), "ValidateData", {}),
    "not_parquet.parquet": (("cannot be read as Parquet", "Parquet magic bytes not found"), "ValidateData", {}),
    "wrong_extension.txt": (("has extension '.txt'; accepted extensions: .csv, .parquet",), "Ingest", {}),
}


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _iris_lines() -> list[str]:
    return IRIS.decode().splitlines()


def generated_cases() -> list[Case]:
    """Malformed files the corpus does not have (too big to commit, or new kinds)."""
    lines = _iris_lines()
    header = lines[0]
    rows = [line.split(",") for line in lines]
    first_feature = header.split(",")[0]
    inf_rows = [header] + [line if i != 7 else "inf" + line[line.index(",") :] for i, line in enumerate(lines[1:])]
    floats, labels = [1.0, 2.0, 3.0] * 20, ["u", "v", "w"] * 20
    return [
        # one line of 1.6 MB (no line break at all), over the 1 MiB per-line limit
        Case("huge_single_line.csv", b"a," * 800_000 + b"b", ("line 1 is 1600001 bytes long", "1048576 bytes")),
        Case(
            "huge_second_line.csv",
            header.encode() + b"\n" + b"1," * 786_432 + b"\n",
            ("line 2 is 1572864 bytes long", "1048576 bytes per line"),
        ),
        # random bytes: binary, whatever the first invalid byte turns out to be
        Case("random_bytes.csv", random.Random(4).randbytes(65_536), ("NUL byte at byte offset", "not a UTF-8 CSV")),
        Case("utf16.csv", IRIS.decode().encode("utf-16"), ("NUL byte at byte offset 3 (line 1", "UTF-16")),
        Case("workbook.csv", b"PK\x03\x04" + bytes(100), ("a zip archive (or an .xlsx workbook)",)),
        # a European spreadsheet export: ';' between fields and ',' as the decimal mark
        Case(
            "semicolon_decimal_comma.csv",
            "\n".join(";".join(cell.replace(".", ",") for cell in row) for row in rows).encode(),
            ("has a single column", "';' as separator"),
        ),
        Case("only_target.csv", "\n".join(row[-1] for row in rows).encode(), ("has a single column 'species'",)),
        Case(
            "duplicate_target.csv",
            "\n".join(",".join([*row, row[-1]]) for row in rows).encode(),
            ("duplicate column names: 'species' at columns 5, 6",),
        ),
        Case(
            "nested_struct.parquet",
            _parquet(pa.table({"x": floats, "meta": [{"a": 1}] * len(floats), "y": labels})),
            ("nested column 'meta' (struct<a: int64>)", "flatten"),
        ),
        Case(
            "nested_list.parquet",
            _parquet(pa.table({"x": floats, "tags": [[1, 2]] * len(floats), "y": labels})),
            ("nested column 'tags' (list<", "flatten"),
        ),
        Case(
            "empty_table.parquet",
            _parquet(pa.table({"x": pa.array([], pa.float64()), "y": pa.array([], pa.string())})),
            ("has 2 columns ('x', 'y') but no data rows",),
        ),
        Case("single_class.csv", "\n".join(lines[:31]).encode(), ("single class 'setosa' in all 30 rows",)),
        Case("infinity.csv", "\n".join(inf_rows).encode(), (f"column '{first_feature}'", "row 8 (line 9) has 'inf'")),
        Case("whitespace_only.csv", b"   \n\n  \n", ("only whitespace",)),
    ]


def corpus_cases() -> list[Case]:
    return [
        Case(name, (CORPUS / name).read_bytes(), fragments, state, extra_input=extra)
        for name, (fragments, state, extra) in CORPUS_EXPECTED.items()
    ]


# A valid file as Excel's "CSV UTF-8" writes it: a byte-order mark and CRLF line ends. Rejecting it would
# reject the most common spreadsheet export, so it must train, with the BOM not in the first column name.
BOM_CRLF = b"\xef\xbb\xbf" + "\r\n".join(_iris_lines()).encode() + b"\r\n"

# Execution inputs a console user could paste; each must fail in ValidateInput and list what is allowed.
BAD_INPUTS: dict[str, tuple[dict[str, Any], str]] = {
    "input-unknown-field": ({"learning_rate": 0.1}, "learning_rate: unknown field"),
    "input-wrong-type": ({"seed": "42", "test_size": "a lot"}, "seed: "),
    "input-missing-dataset": ({"dataset": None}, "dataset: required field is missing"),
    "input-dataset-not-s3": ({"dataset": "/home/me/iris.csv"}, "dataset: must be an S3 URI"),
}
# S3-triggered uploads of bad files: quarantined, original left in incoming/.
TRIGGERED = ["latin1.csv", "ragged_rows.csv", "binary_garbage.csv"]


@dataclass
class Results:
    harness: Harness
    cases: dict[str, Case]
    runs: dict[str, Finished]
    uploads: dict[str, str]
    bom_run: Finished
    triggered: dict[str, tuple[dict[str, Any], Finished]]
    ignored: dict[str, dict[str, Any]]


def _input_job(h: Harness, name: str, extra: dict[str, Any]) -> Job:
    dataset = h.upload(f"datasets/{name}/iris.csv", IRIS)
    execution_input = {"dataset": dataset, **extra}
    return Job(name, {k: v for k, v in execution_input.items() if v is not None})


def _run_everything(h: Harness) -> Results:
    cases = {c.run_name: c for c in [*corpus_cases(), *generated_cases()]}
    uploads: dict[str, str] = {}
    jobs = []
    for name, case in cases.items():
        uploads[name] = h.upload(f"datasets/{name}/{case.file}", case.body)
        jobs.append(Job(name, {"dataset": uploads[name], **case.extra_input}))
    jobs += [_input_job(h, name, extra) for name, (extra, _) in BAD_INPUTS.items()]
    bom_uri = h.upload("datasets/bom-crlf/excel_export.csv", BOM_CRLF)
    jobs.append(Job("bom-crlf", {"dataset": bom_uri}))

    # uploads under incoming/ start their own runs (StartPipeline, as the S3 event would on AWS)
    started = {file: h.upload_incoming(f"incoming/{file}", (CORPUS / file).read_bytes()) for file in TRIGGERED}
    ignored = {file: h.upload_incoming(f"incoming/{file}", (CORPUS / file).read_bytes()) for file in ("empty.csv",)}

    jobs.sort(key=lambda j: j.name != "bom-crlf")  # the one full run first
    runs = h.run_all(jobs)
    triggered = {
        file: (answer, h.wait(Job(answer["execution_name"], {"dataset": answer["dataset"]}), answer["execution_arn"]))
        for file, answer in started.items()
    }
    return Results(h, cases, runs, uploads, runs.pop("bom-crlf"), triggered, ignored)


@pytest.fixture(scope="module")
def results(state_dir: Path) -> Iterator[Results]:
    for harness in embedded_harness():
        yield _run_everything(harness)


def _cause_of_record(record: dict[str, Any]) -> str:
    return readable_cause(record["cause"]) or ""


def test_corpus_table_covers_every_corpus_file() -> None:
    files = {p.name for p in CORPUS.iterdir() if p.name != "README.md"}
    assert files == set(CORPUS_EXPECTED), files ^ set(CORPUS_EXPECTED)


@pytest.mark.parametrize("name", [c.run_name for c in [*corpus_cases(), *generated_cases()]])
def test_bad_file_fails_clearly_and_keeps_the_raw_object(results: Results, name: str) -> None:
    h, case, run = results.harness, results.cases[name], results.runs[name]
    assert run.status == "FAILED", run.describe()
    assert run.outcome.failed_state == case.state and run.outcome.error == case.error, run.describe()
    cause = run.outcome.cause or ""
    for fragment in case.fragments:
        assert fragment in cause, f"{fragment!r} not in {cause!r}"
    assert len(cause) < 2000, "a cause a person can read"

    record = h.run_record(name)
    assert record and record["status"] == "FAILED", record
    assert record["failed_state"] == case.state and record["error"] == case.error
    assert case.fragments[0] in _cause_of_record(record)
    assert record["input_pointers"]["dataset"] == results.uploads[name]

    # nothing lost: the upload is byte-identical, one version, no delete marker; so is the raw copy
    assert h.read(results.uploads[name]) == case.body
    assert [v.get("IsLatest") for v in h.versions_of(results.uploads[name])] == [True]
    raw_keys = h.keys(f"raw/{name}/")
    if case.state == "Ingest":
        assert raw_keys == []  # rejected before the copy
    else:
        assert raw_keys == [f"raw/{name}/{case.file}"]
        assert h.read(f"s3://{h.bucket}/{raw_keys[0]}") == case.body
        assert record["input_pointers"]["raw_uri"] == f"s3://{h.bucket}/{raw_keys[0]}"
    assert not h.keys(f"processed/{name}/"), "nothing processed from a rejected file"
    assert not [v for v in h.registry.versions() if v.execution_arn == run.arn]


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_execution_input_fails_in_validate_input_listing_what_is_allowed(results: Results, name: str) -> None:
    h, run = results.harness, results.runs[name]
    _, problem = BAD_INPUTS[name]
    assert run.status == "FAILED" and run.path[0] == "ValidateInput", run.describe()
    assert run.outcome.failed_state == "ValidateInput" and run.outcome.error == "InputValidationError"
    cause = run.outcome.cause or ""
    assert problem in cause, cause
    assert "Allowed fields" in cause
    for allowed in PipelineInput.model_fields:
        assert f"\n  {allowed}: " in cause, f"{allowed} not listed in {cause!r}"
    assert run.visit("ValidateInput").retries == 0  # a permanent error is not retried
    record = h.run_record(name)
    assert record and record["status"] == "FAILED" and record["error"] == "InputValidationError"
    assert problem in _cause_of_record(record)
    assert "Ingest" not in run.path and not h.keys(f"raw/{name}/")


def test_wrong_types_are_all_reported_at_once(results: Results) -> None:
    cause = results.runs["input-wrong-type"].outcome.cause or ""
    assert "2 problems" in cause and "seed: " in cause and "test_size: " in cause, cause


def test_a_valid_excel_export_with_bom_and_crlf_trains(results: Results) -> None:
    h, run = results.harness, results.bom_run
    assert run.status == "SUCCEEDED", run.describe()
    [version] = [v for v in h.registry.versions() if v.execution_arn == run.arn]
    header = _iris_lines()[0].split(",")
    assert version.feature_columns == header[:-1] and version.target == header[-1]
    assert not any("\ufeff" in c for c in version.feature_columns)


@pytest.mark.parametrize("file", TRIGGERED)
def test_bad_upload_under_incoming_is_quarantined_and_kept(results: Results, file: str) -> None:
    h = results.harness
    started, run = results.triggered[file]
    assert started["status"] == "started"
    assert run.status == "FAILED" and run.outcome.error == "DataValidationError", run.describe()
    body = (CORPUS / file).read_bytes()
    assert h.read(f"s3://{h.bucket}/incoming/{file}") == body  # the upload stays where it was
    record = h.run_record(started["execution_name"])
    assert record and record["status"] == "FAILED"
    quarantined = record["quarantine_uri"]
    assert quarantined == f"s3://{h.bucket}/quarantine/{started['execution_name']}/{file}"
    assert h.read(quarantined) == body
    reason = json.loads(h.read(quarantined + ".reason.json"))
    assert reason["error"] == "DataValidationError" and reason["source"] == f"s3://{h.bucket}/incoming/{file}"


def test_an_empty_upload_under_incoming_starts_no_run_and_stays(results: Results) -> None:
    h = results.harness
    answer = results.ignored["empty.csv"]
    assert answer["status"] == "ignored" and "empty" in answer["reason"]
    assert h.read(f"s3://{h.bucket}/incoming/empty.csv") == b""
    names = [e["name"] for e in h.executions()]
    assert not [n for n in names if n.startswith("empty")], names
