"""Event tables: the validated, repaired output of every data source.

A source (``attnlab.data.sources.<name>``) turns raw files into an :class:`EventData`:
one ``events`` frame in the canonical schema (:mod:`attnlab.data.schema`), side tables
for items and customers, and a :class:`RepairReport` that counts every change made to
the raw data. :func:`validate_events` is the single gate every frame passes through;
it either returns a frame with exactly the canonical dtypes or raises a
:class:`DataError` that names the file, the column, the first offending rows and what
to do about it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from attnlab.data.errors import DataError, fail, where
from attnlab.data.schema import EVENT_COLUMNS, NO_ITEM, REQUIRED_COLUMNS, EventType
from attnlab.data.timestamps import TIME_MAX, TIME_MIN, as_timestamp

__all__ = ["DataError", "EventData", "Repair", "RepairReport", "TIME_MAX", "TIME_MIN",
           "drop_exact_duplicates", "exact_int_ids", "negative_ids", "validate_events"]

@dataclasses.dataclass(frozen=True)
class Repair:
    """One documented repair rule applied to a data set.

    Attributes:
      code: stable machine-readable name, e.g. ``"zero_quantity"``.
      count: number of rows (or entities) the rule touched; 0 means "checked, none".
      message: human sentence including the count.
    """

    code: str
    count: int
    message: str


class RepairReport:
    """Ordered, counted record of every repair a source applied.

    Sources call :meth:`add` for every rule they check, in the order applied, also
    when the count is 0 (so the report documents what was checked). The report is
    printed when data is loaded and stored in ``SequenceStore.meta["repairs"]``.
    """

    def __init__(self, repairs: list[Repair] | None = None) -> None:
        self._repairs: list[Repair] = list(repairs or [])

    def add(self, code: str, count: int, template: str) -> Repair:
        """Records a repair.

        Args:
          code: stable name of the rule.
          count: rows touched.
          template: message; ``{count}`` / ``{count:,}`` are filled in.

        Returns:
          The recorded :class:`Repair`.
        """
        count = int(count)
        repair = Repair(code=code, count=count, message=template.format(count=count))
        self._repairs.append(repair)
        return repair

    def count(self, code: str) -> int:
        """Total count recorded under ``code`` (0 if never recorded)."""
        return sum(r.count for r in self._repairs if r.code == code)

    def codes(self) -> list[str]:
        return [r.code for r in self._repairs]

    def __iter__(self) -> Iterator[Repair]:
        return iter(self._repairs)

    def __len__(self) -> int:
        return len(self._repairs)

    def lines(self) -> list[str]:
        """One human-readable line per repair, in order."""
        return [r.message for r in self._repairs]

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-serialisable form (stored in store meta)."""
        return [dataclasses.asdict(r) for r in self._repairs]

    @classmethod
    def from_list(cls, items: list[dict[str, Any]]) -> "RepairReport":
        return cls([Repair(**item) for item in items])

    def format(self, *, title: str = "repairs") -> str:
        """Multi-line report for printing."""
        if not self._repairs:
            return f"{title}: none"
        body = "\n".join(f"  {i + 1:2d}. {r.message}" for i, r in enumerate(self._repairs))
        return f"{title}:\n{body}"

    def __repr__(self) -> str:
        return f"RepairReport({len(self._repairs)} entries)"


@dataclasses.dataclass(frozen=True)
class EventData:
    """Everything a source produces.

    Attributes:
      events: canonical events (:data:`attnlab.data.schema.EVENT_COLUMNS`, plus
        optional side columns such as ``campaign_id``), one row per event.
      item_features: item side information indexed by ``item_id`` (e.g.
        ``department``, ``brand``); may be empty.
      customer_features: customer side information indexed by ``customer_id``
        (e.g. demographics, synthetic ground truth); may be empty.
      repairs: what was changed, dropped or flagged, counted.
      source: registered source name.
      meta: JSON-serialisable source facts (e.g. the synthetic ground truth).
    """

    events: pd.DataFrame
    item_features: pd.DataFrame
    customer_features: pd.DataFrame
    repairs: RepairReport
    source: str
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def n_events(self) -> int:
        return len(self.events)

    def summary(self) -> dict[str, int]:
        ev = self.events
        return {
            "events": len(ev),
            "customers": int(ev["customer_id"].nunique()),
            "items": int(ev.loc[ev["item_id"] != NO_ITEM, "item_id"].nunique()),
            "baskets": int(ev["basket_id"].nunique()),
        }


_INT_TEXT = r"[+-]?\d+(?:\.0*)?"
_MAX_EXACT_FLOAT = 2.0**53


