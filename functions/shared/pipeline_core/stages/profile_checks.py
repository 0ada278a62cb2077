"""The checks and the profile both ValidateData paths end with (the whole table, and the streamed state):
the target's choice and presence, the columns left to learn from, the split's row counts, the profile's size.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Literal

from pipeline_core.classes import ProblemTypeChoice, split_sizes
from pipeline_core.errors import DataValidationError
from pipeline_core.models import ColumnProfile, DataProfile, ProblemType, RunConfig
from pipeline_core.stages.column_roles import FEATURE_ROLES
from pipeline_core.stages.dataset_file import quote_list

MIN_ROWS_PER_SPLIT = 5
EXCLUDED_ROLES = ("identifier", "constant", "excluded")
# keys of DataProfile.dropped_rows / PreprocessResult.dropped_rows_by_reason
EMPTY_TARGET = "empty target"
RARE_DROPPED = "rare class (dropped)"
MAX_EXAMPLES = 5
# $.data must leave room in the 256 KiB state for $.prep (which repeats the column names) and the rest.
MAX_PROFILE_BYTES = 150_000


def failure_message(problems: Sequence[str]) -> str:
    """The schema failures of every column, and what to do."""
    return (
        "; ".join(problems)
        + ". Fix or empty those cells (empty, NA and ? are read as missing values), or leave the column out "
        "with exclude_columns"
    )


def rows_needed(test_size: float, validation_size: float, minimum: int = MIN_ROWS_PER_SPLIT) -> int:
    """The smallest row count whose split gives every part at least ``minimum`` rows."""
    n = 3 * minimum
    while min(split_sizes(n, test_size, validation_size)) < minimum:
        n += 1
    return n


def choose_target(config: RunConfig, names: list[str]) -> tuple[str, Literal["input", "last_column"]]:
    if config.target is None:
        return names[-1], "last_column"
    if config.target in names:
        return config.target, "input"
    close = difflib.get_close_matches(config.target, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataValidationError(
        f"target column {config.target!r} is not in the dataset{hint}; its columns are {quote_list(names)}"
    )


def target_reason(target_chosen_by: str) -> str:
    return "the target, named in the input" if target_chosen_by == "input" else "the target, the last column"


def check_features_left(columns: Sequence[ColumnProfile], target: str) -> None:
    if not any(c.role in FEATURE_ROLES for c in columns):
        unused = "; ".join(f"{c.name!r}: {c.role} ({c.reason})" for c in columns if c.role != "target")
        raise DataValidationError(
            f"no column is left to learn from: besides the target {target!r}, every column is left out "
            f"({unused[:1000]}). Give a column a role with column_roles, or check the target"
        )


def check_target_present(present: int, n_rows: int, target: str, target_chosen_by: str) -> dict[str, int]:
    """The rows dropped for an empty target; DataValidationError when every row's target is empty."""
    if present == 0:
        chosen = "the last column" if target_chosen_by == "last_column" else "named in the input"
        raise DataValidationError(f"target column {target!r} ({chosen}) is empty in all {n_rows} rows")
    return {EMPTY_TARGET: n_rows - present} if present < n_rows else {}


def finish_profile(
    config: RunConfig,
    n_rows: int,
    names: Sequence[str],
    target: str,
    target_chosen_by: Literal["input", "last_column"],
    columns: Sequence[ColumnProfile],
    choice: ProblemTypeChoice,
    problem_type: ProblemType,
    class_labels: list[str],
    dropped: dict[str, int],
    merged: dict[str, int],
    present: int,
) -> DataProfile:
    """The split check on the rows left, and the profile (whole-table and streamed paths alike)."""
    sizes = split_sizes(present, config.test_size, config.validation_size)
    if min(sizes) < MIN_ROWS_PER_SPLIT:
        left_out = []
        if EMPTY_TARGET in dropped:
            left_out.append(f"{dropped[EMPTY_TARGET]} of {n_rows} rows have an empty target and are not used")
        if RARE_DROPPED in dropped:
            left_out.append(f'{dropped[RARE_DROPPED]} rows of rare classes are dropped (rare_classes "drop")')
        not_used = f" ({'; '.join(left_out)})" if left_out else ""
        raise DataValidationError(
            f"not enough rows: {present} rows with a target{not_used}; the split (test_size "
            f"{config.test_size:g}, validation_size {config.validation_size:g}) gives train {sizes[0]}, "
            f"validation {sizes[1]}, test {sizes[2]} rows, and each needs at least {MIN_ROWS_PER_SPLIT}: "
            f"at least {rows_needed(config.test_size, config.validation_size)} rows are needed"
        )
    profile = DataProfile(
        n_rows=n_rows,
        n_columns=len(names),
        target=target,
        target_chosen_by=target_chosen_by,
        problem_type=problem_type,
        problem_type_chosen_by=choice.chosen_by,
        problem_type_reason=choice.reason,
        class_labels=class_labels,
        feature_columns=[c.name for c in columns if c.role in FEATURE_ROLES],
        columns=list(columns),
        excluded_columns={c.name: f"{c.role}: {c.reason}" for c in columns if c.role in EXCLUDED_ROLES},
        dropped_rows=dropped,
        merged_classes=merged,
    )
    _check_profile_fits_the_state(profile)
    return profile


def _check_profile_fits_the_state(profile: DataProfile) -> None:
    """A profile too large for the execution's state would fail later as States.DataLimitExceeded, a
    message that names nothing; a role and a reason per column make it grow with the column count."""
    size = len(profile.model_dump_json())
    if size > MAX_PROFILE_BYTES:
        raise DataValidationError(
            f"the dataset has {profile.n_columns} columns: their profile (a role and a reason per column) is "
            f"{size} bytes, more than the {MAX_PROFILE_BYTES} bytes the state machine can carry beside the rest "
            "of the run's state (Step Functions' limit is 256 KiB); keep fewer columns in the file"
        )
