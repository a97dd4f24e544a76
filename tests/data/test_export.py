"""Split export (attnlab.data.export): Parquet and RecBole files round-trip to the split,
carry no test target (nor a same-basket item) into training, and refuse a leaking split."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from attnlab.data.export import RECBOLE_HEADER, LeakageError, check_formats, export_split, training_end
from attnlab.data.pipeline import load_sequences
from attnlab.data.schema import EventType
from attnlab.data.splits import churn_split, next_basket_split, next_item_split

ROOT = Path(__file__).resolve().parents[2]
H = 6  # max_history: short, so truncation is exercised


@pytest.fixture(scope="module")
def store():
    # campaign events carry no item: they are training events but never RecBole interactions
    return load_sequences("synthetic", {"n_customers": 150, "n_items": 60, "campaigns_per_customer": 1.0},
                          cache_dir=None, progress=False)


@pytest.fixture(scope="module")
def splits(store):
    return {"next_item": next_item_split(store, seed=0), "next_basket": next_basket_split(store)}


@pytest.fixture(scope="module")
def exported(store, splits, tmp_path_factory):
    out = {}
    for name, split in splits.items():
        d = tmp_path_factory.mktemp(name)
        out[name] = (d, export_split(store, split, d, dataset_name=f"syn_{name}", max_history=H))
    return out


def read_inter(path: Path) -> pd.DataFrame:
    """Reads an atomic file the way RecBole does: a 'name:type' header, tab separator,
    float columns as float64, tokens as strings, sequences split on single spaces."""
    lines = path.read_text().split("\n")
    assert lines[-1] == "" and all(line.count("\t") == 3 for line in lines[1:-1]), path
    header = lines[0].split("\t")
    assert tuple(header) == RECBOLE_HEADER
    types = dict(h.split(":") for h in header)
    df = pd.read_csv(path, sep="\t", keep_default_na=False,
                     dtype={h: np.float64 if h.endswith(":float") else str for h in header})
    df.columns = list(types)
    for name, t in types.items():
        if t == "token_seq":
            df[name] = [v.split(" ") for v in df[name]]
            assert all(all(tok for tok in seq) for seq in df[name]), f"empty token in {path}"
    return df


def history_of(store, c: int, end: int) -> list[int]:
    """Original ids of the purchased items customer row ``c`` sees before event ``end``."""
    lo = int(store.offsets[c])
    sl = slice(lo, end)
    keep = (store.event_type[sl] == EventType.PURCHASE) & (store.item[sl] > 0)
    return store.item_vocab[store.item[sl][keep]].tolist()


@pytest.mark.parametrize("protocol", ["next_item", "next_basket"])
def test_parquet_round_trip(store, splits, exported, protocol):
    split, (d, manifest) = splits[protocol], exported[protocol]
    # training events = the split's train_end prefixes, ids mapped back to the source's
    ev = pd.read_parquet(d / "train_events.parquet")
    end = np.asarray(split.train_end)
    idx = np.concatenate([np.arange(store.offsets[c], end[c]) for c in range(store.n_customers)]).astype(int)
    cust = np.repeat(np.arange(store.n_customers), end - store.offsets[:-1])
    np.testing.assert_array_equal(ev["customer_id"], store.customer_ids[cust])
    np.testing.assert_array_equal(ev["position"], idx - store.offsets[cust])
    np.testing.assert_array_equal(ev["item_id"], store.item_vocab[store.item[idx]])
    for col, arr in (("time", "time"), ("basket_id", "basket"), ("event_type", "event_type")):
        np.testing.assert_array_equal(ev[col], getattr(store, arr)[idx])
    assert (ev["event_type"] == EventType.CAMPAIGN).any()   # all event types, not only purchases
    assert manifest["counts"]["train_events"] == len(ev)
    # queries: same rows, customers, cut-offs, histories and targets as the split's
    for part in ("valid", "test"):
        ex = getattr(split, part)
        q = pd.read_parquet(d / f"{part}_queries.parquet")
        assert len(q) == len(ex) == manifest["counts"][f"{part}_queries"] > 0
        np.testing.assert_array_equal(q["row"], np.arange(len(ex)))
        np.testing.assert_array_equal(q["customer_id"], store.customer_ids[ex.customer])
        np.testing.assert_array_equal(q["cutoff"], ex.cutoff)
        np.testing.assert_array_equal(q["history_length"], ex.end - store.offsets[ex.customer])
        for m in range(len(ex)):
            want = store.item_vocab[ex.target_items[ex.target_offsets[m]:ex.target_offsets[m + 1]]]
            assert list(q["target_item_ids"][m]) == want.tolist()
            sl = slice(int(store.offsets[ex.customer[m]]), int(ex.end[m]))
            assert list(q["history_item_id"][m]) == store.item_vocab[store.item[sl]].tolist()
            assert list(q["history_time"][m]) == store.time[sl].tolist()
            assert max(q["history_time"][m], default=-1) < ex.cutoff[m]


@pytest.mark.parametrize("protocol", ["next_item", "next_basket"])
def test_no_test_target_or_same_basket_item_in_training(store, splits, exported, protocol):
    """The strict rule, computed from the store independently of the exporter."""
    split, (d, _) = splits[protocol], exported[protocol]
    ev = pd.read_parquet(d / "train_events.parquet")
    name = f"syn_{protocol}"
    train_rows = read_inter(d / "recbole" / name / f"{name}.train.inter")
    test = split.test
    checked = with_rows = 0
    for m in range(len(test)):
        c, end, cutoff = int(test.customer[m]), int(test.end[m]), int(test.cutoff[m])
        cid = int(store.customer_ids[c])
        targets = set(test.target_items[test.target_offsets[m]:test.target_offsets[m + 1]].tolist())
        later = np.arange(end, store.offsets[c + 1])
        # the target basket: where the first target purchase at/after the history end sits
        first = later[np.isin(store.item[later], list(targets))][0]
        basket = int(store.basket[first])
        basket_items = set(store.item_vocab[store.item[later[store.basket[later] == basket]]].tolist())
        assert basket_items >= set(store.item_vocab[list(targets)].tolist())
        mine = ev[ev["customer_id"] == cid]
        assert not (mine["basket_id"] == basket).any()
        late = mine[mine["time"] >= cutoff]
        assert late.empty, "training events at/after the test cut-off"
        rows = train_rows[train_rows["user_id"] == str(cid)]
        with_rows += len(rows) > 0
        assert not ((rows["timestamp"] >= cutoff) & rows["item_id"].isin([str(i) for i in basket_items])).any()
        assert (rows["timestamp"] < cutoff).all()
        checked += len(targets)
    assert checked == len(test.target_items) > 0 and with_rows > len(test) // 2


@pytest.mark.parametrize("protocol", ["next_item", "next_basket"])
def test_recbole_files_parse_and_match_the_split(store, splits, exported, protocol):
    split, (d, manifest) = splits[protocol], exported[protocol]
    name = f"syn_{protocol}"
    folder = d / "recbole" / name
    cfg = yaml.safe_load((folder / "recbole.yaml").read_text())
    assert cfg["dataset"] == name and cfg["benchmark_filename"] == ["train", "valid", "test"]
    assert Path(cfg["data_path"]) / name == folder.resolve()   # RecBole reads <data_path>/<dataset>/
    assert cfg["MAX_ITEM_LIST_LENGTH"] == H and cfg["eval_args"]["order"] == "TO"
    assert cfg["eval_args"]["mode"] == "full" and cfg["alias_of_item_id"] == ["item_id_list"]
    for part in ("valid", "test"):
        ex = getattr(split, part)
        rows = read_inter(folder / f"{name}.{part}.inter")
        q = pd.read_parquet(d / f"{part}_queries.parquet")
        assert len(rows) == manifest["recbole"]["rows"][part] == ex.target_offsets[-1]   # every query has a history
        for m in range(len(ex)):
            r0, n = int(q["recbole_first_row"][m]), int(q["n_targets"][m])
            block = rows.iloc[r0:r0 + n]
            assert (block["user_id"] == str(q["customer_id"][m])).all()
            assert block["item_id"].tolist() == [str(i) for i in q["target_item_ids"][m]]
            assert (block["timestamp"] == float(ex.cutoff[m])).all()
            want = [str(i) for i in history_of(store, int(ex.customer[m]), int(ex.end[m]))[-H:]]
            assert all(seq == want for seq in block["item_id_list"])
    train = read_inter(folder / f"{name}.train.inter")
    assert len(train) == manifest["recbole"]["rows"]["train"] > 0
    assert train["item_id_list"].map(len).between(1, H).all() and (train["item_id_list"].map(len) == H).any()
    # a training row's history: the customer's training purchases strictly before its time
    ev = pd.read_parquet(d / "train_events.parquet")
    buys = ev[(ev["event_type"] == EventType.PURCHASE) & (ev["item_id"] >= 0)]
    for r in train.sample(60, random_state=0).itertuples():
        mine = buys[(buys["customer_id"] == int(r.user_id)) & (buys["time"] < r.timestamp)]
        assert r.item_id_list == [str(i) for i in mine["item_id"].tolist()[-H:]]
    excluded = manifest["excluded"]["recbole"]
    in_files = set()
    for part in ("train", "valid", "test"):
        df = read_inter(folder / f"{name}.{part}.inter")
        in_files |= set(df["item_id"]) | {tok for seq in df["item_id_list"] for tok in seq}
    assert store.n_items - len(in_files) == excluded["catalogue_items_not_in_files"]   # RecBole's catalogue
    assert excluded["train_events_not_purchases_with_item"] > 0   # the campaign events, counted
    n_buys = len(buys)
    assert n_buys == len(train) + excluded["train_duplicate_basket_items"] + excluded["train_rows_without_history"]


def test_a_leaking_split_is_refused(store, splits, tmp_path):
    split = splits["next_item"]
    m = 0
    c = int(split.test.customer[m])
    others = np.flatnonzero(split.valid.customer != c)   # the customer's valid basket may not leak first
    train_end = np.array(split.train_end)
    train_end[c] = store.offsets[c + 1]                   # training now reads the test basket
    tampered = dataclasses.replace(split, train_end=train_end, valid=split.valid.take(others))
    with pytest.raises(LeakageError, match=rf"test target item .* of customer {store.customer_ids[c]}"):
        export_split(store, tampered, tmp_path / "a")
    assert not (tmp_path / "a").exists()   # checked before anything is written
    # the time rule alone: training reaches past a validation cut-off without a target basket
    nb = splits["next_basket"]
    m = 0
    c = int(nb.valid.customer[m])
    train_end = np.array(nb.train_end)
    train_end[c] += 1
    late = dataclasses.replace(nb, train_end=train_end)
    with pytest.raises(LeakageError):
        export_split(store, late, tmp_path / "b", formats=["parquet"])


def test_churn_exports_parquet_and_refuses_recbole(store, tmp_path):
    split = churn_split(store, horizon="2W", train_stride="1W")
    with pytest.raises(ValueError, match=r"RecBole has no churn task.*formats=\('parquet',\)"):
        export_split(store, split, tmp_path / "x")
    with pytest.raises(ValueError, match="RecBole has no churn task"):
        check_formats(["parquet", "recbole"], "churn")
    manifest = export_split(store, split, tmp_path, formats=["parquet"])
    assert manifest["formats"] == ["parquet"] and manifest["recbole"] is None
    assert not (tmp_path / "recbole").exists()
    # training events: per customer up to train_end or the end of its latest training row
    ev = pd.read_parquet(tmp_path / "train_events.parquet")
    end = np.array(split.train_end)
    for c, e in zip(split.train.customer, split.train.end):
        end[c] = max(end[c], e)
    np.testing.assert_array_equal(end, training_end(store, split))
    np.testing.assert_array_equal(ev["customer_id"], np.repeat(store.customer_ids, end - store.offsets[:-1]))
    np.testing.assert_array_equal(
        ev["position"], np.concatenate([np.arange(e - o) for e, o in zip(end, store.offsets[:-1])]))
    for part in ("train", "valid", "test"):
        ex = getattr(split, part)
        q = pd.read_parquet(tmp_path / f"{part}_queries.parquet")
        np.testing.assert_array_equal(q["customer_id"], store.customer_ids[ex.customer])
        np.testing.assert_array_equal(q["label"], ex.label)
        np.testing.assert_array_equal(q["cutoff"], ex.cutoff)
        assert manifest["counts"][f"{part}_queries"] == len(ex)
    # no training event at/after a validation or test cut-off of its customer
    last = ev.groupby("customer_id")["time"].max()
    for part in ("valid", "test"):
        q = pd.read_parquet(tmp_path / f"{part}_queries.parquet").set_index("customer_id")
        assert (last.reindex(q.index).fillna(-1) < q["cutoff"]).all()


def test_cli_exports_the_trainers_split(tmp_path):
    out = tmp_path / "export"
    env = {**os.environ, "ATTNLAB_OUTPUTS": str(tmp_path / "outputs")}
    proc = subprocess.run(
        [sys.executable, "experiments/export_split.py", "debug=tiny", "task=next_item",
         f"paths.cache_dir={tmp_path / 'cache'}", f"export.out_dir={out}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert f"to {out}" in proc.stdout and "train_events.parquet" in proc.stdout
    assert manifest["protocol"] == "next_item" and manifest["provenance"]["seed"] == 0
    assert manifest["provenance"]["data"]["options"]["max_customers"] == 120
    assert "task=next_item" in manifest["provenance"]["command"]
    q = pd.read_parquet(out / "test_queries.parquet")
    assert len(q) == manifest["counts"]["test_queries"] == manifest["split_report"]["n_customers_kept"] > 0
    name = "synthetic_next_item"
    cfg = yaml.safe_load((out / "recbole" / name / "recbole.yaml").read_text())
    assert cfg["MAX_ITEM_LIST_LENGTH"] == 16 and cfg["topk"] == [10, 20]   # debug=tiny: model.max_len, task.ks
    assert len(read_inter(out / "recbole" / name / f"{name}.test.inter")) == q["n_targets"].sum()
