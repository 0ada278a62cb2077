"""The plain-number shortcut (``numeric_pieces``) leaves the same state as the general path, piece by piece.

A numeric column is fed in pieces both ways: through :func:`feed_plain_numbers` where it accepts the piece and
``feed_codes`` otherwise, and through ``feed_codes`` alone; the states' JSON must be equal after every piece,
including pieces the shortcut must decline (a missing-value token, "NA", a thousands separator, "inf", "nan",
a number too large for a float, a word) and the pieces after them.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from pipeline_core.stages.numeric_pieces import feed_plain_numbers
from pipeline_core.stages.profile_accumulator import ColumnState
from pipeline_core.stages.validate_stream import _normalized_codes

FIRST = ["1.5", "2", "", "-3.25", "2", "0", "1e5", "+4", ".5", "00012"]  # settles the column as numeric
LATER = [
    ["7", "", "7", "-0.001", "1.", "8"],
    ["", "", ""],
    ["3", "?", "4"],
    ["3", "NA", "4"],
    ["1,000", "2"],
    ["5", "inf"],
    ["NaN", "6"],
    ["1e400", "2"],
    ["9", "ten"],
    ["10", "11", "12"],
]


def _general(state: ColumnState, piece: list[str], row0: int) -> None:
    codes, texts, lowered = _normalized_codes(pa.array(piece, type=pa.string()), strip=False)
    state.feed_codes(codes, texts, row0, lowered)


@pytest.mark.parametrize("stop", range(len(LATER)))
@pytest.mark.parametrize("track_numbers", [False, True])
def test_the_shortcut_leaves_the_general_paths_state(stop: int, track_numbers: bool) -> None:
    """Feed FIRST, then LATER[stop] and the pieces after it, both ways; the states stay equal."""
    both, general = ColumnState(track_numbers=track_numbers), ColumnState(track_numbers=track_numbers)
    row0 = 0
    accepted = []
    for piece in [FIRST, *LATER[stop:]]:
        took = feed_plain_numbers(both, pa.array(piece, type=pa.string()), row0)
        if not took:
            _general(both, piece, row0)
        accepted.append(took)
        _general(general, piece, row0)
        row0 += len(piece)
        assert json.dumps(both.to_json()) == json.dumps(general.to_json())
    assert accepted[0] is False  # the first piece settles the column; the shortcut never takes it


def test_the_shortcut_takes_plain_numbers_once_settled_and_declines_the_rest() -> None:
    state = ColumnState()
    _general(state, FIRST, 0)
    assert feed_plain_numbers(state, pa.array(LATER[0], type=pa.string()), len(FIRST))
    assert feed_plain_numbers(state, pa.array(LATER[1], type=pa.string()), 20)  # all missing
    for piece in LATER[2:9]:
        assert not feed_plain_numbers(state, pa.array(piece, type=pa.string()), 30)
