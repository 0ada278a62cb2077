"""Column roles: each role inferred from the values with a reason, overridden by the input, and the rules
for classes and problem type (pipeline_core/classes.py). Pure functions: no AWS."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from pipeline_core.classes import MERGED_LABEL, min_rows_per_class, split_sizes
from pipeline_core.errors import DataValidationError
from pipeline_core.models import ColumnProfile, DataProfile
from pipeline_core.stages.column_roles import read_values
from pipeline_core.stages.data_validation import Limits, load_table, profile_table
from pipeline_core.stages.validate_input import build_run_config

N = 60


def profile_csv(frame: pd.DataFrame, **given: Any) -> DataProfile:
    table = load_table(frame.to_csv(index=False).encode(), "csv", Limits())
    config = build_run_config({"dataset": "s3://b/data.csv", **given}, "run", "b", "stepml-test")
    return profile_table(table, config)


def with_target(**columns: Any) -> pd.DataFrame:
    """The given columns and a balanced two-class target ``y`` (last), N rows."""
    frame = pd.DataFrame(columns)
    frame["y"] = ["a" if i % 2 else "b" for i in range(len(frame))]
    return frame


def column(result: DataProfile, name: str) -> ColumnProfile:
    return next(c for c in result.columns if c.name == name)


def values(frame: pd.DataFrame, **given: Any) -> tuple[DataProfile, pd.DataFrame]:
    table = load_table(frame.to_csv(index=False).encode(), "csv", Limits())
    config = build_run_config({"dataset": "s3://b/data.csv", **given}, "run", "b", "stepml-test")
    result = profile_table(table, config)
    return result, read_values(table.frame, result.columns)


# --------------------------------------------------------------------------- numbers


def test_thousands_separators_are_numbers_and_currency_is_not() -> None:
    grouped = ["1,234", "12,345.6", "-1,000", "7", "999", "2,000,000"] * 10
    frame = with_target(
        price=grouped,
        dollars=[f"${v}" for v in grouped],
        odd=["1,23", "12,3456", "1,234"] * 20,  # not groups of three digits
    )
    result, read = values(frame)

    assert (column(result, "price").role, column(result, "price").dtype) == ("numeric", "numeric")
    assert "thousands separators, e.g. '1,234'" in column(result, "price").reason
    assert list(pd.to_numeric(read["price"][:6])) == [1234, 12345.6, -1000, 7, 999, 2000000]
    assert column(result, "dollars").role == "categorical"
    assert column(result, "odd").role == "categorical"


def test_years_stay_numeric() -> None:
    result = profile_csv(with_target(year=[1999 + i % 22 for i in range(N)]))
    assert column(result, "year").role == "numeric"


# --------------------------------------------------------------------------- dates and times


def test_iso_dates_us_dates_and_date_times_are_datetime_written_as_iso() -> None:
    days = pd.date_range("2012-01-01", periods=N, freq="D")
    frame = with_target(
        iso=days.strftime("%Y-%m-%d"),
        us=days.strftime("%m/%d/%Y"),
        european=days.strftime("%d/%m/%Y"),
        stamp=(days + pd.Timedelta(minutes=13 * 60 + 45)).strftime("%Y-%m-%d %H:%M"),
    )
    result, read = values(frame)

    roles = {c.name: (c.role, c.format) for c in result.columns}
    assert roles["iso"] == ("datetime", "%Y-%m-%d")
    assert roles["us"] == ("datetime", "%m/%d/%Y")
    assert roles["european"] == ("datetime", "%d/%m/%Y")  # days past 12 decide it
    assert roles["stamp"] == ("datetime", "%Y-%m-%d %H:%M")
    assert read.loc[30, "us"] == read.loc[30, "iso"] == read.loc[30, "european"] == "2012-01-31"
    assert read.loc[30, "stamp"] == "2012-01-31T13:45:00"
    assert result.feature_columns == ["iso", "us", "european", "stamp"]


def test_times_with_an_offset_are_written_in_utc() -> None:
    stamps = [f"2024-03-{1 + i % 28:02d}T08:30:00{'Z' if i % 2 else '+02:00'}" for i in range(N)]
    result, read = values(with_target(seen=stamps))

    assert (column(result, "seen").role, column(result, "seen").format) == ("datetime", "%Y-%m-%dT%H:%M:%S%z")
    assert list(read["seen"][:2]) == ["2024-03-01T06:30:00Z", "2024-03-02T08:30:00Z"]


def test_a_column_of_dates_needs_ninety_percent_readable_with_one_format() -> None:
    days = list(pd.date_range("2012-01-01", periods=N, freq="D").strftime("%Y-%m-%d"))
    mostly = [*days[:57], "soon", "later", "never"]  # 95%: datetime, the rest read as missing
    half = days[:30] + [f"v{i % 3}" for i in range(30)]
    mixed = days[:30] + list(pd.date_range("2013-02-13", periods=30).strftime("%m/%d/%Y"))  # two formats
    result, read = values(with_target(mostly=mostly, half=half, mixed=mixed))

    assert column(result, "mostly").role == "datetime"
    assert "the other 3 are read as missing" in column(result, "mostly").reason
    assert column(result, "mostly").missing == 3 and read["mostly"].isna().sum() == 3
    assert column(result, "half").role == "categorical"
    assert column(result, "mixed").role == "identifier"  # 60 distinct texts: no one format reads 90%


# --------------------------------------------------------------------------- text, identifiers, constants


def test_free_text_is_text_and_repeated_phrases_are_categories() -> None:
    rng = np.random.default_rng(0)
    words = ["good", "bad", "service", "food", "slow", "friendly", "cold", "great", "price", "again"]
    reviews = [" ".join(rng.choice(words, size=6)) for _ in range(N)]
    phrases = ["Not in universe", "Self employed not incorporated", "Private sector job"] * (N // 3)
    result = profile_csv(with_target(review=reviews, work=phrases))

    assert column(result, "review").role == "text"
    assert column(result, "review").reason.startswith("free text: ")
    assert column(result, "work").role == "categorical"


def test_names_of_people_are_text_and_codes_are_identifiers() -> None:
    """A full name has several words (titles like 'Mr.' carry signal: text); a two-word name or a code is
    a different value per row with nothing to generalise from: identifier."""
    titles = ["Mr.", "Mrs.", "Miss", "Master"]
    full = [f"Person{i}, {titles[i % 4]} Given{i} Middle" for i in range(N)]
    short = [f"Given{i} Family{i}" for i in range(N)]
    codes = [f"C-{i:04d}" for i in range(N)]
    result = profile_csv(with_target(Name=full, short_name=short, code=codes))

    assert column(result, "Name").role == "text"
    assert column(result, "short_name").role == "identifier"
    assert column(result, "code").role == "identifier"
    assert "60 distinct values in 60 non-empty rows (e.g. 'C-0000')" in column(result, "code").reason
    assert result.excluded_columns["code"].startswith("identifier: ")
    assert "code" not in result.feature_columns and "Name" in result.feature_columns


def test_numeric_identifiers_need_an_id_name_or_row_numbers_and_floats_never_are() -> None:
    rng = np.random.default_rng(1)
    shuffled = rng.permutation(np.arange(100, 100 + N))
    frame = with_target(
        PassengerId=shuffled,
        customer_id=shuffled * 7,
        rownames=np.arange(1, N + 1),
        count=shuffled,  # distinct whole numbers without an id-like name: a number
        t=np.arange(1, N + 1),  # the row numbers, but named like a feature (a trend): a number
        measure=rng.normal(size=N),  # every value distinct, but a float is a measurement
    )
    result = profile_csv(frame)

    roles = {c.name: c.role for c in result.columns}
    assert roles == {
        "PassengerId": "identifier",
        "customer_id": "identifier",
        "rownames": "identifier",
        "count": "numeric",
        "t": "numeric",
        "measure": "numeric",
        "y": "target",
    }
    assert "named like an identifier" in column(result, "PassengerId").reason
    assert column(result, "rownames").reason == "numbers the rows 1..60 in file order"


def test_constant_and_empty_columns_are_left_out_but_one_value_with_gaps_is_kept() -> None:
    result = profile_csv(
        with_target(
            same=["x"] * N,
            empty=[""] * N,
            flag=["yes" if i % 3 else "" for i in range(N)],  # present or not: that is information
        )
    )

    assert (column(result, "same").role, column(result, "same").reason) == ("constant", "one value 'x' in all 60 rows")
    assert (column(result, "empty").role, column(result, "empty").reason) == ("constant", "empty in all 60 rows")
    assert column(result, "flag").role == "categorical"
    assert result.feature_columns == ["flag"]
    assert set(result.excluded_columns) == {"same", "empty"}


def test_booleans() -> None:
    result, read = values(with_target(paid=["True", "false", "TRUE", ""] * (N // 4)))
    assert column(result, "paid").role == "boolean"
    assert list(read["paid"][:4]) == ["true", "false", "true", None]


# --------------------------------------------------------------------------- missing values


def test_none_and_na_are_missing_in_typed_columns_and_values_in_text_columns() -> None:
    frame = with_target(
        amount=["None", "NA", "?", *[str(i) for i in range(N - 3)]],
        when=["NA", *pd.date_range("2020-01-01", periods=N - 1).strftime("%Y-%m-%d")],
        smoker=["None", "NA", "", "null", *(["Heavy", "Light", "None"] * 20)][:N],
    )
    result, read = values(frame)

    assert (column(result, "amount").role, column(result, "amount").missing) == ("numeric", 3)
    assert (column(result, "when").role, column(result, "when").missing) == ("datetime", 1)
    assert (column(result, "smoker").role, column(result, "smoker").missing) == ("categorical", 2)
    assert list(read["smoker"][:2]) == ["None", "NA"] and read["smoker"][2:4].isna().all()


# --------------------------------------------------------------------------- the input's overrides


def test_roles_and_exclusions_from_the_input() -> None:
    frame = with_target(
        zip=[f"{2000 + i % 9:05d}" for i in range(N)],
        answer=["yes", "no"] * (N // 2),
        notes=[f"note {i}" for i in range(N)],
        day=pd.date_range("2020-01-01", periods=N).strftime("%Y-%m-%d"),
    )
    result, read = values(
        frame,
        column_roles={"zip": "categorical", "answer": "boolean", "day": "text"},
        exclude_columns=["notes"],
    )

    zip_code = column(result, "zip")
    assert (zip_code.role, zip_code.dtype, zip_code.chosen_by, zip_code.reason) == (
        "categorical",
        "categorical",
        "input",
        "given in the input (inferred: numeric)",
    )
    assert read.loc[0, "zip"] == "02000"  # kept as text, not the number 2000
    assert list(read["answer"][:2]) == ["true", "false"]
    assert column(result, "day").role == "text"
    assert column(result, "notes").role == "excluded"
    assert result.excluded_columns["notes"].startswith("excluded: excluded in the input")
    assert result.feature_columns == ["zip", "answer", "day"]


def test_unknown_names_are_rejected_with_a_suggestion() -> None:
    frame = with_target(sepal_length=[1.0] * N, colour=["r", "g"] * (N // 2))
    with pytest.raises(DataValidationError) as caught:
        profile_csv(frame, column_roles={"sepal_lenght": "numeric"}, exclude_columns=["color", "zzz"])
    message = str(caught.value)
    assert "column_roles names 1 column not in the dataset: 'sepal_lenght' (did you mean 'sepal_length'?)" in message
    assert "exclude_columns names 2 columns not in the dataset: 'color' (did you mean 'colour'?), 'zzz'" in message
    assert "The columns are 'sepal_length', 'colour', 'y'" in message


def test_the_target_cannot_be_given_a_role_or_excluded() -> None:
    frame = with_target(x=list(range(N)))
    with pytest.raises(DataValidationError, match="column_roles sets a role for 'y', the target"):
        profile_csv(frame, column_roles={"y": "categorical"})
    with pytest.raises(DataValidationError, match="exclude_columns names 'y', the target"):
        profile_csv(frame, exclude_columns=["y"])


@pytest.mark.parametrize(
    ("role", "fragment"),
    [
        ("numeric", "column_roles sets 'name' to 'numeric', but only 0 of its 60 non-empty values are numbers "),
        ("datetime", "column_roles sets 'name' to 'datetime', but no date format fits"),
        ("boolean", "column_roles sets 'name' to 'boolean', but row 1 (line 2) has 'Ann Lee"),
        ("constant", "column_roles sets 'name' to 'constant', but it has 60 distinct values"),
    ],
)
def test_a_role_that_cannot_apply_names_column_role_and_a_value(role: str, fragment: str) -> None:
    frame = with_target(name=[f"Ann Lee {i}" for i in range(N)])
    with pytest.raises(DataValidationError) as caught:
        profile_csv(frame, column_roles={"name": role})
    assert fragment in str(caught.value)
    if role == "numeric":
        assert "(row 1 (line 2) has 'Ann Lee 0')" in str(caught.value)


def test_excluding_a_dirty_column_gets_past_its_bad_values() -> None:
    dirty = [str(i) for i in range(N)]
    dirty[5] = "oops"
    with pytest.raises(DataValidationError, match="column 'dirty' is numeric in 98% of rows"):
        profile_csv(with_target(dirty=dirty, x=[i % 7 for i in range(N)]))
    result = profile_csv(with_target(dirty=dirty, x=[i % 7 for i in range(N)]), exclude_columns=["dirty"])
    assert result.feature_columns == ["x"]


# --------------------------------------------------------------------------- classes and problem type


def test_min_rows_per_class_is_the_split_rounding() -> None:
    assert min_rows_per_class(0.2, 0.2) == 3
    assert min_rows_per_class(0.05, 0.2) == 11  # round(10 * 0.05) is 0: no test row before 11 rows
    for test_size, validation_size in [(0.2, 0.2), (0.05, 0.05), (0.4, 0.2), (0.1, 0.3)]:
        n = min_rows_per_class(test_size, validation_size)
        train, validation, test = split_sizes(n, test_size, validation_size)
        assert test >= 1 and train + validation >= 2
        train, validation, test = split_sizes(n - 1, test_size, validation_size)
        assert test < 1 or train + validation < 2


def _rare(n_big: int = 40) -> pd.DataFrame:
    labels = ["big"] * n_big + ["mid"] * 20 + ["tiny"] * 2 + ["one"]
    return pd.DataFrame({"x": np.arange(len(labels), dtype=float) / 3, "y": labels})


def test_rare_classes_error_names_them_by_label_with_counts() -> None:
    with pytest.raises(DataValidationError) as caught:
        profile_csv(_rare())
    message = str(caught.value)
    assert "target 'y': 2 of 4 classes have fewer than 3 rows: 'tiny' (2 rows: row 61 (line 62), row 62" in message
    assert "'one' (1 row: row 63 (line 64))" in message
    assert 'Set rare_classes to "drop"' in message and '"merge"' in message


def test_rare_classes_drop_and_merge() -> None:
    dropped = profile_csv(_rare(), rare_classes="drop")
    assert dropped.class_labels == ["big", "mid"]
    assert dropped.problem_type == "binary_classification"
    assert dropped.dropped_rows == {"rare class (dropped)": 3}

    merged = profile_csv(_rare(), rare_classes="merge")
    assert merged.class_labels == [MERGED_LABEL, "big", "mid"]
    assert merged.merged_classes == {"tiny": 2, "one": 1}
    assert merged.dropped_rows == {}


def test_merging_numeric_labels_orders_them_as_text() -> None:
    labels = [0] * 30 + [1] * 30 + [2] * 2 + [3]
    result = profile_csv(pd.DataFrame({"x": np.arange(63) / 2, "y": labels}), rare_classes="merge")
    assert result.class_labels == [MERGED_LABEL, "0", "1"]


@pytest.mark.parametrize(
    ("target", "problem_type", "fragment"),
    [
        ([i % 13 for i in range(N)], "regression", "non-negative integers with 13 distinct values (more than 10"),
        ([i % 5 + 1 for i in range(N)], "multiclass_classification", "with 5 distinct values (at most 10"),
        ([i % 15 - 7 for i in range(N)], "multiclass_classification", "with 15 distinct values"),
        ([i % 2 for i in range(N)], "binary_classification", "with 2 distinct values, so it is binary"),
        ([i / 7 for i in range(N)], "regression", "non-integer values"),
    ],
)
def test_problem_type_inference_says_which_rule_fired(target: list[Any], problem_type: str, fragment: str) -> None:
    result = profile_csv(pd.DataFrame({"x": np.arange(N) * 1.5, "y": target}))
    assert result.problem_type == problem_type
    assert fragment in result.problem_type_reason


@pytest.mark.parametrize(
    ("target", "given"),
    [
        ([f"user-{i}" for i in range(N)], {}),  # every row its own class
        (list(np.random.default_rng(2).permutation(N)), {"target": "id"}),  # an ID column as the target
    ],
)
def test_an_identifier_like_target_is_rejected(target: list[Any], given: dict[str, Any]) -> None:
    frame = pd.DataFrame({"x": np.arange(N) * 1.5, "y": target})
    if given:
        frame = frame.rename(columns={"y": "id"})
    with pytest.raises(DataValidationError, match=r"looks like an identifier .* Choose another target column"):
        profile_csv(frame, **given)


def test_a_dataset_with_no_feature_left_is_rejected_saying_why() -> None:
    frame = with_target(code=[f"C-{i:04d}" for i in range(N)], same=["x"] * N)
    with pytest.raises(DataValidationError) as caught:
        profile_csv(frame)
    message = str(caught.value)
    assert "no column is left to learn from: besides the target 'y', every column is left out" in message
    assert "'code': identifier (60 distinct values" in message and "'same': constant (one value 'x'" in message


def test_a_profile_too_large_for_the_state_is_rejected_naming_the_column_count() -> None:
    rng = np.random.default_rng(3)
    wide = pd.DataFrame({f"feature_number_{i}": rng.normal(size=30).round(2) for i in range(1000)})
    wide["y"] = ["a", "b"] * 15
    with pytest.raises(DataValidationError, match=r"the dataset has 1001 columns: their profile .* is \d+ bytes"):
        profile_csv(wide)
    assert len(profile_csv(wide.iloc[:, -600:]).model_dump_json()) < 150_000
