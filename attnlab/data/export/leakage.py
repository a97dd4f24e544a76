"""The leakage rule of an export: which events training may read (:func:`training_end`),
and :func:`check_no_leakage`, which refuses a split whose validation or test targets (or
anything at/after a query's cut-off) would be exported as training data."""

from __future__ import annotations

import numpy as np
import pandas as pd

from attnlab.data.sequences import SequenceStore, purchase_mask, range_events
from attnlab.data.splits import Examples, Split, event_customer, iso


class LeakageError(ValueError):
    """A validation or test target (or anything at/after a query's cut-off) would be
    exported as training data."""


def _check_rows(store: SequenceStore, ex: Examples, name: str) -> None:
    """Rows must index this store, see a prefix of their customer and nothing at/after the cut-off."""
    c = np.asarray(ex.customer)
    if len(c) and (c.min() < 0 or c.max() >= store.n_customers):
        raise ValueError(f"split.{name}: customer rows reach {int(c.max())}, the store has "
                         f"{store.n_customers} customers; rebuild the split from this store")
    lo, hi, end = store.offsets[c], store.offsets[c + 1], np.asarray(ex.end)
    bad = np.flatnonzero((end < lo) | (end > hi))
    if len(bad):
        m = int(bad[0])
        raise ValueError(f"split.{name} row {m}: history end {int(end[m])} is outside customer "
                         f"{int(store.customer_ids[c[m]])}'s events [{int(lo[m])}, {int(hi[m])}]; "
                         "rebuild the split from this store")
    seen = np.flatnonzero(end > lo)
    late = seen[store.time[end[seen] - 1] >= np.asarray(ex.cutoff)[seen]]
    if len(late):
        m = int(late[0])
        raise LeakageError(f"split.{name} row {m} (customer {int(store.customer_ids[c[m]])}): its "
                           f"visible history holds an event at/after its cut-off {iso(ex.cutoff[m])}; "
                           "rebuild the split with attnlab.data.splits")


def training_end(store: SequenceStore, split: Split) -> np.ndarray:
    """``int64[n_customers]``: exclusive end of the events training may read per customer
    (``split.train_end``, raised to the end of any ``split.train`` row of that customer)."""
    end = np.array(split.train_end, dtype=np.int64)
    if end.shape != (store.n_customers,):
        raise ValueError(f"split.train_end has shape {end.shape} but the store has "
                         f"{store.n_customers} customers; rebuild the split from this store")
    if split.train is not None and len(split.train):
        _check_rows(store, split.train, "train")
        np.maximum.at(end, split.train.customer, split.train.end)
    bad = np.flatnonzero((end < store.offsets[:-1]) | (end > store.offsets[1:]))
    if len(bad):
        c = int(bad[0])
        raise ValueError(f"split.train_end[{c}] = {int(end[c])} is outside customer "
                         f"{int(store.customer_ids[c])}'s events; rebuild the split from this store")
    return end


def _target_events(store: SequenceStore, cust: np.ndarray, ex: Examples, name: str) -> np.ndarray:
    """``int64[n_targets]``: store index of each target item's first purchase at or after
    its query's history end (raises if there is none: the split is not of this store)."""
    n_targets = len(ex.target_items)
    P = np.flatnonzero(purchase_mask(store))
    key = cust[P] * (store.n_items + 1) + store.item[P]
    order = np.argsort(key, kind="stable")   # P is ascending: index order within a key
    skey, sidx = key[order], P[order]
    group = np.cumsum(np.concatenate([[True], skey[1:] != skey[:-1]])) - 1 if len(P) else skey
    row = np.repeat(np.arange(len(ex)), np.diff(ex.target_offsets))
    qkey = ex.customer[row] * (store.n_items + 1) + ex.target_items.astype(np.int64)
    lo, hi = np.searchsorted(skey, qkey, "left"), np.searchsorted(skey, qkey, "right")
    found = lo < hi
    if n_targets and len(P):
        # (group, index) is ascending in sorted order: the first purchase at/after the end
        span = store.n_events + 1
        pos = np.searchsorted(group * span + sidx, group[np.minimum(lo, len(P) - 1)] * span + ex.end[row])
        found &= pos < hi
    if not found.all():
        t = int(np.flatnonzero(~found)[0])
        m = int(row[t])
        raise ValueError(f"split.{name} row {m} (customer {int(store.customer_ids[ex.customer[m]])}): "
                         f"target item {int(store.item_vocab[ex.target_items[t]])} is never purchased at "
                         f"or after its history end; the split is not of this store, rebuild it")
    return sidx[pos] if n_targets else np.zeros(0, np.int64)


def check_no_leakage(store: SequenceStore, split: Split, train_end: np.ndarray) -> dict[str, dict[str, int]]:
    """Raises :class:`LeakageError` if a validation or test target's basket, or any event at
    or after a query's cut-off, is among that customer's events ``[offsets, train_end)``.

    Returns:
      per part (``valid``, ``test``): the numbers checked (queries, targets, baskets).
    """
    cust = event_customer(store)
    train_idx, _ = range_events(store.offsets[:-1], train_end)
    last = np.full(store.n_customers, np.iinfo(np.int64).min)
    np.maximum.at(last, cust[train_idx], store.time[train_idx])
    train = pd.DataFrame({"c": cust[train_idx], "b": store.basket[train_idx], "event": train_idx})
    out: dict[str, dict[str, int]] = {}
    for name, ex in (("valid", split.valid), ("test", split.test)):
        _check_rows(store, ex, name)
        stats = {"queries": len(ex)}
        if ex.target_items is not None:
            tgt = _target_events(store, cust, ex, name)
            baskets = pd.DataFrame({"c": cust[tgt], "b": store.basket[tgt], "target": tgt})
            hits = train.merge(baskets, on=["c", "b"])
            if len(hits):
                h = hits.iloc[0]
                raise LeakageError(
                    f"{name} target item {int(store.item_vocab[store.item[h.target]])} of customer "
                    f"{int(store.customer_ids[h.c])} (basket {int(h.b)}, {iso(store.time[h.target])}): "
                    f"{len(hits)} event(s) of its basket are in the training events (split.train_end or a "
                    "split.train row reaches into it). The split leaks; rebuild it with attnlab.data.splits.")
            stats.update(targets=len(tgt), target_baskets=len(baskets.drop_duplicates(["c", "b"])))
        late = np.flatnonzero(last[ex.customer] >= ex.cutoff)
        if len(late):
            m = int(late[0])
            c = int(ex.customer[m])
            raise LeakageError(
                f"{name} query {m} (customer {int(store.customer_ids[c])}, cut-off {iso(ex.cutoff[m])}): "
                f"the customer's training events reach {iso(last[c])}, at or after the cut-off "
                "(split.train_end or a split.train row). The split leaks; rebuild it with attnlab.data.splits.")
        out[name] = stats
    return out
