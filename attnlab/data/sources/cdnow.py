"""CDNOW master (23,570 customers, 69,659 orders, Jan 1997 - Jun 1998).

Reads ``datasets/CDNOW_master.txt`` inside the installed ``lifetimes`` wheel. The
package is located with :func:`importlib.util.find_spec` WITHOUT importing it
(its model code fails to import on pandas 3). Whitespace-separated columns:
``customer_id date(YYYYMMDD) number_of_cds dollar_value``.

Events: one PURCHASE per row (an order), ``item_id = NO_ITEM`` (CDNOW has no item
ids), ``quantity`` = CDs, ``value`` = dollars, timestamp = the order date at 00:00,
basket = the row number (one basket per row, so two orders on the same day stay two
baskets, ordered as in the file).

Repair rules (counted):
  1. zero-dollar orders (80 rows, all 1 CD) are kept as purchases with value 0
     (promotional / free CDs) [``zero_value="keep"``; ``"drop"`` removes them];
  2. rows identical to another row (255: same customer, day, CDs and dollars) are
     KEPT: the file has one line per order and same-day repeat orders are real;
  3. customers with a single order (11,908) are kept.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from attnlab.data.events import DataError, EventData, RepairReport, validate_events
from attnlab.data.schema import NO_ITEM, EventType
from attnlab.data.sources import Source, register_source

NAME = "cdnow"
_COLUMNS = ["customer_id", "date", "number_of_cds", "dollar_value"]


def default_path() -> Path:
    """``CDNOW_master.txt`` inside the installed ``lifetimes`` package (not imported)."""
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or spec.origin is None:
        raise DataError(f"[{NAME}] package 'lifetimes' is not installed; "
                        "`pip install lifetimes==0.11.3` or pass path=<CDNOW_master.txt>.")
    return Path(spec.origin).parent / "datasets" / "CDNOW_master.txt"


def _path(path: str | Path | None) -> Path:
    return Path(path) if path is not None else default_path()


def files(*, path=None, **_) -> list[Path]:
    """The raw file read by :func:`load` (for cache fingerprints)."""
    return [_path(path)]


def load(*, path: str | None = None, zero_value: str = "keep") -> EventData:
    """Loads CDNOW as NO_ITEM purchase events (see module docstring).

    Args:
      path: the master file (default: the installed ``lifetimes`` copy).
      zero_value: ``"keep"`` | ``"drop"`` orders with dollar_value 0.

    Returns:
      :class:`EventData` with no item or customer features.
    """
    if zero_value not in ("keep", "drop"):
        raise DataError(f"[{NAME}] option zero_value={zero_value!r} is not one of "
                        "['keep', 'drop'].")
    p = _path(path)
    if not p.exists():
        raise DataError(f"[{NAME}] {p}: file not found. Pass path=<CDNOW_master.txt>.")
    try:
        raw = pd.read_csv(p, sep=r"\s+", header=0, names=_COLUMNS,
                          dtype={"date": str}, engine="c")
    except (pd.errors.ParserError, ValueError) as err:
        raise DataError(f"[{NAME}] {p}: cannot parse as 4 whitespace-separated columns "
                        f"{_COLUMNS}: {err}") from None
    raw.index = raw.index + 2  # file line numbers (line 1 is the header)
    rep = RepairReport()
    rep.add("raw_rows", len(raw), "read {count:,} order rows")
    ts = pd.to_datetime(raw["date"], format="%Y%m%d", errors="coerce")
    bad = ts.isna().to_numpy()
    if bad.any():
        first = ", ".join(f"line {i} ({v!r})" for i, v in raw.loc[bad, "date"].head(5).items())
        raise DataError(f"[{NAME}] {p}: column 'date': {int(bad.sum()):,} line(s) are not "
                        f"YYYYMMDD dates. First offending: {first}. Fix or remove them.")
    zero = (pd.to_numeric(raw["dollar_value"], errors="coerce") == 0).to_numpy()
    keep = np.ones(len(raw), bool)
    if zero_value == "drop":
        rep.add("zero_value", int(zero.sum()), "dropped {count:,} zero-dollar orders")
        keep = ~zero
    else:
        rep.add("zero_value", int(zero.sum()),
                "{count:,} zero-dollar orders kept as purchases with value 0 (free CDs)")
    dup = raw.duplicated(keep="first").to_numpy()
    rep.add("duplicate_rows_kept", int(dup.sum()),
            "{count:,} rows identical to an earlier row kept as separate same-day orders")
    raw, ts = raw.loc[keep], ts.loc[keep]
    per = raw["customer_id"].value_counts()
    rep.add("single_event_customers", int((per == 1).sum()),
            "{count:,} customers with a single order kept")
    events = pd.DataFrame({
        "customer_id": raw["customer_id"],
        "item_id": NO_ITEM,
        "timestamp": ts,
        "basket_id": np.arange(len(raw), dtype=np.int64),
        "quantity": raw["number_of_cds"],
        "value": raw["dollar_value"],
        "event_type": np.int8(EventType.PURCHASE),
    }, index=raw.index)
    events = validate_events(events, source=NAME, file=p, row_label="line")
    return EventData(events=events, item_features=pd.DataFrame(index=pd.Index([], name="item_id")),
                     customer_features=pd.DataFrame(index=pd.Index([], name="customer_id")),
                     repairs=rep, source=NAME, meta={"path": str(p)})


SOURCE = register_source(Source(name=NAME, load=load, files=files, version="1"))
