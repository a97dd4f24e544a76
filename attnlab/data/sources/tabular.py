"""Generic CSV / parquet adapter with a column mapping.

Any "one row per line item" file (Online Retail II, Instacart after a join, a
company export) becomes canonical events::

    load(path="online_retail.csv",
         columns={"customer_id": "Customer ID", "item_id": "StockCode",
                  "timestamp": "InvoiceDate", "basket_id": "Invoice",
                  "quantity": "Quantity", "unit_price": "Price"},
         item_features=["Description"], timestamp_format="%Y-%m-%d %H:%M:%S")

Mapping keys: ``customer_id``, ``item_id``, ``timestamp`` (required); ``basket_id``
(default: one basket per (customer, timestamp)), ``quantity`` (default 1), ``value``
or ``unit_price`` (value = quantity x unit_price; default 0), ``event_type``.

Repair rules (counted):
  1. rows with a missing customer or item id: error [``on_missing_ids="error"``] or
     dropped [``"drop"``];
  2. non-integer ids (e.g. stock code "85123A") are factorised to integer codes in
     sorted key order; the original key is kept in ``item_features["item_key"]`` /
     ``customer_features["customer_key"]``;
  3. exact duplicate rows (all mapped columns) are dropped [``duplicates="drop"``];
  4. negative quantities become RETURN events with |quantity| and |value|
     [``negative_quantity="return"``; ``"drop"`` or ``"error"``];
  5. zero-quantity rows are kept (counted);
  6. item features with several values for one item keep the first (counted).
Errors name the file, the column, the first offending file lines and a fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attnlab.data.events import (
    DataError, EventData, RepairReport, drop_exact_duplicates, validate_events,
)
from attnlab.data.schema import EventType
from attnlab.data.sources import Source, register_source

NAME = "tabular"
_KEYS = ("customer_id", "item_id", "timestamp", "basket_id", "quantity", "value",
         "unit_price", "event_type")
_FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}


def files(*, path, **_) -> list[Path]:
    """The raw file read by :func:`load` (for cache fingerprints)."""
    return [Path(path)]


def _read(p: Path, fmt: str, usecols: list[str], sep: str) -> tuple[pd.DataFrame, str]:
    if not p.exists():
        raise DataError(f"[{NAME}] {p}: file not found. Check options.path.")
    if fmt == "parquet":
        try:
            df = pd.read_parquet(p)
        except Exception as err:  # noqa: BLE001 -- pyarrow raises many types
            raise DataError(f"[{NAME}] {p}: not a readable parquet file ({err}). "
                            "Pass format='csv' if it is text.") from None
        label = "row"
    else:
        try:
            df = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=True, skipinitialspace=True)
        except pd.errors.EmptyDataError:
            raise DataError(f"[{NAME}] {p}: the file is empty; expected a header line "
                            "and one line per event.") from None
        except pd.errors.ParserError as err:
            raise DataError(f"[{NAME}] {p}: malformed CSV ({err}). Fix that line (quote "
                            f"fields containing the separator {sep!r}) or pass sep=...") from None
        df.index = df.index + 2  # file line numbers: line 1 is the header
        label = "line"
    missing = [c for c in usecols if c not in df.columns]
    if missing:
        raise DataError(f"[{NAME}] {p}: column(s) {missing} named in the column mapping are "
                        f"not in the file; present: {list(df.columns)}. Fix options.columns.")
    return df, label


def _integer_or_codes(s: pd.Series) -> tuple[np.ndarray | None, pd.Index | None]:
    """Integer ids if every value is an integer, else (None, sorted unique keys)."""
    num = pd.to_numeric(s, errors="coerce")
    arr = num.to_numpy(np.float64, na_value=np.nan)
    if np.isfinite(arr).all() and (arr == np.floor(arr)).all():
        return arr.astype(np.int64), None
    return None, pd.Index(np.unique(s.astype(str).to_numpy()))


def load(
    *,
    path: str,
    columns: dict[str, str],
    format: str | None = None,  # noqa: A002 -- config name
    sep: str = ",",
    timestamp_format: str | None = None,
    timestamp_unit: str | None = None,
    timestamp_origin: str = "unix",
    item_features: list[str] | None = None,
    customer_features: list[str] | None = None,
    on_missing_ids: str = "error",
    duplicates: str = "drop",
    negative_quantity: str = "return",
) -> EventData:
    """Loads a CSV/parquet file through a column mapping (see module docstring).

    Args:
      path: the file.
      columns: canonical name -> column in the file (keys in the module docstring).
      format: ``"csv"`` | ``"parquet"``; default from the file suffix.
      sep: CSV separator.
      timestamp_format: strftime format of string timestamps (None: inferred).
      timestamp_unit: numeric timestamps: ``"s"``, ``"ms"``, ``"D"``... counted from
        ``timestamp_origin`` (e.g. Instacart-style day numbers).
      timestamp_origin: origin for numeric timestamps (``"unix"`` or a date).
      item_features: file columns kept as item side information.
      customer_features: file columns kept as customer side information.
      on_missing_ids: ``"error"`` | ``"drop"`` rows without customer or item id.
      duplicates: ``"drop"`` | ``"keep"`` exact duplicate rows.
      negative_quantity: ``"return"`` | ``"drop"`` | ``"error"``.

    Returns:
      :class:`EventData`.

    Raises:
      DataError: unreadable file, unknown mapping keys or columns, bad values.
    """
    p = Path(path)
    for name, value, choices in (("on_missing_ids", on_missing_ids, ("error", "drop")),
                                 ("duplicates", duplicates, ("drop", "keep")),
                                 ("negative_quantity", negative_quantity,
                                  ("return", "drop", "error"))):
        if value not in choices:
            raise DataError(f"[{NAME}] option {name}={value!r} is not one of {list(choices)}.")
    unknown = [k for k in columns if k not in _KEYS]
    lacking = [k for k in ("customer_id", "item_id", "timestamp") if k not in columns]
    if unknown or lacking:
        raise DataError(f"[{NAME}] {p}: bad column mapping: unknown keys {unknown}, missing "
                        f"required keys {lacking}. Allowed keys: {list(_KEYS)}.")
    if "value" in columns and "unit_price" in columns:
        raise DataError(f"[{NAME}] {p}: map either 'value' or 'unit_price', not both.")
    fmt = format or _FORMATS.get(p.suffix.lower())
    if fmt not in ("csv", "parquet"):
        raise DataError(f"[{NAME}] {p}: cannot tell the format from suffix {p.suffix!r}; "
                        "pass format='csv' or format='parquet'.")
    feats_i, feats_c = list(item_features or []), list(customer_features or [])
    raw, label = _read(p, fmt, list(columns.values()) + feats_i + feats_c, sep)
    rep = RepairReport()
    rep.add("raw_rows", len(raw), f"read {{count:,}} rows from {p.name}")
    df = pd.DataFrame({k: raw[c] for k, c in columns.items()}, index=raw.index)
    for c in feats_i + feats_c:
        df["__f_" + c] = raw[c]

    no_id = (df["customer_id"].isna() | df["item_id"].isna()).to_numpy()
    if no_id.any() and on_missing_ids == "error":
        col = "customer_id" if df["customer_id"].isna().any() else "item_id"
        lines = ", ".join(str(i) for i in df.index[df[col].isna().to_numpy()][:5])
        raise DataError(f"[{NAME}] {p}: column '{columns[col]}' ({col}): "
                        f"{int(df[col].isna().sum()):,} {label}(s) have no id; first "
                        f"offending {label}s: {lines}. Pass on_missing_ids='drop' to drop "
                        "them (counted in the repair report) or fill them in.")
    rep.add("missing_ids", int(no_id.sum()), "dropped {count:,} rows without customer or item id")
    df = df.loc[~no_id]

    keys: dict[str, pd.Index] = {}
    for col in ("customer_id", "item_id", "basket_id"):
        if col not in df.columns:
            continue
        ints, uniq = _integer_or_codes(df[col])
        if ints is None:
            keys[col] = uniq
            df[col] = uniq.get_indexer(df[col].astype(str).to_numpy()).astype(np.int64)
            example = next((k for k in uniq if not k.lstrip("-").isdigit()), uniq[0])
            rep.add(f"factorized_{col}", len(uniq),
                    f"{col}: {{count:,}} distinct keys, some not integers (e.g. {example!r}), "
                    "factorised to integer codes in sorted key order")
        else:
            df[col] = ints

    if timestamp_unit is not None:
        num = pd.to_numeric(df["timestamp"], errors="coerce")
        bad = num.isna().to_numpy() & df["timestamp"].notna().to_numpy()
        _raise_if_bad(df, bad, "timestamp", columns, label, p,
                      f"not numbers although timestamp_unit={timestamp_unit!r}", "")
        df["timestamp"] = pd.to_datetime(num, unit=timestamp_unit, origin=timestamp_origin)
    if "unit_price" in df.columns:
        q = pd.to_numeric(df.get("quantity", pd.Series(1.0, index=df.index)), errors="coerce")
        price = pd.to_numeric(df["unit_price"], errors="coerce")
        _raise_if_bad(df, price.isna().to_numpy(), "unit_price", columns, label, p,
                      "missing or not numbers", " Fix them or map 'value' instead.")
        df["value"] = q * price
        df = df.drop(columns=["unit_price"])

    events = validate_events(df, source=NAME, file=p, row_label=label,
                             timestamp_format=timestamp_format, repairs=rep)
    if duplicates == "drop":
        events = drop_exact_duplicates(events, rep, what="rows").reset_index(drop=True)
    neg = events["quantity"].to_numpy() < 0
    if neg.any() and negative_quantity == "error":
        raise DataError(f"[{NAME}] {p}: column '{columns.get('quantity')}' (quantity): "
                        f"{int(neg.sum()):,} negative quantities. Pass "
                        "negative_quantity='return' (RETURN events) or 'drop'.")
    if negative_quantity == "drop":
        rep.add("negative_quantity", int(neg.sum()), "dropped {count:,} negative-quantity rows")
        events = events.loc[~neg].reset_index(drop=True)
    else:
        rep.add("negative_quantity", int(neg.sum()),
                "{count:,} negative-quantity rows became RETURN events (|quantity|, |value|)")
        events.loc[neg, "event_type"] = np.int8(EventType.RETURN)
        events["quantity"] = events["quantity"].abs()
        events.loc[neg, "value"] = events.loc[neg, "value"].abs()
    rep.add("zero_quantity", int((events["quantity"] == 0).sum()),
            "{count:,} zero-quantity rows kept")

    item_f = _features(events, "item_id", feats_i, keys.get("item_id"), "item_key", rep)
    cust_f = _features(events, "customer_id", feats_c, keys.get("customer_id"),
                       "customer_key", rep)
    events = events.drop(columns=[c for c in events.columns if c.startswith("__f_")])
    return EventData(events=events, item_features=item_f, customer_features=cust_f,
                     repairs=rep, source=NAME, meta={"path": str(p), "format": fmt})


def _features(events: pd.DataFrame, key: str, feats: list[str], uniq: pd.Index | None,
              key_name: str, rep: RepairReport) -> pd.DataFrame:
    ids = np.unique(events[key].to_numpy())
    out: dict[str, Any] = {}
    if uniq is not None:
        out[key_name] = uniq.to_numpy()[ids]
    for c in feats:
        g = events.groupby(key, sort=True)["__f_" + c]
        conflicts = int((g.nunique() > 1).sum())
        rep.add(f"conflicting_{c}", conflicts,
                f"{{count:,}} {key.split('_')[0]}s with several '{c}' values kept the first")
        out[c] = g.first().reindex(ids).to_numpy()
    return pd.DataFrame(out, index=pd.Index(ids, name=key))


SOURCE = register_source(Source(name=NAME, load=load, files=files, version="1"))


def _raise_if_bad(df, bad, column, columns, label, path, problem, fix) -> None:
    """DataError naming the file, the source column and the first offending rows."""
    if not bad.any():
        return
    lines = ", ".join(f"{label} {i} ({v!r})" for i, v in df.loc[bad, column].head(5).items())
    raise DataError(f"[{NAME}] {path}: column '{columns[column]}' ({column}): "
                    f"{int(bad.sum()):,} value(s) are {problem}. First offending: {lines}.{fix}")
