"""Sharded validation and preprocessing on Step Functions' Distributed Map (issue 14), through the real definition
on the embedded target: a generated CSV run twice, once on the single-Lambda path (the template's defaults) and
once with ShardThresholdBytes lowered so that it is cut into 4 shards. The run succeeds, takes the Distributed
Maps (ValidateShards, then PlanSplit, PreprocessShards and WriteSplits), and its validation output, split files,
columns.json, baseline.json and the trained model's metrics equal the single-Lambda run's.

Two local AWS starts (the threshold is a function setting), one run each, ~40 s on 2 cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stepml.embedded.runtime import EmbeddedAws
from stepml.project import project_layout
from tests.integration.harness import Finished, Harness, Job

pytestmark = pytest.mark.slow

ROWS = 3000


def _dataset() -> bytes:
    """Numbers, a category, a quoted text with commas and line breaks, and a binary label that depends on
    them: every shard sees each kind of value."""
    rng = np.random.default_rng(14)
    x = np.round(rng.normal(size=(ROWS, 3)), 3)
    colour = rng.choice(["red", "green", "blue"], ROWS)
    score = x[:, 0] + 0.5 * x[:, 1] + (colour == "red") + rng.logistic(scale=0.3, size=ROWS)
    frame = pd.DataFrame(
        {
            "x0": x[:, 0],
            "x1": x[:, 1],
            "x2": x[:, 2],
            "colour": colour,
            "note": [f'line {i}, "quoted"\nsecond line' if i % 50 == 0 else "" for i in range(ROWS)],
            "label": np.where(score > 0.5, "yes", "no"),
        }
    )
    return frame.to_csv(index=False).encode()


@dataclass(frozen=True)
class Ran:
    finished: Finished
    files: dict[str, bytes]  # what the run's preprocess wrote: split files, columns.json, baseline.json


def _written(harness: Harness, finished: Finished) -> dict[str, bytes]:
    state = "WriteSplits" if "WriteSplits" in finished.path else "Preprocess"
    prep = finished.output_of(state)["prep"]
    files = {"baseline.json": harness.read(prep["baseline_uri"])}
    for split in ("train", "validation", "test"):
        files[f"{split}.csv"] = harness.read(f"{prep[f'{split}_uri']}{split}.csv")
        files[f"{split}/columns.json"] = harness.read(f"{prep[f'{split}_uri']}columns.json")
    return files


def _run(data: bytes, name: str, shard_threshold: int | None = None) -> Ran:
    aws = EmbeddedAws(project_layout(), persist=False)
    if shard_threshold is not None:  # what the ShardThresholdBytes / ShardSizeBytes parameters set
        aws.stack.functions["IngestFunction"].environment["SHARD_THRESHOLD_BYTES"] = str(shard_threshold)
        # 4 shards: each cut at a row boundary leaves less than a row of room unused
        for function in ("SplitDatasetFunction", "PlanSplitFunction"):  # both take ShardSizeBytes
            aws.stack.functions[function].environment["SHARD_SIZE_BYTES"] = str(len(data) // 4 + 200)
        # and LargeDatasetThresholdBytes below the file, as for a file too large for one Lambda: only the whole-file
        # fallbacks (ValidateData, Preprocess) are bound by it, so the sharded run must not meet it
        single_cap = str(shard_threshold)
        aws.stack.functions["IngestFunction"].environment["LARGE_DATASET_THRESHOLD_BYTES"] = single_cap
        for function in ("ValidateDataFunction", "PreprocessFunction"):
            aws.stack.functions[function].environment["MAX_DATASET_BYTES"] = single_cap
    with aws:
        harness = Harness(aws)
        uri = harness.upload(f"datasets/{name}/generated.csv", data)
        finished = harness.run(Job(name, {"dataset": uri, "target": "label"}))
        return Ran(finished, _written(harness, finished) if finished.status == "SUCCEEDED" else {})


@pytest.fixture(scope="module")
def ran() -> Iterator[dict[str, Ran]]:
    data = _dataset()
    yield {"single": _run(data, "single"), "sharded": _run(data, "sharded", shard_threshold=len(data) // 2)}


@pytest.fixture(scope="module")
def runs(ran: dict[str, Ran]) -> dict[str, Finished]:
    return {name: run.finished for name, run in ran.items()}


def _validation(run: Finished, state: str) -> dict[str, Any]:
    data: dict[str, Any] = run.output_of(state)["data"]
    return data


def test_a_large_csv_is_validated_on_the_distributed_map_and_the_run_succeeds(runs: dict[str, Finished]) -> None:
    sharded, single = runs["sharded"], runs["single"]
    assert single.status == "SUCCEEDED", single.describe()
    assert sharded.status == "SUCCEEDED", sharded.describe()
    assert "ValidateShards" not in single.path and "ValidateData" in single.path
    assert "ValidateData" not in sharded.path
    assert (
        sharded.path.index("SplitDataset") < sharded.path.index("ValidateShards") < sharded.path.index("MergeProfiles")
    )
    split = sharded.output_of("SplitDataset")["shards"]
    assert split["count"] == 4
    results = sharded.output_of("ValidateShards")["shard_results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3] and all(r["state_uri"] for r in results)


def test_the_sharded_validation_and_model_equal_the_single_lambda_paths(runs: dict[str, Finished]) -> None:
    sharded, single = runs["sharded"], runs["single"]
    assert _validation(sharded, "MergeProfiles") == _validation(single, "ValidateData")
    assert sharded.outcome.columns == single.outcome.columns
    assert sharded.outcome.metrics and sharded.outcome.metrics == single.outcome.metrics


def test_a_sharded_run_preprocesses_on_the_shards(runs: dict[str, Finished]) -> None:
    sharded, single = runs["sharded"], runs["single"]
    assert not {"PlanSplit", "PreprocessShards", "WriteSplits"} & set(single.path) and "Preprocess" in single.path
    assert "Preprocess" not in sharded.path
    path = sharded.path
    assert (
        path.index("PreprocessCached")
        < path.index("ChoosePreprocessPath")
        < path.index("PlanSplit")
        < path.index("PreprocessShards")
        < path.index("WriteSplits")
        < path.index("RememberPreprocess")
    )
    plan = sharded.output_of("PlanSplit")["plan"]
    assert plan["count"] == 4 and plan["whole_file"] is None
    parts = sharded.output_of("PreprocessShards")["prep_parts"]
    assert [p["index"] for p in parts] == [0, 1, 2, 3]


def test_the_sharded_preprocess_writes_the_single_paths_bytes(ran: dict[str, Ran]) -> None:
    sharded, single = ran["sharded"], ran["single"]
    assert set(sharded.files) == set(single.files) and len(single.files) == 7
    for name, data in single.files.items():
        assert sharded.files[name] == data, name
    prep = {
        name: run.finished.output_of(state)["prep"]
        for name, run, state in (("single", single, "Preprocess"), ("sharded", sharded, "WriteSplits"))
    }
    ignored = {"train_uri", "validation_uri", "test_uri", "baseline_uri"}  # under each run's own prefix
    assert {k: v for k, v in prep["sharded"].items() if k not in ignored} == {
        k: v for k, v in prep["single"].items() if k not in ignored
    }
