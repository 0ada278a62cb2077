"""Drift of new data from a model's training baseline: the statistics per feature and the decisions.

Per feature (:func:`compare_feature`), in this order of precedence:

1. schema: the column is missing, or more than ``type_error_rate`` of its values are of the wrong type
   (text in a numeric feature, an unreadable date, a boolean that is not true/false);
2. missing rate: the share of missing values rose by more than ``missing_rate_increase`` (absolute);
3. distribution, for numeric features (on the baseline's decile bins) and categorical or boolean ones (on the
   category shares, unseen categories counted with the baseline's ``other``): drifted when **both** the
   population stability index is at least ``psi`` (the size of the shift) **and** the shift is significant,
   p < ``p_value`` (two-sample Kolmogorov-Smirnov for numeric, chi-square homogeneity for categorical).

Why both: PSI measures how far apart the distributions are but, on a small window, sampling noise alone
reaches 0.2 (its null mean is about (bins - 1)(1/n + 1/N)); a test's p-value accounts for the sample size
but, on a large window, calls any negligible shift significant. Requiring both keeps small windows from
false alarms and large ones from alarms about nothing. Fewer than ``min_rows`` present values leave the
distribution unjudged (``insufficient_data``), never drifted.

PSI = sum over bins of (a - e) ln(a / e) with shares smoothed by :data:`SMOOTHING` pseudo-counts per bin (an
empty bin on either side would make it infinite). The KS statistic is read against the baseline's
percentiles (exact to 0.005); p-values are the asymptotic ones (Kolmogorov's distribution with Stephens'
small-sample correction; the chi-square distribution), computed here with NumPy and the math module because
SciPy is not in the Lambda packages.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from pipeline_core.stages.baseline import FeatureBaseline, bin_counts, category_counts

SMOOTHING = 0.5
OTHER_LABEL = "(other)"
MAX_LISTED = 10  # unseen categories and wrong-type examples listed per feature

Verdict = Literal["ok", "drift", "missing_rate", "schema", "insufficient_data", "not_compared"]


class Thresholds(BaseModel):
    """When a feature counts as drifted; every field can be overridden in the Monitor request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    psi: float = Field(default=0.2, ge=0, description="PSI at or above which a distribution has shifted")
    p_value: float = Field(default=0.01, gt=0, le=1, description="KS/chi-square p-value below which it is significant")
    missing_rate_increase: float = Field(default=0.10, ge=0, le=1, description="rise of the missing share (absolute)")
    type_error_rate: float = Field(default=0.01, ge=0, le=1, description="share of wrong-type values tolerated")
    min_rows: int = Field(default=100, ge=1, description="rows (and present values) needed to judge")


# --------------------------------------------------------------------------- statistics


def shares(counts: np.ndarray, alpha: float = SMOOTHING) -> np.ndarray:
    """Counts as smoothed shares: (count + alpha) / (total + alpha * bins)."""
    counts = np.asarray(counts, dtype=float)
    return (counts + alpha) / (counts.sum() + alpha * counts.size)


def psi(expected_counts: np.ndarray, actual_counts: np.ndarray, alpha: float = SMOOTHING) -> float:
    """The population stability index of ``actual`` against ``expected`` (same bins), smoothed."""
    expected, actual = shares(expected_counts, alpha), shares(actual_counts, alpha)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def baseline_cdf(quantiles: Sequence[float], points: np.ndarray) -> np.ndarray:
    """The baseline's CDF at ``points``, from its percentiles 0..100 (inverted CDF): between the j-th and the
    next percentile it is between j/100 and (j+1)/100, so the midpoint is within 0.005."""
    q = np.asarray(quantiles, dtype=float)
    last = q.size - 1
    j = np.searchsorted(q, points, side="right") - 1  # the last percentile at or below the point
    cdf = (j + 0.5) / last
    cdf = np.where(j >= last, 1.0, cdf)
    return np.where(j < 0, 0.0, cdf)


def ks_statistic(quantiles: Sequence[float], values: np.ndarray) -> float:
    """sup |F_new - F_baseline| over every point where either step function jumps."""
    values = np.sort(np.asarray(values, dtype=float))
    if values.size == 0:
        return 0.0
    points = np.union1d(values, np.asarray(quantiles, dtype=float))
    current = np.searchsorted(values, points, side="right") / values.size
    return float(np.max(np.abs(current - baseline_cdf(quantiles, points))))


