"""training/train.py and training/inference.py: the SageMaker script-mode and serving contracts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.model_selection import train_test_split
from stepml_tabular import fast_path

from training import inference, train

REPO = Path(__file__).resolve().parents[2]
SM_VARS = (
    "SM_MODEL_DIR",
    "SM_OUTPUT_DATA_DIR",
    "SM_OUTPUT_DIR",
    "SM_HPS",
    *tuple(f"SM_CHANNEL_{c.upper()}" for c in train.CHANNELS),
)


def split3(frame: pd.DataFrame, seed: int = 0, stratify: str | None = None) -> tuple[pd.DataFrame, ...]:
    """60/20/20 train/validation/test, stratified on a column when given."""
    strat = frame[stratify] if stratify else None
    rest, test = train_test_split(frame, test_size=0.2, random_state=seed, stratify=strat)
    strat = rest[stratify] if stratify else None
    tr, val = train_test_split(rest, test_size=0.25, random_state=seed, stratify=strat)
    return tuple(f.reset_index(drop=True) for f in (tr, val, test))


def iris_frame() -> pd.DataFrame:
    frame = load_iris(as_frame=True).frame
    names = load_iris().target_names
    frame["species"] = [str(names[i]) for i in frame.pop("target")]
    return frame


def synthetic_frame(n: int = 400, seed: int = 3) -> pd.DataFrame:
    """A numeric and a string column (both with gaps) and a bool column; the label follows the string."""
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue"], size=n)
    size = rng.normal(10, 2, size=n)
    label = np.where(color == "red", "yes", "no")
    frame = pd.DataFrame(
        {
            "size": size,
            "color": pd.Series(color, dtype=object),
            "flag": rng.random(n) < 0.5,
            "label": label,
        }
    )
    frame.loc[frame.index % 9 == 0, "size"] = np.nan
    frame.loc[frame.index % 11 == 0, "color"] = None
    return frame


@pytest.fixture
def sm_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """SageMaker's directory layout under tmp_path, with the SM_* variables pointing at it."""
    for name in SM_VARS:
        monkeypatch.delenv(name, raising=False)
    dirs = {
        "model": tmp_path / "model",
        "output_data": tmp_path / "output" / "data",
        "output": tmp_path / "output",
    }
    for channel in train.CHANNELS:
        dirs[channel] = tmp_path / "input" / "data" / channel
        dirs[channel].mkdir(parents=True)
        monkeypatch.setenv(f"SM_CHANNEL_{channel.upper()}", str(dirs[channel]))
    monkeypatch.setenv("SM_MODEL_DIR", str(dirs["model"]))
    monkeypatch.setenv("SM_OUTPUT_DATA_DIR", str(dirs["output_data"]))
    monkeypatch.setenv("SM_OUTPUT_DIR", str(dirs["output"]))
    return dirs


def write_channels(dirs: dict[str, Path], frames: tuple[pd.DataFrame, ...]) -> None:
    for channel, frame in zip(train.CHANNELS, frames, strict=True):
        frame.to_csv(dirs[channel] / f"{channel}.csv", index=False)


def failure_text(dirs: dict[str, Path]) -> str:
    return (dirs["output"] / "failure").read_text()


# --- train() on real data ----------------------------------------------------------------------------


def test_multiclass_iris() -> None:
    tr, val, test = split3(iris_frame(), stratify="species")
    outcome = train.train(tr, val, test, target="species", problem_type="multiclass_classification", seed=1)

    assert outcome.metrics["primary_metric"] == "f1_macro"
    assert outcome.metrics["test"]["f1_macro"] > 0.8
    assert outcome.metrics["validation"]["f1_macro"] > 0.8
    assert set(outcome.metrics["test"]) == {"accuracy", "f1_macro", "precision_macro", "recall_macro"}
    assert (outcome.metrics["n_train"], outcome.metrics["n_validation"], outcome.metrics["n_test"]) == (90, 30, 30)
    assert outcome.bundle["class_labels"] == ["setosa", "versicolor", "virginica"]
    preds = outcome.test_predictions
    assert list(preds.columns) == ["y_true", "y_pred", "proba_setosa", "proba_versicolor", "proba_virginica"]
    assert preds["y_true"].tolist() == test["species"].tolist()
    assert np.allclose(preds.filter(like="proba_").sum(axis=1), 1.0)
    accuracy = float((preds["y_true"] == preds["y_pred"]).mean())
    assert accuracy == pytest.approx(outcome.metrics["test"]["accuracy"])


