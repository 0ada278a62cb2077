"""The step cache on the embedded target: the real definition's Lookup/Reuse/Remember states.

A rerun of unchanged input reuses Preprocess, training and Evaluate and gets the registered version back; a
change reruns exactly the steps downstream of it (data: all three; a hyperparameter or the training source:
training and Evaluate); an entry whose outputs were deleted, or that expired, is a miss; two runs with one key
at once both succeed and leave an entry a third run reuses.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pipeline_core.aws.step_cache import StepCache

from tests.integration.harness import IRIS, Finished, Harness, Job, embedded_harness

pytestmark = pytest.mark.slow

STEPS = ("Preprocess", "Train", "Evaluate")
REUSED = {"Preprocess": "ReusePreprocess", "Train": "ReuseTraining", "Evaluate": "ReuseEvaluation"}


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    yield from embedded_harness()


def cached_input(h: Harness, key: str, body: bytes, model: str, **extra: Any) -> dict[str, Any]:
    # no_cache False explicitly: the harness turns the cache off for the other tests' jobs
    return {"dataset": h.upload(key, body), "model_name": model, "no_cache": False, **extra}


def ran(finished: Finished) -> set[str]:
    """Which of Preprocess, Train and Evaluate ran (rather than being reused)."""
    assert finished.status == "SUCCEEDED", finished.describe()
    path = set(finished.path)
    for step in STEPS:
        assert (step in path) != (REUSED[step] in path), f"{step}: ran and reused? {finished.path}"
    return {step for step in STEPS if step in path}


def cache(h: Harness) -> StepCache:
    return StepCache(h.aws.stack.tables["StepCacheTable"].name, h.aws.client("dynamodb"))


@pytest.fixture(scope="module")
def first_two(h: Harness) -> tuple[Finished, Finished]:
    """A run, then the same input again."""
    execution_input = cached_input(h, "datasets/cache/iris.csv", IRIS, "cache-iris")
    first = h.run(Job("cache-first", execution_input))
    second = h.run(Job("cache-second", execution_input))
    return first, second


def test_an_identical_rerun_reuses_every_step_and_the_registered_version(
    h: Harness, first_two: tuple[Finished, Finished]
) -> None:
    first, second = first_two
    assert ran(first) == set(STEPS)
    assert ran(second) == set()
    for lookup in ("LookupPreprocess", "LookupTraining", "LookupEvaluation"):
        answer = second.output_of(lookup)["cache"]
        step = {"LookupPreprocess": "preprocess", "LookupTraining": "training", "LookupEvaluation": "evaluation"}
        assert answer[step[lookup]]["from_run"] == "cache-first", answer
    # the model is the first run's: same training job, same registry version, no second version
    assert second.output_of("ReuseTraining")["training"] == first.output_of("Train")["training"]
    registration = second.output_of("Register")["registration"]
    assert registration["version"] == 1 and registration["reused_version"] is True
    assert [v.version for v in h.model_versions("cache-iris")] == [1]
    assert "Preprocess" in first.path and "CreateEndpoint" in first.path
    assert "CreateModel" not in second.path, "the endpoint already serves this model: no deployment again"
    # the gate was decided again: against the champion, which is now the first run's model itself
    assert second.output_of("ReuseEvaluation")["evaluation"]["champion_version"] == 1
    record = h.run_record("cache-second")
    assert record is not None and record["status"] == "SUCCEEDED" and record["model_version"] == 1
    assert {step: v["from_run"] for step, v in record["reused_steps"].items()} == {
        "Preprocess": "cache-first",
        "Training": "cache-first",
        "Evaluate": "cache-first",
    }
    entries = cache(h).entries(model_name="cache-iris")
    assert sorted(e.step for e in entries) == ["Evaluate", "Preprocess", "Training"]
    assert {e.run_id for e in entries} == {"cache-first"}


def test_a_change_reruns_exactly_the_steps_after_it(h: Harness, first_two: tuple[Finished, Finished]) -> None:
    key = "datasets/cache/iris.csv"
    hyperparameter = h.run(
        Job("cache-hyper", cached_input(h, key, IRIS, "cache-iris", hyperparameters={"max_iter": 50}))
    )
    assert ran(hyperparameter) == {"Train", "Evaluate"}
    # the report says what the run reused
    evaluation = hyperparameter.output_of("Evaluate")["evaluation"]
    assert json.loads(h.read(evaluation["evaluation_uri"]))["reused_steps"] == {"Preprocess": "cache-first"}
    assert "Preprocess from run cache-first" in h.read(evaluation["report_uri"]).decode()
    # one row fewer: other bytes, so every step runs
    fewer = IRIS.decode().rstrip("\n").rsplit("\n", 1)[0].encode() + b"\n"
    data = h.run(Job("cache-data", cached_input(h, "datasets/cache-data/iris.csv", fewer, "cache-iris")))
    assert ran(data) == set(STEPS)


def _with_changed_train_py(source: bytes) -> bytes:
    """The training source tarball with one more line in train.py (a comment: same model, other code)."""
    out = io.BytesIO()
    before_file = io.BytesIO(source)
    with tarfile.open(fileobj=before_file, mode="r:gz") as before, tarfile.open(fileobj=out, mode="w:gz") as after:
        for member in before.getmembers():
            data = before.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if member.name.endswith("train.py") and data is not None:
                data += b"\n# changed\n"
                member.size = len(data)
            after.addfile(member, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def test_a_changed_train_py_reruns_training_and_evaluate(h: Harness, first_two: tuple[Finished, Finished]) -> None:
    uri = h.aws.stack.substitutions["TrainingSourceUri"]
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    original = h.read(uri)
    h.s3.put_object(Bucket=bucket, Key=key, Body=_with_changed_train_py(original))
    try:
        changed = h.run(Job("cache-code", cached_input(h, "datasets/cache/iris.csv", IRIS, "cache-iris")))
    finally:
        h.s3.put_object(Bucket=bucket, Key=key, Body=original)
    assert ran(changed) == {"Train", "Evaluate"}
    assert changed.output_of("LookupTraining")["cache"]["training"]["reason"] == "no earlier run made this result"


def test_deleted_outputs_and_expired_entries_are_misses(h: Harness, first_two: tuple[Finished, Finished]) -> None:
    first, _ = first_two
    artifact = first.output_of("Train")["training"]["ModelArtifacts"]
    bucket, key = artifact.removeprefix("s3://").split("/", 1)
    h.s3.delete_object(Bucket=bucket, Key=key)
    deleted = h.run(Job("cache-deleted", cached_input(h, "datasets/cache/iris.csv", IRIS, "cache-iris")))
    assert ran(deleted) == {"Train", "Evaluate"}
    reason = deleted.output_of("LookupTraining")["cache"]["training"]["reason"]
    assert "lost 1 of its files" in reason and artifact in reason
    # the rerun stored its own result under the same key: the next run reuses that one
    again = h.run(Job("cache-after-deleted", cached_input(h, "datasets/cache/iris.csv", IRIS, "cache-iris")))
    assert ran(again) == set()
    assert again.output_of("LookupTraining")["cache"]["training"]["from_run"] == "cache-deleted"

    # an entry past its TTL that DynamoDB has not deleted yet is a miss too
    table = h.aws.stack.tables["StepCacheTable"].name
    preprocess_key = again.output_of("LookupPreprocess")["cache"]["preprocess"]["key"]
    h.aws.client("dynamodb").update_item(
        TableName=table,
        Key={"cache_key": {"S": preprocess_key}},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 60)}},
    )
    expired = h.run(Job("cache-expired", cached_input(h, "datasets/cache/iris.csv", IRIS, "cache-iris")))
    # Preprocess runs again; its key is the same, so the training job after it is still reused
    assert ran(expired) == {"Preprocess"}
    assert "expired" in expired.output_of("LookupPreprocess")["cache"]["preprocess"]["reason"]


def test_no_cache_runs_every_step_and_still_stores(h: Harness, first_two: tuple[Finished, Finished]) -> None:
    forced = h.run(
        Job("cache-forced", cached_input(h, "datasets/cache/iris.csv", IRIS, "cache-iris") | {"no_cache": True})
    )
    assert ran(forced) == set(STEPS)
    assert "no_cache" in forced.output_of("LookupPreprocess")["cache"]["preprocess"]["reason"]
    entry = cache(h).get(forced.output_of("LookupTraining")["cache"]["training"]["key"])
    assert entry is not None and entry.run_id == "cache-forced"


def test_two_runs_with_one_key_at_once_leave_a_usable_entry(h: Harness) -> None:
    body = IRIS.replace(b"setosa", b"Setosa")  # bytes no other test uses
    execution_input = cached_input(h, "datasets/cache-concurrent/iris.csv", body, "cache-concurrent")
    both = h.run_all([Job("cache-left", execution_input), Job("cache-right", execution_input)])
    assert all(f.status == "SUCCEEDED" for f in both.values()), [f.describe() for f in both.values()]
    entries = cache(h).entries(model_name="cache-concurrent")
    # one Preprocess and one training entry (one key each, the last put won); an evaluation of each job
    assert sorted(e.step for e in entries) == ["Evaluate", "Evaluate", "Preprocess", "Training"]
    for entry in entries:
        assert entry.run_id in {"cache-left", "cache-right"}
        assert all(h.keys(uri.removeprefix(f"s3://{h.bucket}/")) for uri in entry.outputs)
    third = h.run(Job("cache-third", execution_input))
    assert ran(third) == set()
