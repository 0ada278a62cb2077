"""The generated datasets: deterministic, and each has the property it is there to exercise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stepml.sample_datasets import DATASETS, generate, write_dataset


def _read(name: str, directory: Path) -> pd.DataFrame:
    """As written, every cell text: what a reader that guesses nothing sees."""
    return pd.read_csv(write_dataset(name, directory), dtype=str, keep_default_na=False)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_each_dataset_is_the_same_bytes_every_time(name: str, tmp_path: Path) -> None:
    first = write_dataset(name, tmp_path / "a").read_bytes()
    second = write_dataset(name, tmp_path / "b").read_bytes()
    assert first == second
    assert (tmp_path / "a" / f"{name}.csv").is_file()


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_each_dataset_has_its_targets_and_no_empty_cells(name: str, tmp_path: Path) -> None:
    frame = _read(name, tmp_path)
    assert 50 <= len(frame) <= 5000
    for target, _ in DATASETS[name].targets:
        assert target in frame.columns
    assert not (frame == "").any().any()


def test_dates_target_follows_the_weekend_and_the_season(tmp_path: Path) -> None:
    frame = _read("dates", tmp_path)
    dates = pd.to_datetime(frame["date"], format="%Y-%m-%d")
    assert dates.is_unique  # useless as a category: one level per row
    weekend = dates.dt.day_of_week >= 5
    high = frame["demand"] == "high"
    assert high[weekend].mean() > high[~weekend].mean() + 0.3
    summer = dates.dt.month.isin([6, 7, 8])
    winter = dates.dt.month.isin([12, 1, 2])
    assert high[summer].mean() > high[winter].mean() + 0.3


def test_text_is_free_text_whose_words_carry_the_label(tmp_path: Path) -> None:
    frame = _read("text", tmp_path)
    assert frame["review"].nunique() > 0.95 * len(frame)
    assert set(frame["sentiment"]) == {"positive", "negative"}
    great = frame["review"].str.contains(r"\b(?:great|excellent|love)\b", case=False)
    assert (frame.loc[great, "sentiment"] == "positive").mean() > 0.8


def test_ids_has_a_unique_integer_id_and_a_unique_code(tmp_path: Path) -> None:
    frame = _read("ids", tmp_path)
    assert frame["customer_id"].is_unique and frame["customer_id"].str.fullmatch(r"\d+").all()
    assert frame["account_code"].is_unique and frame["account_code"].str.fullmatch(r"[A-Z]{3}-\d{4}").all()
    assert {"tenure_months", "monthly_charge", "plan", "support_calls"} <= set(frame.columns)


def test_count_target_is_non_negative_integers_up_to_12_with_more_than_10_values(tmp_path: Path) -> None:
    visits = _read("count", tmp_path)["visits"].astype(int)
    assert visits.min() == 0 and visits.max() == 12
    assert visits.nunique() > 10
    assert DATASETS["count"].problem_type == "regression"


def test_thousands_writes_prices_with_separators(tmp_path: Path) -> None:
    frame = _read("thousands", tmp_path)
    for column in ("list_price", "sale_price"):
        assert frame[column].str.fullmatch(r"\d{1,3}(?:,\d{3})+\.\d{2}").all()
        assert pd.to_numeric(frame[column].str.replace(",", "", regex=False)).gt(1000).all()
    assert DATASETS["thousands"].target == "sale_price"


def test_two_targets_has_species_and_sex(tmp_path: Path) -> None:
    frame = _read("two_targets", tmp_path)
    assert set(frame["species"]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert set(frame["sex"]) == {"male", "female"}
    assert DATASETS["two_targets"].targets == (
        ("species", "multiclass_classification"),
        ("sex", "binary_classification"),
    )


def test_none_category_is_a_real_level_of_a_feature_and_of_the_target(tmp_path: Path) -> None:
    frame = _read("none_category", tmp_path)
    assert (frame["coupon"] == "None").mean() > 0.3
    assert (frame["upgrade"] == "None").mean() > 0.3
    no_coupon = frame["coupon"] == "None"
    assert (frame.loc[no_coupon, "upgrade"] == "None").mean() > (frame.loc[~no_coupon, "upgrade"] == "None").mean()
    # The trap: pandas' defaults read the literal as missing.
    assert pd.read_csv(tmp_path / "none_category.csv")["upgrade"].isna().sum() == (frame["upgrade"] == "None").sum()


def test_rare_class_has_one_class_with_two_rows(tmp_path: Path) -> None:
    counts = _read("rare_class", tmp_path)["label"].value_counts()
    assert counts.min() == 2 and (counts == 2).sum() == 1
    assert counts.drop(counts.idxmin()).min() >= 90


def test_small_has_60_rows() -> None:
    header, rows = generate("small")
    assert header[-1] == DATASETS["small"].target and len(rows) == 60


def test_an_unknown_name_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="dates"):
        write_dataset("nope", tmp_path)


def test_rare_class_rows_sit_where_the_default_split_puts_one_in_test_and_one_in_train(tmp_path: Path) -> None:
    frame = _read("rare_class", tmp_path)
    order = np.random.default_rng(42).permutation(len(frame))  # Preprocess's plain split, seed 42: test first
    test, train = order[: int(0.2 * len(frame))], order[int(0.4 * len(frame)) :]
    delta = set(frame.index[frame["label"] == "delta"])
    assert len(delta & set(test)) == 1 and len(delta & set(train)) == 1