def exact_int_ids(values: pd.Series) -> tuple[np.ndarray | None, str | None]:
    """Ids as exact ``int64``, or ``(None, reason)`` when they cannot be.

    Never goes through float64 for text: integer strings (``"13085"``, ``"13085.0"``)
    are converted with pandas' integer parser and every value is checked to
    round-trip to its text. ``reason`` says why not: some values are not integers,
    have leading zeros (kept as text keys, e.g. ``"007"``), or do not fit int64.
    Float columns are accepted only when every value is an integer below 2**53 in
    magnitude (larger floats are not exact; ``reason`` starts with ``"float"``).
    ``values`` must have no missing entries.
    """
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return values.to_numpy(dtype=np.int64), None
    if pd.api.types.is_integer_dtype(dtype):
        if pd.api.types.is_unsigned_integer_dtype(dtype) and len(values) and \
                int(values.max()) > np.iinfo(np.int64).max:
            return None, "do not fit int64"
        return values.to_numpy(dtype=np.int64), None
    if pd.api.types.is_float_dtype(dtype):
        arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
        if not (np.isfinite(arr) & (arr == np.floor(arr))).all():
            return None, "are not integers"
        if (np.abs(arr) > _MAX_EXACT_FLOAT).any():
            return None, ("float ids above 2**53 in magnitude (floating point cannot hold "
                          "them exactly, distinct ids may already be merged)")
        return arr.astype(np.int64), None
    text = values.astype(str)
    if not text.str.fullmatch(_INT_TEXT).all():
        return None, "are not integers"
    digits = text.str.replace(r"\.0*$", "", regex=True).str.lstrip("+")
    body = digits.str.lstrip("-")
    if (body.str.len().gt(1) & body.str.startswith("0")).any():
        return None, "have leading zeros (kept as text so '007' and '7' stay distinct)"
    if body.str.len().max() > 19:
        return None, "do not fit int64"
    try:
        num = pd.to_numeric(digits)
    except (ValueError, TypeError, OverflowError):
        return None, "do not fit int64"
    if num.dtype != np.int64:
        return None, "do not fit int64"
    canon = digits.where(~digits.isin(["-0"]), "0")
    if not (num.astype(str).to_numpy() == canon.to_numpy(dtype=object)).all():
        return None, "do not fit int64"  # pragma: no cover -- belt and braces
    return num.to_numpy(dtype=np.int64), None


def _as_int(df, column, *, source, file, row_label, fix, repairs=None) -> np.ndarray:
    col = df[column]
    if pd.api.types.is_integer_dtype(col.dtype) and not col.hasnans:
        ints, reason = exact_int_ids(col)
        if ints is None:
            fail(source, file, column, np.ones(len(col), bool), col, df.index, row_label,
                  reason, fix)
        return ints
    if pd.api.types.is_bool_dtype(col.dtype):
        return col.to_numpy(dtype=np.int64)
    missing = col.isna().to_numpy()
    if missing.any():
        fail(source, file, column, missing, col, df.index, row_label, "are missing", fix)
    if not pd.api.types.is_float_dtype(col.dtype):
        text = col.astype(str)
        col = text.str.strip()
        changed = int((col != text).sum())
        if changed and repairs is not None:  # the tabular source strips (and counts) first
            repairs.add(f"stripped_{column}", changed,
                        f"{column}: {{count:,}} ids had surrounding whitespace, stripped")
    ints, reason = exact_int_ids(col)
    if ints is None:
        if pd.api.types.is_float_dtype(col.dtype):
            arr = col.to_numpy(np.float64)
            bad = ~np.isfinite(arr) | (arr != np.floor(arr)) | (np.abs(arr) > _MAX_EXACT_FLOAT)
        else:
            bad = ~col.str.fullmatch(_INT_TEXT).to_numpy(dtype=bool)
            if not bad.any():  # integers, but leading zeros or beyond int64
                bad = np.ones(len(col), bool)
        fail(source, file, column, bad, df[column], df.index, row_label, reason, fix)
    return ints


def _as_float(df, column, *, source, file, row_label) -> np.ndarray:
    col = df[column]
    num = pd.to_numeric(col, errors="coerce")
    arr = num.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(arr)
    if bad.any():
        missing = col.isna().to_numpy()
        problem = "are missing" if missing[bad].all() else "are not finite numbers"
        fail(source, file, column, bad, col, df.index, row_label, problem,
              f"Clean or fill '{column}' in the source file (e.g. 1 for quantity, "
              "0 for value), or drop it from the column mapping to use the default.")
    return arr.astype(np.float32)