def test_binary_breast_cancer_with_numeric_coded_target() -> None:
    frame = load_breast_cancer(as_frame=True).frame  # target is 0/1 integers
    tr, val, test = split3(frame, stratify="target")
    outcome = train.train(tr, val, test, target="target", problem_type="binary_classification", seed=7)

    metrics = outcome.metrics["test"]
    assert metrics["f1_macro"] > 0.85
    assert 0.85 < metrics["roc_auc"] <= 1.0
    assert outcome.bundle["class_labels"] == ["0", "1"]
    assert set(outcome.test_predictions["y_pred"]) <= {"0", "1"}
    assert all(isinstance(v, float) for v in metrics.values())


def test_regression_diabetes() -> None:
    tr, val, test = split3(load_diabetes(as_frame=True).frame)
    outcome = train.train(tr, val, test, target="target", problem_type="regression", seed=0)

    assert outcome.metrics["primary_metric"] == "r2"
    assert outcome.metrics["test"]["r2"] > 0.2
    assert set(outcome.metrics["test"]) == {"r2", "rmse", "mae"}
    assert outcome.bundle["class_labels"] == []
    assert list(outcome.test_predictions.columns) == ["y_true", "y_pred"]
    errors = outcome.test_predictions["y_true"] - outcome.test_predictions["y_pred"]
    assert float(errors.abs().mean()) == pytest.approx(outcome.metrics["test"]["mae"])


def test_categorical_and_missing_values() -> None:
    tr, val, test = split3(synthetic_frame(), stratify="label")
    outcome = train.train(tr, val, test, target="label", problem_type="binary_classification", seed=0)

    assert outcome.bundle["feature_kinds"] == {"size": "numeric", "color": "categorical", "flag": "categorical"}
    # The label is a function of color (missing colors aside): only the one-hot encoding can find it.
    assert outcome.metrics["test"]["accuracy"] > 0.85


def test_integral_float_labels_read_like_integers() -> None:
    tr, val, test = split3(synthetic_frame(), stratify="label")
    tr = tr.assign(label=np.where(tr["label"] == "yes", 1.0, 0.0))
    val = val.assign(label=np.where(val["label"] == "yes", 1, 0))
    test = test.assign(label=np.where(test["label"] == "yes", "1", "0"))
    outcome = train.train(tr, val, test, target="label", problem_type="binary_classification", seed=0)
    assert outcome.bundle["class_labels"] == ["0", "1"]
    assert outcome.metrics["validation"]["accuracy"] > 0.85


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda f: f.drop(columns="label"), "target column 'label' is not in the train split"),
        (lambda f: f.assign(label="yes"), "needs at least 2 classes"),
        (lambda f: f.iloc[:0], "the train split has no rows"),
        (lambda f: f.assign(size=["n/a", *f["size"].tolist()[1:]]), "row 0 holds 'n/a'"),
    ],
)
def test_bad_training_data_is_named(change: Any, expected: str) -> None:
    tr, val, test = split3(synthetic_frame(), stratify="label")
    # "size" must be numeric in train for the last case, so that change applies to validation only
    if "n/a" in expected:
        val = change(val)
    else:
        tr = change(tr)
    with pytest.raises(train.TrainingDataError, match=expected.replace("(", r"\(")):
        train.train(tr, val, test, target="label", problem_type="binary_classification", seed=0)


