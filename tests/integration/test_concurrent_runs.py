"""Concurrent runs of one model on different files, started at once through the real definition.

Each run must keep to its own prefixes (raw/<run>/, processed/<run>/, models/<job>/) and its artifacts must
describe its own file; the registry must number the versions 1..N without gaps or repeats; and the shared
endpoint must end up serving the newest approved version. The runs share one endpoint, so the deploy lease
(AcquireDeployLease) must let one of them at a time through FindEndpoint → Create/UpdateEndpoint →
Register: without it two runs can both create the endpoint (the second fails), or deploy in one order and
register in the other. That is checked on the histories themselves, not only on the final state, and
the runs are made to reach the lease together (see the fixture).

The files are iris's setosa and versicolor rows (linearly separable, so every model scores f1 1.0 and
clears the champion gate) with a different number of rows dropped from each, so a run that read another
run's file or artifact shows up in the row counts and hashes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import random
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import IRIS, Finished, Harness, Job, embedded_harness
from tests.integration.test_failure_paths import CREATE_PATH, REJECTED_PATH, UPDATE_PATH

pytestmark = pytest.mark.slow

MODEL = "shared-iris"
RUNS = 4
SPLITS = ("train", "validation", "test")


def dataset(index: int) -> bytes:
    """Setosa and versicolor rows, shuffled, with ``3 * index`` of them left out: a different file per run."""
    header, *rows = IRIS.decode().strip().splitlines()
    kept = [row for row in rows if row.endswith(("setosa", "versicolor"))]
    random.Random(index).shuffle(kept)
    return ("\n".join([header, *kept[: len(kept) - 3 * index]]) + "\n").encode()


@dataclass
class Concurrent:
    harness: Harness
    runs: list[Finished]
    data: dict[str, bytes]


def _run_lined_up(h: Harness) -> Concurrent:
    jobs, data = [], {}
    for index in range(RUNS):
        name = f"concurrent-{index}"
        data[name] = dataset(index)
        uri = h.upload(f"datasets/{name}/iris.csv", data[name])
        jobs.append(Job(name, {"dataset": uri, "model_name": MODEL}))

    def release(holder: str) -> None:
        assert h.registry.release_deploy_lease(MODEL, holder)

    finished = h.run_lined_up_at_lease(jobs, MODEL, release)
    return Concurrent(h, [finished[j.name] for j in jobs], data)


@pytest.fixture(scope="module")
def concurrent(state_dir: Path) -> Iterator[Concurrent]:
    for h in embedded_harness():
        yield _run_lined_up(h)


def _output(run: Finished) -> dict[str, Any]:
    return dict(json.loads(run.description["output"]))


def _rows(body: bytes) -> int:
    return len(list(csv.reader(io.StringIO(body.decode())))) - 1  # less the header


def _approved(c: Concurrent) -> list[Finished]:
    return [r for r in c.runs if _output(r)["registration"]["status"] == "approved"]


def test_all_runs_succeed_and_ran_at_the_same_time(concurrent: Concurrent) -> None:
    for run in concurrent.runs:
        assert run.status == "SUCCEEDED", run.describe()
        assert run.path in (CREATE_PATH, UPDATE_PATH, REJECTED_PATH), run.describe()
    # they overlapped: every run started before the first one ended
    starts = [r.description["startDate"] for r in concurrent.runs]
    stops = [r.description["stopDate"] for r in concurrent.runs]
    assert max(starts) < min(stops)
    assert len(set(concurrent.data.values())) == RUNS  # different files
    # separable data: every model clears the gate, so every run deploys (several share the endpoint)
    assert len(_approved(concurrent)) == RUNS, [r.describe() for r in concurrent.runs]


def test_registry_versions_are_1_to_n_once_each_in_registration_order(concurrent: Concurrent) -> None:
    h = concurrent.harness
    records = sorted(h.model_versions(MODEL), key=lambda r: r.version)
    assert [r.version for r in records] == list(range(1, RUNS + 1))
    assert sorted(r.execution_arn for r in records) == sorted(r.arn for r in concurrent.runs)
    # newer versions were registered later
    assert [r.created_at for r in records] == sorted(r.created_at for r in records)
    by_arn = {r.arn: r for r in concurrent.runs}
    registered = [by_arn[r.execution_arn].visit("Register").entered for r in records]
    assert registered == sorted(registered), "version order differs from the order of the Register states"
    for record in records:
        run = by_arn[record.execution_arn]
        assert _output(run)["registration"]["version"] == record.version
        run_record = h.run_record(run.job.name)
        assert run_record and run_record["status"] == "SUCCEEDED" and run_record["model_version"] == record.version


def test_deployments_took_turns(concurrent: Concurrent) -> None:
    """From finding the endpoint to registering the version, no two runs overlapped; one created the
    endpoint, the others updated it, in the order of their versions."""
    h = concurrent.harness
    windows = sorted(
        ((run.visit("FindEndpoint").entered, run.visit("Register").entered, run) for run in _approved(concurrent)),
        key=lambda window: window[0],
    )
    for (_, end, earlier), (start, _, later) in itertools.pairwise(windows):
        assert end <= start, f"{earlier.job.name} and {later.job.name} deployed at the same time"
    for _, _, run in windows:
        lease = run.visit("AcquireDeployLease")
        assert lease.retries >= 1 and set(lease.errors) == {"DeployLeaseBusyError"}, run.describe()
    paths = [run.path for _, _, run in windows]
    assert paths[0] == CREATE_PATH and all(p == UPDATE_PATH for p in paths[1:]), paths
    versions = [_output(run)["registration"]["version"] for _, _, run in windows]
    assert versions == sorted(versions)
    assert h.registry.deploy_lease(MODEL) is None, "the deploy lease was not given back"


def test_the_endpoint_serves_the_newest_approved_version(concurrent: Concurrent) -> None:
    h = concurrent.harness
    champion = h.registry.champion(MODEL)
    assert champion is not None and champion.version == RUNS
    endpoint = h.endpoint(h.endpoint_name(MODEL))
    assert endpoint and endpoint["EndpointStatus"] == "InService"
    assert endpoint["EndpointConfigName"] == champion.endpoint_config_name
    # every approved version was served in turn, in version order
    approved = sorted((r for r in h.model_versions(MODEL) if r.status == "approved"), key=lambda r: r.version)
    assert endpoint["PreviousEndpointConfigNames"] == [r.endpoint_config_name for r in approved[:-1]]
    last = max(_approved(concurrent), key=lambda run: run.visit("Register").entered)
    assert champion.execution_arn == last.arn


def test_each_run_has_its_own_artifacts_describing_its_own_file(concurrent: Concurrent) -> None:
    h = concurrent.harness
    records = {r.execution_arn: r for r in h.model_versions(MODEL)}
    seen: set[str] = set()
    for run in concurrent.runs:
        out, data = _output(run), concurrent.data[run.job.name]
        config, record = out["config"], records[run.arn]
        sha256 = hashlib.sha256(data).hexdigest()
        job = config["training_job_name"]
        split_uris = [f"{out['prep'][f'{s}_uri']}{s}.csv" for s in SPLITS]
        artifact = out["training"]["ModelArtifacts"]
        evaluation = out["evaluation"]["evaluation_uri"]
        own = [out["ingest"]["raw_uri"], *split_uris, artifact, evaluation, out["evaluation"]["report_uri"]]

        # per-execution prefixes, none shared with another run
        assert out["ingest"]["raw_uri"] == f"s3://{h.bucket}/raw/{run.job.name}/iris.csv"
        assert all(uri.startswith(f"s3://{h.bucket}/processed/{run.job.name}/") for uri in split_uris)
        assert all(uri.startswith(f"s3://{h.bucket}/models/{job}/") for uri in (artifact, evaluation))
        assert not seen & set(own), f"{run.job.name} shares artifacts: {seen & set(own)}"
        seen |= set(own)

        # still there, written once, and about this run's file
        for uri in own:
            assert len(h.versions_of(uri)) == 1, uri
        assert h.read(out["ingest"]["raw_uri"]) == data
        assert out["ingest"]["sha256"] == sha256 == record.dataset_sha256
        assert record.dataset_uri == out["ingest"]["raw_uri"] and record.training_job_name == job
        assert record.model_artifact == artifact
        split_rows = [_rows(h.read(uri)) for uri in split_uris]
        assert sum(split_rows) == _rows(data)
        document = json.loads(h.read(evaluation))
        assert document["run_id"] == run.job.name and document["training_job_name"] == job
        assert document["dataset"]["sha256"] == sha256 and document["model_artifact"] == artifact
        # what train.py reported it trained and tested on is this run's split
        assert [document["sizes"][f"n_{s}"] for s in SPLITS] == split_rows
        with tarfile.open(fileobj=io.BytesIO(h.read(artifact)), mode="r:gz") as archive:
            names = {name.removeprefix("./") for name in archive.getnames()}
        assert {"model.joblib", "metadata.json"} <= names
