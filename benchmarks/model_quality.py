"""Model quality: the pipeline's test metric against a plain scikit-learn baseline on the same split.

For each dataset (the bundled ``data/*.csv``, the generated ones of ``stepml.sample_datasets``, or the user's
own with ``--data-dir DIR --spec spec.json``) and each of its targets: ``stepml run --json`` on the embedded
target in a temporary state directory (one local AWS for the whole benchmark, stopped at the end), then, from
that state directory's local S3, the splits Preprocess wrote (``processed/<run>/{train,validation,test}/``)
and the training job's ``test_predictions.csv``. Both sides are scored with the dataset's advertised problem
type (f1_macro for classification, r2 for regression), so a run that took a count for 13 classes is still
scored as the regression it is. The pipeline's own reported metric is kept beside it.

The baseline is the ~15 lines a user would write: ``pd.read_csv`` (thousands separators read as numbers, an
empty cell as the only missing value, as Preprocess writes them), text columns ordinal-encoded and given to
HistGradientBoosting as native categoricals (as plain numbers past 255 levels, HistGradientBoosting's limit),
default hyperparameters, fit on the pipeline's train+validation rows, scored on its test rows. When the
pipeline failed before writing splits, the baseline uses its own seeded 80/20 split of the file (marked). The
informed baseline is what a user who looked at the columns would do (``informed_baseline``): dates split into
parts, a value-per-row column dropped, free text through TF-IDF into a linear model.

Usage: ``python -m benchmarks.model_quality [--datasets iris,dates] [--data-dir DIR --spec spec.json]
[--json PATH]``. ``spec.json`` is a list of ``{"name", "file", "target", "problem_type"?, "args"?}`` (file
relative to ``--data-dir``; problem_type one of binary_classification, multiclass_classification, regression,
default: what the pipeline chose; args: more ``stepml run`` arguments). Runs on demand, never in ``make test``:
about 20-60 s per dataset. docs/model-quality.md has the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
BUNDLED = {"iris": ("species", "multiclass_classification"), "diabetes": ("target", "regression")}
BUCKET = "stepml-local-databucket"


@dataclass(frozen=True)
class Case:
    """One (file, target) to measure."""

    name: str
    file: str
    target: str
    problem_type: str | None  # None: take the pipeline's
    source: str  # bundled, generated or spec
    args: tuple[str, ...] = ()  # more `stepml run` arguments (spec "args"), e.g. ("--problem-type", "regression")


def bundled_cases() -> list[Case]:
    return [Case(n, str(REPO / "data" / f"{n}.csv"), t, p, "bundled") for n, (t, p) in BUNDLED.items()]


def generated_cases(directory: Path) -> list[Case]:
    from stepml.sample_datasets import DATASETS, write_dataset

    cases = []
    for name, dataset in DATASETS.items():
        path = write_dataset(name, directory)
        for index, (target, problem_type) in enumerate(dataset.targets):
            label = name if index == 0 else f"{name}:{target}"
            cases.append(Case(label, str(path), target, problem_type, "generated"))
    return cases


def spec_cases(data_dir: Path, spec: Path) -> list[Case]:
    entries = json.loads(spec.read_text())
    if not isinstance(entries, list):
        raise SystemExit(f"{spec}: expected a JSON list of {{name, file, target}} objects")
    cases = []
    for entry in entries:
        missing = {"name", "file", "target"} - set(entry)
        if missing:
            raise SystemExit(f"{spec}: entry {entry} lacks {sorted(missing)}")
        path = data_dir / entry["file"]
        if not path.is_file():
            raise SystemExit(f"{spec}: {entry['name']}: no file {path}")
        args = tuple(str(a) for a in entry.get("args", []))
        cases.append(Case(entry["name"], str(path), entry["target"], entry.get("problem_type"), "spec", args))
    return cases


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def is_numeric(values: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(values))


def _is_classification(problem_type: str) -> bool:
    return problem_type != "regression"


def _numbers(values: pd.Series) -> pd.Series:
    """Floats from numbers or text with thousands separators (a count taken for classes comes back as "3")."""
    if pd.api.types.is_numeric_dtype(values):
        return values.astype(float)
    return pd.to_numeric(values.astype(str).str.replace(",", "", regex=False), errors="coerce")


def _labels(values: pd.Series) -> pd.Series:
    """Class labels as text; 3.0 and 3 are the same class."""
    return values.map(lambda v: str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))


def score(problem_type: str, y_true: pd.Series, y_pred: pd.Series) -> float:
    """f1_macro for classification, r2 for regression (Evaluate's primary metrics)."""
    from sklearn.metrics import f1_score, r2_score

    if _is_classification(problem_type):
        return float(f1_score(_labels(y_true), _labels(y_pred), average="macro"))
    true, pred = _numbers(y_true), _numbers(y_pred)
    keep = true.notna() & pred.notna()
    return float(r2_score(true[keep], pred[keep]))


def read_split(body: bytes) -> pd.DataFrame:
    """A split as the baseline reads it: pandas' defaults, but ``,`` thousands and only "" missing."""
    return pd.read_csv(io.BytesIO(body), thousands=",", keep_default_na=False, na_values=[""])


def baseline(train: pd.DataFrame, test: pd.DataFrame, target: str, problem_type: str) -> float:
    """Plain HistGradientBoosting with native categoricals, fit on ``train``, scored on ``test``."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.preprocessing import OrdinalEncoder

    x, x_test = train.drop(columns=[target]).copy(), test.drop(columns=[target]).copy()
    text = [c for c in x.columns if not (is_numeric(x[c]) and is_numeric(x_test[c]))]
    categorical = [False] * len(x.columns)
    if text:
        encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan)
        x[text] = encoder.fit_transform(x[text].astype(object))
        x_test[text] = encoder.transform(x_test[text].astype(object))
        levels = dict(zip(text, (len(c) for c in encoder.categories_), strict=True))
        categorical = [c in levels and levels[c] <= 255 for c in x.columns]
    if _is_classification(problem_type):
        model: Any = HistGradientBoostingClassifier(categorical_features=categorical, random_state=0)
        model.fit(x, _labels(train[target]))
    else:
        model = HistGradientBoostingRegressor(categorical_features=categorical, random_state=0)
        model.fit(x, _numbers(train[target]))
    return score(problem_type, test[target], pd.Series(model.predict(x_test), index=test.index))


def _date_parts(x: pd.DataFrame, x_test: pd.DataFrame) -> list[str]:
    """Replace text columns that parse as dates (95 % of cells) by year/month/day/weekday/day of year."""
    dates = []
    for column in [c for c in x.columns if not is_numeric(x[c])]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas' "could not infer format": the column is not a date then
            parsed = pd.to_datetime(x[column], errors="coerce")
            parsed_test = pd.to_datetime(x_test[column], errors="coerce")
        if parsed.notna().mean() < 0.95 or x[column].astype(str).str.len().min() < 6:
            continue
        for frame, values in ((x, parsed), (x_test, parsed_test)):
            for part in ("year", "month", "day", "day_of_week", "day_of_year"):
                frame[f"{column}_{part}"] = getattr(values.dt, part)
            del frame[column]
        dates.append(column)
    return dates


def informed_baseline(train: pd.DataFrame, test: pd.DataFrame, target: str, problem_type: str) -> float:
    """What a user who looked at the columns would do: dates split into parts, a column with a value per row
    (ids, codes) dropped; free text (median 4+ words) through TF-IDF into a linear model with the other columns
    one-hot/scaled; else the plain baseline."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    x, x_test = train.drop(columns=[target]).copy(), test.drop(columns=[target]).copy()
    _date_parts(x, x_test)
    objects = [c for c in x.columns if not is_numeric(x[c])]
    text = [c for c in objects if x[c].fillna("").astype(str).str.split().str.len().median() >= 4]
    ids = [
        c for c in x.columns if c not in text and x[c].nunique() == len(x) and not pd.api.types.is_float_dtype(x[c])
    ]  # a value per row (ids, codes) cannot generalise
    x, x_test = x.drop(columns=ids), x_test.drop(columns=ids)
    objects = [c for c in objects if c not in ids]
    if not text:
        return baseline(
            pd.concat([x, train[[target]]], axis=1), pd.concat([x_test, test[[target]]], axis=1), target, problem_type
        )
    numbers = [c for c in x.columns if c not in objects]
    categories = [c for c in objects if c not in text]
    one_hot = make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore"))
    features = ColumnTransformer(
        [(f"text_{i}", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), c) for i, c in enumerate(text)]
        + [("categories", one_hot, categories), ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), numbers)]
    )
    for frame in (x, x_test):
        frame[text] = frame[text].fillna("").astype(str)
    if _is_classification(problem_type):
        model = make_pipeline(features, LogisticRegression(max_iter=2000)).fit(x, _labels(train[target]))
    else:
        model = make_pipeline(features, Ridge()).fit(x, _numbers(train[target]))
    return score(problem_type, test[target], pd.Series(model.predict(x_test), index=test.index))


