"""The embedded target never loses data: real `stepml` processes at once, killed, on a full disk.

Each test has a state directory of its own and drives the CLI as a user would, in subprocesses, so that
what crosses process boundaries (two commands at once, a kill, a restart) is what is tested.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO, stepml_command

pytestmark = pytest.mark.slow

IRIS = str(REPO / "data" / "iris.csv")
DIABETES = str(REPO / "data" / "diabetes.csv")


@dataclass
class Project:
    """A private state directory and the environment to run `stepml` commands against it."""

    state_dir: Path
    env: dict[str, str]

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return stepml_command(self.env, *args, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "stepml.cli", *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str) -> dict[str, Any]:
        done = self.cli("run", "--json", *args)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    def json_of(self, *args: str) -> Any:
        done = self.cli(*args, "--json")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def models(self) -> list[dict[str, Any]]:
        return list(self.json_of("models"))

    def runs(self) -> list[dict[str, Any]]:
        return list(self.json_of("runs"))

    def stop(self) -> None:
        self.cli("local", "down", timeout=120)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    env = {**os.environ, "STEPML_STATE_DIR": str(tmp_path / "state")}
    env.pop("AWS_ENDPOINT_URL", None)
    made = Project(tmp_path / "state", env)
    yield made
    made.stop()


def _artifact_readable(project: Project, uri: str) -> bool:
    """Whether the object at ``uri`` can be read from the embedded S3 (through a `stepml` process)."""
    code = (
        "import sys\n"
        "from stepml.targets import embedded_target\n"
        "from stepml.project import project_layout\n"
        "t = embedded_target(project_layout())\n"
        "b, k = sys.argv[1].removeprefix('s3://').split('/', 1)\n"
        "print(len(t.client('s3').get_object(Bucket=b, Key=k)['Body'].read()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, uri], env=project.env, capture_output=True, text=True, timeout=300, check=False
    )
    return done.returncode == 0 and int(done.stdout.strip().splitlines()[-1]) > 0


def test_two_runs_started_together_both_keep_their_versions_records_and_artifacts(project: Project) -> None:
    # Same model twice and another model, all at once, on one fresh state directory.
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(
            pool.map(
                lambda args: project.run(*args),
                [
                    ("--data", IRIS, "--model-name", "flowers"),
                    ("--data", IRIS, "--model-name", "flowers"),
                    ("--data", DIABETES, "--target", "target"),
                ],
            )
        )
    assert all(r["status"] == "SUCCEEDED" for r in results)
    models = project.models()
    assert sorted(m["version"] for m in models if m["model_name"] == "flowers") == [1, 2]
    assert [m["version"] for m in models if m["model_name"] == "diabetes-target"] == [1]
    runs = {r["execution_arn"]: r for r in project.runs()}
    for result in results:
        assert runs[result["execution_arn"]]["status"] == "SUCCEEDED"
        assert _artifact_readable(project, result["model_artifact"]), result["model_artifact"]


def test_a_run_while_local_up_serves_is_kept_when_local_up_stops(project: Project) -> None:
    up = project.popen("local", "up", "--port", "0")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and project.cli("local", "status").returncode != 0:
            assert up.poll() is None, up.communicate()
            time.sleep(0.5)
        result = project.run("--data", IRIS)
        assert result["status"] == "SUCCEEDED"
        # local up no longer saves the whole state every 5 s (writes go through as they happen); what runs
        # periodically is the half-second sweep of ended executions: let two pass before stopping
        time.sleep(1)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=120)
    versions = [(m["model_name"], m["version"]) for m in project.models()]
    assert (result["model_name"], result["model_version"]) in versions
    assert _artifact_readable(project, result["model_artifact"])
    assert result["execution_arn"] in {r["execution_arn"] for r in project.runs()}


def _service(project: Project) -> dict[str, Any]:
    return dict(json.loads((project.state_dir / "local.json").read_text()))


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_local_aws_leaves_earlier_runs_whole_and_the_cut_run_aborted(project: Project) -> None:
    first = project.run("--data", IRIS)
    # --no-cache: the first run's cached Preprocess, Train and Evaluate would make this one finish within seconds, and
    # on a loaded machine it finished before the kill landed (SUCCEEDED, not ABORTED); it must still be running then
    running = project.popen("run", "--json", "--data", IRIS, "--name", "cut-short", "--no-cache")
    try:
        _wait_for(lambda: any(r["name"] == "cut-short" for r in project.runs()), 120, "the second run to start")
        os.kill(_service(project)["pid"], signal.SIGKILL)  # a crash while the run writes
        _out, err = running.communicate(timeout=120)
    finally:
        running.kill()
    assert running.returncode != 0, "the client of a killed local AWS must not report success"
    assert "Traceback" not in err, err
    runs = {r["name"]: r for r in project.runs()}  # a new local AWS starts and loads the state
    assert runs["cut-short"]["status"] == "ABORTED"
    assert runs[first["execution_arn"].rsplit(":", 1)[-1]]["status"] == "SUCCEEDED"
    watched = project.cli("watch", "cut-short", "--json")
    cause = json.loads(watched.stdout.strip().splitlines()[-1])["cause"]
    assert "killed or crashed" in cause
    assert [(m["model_name"], m["version"]) for m in project.models()] == [("iris-species", 1)]
    assert _artifact_readable(project, first["model_artifact"])
    # and the name stays taken, as on AWS
    again = project.cli("run", "--data", IRIS, "--name", "cut-short")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_damaged_state_files_are_named_and_what_is_left_is_recovered(project: Project) -> None:
    first = project.run("--data", IRIS)
    project.stop()
    store = project.state_dir / "state"
    # the model's content file, cut in half as a full disk or a crash of another tool might leave it
    model_key = first["model_artifact"].removeprefix("s3://").split("/", 1)[1]
    import sqlite3

    with sqlite3.connect(store / "local.db") as db:
        digest = db.execute("SELECT sha256 FROM objects WHERE key = ?", (model_key,)).fetchone()[0]
    blob = store / "blobs" / digest[:2] / digest
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    status = project.cli("local", "up", "--background")
    assert status.returncode == 0, status.stderr
    notes = project.json_of("local", "status")["notes"]
    assert any(model_key in n and "damaged" in n for n in notes), notes
    assert not _artifact_readable(project, first["model_artifact"]), "a damaged object must never be served"
    assert project.runs()[0]["status"] == "SUCCEEDED"  # the rest is intact
    # now the database itself: emptied, as an in-place write killed midway leaves a file
    project.stop()
    (store / "local.db").write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        (store / f"local.db{suffix}").unlink(missing_ok=True)
    started = project.cli("local", "up", "--background")
    assert started.returncode == 0, started.stderr
    notes = project.json_of("local", "status")["notes"]
    assert any("local.db" in n and "damaged" in n for n in notes), notes
    assert list(store.glob("local.db.damaged-*")), "the damaged file is kept for the user to look at"
    # the service works on: a new run succeeds
    assert project.run("--data", IRIS)["status"] == "SUCCEEDED"


def test_a_full_disk_fails_the_run_and_keeps_nothing_half_written(tmp_path: Path) -> None:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    env = {**os.environ, "STEPML_STATE_DIR": str(mount / "state")}
    env.pop("AWS_ENDPOINT_URL", None)
    project = Project(mount / "state", env)
    try:
        first = project.run("--data", IRIS)
        filler = mount / "filler"
        with open(filler, "wb") as handle, pytest.raises(OSError):  # leave the disk full
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        done = project.cli("run", "--json", "--data", DIABETES, "--target", "target", "--name", "on-a-full-disk")
        assert done.returncode != 0
        filler.unlink()
        project.stop()
        runs = {r["name"]: r for r in project.runs()}
        assert runs.get("on-a-full-disk", {"status": "FAILED"})["status"] in {"FAILED", "ABORTED"}
        notes = project.json_of("local", "status")["notes"]
        assert not any("damaged" in n or "missing" in n for n in notes), notes
        models = project.models()
        assert [(m["model_name"], m["version"]) for m in models] == [("iris-species", 1)]
        for model in models:
            assert _artifact_readable(project, model["model_artifact"])
        assert _artifact_readable(project, first["model_artifact"])
    finally:
        project.stop()
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_an_upload_starts_one_run_and_no_restart_starts_it_again(project: Project) -> None:
    done = project.cli("upload", IRIS, "--json")
    assert done.returncode == 0, done.stderr
    assert len(project.runs()) == 1
    project.stop()
    assert len(project.runs()) == 1  # a new local AWS loads incoming/iris.csv, and delivers no event for it
    time.sleep(3)
    assert [r["status"] for r in project.runs()] == ["SUCCEEDED"]
    assert len(project.models()) == 1


def test_serve_stopped_while_a_run_writes_loses_neither_the_log_nor_the_run(project: Project) -> None:
    import urllib.request

    first = project.run("--data", IRIS)
    served = subprocess.Popen(
        [sys.executable, "-m", "stepml.cli", "serve", "--port", "0"],
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    second: subprocess.Popen[str] | None = None
    try:
        assert served.stdout is not None
        url = next(line.split(" on ")[1].split()[0] for line in served.stdout if "inference API on" in line)
        # read the rest of what serve prints as it comes: an undrained pipe that fills would block serve's writes
        # (and so its exit); what it printed is in the failure message if it does not stop
        printed: list[str] = []
        drain = threading.Thread(target=lambda: printed.extend(served.stdout or []), daemon=True)
        drain.start()
        rows = [{"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}]

        def predict(timeout: float) -> None:
            request = urllib.request.Request(
                f"{url}/predict", json.dumps({"instances": rows}).encode(), {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                assert answer.status == 200

        # Each serve worker loads the model on its first request (seconds on a busy machine): warm them before
        # the run starts, so the requests below fit in the run's time rather than outlasting it.
        for _ in range(6):
            predict(timeout=120)
        # Register fails 3 times (full-jitter backoff up to 1+2+4 s): serve stops before the run's registry write.
        fault = "Register=TransientStoreError:3"
        second = project.popen(
            "run", "--json", "--data", IRIS, "--name", "while-serving", "--inject-fault", fault, "--no-cache"
        )
        _wait_for(lambda: any(r["name"] == "while-serving" for r in project.runs()), 120, "the run to start")
        for _ in range(20):
            predict(timeout=60)
        assert second.poll() is None, "the run must still be going when serve stops"
        served.send_signal(signal.SIGINT)
        try:
            assert served.wait(timeout=60) == 0, "".join(printed)[-3000:]
        except subprocess.TimeoutExpired:
            served.send_signal(signal.SIGUSR1)  # serve prints every thread's stack: where it waits
            time.sleep(2)
            pytest.fail("stepml serve did not stop within 60 s of SIGINT; it printed:\n" + "".join(printed)[-6000:])
        out, err = second.communicate(timeout=300)
    finally:
        served.kill()
        if second is not None:
            second.kill()
    assert second.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    versions = sorted(m["version"] for m in project.models())
    assert versions == [1, 2] and result["model_version"] == 2 and first["model_version"] == 1
    assert _artifact_readable(project, result["model_artifact"])
    code = (
        "from stepml.targets import embedded_target\n"
        "from stepml.project import project_layout\n"
        "from stepml.embedded.template import stack_model\n"
        "layout = project_layout()\n"
        "table = stack_model(layout.template, 'stepml-local', {'Target': 'local'}).tables['PredictionLogTable'].name\n"
        "print(embedded_target(layout).client('dynamodb').scan(TableName=table, Select='COUNT')['Count'])\n"
    )
    counted = subprocess.run([sys.executable, "-c", code], env=project.env, capture_output=True, text=True, check=True)
    assert int(counted.stdout.strip().splitlines()[-1]) == 6 + 20  # the warm-up requests and the 20


def test_one_local_aws_per_state_directory_and_its_control_routes_need_its_token(project: Project) -> None:
    import urllib.error
    import urllib.request

    started = project.cli("local", "up", "--background")
    assert started.returncode == 0, started.stderr
    second = project.cli("local", "up", "--port", "0")  # a second one for the same state directory
    assert second.returncode == 2 and "already serves" in second.stderr, second.stderr
    info = _service(project)
    assert oct((project.state_dir / "local.json").stat().st_mode & 0o777) == "0o600"
    for headers in ({}, {"X-Stepml-Token": "guess"}):
        request = urllib.request.Request(f"{info['endpoint_url']}/_stepml/shutdown", b"{}", headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
    assert project.cli("local", "status").returncode == 0
    assert project.cli("local", "down").returncode == 0
    assert project.cli("local", "status").returncode == 1
