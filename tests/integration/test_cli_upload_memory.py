"""The CLI uploads a dataset streamed from disk: its peak memory does not grow with the file.

A real local AWS process and real ``stepml`` processes: ``run --data``, ``start --data`` and ``upload`` (the
S3 trigger's path) on a small and a large generated CSV; each process reports its own peak (VmHWM) as it
ends. The upload used to be ``put_object(Body=path.read_bytes())``: the whole file in the CLI's memory (1.56 GB
for a 1.6 GB CSV). ``upload`` also checks that the name it computes from the stored object (a multipart upload's
ETag and VersionId) is the one the S3 trigger started.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.local_aws_objects import LocalAwsProcess
from tests.integration.conftest import stepml_command

pytestmark = pytest.mark.slow

SMALL = 1 << 20
LARGE = 96 << 20  # above the multipart threshold, so the trigger's name is checked against a multipart ETag
BOUND = LARGE // 2  # what the CLI's peak may grow by from the small file to the large one; it grew by LARGE before

# The CLI's entry point, then its own peak resident memory on stderr (the process is gone once it returns).
_MEASURED = (
    "import sys\n"
    "from stepml.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
    "print('peak-kb', peak.split()[1], file=sys.stderr)\n"
    "sys.exit(code)\n"
)


class Service(LocalAwsProcess):
    def measured(self, *args: str) -> tuple[subprocess.CompletedProcess[str], int]:
        """``stepml ARGS`` in a process of its own, and that process's peak resident memory in bytes."""
        done = subprocess.run(
            [sys.executable, "-c", _MEASURED, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        reported = [line for line in done.stderr.splitlines() if line.startswith("peak-kb ")]
        assert reported, done.stdout[-2000:] + done.stderr[-2000:]
        return done, int(reported[-1].split()[1]) * 1024

    def stop_runs(self) -> None:
        """Stop what the commands started: the data is not meant to be trained on, only uploaded."""
        sfn = self.client("stepfunctions")
        for machine in sfn.list_state_machines()["stateMachines"]:
            for execution in sfn.list_executions(stateMachineArn=machine["stateMachineArn"], statusFilter="RUNNING")[
                "executions"
            ]:
                sfn.stop_execution(executionArn=execution["executionArn"])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    made = Service(tmp_path_factory.mktemp("cli-upload") / "state")
    done = stepml_command(made.env, "local", "up", "--background")
    assert done.returncode == 0, done.stderr[-2000:]
    yield made
    made.stop_runs()
    stepml_command(made.env, "local", "down", timeout=120)


def _csv(path: Path, size: int) -> Path:
    row = b"".join(b"%d.%03d," % (i, i * 7 % 1000) for i in range(20)) + b"red,blue,green,1\n"
    with open(path, "wb") as handle:
        handle.write(b",".join(b"x%d" % i for i in range(23)) + b",label\n")
        for _ in range(size // len(row)):
            handle.write(row)
    return path


@pytest.mark.parametrize("command", ["run", "start", "upload"])
def test_the_cli_uploads_a_dataset_without_holding_it_in_memory(service: Service, tmp_path: Path, command: str) -> None:
    s3 = service.s3()
    bucket = next(b["Name"] for b in s3.list_buckets()["Buckets"] if "databucket" in b["Name"])
    peaks = {}
    for size in (SMALL, LARGE):
        data = _csv(tmp_path / f"{command}-{size >> 20}mib.csv", size)
        name = f"upload-memory-{command}-{size >> 20}"
        if command == "run":  # the run fails at its first state: only the upload is measured
            args = ["run", "--data", str(data), "--name", name, "--no-cache"]
            done, peaks[size] = service.measured(*args, "--inject-fault", "ValidateInput=InjectedPermanentError")
            assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
            key = f"datasets/{name}/{data.name}"
        elif command == "start":
            done, peaks[size] = service.measured("start", "--data", str(data), "--name", name, "--no-wait")
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            key = f"datasets/{name}/{data.name}"
        else:  # exits 0 only once the S3 trigger has started the execution named from the stored object
            done, peaks[size] = service.measured("upload", str(data), "--no-wait")
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            assert "The S3 trigger started" in done.stdout
            key = f"incoming/{data.name}"
        service.stop_runs()
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == data.stat().st_size
    grown = peaks[LARGE] - peaks[SMALL]
    assert grown < BOUND, f"`stepml {command}`'s peak grew by {grown >> 20} MiB for a {LARGE >> 20} MiB file"
