"""next_item_split: hand cases and leakage (target basket / timestamp never visible)."""

import numpy as np
import pytest

from attnlab.data.schema import EventType
from attnlab.data.splits import next_item_split
from protocol_stores import POISON, build_store, visible

P, C = int(EventType.PURCHASE), int(EventType.CAMPAIGN)


def three_basket_customer(c, t0=0, big=False):
    """Baskets at t0+10, t0+20, t0+30; the last two also carry same-time campaign events."""
    rows = [(c, t0 + 10, 100 * c + 1, 1, P), (c, t0 + 10, 100 * c + 1, 2, P),
            (c, t0 + 20, 100 * c + 2, 3, P)]
    last = [(c, t0 + 30, 100 * c + 3, i, P) for i in (range(4, 40) if big else (4, 5))]
    return rows, last


def test_hand_case_targets_ends_train_end():
    rows = [(0, 10, 1, 1, P), (0, 10, 1, 2, P), (0, 15, -1, 0, C),
            (0, 20, 2, 3, P), (0, 30, 3, 4, P), (0, 30, 3, 5, P),
            (1, 10, 7, 1, P), (1, 20, 8, 2, P),       # only 2 baskets: excluded
            (2, 5, -2, 0, C)]                          # no purchase at all: excluded
    s = build_store(rows)
    sp = next_item_split(s, seed=0, min_baskets=3)
    assert sp.protocol == "next_item"
    np.testing.assert_array_equal(sp.test.customer, [0])
    assert sp.test.end[0] == 4 and sp.test.cutoff[0] == 30      # events 0..3 visible
    assert sp.test.target_items[0] in (4, 5)
    assert sp.valid.end[0] == 3 and sp.valid.cutoff[0] == 20
    assert sp.valid.target_items[0] == 3
    np.testing.assert_array_equal(sp.test.target_offsets, [0, 1])
    np.testing.assert_array_equal(sp.train_end, [3, s.offsets[1], s.offsets[2]])
    assert sp.report["excluded_fewer_than_min_baskets"] == 1
    assert sp.report["excluded_no_purchase_basket"] == 1
    assert sp.report["n_customers_kept"] == 1


def test_seed_varies_target_but_is_reproducible():
    rows = [(0, 1, 1, 1, P), (0, 2, 2, 2, P)] + [(0, 3, 3, i, P) for i in range(3, 23)]
    s = build_store(rows)
    picks = {int(next_item_split(s, seed=k).test.target_items[0]) for k in range(30)}
    assert len(picks) > 5 and picks <= set(range(3, 23))
    a, b = next_item_split(s, seed=4), next_item_split(s, seed=4)
    np.testing.assert_array_equal(a.test.target_items, b.test.target_items)


@pytest.mark.parametrize("big", [False, True])
def test_no_target_basket_item_or_timestamp_is_visible(big):
    """Poison = every event of the target basket or at/after its timestamp (a campaign
    at the same second, an event of the same basket id, later events)."""
    rows = []
    for c in range(6):
        head, last = three_basket_customer(c, t0=1000 * c, big=big)
        rows += head
        t_last = 1000 * c + 30
        poison = [r + (POISON,) for r in last]
        poison += [(c, t_last, -(c + 1), 0, C, POISON),          # same-time campaign
                   (c, t_last + 5, -(c + 100), 0, C, POISON)]      # later event
        rows += poison
    s = build_store(rows)
    sp = next_item_split(s, seed=1)
    assert len(sp.test) == 6
    for m in range(len(sp.test)):
        v = visible(s, sp.test, m)
        assert not (s.quantity[v] == POISON).any()
        assert (s.time[v] < sp.test.cutoff[m]).all()
        assert sp.test.cutoff[m] == 1000 * sp.test.customer[m] + 30
        # the visible prefix is maximal: the next event is poison
        assert s.quantity[sp.test.end[m]] == POISON
        # valid history / train prefix: nothing at/after the valid basket (time 20)
        vv = visible(s, sp.valid, m)
        assert (s.time[vv] < 1000 * sp.valid.customer[m] + 20).all()
        c = sp.test.customer[m]
        tr = s.time[s.offsets[c]:sp.train_end[c]]
        assert (tr < 1000 * c + 20).all() and len(tr) == 2


def test_same_basket_id_at_an_earlier_time_is_hidden():
    """A basket whose id also appears earlier (e.g. a coupon event) starts there."""
    rows = [(0, 10, 1, 1, P), (0, 20, 2, 2, P),
            (0, 25, 3, 0, int(EventType.COUPON_REDEMPTION), POISON),
            (0, 30, 3, 4, P, POISON)]
    s = build_store(rows)
    sp = next_item_split(s)
    assert sp.test.end[0] == 2 and sp.test.cutoff[0] == 25
    assert not (s.quantity[visible(s, sp.test, 0)] == POISON).any()


def test_errors():
    s = build_store([(0, 1, -1, 0, C)], n_items=3)
    with pytest.raises(ValueError, match="no PURCHASE event"):
        next_item_split(s)
    with pytest.raises(ValueError, match="min_baskets"):
        next_item_split(build_store([(0, 1, 1, 1, P)]), min_baskets=1)
