"""A piece of the CSV read with each column's role in pyarrow kernels: what
:func:`~pipeline_core.stages.data_validation.apply_schema` gives on the normalized piece, without pandas'
per-value string methods or pandera's coercion for the columns that are plain.

Per column (features and target only: the columns Preprocess writes):

* the text as :func:`~pipeline_core.stages.dataset_file.normalize` reads it: stripped (when the piece has
  whitespace at all), the ``STRICT_MISSING`` tokens missing;
* a used numeric column: "None"/"NA" missing too, the rest cast to float64 by pyarrow. pyarrow's cast reads
  the plain decimal numbers (and "inf"/"nan" spellings) and fails on anything else; a plain decimal is read
  to the same float by pyarrow and by the float coercion pandera makes (both correctly rounded). A column
  with a value the cast refuses (thousands separators, a bad value) or reads as infinite or NaN gives None:
  the caller then takes the pandas path for the piece, whose reading and messages are the reference;
* a categorical or free-text column: the normalized text, as ``read_values`` leaves it;
* any other role (boolean, datetime): ``read_values`` on that column's normalized text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline_core.models import ColumnProfile
from pipeline_core.stages.column_roles import read_values, typed
from pipeline_core.stages.csv_chunks import SOFT_MISSING_TEXTS, STRICT_MISSING_TEXTS

_NULL = pa.scalar(None, type=pa.string())


def _normalized(column: pa.Array, strip: bool) -> tuple[pa.Array, pa.Array]:
    """(text, lowered): the column stripped with the strict missing tokens null, and the same lower-cased."""
    text = pc.utf8_trim_whitespace(column) if strip else column
    lowered = pc.utf8_lower(text)
    return pc.if_else(pc.is_in(lowered, value_set=STRICT_MISSING_TEXTS), _NULL, text), lowered


def _numbers(text: pa.Array, lowered: pa.Array) -> np.ndarray | None:
    """A used numeric column's floats (NaN: missing), or None when the cast is not the whole answer."""
    values = pc.if_else(pc.is_in(lowered, value_set=SOFT_MISSING_TEXTS), _NULL, text)
    try:
        numbers = np.asarray(pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    except pa.ArrowInvalid:
        return None
    if int(np.isnan(numbers).sum()) != values.null_count or np.isinf(numbers).any():
        return None  # "nan"/"inf" read as numbers: the pandas path decides
    return numbers


def piece_values(table: pa.Table, columns: Sequence[ColumnProfile], strip: bool) -> pd.DataFrame | None:
    """The piece's ``columns`` read with their roles (a frame indexed from 0, the dtypes ``apply_schema``
    gives: float64 for numeric columns, pandas' ``str`` for text), or None for the pandas path."""
    index = {name.strip(): i for i, name in enumerate(table.column_names)}
    result: dict[str, pd.Series] = {}
    for profile in columns:
        text, lowered = _normalized(table.column(index[profile.name]).combine_chunks(), strip)
        if typed(profile) and profile.dtype == "numeric" and profile.role != "datetime":
            numbers = _numbers(text, lowered)
            if numbers is None:
                return None
            result[profile.name] = pd.Series(numbers, dtype=np.float64)
            continue
        series = pd.Series(text.to_pandas())
        if typed(profile) and (profile.dtype != "categorical" or profile.role == "datetime"):
            series = read_values(pd.DataFrame({profile.name: series}), [profile])[profile.name]
        result[profile.name] = series
    return pd.DataFrame(result)
