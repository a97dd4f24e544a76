"""SequenceStore construction, invariants, cache (fingerprint, atomic write, mmap)."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attnlab.data import pipeline
from attnlab.data.events import DataError
from attnlab.data.pipeline import (
    CacheWarning, fingerprint, load_sequences, load_store, store_from_config,
)
from attnlab.data.schema import NO_ITEM, EventType
from attnlab.data.sequences import build_store
from attnlab.data.sources import get_source

FIX = Path(__file__).resolve().parent.parent / "fixtures"
SYN = {"n_customers": 400, "n_items": 120, "seed": 5, "campaigns_per_customer": 1.0}


@pytest.fixture(scope="module")
def data():
    return get_source("synthetic").load(**SYN)


@pytest.fixture(scope="module")
def store(data):
    return build_store(data, seed=0, progress=False)


def test_store_invariants(store, data):
    ev = data.events
    off = store.offsets
    assert off[0] == 0 and off[-1] == store.n_events == len(ev)  # every event kept
    assert np.all(np.diff(off) >= 0) and store.offsets.dtype == np.int64
    assert np.all(np.diff(store.customer_ids) > 0)
    np.testing.assert_array_equal(store.lengths, ev.groupby("customer_id").size().to_numpy())
    # sorted by (customer, time, basket) inside each customer
    cust = np.repeat(np.arange(store.n_customers), store.lengths)
    key = np.lexsort((store.basket, store.time, cust))
    np.testing.assert_array_equal(key, np.arange(store.n_events))
    # dtypes of the contract
    assert store.item.dtype == np.int32 and store.time.dtype == np.int64
    assert store.event_type.dtype == np.int8 and store.quantity.dtype == np.float32
    # vocabulary: 0 = no item, 1.. = real items
    assert store.item_vocab[0] == NO_ITEM and np.all(np.diff(store.item_vocab[1:]) > 0)
    camp = store.event_type == EventType.CAMPAIGN
    assert camp.any() and np.all(store.item[camp] == 0) and np.all(store.item[~camp] > 0)
    # per-event content preserved (multiset of (customer id, source item, time))
    got = pd.DataFrame({"c": store.customer_ids[cust], "i": store.item_vocab[store.item],
                        "t": store.time}).sort_values(["c", "i", "t"]).to_numpy()
    t = ev["timestamp"].to_numpy().astype("datetime64[s]").astype(np.int64)
    want = pd.DataFrame({"c": ev["customer_id"], "i": ev["item_id"], "t": t}) \
        .sort_values(["c", "i", "t"]).to_numpy()
    np.testing.assert_array_equal(got, want)


def test_side_information_aligned_with_vocab(store, data):
    cat = store.item_side["category"]
    assert cat.shape == (store.n_items + 1,) and cat[0] == 0
    labels = np.array(store.item_side_vocab["category"], dtype=object)[cat[1:]]
    np.testing.assert_array_equal(labels, data.item_features.loc[store.item_vocab[1:], "category"])
    assert np.isnan(store.item_numeric["price"][0])
    np.testing.assert_array_equal(store.customer_numeric["churned"],
                                  data.customer_features.loc[store.customer_ids, "churned"])


def test_within_basket_order_is_seeded_shuffle(data, store):
    other = build_store(data, seed=1, progress=False)
    again = build_store(data, seed=0, progress=False)
    np.testing.assert_array_equal(store.item, again.item)
    assert not np.array_equal(store.item, other.item)  # order inside baskets differs
    np.testing.assert_array_equal(store.basket, other.basket)  # ... but only inside baskets
    key = lambda s: np.sort(s.basket.astype(np.int64) * 10_000 + s.item)  # noqa: E731
    np.testing.assert_array_equal(key(store), key(other))


def test_history_helper(store):
    c = int(np.argmax(store.lengths >= 3))
    h = store.history(c)
    assert len(h["item"]) == store.lengths[c] and store.lengths[c] >= 3
    end = int(store.offsets[c]) + 2
    assert len(store.history(c, end)["time"]) == 2
    with pytest.raises(ValueError):
        store.history(c, int(store.offsets[c + 1]) + 1)
    assert store.customer_index(int(store.customer_ids[c])) == c
    with pytest.raises(KeyError):
        store.customer_index(-5)


def test_cache_hit_identical_never_rebuilds_and_memory_mapped(tmp_path, monkeypatch):
    # Speed of a hit is measured in experiments/data_bench.py, not timed here (a
    # shared CI CPU made a wall-clock ratio flaky); here: a hit never re-reads the
    # source nor rebuilds the store.
    from attnlab.data import pipeline

    opts = {"n_customers": 20_000, "seed": 1}
    cold = load_sequences("synthetic", opts, cache_dir=tmp_path, progress=False)

    def no_rebuild(*a, **k):
        raise AssertionError("a cache hit rebuilt the store")

    monkeypatch.setattr(pipeline, "_build", no_rebuild)
    monkeypatch.setattr(pipeline, "load_events", no_rebuild)
    hot = load_sequences("synthetic", opts, cache_dir=tmp_path, progress=False)
    assert not cold.meta["cache"]["hit"] and hot.meta["cache"]["hit"]
    with pytest.raises(AssertionError, match="rebuilt"):  # the guard is live
        load_sequences("synthetic", opts, cache_dir=tmp_path, progress=False, refresh=True)
    assert isinstance(hot.item, np.memmap) and not hot.item.flags.writeable
    for name, arr in cold.arrays().items():
        np.testing.assert_array_equal(arr, hot.arrays()[name], err_msg=name)
    assert hot.item_side_vocab == cold.item_side_vocab
    for key in ("fingerprint", "source", "options", "repairs", "build_seconds"):
        assert key in hot.meta
    assert hot.meta["options"]["n_customers"] == 20_000
    assert hot.fingerprint == fingerprint("synthetic", opts)
    assert hot.meta["repairs"][0]["code"] == "simulated"


def test_fingerprint_changes_with_options_seed_and_files(tmp_path):
    base = fingerprint("synthetic", {"n_customers": 10})
    assert base == fingerprint("synthetic", {"n_customers": 10, "n_items": 200})  # default
    assert base != fingerprint("synthetic", {"n_customers": 11})
    assert base != fingerprint("synthetic", {"n_customers": 10}, seed=1)
    p = tmp_path / "ev.csv"
    p.write_text((FIX / "wrong_type.csv").read_text().replace("two", "2"))
    opts = {"path": str(p), "columns": {"customer_id": "user", "item_id": "item",
                                        "timestamp": "ts", "quantity": "qty"}}
    a = fingerprint("tabular", opts)
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert fingerprint("tabular", opts) == a      # touched, same contents: same data
    q = tmp_path / "copy" / "ev.csv"              # the same file installed elsewhere
    q.parent.mkdir()
    q.write_bytes(p.read_bytes())
    assert _payload_files("tabular", opts) == _payload_files("tabular", {**opts, "path": str(q)})  # same raw-file key
    p.write_text(p.read_text().replace(",11,", ",12,"))  # same size, other contents
    assert p.stat().st_size == q.stat().st_size
    assert fingerprint("tabular", opts) != a


def _payload_files(name, opts):
    """The raw-file part of a fingerprint: (file name, size, content digest) per file."""
    src = pipeline.get_source(name)
    return [[f.name, f.stat().st_size, pipeline.file_digest(f)] for f in src.files(**src.resolve_options(opts))]


def test_file_digests_are_remembered_in_the_cache_and_survive_a_damaged_book(tmp_path, monkeypatch):
    p = tmp_path / "ev.csv"
    p.write_text((FIX / "wrong_type.csv").read_text().replace("two", "2"))
    opts = {"path": str(p), "columns": {"customer_id": "user", "item_id": "item",
                                        "timestamp": "ts", "quantity": "qty"}}
    cache = tmp_path / "cache"
    want = hashlib.sha256(p.read_bytes()).hexdigest()
    store = load_sequences("tabular", opts, cache_dir=cache, progress=False)
    book = json.loads((cache / pipeline.DIGESTS_FILE).read_text())
    assert book[str(p.resolve())]["sha256"] == want
    pipeline._DIGESTS.clear()
    def no_reads(*a, **k):
        raise AssertionError("re-read a raw file whose digest the cache holds")
    monkeypatch.setattr(pipeline, "open", no_reads, raising=False)  # a fresh process: the book answers
    assert pipeline.file_digest(p, cache_dir=cache) == want
    monkeypatch.undo()
    assert load_sequences("tabular", opts, cache_dir=cache, progress=False).fingerprint == store.fingerprint
    pipeline._DIGESTS.clear()
    p.write_text(p.read_text().replace(",11,", ",12,"))        # edited: re-hashed, a new key
    assert pipeline.file_digest(p, cache_dir=cache) == hashlib.sha256(p.read_bytes()).hexdigest() != want
    pipeline._DIGESTS.clear()
    (cache / pipeline.DIGESTS_FILE).write_text("{not json")    # damaged book: ignored, then rewritten
    assert pipeline.file_digest(p, cache_dir=cache) == hashlib.sha256(p.read_bytes()).hexdigest()
    load_sequences("tabular", opts, cache_dir=cache, progress=False)
    assert str(p.resolve()) in json.loads((cache / pipeline.DIGESTS_FILE).read_text())

def test_crashed_write_is_not_a_cache_hit(tmp_path, monkeypatch):
    opts = {"n_customers": 50, "seed": 2}
    fp = fingerprint("synthetic", opts)

    def crash(store, directory, **kw):
        Path(directory).mkdir(parents=True)
        np.save(Path(directory) / "offsets.npy", store.offsets)
        raise KeyboardInterrupt("simulated crash mid-write")

    monkeypatch.setattr(pipeline, "save_store", crash)
    with pytest.raises(KeyboardInterrupt):
        load_sequences("synthetic", opts, cache_dir=tmp_path, progress=False)
    assert not (tmp_path / fp).exists()  # nothing under the final name
    assert not list(tmp_path.glob(".tmp-*"))  # temp dir cleaned up
    monkeypatch.undo()
    # a partial entry under the final name (e.g. an old non-atomic writer) is ignored
    (tmp_path / fp).mkdir()
    np.save(tmp_path / fp / "offsets.npy", np.zeros(3))
    (tmp_path / fp / "meta.json").write_text('{"complete": fals')  # truncated JSON
    with pytest.raises(DataError, match="not a complete attnlab store"):
        load_store(tmp_path / fp)
    with pytest.warns(CacheWarning, match="cannot be trusted, rebuilding.*no valid meta.json"):
        store = load_sequences("synthetic", opts, cache_dir=tmp_path, progress=False)
    assert not store.meta["cache"]["hit"] and store.n_customers == 50
    assert json.loads((tmp_path / fp / "meta.json").read_text())["complete"] is True
    again = load_sequences("synthetic", opts, cache_dir=tmp_path, progress=False)
    assert again.meta["cache"]["hit"]
    fresh = load_sequences("synthetic", opts, cache_dir=tmp_path, progress=False, refresh=True)
    assert not fresh.meta["cache"]["hit"]


def test_tabular_through_pipeline_and_config(tmp_path, capsys):
    cfg = {"name": "tabular", "options": {
        "path": str(FIX / "online_retail_small.csv"),
        "columns": {"customer_id": "Customer ID", "item_id": "StockCode",
                    "timestamp": "InvoiceDate", "basket_id": "Invoice",
                    "quantity": "Quantity", "unit_price": "Price"},
        "item_features": ["Description"]}}
    store = store_from_config(cfg, cache_dir=tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "1 negative-quantity rows became RETURN events" in err  # report printed
    assert store.n_events == 10 and store.n_customers == 3 and store.n_items == 8
    assert "item_key" in store.item_side
    keys = np.array(store.item_side_vocab["item_key"], dtype=object)[store.item_side["item_key"]]
    assert "85123A" in keys.tolist()
    assert any("RETURN" in r["message"] for r in store.meta["repairs"])
    with pytest.raises(DataError, match="Known options"):
        load_sequences("tabular", {"pathh": "x"}, cache_dir=tmp_path, progress=False)