def test_regression_target_must_be_numeric() -> None:
    tr, val, test = split3(load_diabetes(as_frame=True).frame)
    test = test.astype({"target": object})
    test.loc[3, "target"] = "unknown"
    with pytest.raises(train.TrainingDataError, match=r"test split.*first rows \[3\].*'unknown'"):
        train.train(tr, val, test, target="target", problem_type="regression", seed=0)


# --- hyperparameters ---------------------------------------------------------------------------------


def test_hyperparameters_cli_wins_over_sm_hps_and_sagemaker_names_are_ignored() -> None:
    cli = train.parse_cli_hyperparameters(["--max_iter", "30", "--learning_rate=0.2", "--target", '"species"'])
    sm_hps = json.dumps(
        {
            "max_iter": 999,
            "problem_type": "multiclass_classification",
            "max_depth": None,
            "sagemaker_program": "train.py",
            "sagemaker_submit_directory": "s3://b/code/training-source.tar.gz",
        }
    )
    hps = train.validate_hyperparameters(train.merge_hyperparameters(cli, sm_hps))
    assert hps.target == "species"
    assert hps.problem_type == "multiclass_classification"
    assert hps.seed == 42
    assert hps.params["max_iter"] == 30
    assert hps.params["learning_rate"] == 0.2
    assert hps.params["max_depth"] is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"max_iter": "abc"}, "max_iter='abc'"),
        ({"max_iter": "2.5"}, "max_iter='2.5'"),
        ({"learning_rate": "-1"}, "learning_rate='-1'"),
        ({"learning_rate": "0"}, "learning_rate='0'"),
        ({"min_samples_leaf": "0"}, "min_samples_leaf='0'"),
        ({"seed": "-3"}, "seed='-3'"),
        ({"n_estimators": "10"}, "unknown hyperparameter(s) ['n_estimators']; allowed: target, problem_type"),
        ({"problem_type": "classification"}, "problem_type='classification' must be one of"),
        ({"target": ""}, "'target' is required"),
    ],
)
def test_bad_hyperparameters_are_named(raw: dict[str, str], expected: str) -> None:
    base = {"target": "y", "problem_type": "regression"}
    with pytest.raises(train.HyperparameterError) as caught:
        train.validate_hyperparameters({**base, **raw})
    assert expected in str(caught.value)


# --- main(): the script-mode contract ----------------------------------------------------------------


def test_main_end_to_end_and_model_serves_the_same_predictions(sm_env: dict[str, Path]) -> None:
    frames = split3(synthetic_frame(), stratify="label")
    write_channels(sm_env, frames)

    rc = train.main(["--target", "label", "--problem_type", "binary_classification", "--max_iter", "50"])

    assert rc == 0
    assert not (sm_env["output"] / "failure").exists()
    metrics = json.loads((sm_env["output_data"] / "metrics.json").read_text())
    assert metrics["problem_type"] == "binary_classification"
    assert metrics["primary_metric"] == "f1_macro"
    assert metrics["n_test"] == len(frames[2])
    assert metrics["test"]["f1_macro"] > 0.8
    metadata = json.loads((sm_env["model"] / "metadata.json").read_text())
    assert metadata["feature_columns"] == ["size", "color", "flag"]
    assert metadata["class_labels"] == ["no", "yes"]
    assert metadata["params"]["max_iter"] == 50
    assert metadata["target"] == "label"
    assert "pipeline" not in metadata

    saved = pd.read_csv(sm_env["output_data"] / "test_predictions.csv", dtype={"y_true": str, "y_pred": str})
    assert list(saved.columns) == ["y_true", "y_pred", "proba_no", "proba_yes"]

    # Round trip through the serving functions: same predictions as the pipeline that was saved.
    raw_bundle = joblib.load(sm_env["model"] / "model.joblib")
    bundle = inference.model_fn(str(sm_env["model"]))
    test_csv = (sm_env["test"] / "test.csv").read_text()
    served = inference.predict_fn(inference.input_fn(test_csv.encode(), "text/csv"), bundle)
    assert served == saved["y_pred"].tolist()
    in_memory = raw_bundle["pipeline"].predict(
        train.prepare_features(frames[2], raw_bundle["feature_columns"], raw_bundle["feature_kinds"], "test")
    )
    assert served == [str(p) for p in in_memory]


