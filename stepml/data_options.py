"""The command-line options of ``run`` and ``start`` that say how to read the dataset: column roles, columns to
leave out and what to do with rare classes. They become the execution input's ``column_roles``,
``exclude_columns`` and ``rare_classes``; ValidateData checks the column names against the file."""

from __future__ import annotations

import argparse
from typing import Any

# pipeline_core.models.InputRole and RareClasses as plain tuples: the CLI builds its parser without importing
# pydantic (tests/unit/test_data_options.py checks they agree)
ROLES = ("numeric", "categorical", "boolean", "datetime", "text", "identifier", "constant")
RARE_CLASS_POLICIES = ("error", "drop", "merge")


class DataOptionError(ValueError):
    """A --column-role or --exclude value that cannot be right whatever the dataset holds."""


def add_data_options(parser: Any) -> None:
    """``--column-role NAME=ROLE`` (repeatable), ``--exclude NAME`` (repeatable) and ``--rare-classes``."""
    parser.add_argument(
        "--column-role",
        action="append",
        metavar="NAME=ROLE",
        help=f"read column NAME as ROLE ({', '.join(ROLES)}) instead of the inferred role; repeatable",
    )
    parser.add_argument(
        "--exclude", action="append", metavar="NAME", help="leave column NAME out of training; repeatable"
    )
    parser.add_argument(
        "--rare-classes",
        choices=RARE_CLASS_POLICIES,
        help="classes with too few rows: error (default: stop and name them), drop their rows, or merge "
        "them into one class '(other)'",
    )


def parse_column_roles(specs: list[str] | None) -> dict[str, str]:
    """``{"zip": "categorical"}`` from ``["zip=categorical"]``; a malformed spec or unknown role is an error."""
    roles: dict[str, str] = {}
    for spec in specs or []:
        name, sep, role = spec.rpartition("=")
        name, role = name.strip(), role.strip()
        if not sep or not name:
            raise DataOptionError(f"--column-role {spec!r}: expected NAME=ROLE, e.g. zip=categorical")
        if role not in ROLES:
            raise DataOptionError(f"--column-role {spec!r}: role {role!r} is not one of {', '.join(ROLES)}")
        if name in roles and roles[name] != role:
            raise DataOptionError(f"--column-role gives column {name!r} two roles: {roles[name]} and {role}")
        roles[name] = role
    return roles


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    """The execution-input fields the data options set (nothing for an option not given)."""
    fields: dict[str, Any] = {}
    roles = parse_column_roles(getattr(args, "column_role", None))
    if roles:
        fields["column_roles"] = roles
    excluded = [name.strip() for name in getattr(args, "exclude", None) or []]
    if any(not name for name in excluded):
        raise DataOptionError("--exclude needs a column name")
    if excluded:
        fields["exclude_columns"] = list(dict.fromkeys(excluded))
    if getattr(args, "rare_classes", None):
        fields["rare_classes"] = args.rare_classes
    return fields
