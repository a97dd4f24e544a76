"""Padded batches and per-position training targets."""

import numpy as np
import pytest

from attnlab.data.batching import basket_pairs, make_batch, next_basket_sets, next_basket_targets, window_indices
from attnlab.data.schema import EventType
from attnlab.data.sequences import SequenceStore

P, C = int(EventType.PURCHASE), int(EventType.CAMPAIGN)


def store_from_rows(rows):
    """rows: (customer, time_s, basket, item, event_type), already in store order."""
    rows = sorted(rows, key=lambda r: (r[0], r[1], r[2]))
    cust = np.array([r[0] for r in rows])
    ids, counts = np.unique(cust, return_counts=True)
    n_items = max(r[3] for r in rows)
    return SequenceStore(
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        customer_ids=ids.astype(np.int64),
        item=np.array([r[3] for r in rows], np.int32),
        time=np.array([r[1] for r in rows], np.int64),
        event_type=np.array([r[4] for r in rows], np.int8),
        basket=np.array([r[2] for r in rows], np.int64),
        quantity=np.ones(len(rows), np.float32),
        value=np.ones(len(rows), np.float32),
        item_vocab=np.arange(-1, n_items, dtype=np.int64),
    )


@pytest.fixture
def store():
    day = 86400
    return store_from_rows([
        # customer 0: baskets A(1,2,3) B(4) [campaign] C(5,6) D(7)
        (0, 1 * day, 10, 1, P), (0, 1 * day, 10, 2, P), (0, 1 * day, 10, 3, P),
        (0, 2 * day, 11, 4, P),
        (0, 3 * day, -1, 0, C),
        (0, 4 * day, 12, 5, P), (0, 4 * day, 12, 6, P),
        (0, 5 * day, 13, 7, P),
        # customer 1: baskets E(8) F(9)
        (1, 1 * day, 20, 8, P), (1, 2 * day, 21, 9, P),
    ])


def test_targets_are_next_basket_items_and_respect_train_end(store):
    # customer 0 trains on everything before basket D (index 7); customer 1 on all.
    train_end = np.array([7, 10])
    t = next_basket_targets(store, train_end)
    # basket A positions -> items of B (size 1): all 4
    assert list(t[0:3]) == [4, 4, 4]
    # basket B -> next purchase basket C (campaign is skipped): rank 0 -> item 5
    assert t[3] == 5
    # campaign event -> C, rank 0 -> 5
    assert t[4] == 5
    # basket C would target D, but D is at/after train_end -> no target
    assert list(t[5:7]) == [0, 0]
    # at/after train_end never a target
    assert t[7] == 0
    # customer 1: E -> F, F -> nothing; never crosses into another customer
    assert list(t[8:10]) == [9, 0]


def test_targets_round_robin_over_larger_next_basket():
    day = 86400
    s = store_from_rows([(0, day, 1, 1, P), (0, day, 1, 2, P), (0, day, 1, 3, P),
                         (0, 2 * day, 2, 4, P), (0, 2 * day, 2, 5, P)])
    t = next_basket_targets(s, np.array([5]))
    assert list(t[:3]) == [4, 5, 4]


def test_basket_sets_target_the_whole_next_basket_from_the_basket_end(store):
    # task.targets: basket: a basket's last event targets every item of the next purchase
    # basket; no other event has a target; train_end bounds both baskets
    train_end = np.array([7, 10])
    nxt, start, size = next_basket_sets(store, train_end)
    basket_items = lambda e: sorted(store.item[start[nxt[e] - 1]:start[nxt[e] - 1] + size[nxt[e] - 1]].tolist())
    assert np.flatnonzero(nxt).tolist() == [2, 3, 4, 8]    # ends of A, B, the campaign; E (F has none)
    assert basket_items(2) == [4] and basket_items(3) == [5, 6] and basket_items(4) == [5, 6]
    assert basket_items(8) == [9]
    # with the whole history trainable, C -> D appears too
    nxt_all, start, size = next_basket_sets(store, np.array([8, 10]))
    assert np.flatnonzero(nxt_all).tolist() == [2, 3, 4, 6, 8]


def test_basket_pairs_every_item_then_a_seeded_subsample():
    day = 86400
    s = store_from_rows([(0, day, 1, 1, P), (0, day, 1, 2, P),
                         (0, 2 * day, 2, 3, P), (0, 2 * day, 2, 4, P), (0, 2 * day, 2, 5, P),
                         (0, 3 * day, 3, 6, P)])
    nxt, start, size = next_basket_sets(s, np.array([6]))
    b = make_batch(s, customers=np.array([0, 0]), ends=np.array([5, 2]), cutoffs=None, max_len=5, targets=nxt)
    index, item, dropped = basket_pairs(b.targets, start, size, s.item, 5, np.random.default_rng(0))
    pairs = [sorted(zip(index[r][item[r] > 0].tolist(), item[r][item[r] > 0].tolist())) for r in range(2)]
    # row 0 = events 0..4: basket 1 ends at position 1 (-> 3, 4, 5), basket 2 at 4 (-> 6)
    assert pairs[0] == [(1, 3), (1, 4), (1, 5), (4, 6)]
    assert pairs[1] == [(1, 3), (1, 4), (1, 5)] and dropped == 0
    # narrower than a row's pairs: a uniform subset, counted, and the same for the same seed
    i2, it2, dropped = basket_pairs(b.targets, start, size, s.item, 2, np.random.default_rng(1))
    assert dropped == (4 - 2) + (3 - 2) and (it2 > 0).sum() == 4
    assert all((p, t) in pairs[r] for r in range(2) for p, t in zip(i2[r].tolist(), it2[r].tolist()))
    i3, it3, _ = basket_pairs(b.targets, start, size, s.item, 2, np.random.default_rng(1))
    assert np.array_equal(i2, i3) and np.array_equal(it2, it3)


def test_targets_never_same_basket(store):
    train_end = np.array([8, 10])
    t = next_basket_targets(store, train_end)
    idx = np.flatnonzero(t > 0)
    # target item never belongs to the position's own basket
    for p in idx:
        same = store.basket == store.basket[p]
        assert t[p] not in set(store.item[same].tolist())


def test_window_indices_keep_latest_events():
    idx, n = window_indices(np.array([0, 10, 20]), np.array([5, 30, 20]), max_len=4)
    assert n.tolist() == [4, 4, 0]
    assert idx[0].tolist() == [1, 2, 3, 4]
    assert idx[1].tolist() == [26, 27, 28, 29]
    assert idx[2].tolist() == [-1, -1, -1, -1]


def test_make_batch_right_padded_and_never_past_end(store):
    b = make_batch(store, customers=np.array([0, 1]), ends=np.array([5, 9]), cutoffs=None, max_len=6)
    assert b.lengths.tolist() == [5, 1]
    assert b.item[0].tolist() == [1, 2, 3, 4, 0, 0]
    assert b.index[0].max() == 4  # nothing at/after end
    assert b.item[1].tolist() == [8, 0, 0, 0, 0, 0]
    # reference time = last visible event -> its age is zero, earlier ones positive
    assert b.time[0, 4] == 0.0 and b.time[0, 0] == pytest.approx(-2.0)
    assert np.all(b.time[:, :][b.index < 0] == 0)


def test_make_batch_rejects_end_outside_customer(store):
    with pytest.raises(ValueError, match="outside"):
        make_batch(store, customers=np.array([1]), ends=np.array([11]), cutoffs=None, max_len=4)
