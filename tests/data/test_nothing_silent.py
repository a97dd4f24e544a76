"""Issue 12 "Nothing silent": bad input gives a DataError naming the file, the column,
example rows and the option to set, or a counted repair; never silent corruption nor a
raw pandas/numpy traceback. Each test reproduces a reviewer's case with a tiny file."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attnlab.data import DataError, load_sequences, load_store, validate_events
from attnlab.data.pipeline import CacheWarning, fingerprint
from attnlab.data.sources import get_source

COLS = {"customer_id": "cust", "item_id": "prod", "timestamp": "when"}


def _csv(tmp_path: Path, name: str, rows: list[str], header: str = "cust,prod,when") -> Path:
    p = tmp_path / name
    p.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return p


def _load(path, **kw):
    return get_source("tabular").load(path=str(path), columns=kw.pop("columns", COLS), **kw)


# ------------------------------------------------------------------ 1. large integer ids


def test_ids_near_2_pow_53_stay_distinct_and_exact(tmp_path):
    ids = [2**53 + k for k in range(60)]
    p = _csv(tmp_path, "big.csv", [f"{c},{k % 3},2020-01-{1 + k % 28:02d}"
                                   for k, c in enumerate(ids)])
    data = _load(p)
    assert data.events["customer_id"].nunique() == 60  # was 31 (float64 merged them)
    assert sorted(data.events["customer_id"].tolist()) == ids
    store = load_sequences("tabular", {"path": str(p), "columns": COLS}, cache_dir=None,
                           progress=False)
    assert store.customer_ids.tolist() == ids and store.customer_ids.dtype == np.int64


def test_ids_beyond_int64_are_factorised_counted_and_round_trip(tmp_path):
    ids = [10**21 + k for k in range(60)]
    p = _csv(tmp_path, "huge.csv", [f"{c},1,2020-01-01" for c in ids])
    data = _load(p)
    assert data.events["customer_id"].nunique() == 60  # was 1
    keys = data.customer_features["customer_key"]
    assert sorted(keys.tolist()) == sorted(str(c) for c in ids)
    assert [keys[c] for c in data.events["customer_id"]] == [str(c) for c in ids]
    (rep,) = [r for r in data.repairs if r.code == "factorized_customer_id"]
    assert rep.count == 60 and "do not fit int64" in rep.message


def test_float_ids_beyond_2_pow_53_in_parquet_are_refused(tmp_path):
    p = tmp_path / "f.parquet"
    pd.DataFrame({"cust": [2.0**53, 2.0**53 + 2], "prod": [1, 2],
                  "when": ["2020-01-01", "2020-01-02"]}).to_parquet(p)
    with pytest.raises(DataError, match=r"f\.parquet: column 'cust' \(customer_id\): float ids "
                                        r"above 2\*\*53.*int64 or text"):
        _load(p)
    exact = tmp_path / "i.parquet"
    big = np.array([2**62 + 1, 2**62 + 2], np.int64)
    pd.DataFrame({"cust": big, "prod": [1, 2], "when": ["2020-01-01", "2020-01-02"]}
                 ).to_parquet(exact)
    assert sorted(_load(exact).events["customer_id"].tolist()) == big.tolist()


def test_validate_events_parses_text_ids_exactly():
    df = pd.DataFrame({"customer_id": ["9007199254740993", "9007199254740992"],
                       "item_id": [1, 2], "timestamp": ["2020-01-01", "2020-01-02"]},
                      dtype=object)
    out = validate_events(df, source="t")
    assert out["customer_id"].tolist() == [9007199254740993, 9007199254740992]
    df["customer_id"] = ["99999999999999999999", "1"]
    with pytest.raises(DataError, match="column 'customer_id'.*do not fit int64"):
        validate_events(df, source="t", file="x.csv")


# ------------------------------------------------------------------ 2. whitespace in ids


def test_text_and_numeric_ids_are_stripped_alike_and_counted(tmp_path):
    p = _csv(tmp_path, "ws.csv", ['cust 1,1,2020-01-01', '"cust 1 ",2,2020-01-02',
                                  '"cust 2",3,2020-01-03', '" 7 ",4,2020-01-04',
                                  '7,5,2020-01-05'])
    data = _load(p)
    keys = data.customer_features["customer_key"]
    assert sorted(keys.tolist()) == ["7", "cust 1", "cust 2"]  # 'cust 1 ' was its own customer
    assert data.repairs.count("stripped_customer_id") == 2
    assert data.repairs.count("stripped_item_id") == 0
    assert "surrounding whitespace" in next(r.message for r in data.repairs
                                            if r.code == "stripped_customer_id")


def test_missing_basket_ids_are_an_error_not_one_basket(tmp_path):
    p = _csv(tmp_path, "bask.csv", ["1,1,2021-01-01,", "2,2,2021-01-02,", "3,3,2021-01-03,B7"],
             header="cust,prod,when,inv")
    with pytest.raises(DataError, match=r"bask\.csv: column 'inv' \(basket_id\): 2 value\(s\) "
                                        r"are missing.*line 2.*line 3"):
        _load(p, columns={**COLS, "basket_id": "inv"})  # was one basket keyed 'nan'


# ------------------------------------------------------------------ 3. ambiguous dates


def test_day_first_file_with_small_days_first_is_read_day_first(tmp_path):
    days = [(d, m) for m in (1, 2, 3) for d in range(1, 13)] + [(d, 4) for d in range(13, 29)]
    p = _csv(tmp_path, "ddmm.csv", [f"1,{k},{d:02d}/{m:02d}/2021" for k, (d, m) in
                                    enumerate(days)])
    ev = _load(p).events
    want = [pd.Timestamp(2021, m, d) for d, m in days]
    assert ev["timestamp"].tolist() == want  # 36 of 64 (56%) were month/day swapped


def test_ambiguous_day_month_file_names_the_option(tmp_path):
    p = _csv(tmp_path, "amb.csv", ["1,1,03/04/2021", "1,2,05/04/2021", "2,1,11/12/2021"])
    with pytest.raises(DataError) as err:
        _load(p)
    msg = str(err.value)
    assert "amb.csv" in msg and "column 'timestamp'" in msg and "are ambiguous" in msg
    assert "timestamp_format='%m/%d/%Y'" in msg and "timestamp_format='%d/%m/%Y'" in msg
    assert "line 2 ('03/04/2021')" in msg
    ev = _load(p, timestamp_format="%d/%m/%Y").events
    assert ev["timestamp"].iloc[0] == pd.Timestamp(2021, 4, 3)


def test_mixed_formats_are_refused_not_guessed_per_row(tmp_path):
    p = _csv(tmp_path, "mix.csv", ["1,1,2021-01-05", "1,2,2021-01-06", "1,3,13/01/2021",
                                   "1,4,Jan 05 2021"])
    with pytest.raises(DataError) as err:
        _load(p)
    msg = str(err.value)
    assert "mix.csv" in msg and "column 'timestamp'" in msg
    assert "no single format parses every row" in msg and "timestamp_format=" in msg
    assert "line 4 ('13/01/2021'), line 5 ('Jan 05 2021')" in msg


# ------------------------------------------------------------------ 4. out-of-range times


def test_out_of_range_dates_are_errors_not_wrapped(tmp_path):
    p = _csv(tmp_path, "oob.csv", ["1,1,9999-12-31", "1,2,0201-03-05", "1,3,2020-01-01"])
    with pytest.raises(DataError, match=r"oob\.csv: column 'timestamp': 2 line\(s\) are outside "
                                        r"the supported range.*line 2 \('9999-12-31'\), "
                                        r"line 3 \('0201-03-05'\)"):
        _load(p)  # became 1816 and 1954


def test_millisecond_epochs_read_as_seconds_name_the_unit_option(tmp_path):
    p = _csv(tmp_path, "ms.csv", ["1,1,1600000000123", "1,2,1600000100000"])
    with pytest.raises(DataError) as err:
        _load(p, timestamp_unit="s")
    msg = str(err.value)
    assert "ms.csv" in msg and "column 'when' (timestamp)" in msg
    assert "look like ms since the Unix epoch: pass timestamp_unit='ms'" in msg
    ev = _load(p, timestamp_unit="ms").events  # exact: no float rounding of the ms
    assert ev["timestamp"].iloc[0] == pd.Timestamp("2020-09-13 12:26:40.123")
    secs = _csv(tmp_path, "secs.csv", ["1,1,1600000000", "1,2,1600000100"])
    with pytest.raises(DataError, match=r"secs\.csv: column 'when' \(timestamp\): with "
                                        r"timestamp_unit='ms' the median time is 1970-01-19.*"
                                        r"look like s since the Unix epoch: pass "
                                        r"timestamp_unit='s'"):
        _load(secs, timestamp_unit="ms")  # silently January 1970 before
    kept = _load(secs, timestamp_unit="ms", timestamp_origin="1970-01-01").events
    assert kept["timestamp"].iloc[0] == pd.Timestamp("1970-01-19 12:26:40")


# ------------------------------------------------------------------ 5. mixed UTC offsets


def test_mixed_utc_offsets_are_converted_to_utc_and_counted(tmp_path):
    p = _csv(tmp_path, "tz.csv", ["1,1,2021-01-01T10:00:00Z", "1,2,2021-01-01T10:00:00+0100",
                                  "1,3,2021-01-01T10:00:00-0530"])
    data = _load(p)
    assert data.events["timestamp"].tolist() == [
        pd.Timestamp("2021-01-01 10:00"), pd.Timestamp("2021-01-01 09:00"),
        pd.Timestamp("2021-01-01 15:30")]
    assert data.repairs.count("utc_offsets_to_utc") == 3
    same = _csv(tmp_path, "tz1.csv", ["1,1,2021-01-01T10:00:00+0100",
                                      "1,2,2021-01-01T11:00:00+0100"])
    kept = _load(same)  # one offset: local wall-clock time, as documented
    assert kept.events["timestamp"].iloc[0] == pd.Timestamp("2021-01-01 10:00")
    assert kept.repairs.count("utc_offsets_to_utc") == 0


# ------------------------------------------------------------------ 6. ugly inputs


def test_utf16_with_bom_is_read(tmp_path):
    p = tmp_path / "u16.csv"
    p.write_bytes("cust,prod,when\ncafé,1,2021-01-01\ncafé,2,2021-01-02\n".encode("utf-16"))
    data = _load(p)
    assert data.customer_features["customer_key"].tolist() == ["café"]


def test_undecodable_file_names_the_encoding_option(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("cust,prod,when\ncafé,1,2021-01-01\ncafé,2,2021-01-02\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv: cannot decode the file as 'utf-8'.*"
                                        r"encoding='latin-1'"):
        _load(p)
    assert len(_load(p, encoding="latin-1").events) == 2


def test_utf8_file_read_with_a_single_byte_encoding_is_refused_not_mojibake(tmp_path):
    p = tmp_path / "u8.csv"
    p.write_text("cust,prod,when\ncafé,1,2021-01-01\nthé,2,2021-01-02\n", encoding="utf-8")
    for enc in ("latin-1", "cp1252", "iso-8859-15"):
        with pytest.raises(DataError, match=r"u8\.csv: encoding='.*' was given, but the file is "
                                            r"valid UTF-8.*line 2: 'café,1,2021-01-01'.*"
                                            r"cafÃ©.*Pass encoding='utf-8'"):
            _load(p, encoding=enc)
    assert _load(p).customer_features["customer_key"].tolist() == ["café", "thé"]
    assert len(_load(p, encoding="utf-8").events) == 2
    ascii_only = _csv(tmp_path, "plain.csv", ["a,1,2021-01-01", "a,2,2021-01-02"])
    assert len(_load(ascii_only, encoding="latin-1").events) == 2  # nothing to garble


def test_item_id_minus_one_is_no_item_in_number_and_text_columns_and_counted(tmp_path):
    rows = ["1,-1,2021-01-01", "1,7,2021-01-02", "2,7,2021-01-03", "2, -1 ,2021-01-04"]
    data = _load(_csv(tmp_path, "num.csv", rows))
    assert data.repairs.count("no_item") == 2
    assert sorted(data.events["item_id"].tolist()) == [-1, -1, 7, 7]
    text = _load(_csv(tmp_path, "txt.csv", [r.replace(",7,", ",A7,") for r in rows]))
    assert text.repairs.count("no_item") == 2
    assert sorted(text.events["item_id"].tolist()) == [-1, -1, 0, 0]  # '-1' is not a product
    assert text.item_features.loc[0, "item_key"] == "A7"
    store = load_sequences("tabular", {"path": str(tmp_path / "txt.csv"), "columns": COLS},
                           cache_dir=None, progress=False)
    assert store.n_items == 1  # NO_ITEM never enters the vocabulary


def test_optional_columns_named_like_their_key_are_mapped_and_counted(tmp_path):
    p = _csv(tmp_path, "named.csv", [f"{c},{k},2021-01-0{1 + k} 10:00:00,b{c}{k // 2},{1 + k % 2},2.5"
                                     for c in range(3) for k in range(4)],
             header="cust,prod,when,basket_id,quantity,value")
    data = _load(p)
    assert data.repairs.count("mapped_by_name") == 3
    ev = data.events
    assert ev.groupby("customer_id")["basket_id"].nunique().tolist() == [2, 2, 2]  # the file's baskets
    assert sorted(ev["quantity"].unique()) == [1.0, 2.0] and (ev["value"] == 2.5).all()
    off = _load(p, columns={**COLS, "basket_id": False, "quantity": False})
    assert off.repairs.count("mapped_by_name") == 1  # value only
    assert off.events.groupby("customer_id")["basket_id"].nunique().tolist() == [4, 4, 4]
    assert (off.events["quantity"] == 1).all()
    price = _csv(tmp_path, "price.csv", ["1,1,2021-01-01,2,3", "1,2,2021-01-02,1,4"],
                 header="cust,prod,when,quantity,unit_price")
    assert _load(price).events["value"].tolist() == [6.0, 4.0]  # quantity x unit_price


def test_parquet_named_csv_and_directory_named_csv(tmp_path):
    p = tmp_path / "really_parquet.csv"
    pd.DataFrame({"cust": [1, 2], "prod": [1, 2], "when": ["2021-01-01"] * 2}).to_parquet(p)
    with pytest.raises(DataError, match=r"really_parquet\.csv: this is a Parquet file.*"
                                        r"format='parquet'"):
        _load(p)
    assert len(_load(p, format="parquet").events) == 2
    d = tmp_path / "x.csv"
    d.mkdir()
    with pytest.raises(DataError, match=r"x\.csv: is a directory, not a CSV file"):
        _load(d)


def test_semicolon_separated_file_names_the_sep_option(tmp_path):
    p = _csv(tmp_path, "semi.csv", ["1;1;2021-01-01", "1;2;2021-01-02"], header="cust;prod;when")
    with pytest.raises(DataError, match=r"semi\.csv: column\(s\) \['cust', 'prod', 'when'\].*"
                                        r"the file is ';'-separated, pass sep=';'"):
        _load(p)
    assert len(_load(p, sep=";").events) == 2


def test_one_row_csv_fails_naming_the_file(tmp_path):
    p = _csv(tmp_path, "one.csv", ["1,1,2021-01-01"])
    with pytest.raises(DataError, match=r"one\.csv: only 1 event\(s\) left of 1 line\(s\) read; "
                                        r"a sequence data set needs at least 2 events"):
        load_sequences("tabular", {"path": str(p), "columns": COLS}, cache_dir=None,
                       progress=False)


# ------------------------------------------------------------------ 7. cache checksums


def _cached(tmp_path):
    opts = {"n_customers": 40, "seed": 3}
    first = load_sequences("synthetic", opts, cache_dir=tmp_path, progress=False)
    return opts, tmp_path / fingerprint("synthetic", opts), {
        k: np.array(v) for k, v in first.arrays().items()}


def test_cache_meta_records_a_checksum_per_array(tmp_path):
    _, entry, arrays = _cached(tmp_path)
    checks = json.loads((entry / "meta.json").read_text())["arrays"]
    assert set(checks) == set(arrays)
    assert all(set(c) == {"dtype", "shape", "nbytes", "crc32"} for c in checks.values())


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_damaged_cache_file_is_rebuilt_with_a_warning_naming_it(tmp_path, damage):
    opts, entry, arrays = _cached(tmp_path)
    f = entry / "time.npy"
    raw = bytearray(f.read_bytes())
    if damage == "flip":
        raw[-3] ^= 0x40  # one bit of one timestamp: same size, same header
        f.write_bytes(bytes(raw))
    elif damage == "truncate":
        f.write_bytes(bytes(raw[:-8]))
    else:
        f.write_bytes(b"not a numpy file")
    with pytest.raises(DataError, match=r"time\.npy"):
        load_store(entry)
    with pytest.warns(CacheWarning, match=r"time\.npy.*"):
        store = load_sequences("synthetic", opts, cache_dir=tmp_path, progress=False)
    assert not store.meta["cache"]["hit"]  # was a silent hit on the flipped file
    for key, arr in arrays.items():
        np.testing.assert_array_equal(store.arrays()[key], arr, err_msg=key)
    again = load_sequences("synthetic", opts, cache_dir=tmp_path, progress=False)
    assert again.meta["cache"]["hit"]
