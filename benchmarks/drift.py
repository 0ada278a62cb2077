"""How often the drift checks cry wolf, how often they catch a shift, and what they cost.

``python -m benchmarks.drift [--trials 200]``. Pure statistics (no AWS): a baseline of ``--train`` rows of a
numeric feature (normal) and a categorical one (five categories), then many fresh windows of n rows:

* false alarms: windows drawn from the training distribution; the share flagged by PSI alone (>= 0.2, the
  usual rule) and by the rule stepml uses (PSI >= 0.2 and the KS/chi-square p-value < 0.01);
* detection: windows with the mean moved by half a standard deviation, and one category's share moved by 25
  points;
* cost: building a baseline of 100,000 rows and judging a window of 50,000 rows (the Monitor's default cap).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd
from pipeline_core.models import ColumnProfile, DataProfile
from pipeline_core.stages.baseline import build_baseline
from pipeline_core.stages.drift import Thresholds, compare_feature
from pipeline_core.stages.monitor_data import monitored_data

CATEGORIES = ["a", "b", "c", "d", "e"]
SHARES = [0.4, 0.25, 0.15, 0.12, 0.08]
SHIFTED_SHARES = [0.15, 0.25, 0.4, 0.12, 0.08]


def frame(rng: np.random.Generator, rows: int, shift: bool = False) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": rng.normal(0.5 if shift else 0.0, 1.0, rows),
            "c": rng.choice(CATEGORIES, rows, p=SHIFTED_SHARES if shift else SHARES),
            "y": ["t"] * rows,
        }
    )


def profile(rows: int) -> DataProfile:
    columns = [
        ColumnProfile(name="x", dtype="numeric", role="numeric", reason="", missing=0),
        ColumnProfile(name="c", dtype="categorical", role="categorical", reason="", missing=0),
        ColumnProfile(name="y", dtype="categorical", role="target", reason="", missing=0),
    ]
    return DataProfile(
        n_rows=rows, n_columns=3, target="y", target_chosen_by="input", problem_type="binary_classification",
        problem_type_chosen_by="input", problem_type_reason="", feature_columns=["x", "c"], columns=columns,
    )  # fmt: skip


def rates(train_rows: int, window: int, trials: int, shift: bool, seed: int) -> dict[str, tuple[float, float]]:
    """Per feature: (share flagged by PSI alone, share flagged by PSI and the test)."""
    rng = np.random.default_rng(seed)
    baseline = build_baseline(frame(rng, train_rows), profile(train_rows), "0" * 64)
    psi_only = {"x": 0, "c": 0}
    both = {"x": 0, "c": 0}
    thresholds = Thresholds(min_rows=1)
    for _ in range(trials):
        data = monitored_data(frame(rng, window, shift), baseline)
        for name in ("x", "c"):
            result = compare_feature(baseline.feature(name), data.features[name], thresholds)
            psi_only[name] += bool(result.psi is not None and result.psi >= thresholds.psi)
            both[name] += result.drifted
    return {name: (psi_only[name] / trials, both[name] / trials) for name in ("x", "c")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--train", type=int, default=3000)
    args = parser.parse_args(argv)
    print(f"baseline of {args.train} rows; {args.trials} windows each; shares flagged (PSI alone / stepml's rule)")
    print(f"{'window':>7}  {'x fresh':>15}  {'c fresh':>15}  {'x shifted':>15}  {'c shifted':>15}")
    for window in (50, 100, 200, 500, 2000):
        fresh = rates(args.train, window, args.trials, False, seed=window)
        shifted = rates(args.train, window, args.trials, True, seed=window + 1)
        cells = [f"{a:6.1%} / {b:6.1%}" for a, b in (fresh["x"], fresh["c"], shifted["x"], shifted["c"])]
        print(f"{window:>7}  " + "  ".join(f"{c:>15}" for c in cells))

    rng = np.random.default_rng(0)
    big = frame(rng, 100_000)
    started = time.perf_counter()
    baseline = build_baseline(big, profile(len(big)), "0" * 64)
    built = time.perf_counter() - started
    window = frame(rng, 50_000, shift=True)
    started = time.perf_counter()
    data = monitored_data(window, baseline)
    for feature in baseline.features:
        compare_feature(feature, data.features[feature.name], Thresholds())
    judged = time.perf_counter() - started
    print(f"baseline of 100,000 rows x 2 features: {built:.2f} s; reading and judging 50,000 rows: {judged:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