def test_main_regression_writes_float_predictions(sm_env: dict[str, Path]) -> None:
    write_channels(sm_env, split3(load_diabetes(as_frame=True).frame))
    assert train.main(["--target", "target", "--problem_type", "regression"]) == 0
    bundle = inference.model_fn(str(sm_env["model"]))
    rows = pd.read_csv(sm_env["test"] / "test.csv").drop(columns="target")
    served = inference.predict_records(bundle, rows.to_dict("records"))
    saved = pd.read_csv(sm_env["output_data"] / "test_predictions.csv")
    assert all(isinstance(v, float) for v in served)
    assert np.allclose(served, saved["y_pred"])


def test_main_reads_sm_hps(sm_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    write_channels(sm_env, split3(iris_frame(), stratify="species"))
    monkeypatch.setenv(
        "SM_HPS", json.dumps({"target": "species", "problem_type": "multiclass_classification", "seed": 5})
    )
    assert train.main([]) == 0
    assert json.loads((sm_env["model"] / "metadata.json").read_text())["seed"] == 5


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--max_iter", "abc"], "HyperparameterError: hyperparameter max_iter='abc' is not a valid int"),
        (["--learning_rate", "-1"], "learning_rate='-1'"),
        (["--colour", "red"], "unknown hyperparameter(s) ['colour']"),
        (["-k", "3"], "unknown hyperparameter(s) ['k']"),
        (["stray"], "unexpected argument 'stray'"),
        (["--target", "nope"], "TrainingDataError: target column 'nope' is not in the train split"),
    ],
)
def test_main_failure_writes_the_reason(
    sm_env: dict[str, Path], argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    write_channels(sm_env, split3(synthetic_frame(), stratify="label"))
    base = ["--target", "label", "--problem_type", "binary_classification", "--sagemaker_region", "eu-west-1"]

    rc = train.main(base + argv)

    assert rc != 0
    reason = failure_text(sm_env)
    assert expected in reason
    assert "\n" not in reason
    assert expected in capsys.readouterr().err
    assert not (sm_env["model"] / "model.joblib").exists()


def test_main_channel_files_must_share_a_header(sm_env: dict[str, Path]) -> None:
    write_channels(sm_env, split3(synthetic_frame(), stratify="label"))
    (sm_env["validation"] / "extra.csv").write_text("a,b\n1,2\n")
    assert train.main(["--target", "label", "--problem_type", "binary_classification"]) == 1
    reason = failure_text(sm_env)
    assert "channel 'validation'" in reason
    assert "validation.csv has the columns ['size', 'color', 'flag', 'label'], extra.csv has ['a', 'b']" in reason
    assert "every file of a channel must have the same header" in reason


def test_main_channel_without_csv(sm_env: dict[str, Path]) -> None:
    write_channels(sm_env, split3(synthetic_frame(), stratify="label"))
    (sm_env["test"] / "test.csv").rename(sm_env["test"] / "test.txt")
    assert train.main(["--target", "label", "--problem_type", "binary_classification"]) == 1
    reason = failure_text(sm_env)
    assert "channel 'test': expected one or more .csv files" in reason
    assert "['test.txt']" in reason


def test_main_missing_channel(sm_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    write_channels(sm_env, split3(synthetic_frame(), stratify="label"))
    monkeypatch.setenv("SM_CHANNEL_TEST", str(sm_env["test"].parent / "absent"))
    assert train.main(["--target", "label", "--problem_type", "binary_classification"]) == 1
    assert "channel 'test'" in failure_text(sm_env)
    assert "SM_CHANNEL_TEST" in failure_text(sm_env)


def test_script_mode_subprocess(sm_env: dict[str, Path]) -> None:
    write_channels(sm_env, split3(iris_frame(), stratify="species"))
    env = {k: v for k, v in os.environ.items() if k.startswith("SM_") or k in ("PATH", "HOME", "LANG")}
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "training" / "train.py"),
            "--target",
            "species",
            "--problem_type",
            "multiclass_classification",
            "--sagemaker_program",
            "train.py",
            "--max_iter",
            "20",
        ],
        cwd=sm_env["model"].parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "problem_type=multiclass_classification" in result.stdout
    assert "test metrics: accuracy=" in result.stdout
    for path in (
        sm_env["model"] / "model.joblib",
        sm_env["model"] / "metadata.json",
        sm_env["output_data"] / "metrics.json",
        sm_env["output_data"] / "test_predictions.csv",
    ):
        assert path.is_file(), path


