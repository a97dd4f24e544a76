"""Sources: real CJ / CDNOW (installed wheels, local), tiny fixtures, registry."""

import sys
from pathlib import Path

import pandas as pd
import pytest

from attnlab.data.events import DataError
from attnlab.data.schema import EVENT_COLUMNS, NO_ITEM, EventType
from attnlab.data.sources import available_sources, get_source

FIX = Path(__file__).resolve().parent.parent / "fixtures"
RETAIL = dict(
    path=str(FIX / "online_retail_small.csv"),
    columns={"customer_id": "Customer ID", "item_id": "StockCode",
             "timestamp": "InvoiceDate", "basket_id": "Invoice",
             "quantity": "Quantity", "unit_price": "Price"},
    item_features=["Description"], customer_features=["Country"],
)
SIMPLE = {"customer_id": "user", "item_id": "item", "timestamp": "ts", "quantity": "qty"}


def test_registry_names_and_unknown_source():
    assert {"complete_journey", "cdnow", "tabular", "synthetic"} <= set(available_sources())
    with pytest.raises(DataError, match="available"):
        get_source("nope")
    with pytest.raises(DataError, match="Known options"):
        get_source("cdnow").resolve_options({"bogus": 1})


# ----------------------------------------------------------------------- Complete Journey


@pytest.fixture(scope="module")
def cj():
    return get_source("complete_journey").load()


def test_complete_journey_real_data(cj):
    ev, rep = cj.events, cj.repairs
    assert list(ev.columns[:7]) == list(EVENT_COLUMNS)
    purchases = ev["event_type"] == EventType.PURCHASE
    assert purchases.sum() == 1_469_307  # every transaction line kept
    assert ev["customer_id"].nunique() == 2469
    # documented dirty-data counts of this release
    assert rep.count("zero_quantity") == 8_869
    assert rep.count("zero_value") == 11_226
    assert rep.count("large_quantity") == 13_494
    assert rep.count("negative_value_to_return") == 0
    assert rep.count("exact_duplicates") == 0
    assert rep.count("unknown_product") == 4_836
    assert rep.count("single_event_customers") == 6
    assert ev.loc[purchases, "quantity"].max() <= 1000  # meter readings set to 1
    camp = ev["event_type"] == EventType.CAMPAIGN
    coup = ev["event_type"] == EventType.COUPON_REDEMPTION
    assert camp.sum() == 6_589 and coup.sum() == 2_102
    side = ev.loc[camp | coup]
    assert (side["item_id"] == NO_ITEM).all() and (side["basket_id"] < 0).all()
    assert side["basket_id"].is_unique and side["campaign_id"].notna().all()
    assert (ev.loc[coup, "timestamp"].dt.hour == 23).all()
    assert {"department", "brand", "product_category"} <= set(cj.item_features.columns)
    assert len(cj.customer_features) == 801 and "income" in cj.customer_features


def _write_cj(d: Path) -> None:
    ts = pd.to_datetime(["2017-01-02 10:00"] * 3 + ["2017-01-03 09:00"] * 3)
    pd.DataFrame({
        "household_id": [1, 1, 1, 2, 2, 2], "store_id": 1,
        "basket_id": [100, 100, 100, 200, 200, 200],
        "product_id": [11, 12, 12, 11, 13, 99],
        "quantity": [1, 0, 0, 5000, 2, 1], "sales_value": [1.0, 0.0, 0.0, 30.0, -2.0, 0.5],
        "transaction_timestamp": ts,
    }).to_parquet(d / "transactions.parquet")
    pd.DataFrame({"product_id": [11, 12, 13], "manufacturer_id": [1, 1, 2],
                  "department": ["FUEL", "GROCERY", "GROCERY"], "brand": "National",
                  "product_category": ["GAS", "BREAD", "MILK"], "product_type": "x",
                  "package_size": None}).to_parquet(d / "products.parquet")
    pd.DataFrame({"household_id": [1], "age": ["35-44"]}).to_parquet(d / "demographics.parquet")


def test_complete_journey_repairs_on_tiny_dirty_copy(tmp_path):
    _write_cj(tmp_path)
    data = get_source("complete_journey").load(data_dir=str(tmp_path), include_campaigns=False,
                                               include_coupons=False)
    rep, ev = data.repairs, data.events
    assert rep.count("exact_duplicates") == 1  # (1, 100, 12, 0, 0.0) twice
    assert rep.count("negative_value_to_return") == 1
    assert rep.count("zero_quantity") == 1
    assert rep.count("large_quantity") == 1 and "FUEL 1" in " ".join(rep.lines())
    assert rep.count("unknown_product") == 1
    ret = ev[ev["event_type"] == EventType.RETURN]
    assert len(ret) == 1 and ret["value"].iloc[0] == 2.0 and ret["quantity"].iloc[0] == 2.0
    assert ev.loc[ev["item_id"] == 11, "quantity"].max() == 1.0  # 5000 -> 1
    dropped = get_source("complete_journey").load(
        data_dir=str(tmp_path), include_campaigns=False, include_coupons=False,
        zero_quantity="drop", large_quantity="drop", min_events=2)
    assert dropped.repairs.count("few_events") == 1  # household 1 has 1 line left
    assert len(dropped.events) == 2  # household 2: 13 and 99 (the return)


def test_complete_journey_bad_dir_and_option(tmp_path):
    with pytest.raises(DataError, match="transactions.parquet: file not found"):
        get_source("complete_journey").load(data_dir=str(tmp_path))
    with pytest.raises(DataError, match="large_quantity"):
        get_source("complete_journey").load(large_quantity="cap")


