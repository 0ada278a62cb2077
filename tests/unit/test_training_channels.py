"""training/stepml_tabular/channels.py: a channel's CSV file(s) read by pyarrow give what pandas gave.

The pandas reader (``read_csv_by_roles``) is today's and the SageMaker image's (no pyarrow there); each
test reads the same files both ways (``pa_csv`` set to None is the image without pyarrow) and compares
what training makes of them: features, target and, end to end, the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from stepml_tabular import channels
from stepml_tabular.columns import prepare_features
from stepml_tabular.errors import TrainingDataError

from training import train

pytestmark = pytest.mark.skipif(not channels.fast_reader_available(), reason="pyarrow not installed")

ROLES = {"x": "numeric", "n": "numeric", "colour": "categorical", "code": "categorical", "flag": "boolean"}
ROLES |= {"when": "datetime", "note": "text"}


def mixed_frame(rows: int = 300, seed: int = 5) -> pd.DataFrame:
    """Every role, with gaps; floats of 17 significant digits; codes with leading zeros; "NA" as a value."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=rows) * 1e3,
            "n": rng.integers(-5, 5, size=rows),
            "colour": rng.choice(["red", "green", "NA", "None", "blue"], size=rows),
            "code": rng.choice(["007", "7", "1.0", "x y"], size=rows),
            "flag": rng.choice(["true", "false", "yes", "0"], size=rows),
            "when": rng.choice(["2024-01-02", "2024-03-04T05:06:07", "2023-12-31"], size=rows),
            "note": rng.choice(["good, fine", 'said "hi"', "plain"], size=rows),
            "label": rng.choice(["a", "b", "c"], size=rows),
        }
    )
    for column, step in (("x", 7), ("n", 5), ("colour", 11), ("flag", 13), ("when", 17), ("note", 19)):
        frame[column] = frame[column].astype(object)
        frame.loc[frame.index % step == 0, column] = None
    return frame


def read_both(
    paths: list[Path], roles: dict[str, str] | None, monkeypatch: pytest.MonkeyPatch
) -> tuple[pd.DataFrame, ...]:
    fast = channels.read_split(paths, roles, "train")
    with monkeypatch.context() as patch:
        patch.setattr(channels, "pa_csv", None)
        slow = channels.read_split(paths, roles, "train")
    return fast, slow


def features(frame: pd.DataFrame, roles: dict[str, str]) -> pd.DataFrame:
    return prepare_features(frame, list(roles), roles, "train")


def test_fast_reader_gives_the_features_and_labels_pandas_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "train.csv"
    mixed_frame().to_csv(path, index=False)

    fast, slow = read_both([path], ROLES, monkeypatch)

    pd.testing.assert_frame_equal(features(fast, ROLES), features(slow, ROLES))
    for problem_type in ("multiclass_classification",):
        np.testing.assert_array_equal(
            train.prepare_target(fast, "label", problem_type, "train"),
            train.prepare_target(slow, "label", problem_type, "train"),
        )
    assert fast["colour"].tolist().count("NA") > 0  # a literal "NA" stays a value, as pandas reads it


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["0", "1", "1"], ["0", "1", "1"]),
        (["1.0", "2.0", "2.5"], ["1", "2", "2.5"]),
        (["007", "7", "10"], ["7", "7", "10"]),
        (["True", "false", "TRUE"], ["True", "False", "True"]),
        (["yes", "no", "NA"], ["yes", "no", "NA"]),
        (["1", "x", "2"], ["1", "x", "2"]),
        (["2024-01-01", "2024-01-02", "2024-01-01"], ["2024-01-01", "2024-01-02", "2024-01-01"]),
    ],
)
def test_target_labels_are_the_ones_pandas_infers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, labels: list[str], expected: list[str]
) -> None:
    path = tmp_path / "train.csv"
    path.write_text("x,label\n" + "".join(f"{i},{label}\n" for i, label in enumerate(labels)))

    fast, slow = read_both([path], {"x": "numeric"}, monkeypatch)

    for frame in (fast, slow):
        assert train.prepare_target(frame, "label", "multiclass_classification", "train").tolist() == expected


