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
or ``unit_price`` (value = quantity x unit_price; default 0), ``event_type``. An
optional key left unmapped (None) takes the file's column of the same name when there
is one (``basket_id``, ``quantity``, ``value``, ``unit_price``; counted as
``mapped_by_name``); ``False`` leaves it unmapped. Item id ``-1`` (text or number) is
``NO_ITEM``, an event without an item (counted as ``no_item``).

Repair rules (counted):
  0. surrounding whitespace is stripped from every id, text or numeric alike
     (``stripped_<column>``); an id that is only whitespace is missing;
  1. rows with a missing customer or item id: error [``on_missing_ids="error"``] or
     dropped [``"drop"``];
  2. ids are read as exact int64 (never through float64); ids that are not integers
     (e.g. stock code "85123A"), have leading zeros ("007") or do not fit int64 are
     factorised to integer codes in sorted key order; the original key is kept in
     ``item_features["item_key"]`` / ``customer_features["customer_key"]``. Float id
     columns (parquet) above 2**53 raise: they are not exact;
  2b. text timestamps with different UTC offsets are converted to UTC (counted);
  3. exact duplicate rows (all mapped columns) are dropped [``duplicates="drop"``];
  4. negative quantities become RETURN events with |quantity| and |value|
     [``negative_quantity="return"``; ``"drop"`` or ``"error"``];
  5. zero-quantity rows are kept (counted);
  6. item features with several values for one item keep the first (counted).
Errors name the file, the column, the first offending file lines and a fix: also for
UTF-16/undecodable text (``encoding=``), a UTF-8 file read with a single-byte
``encoding`` such as latin-1 (it would turn 'café' into mojibake), a parquet file named .csv (``format=``), a
directory, a ``;``-separated file (``sep=``), ambiguous or mixed date formats
(``timestamp_format=``), out-of-range times and epochs in the wrong unit
(``timestamp_unit=``), and files that leave fewer than 2 events. See docs/data.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attnlab.data.events import (
    TIME_MAX, TIME_MIN, DataError, EventData, RepairReport, drop_exact_duplicates,
    exact_int_ids, validate_events,
)
from attnlab.data.schema import NO_ITEM, EventType
from attnlab.data.sources import Source, register_source
from attnlab.data.sources.table_files import check_repair_options, column_mapping, read_table
from attnlab.data.timestamps import (
    EPOCH_UNITS, implausible_epoch, other_epoch_unit, outside_range, unit_origin_seconds, wrong_epoch_unit,
)

NAME = "tabular"
_FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}


def files(*, path, **_) -> list[Path]:
    """The raw file read by :func:`load` (for cache fingerprints)."""
    return [Path(path)]


def _ids(s: pd.Series) -> tuple[pd.Series, int]:
    """Strips surrounding whitespace from text ids (empty -> missing); returns the
    stripped column and how many values changed."""
    if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        return s, 0
    present = s.notna()
    text = s.astype(object).where(present)
    stripped = text.where(~present, text.astype(str).str.strip())
    changed = int((present & (stripped != text)).sum())
    stripped = stripped.where(~present | (stripped != ""), None)
    return stripped, changed


def _integer_or_codes(s: pd.Series) -> tuple[np.ndarray | None, pd.Index | None, str | None]:
    """Exact int64 ids, or (None, sorted unique text keys, reason) to factorise.

    Raises:
      ValueError: float ids beyond 2**53 (not exact; nothing can recover them).
    """
    ints, reason = exact_int_ids(s)
    if ints is not None:
        return ints, None, None
    if reason.startswith("float"):
        raise ValueError(reason)
    return None, pd.Index(np.unique(s.astype(str).to_numpy())), reason


