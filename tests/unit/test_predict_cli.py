"""``stepml predict``'s own parts: the output format, where the input is staged, what is refused before anything
is uploaded, the progress line, and delivering the scored file whole or not at all."""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError

from stepml import predict
from stepml.batch_progress import Progress, progress_line
from stepml.cli import build_parser
from stepml.predict import PredictError, batch_name, deliver, output_format_for, stage_input
from stepml.targets import StackOutputs

BUCKET = "stepml-local-databucket"


@dataclass
class FakeTarget:
    """A target whose clients are moto's."""

    make: Any
    name: str = "embedded"
    outputs: StackOutputs = field(
        default_factory=lambda: StackOutputs("arn:sm", BUCKET, "registry", "runs", batch_state_machine_arn="arn:b")
    )

    def client(self, service: str) -> Any:
        return self.make(service)


@pytest.fixture
def target(moto_clients: Any) -> FakeTarget:
    moto_clients("s3").create_bucket(Bucket=BUCKET)
    return FakeTarget(moto_clients)


@pytest.mark.parametrize(
    ("out", "requested", "expected"),
    [
        ("scored.csv", None, "csv"),
        ("s3://b/x/scored.PARQUET", None, "parquet"),
        ("scored.pq", None, "parquet"),
        ("scored.txt", None, None),  # the input's format
        ("scored.csv", "parquet", "parquet"),  # --format wins
    ],
)
def test_the_output_format_comes_from_format_then_the_suffix(out: str, requested: str | None, expected: str) -> None:
    assert output_format_for(out, requested) == expected


def test_batch_execution_names_fit_step_functions() -> None:
    name = batch_name("/data/" + "a-very-long-file-name" * 10 + ".csv")
    assert name.startswith("batch-a-very-long") and len(name) <= 80
    assert batch_name("x.csv") != batch_name("x.csv")


def test_a_local_file_is_uploaded_under_batch_and_other_objects_are_copied_there(
    target: FakeTarget, tmp_path: Path
) -> None:
    path = tmp_path / "scores.csv"
    path.write_text("a,b\n1,2\n")
    s3 = target.client("s3")
    assert stage_input(target, str(path), "run-1") == f"s3://{BUCKET}/batch/run-1/input/scores.csv"
    assert s3.get_object(Bucket=BUCKET, Key="batch/run-1/input/scores.csv")["Body"].read() == b"a,b\n1,2\n"
    staged = f"s3://{BUCKET}/batch/elsewhere/in.csv"
    assert stage_input(target, staged, "run-2") == staged
    s3.create_bucket(Bucket="mine")
    s3.put_object(Bucket="mine", Key="deep/in.parquet", Body=b"PAR1")
    assert stage_input(target, "s3://mine/deep/in.parquet", "run-3") == f"s3://{BUCKET}/batch/run-3/input/in.parquet"
    with pytest.raises(PredictError, match="no such file"):
        stage_input(target, str(tmp_path / "nope.csv"), "run-4")
    with pytest.raises(PredictError, match="cannot copy it into"):
        stage_input(target, "s3://mine/missing.csv", "run-5")


@pytest.mark.parametrize(
    ("data", "out", "message"),
    [
        ("in.csv", "{tmp}/no/such/dir/out.csv", "the folder .* does not exist"),
        ("in.csv", "{tmp}", "is a folder: name the file to write"),
        ("{tmp}/in.csv", "{tmp}/in.csv", "--out is the --data file"),
        ("in.csv", "s3://bucket", "an S3 destination must name an object"),
        ("in.csv", "s3://bucket/dir/", "an S3 destination must name an object"),
    ],
)
def test_destinations_that_cannot_be_written_are_refused_first(
    tmp_path: Path, data: str, out: str, message: str
) -> None:
    with pytest.raises(PredictError, match=message):
        predict._check_paths(data.format(tmp=tmp_path), out.format(tmp=tmp_path))


class Body:
    """A streaming body that fails after its first chunk, like a connection dropped mid-download."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def iter_chunks(self, _size: int) -> Any:
        yield b"id,prediction\n"
        if self.fail:
            raise ReadTimeoutError(endpoint_url="http://127.0.0.1")
        yield b"1,a\n"


class S3:
    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def get_object(self, **_: Any) -> dict[str, Any]:
        return {"Body": Body(self.fail)}


def test_a_local_out_file_is_replaced_whole_or_left_untouched(tmp_path: Path) -> None:
    out = tmp_path / "scored.csv"
    out.write_text("the previous scores\n")
    failing = FakeTarget(lambda _service: S3(fail=True))
    with pytest.raises(ReadTimeoutError):
        deliver(failing, "s3://b/k", str(out))
    assert out.read_text() == "the previous scores\n" and sorted(tmp_path.iterdir()) == [out]
    assert deliver(FakeTarget(lambda _service: S3(fail=False)), "s3://b/k", str(out)) == str(out)
    assert out.read_text() == "id,prediction\n1,a\n" and sorted(tmp_path.iterdir()) == [out]


def test_the_progress_line_shows_rows_and_rate_locally_and_the_status_on_aws() -> None:
    assert progress_line(Progress("InProgress", 42_000, 100_000), 100_000, 2.0) == (
        "  … Transform  42,000 / 100,000 rows (42%)  21,000 rows/s  2.0 s"
    )
    assert "reading 100,000 rows" in progress_line(Progress("InProgress"), 100_000, 1.0)
    assert progress_line(Progress("InProgress"), 100_000, 61.0, counts=False) == (
        "  … Transform  InProgress: 100,000 rows  61.0 s (SageMaker reports no row counts)"
    )
    assert "starting the transform job" in progress_line(None, 5, 0.5)


def test_the_command_line_needs_a_model_a_file_and_a_destination() -> None:
    parser = build_parser()
    args = parser.parse_args(["predict", "--model", "iris", "--data", "in.csv", "--out", "out.parquet", "--json"])
    assert (args.model, args.version, args.target, args.format, args.json) == ("iris", None, "embedded", None, True)
    with pytest.raises(SystemExit):
        with_stderr(lambda: parser.parse_args(["predict", "--model", "iris", "--data", "in.csv"]))


def with_stderr(call: Any) -> Any:
    import contextlib

    with contextlib.redirect_stderr(io.StringIO()):
        return call()


def test_a_stack_without_batch_scoring_is_named(target: FakeTarget) -> None:
    old = FakeTarget(target.make, outputs=StackOutputs("arn:sm", BUCKET, "registry", "runs"))
    args = argparse.Namespace(data="x.csv", out="y.csv")
    with pytest.raises(PredictError, match="no BatchScoringStateMachineArn output: it was deployed before batch"):
        predict.predict(old, args, None)
