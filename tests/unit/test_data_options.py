"""The data options of ``stepml run``/``start`` become the execution input's column fields."""

from __future__ import annotations

import argparse

import pytest
from pipeline_core.stages.validate_input import parse_input

from stepml.data_options import DataOptionError, add_data_options, data_options


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_data_options(parser)
    return parser.parse_args(list(argv))


def test_options_become_input_fields_that_validate_input_accepts() -> None:
    fields = data_options(
        parse("--column-role", "zip=categorical", "--column-role", "when=datetime", "--exclude", "notes",
              "--exclude", "notes", "--rare-classes", "merge")
    )  # fmt: skip
    assert fields == {
        "column_roles": {"zip": "categorical", "when": "datetime"},
        "exclude_columns": ["notes"],
        "rare_classes": "merge",
    }
    parsed = parse_input({"dataset": "s3://bucket/data.csv", **fields})
    assert parsed.column_roles == {"zip": "categorical", "when": "datetime"}


def test_no_option_sets_no_field() -> None:
    assert data_options(parse()) == {}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("zip", "expected NAME=ROLE"),
        ("=numeric", "expected NAME=ROLE"),
        ("zip=number", "role 'number' is not one of numeric"),
    ],
)
def test_a_malformed_role_is_named(spec: str, message: str) -> None:
    with pytest.raises(DataOptionError, match=message):
        data_options(parse("--column-role", spec))


def test_two_roles_for_one_column_are_refused() -> None:
    with pytest.raises(DataOptionError, match="two roles: numeric and categorical"):
        data_options(parse("--column-role", "zip=numeric", "--column-role", "zip=categorical"))


def test_a_column_name_may_hold_an_equals_sign() -> None:
    assert data_options(parse("--column-role", "a=b=text"))["column_roles"] == {"a=b": "text"}


def test_rare_classes_takes_only_the_three_policies() -> None:
    with pytest.raises(SystemExit):
        parse("--rare-classes", "keep")


def test_run_and_start_options_make_one_input() -> None:
    from stepml.cli import build_parser
    from stepml.run_input import options_input

    common = ["--column-role", "zip=categorical", "--hyperparameter", "max_iter=50", "--rare-classes", "drop"]
    run = options_input(build_parser().parse_args(["run", "--target", "y", *common]), "target")
    start = options_input(build_parser().parse_args(["start", "--target-column", "y", *common]), "target_column")
    expected = {"target": "y", "hyperparameters": {"max_iter": 50}, "column_roles": {"zip": "categorical"}}
    assert run == start == {**expected, "rare_classes": "drop"}


def test_the_clis_names_are_the_input_models() -> None:
    """The CLI keeps plain tuples so building its parser imports no pydantic; they must be the input's own."""
    from typing import get_args

    from pipeline_core.models import InputRole, RareClasses

    from stepml.data_options import RARE_CLASS_POLICIES, ROLES

    assert get_args(InputRole) == ROLES
    assert get_args(RareClasses) == RARE_CLASS_POLICIES