def own_split(path: str, target: str, problem_type: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded 80/20 split of the file, for runs that wrote no splits."""
    from sklearn.model_selection import train_test_split

    frame = pd.read_csv(path, thousands=",", keep_default_na=False, na_values=[""])
    frame = frame[frame[target].notna()]
    counts = frame[target].value_counts()
    stratify = frame[target] if _is_classification(problem_type) and counts.min() >= 2 else None
    train, test = train_test_split(frame, test_size=0.2, random_state=42, stratify=stratify)
    return train, test


class LocalS3:
    """The state directory's local S3 (fake credentials, as the CLI's local target uses)."""

    def __init__(self, env: dict[str, str]) -> None:
        import boto3

        status = subprocess.run(
            [sys.executable, "-m", "stepml.cli", "local", "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        endpoint = json.loads(status.stdout.strip().splitlines()[-1])["endpoint_url"]
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def get(self, key: str) -> bytes | None:
        try:
            return bytes(self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        except self.client.exceptions.NoSuchKey:
            return None

    def keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def split(self, run: str, name: str) -> pd.DataFrame | None:
        keys = [k for k in self.keys(f"processed/{run}/{name}/") if k.endswith(".csv")]
        body = self.get(keys[0]) if keys else None
        return read_split(body) if body is not None else None

    def test_predictions(self, run: str) -> pd.DataFrame | None:
        """The training job's test_predictions.csv (the job is the one that read ``processed/<run>/``)."""
        for key in self.keys("_sagemaker/training-jobs/"):
            job = self.get(key) or b""
            if f"processed/{run}/".encode() in job:
                output = self.get(f"models/{Path(key).stem}/output/output.tar.gz")
                if output is None:
                    return None
                with tarfile.open(fileobj=io.BytesIO(output)) as archive:
                    for member in archive.getmembers():
                        if member.name.endswith("test_predictions.csv"):
                            handle = archive.extractfile(member)
                            if handle is not None:
                                return pd.read_csv(handle, dtype=str, keep_default_na=False, na_values=[""])
        return None


