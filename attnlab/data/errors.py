"""The error every data path raises, and how its messages name the offending rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

MAX_SHOWN = 5


class DataError(ValueError):
    """Raised when input data cannot be turned into valid events.

    The message always names the source, the file (when there is one), the column,
    the first offending rows and a suggested fix.
    """


def where(source: str, file: str | Path | None) -> str:
    return f"[{source}] {file}" if file is not None else f"[{source}] <in-memory frame>"


def show(df_index: pd.Index, values: pd.Series, mask: np.ndarray, row_label: str) -> str:
    pos = np.flatnonzero(mask)[:MAX_SHOWN]
    shown = ", ".join(f"{row_label} {df_index[p]} ({values.iloc[p]!r})" for p in pos)
    more = int(mask.sum()) - len(pos)
    return shown + (f", ... and {more:,} more" if more > 0 else "")


def fail(source, file, column, mask, values, index, row_label, problem, fix) -> None:
    n = int(mask.sum())
    raise DataError(
        f"{where(source, file)}: column '{column}': {n:,} {row_label}(s) {problem}. "
        f"First offending: {show(index, values, mask, row_label)}. {fix}"
    )
