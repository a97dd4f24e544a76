"""validate_events: every bad-input case gives a DataError naming file, column, rows."""

import numpy as np
import pandas as pd
import pytest

from attnlab.data.events import DataError, RepairReport, drop_exact_duplicates, validate_events
from attnlab.data.schema import EVENT_COLUMNS, NO_ITEM, EventType


def _frame(**overrides):
    df = pd.DataFrame({
        "customer_id": [1, 1, 2, 2],
        "item_id": [10, 11, 10, NO_ITEM],
        "timestamp": ["2021-01-01 10:00", "2021-01-01 10:00", "2021-01-02", "2021-01-03"],
        "basket_id": [5, 5, 6, -1],
        "quantity": [1, 2, 1, 0],
        "value": [1.5, 3.0, 1.5, 0.0],
        "event_type": [1, 1, 1, 3],
    })
    for k, v in overrides.items():
        df[k] = v
    return df


def test_valid_frame_gets_canonical_dtypes():
    out = validate_events(_frame(), source="t")
    assert list(out.columns) == list(EVENT_COLUMNS)
    for name, dtype in EVENT_COLUMNS.items():
        assert out[name].dtype == dtype
    assert out["event_type"].tolist() == [1, 1, 1, int(EventType.CAMPAIGN)]


def test_optional_columns_get_documented_defaults_and_are_reported():
    rep = RepairReport()
    df = _frame().drop(columns=["basket_id", "quantity", "value", "event_type"])
    out = validate_events(df, source="t", repairs=rep)
    assert out["quantity"].tolist() == [1.0] * 4
    assert out["value"].tolist() == [0.0] * 4
    assert (out["event_type"] == EventType.PURCHASE).all()
    # one basket per (customer, timestamp): the first two rows share one
    b = out["basket_id"].tolist()
    assert b[0] == b[1] and len(set(b)) == 3
    assert rep.codes() == ["default_basket", "default_quantity", "default_value"]
    assert rep.count("default_quantity") == 4


def test_extra_columns_are_kept():
    out = validate_events(_frame(campaign_id=pd.array([None, None, None, 7], dtype="Int64")),
                          source="t")
    assert out["campaign_id"].dtype == "Int64"
    assert out["campaign_id"].iloc[3] == 7


@pytest.mark.parametrize("missing", ["customer_id", "item_id", "timestamp"])
def test_missing_required_column(missing):
    with pytest.raises(DataError) as err:
        validate_events(_frame().drop(columns=[missing]), source="src", file="f.csv")
    msg = str(err.value)
    assert "[src] f.csv" in msg and missing in msg and "present:" in msg


@pytest.mark.parametrize("column,value,problem", [
    ("customer_id", "abc", "not integers"),
    ("item_id", "85123A", "not integers"),
    ("item_id", 1.5, "not integers"),
    ("item_id", -7, "negative"),
    ("basket_id", None, "missing"),
    ("quantity", "two", "not finite numbers"),
    ("value", np.inf, "not finite numbers"),
    ("event_type", 9, "EventType"),
    ("event_type", 0, "EventType"),
    ("timestamp", "2021-13-45", "unparseable timestamp"),
    ("timestamp", None, "missing timestamp"),
])
def test_bad_values_name_file_column_and_row(column, value, problem):
    df = _frame()
    df[column] = df[column].astype(object)
    df.loc[2, column] = value
    with pytest.raises(DataError) as err:
        validate_events(df, source="src", file="events.csv")
    msg = str(err.value)
    assert "events.csv" in msg
    assert f"column '{column}'" in msg
    assert problem in msg
    assert "row 2" in msg  # the offending row label
    assert "First offending" in msg


def test_row_label_uses_frame_index_as_file_lines():
    df = _frame()
    df.index = df.index + 2
    df["quantity"] = df["quantity"].astype(object)
    df.loc[4, "quantity"] = "x"
    with pytest.raises(DataError, match=r"line 4 \('x'\)"):
        validate_events(df, source="src", file="a.csv", row_label="line")


def test_numeric_timestamps_are_rejected_with_a_hint():
    with pytest.raises(DataError, match="timestamp_unit"):
        validate_events(_frame(timestamp=[1, 2, 3, 4]), source="s")


def test_empty_and_non_frame_inputs():
    with pytest.raises(DataError, match="0 rows"):
        validate_events(_frame().iloc[:0], source="s")
    with pytest.raises(DataError, match="DataFrame"):
        validate_events({"a": 1}, source="s")


def test_timezone_aware_timestamps_keep_local_wall_time():
    ts = pd.to_datetime(["2021-01-01 10:00"] * 4).tz_localize("Europe/London")
    out = validate_events(_frame(timestamp=ts), source="s")
    assert out["timestamp"].iloc[0] == pd.Timestamp("2021-01-01 10:00")


def test_repair_report_counts_and_round_trips():
    rep = RepairReport()
    df = pd.DataFrame({"a": [1, 1, 2, 2, 2], "b": [0, 0, 1, 1, 3]})
    out = drop_exact_duplicates(df, rep, what="rows")
    assert len(out) == 3
    assert rep.lines() == ["dropped 2 exact duplicate rows (kept the first of each)"]
    rep.add("x", 1234, "{count:,} things")
    assert rep.lines()[-1] == "1,234 things"
    assert RepairReport.from_list(rep.to_list()).lines() == rep.lines()
    assert "2." in rep.format()