def load(
    *,
    path: str,
    columns: dict[str, str],
    format: str | None = None,  # noqa: A002 -- config name
    sep: str = ",",
    encoding: str | None = None,
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
      sep: CSV separator. A header that does not split on it but does on ``;``,
        tab or ``|`` raises a :class:`DataError` naming the ``sep`` to pass.
      encoding: CSV text encoding; None: from a byte-order mark (UTF-8/16/32), else
        UTF-8 (undecodable files raise, naming this option).
      timestamp_format: strftime format of string timestamps (None: ONE format is
        inferred and must parse every row; ambiguous files such as dd/mm vs mm/dd
        raise, naming the formats to choose from).
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
    # false: never map this key; null: the column named like the key when the file has one
    columns, unmapped = column_mapping(columns, where=f"[{NAME}] {p}")
    sep = "," if sep is None else sep
    timestamp_origin = "unix" if timestamp_origin is None else timestamp_origin
    check_repair_options(NAME, on_missing_ids=on_missing_ids, duplicates=duplicates,
                         negative_quantity=negative_quantity)
    fmt = format or _FORMATS.get(p.suffix.lower())
    if fmt not in ("csv", "parquet"):
        raise DataError(f"[{NAME}] {p}: cannot tell the format from suffix {p.suffix!r}; "
                        "pass format='csv' or format='parquet'.")
    feats_i, feats_c = list(item_features or []), list(customer_features or [])
    raw, label = read_table(p, fmt, list(columns.values()) + feats_i + feats_c, sep, encoding)
    rep = RepairReport()
    rep.add("raw_rows", len(raw), f"read {{count:,}} rows from {p.name}")
    auto = _map_by_name(columns, unmapped, set(raw.columns))
    columns.update({k: k for k in auto})
    rep.add("mapped_by_name", len(auto),
            f"{{count:,}} optional column(s) mapped by their name: {auto} (set "
            "data.options.columns.<key>=false to leave one unmapped)")
    df = pd.DataFrame({k: raw[c] for k, c in columns.items()}, index=raw.index)
    for c in feats_i + feats_c:
        df["__f_" + c] = raw[c]
    for col in ("customer_id", "item_id", "basket_id"):
        if col in df.columns:
            df[col], changed = _ids(df[col])
            rep.add(f"stripped_{col}", changed,
                    f"{col}: {{count:,}} ids had surrounding whitespace, stripped (text and "
                    "numeric ids alike: 'cust 1 ' is 'cust 1')")

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
    if len(df) == 0:
        raise DataError(f"[{NAME}] {p}: no events: {len(raw):,} {label}(s) read, "
                        f"{int(no_id.sum()):,} dropped for a missing id in column(s) "
                        f"'{columns['customer_id']}'/'{columns['item_id']}' "
                        "(on_missing_ids='drop'). The file needs a header line and one line "
                        "per event with customer and item ids.")

    keys: dict[str, pd.Index] = {}
    for col in ("customer_id", "item_id", "basket_id"):
        if col not in df.columns:
            continue
        if df[col].isna().any():  # basket_id (ids were checked above)
            bad = df[col].isna().to_numpy()
            _raise_if_bad(df, bad, col, columns, label, p, "missing",
                          " Fill them in or drop the basket column from the mapping "
                          "(one basket per customer and timestamp).")
        try:
            ints, uniq, reason = _integer_or_codes(df[col])
        except ValueError as err:
            raise DataError(f"[{NAME}] {p}: column '{columns[col]}' ({col}): {err}; e.g. "
                            f"{label} {df.index[0]} ({df[col].iloc[0]!r}). Store the ids as "
                            "int64 or text in the file.") from None
        if ints is None:
            if col == "item_id":  # '-1' is NO_ITEM in text columns too (get_indexer: -1)
                uniq = uniq.drop(str(NO_ITEM), errors="ignore")
            keys[col] = uniq
            df[col] = uniq.get_indexer(df[col].astype(str).to_numpy()).astype(np.int64)
            example = next((k for k in uniq if not k.lstrip("-").isdigit()), uniq[-1])
            rep.add(f"factorized_{col}", len(uniq),
                    f"{col}: {{count:,}} distinct keys factorised to integer codes in sorted "
                    f"key order because some ids {reason} (e.g. {example!r}); the original "
                    f"key is kept as {col.split('_')[0]}_key")
        else:
            df[col] = ints

    rep.add("no_item", int((df["item_id"] == NO_ITEM).sum()),
            f"{{count:,}} rows have item id {NO_ITEM} (NO_ITEM): kept as events without an "
            "item (visits, contacts), never scored as products")
    if timestamp_unit is not None:
        num = pd.to_numeric(df["timestamp"], errors="coerce")
        bad = num.isna().to_numpy() & df["timestamp"].notna().to_numpy()
        _raise_if_bad(df, bad, "timestamp", columns, label, p,
                      f"not numbers although timestamp_unit={timestamp_unit!r}", "")
        df["timestamp"] = _from_numbers(df, num, timestamp_unit, timestamp_origin,
                                        columns, label, p)
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

    if len(events) < 2:
        dropped = [r.message for r in rep if r.count and r.message.startswith("dropped")]
        raise DataError(f"[{NAME}] {p}: only {len(events)} event(s) left of {len(raw)} "
                        f"{label}(s) read{' (' + '; '.join(dropped) + ')' if dropped else ''}"
                        "; a sequence data set needs at least 2 events. Check the file (is it "
                        "truncated?) and the on_missing_ids/duplicates/negative_quantity "
                        "options.")
    item_f = _features(events, "item_id", feats_i, keys.get("item_id"), "item_key", rep)
    cust_f = _features(events, "customer_id", feats_c, keys.get("customer_id"),
                       "customer_key", rep)
    events = events.drop(columns=[c for c in events.columns if c.startswith("__f_")])
    return EventData(events=events, item_features=item_f, customer_features=cust_f,
                     repairs=rep, source=NAME, meta={"path": str(p), "format": fmt})


_BY_NAME = ("basket_id", "quantity", "value", "unit_price")


def _map_by_name(columns: dict[str, str], unmapped: set[str], present: set[str]) -> list[str]:
    """Optional keys (basket_id, quantity, value, unit_price) that are not mapped but
    name a column of the file: they are mapped to it (``false`` in the mapping opts
    out). ``unit_price`` only when no value is mapped, and never a column already
    mapped to another key."""
    taken = set(columns.values())
    auto = []
    for k in _BY_NAME:
        if k in columns or k in unmapped or k not in present or k in taken:
            continue
        if k in ("value", "unit_price") and ({"value", "unit_price"} & (set(columns) | set(auto))):
            continue
        auto.append(k)
    return auto


def _features(events: pd.DataFrame, key: str, feats: list[str], uniq: pd.Index | None,
              key_name: str, rep: RepairReport) -> pd.DataFrame:
    ids = np.unique(events[key].to_numpy())
    out: dict[str, Any] = {}
    if uniq is not None:
        out[key_name] = np.where(ids >= 0, uniq.to_numpy()[np.maximum(ids, 0)], str(NO_ITEM))
    for c in feats:
        g = events.groupby(key, sort=True)["__f_" + c]
        conflicts = int((g.nunique() > 1).sum())
        rep.add(f"conflicting_{c}", conflicts,
                f"{{count:,}} {key.split('_')[0]}s with several '{c}' values kept the first")
        out[c] = g.first().reindex(ids).to_numpy()
    return pd.DataFrame(out, index=pd.Index(ids, name=key))


SOURCE = register_source(Source(name=NAME, load=load, files=files, version="3"))


def _raise_if_bad(df, bad, column, columns, label, path, problem, fix) -> None:
    """DataError naming the file, the source column and the first offending rows."""
    if not bad.any():
        return
    lines = ", ".join(f"{label} {i} ({v!r})" for i, v in df.loc[bad, column].head(5).items())
    raise DataError(f"[{NAME}] {path}: column '{columns[column]}' ({column}): "
                    f"{int(bad.sum()):,} value(s) are {problem}. First offending: {lines}.{fix}")


def _from_numbers(df, num: pd.Series, unit: str, origin: str, columns, label, path):
    """Numeric times -> datetimes, refusing values outside the supported range (a
    millisecond epoch read with unit 's' lands in the year ~50,000, which pandas would
    otherwise wrap into 1678..2262 and scramble the order)."""
    step, base = unit_origin_seconds(unit, origin, where=f"[{NAME}] {path}")
    arr = num.to_numpy(np.float64, na_value=np.nan)
    bad = np.isfinite(arr) & outside_range(arr * step + base)
    epoch = origin == "unix" and unit in EPOCH_UNITS
    if bad.any():
        mag = float(np.nanmedian(np.abs(arr[np.isfinite(arr)])))
        other = other_epoch_unit(mag, unit) if epoch else None
        hint = (f" Their magnitudes (median {mag:.4g}) look like {other} since the Unix epoch: pass "
                f"timestamp_unit={other!r}." if other else "")
        _raise_if_bad(df, bad, "timestamp", columns, label, path,
                      f"outside the supported range {TIME_MIN} .. {TIME_MAX} when read with "
                      f"timestamp_unit={unit!r}, timestamp_origin={origin!r}",
                      hint or " Check timestamp_unit / timestamp_origin, or fix the rows.")
    finite = arr[np.isfinite(arr)]
    if epoch and len(finite):
        mag = float(np.median(np.abs(finite)))
        other = other_epoch_unit(mag, unit) if implausible_epoch(mag, unit) else None
        if other:
            raise wrong_epoch_unit(f"[{NAME}] {path}", columns["timestamp"], unit, mag,
                                   f"{label} {df.index[0]} ({df['timestamp'].iloc[0]!r})", other)
    # exact integer arithmetic where possible (float64 ns would round)
    if pd.api.types.is_integer_dtype(num.dtype) and epoch:
        return pd.Series(num.to_numpy(np.int64).astype(f"datetime64[{unit}]"),
                         index=num.index)
    return pd.to_datetime(num, unit=unit, origin=origin)