@pytest.mark.parametrize("values", [["1", "2.5", "-3e2"], ["1", "", "3"], ["4", "5", "6"]])
def test_regression_target_is_the_same_floats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, values: list[str]
) -> None:
    path = tmp_path / "train.csv"
    path.write_text("x,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))

    fast, slow = read_both([path], {"x": "numeric"}, monkeypatch)

    if "" in values:
        for frame in (fast, slow):
            with pytest.raises(TrainingDataError, match="missing or not numeric in 1 row"):
                train.prepare_target(frame, "y", "regression", "train")
        return
    np.testing.assert_array_equal(
        train.prepare_target(fast, "y", "regression", "train"), train.prepare_target(slow, "y", "regression", "train")
    )


def test_part_files_are_one_table_in_name_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = mixed_frame(rows=90)
    whole = tmp_path / "whole.csv"
    frame.to_csv(whole, index=False)
    parts = tmp_path / "parts"
    parts.mkdir()
    # written out of order: part-00010 sorts after part-00002 by name, and that is the order read
    for index, name in ((0, "part-00000.csv"), (2, "part-00010.csv"), (1, "part-00002.csv")):
        frame.iloc[index * 30 : (index + 1) * 30].to_csv(parts / name, index=False)
    (parts / "columns.json").write_text("{}")

    paths = channels.channel_csvs(parts, "train")
    assert [p.name for p in paths] == ["part-00000.csv", "part-00002.csv", "part-00010.csv"]
    fast, slow = read_both(paths, ROLES, monkeypatch)
    expected = channels.read_split([whole], ROLES, "train")
    pd.testing.assert_frame_equal(features(fast, ROLES), features(expected, ROLES))
    pd.testing.assert_frame_equal(features(slow, ROLES), features(expected, ROLES))


def test_text_in_a_numeric_column_is_the_error_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "train.csv"
    path.write_text("x,label\n1,a\noops,b\n3,a\n")

    fast, slow = read_both([path], {"x": "numeric"}, monkeypatch)

    for frame in (fast, slow):
        with pytest.raises(TrainingDataError, match="column 'x' is numeric in the train split but row 1 holds 'oops'"):
            prepare_features(frame, ["x"], {"x": "numeric"}, "train")


def test_a_file_that_is_not_csv_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(b"")
    with pytest.raises(TrainingDataError, match=r"channel 'train': cannot read train\.csv as CSV"):
        channels.read_split([path], {"x": "numeric"}, "train")


def write_split_channels(base: Path, frame: pd.DataFrame, roles: dict[str, str], parts: int) -> dict[str, Path]:
    """train/validation/test channels (60/20/20 in order), each cut into ``parts`` part files."""
    bounds = {"train": (0, 0.6), "validation": (0.6, 0.8), "test": (0.8, 1.0)}
    directories = {}
    for name, (start, stop) in bounds.items():
        directory = base / name
        directory.mkdir(parents=True)
        split = frame.iloc[int(start * len(frame)) : int(stop * len(frame))]
        for index, piece in enumerate(np.array_split(np.arange(len(split)), parts)):
            split.iloc[piece].to_csv(directory / f"part-{index:05d}.csv", index=False)
        directories[name] = directory
    document = {"format": 1, "target": "label", "roles": roles}
    (directories["train"] / "columns.json").write_text(json.dumps(document))
    return directories


def test_the_model_is_the_same_whichever_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end through main(): one file read by pandas (today) and three part files read by pyarrow
    give the same metrics, test predictions and fitted model."""
    frame = mixed_frame(rows=400, seed=11)
    frame["label"] = np.where(pd.to_numeric(frame["x"]).fillna(0) > 0, "up", "down")
    roles = {k: v for k, v in ROLES.items() if k != "note"}
    frame = frame.drop(columns="note")
    outputs = {}
    for reader, parts in (("pandas", 1), ("pyarrow", 3)):
        channel_dirs = write_split_channels(tmp_path / reader / "data", frame, roles, parts)
        for name, directory in channel_dirs.items():
            monkeypatch.setenv(f"SM_CHANNEL_{name.upper()}", str(directory))
        for variable, sub in (
            ("SM_MODEL_DIR", "model"),
            ("SM_OUTPUT_DATA_DIR", "output/data"),
            ("SM_OUTPUT_DIR", "output"),
        ):
            monkeypatch.setenv(variable, str(tmp_path / reader / sub))
        monkeypatch.delenv("SM_HPS", raising=False)
        with monkeypatch.context() as patch:
            if reader == "pandas":
                patch.setattr(channels, "pa_csv", None)
            assert train.main(["--target", "label", "--problem_type", "binary_classification"]) == 0
        outputs[reader] = tmp_path / reader

    for name in ("output/data/metrics.json", "output/data/test_predictions.csv", "model/metadata.json"):
        assert (outputs["pyarrow"] / name).read_bytes() == (outputs["pandas"] / name).read_bytes(), name
    test_rows = pd.read_csv(write_split_channels(tmp_path / "probe", frame, roles, 1)["test"] / "part-00000.csv")
    models = [train.joblib.load(outputs[r] / "model" / "model.joblib")["pipeline"] for r in ("pandas", "pyarrow")]
    probe = features(channels.read_split([tmp_path / "probe" / "test" / "part-00000.csv"], roles, "test"), roles)
    assert len(test_rows) == len(probe)
    np.testing.assert_array_equal(models[0].predict_proba(probe), models[1].predict_proba(probe))


def test_train_splits_lets_go_of_the_read_tables(tmp_path: Path) -> None:
    """main hands its frames over: train_splits empties the dict once the features are made, so the read
    tables are not held beside the feature matrix while the model is fitted."""
    frame = mixed_frame(rows=120, seed=2).drop(columns=["note", "when"])
    frame["label"] = np.where(pd.to_numeric(frame["x"]).fillna(0) > 0, "up", "down")
    splits = {"train": frame.iloc[:80], "validation": frame.iloc[80:100], "test": frame.iloc[100:]}
    roles = {k: v for k, v in ROLES.items() if k in frame.columns}

    outcome = train.train_splits(splits, target="label", problem_type="binary_classification", roles=roles)

    assert splits == {}
    assert (outcome.metrics["n_train"], outcome.metrics["n_validation"], outcome.metrics["n_test"]) == (80, 20, 20)