def run_pipeline(case: Case, env: dict[str, str]) -> tuple[dict[str, Any], float]:
    """``stepml run --json`` for the case: its JSON result and wall seconds."""
    model_name = f"mq-{_slug(case.name)}-{_slug(case.target)}"[:40].rstrip("-")
    command = [sys.executable, "-m", "stepml.cli", "run", "--json", "--data", case.file, "--target", case.target]
    started = time.perf_counter()
    completed = subprocess.run(
        [*command, "--model-name", model_name, *case.args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    wall = time.perf_counter() - started
    lines = completed.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1]), wall
    except (IndexError, json.JSONDecodeError):
        tail = (completed.stdout[-1500:] + completed.stderr[-1500:]).strip()
        return {"status": "NO_RESULT", "error": f"exit {completed.returncode}", "cause": tail}, wall


def measure(case: Case, env: dict[str, str]) -> dict[str, Any]:
    """One case: the pipeline run, its test metric, the baseline on the same rows."""
    rows = len(pd.read_csv(case.file, dtype=str, keep_default_na=False))
    result, wall = run_pipeline(case, env)
    run = str(result.get("execution_arn") or "").rsplit(":", 1)[-1]
    registry = result.get("registry") or {}
    chosen = registry.get("problem_type")
    s3 = LocalS3(env)
    if chosen is None and run:
        for key in s3.keys("models/"):
            if key.endswith("evaluation/evaluation.json"):
                evaluation = json.loads(s3.get(key) or b"{}")
                if evaluation.get("run_id") == run:
                    chosen = evaluation.get("problem_type")
    problem_type = case.problem_type or chosen or "regression"
    record: dict[str, Any] = {
        **asdict(case),
        "problem_type": problem_type,
        "pipeline_problem_type": chosen,
        "rows": rows,
        "status": result.get("status"),
        "error": result.get("error"),
        "cause": (result.get("cause") or "")[:500] or None,
        "pipeline_reported_metrics": result.get("metrics"),
        "pipeline_seconds": round(wall, 1),
        "execution_seconds": result.get("duration_seconds"),
        "metric": "f1_macro" if _is_classification(problem_type) else "r2",
    }
    predictions = s3.test_predictions(run) if run else None
    record["pipeline_metric"] = (
        score(problem_type, predictions["y_true"], predictions["y_pred"]) if predictions is not None else None
    )
    splits = {name: s3.split(run, name) for name in ("train", "validation", "test")} if run else {}
    started = time.perf_counter()
    train_parts = [splits.get("train"), splits.get("validation")]
    test = splits.get("test")
    if test is not None and all(part is not None for part in train_parts):
        train = pd.concat(train_parts, ignore_index=True)
        record["baseline_split"] = "pipeline's train+validation / test"
    else:
        train, test = own_split(case.file, case.target, problem_type)
        record["baseline_split"] = "own seeded 80/20 (the pipeline wrote no splits)"
    record["train_rows"], record["test_rows"] = len(train), len(test)
    try:
        with threadpool_limits(limits=1, user_api="openmp"):  # OpenMP threads on a loaded 2-CPU box: minutes
            record["baseline_metric"] = baseline(train, test, case.target, problem_type)
    except Exception as error:  # a benchmark row, not a crash: say why the baseline could not run
        record["baseline_metric"], record["baseline_error"] = None, f"{type(error).__name__}: {error}"[:300]
    try:
        with threadpool_limits(limits=1, user_api="openmp"):
            record["informed_baseline_metric"] = informed_baseline(train, test, case.target, problem_type)
    except Exception as error:  # as above
        record["informed_baseline_metric"] = None
        record["informed_baseline_error"] = f"{type(error).__name__}: {error}"[:300]
    record["baseline_seconds"] = round(time.perf_counter() - started, 2)
    both = record["pipeline_metric"] is not None and record["baseline_metric"] is not None
    same_rows = record["baseline_split"].startswith("pipeline")
    record["difference"] = record["pipeline_metric"] - record["baseline_metric"] if both and same_rows else None
    record["load_after"] = _load()
    return record


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | target | rows | problem type (pipeline's) | metric | pipeline | baseline | difference | "
        "informed baseline | pipeline s | baselines s | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        chosen = r["pipeline_problem_type"]
        kind = r["problem_type"] + (f" ({chosen})" if chosen and chosen != r["problem_type"] else "")
        note = ""
        if r["status"] != "SUCCEEDED":
            note = f"{r['status']}: {r['error']}"
        if not r["baseline_split"].startswith("pipeline"):
            note += "; baseline on its own split"
        if r.get("baseline_error"):
            note += f"; baseline: {r['baseline_error'][:80]}"
        lines.append(
            f"| {r['name']} | {r['target']} | {r['rows']} | {kind} | {r['metric']} | {_fmt(r['pipeline_metric'])} | "
            f"{_fmt(r['baseline_metric'])} | {_fmt(r['difference'])} | {_fmt(r.get('informed_baseline_metric'))} | "
            f"{r['pipeline_seconds']} | "
            f"{r['baseline_seconds']} | {note.strip('; ')} |"
        )
    return "\n".join(lines)


def _commit() -> str:
    completed = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return completed.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", help="comma-separated names (default: all); two_targets selects both targets")
    parser.add_argument("--data-dir", type=Path, help="directory of the --spec files (instead of the built-in sets)")
    parser.add_argument("--spec", type=Path, help="JSON list of {name, file, target[, problem_type]}")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if (args.data_dir is None) != (args.spec is None):
        parser.error("--data-dir and --spec go together")
    import sklearn

    with tempfile.TemporaryDirectory(prefix="stepml-quality-") as work:
        cases = (
            spec_cases(args.data_dir, args.spec)
            if args.spec
            else [*bundled_cases(), *generated_cases(Path(work) / "data")]
        )
        if args.datasets:
            wanted = {name.strip() for name in args.datasets.split(",") if name.strip()}
            unknown = wanted - {c.name.split(":")[0] for c in cases} - {c.name for c in cases}
            if unknown:
                parser.error(f"unknown datasets {sorted(unknown)}; known: {', '.join(c.name for c in cases)}")
            cases = [c for c in cases if c.name in wanted or c.name.split(":")[0] in wanted]
        env = {**os.environ, "STEPML_STATE_DIR": str(Path(work) / "state")}
        summary: dict[str, Any] = {
            "commit": _commit(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "sklearn": sklearn.__version__,
            "load_start": _load(),
            "results": [],
        }
        try:
            for case in cases:
                print(f"{case.name} (target {case.target}) ...", flush=True)
                record = measure(case, env)
                summary["results"].append(record)
                print(
                    f"  {record['status']}: pipeline {_fmt(record['pipeline_metric'])}, baseline "
                    f"{_fmt(record['baseline_metric'])} ({record['metric']}), {record['pipeline_seconds']} s",
                    flush=True,
                )
        finally:  # never leave the local AWS behind, even when a case crashed
            subprocess.run(
                [sys.executable, "-m", "stepml.cli", "local", "down"], env=env, capture_output=True, check=False
            )
        summary["load_end"] = _load()
    print()
    print(
        f"commit {summary['commit']}, {summary['cpus']} CPUs, Python {summary['python']}, scikit-learn "
        f"{summary['sklearn']}, load average (1/5/15 min) {summary['load_start']} at start, {summary['load_end']} "
        "at end"
    )
    print()
    print(markdown(summary["results"]))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
