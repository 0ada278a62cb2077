"""Garbage collection of old runs' artifacts: exactly what is kept and deleted, on a moto account holding
runs laid out as the pipeline leaves them (objects, registry versions, run records, stand-in records)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pipeline_core.aws.registry import ModelRegistry
from pipeline_core.aws.runs import RunLog
from pipeline_core.standin import endpoints
from pipeline_core.standin.store import RecordStore

from stepml.artifacts import UnknownServingError, attributed_prefix, run_footprint
from stepml.gc import COLLECTED_AT, GcPolicy, collect, format_report, plan
from stepml.targets import StackOutputs
from tests.conftest import EXECUTION_ARN, FakeAws, registry_item
from tests.unit.test_standin import asl_request, deploy_requests, pipeline_state

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ARN = EXECUTION_ARN
SPLITS = ("train", "validation", "test")


@dataclass
class FakeTarget:
    """A target over the moto account (what ``stepml.targets`` gives the CLI)."""

    aws: FakeAws
    name: str = "embedded"

    @property
    def outputs(self) -> StackOutputs:
        return StackOutputs(
            "arn:aws:states:::stateMachine:p", self.aws.bucket, self.aws.registry_table, self.aws.runs_table
        )

    def client(self, service: str) -> Any:
        return {"s3": self.aws.s3, "dynamodb": self.aws.dynamodb}[service]


def put_run_objects(fake: FakeAws, run: str, trained: bool = True) -> list[str]:
    """What one run writes (the staged upload, raw copy, splits, artifacts, evaluation); the keys."""
    job = f"stepml-{run}"
    keys = [f"datasets/{run}/iris.csv", f"raw/{run}/iris.csv"] + [f"processed/{run}/{s}/{s}.csv" for s in SPLITS]
    if trained:
        keys += [f"models/{job}/output/{n}.tar.gz" for n in ("model", "output")]
        keys += [f"models/{job}/evaluation/{n}" for n in ("evaluation.json", "report.html")]
    for key in keys:
        fake.put(key, f"{key} bytes".encode())
    store = RecordStore(fake.bucket, fake.s3)
    request = asl_request("Train", pipeline_state(fake, run))
    artifacts = {"S3ModelArtifacts": f"s3://{fake.bucket}/models/{job}/output/model.tar.gz"} if trained else {}
    store.put("training-jobs", job, {**request, "TrainingJobStatus": "Completed", "ModelArtifacts": artifacts})
    return keys


def registered_run(fake: FakeAws, run: str, status: str, model: str = "iris", deploy: bool = True) -> list[str]:
    """A run that reached Register: objects, stand-in records (deployed if approved), version, run record."""
    keys = put_run_objects(fake, run)
    store = RecordStore(fake.bucket, fake.s3)
    if status == "approved" and deploy:
        requests = deploy_requests(fake, run, f"s3://{fake.bucket}/models/stepml-{run}/output/model.tar.gz")
        endpoints.create_model(store, requests["CreateModel"])
        endpoints.create_endpoint_config(store, requests["CreateEndpointConfig"])
        if store.get("endpoints", "stepml-test-iris-ep") is None:
            endpoints.create_endpoint(store, requests["CreateEndpoint"])
        else:
            endpoints.update_endpoint(store, requests["UpdateEndpoint"])
    version = ModelRegistry(fake.registry_table, fake.dynamodb).register_model(registry_item(fake, run, model, status))
    RunLog(fake.runs_table, fake.dynamodb).update_run(
        run,
        status="SUCCEEDED",
        dataset=f"s3://{fake.bucket}/datasets/{run}/iris.csv",
        raw_uri=f"s3://{fake.bucket}/raw/{run}/iris.csv",
        model_name=model,
        model_version=version.version,
        registry_status=status,
        execution_arn=ARN.format(run),
        finished_at="2026-11-01T00:00:00+00:00",
    )
    return keys


def failed_run(fake: FakeAws, run: str, failed_at: datetime, dataset_key: str | None = None) -> list[str]:
    """A run that failed in Evaluate: its objects and the run record RecordFailure writes."""
    keys = put_run_objects(fake, run)
    job, bucket = f"stepml-{run}", fake.bucket
    dataset = f"s3://{bucket}/{dataset_key or f'datasets/{run}/iris.csv'}"
    pointers = {
        "dataset": dataset,
        "model_name": "iris",
        "raw_uri": f"s3://{bucket}/raw/{run}/iris.csv",
        "processed_prefix": f"s3://{bucket}/processed/{run}/",
        **{f"{s}_uri": f"s3://{bucket}/processed/{run}/{s}/" for s in SPLITS},
        "training_job_name": job,
        "model_artifact": f"s3://{bucket}/models/{job}/output/model.tar.gz",
    }
    RunLog(fake.runs_table, fake.dynamodb).update_run(
        run,
        status="FAILED",
        dataset=dataset,
        raw_uri=pointers["raw_uri"],
        model_name="iris",
        execution_arn=ARN.format(run),
        failed_state="Evaluate",
        error="EvaluationError",
        cause="boom",
        input_pointers=pointers,
        failed_at=failed_at.isoformat(timespec="seconds"),
        finished_at=failed_at.isoformat(timespec="seconds"),
    )
    return keys


def all_keys(fake: FakeAws) -> set[str]:
    return {
        o["Key"]
        for p in fake.s3.get_paginator("list_objects_v2").paginate(Bucket=fake.bucket)
        for o in p.get("Contents", [])
    }


def history(fake: FakeAws) -> dict[str, list[str]]:
    """Model iris, oldest first: v1-v2 approved, v3-v4 rejected, v5 approved, v6-v9 rejected, v10 approved
    (the champion), so v5 is the previous approved version; plus each run's keys."""
    statuses = ["approved", "approved", "rejected", "rejected", "approved"] + ["rejected"] * 4 + ["approved"]
    return {f"run-{i}": registered_run(fake, f"run-{i}", s) for i, s in enumerate(statuses, start=1)}