def ks_p_value(statistic: float, n: int, m: int) -> float:
    """The asymptotic two-sample KS p-value of ``statistic`` for samples of ``n`` and ``m`` values."""
    if n <= 0 or m <= 0:
        return 1.0
    effective = math.sqrt(n * m / (n + m))
    lam = (effective + 0.12 + 0.11 / effective) * statistic
    if lam < 0.2:  # the series converges too slowly there; the p-value is 1 to 6 digits
        return 1.0
    total, sign = 0.0, 1.0
    for k in range(1, 101):
        term = math.exp(-2.0 * k * k * lam * lam)
        total += sign * term
        if term < 1e-12:
            break
        sign = -sign
    return min(1.0, max(0.0, 2.0 * total))


def upper_gamma_regularized(a: float, x: float) -> float:
    """Q(a, x) = Gamma(a, x) / Gamma(a), the survival function of a Gamma(a) variable at ``x``."""
    if x <= 0:
        return 1.0
    log_prefix = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:  # series for P(a, x)
        term = total = 1.0 / a
        denominator = a
        for _ in range(1000):
            denominator += 1
            term *= x / denominator
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    # continued fraction for Q(a, x) (modified Lentz)
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_prefix) * h)


def chi_square_p_value(expected_counts: np.ndarray, actual_counts: np.ndarray) -> float:
    """The p-value of the chi-square test that two samples (counts over the same categories) share one
    distribution; categories empty in both are left out."""
    table = np.vstack([np.asarray(expected_counts, dtype=float), np.asarray(actual_counts, dtype=float)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) <= 0).any():
        return 1.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return upper_gamma_regularized((table.shape[1] - 1) / 2.0, statistic / 2.0)


# --------------------------------------------------------------------------- one feature


@dataclass
class FeatureValues:
    """A feature's values in the data monitored: present values as training reads them (floats for a
    numeric feature, canonical text for a categorical one), missing and wrong-type counts."""

    name: str
    rows: int
    values: np.ndarray | pd.Series = field(default_factory=lambda: np.empty(0))
    missing: int = 0
    type_errors: int = 0
    type_error_examples: list[str] = field(default_factory=list)
    column_present: bool = True


class BinShare(BaseModel):
    """One bin (or category) of the distribution plot: its label and share on each side."""

    label: str
    baseline: float
    current: float


class FeatureDrift(BaseModel):
    """One feature's statistics and verdict (``drifted``: it counts in DriftedFeatures)."""

    name: str
    role: str
    verdict: Verdict
    drifted: bool
    reasons: list[str] = Field(default_factory=list)
    score: float | None = None  # PSI when the distribution was compared
    psi: float | None = None
    test: Literal["ks", "chi_square"] | None = None
    statistic: float | None = None  # the KS statistic D (the chi-square one is not kept)
    p_value: float | None = None
    rows: int
    present: int
    missing_rate: float | None = None
    baseline_missing_rate: float
    type_errors: int = 0
    type_error_rate: float = 0.0
    type_error_examples: list[str] = Field(default_factory=list)
    mean: float | None = None
    baseline_mean: float | None = None
    unseen_categories: list[str] = Field(default_factory=list)
    bins: list[BinShare] = Field(default_factory=list)


def _number(value: float) -> str:
    return f"{value:.4g}"


def bin_labels(edges: Sequence[float]) -> list[str]:
    """``≤ a``, ``a to b``, ..., ``> z`` for the bins of ``edges``."""
    if not edges:
        return ["all values"]
    labels = [f"≤ {_number(edges[0])}"]
    labels += [f"{_number(low)} to {_number(high)}" for low, high in itertools.pairwise(edges)]
    return [*labels, f"> {_number(edges[-1])}"]


