"""The streamed ValidateData gives the whole-table profile and messages, and its state merges exactly.

Every profile and every error of the column-role tests (``tests/unit/test_column_roles.py``, which call the
whole-table path) and of the bad-input corpus is computed both ways, at several chunk sizes, and compared;
the state of a file split in parts, each part's state through JSON, merges into the one-pass state.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pytest
from pipeline_core.errors import DataValidationError
from pipeline_core.models import DataProfile, RunConfig
from pipeline_core.stages import profile_accumulator
from pipeline_core.stages.csv_chunks import ChunkError
from pipeline_core.stages.data_validation import Limits, load_table, profile_table
from pipeline_core.stages.dataset_file import normalize
from pipeline_core.stages.profile_accumulator import ProfileState
from pipeline_core.stages.profile_from_state import NeedsWholeTable, profile_state
from pipeline_core.stages.validate_input import build_run_config
from pipeline_core.stages.validate_stream import LineFinder, accumulate, read_header, stream_profile

from tests.unit import test_column_roles

BAD_INPUTS = Path(__file__).resolve().parents[1] / "data" / "bad_inputs"
CHUNKS = (200, 1 << 20)  # bytes of CSV per piece: a row or a few, the whole file


def _outcome(run: Callable[[], DataProfile]) -> str:
    try:
        return run().model_dump_json()
    except DataValidationError as error:
        return f"error: {error}"


class Compared:
    """Runs the streamed path beside the whole-table one and records what differs and what fell back."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.differences: list[str] = []
        self.fallbacks: list[str] = []
        self.streamed = 0

    def check(self, data: bytes, config: RunConfig, label: str) -> None:
        whole = _outcome(lambda: profile_table(load_table(data, "csv", Limits()), config))
        path = self.work / "data.csv"
        path.write_bytes(data)
        for chunk in sorted({max(c, len(data) // 6) for c in CHUNKS}):  # at most ~6 pieces: wide files too
            try:
                limits = Limits(chunk_bytes=chunk)
                streamed = _outcome(lambda: stream_profile(path, config, limits))  # noqa: B023
            except (ChunkError, NeedsWholeTable) as reason:
                self.fallbacks.append(f"{label}: {reason}")
                return
            self.streamed += 1
            if streamed != whole:
                self.differences.append(f"{label} ({chunk}-byte chunks):\n whole:    {whole}\n streamed: {streamed}")


def _calls(test: Callable[..., Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The test's calls: one per parameter set of its ``parametrize`` marks (at most one mark here)."""
    marks = [m for m in getattr(test, "pytestmark", []) if m.name == "parametrize"]
    if not marks:
        yield test.__name__, {}
        return
    names, values = marks[0].args[0], marks[0].args[1]
    names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    for i, value in enumerate(values):
        value = value.values if hasattr(value, "values") else value
        args = dict(zip(names, value if len(names) > 1 else [value], strict=True))
        yield f"{test.__name__}[{i}]", args


def test_the_column_role_cases_give_the_same_profile_and_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared = Compared(tmp_path)
    loaded: dict[int, bytes] = {}
    current = [""]

    def load(data: bytes, file_format: Literal["csv", "parquet"], limits: Limits) -> Any:
        table = load_table(data, file_format, limits)
        loaded[id(table)] = data
        return table

    def both(table: Any, config: RunConfig) -> DataProfile:
        compared.check(loaded[id(table)], config, current[0])
        return profile_table(table, config)

    monkeypatch.setattr(test_column_roles, "load_table", load)
    monkeypatch.setattr(test_column_roles, "profile_table", both)
    tests = [f for n, f in inspect.getmembers(test_column_roles, inspect.isfunction) if n.startswith("test_")]
    for test in tests:
        for label, args in _calls(test):
            current[0] = label
            test(**args)

    assert not compared.differences, "\n".join(compared.differences)
    # only the messages the state cannot give read the table whole (docs/data-scale.md)
    assert all("'datetime' and no format reads it" in reason for reason in compared.fallbacks), compared.fallbacks
    assert compared.streamed > 40


CORPUS_CONFIG = {"missing_target.csv": {"target": "label"}}
# structure the streamed reader leaves to the whole-file reader, which gives the precise message
WHOLE_FILE = {
    "empty.csv",
    "binary_garbage.csv",
    "gzip_named_csv.csv",
    "latin1.csv",
    "ragged_rows.csv",
    "unclosed_quote.csv",
    "header_only.csv",
    "duplicate_columns.csv",
    "empty_column_name.csv",
    "no_header.csv",
    "semicolon.csv",
}


@pytest.mark.parametrize("name", sorted(p.name for p in BAD_INPUTS.glob("*.csv")))
def test_the_bad_input_corpus_gives_the_same_messages(tmp_path: Path, name: str) -> None:
    compared = Compared(tmp_path)
    given = {"dataset": "s3://b/data.csv", **CORPUS_CONFIG.get(name, {})}
    compared.check((BAD_INPUTS / name).read_bytes(), build_run_config(given, "run", "b", "stepml-test"), name)

    assert not compared.differences, "\n".join(compared.differences)
    assert bool(compared.fallbacks) == (name in WHOLE_FILE), compared.fallbacks


def _tricky(rows: int = 400, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    numbers = np.round(rng.normal(size=rows), 3).astype(str)
    numbers[rng.random(rows) < 0.05] = "None"
    return pd.DataFrame(
        {
            "row_id": np.arange(1, rows + 1),
            "x": numbers,
            "price": rng.choice(["1,234", "12,345.6", "7", "2,000,000", ""], rows),
            "when": rng.choice(["2024-01-05", "2024-02-29", "05/01/2024", "?"], rows),
            "flag": rng.choice(["true", "False", "NA"], rows),
            "note": [f'comment, {i} with "quotes"\nand a line' if i % 7 == 0 else f"w{i % 13}" for i in range(rows)],
            "y": rng.choice(["a", "b", "c", "None"], rows),
        }
    )


def _state(frame: pd.DataFrame) -> ProfileState:
    state = ProfileState(names=list(frame.columns), target="y")
    for start in range(0, len(frame), 37):
        state.feed(normalize(frame.iloc[start : start + 37].astype(str).reset_index(drop=True)))
    return state


def test_merged_states_of_parts_are_the_one_pass_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile_accumulator, "SAMPLE_SIZE", 50)  # the samples overflow: bottom-k merges too
    frame = _tricky()
    one_pass = _state(frame)
    parts = [frame.iloc[a:b].reset_index(drop=True) for a, b in ((0, 90), (90, 91), (91, 250), (250, 400))]
    states = [ProfileState.from_json(_state(part).to_json()) for part in parts]

    left_first = states[0].merge(states[1]).merge(states[2]).merge(states[3])
    right_first = states[0].merge(states[1].merge(states[2].merge(states[3])))

    assert one_pass.columns["x"].values.truncated  # the bottom-k sample is exercised
    assert left_first.to_json() == one_pass.to_json()
    assert right_first.to_json() == one_pass.to_json()
    config = build_run_config({"dataset": "s3://b/d.csv", "target": "y"}, "run", "b", "stepml-test")
    where = LineFinder(tmp_path / "absent.csv")
    assert profile_state(left_first, config, "input", where) == profile_state(one_pass, config, "input", where)


def test_a_tricky_file_streams_to_the_whole_table_profile(tmp_path: Path) -> None:
    data = _tricky(3000).to_csv(index=False).encode()
    path = tmp_path / "data.csv"
    path.write_bytes(data)
    config = build_run_config({"dataset": "s3://b/d.csv"}, "run", "b", "stepml-test")
    whole = profile_table(load_table(data, "csv", Limits()), config)

    for chunk in (500, 4096, 1 << 20):
        assert stream_profile(path, config, Limits(chunk_bytes=chunk)) == whole
    state = accumulate(path, read_header(path, Limits()), "y", Limits(chunk_bytes=4096))
    assert ProfileState.from_json(state.to_json()).to_json() == state.to_json()
