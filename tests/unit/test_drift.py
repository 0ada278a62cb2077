"""Drift statistics and decisions (pipeline_core.stages.drift), checked against SciPy where it has the same
statistic, and the reading of new data against a baseline's schema (pipeline_core.stages.monitor_data)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pipeline_core.stages.baseline import (
    Baseline,
    FeatureBaseline,
    build_baseline,
    categorical_stats,
    category_text,
    numeric_stats,
)
from pipeline_core.stages.drift import (
    FeatureValues,
    Thresholds,
    chi_square_p_value,
    compare_feature,
    ks_p_value,
    ks_statistic,
    psi,
    upper_gamma_regularized,
)
from pipeline_core.stages.monitor_data import monitored_data, rows_frame
from scipy import special, stats

from tests.unit.test_baseline import profile_of

RNG_SEED = 20261130


def numeric_feature(values: np.ndarray, missing: int = 0, name: str = "x") -> FeatureBaseline:
    return FeatureBaseline(
        name=name, role="numeric", dtype="numeric", count=len(values) + missing, missing=missing,
        missing_rate=missing / (len(values) + missing), numeric=numeric_stats(values),
    )  # fmt: skip


def categorical_feature(values: list[str], name: str = "c") -> FeatureBaseline:
    return FeatureBaseline(
        name=name, role="categorical", dtype="categorical", count=len(values), missing=0, missing_rate=0.0,
        categorical=categorical_stats(pd.Series(values)),
    )  # fmt: skip


def current(values: np.ndarray | list[str], missing: int = 0, type_errors: int = 0, name: str = "x") -> FeatureValues:
    data = np.asarray(values, dtype=float) if not isinstance(values, list) else category_text(pd.Series(values))
    return FeatureValues(
        name=name, rows=len(values) + missing + type_errors, values=data, missing=missing, type_errors=type_errors,
        type_error_examples=["'abc'"] * min(type_errors, 1),
    )  # fmt: skip


# --------------------------------------------------------------------------- statistics


def test_psi_is_zero_for_equal_shares_and_the_smoothed_formula_otherwise() -> None:
    assert psi(np.array([50, 30, 20]), np.array([500, 300, 200])) == pytest.approx(0.0, abs=1e-3)
    expected, actual = np.array([50.0, 50.0]), np.array([90.0, 10.0])
    e, a = (expected + 0.5) / 101, (actual + 0.5) / 101
    assert psi(expected, actual) == pytest.approx(float(np.sum((a - e) * np.log(a / e))))
    # an empty bin on either side stays finite
    assert math.isfinite(psi(np.array([100.0, 0.0]), np.array([0.0, 100.0])))


def test_the_ks_statistic_read_from_percentiles_is_within_half_a_percent_of_the_exact_one() -> None:
    rng = np.random.default_rng(RNG_SEED)
    train = rng.normal(0, 1, 5000)
    stats_ = numeric_stats(train)
    assert stats_ is not None
    for shift in (0.0, 0.1, 0.5):
        new = rng.normal(shift, 1, 800)
        exact = stats.ks_2samp(new, train).statistic
        assert ks_statistic(stats_.quantiles, new) == pytest.approx(exact, abs=0.006), shift
    # discrete values (ties) too
    train_int, new_int = rng.integers(0, 4, 3000).astype(float), rng.integers(1, 5, 500).astype(float)
    ints = numeric_stats(train_int)
    assert ints is not None
    exact = stats.ks_2samp(new_int, train_int).statistic
    assert ks_statistic(ints.quantiles, new_int) == pytest.approx(exact, abs=0.006)


@pytest.mark.parametrize(("d", "n", "m"), [(0.02, 100, 3000), (0.08, 500, 2000), (0.2, 150, 150), (0.5, 30, 40)])
def test_the_ks_p_value_is_kolmogorovs_distribution_with_stephens_correction(d: float, n: int, m: int) -> None:
    effective = math.sqrt(n * m / (n + m))
    expected = stats.kstwobign.sf((effective + 0.12 + 0.11 / effective) * d)
    assert ks_p_value(d, n, m) == pytest.approx(expected, abs=1e-9)


def test_the_regularized_upper_gamma_matches_scipy() -> None:
    for a in (0.5, 1.0, 2.5, 4.5, 10.0, 49.5):
        for x in (0.0, 0.01, 0.5, 1.0, 3.0, 7.5, 20.0, 60.0, 120.0):
            assert upper_gamma_regularized(a, x) == pytest.approx(special.gammaincc(a, x), rel=1e-9, abs=1e-14)


def test_the_chi_square_p_value_is_the_homogeneity_tests() -> None:
    expected, actual = np.array([400.0, 300.0, 300.0, 0.0]), np.array([30.0, 45.0, 20.0, 5.0])
    table = np.vstack([expected[:3], actual[:3]])
    _, reference, _, _ = stats.chi2_contingency(np.vstack([expected, actual]), correction=False)
    assert chi_square_p_value(expected, actual) == pytest.approx(reference, rel=1e-9)
    assert chi_square_p_value(expected[:3], actual[:3]) == pytest.approx(
        stats.chi2_contingency(table, correction=False)[1], rel=1e-9
    )
    assert chi_square_p_value(np.array([10.0, 0.0]), np.array([5.0, 0.0])) == 1.0  # one category: nothing to test


# --------------------------------------------------------------------------- decisions


@pytest.fixture(scope="module")
def train() -> np.ndarray:
    return np.random.default_rng(RNG_SEED).normal(10, 2, 4000)


def test_a_fresh_sample_of_the_training_distribution_does_not_drift(train: np.ndarray) -> None:
    new = np.random.default_rng(1).normal(10, 2, 1000)
    result = compare_feature(numeric_feature(train), current(new), Thresholds())
    assert (result.verdict, result.drifted) == ("ok", False)
    assert result.psi is not None and result.psi < 0.05 and result.test == "ks"
    assert result.mean == pytest.approx(10, abs=0.2) and result.baseline_mean == pytest.approx(10, abs=0.1)
    assert sum(b.baseline for b in result.bins) == pytest.approx(1) and len(result.bins) == 10


def test_a_shift_of_one_standard_deviation_drifts_with_both_statistics(train: np.ndarray) -> None:
    new = np.random.default_rng(2).normal(12, 2, 1000)
    result = compare_feature(numeric_feature(train), current(new), Thresholds())
    assert (result.verdict, result.drifted) == ("drift", True)
    assert result.psi is not None and result.psi > 0.5 and result.p_value is not None and result.p_value < 1e-10
    assert result.score == result.psi and result.statistic is not None and result.statistic > 0.3
    assert "PSI" in result.reasons[0] and "KS p" in result.reasons[0]


def test_too_few_values_are_insufficient_not_drifted(train: np.ndarray) -> None:
    new = np.random.default_rng(3).normal(30, 2, 40)  # far off, but only 40 values
    result = compare_feature(numeric_feature(train), current(new), Thresholds())
    assert (result.verdict, result.drifted, result.psi) == ("insufficient_data", False, None)
    assert "at least 100 are needed" in result.reasons[0]
    assert compare_feature(numeric_feature(train), current(new), Thresholds(min_rows=30)).drifted


def test_a_large_psi_that_chance_explains_is_not_drift(train: np.ndarray) -> None:
    new = np.random.default_rng(4).normal(10, 2, 120)
    result = compare_feature(numeric_feature(train), current(new), Thresholds(psi=0.0))  # any PSI is "large"
    assert (result.verdict, result.drifted) == ("ok", False)
    assert result.p_value is not None and result.p_value >= 0.01
    assert "within what chance gives for 120 values" in result.reasons[0]


def test_a_significant_but_negligible_shift_on_a_huge_window_is_not_drift(train: np.ndarray) -> None:
    new = np.random.default_rng(5).normal(10.2, 2, 200_000)  # a tenth of a standard deviation
    result = compare_feature(numeric_feature(train), current(new), Thresholds())
    assert result.p_value is not None and result.p_value < 0.01
    assert result.psi is not None and result.psi < 0.2
    assert (result.verdict, result.drifted) == ("ok", False)


def test_categories_shift_and_unseen_categories_are_named() -> None:
    rng = np.random.default_rng(6)
    baseline = categorical_feature(list(rng.choice(["a", "b", "c"], 3000, p=[0.5, 0.3, 0.2])))
    same = list(rng.choice(["a", "b", "c"], 800, p=[0.5, 0.3, 0.2]))
    assert compare_feature(baseline, current(same, name="c"), Thresholds()).verdict == "ok"
    shifted = list(rng.choice(["a", "b", "c", "new"], 800, p=[0.2, 0.3, 0.2, 0.3]))
    result = compare_feature(baseline, current(shifted, name="c"), Thresholds())
    assert (result.verdict, result.drifted, result.test) == ("drift", True, "chi_square")
    assert result.unseen_categories == ["new"] and "unseen categories 'new'" in result.reasons[0]
    assert [b.label for b in result.bins] == ["a", "b", "c", "(other)"]
    assert result.bins[-1].current == pytest.approx(0.3, abs=0.05) and result.bins[-1].baseline == 0.0


def test_more_missing_values_and_wrong_types_are_flagged_before_the_distribution(train: np.ndarray) -> None:
    new = np.random.default_rng(7).normal(10, 2, 700)
    missing = compare_feature(numeric_feature(train, missing=40), current(new, missing=300), Thresholds())
    assert (missing.verdict, missing.drifted) == ("missing_rate", True)
    assert missing.missing_rate == pytest.approx(0.3) and "rose from 1.0% to 30.0%" in missing.reasons[0]
    typed = compare_feature(numeric_feature(train), current(new, type_errors=20), Thresholds())
    assert (typed.verdict, typed.drifted, typed.type_errors) == ("schema", True, 20)
    assert "20 values (2.8%) are not of the numeric type" in typed.reasons[0]
    tolerated = compare_feature(numeric_feature(train), current(new, type_errors=20), Thresholds(type_error_rate=0.05))
    assert (tolerated.verdict, tolerated.drifted) == ("ok", False)
    absent = compare_feature(
        numeric_feature(train), FeatureValues(name="x", rows=500, column_present=False), Thresholds()
    )
    assert (absent.verdict, absent.drifted) == ("schema", True)
    assert absent.reasons == ["the column 'x' is missing from the data"]


def test_thresholds_are_checked() -> None:
    with pytest.raises(ValueError, match="p_value"):
        Thresholds(p_value=0)
    with pytest.raises(ValueError, match="psii"):
        Thresholds.model_validate({"psii": 0.1})


# --------------------------------------------------------------------------- reading new data


@pytest.fixture(scope="module")
def schema_baseline() -> Baseline:
    frame = pd.DataFrame(
        {
            "size": np.arange(200, dtype=float),
            "colour": ["red", "blue"] * 100,
            "zip": [10.0, 20.0] * 100,
            "flag": ["true", "false"] * 100,
            "when": ["2026-01-01"] * 200,
            "id": [f"r{i}" for i in range(200)],
            "label": ["y", "n"] * 100,
        }
    )
    roles = {
        "size": ("numeric", "numeric"),
        "colour": ("categorical", "categorical"),
        "zip": ("numeric", "categorical"),
        "flag": ("boolean", "boolean"),
        "when": ("categorical", "datetime"),
        "id": ("categorical", "identifier"),
        "label": ("categorical", "target"),
    }
    profile = profile_of(frame, roles, "label")
    columns = [c.model_copy(update={"format": "%Y-%m-%d"}) if c.name == "when" else c for c in profile.columns]
    return build_baseline(frame, profile.model_copy(update={"columns": columns}), "0" * 64)


def test_logged_rows_are_read_as_training_read_them(schema_baseline: Baseline) -> None:
    rows = [
        {"size": 1.5, "colour": "red", "zip": 10, "flag": True, "when": "2026-02-03", "label": "y"},
        {"size": None, "colour": " blue ", "zip": 20.0, "flag": "False", "when": "None", "extra": 1},
        {"size": "abc", "colour": "null", "zip": "x", "flag": "maybe", "when": "03/02/2026"},
    ]
    data = monitored_data(rows_frame(rows), schema_baseline)
    assert data.rows == 3 and data.missing_columns == [] and data.unseen_columns == ["extra"]
    size = data.features["size"]
    assert list(size.values) == [1.5] and (size.missing, size.type_errors) == (1, 1)
    assert size.type_error_examples == ["'abc'"]
    colour = data.features["colour"]
    assert list(colour.values) == ["red", "blue"] and colour.missing == 1  # "null" is missing everywhere
    zip_code = data.features["zip"]
    assert list(zip_code.values) == ["10", "20"] and zip_code.type_errors == 1  # 20.0 and 20 are one category
    flag = data.features["flag"]
    assert list(flag.values) == ["true", "false"] and flag.type_errors == 1
    when = data.features["when"]
    assert (when.missing, when.type_errors) == (1, 1)  # "None" is missing; 03/02/2026 is not %Y-%m-%d


def test_a_file_without_a_feature_is_a_schema_violation_and_known_columns_are_not_unseen(
    schema_baseline: Baseline,
) -> None:
    frame = pd.DataFrame({"size": ["1"], "colour": ["red"], "flag": ["true"], "when": ["2026-01-01"], "id": ["a"]})
    data = monitored_data(frame.assign(label="y"), schema_baseline)
    assert data.missing_columns == ["zip"] and data.unseen_columns == []
    assert not data.features["zip"].column_present
