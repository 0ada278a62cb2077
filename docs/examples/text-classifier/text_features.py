"""The text the classifier reads: the row's text columns joined into one string.

It lives in a module of its own, not in train.py, because the saved model refers to it: train.py runs as
``__main__`` while training, and a pickle that names ``__main__.TextColumns`` could not be loaded for serving.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin


class TextColumns(BaseEstimator, TransformerMixin):
    """Join ``columns`` of a frame into one string per row (missing cells as empty text)."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns

    def fit(self, frame: pd.DataFrame, y: Any = None) -> TextColumns:
        return self

    def transform(self, frame: pd.DataFrame) -> pd.Series:
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"missing text column(s) {missing}; every row needs {self.columns}")
        text = frame[self.columns].fillna("").astype(str)
        return text.apply(lambda row: " ".join(row), axis=1)
