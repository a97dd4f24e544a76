"""Out-of-core Parquet ingest (issue 15, part 4): the ``parquet_stream`` source builds the
same store as the in-memory ``tabular`` source (up to the order inside a basket), in
many batches and ranges, with the same repairs, clear errors, stable checksums, an
atomic cache entry; and the synthetic Parquet writer."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from attnlab.data import out_of_core
from attnlab.data.events import DataError
from attnlab.data.pipeline import (
    fingerprint, is_complete, load_events, load_sequences, load_store,
)
from attnlab.data.schema import EventType
from attnlab.data.sources.table_files import MAPPING_KEYS
from attnlab.data.synthetic_parquet import COLUMNS, write_synthetic_parquet

SMALL = {"batch_rows": 700, "memory_budget_mb": 0.2}  # ~1k rows per range: many of each


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path = tmp_path_factory.mktemp("pq") / "events.parquet"
    info = write_synthetic_parquet(path, n_events=20_000, block_customers=250,
                                   row_group_rows=3_000, seed=3, n_items=80)
    return path, info


def _stores(path, tmp_path, columns=COLUMNS, stream_opts=SMALL, **common):
    tab = load_sequences("tabular", {"path": str(path), "columns": columns, **common},
                         cache_dir=tmp_path / "tab", progress=False)
    st = load_sequences("parquet_stream", {"path": str(path), "columns": columns, **common,
                                           **stream_opts},
                        cache_dir=tmp_path / "stream", progress=False)
    return tab, st


def _canonical(store):
    """Every per-event array with each basket's events sorted by item (then quantity,
    value, type): the within-basket order is the one allowed difference."""
    cust = np.repeat(np.arange(store.n_customers), np.diff(store.offsets))
    order = np.lexsort((store.event_type, store.value, store.quantity, store.item,
                        store.basket, store.time, cust))
    return {k: np.asarray(getattr(store, k))[order]
            for k in ("item", "time", "event_type", "basket", "quantity", "value")}


def _assert_same(tab, st, *, exact=False):
    for k in ("offsets", "customer_ids", "item_vocab"):
        np.testing.assert_array_equal(np.asarray(getattr(st, k)), np.asarray(getattr(tab, k)),
                                      err_msg=k)
    assert st.meta["counts"] == tab.meta["counts"]
    assert st.meta["repairs"] == tab.meta["repairs"]
    # the sort keys (customer, time, basket) are identical position by position
    for k in ("time", "basket"):
        np.testing.assert_array_equal(np.asarray(getattr(st, k)), np.asarray(getattr(tab, k)))
    a, b = _canonical(tab), _canonical(st)
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)
        assert np.asarray(getattr(st, k)).dtype == np.asarray(getattr(tab, k)).dtype
    if exact:
        for k in a:
            np.testing.assert_array_equal(np.asarray(getattr(st, k)),
                                          np.asarray(getattr(tab, k)), err_msg=k)


# ------------------------------------------------------------------------------ writer


def test_writer_exact_rows_row_groups_distinct_ids_and_seeded(synth, tmp_path):
    path, info = synth
    meta = pq.ParquetFile(path).metadata
    assert info["rows"] == meta.num_rows == 20_000
    assert meta.num_row_groups == info["row_groups"] > 1 and info["blocks"] > 1
    t = pq.read_table(path).to_pandas()
    assert list(t.columns) == list(COLUMNS)
    assert str(pq.read_schema(path).field("timestamp").type) == "timestamp[ms]"
    # customers of different blocks never share an id; baskets never span customers
    assert t["customer_id"].nunique() == info["customers"]
    assert (t.groupby("basket_id")["customer_id"].nunique() == 1).all()
    again = write_synthetic_parquet(tmp_path / "again.parquet", n_events=20_000,
                                    block_customers=250, row_group_rows=3_000, seed=3,
                                    n_items=80)
    assert pq.read_table(tmp_path / "again.parquet").equals(pq.read_table(path))
    assert again["rows"] == 20_000
    other = write_synthetic_parquet(tmp_path / "other.parquet", n_events=5_000,
                                    block_customers=250, seed=4, n_items=80)
    assert other["rows"] == 5_000
    assert not pq.read_table(tmp_path / "other.parquet").equals(pq.read_table(path).slice(0, 5000))
    assert not list(tmp_path.glob(".*tmp*"))  # atomic: no temporary file left


# --------------------------------------------------------------------- equivalence


def test_stream_equals_in_memory_build_many_batches_and_ranges(synth, tmp_path):
    path, _ = synth
    tab, st = _stores(path, tmp_path)
    ooc = st.meta["out_of_core"]
    assert ooc["ranges"] > 10 and ooc["rows"] == 20_000
    assert st.meta["repairs"][0]["code"] == "raw_rows"
    assert st.meta["source"] == "parquet_stream" and st.meta["fingerprint"].startswith(
        "parquet_stream-")
    _assert_same(tab, st)
    assert tab.meta["counts"]["events"] < 20_000  # the simulator repeats items: duplicates
    assert isinstance(st.item, np.memmap) and isinstance(st.time, np.memmap)
    assert not st.item.flags.writeable
    # one range, one batch: the same store (the row-number tiebreak does not depend on them)
    one = load_sequences("parquet_stream", {"path": str(path), "columns": COLUMNS},
                         cache_dir=tmp_path / "one", progress=False)
    assert one.meta["out_of_core"]["ranges"] == 1
    for k in ("item", "time", "basket", "quantity", "value", "event_type", "offsets"):
        np.testing.assert_array_equal(np.asarray(getattr(one, k)), np.asarray(getattr(st, k)))


def test_exactly_identical_when_every_basket_holds_one_item(tmp_path):
    rng = np.random.default_rng(0)
    n = 3000
    t = pa.table({
        "user": rng.integers(0, 150, n) * 7 + 1_000_000_000_000,
        "sku": rng.integers(-1, 60, n),
        "ts": pa.array(1_600_000_000_000 + rng.integers(0, 10**9, n), pa.timestamp("ms")),
        "order": np.arange(n, dtype=np.int64) * 3,
        "qty": rng.integers(-2, 4, n).astype(np.float32),
        "price": rng.random(n) * 10,
    })
    pq.write_table(t, tmp_path / "one.parquet", row_group_size=500)
    cols = {"customer_id": "user", "item_id": "sku", "timestamp": "ts", "basket_id": "order",
            "quantity": "qty", "unit_price": "price"}
    tab, st = _stores(tmp_path / "one.parquet", tmp_path, columns=cols)
    _assert_same(tab, st, exact=True)
    assert st.meta["counts"]["events"] == n


def test_files_of_a_directory_and_a_glob_give_the_same_store(synth, tmp_path):
    path, _ = synth
    table = pq.read_table(path)
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, lo in enumerate(range(0, table.num_rows, 8_000)):
        pq.write_table(table.slice(lo, 8_000), parts / f"part-{i:02d}.parquet")
    single = load_sequences("parquet_stream", {"path": str(path), "columns": COLUMNS, **SMALL},
                            cache_dir=tmp_path / "a", progress=False)
    for p in (parts, parts / "part-*.parquet"):
        split = load_sequences("parquet_stream", {"path": str(p), "columns": COLUMNS, **SMALL},
                               cache_dir=tmp_path / "b", progress=False)
        assert split.meta["out_of_core"]["files"] == 3
        for k in ("item", "time", "basket", "quantity", "value", "offsets", "customer_ids"):
            np.testing.assert_array_equal(np.asarray(getattr(split, k)),
                                          np.asarray(getattr(single, k)))


# --------------------------------------------------------------------------- repairs


def _dirty(path: Path) -> Path:
    """Duplicates, negative and zero quantities, NO_ITEM rows, missing ids (nulls),
    one customer whose only row is negative, float ids that are whole numbers."""
    rows = [  # customer, item, time (s), basket, qty, value
        (1, 10, 100, 1, 2.0, 4.0), (1, 10, 100, 1, 2.0, 4.0), (1, 11, 100, 1, 1.0, 1.5),
        (1, -1, 150, 2, 0.0, 0.0), (1, 12, 200, 3, -1.0, -3.0), (2, 10, 50, 4, 1.0, 2.0),
        (2, None, 60, 5, 1.0, 1.0), (None, 13, 70, 6, 1.0, 1.0), (3, 14, 80, 7, -2.0, -5.0),
        (2, 12, 90, 8, 0.0, 0.0), (2, 12, 90, 8, 0.0, 0.0), (2, 12, 90, 8, 0.0, 0.0),
        (4, 15, 30, 9, 3.0, 3.0), (4, 16, 30, 9, 1.0, -0.0), (4, 16, 30, 9, 1.0, 0.0),
    ]
    cust, item, ts, basket, q, v = zip(*rows)
    pq.write_table(pa.table({
        "c": pa.array(cust, pa.int64()), "i": pa.array(item, pa.float64()),
        "t": pa.array(np.array(ts) * 1000, pa.timestamp("ms", tz="Europe/Berlin")),
        "basket_id": pa.array(basket, pa.int64()), "quantity": pa.array(q, pa.float32()),
        "value": pa.array(v, pa.float64()),
    }), path, row_group_size=4)
    return path


@pytest.mark.parametrize("negative", ["return", "drop"])
@pytest.mark.parametrize("duplicates", ["drop", "keep"])
def test_same_repairs_as_the_tabular_source(tmp_path, negative, duplicates):
    f = _dirty(tmp_path / "dirty.parquet")
    cols = {"customer_id": "c", "item_id": "i", "timestamp": "t"}  # the rest by name
    opts = {"on_missing_ids": "drop", "negative_quantity": negative, "duplicates": duplicates}
    tab, st = _stores(f, tmp_path, columns=cols, stream_opts={"batch_rows": 3,
                                                              "memory_budget_mb": 1e-3},
                      **opts)
    _assert_same(tab, st)
    got = {r["code"]: r["count"] for r in st.meta["repairs"]}
    assert got["missing_ids"] == 2 and got["no_item"] == 1 and got["mapped_by_name"] == 3
    assert got["exact_duplicates" if duplicates == "drop" else "negative_quantity"] == (
        4 if duplicates == "drop" else 2)
    assert (3 in st.customer_ids) == (negative == "return")
    if negative == "return":
        assert (np.asarray(st.event_type) == EventType.RETURN).sum() == 2
        assert (np.asarray(st.quantity) >= 0).all()


def test_default_basket_unit_price_and_numeric_times_match_tabular(tmp_path):
    rng = np.random.default_rng(1)
    n = 2500
    pq.write_table(pa.table({
        "user": rng.integers(0, 90, n), "sku": rng.integers(0, 40, n),
        "epoch": 1_500_000_000 + rng.integers(0, 200, n) * 3600,
        "units": rng.integers(-1, 3, n), "price": rng.random(n).astype(np.float32) * 5,
    }), tmp_path / "n.parquet", row_group_size=400)
    cols = {"customer_id": "user", "item_id": "sku", "timestamp": "epoch",
            "quantity": "units", "unit_price": "price"}
    tab, st = _stores(tmp_path / "n.parquet", tmp_path, columns=cols,
                      stream_opts={"batch_rows": 333, "memory_budget_mb": 0.05},
                      timestamp_unit="s")
    _assert_same(tab, st)
    assert "default_basket" in {r["code"] for r in st.meta["repairs"]}


def test_customer_subsample_is_the_in_memory_one(synth, tmp_path):
    path, _ = synth
    tab, st = _stores(path, tmp_path, max_customers=40, subsample_seed=2)
    assert st.n_customers == 40
    np.testing.assert_array_equal(np.asarray(st.customer_ids), np.asarray(tab.customer_ids))
    np.testing.assert_array_equal(np.asarray(st.offsets), np.asarray(tab.offsets))
    np.testing.assert_array_equal(np.asarray(st.item_vocab), np.asarray(tab.item_vocab))
    assert st.meta["source_meta"]["subsample"]["customers_before"] > 40


# ---------------------------------------------------------------------------- errors


def test_bad_input_gives_clear_errors(tmp_path):
    base = {"c": pa.array([1, 2, 3], pa.int64()), "i": pa.array([5, 6, 7], pa.int64()),
            "t": pa.array([10, 20, 30], pa.timestamp("s"))}
    cols = {"customer_id": "c", "item_id": "i", "timestamp": "t"}

    def build(name, **over):
        f = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({**base, **over}), f)
        return load_sequences("parquet_stream", {"path": str(f), "columns": cols},
                              cache_dir=tmp_path / "c", progress=False)

    with pytest.raises(DataError, match=r"text.parquet: column 'c' \(customer_id\) has type "
                                        r"string.*needs integer ids.*'tabular'"):
        build("text", c=pa.array(["a", "b", "c"]))
    with pytest.raises(DataError, match=r"nulls.parquet: column 'i' \(item_id\): 1 row\(s\) "
                                        r"have no id. First offending: row 1.*on_missing_ids"):
        build("nulls", i=pa.array([5, None, 7], pa.int64()))
    with pytest.raises(DataError, match=r"strtime.parquet: column 't' \(timestamp\) has type "
                                        r"string.*'tabular'"):
        build("strtime", t=pa.array(["2020-01-01", "2020-01-02", "2020-01-03"]))
    with pytest.raises(DataError, match=r"numbers.*timestamp_unit='s'"):
        build("numtime", t=pa.array([1, 2, 3], pa.int64()))
    with pytest.raises(DataError, match=r"floatid.parquet: column 'c'.*row 2 \(3.5\)"):
        build("floatid", c=pa.array([1.0, 2.0, 3.5]))
    f = tmp_path / "nocol.parquet"
    pq.write_table(pa.table({k: v for k, v in base.items() if k != "t"}), f)
    with pytest.raises(DataError, match=r"nocol.parquet: column\(s\) \['t'\] named in the "
                                        r"column mapping are not in the file"):
        load_sequences("parquet_stream", {"path": str(f), "columns": cols},
                       cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(DataError, match="no Parquet files found"):
        load_sequences("parquet_stream", {"path": str(tmp_path / "none"), "columns": cols},
                       cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(DataError, match="memory_budget_mb"):
        load_sequences("parquet_stream", {"path": str(f), "columns": cols,
                                          "memory_budget_mb": 0},
                       cache_dir=tmp_path / "c", progress=False)
    assert not list((tmp_path / "c").iterdir())  # no entry, no temporary directory left


# ------------------------------------------------------------- cache and determinism


def test_two_builds_identical_checksums_and_fingerprint(synth, tmp_path):
    path, _ = synth
    opts = {"path": str(path), "columns": COLUMNS, **SMALL}
    a = load_sequences("parquet_stream", opts, cache_dir=tmp_path / "a", progress=False)
    b = load_sequences("parquet_stream", opts, cache_dir=tmp_path / "b", progress=False)
    assert a.fingerprint == b.fingerprint == fingerprint("parquet_stream", opts)
    meta = [json.loads((Path(s.meta["cache"]["path"]) / "meta.json").read_text())
            for s in (a, b)]
    assert meta[0]["arrays"] == meta[1]["arrays"]
    assert meta[0]["groups"] == {g: [] for g in meta[0]["groups"]}
    hit = load_sequences("parquet_stream", opts, cache_dir=tmp_path / "a", progress=False)
    assert hit.meta["cache"]["hit"]
    other_seed = load_sequences("parquet_stream", opts, cache_dir=tmp_path / "a", seed=1,
                                progress=False)
    assert other_seed.fingerprint != a.fingerprint
    assert not np.array_equal(np.asarray(other_seed.item), np.asarray(a.item))
    np.testing.assert_array_equal(np.asarray(other_seed.basket), np.asarray(a.basket))
    # a damaged file is caught by the chunked CRC check of load_store
    item = Path(a.meta["cache"]["path"]) / "item.npy"
    raw = bytearray(item.read_bytes())
    raw[-1] ^= 0xFF
    item.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="item.npy: checksum mismatch"):
        load_store(item.parent)


def test_killed_build_leaves_no_complete_entry(synth, tmp_path, monkeypatch):
    path, _ = synth
    opts = {"path": str(path), "columns": COLUMNS, **SMALL}
    real, calls = out_of_core._sort_range, []

    def dies(*args, **kw):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt("killed in pass 3")
        return real(*args, **kw)

    monkeypatch.setattr(out_of_core, "_sort_range", dies)
    with pytest.raises(KeyboardInterrupt):
        load_sequences("parquet_stream", opts, cache_dir=tmp_path / "c", progress=False)
    root = tmp_path / "c"
    assert not [d for d in root.iterdir() if is_complete(d)]
    assert not list(root.iterdir())  # temporary directory and spill files removed
    monkeypatch.setattr(out_of_core, "_sort_range", real)
    store = load_sequences("parquet_stream", opts, cache_dir=root, progress=False)
    assert not store.meta["cache"]["hit"] and store.n_events > 0


def test_without_cache_dir_and_in_memory_load(synth, tmp_path):
    path, _ = synth
    opts = {"path": str(path), "columns": COLUMNS}
    st = load_sequences("parquet_stream", opts, cache_dir=None, progress=False)
    assert st.meta["cache"]["path"] is None and isinstance(st.item, np.memmap)
    assert int(np.asarray(st.offsets)[-1]) == st.n_events and st.n_events > 0
    data = load_events("parquet_stream", opts)
    assert len(data.events) == st.n_events
    assert data.repairs.to_list() == st.meta["repairs"]


def test_npy_header_is_fixed_size_and_readable(tmp_path):
    h = out_of_core.npy_header(np.int32, 123_456_789_012)
    assert len(h) == out_of_core.NPY_HEADER_BYTES
    f = tmp_path / "x.npy"
    f.write_bytes(out_of_core.npy_header(np.int32, 3) + np.arange(3, dtype=np.int32).tobytes())
    np.testing.assert_array_equal(np.load(f, mmap_mode="r"), [0, 1, 2])


def test_sort_and_duplicates_are_exact_even_with_hash_collisions(monkeypatch):
    rng = np.random.default_rng(7)
    n = 4000
    local = rng.integers(0, 30, n)
    secs = rng.integers(0, 40, n)
    basket = rng.integers(0, 3, n)
    tb = out_of_core.tiebreak(np.arange(n), 11)
    np.testing.assert_array_equal(out_of_core._event_order(local, secs, basket, tb),
                                  np.lexsort((tb, basket, secs, local)))
    cols = {"customer_id": local, "item_id": rng.integers(0, 3, n), "time_ns": secs,
            "quantity": rng.integers(0, 2, n).astype(np.float32), "row": np.arange(n)}
    names = ["customer_id", "item_id", "time_ns", "quantity"]
    want = __import__("pandas").DataFrame({k: cols[k] for k in names}).duplicated().to_numpy()
    np.testing.assert_array_equal(out_of_core._duplicates(cols, names), want)
    monkeypatch.setattr(out_of_core, "_HASH_MULT", (0,) * 8)  # every row collides
    np.testing.assert_array_equal(out_of_core._duplicates(cols, names), want)


def test_config_lists_every_option():
    import inspect

    from hydra import compose, initialize_config_dir

    from attnlab.data.sources import parquet_stream

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["data=parquet_stream"]).data
    assert cfg.name == "parquet_stream"
    assert set(cfg.options) == set(inspect.signature(parquet_stream.load).parameters)
    assert set(cfg.options.columns) == set(MAPPING_KEYS)