def validate_events(
    df: pd.DataFrame,
    *,
    source: str,
    file: str | Path | None = None,
    row_label: str = "row",
    timestamp_format: str | None = None,
    repairs: RepairReport | None = None,
) -> pd.DataFrame:
    """Checks and coerces a frame to the canonical event schema.

    Missing optional columns get the defaults of
    :data:`attnlab.data.schema.OPTIONAL_DEFAULTS` (recorded in ``repairs`` when given).
    Extra columns are kept (as side columns) after the canonical ones.

    Args:
      df: raw events, one row per event; ``df.index`` labels are used in error
        messages (sources index CSV frames by file line number).
      source: source name for messages.
      file: file the rows came from, for messages.
      row_label: what an index label is called in messages (``"row"``, ``"line"``).
      timestamp_format: strftime format for string timestamps (None: inferred).
      repairs: report receiving one entry per defaulted column.

    Returns:
      A new frame with columns ``EVENT_COLUMNS`` (exact dtypes) then any extras.

    Ids are converted exactly (never through float64); surrounding whitespace of text
    ids is stripped (counted in ``repairs`` as ``stripped_<column>`` when any). Text
    timestamps use ONE format for the whole column (``timestamp_format``, or inferred
    and checked on every row; ambiguous or mixed files raise); different UTC offsets
    are converted to UTC (``utc_offsets_to_utc``); times outside 1677-09-22 ..
    2262-04-11 raise. See docs/data.md.

    Raises:
      DataError: a required column is absent, a value cannot be coerced, a timestamp
        is missing/unparseable/ambiguous/out of range, an id is not an exact integer,
        or a code is out of range.
    """
    here = where(source, file)
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{here}: expected a pandas DataFrame of events, got {type(df).__name__}.")
    if len(df) == 0:
        raise DataError(f"{here}: no events (0 rows). Check the file and any filters.")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{here}: missing required column(s) {missing}; present: {list(df.columns)}. "
            "Rename them or give a column mapping (tabular source: columns={...})."
        )
    kw = dict(source=source, file=file, row_label=row_label)
    out: dict[str, np.ndarray] = {}
    id_fix = ("Ids must be integers: map string ids to integer codes (the tabular source "
              "does this with factorize) or drop rows without an id.")
    out["customer_id"] = _as_int(df, "customer_id", fix=id_fix, repairs=repairs, **kw)
    out["item_id"] = _as_int(df, "item_id", fix=id_fix + f" Use {NO_ITEM} for 'no item'.",
                             repairs=repairs, **kw)
    bad = out["item_id"] < NO_ITEM
    if bad.any():
        fail(source, file, "item_id", bad, df["item_id"], df.index, row_label,
              f"are negative (only {NO_ITEM} = NO_ITEM is allowed)",
              "Re-map the item ids to non-negative integers.")
    out["timestamp"] = as_timestamp(df, timestamp_format=timestamp_format, repairs=repairs,
                                     **kw)
    if "basket_id" in df.columns:
        out["basket_id"] = _as_int(df, "basket_id", fix=id_fix, repairs=repairs, **kw)
    else:
        key = pd.DataFrame({"c": out["customer_id"], "t": out["timestamp"]})
        out["basket_id"] = key.groupby(["c", "t"], sort=True).ngroup().to_numpy(np.int64)
        if repairs is not None:
            repairs.add("default_basket", len(df),
                        "no basket column: {count:,} events grouped into one basket per "
                        "(customer, timestamp)")
    for name, default in (("quantity", 1.0), ("value", 0.0)):
        if name in df.columns:
            out[name] = _as_float(df, name, **kw)
        else:
            out[name] = np.full(len(df), default, np.float32)
            if repairs is not None:
                repairs.add(f"default_{name}", len(df),
                            f"no {name} column: {{count:,}} events get {name} = {default}")
    if "event_type" in df.columns:
        et = _as_int(df, "event_type", fix="Use attnlab.data.schema.EventType codes.", **kw)
        valid = np.isin(et, [int(e) for e in EventType if e != EventType.PAD])
        if not valid.all():
            fail(source, file, "event_type", ~valid, df["event_type"], df.index, row_label,
                  "are not valid EventType codes (1..4)",
                  "Use attnlab.data.schema.EventType (PAD = 0 is reserved for padding).")
        out["event_type"] = et.astype(np.int8)
    else:
        out["event_type"] = np.full(len(df), int(EventType.PURCHASE), np.int8)
    frame = pd.DataFrame({c: out[c] for c in EVENT_COLUMNS}, index=df.index)
    for name, dtype in EVENT_COLUMNS.items():
        assert frame[name].dtype == dtype, (name, frame[name].dtype)
    extras = [c for c in df.columns if c not in EVENT_COLUMNS]
    for c in extras:
        frame[c] = df[c].array
    return frame.reset_index(drop=True)


def drop_exact_duplicates(
    df: pd.DataFrame, repairs: RepairReport, *, what: str = "rows", subset=None
) -> pd.DataFrame:
    """Drops rows identical to an earlier row (all columns, or ``subset``), counted."""
    dup = df.duplicated(subset=subset, keep="first").to_numpy()
    repairs.add("exact_duplicates", int(dup.sum()),
                f"dropped {{count:,}} exact duplicate {what} (kept the first of each)")
    return df.loc[~dup] if dup.any() else df


def negative_ids(n: int, *, after: int = 0) -> np.ndarray:
    """Unique negative basket ids ``-(after + 1) .. -(after + n)`` for non-basket events."""
    return -np.arange(after + 1, after + n + 1, dtype=np.int64)