def _distribution(
    baseline: FeatureBaseline, current: FeatureValues
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(baseline counts, current counts, labels, unseen categories) on the baseline's bins or categories."""
    if baseline.numeric is not None:
        stats = baseline.numeric
        expected = np.asarray(stats.proportions) * baseline.present
        actual = bin_counts(stats.edges, np.asarray(current.values, dtype=float))
        return expected, actual, bin_labels(stats.edges), []
    assert baseline.categorical is not None
    stats_c = baseline.categorical
    values = pd.Series(current.values, dtype=object)
    found, other = category_counts(stats_c.frequencies, values)
    expected = np.asarray([*stats_c.frequencies.values(), stats_c.other]) * baseline.present
    actual = np.asarray([*found.values(), other])
    unseen = sorted(set(values.unique()) - set(stats_c.frequencies), key=str) if other and not stats_c.other else []
    return expected, actual, [*stats_c.frequencies, OTHER_LABEL], [str(u) for u in unseen[:MAX_LISTED]]


def compare_feature(baseline: FeatureBaseline, current: FeatureValues, thresholds: Thresholds) -> FeatureDrift:
    """The checks of the module docstring for one feature."""
    result = FeatureDrift(
        name=baseline.name,
        role=baseline.role,
        verdict="ok",
        drifted=False,
        rows=current.rows,
        present=len(current.values),
        baseline_missing_rate=baseline.missing_rate,
    )
    if not current.column_present:
        result.verdict, result.drifted = "schema", True
        result.reasons.append(f"the column {baseline.name!r} is missing from the data")
        return result
    rows = max(current.rows, 1)
    result.type_errors = current.type_errors
    result.type_error_rate = current.type_errors / rows
    result.type_error_examples = current.type_error_examples[:MAX_LISTED]
    result.missing_rate = current.missing / rows
    flags: list[Verdict] = []
    if current.type_errors and result.type_error_rate > thresholds.type_error_rate:
        flags.append("schema")
        result.reasons.append(
            f"{current.type_errors} values ({result.type_error_rate:.1%}) are not of the {baseline.role} type, "
            f"e.g. {', '.join(result.type_error_examples[:3])}"
        )
    increase = result.missing_rate - baseline.missing_rate
    if increase > thresholds.missing_rate_increase:
        flags.append("missing_rate")
        result.reasons.append(
            f"missing values rose from {baseline.missing_rate:.1%} to {result.missing_rate:.1%} "
            f"(more than {thresholds.missing_rate_increase:.0%})"
        )
    distribution_verdict = _compare_distribution(baseline, current, thresholds, result)
    flags.append(distribution_verdict)
    result.verdict = flags[0]
    result.drifted = any(flag in ("schema", "missing_rate", "drift") for flag in flags)
    return result


def _compare_distribution(
    baseline: FeatureBaseline, current: FeatureValues, thresholds: Thresholds, result: FeatureDrift
) -> Verdict:
    if baseline.compare == "none":
        reason = (
            "no values in the training data to compare with"
            if baseline.role in ("numeric", "categorical", "boolean")
            else f"a {baseline.role} feature: only its missing values and types are checked"
        )
        result.reasons.append(reason)
        return "not_compared"
    expected, actual, labels, unseen = _distribution(baseline, current)
    baseline_shares, current_shares = expected / max(expected.sum(), 1e-12), actual / max(actual.sum(), 1)
    result.bins = [
        BinShare(label=label, baseline=float(e), current=float(a))
        for label, e, a in zip(labels, baseline_shares, current_shares, strict=True)
    ]
    result.unseen_categories = unseen
    if baseline.numeric is not None:
        result.baseline_mean = baseline.numeric.mean
        result.mean = float(np.mean(current.values)) if len(current.values) else None
    if len(current.values) < thresholds.min_rows:
        result.reasons.append(
            f"{len(current.values)} present values: at least {thresholds.min_rows} are needed to compare the "
            "distribution"
        )
        return "insufficient_data"
    result.psi = result.score = psi(expected, actual)
    if baseline.numeric is not None:
        result.test = "ks"
        result.statistic = ks_statistic(baseline.numeric.quantiles, np.asarray(current.values, dtype=float))
        result.p_value = ks_p_value(result.statistic, len(current.values), baseline.present)
    else:
        result.test = "chi_square"
        result.p_value = chi_square_p_value(expected, actual)
    shifted = result.psi >= thresholds.psi
    significant = result.p_value < thresholds.p_value
    test = "KS" if result.test == "ks" else "chi-square"
    if shifted and significant:
        result.reasons.append(
            f"the distribution shifted: PSI {result.psi:.3f} ≥ {thresholds.psi} and {test} p = "
            f"{result.p_value:.2g} < {thresholds.p_value}"
            + (f"; unseen categories {', '.join(map(repr, unseen))}" if unseen else "")
        )
        return "drift"
    if shifted:
        result.reasons.append(
            f"PSI {result.psi:.3f} ≥ {thresholds.psi} but {test} p = {result.p_value:.2g} is not below "
            f"{thresholds.p_value}: within what chance gives for {len(current.values)} values"
        )
    return "ok"