# ----------------------------------------------------------------------------- CDNOW


def test_cdnow_counts_without_importing_lifetimes():
    sys.modules.pop("lifetimes", None)
    data = get_source("cdnow").load()
    ev = data.events
    assert len(ev) == 69_659
    assert ev["customer_id"].nunique() == 23_570
    assert (ev["item_id"] == NO_ITEM).all() and ev["basket_id"].is_unique
    assert data.repairs.count("zero_value") == 80
    assert data.repairs.count("duplicate_rows_kept") == 255
    assert ev["timestamp"].min() == pd.Timestamp("1997-01-01")
    assert "lifetimes" not in sys.modules  # located, never imported
    assert len(get_source("cdnow").load(zero_value="drop").events) == 69_659 - 80


def test_cdnow_bad_file(tmp_path):
    p = tmp_path / "cd.txt"
    p.write_text(" customer_id date n v\n 00001 19970101 1 11.77\n 00002 1997XX12 1 12.00\n")
    with pytest.raises(DataError, match=r"column 'date'.*line 3 \('1997XX12'\)"):
        get_source("cdnow").load(path=str(p))


# --------------------------------------------------------------------------- tabular


def test_tabular_online_retail_style():
    data = get_source("tabular").load(**RETAIL)
    ev, rep = data.events, data.repairs
    assert len(ev) == 10  # 11 rows, one exact duplicate dropped
    assert rep.count("exact_duplicates") == 1
    assert rep.count("negative_quantity") == 1  # the C-invoice
    ret = ev[ev["event_type"] == EventType.RETURN]
    assert ret["quantity"].tolist() == [12.0] and ret["value"].tolist() == pytest.approx([35.4])
    keys = data.item_features["item_key"]
    assert "85123A" in keys.tolist() and keys.is_unique
    code = keys.index[keys == "85123A"][0]
    assert (ev["item_id"] == code).sum() == 2  # once for 13085 (dedup), once (qty 0) for 13078
    assert data.item_features.loc[code, "Description"].startswith("WHITE HANGING")
    assert data.customer_features.loc[16321, "Country"] == "Australia"
    assert set(ev["customer_id"]) == {13085, 13078, 16321}  # "13085.0" -> int


def test_tabular_instacart_style_parquet_with_day_numbers():
    data = get_source("tabular").load(
        path=str(FIX / "instacart_small.parquet"),
        columns={"customer_id": "user_id", "item_id": "product_id", "timestamp": "order_day",
                 "basket_id": "order_id"},
        timestamp_unit="D", timestamp_origin="2017-01-01", item_features=["aisle", "department"])
    ev = data.events
    assert len(ev) == 14 and ev["quantity"].eq(1).all()
    assert data.repairs.count("default_value") == 14
    assert ev.loc[ev["basket_id"] == 202, "timestamp"].iloc[0] == pd.Timestamp("2017-01-31")
    assert data.item_features.loc[196, "department"] == "beverages"


@pytest.mark.parametrize("fname,pattern", [
    ("bad_timestamp.csv", r"column 'timestamp': 2 line\(s\) have an unparseable timestamp.*"
                          r"line 4 \('2021-13-45 99:00:00'\), line 5 \('yesterday'\)"),
    ("missing_timestamp.csv", r"column 'timestamp': 1 line\(s\) have a missing timestamp.*line 3"),
    ("wrong_type.csv", r"column 'quantity'.*line 3 \('two'\)"),
    ("malformed.csv", r"malformed CSV.*line 3"),
    ("missing_customer.csv", r"column 'user' \(customer_id\).*line.*3.*on_missing_ids='drop'"),
    ("empty.csv", r"the file is empty"),
    ("bad_missing_column.csv", r"\['user', 'item', 'ts', 'qty'\] named in the column mapping"),
    ("does_not_exist.csv", r"file not found"),
])
def test_tabular_bad_files_name_file_column_line(fname, pattern):
    with pytest.raises(DataError, match=pattern) as err:
        get_source("tabular").load(path=str(FIX / fname), columns=SIMPLE)
    assert fname in str(err.value)


def test_tabular_missing_ids_can_be_dropped_and_are_counted():
    data = get_source("tabular").load(path=str(FIX / "missing_customer.csv"), columns=SIMPLE,
                                      on_missing_ids="drop")
    assert len(data.events) == 2 and data.repairs.count("missing_ids") == 1
    # no basket column: one basket per (customer, timestamp)
    assert data.events["basket_id"].nunique() == 2


def test_tabular_bad_mapping_and_options():
    with pytest.raises(DataError, match="missing required keys \\['timestamp'\\]"):
        get_source("tabular").load(path=str(FIX / "wrong_type.csv"),
                                   columns={"customer_id": "user", "item_id": "item"})
    with pytest.raises(DataError, match="unknown keys \\['price'\\]"):
        get_source("tabular").load(path=str(FIX / "wrong_type.csv"),
                                   columns={**SIMPLE, "price": "qty"})
    with pytest.raises(DataError, match="format"):
        get_source("tabular").load(path=str(FIX / "x.xlsx"), columns=SIMPLE)
    with pytest.raises(DataError, match="negative quantities"):
        get_source("tabular").load(**RETAIL, negative_quantity="error")
    kept = get_source("tabular").load(**RETAIL, duplicates="keep", negative_quantity="drop")
    assert len(kept.events) == 10 and kept.repairs.count("negative_quantity") == 1
