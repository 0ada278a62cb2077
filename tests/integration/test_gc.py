"""Garbage collection after real runs: three runs of one model on the embedded target, the first approved
and deployed, the next two rejected (a threshold no model reaches). Collecting with no rejected version kept
removes exactly the rejected runs' artifacts, and the endpoint still serves the champion's artifact."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest

from stepml.artifacts import StandInRecords, run_footprint
from stepml.gc import GcPolicy, collect, plan
from tests.integration.harness import IRIS, REJECTED_MODEL, Harness, Job, embedded_harness

pytestmark = pytest.mark.slow

MODEL = "gc-iris"
CHAMPION, REJECTED = "gc-champion", ("gc-rejected-1", "gc-rejected-2")


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    yield from embedded_harness()


def _job(h: Harness, name: str, threshold: float | None = None) -> Job:
    execution_input: dict[str, Any] = {"dataset": h.upload(f"datasets/{name}/iris.csv", IRIS), "model_name": MODEL}
    if threshold is not None:
        execution_input.update(REJECTED_MODEL, quality_threshold=threshold)  # no model reaches it: rejected
    return Job(name, execution_input)


def test_gc_removes_exactly_the_rejected_runs_and_the_champion_still_serves(h: Harness) -> None:
    assert h.run(_job(h, CHAMPION)).status == "SUCCEEDED"
    for name in REJECTED:
        assert h.run(_job(h, name, threshold=0.999)).status == "SUCCEEDED"
    assert [v.status for v in h.model_versions(MODEL)] == ["rejected", "rejected", "approved"]
    footprints = {run: run_footprint(h.aws, run) for run in (CHAMPION, *REJECTED)}
    rejected_keys = {
        key
        for run in REJECTED
        for usage in footprints[run]
        if not usage.prefix.startswith("_sagemaker/")
        for key in h.keys(usage.prefix)
    }
    before = set(h.keys(""))
    assert rejected_keys and rejected_keys <= before

    planned = plan(h.aws, GcPolicy(keep_rejected=0, model_name=MODEL))
    assert sorted(u.run_id for u in planned.collected) == sorted(REJECTED)
    assert set(h.keys("")) == before  # a plan changes nothing

    done = collect(h.aws, GcPolicy(keep_rejected=0, model_name=MODEL), delete=True)

    assert {k for u in done.collected for k in u.keys} == rejected_keys
    assert set(h.keys("")) == before - rejected_keys
    # the endpoint record -> its config -> its model -> an artifact that is still there and still a model
    records = StandInRecords(h.bucket, h.s3)
    endpoint = h.endpoint(h.endpoint_name(MODEL))
    assert endpoint is not None
    config = records.describe("endpoint-configs", endpoint["EndpointConfigName"])
    assert config is not None
    model = records.describe("models", config["ProductionVariants"][0]["ModelName"])
    assert model is not None
    artifact = model["PrimaryContainer"]["ModelDataUrl"]
    assert artifact == h.model_versions(MODEL)[-1].model_artifact
    with tarfile.open(fileobj=io.BytesIO(h.read(artifact))) as archive:
        assert "model.joblib" in archive.getnames()
    # the history stays
    assert [v.version for v in h.model_versions(MODEL)] == [3, 2, 1]
    assert h.run_record(REJECTED[0]) is not None