# --- inference ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The synthetic model saved and loaded back through model_fn, as the serving container does."""
    outcome = train.train(
        *split3(synthetic_frame(), stratify="label"),
        target="label",
        problem_type="binary_classification",
        seed=0,
        algorithm="gradient-boosting",
    )
    directory = tmp_path_factory.mktemp("model")
    train.write_outputs(outcome, directory, directory)
    return inference.model_fn(str(directory))


def test_input_output_json(synthetic_bundle: dict[str, Any]) -> None:
    records = [{"size": 9.5, "color": "red", "flag": True}, {"size": None, "color": "blue", "flag": False}]
    for body in (json.dumps({"instances": records}), json.dumps(records).encode()):
        frame = inference.input_fn(body, "application/json; charset=utf-8")
        assert frame.shape == (2, 3)
        predictions = inference.predict_fn(frame, synthetic_bundle)
        assert predictions == ["yes", "no"]
    body, content_type = inference.output_fn(predictions, "application/json")
    assert content_type == "application/json"
    assert json.loads(body) == {"predictions": ["yes", "no"]}


def test_input_output_csv(synthetic_bundle: dict[str, Any]) -> None:
    frame = inference.input_fn("color,size,flag,extra\nred,9.5,True,x\n,,False,y\ngreen,12,False,z\n", "text/csv")
    predictions = inference.predict_fn(frame, synthetic_bundle)
    assert predictions[0] == "yes"
    assert predictions[2] == "no"
    assert inference.output_fn(predictions, "text/csv") == ("".join(f"{p}\n" for p in predictions), "text/csv")


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        ("{}", "application/x-npy", "unsupported content type"),
        ("", "text/csv", "empty"),
        ("{not json", "application/json", "not valid JSON"),
        ('{"rows": []}', "application/json", "instances"),
        ('{"instances": [{"size": 1}, 3]}', "application/json", "instance 1 must be a JSON object"),
    ],
)
def test_input_fn_rejects_bad_requests(body: str, content_type: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        inference.input_fn(body, content_type)


def test_output_fn_rejects_unknown_accept() -> None:
    with pytest.raises(ValueError, match="unsupported accept type 'application/xml'"):
        inference.output_fn(["a"], "application/xml")


def test_missing_feature_is_named_with_its_row(synthetic_bundle: dict[str, Any]) -> None:
    frame = inference.input_fn("size,flag\n1.0,True\n", "text/csv")
    with pytest.raises(ValueError, match=r"row 0: missing feature column\(s\) \['color'\]"):
        inference.predict_fn(frame, synthetic_bundle)

    records: list[dict[str, Any]] = [{"size": 1.0, "color": "red", "flag": True}, {"size": 2.0, "flag": True}]
    frame = inference.input_fn(json.dumps({"instances": records}), "application/json")
    with pytest.raises(ValueError, match=r"row 1: missing feature column\(s\) \['color'\]"):
        inference.predict_fn(frame, synthetic_bundle)
    with pytest.raises(ValueError, match=r"row 1: missing feature column\(s\) \['color'\]"):
        inference.predict_records(synthetic_bundle, records)


def test_non_numeric_value_is_named(synthetic_bundle: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="row 0: feature 'size' must be a number, got 'big'"):
        inference.predict_records(synthetic_bundle, [{"size": "big", "color": "red", "flag": True}])


def test_fast_path_matches_the_pipeline(synthetic_bundle: dict[str, Any]) -> None:
    assert synthetic_bundle["_fast_plan"] is not None  # otherwise this test would compare the pipeline with itself
    frame = synthetic_frame(n=200, seed=11).drop(columns="label")
    records: list[dict[str, Any]] = frame.to_dict("records")
    records += [
        {"size": None, "color": None, "flag": None},
        {"size": "7.5", "color": "purple", "flag": "maybe"},  # unknown categories
        {"size": 1e9, "color": "red", "flag": 1, "ignored": "extra field"},
    ]
    pipeline = synthetic_bundle["pipeline"]
    expected_frame = inference._prepare_frame(pd.DataFrame(records), synthetic_bundle)
    expected = [str(p) for p in pipeline.predict(expected_frame)]
    expected_proba = pipeline.predict_proba(expected_frame)

    assert inference.predict_records(synthetic_bundle, records) == expected
    plan = synthetic_bundle["_fast_plan"]
    assert np.allclose(plan.estimator.predict_proba(fast_path.plan_rows(plan, records)), expected_proba)
    slow_bundle = {**synthetic_bundle, "_fast_plan": None}
    assert inference.predict_records(slow_bundle, records) == expected


def test_fast_path_with_many_categories_and_an_empty_column() -> None:
    """Rare categories grouped by max_categories, and a numeric column that is all missing in training."""
    rng = np.random.default_rng(0)
    n = 600
    code = rng.integers(0, 150, size=n)
    frame = pd.DataFrame(
        {
            "code": [f"c{c}" for c in code],
            "empty": np.nan,
            "x": rng.normal(size=n),
            "y": code % 2 == 0,
        }
    )
    outcome = train.train(
        *split3(frame),
        target="y",
        problem_type="binary_classification",
        seed=0,
        params={"max_iter": 10},
        algorithm="gradient-boosting",
    )
    bundle = dict(outcome.bundle)
    assert bundle["feature_columns"] == ["code", "x"]
    assert bundle["ignored_columns"] == ["empty"]
    records = [*frame.drop(columns="y").head(50).to_dict("records"), {"code": "zzz", "x": 0.1}]
    plan = fast_path.build_plan(bundle)
    assert plan is not None
    encoder = bundle["pipeline"].named_steps["preprocess"].named_transformers_["categorical"]["onehot"]
    assert encoder.infrequent_categories_[0] is not None  # the grouping this test is about happened
    expected = [str(p) for p in bundle["pipeline"].predict(inference._prepare_frame(pd.DataFrame(records), bundle))]
    assert inference.predict_records(bundle, records) == expected


def test_value_encoding_is_the_same_in_training_and_serving() -> None:
    values = [None, np.nan, pd.NA, 1, 1.0, 2.5, np.float32(3.0), True, np.bool_(False), "a", "1.0", 0, -0.0]
    frame = pd.DataFrame({"c": pd.Series(values, dtype=object)})
    trained = train.prepare_features(frame, ["c"], {"c": "categorical"}, "train")["c"].tolist()
    served = inference._prepare_frame(frame, {"feature_columns": ["c"], "feature_kinds": {"c": "categorical"}})
    assert [str(v) for v in trained] == [str(v) for v in served["c"].tolist()]
    assert trained[4] == "1"
    assert trained[7] == "True"