def test_old_rejected_versions_go_and_champion_previous_and_newest_rejected_stay(aws: FakeAws) -> None:
    keys = history(aws)
    target = FakeTarget(aws)

    planned = plan(target, GcPolicy(keep_rejected=3), now=NOW)

    # rejected: v9, v8, v7 are the newest three; v6, v4, v3 go. Approved versions all stay by default.
    assert sorted(u.version for u in planned.collected if u.version) == [3, 4, 6]
    assert {u.run_id: u.reason for u in planned.kept}["run-10"] == "champion"
    assert "rollback" in {u.run_id: u.reason for u in planned.kept}["run-5"]
    doomed = {k for run in ("run-3", "run-4", "run-6") for k in keys[run]}
    assert {k for u in planned.collected for k in u.keys} == doomed
    assert planned.dry_run and all_keys(aws) >= doomed  # a plan deletes nothing

    before = all_keys(aws)
    done = collect(target, GcPolicy(keep_rejected=3), delete=True, now=NOW)

    assert not done.dry_run and done.objects == len(doomed)
    assert all_keys(aws) == before - doomed
    # history stays: every version is still there and parses; collected ones are marked
    versions = ModelRegistry(aws.registry_table, aws.dynamodb).versions("iris")
    assert [v.version for v in versions] == list(range(10, 0, -1))
    item = aws.dynamodb.get_item(TableName=aws.registry_table, Key={"model_name": {"S": "iris"}, "version": {"N": "3"}})
    assert COLLECTED_AT in item["Item"]
    assert COLLECTED_AT in (RunLog(aws.runs_table, aws.dynamodb).get_run("run-3") or {})
    # stand-in records are SageMaker resources, not artifacts; code and the endpoint stay too
    assert {k for k in before if k.startswith("_sagemaker/")} <= all_keys(aws)
    # a second pass finds nothing more
    assert collect(target, GcPolicy(keep_rejected=3), delete=True, now=NOW).collected == []


def test_a_version_waiting_for_approval_stays_however_old(aws: FakeAws) -> None:
    statuses = ["pending_approval"] + ["rejected"] * 4 + ["approved"]
    keys = {f"run-{i}": registered_run(aws, f"run-{i}", s) for i, s in enumerate(statuses, start=1)}

    planned = plan(FakeTarget(aws), GcPolicy(keep_rejected=0), now=NOW)

    assert sorted(u.version for u in planned.collected if u.version) == [2, 3, 4, 5]
    kept = {u.run_id: u.reason for u in planned.kept}
    assert kept["run-1"] == "waiting for approval: if approved, its run deploys this model"
    assert not set(keys["run-1"]) & {k for u in planned.collected for k in u.keys}


def test_older_approved_versions_go_only_on_request_never_the_served_or_rollback_ones(aws: FakeAws) -> None:
    keys = history(aws)
    # an operator pointed the endpoint back at v2's config by hand: v2 is served although not champion
    store = RecordStore(aws.bucket, aws.s3)
    endpoints.update_endpoint(store, {"EndpointName": "stepml-test-iris-ep", "EndpointConfigName": "stepml-run-2"})
    target = FakeTarget(aws)

    assert not [u for u in plan(target, GcPolicy(keep_rejected=10), now=NOW).collected]

    planned = plan(target, GcPolicy(keep_rejected=10, keep_approved=1), now=NOW)

    assert [u.run_id for u in planned.collected] == ["run-1"]
    reasons = {u.run_id: u.reason for u in planned.kept}
    assert reasons["run-10"] == "champion"
    assert reasons["run-5"].startswith("previous approved")
    assert reasons["run-2"] == "served by endpoint stepml-test-iris-ep (config stepml-run-2)"
    collect(target, GcPolicy(keep_rejected=10, keep_approved=1), delete=True, now=NOW)
    assert not set(keys["run-1"]) & all_keys(aws)
    for run in ("run-2", "run-5", "run-10"):
        assert set(keys[run]) <= all_keys(aws)


