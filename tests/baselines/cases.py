"""Tiny stores with a clean and a poisoned variant (extra events after every cut-off)."""

from __future__ import annotations

import dataclasses

import numpy as np

from attnlab.data.schema import EventType
from attnlab.data.splits import Examples
from protocol_stores import POISON, build_store

P = int(EventType.PURCHASE)
DAY = 86_400

# customer -> list of baskets (day, items); items 1&2 and 3&4 are always co-purchased.
BASKETS = {
    0: [(1, [1, 2, 5]), (3, [1, 2]), (6, [5])],
    1: [(2, [1, 2]), (4, [3, 4, 5]), (7, [1, 2, 5])],
    2: [(1, [3, 4]), (5, [3, 4, 5]), (8, [3, 4])],
    3: [(2, [1, 2, 5]), (6, [3, 4])],
    4: [(3, [5, 6]), (4, [1, 2]), (9, [3, 4, 5])],
    5: [(1, [3, 4, 5]), (2, [1, 2])],
}
N_ITEMS = 9  # items 7..9 appear only in poison events


def make_case(*, poison: bool, n_train: dict[int, int] | None = None):
    """Store, ``train_end`` and test examples.

    ``train_end`` keeps all but the last basket of each customer (``n_train`` baskets
    if given); the example of customer c sees every clean basket except the last.
    With ``poison`` every customer also buys items 7, 8, 9 (quantity POISON) on day 20,
    after every cut-off -- a model that reads them changes.
    """
    rows, n_ev_train, n_ev_visible = [], {}, {}
    for c, baskets in BASKETS.items():
        k = len(baskets) - 1 if n_train is None else n_train[c]
        n_ev_train[c] = sum(len(items) for _, items in baskets[:k])
        n_ev_visible[c] = sum(len(items) for _, items in baskets[:-1])
        for b, (day, items) in enumerate(baskets):
            rows += [(c, day * DAY, 100 * c + b, i, P) for i in items]
        if poison:
            rows += [(c, 20 * DAY, 100 * c + 99, i, P, POISON) for i in (7, 8, 9, 1)]
    store = build_store(rows, n_items=N_ITEMS)
    store = dataclasses.replace(store, value=np.full(store.n_events, 2.0, np.float32))
    cs = np.array(sorted(BASKETS))
    starts = store.offsets[:-1]
    train_end = starts + np.array([n_ev_train[c] for c in cs])
    end = starts + np.array([n_ev_visible[c] for c in cs])
    cutoff = np.array([BASKETS[c][-1][0] * DAY for c in cs])
    one = np.arange(len(cs) + 1)
    ex = Examples(customer=cs.astype(np.int64), end=end.astype(np.int64), cutoff=cutoff.astype(np.int64),
                  target_offsets=one, target_items=np.array([BASKETS[c][-1][1][0] for c in cs], np.int32))
    return store, train_end.astype(np.int64), ex


class Untouchable:
    """Stands in for ``split.test`` where it must not be read: any use fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"split.test.{name} was read")

    def __len__(self):
        raise AssertionError("len(split.test) was taken")


def check_contract_and_no_leakage(factory, *, skip_column0: bool = False) -> None:
    """A ranking baseline's scores are float32 ``[m, N_ITEMS + 1]``, finite, and do not
    change when events after every example's end (and after ``train_end``) are poisoned."""
    clean, te_c, ex_c = make_case(poison=False)
    dirty, te_d, ex_d = make_case(poison=True)
    s_clean = factory().fit(clean, te_c).score(clean, ex_c)
    s_dirty = factory().fit(dirty, te_d).score(dirty, ex_d)
    assert s_clean.shape == (len(ex_c), N_ITEMS + 1) and s_clean.dtype == np.float32
    assert np.isfinite(s_clean[:, 1:] if skip_column0 else s_clean).all()
    np.testing.assert_array_equal(s_clean, s_dirty)
