"""The training baseline: statistics per feature (pipeline_core.stages.baseline), written by Preprocess beside the
splits, recorded by Register and kept by the step cache."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pipeline_core.aws.s3 import ObjectStore
from pipeline_core.models import CacheEntry, ColumnProfile, DataProfile
from pipeline_core.stages.baseline import (
    QUANTILE_POINTS,
    Baseline,
    baseline_document,
    bin_counts,
    build_baseline,
    categorical_stats,
    category_text,
    numeric_stats,
    read_baseline,
)
from pipeline_core.stages.step_cache import outdated_result, outputs_of

from tests.unit.test_data_validation import aws, csv_bytes, iris_frame
from tests.unit.test_preprocess import run

__all__ = ["aws"]  # the module-scoped moto account, used here by name


def test_numeric_bins_are_the_deciles_and_hold_a_tenth_each() -> None:
    values = np.arange(1, 1001, dtype=float)
    stats = numeric_stats(values)
    assert stats is not None
    assert stats.edges == [float(v) for v in range(100, 1000, 100)]
    assert stats.proportions == pytest.approx([0.1] * 10)
    assert (stats.min, stats.max, stats.mean) == (1.0, 1000.0, 500.5)
    assert stats.std == pytest.approx(np.std(values, ddof=1))
    assert len(stats.quantiles) == QUANTILE_POINTS and stats.quantiles[0] == 1 and stats.quantiles[-1] == 1000
    assert numeric_stats(np.array([np.nan, np.inf])) is None


def test_repeated_values_give_fewer_bins_and_their_true_shares() -> None:
    values = np.array([0.0] * 70 + [1.0] * 30)
    stats = numeric_stats(values)
    assert stats is not None
    assert stats.edges == [0.0, 1.0]  # deciles 0,...,0,1,1,1 without duplicates
    assert stats.proportions == pytest.approx([0.7, 0.3, 0.0])
    # right-closed bins: a value equal to an edge falls in the bin that edge closes
    assert list(bin_counts(stats.edges, np.array([-5.0, 0.0, 0.5, 1.0, 2.0]))) == [2.0, 2.0, 1.0]


def test_categories_are_capped_with_the_rest_pooled_and_ties_broken_by_name() -> None:
    values = pd.Series([f"c{i:02d}" for i in range(40) for _ in range(40 - i)] + ["b", "a"] * 50)
    stats = categorical_stats(values, max_categories=5)
    assert stats is not None
    assert list(stats.frequencies) == ["a", "b", "c00", "c01", "c02"]  # a and b tie at 50: by name
    assert stats.distinct == 42
    assert sum(stats.frequencies.values()) + stats.other == pytest.approx(1.0)
    assert stats.other == pytest.approx(1 - (50 + 50 + 40 + 39 + 38) / len(values))
    assert categorical_stats(pd.Series([None, None], dtype=object)) is None


def test_categories_are_canonical_text_whatever_type_carried_them() -> None:
    assert list(category_text(pd.Series([3.0, 2.5, np.nan, -0.0]))) == ["3", "2.5", None, "0"]
    assert list(category_text(pd.Series([True, False]))) == ["true", "false"]
    assert list(category_text(pd.Series(["a", None], dtype=object))) == ["a", None]


def profile_of(frame: pd.DataFrame, roles: dict[str, tuple[str, str]], target: str) -> DataProfile:
    columns = [
        ColumnProfile(name=name, dtype=dtype, role=role, reason="test", missing=0)
        for name, (dtype, role) in roles.items()
    ]
    features = [name for name, (_, role) in roles.items() if role not in ("target", "identifier", "excluded")]
    return DataProfile(
        n_rows=len(frame),
        n_columns=len(roles),
        target=target,
        target_chosen_by="input",
        problem_type="binary_classification",
        problem_type_chosen_by="input",
        problem_type_reason="test",
        feature_columns=features,
        columns=columns,
    )


def test_a_baseline_describes_each_feature_by_role_and_reads_back_unchanged() -> None:
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(8)],
            "size": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 7.0, 8.0],
            "colour": ["red", "blue", "red", None, "red", "blue", "green", "red"],
            "zip": [10.0, 10.0, 20.0, 20.0, 20.0, 30.0, np.nan, 10.0],  # numbers read as categories
            "when": ["2026-01-01"] * 8,
            "label": ["y", "n"] * 4,
        }
    )
    roles = {
        "id": ("categorical", "identifier"),
        "size": ("numeric", "numeric"),
        "colour": ("categorical", "categorical"),
        "zip": ("numeric", "categorical"),
        "when": ("categorical", "datetime"),
        "label": ("categorical", "target"),
    }
    baseline = build_baseline(frame, profile_of(frame, roles, "label"), "ab" * 32)

    assert baseline.feature_names == ["size", "colour", "zip", "when"]
    assert baseline.other_columns == ["id", "label"]
    assert (baseline.n_rows, baseline.target, baseline.dataset_sha256) == (8, "label", "ab" * 32)
    size = baseline.feature("size")
    assert (size.count, size.missing, size.missing_rate, size.compare) == (8, 1, 1 / 8, "numeric")
    assert size.numeric is not None and size.numeric.mean == pytest.approx(33 / 7)
    colour = baseline.feature("colour")
    assert colour.categorical is not None
    assert colour.categorical.frequencies == pytest.approx({"red": 4 / 7, "blue": 2 / 7, "green": 1 / 7})
    zip_code = baseline.feature("zip")
    assert zip_code.categorical is not None and set(zip_code.categorical.frequencies) == {"10", "20", "30"}
    when = baseline.feature("when")
    assert (when.compare, when.numeric, when.categorical) == ("none", None, None)

    document = baseline_document(baseline)
    assert document == baseline_document(build_baseline(frame, profile_of(frame, roles, "label"), "ab" * 32))
    assert read_baseline(document) == baseline
    with pytest.raises(ValueError, match="format 1"):
        read_baseline(json.dumps({**json.loads(document), "format": 2}).encode())


def test_preprocess_writes_the_train_splits_baseline_beside_the_channels(aws: Any) -> None:
    frame = iris_frame()
    config, ingested, profile, result = run(aws, "iris.csv", csv_bytes(frame), seed=3)

    assert result.baseline_uri == f"{config.processed_prefix}baseline.json"
    for channel in (result.train_uri, result.validation_uri, result.test_uri):
        assert not result.baseline_uri.startswith(channel)  # a training job downloads its whole channel
    baseline = read_baseline(ObjectStore(aws.s3).read_bytes(result.baseline_uri))
    assert isinstance(baseline, Baseline)
    assert baseline.n_rows == result.n_train and baseline.dataset_sha256 == ingested.sha256
    assert baseline.feature_names == result.feature_columns and baseline.other_columns == [profile.target]
    train = pd.read_csv(io.BytesIO(aws.get(result.train_uri.removeprefix(f"s3://{aws.bucket}/") + "train.csv")))
    for feature in baseline.features:
        assert feature.numeric is not None
        assert feature.numeric.mean == pytest.approx(train[feature.name].mean())
        assert feature.numeric.max == train[feature.name].max()


def test_the_step_cache_needs_the_baseline_of_a_preprocess_result(aws: Any) -> None:
    _, _, _, result = run(aws, "iris.csv", csv_bytes(iris_frame()), seed=4)
    stored = result.model_dump(mode="json")
    assert result.baseline_uri in outputs_of("Preprocess", stored, ObjectStore(aws.s3))

    def entry(prep: dict[str, Any]) -> CacheEntry:
        return CacheEntry(
            cache_key="k", step="Preprocess", result=prep, outputs=[], run_id="old-run", execution_arn="arn",
            model_name="iris", created_at="2026-11-01T00:00:00Z", expires_at=2_000_000_000,
        )  # fmt: skip

    assert outdated_result(entry(stored)) is None
    older = {k: v for k, v in stored.items() if k != "baseline_uri"}  # stored before monitoring existed
    assert outdated_result(entry(older)) == "the result of run old-run has no baseline (made before monitoring)"