def test_the_champion_and_its_predecessor_stay_even_with_keep_approved_zero(aws: FakeAws) -> None:
    keys = {run: registered_run(aws, run, "approved") for run in ("a", "b", "c")}
    planned = collect(FakeTarget(aws), GcPolicy(keep_approved=0), delete=True, now=NOW)

    assert [u.run_id for u in planned.collected] == ["a"]
    assert set(keys["b"]) | set(keys["c"]) <= all_keys(aws)


def test_failed_runs_go_once_old_enough_and_their_upload_and_quarantine_stay(aws: FakeAws) -> None:
    old = failed_run(aws, "failed-old", NOW - timedelta(days=10))
    recent = failed_run(aws, "failed-recent", NOW - timedelta(days=1))
    uploaded = failed_run(aws, "failed-upload", NOW - timedelta(days=30), dataset_key="incoming/iris.csv")
    aws.put("incoming/iris.csv", b"upload")
    aws.put("quarantine/failed-upload/iris.csv", b"copy")
    running = put_run_objects(aws, "running", trained=False)
    RunLog(aws.runs_table, aws.dynamodb).update_run(
        "running", status="RUNNING", model_name="iris", raw_uri=f"s3://{aws.bucket}/raw/running/iris.csv"
    )

    done = collect(FakeTarget(aws), GcPolicy(failed_older_than=timedelta(days=7)), delete=True, now=NOW)

    assert sorted(u.run_id for u in done.collected) == ["failed-old", "failed-upload"]
    assert "failed in Evaluate: EvaluationError" in done.collected[0].reason
    left = all_keys(aws)
    assert not set(old) & left
    assert set(recent) <= left and set(running) <= left
    # it ran from incoming/: a datasets/ file under its name is named by no record of it, so it stays
    assert set(uploaded) & left == {"datasets/failed-upload/iris.csv"}
    assert {"incoming/iris.csv", "quarantine/failed-upload/iris.csv"} <= left
    assert collect(FakeTarget(aws), GcPolicy(failed_older_than=None), now=NOW + timedelta(days=99)).collected == []


def test_every_version_of_a_key_goes_on_a_versioned_bucket(aws: FakeAws) -> None:
    aws.s3.put_bucket_versioning(Bucket=aws.bucket, VersioningConfiguration={"Status": "Enabled"})
    for run in ("r1", "r2", "r3"):
        registered_run(aws, run, "rejected")
    aws.put("processed/r1/train/train.csv", b"rewritten")  # a second version
    aws.s3.delete_object(Bucket=aws.bucket, Key="raw/r1/iris.csv")  # a delete marker over a version

    done = collect(FakeTarget(aws), GcPolicy(keep_rejected=2), delete=True, now=NOW)

    assert [u.run_id for u in done.collected] == ["r1"]
    left = aws.s3.list_object_versions(Bucket=aws.bucket)
    names = [v["Key"] for v in left.get("Versions", []) + left.get("DeleteMarkers", [])]
    assert not [k for k in names if "r1/" in k]
    assert [k for k in names if "r2/" in k]


def test_only_the_named_model_is_collected(aws: FakeAws) -> None:
    for run in ("i1", "i2"):
        registered_run(aws, run, "rejected")
    for run in ("d1", "d2"):
        registered_run(aws, run, "rejected", model="diabetes")

    planned = plan(FakeTarget(aws), GcPolicy(keep_rejected=1, model_name="diabetes"), now=NOW)

    assert [u.run_id for u in planned.collected] == ["d1"]
    assert {u.model_name for u in planned.kept} == {"diabetes"}


def test_what_is_not_attributable_is_left_alone(aws: FakeAws) -> None:
    for run in ("x1", "x2"):
        registered_run(aws, run, "rejected")
    # x1's version names a shared model artifact and a raw file of another run: neither is x1's
    aws.dynamodb.update_item(
        TableName=aws.registry_table,
        Key={"model_name": {"S": "iris"}, "version": {"N": "1"}},
        UpdateExpression="SET model_artifact = :a, dataset_uri = :d",
        ExpressionAttributeValues={
            ":a": {"S": f"s3://{aws.bucket}/shared/model.tar.gz"},
            ":d": {"S": f"s3://{aws.bucket}/raw/x2/iris.csv"},
        },
    )
    aws.put("shared/model.tar.gz", b"shared")

    planned = plan(FakeTarget(aws), GcPolicy(keep_rejected=1), now=NOW)

    keys = planned.collected[0].keys
    assert "shared/model.tar.gz" not in keys and not [k for k in keys if "x2" in k]
    assert "raw/x1/iris.csv" in keys  # still named by x1's run record


def test_an_endpoint_whose_model_cannot_be_read_stops_everything(aws: FakeAws) -> None:
    for run in ("e1", "e2"):
        registered_run(aws, run, "rejected")
    registered_run(aws, "e3", "approved")
    aws.s3.delete_object(Bucket=aws.bucket, Key="_sagemaker/models/stepml-e3.json")

    with pytest.raises(UnknownServingError, match="stepml-test-iris-ep"):
        collect(FakeTarget(aws), GcPolicy(keep_rejected=0), delete=True, now=NOW)
    assert "raw/e1/iris.csv" in all_keys(aws)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://b/raw/run-1/iris.csv", "raw/run-1/"),
        ("s3://b/processed/run-1/train", "processed/run-1/"),
        ("s3://b/processed/run-1/train/", "processed/run-1/"),
        ("s3://b/models/stepml-job/output/model.tar.gz", "models/stepml-job/"),
        ("s3://b/datasets/run-1/iris.csv", "datasets/run-1/"),
        ("s3://b/datasets/other/iris.csv", None),
        ("s3://b/incoming/run-1/iris.csv", None),
        ("s3://b/quarantine/run-1/iris.csv", None),
        ("s3://b/_sagemaker/models/stepml-job.json", None),
        ("s3://other/raw/run-1/iris.csv", None),
        ("s3://b/run-1/iris.csv", None),  # a top-level folder is never one run's
    ],
)
def test_a_uri_counts_through_its_folder_named_after_the_run_or_job(uri: str, expected: str | None) -> None:
    assert attributed_prefix(uri, "b", ["run-1", "stepml-job"]) == expected


def test_a_run_named_like_a_top_level_folder_claims_only_its_own(aws: FakeAws) -> None:
    assert attributed_prefix("s3://b/models/stepml-x/output/m.tar.gz", "b", ["models", "stepml-x"]) == (
        "models/stepml-x/"
    )


def test_footprint_and_report(aws: FakeAws) -> None:
    registered_run(aws, "f1", "rejected")
    registered_run(aws, "f2", "rejected")

    usage = {u.prefix: u for u in run_footprint(FakeTarget(aws), "f1")}

    assert set(usage) == {
        "datasets/f1/",
        "raw/f1/",
        "processed/f1/",
        "models/stepml-f1/",
        "_sagemaker/training-jobs/stepml-f1.json",  # a rejected run made no model or endpoint config
    }
    assert usage["processed/f1/"].keys == 3
    assert usage["models/stepml-f1/"].bytes == sum(
        len(f"models/stepml-f1/{n} bytes")
        for n in ("output/model.tar.gz", "output/output.tar.gz", "evaluation/evaluation.json", "evaluation/report.html")
    )
    report = plan(FakeTarget(aws), GcPolicy(keep_rejected=1), now=NOW)
    text = format_report(report)
    assert text.startswith("would delete 9 objects") and "--yes deletes" in text
    assert json.loads(json.dumps(report.to_json()))["collected"][0]["run_id"] == "f1"


def test_a_kept_versions_baseline_stays_when_it_lies_in_a_collected_runs_prefix(aws: FakeAws) -> None:
    """run-2 reused run-1's Preprocess from the step cache, so its baseline is run-1's processed/run-1/baseline.json:
    run-1 (rejected) is collected, but not the baseline `stepml monitor` needs for the champion."""
    keys = registered_run(aws, "run-1", "rejected")
    registered_run(aws, "run-2", "approved")
    baseline = aws.put("processed/run-1/baseline.json", b"{}")
    aws.dynamodb.update_item(
        TableName=aws.registry_table,
        Key={"model_name": {"S": "iris"}, "version": {"N": "2"}},
        UpdateExpression="SET baseline_uri = :b",
        ExpressionAttributeValues={":b": {"S": baseline}},
    )
    planned = plan(FakeTarget(aws), GcPolicy(keep_rejected=0), now=NOW)
    (run_1,) = planned.collected
    assert run_1.run_id == "run-1" and set(run_1.keys) == set(keys)
    assert planned.spared == {"processed/run-1/baseline.json": "the training baseline of iris v2, which is kept"}
