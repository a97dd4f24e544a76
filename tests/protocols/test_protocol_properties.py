"""Vectorised protocol builders == naive per-customer references on random stores
(many timestamp ties, baskets spanning timestamps, non-purchase events)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnlab.data.schema import EventType
from attnlab.data.splits import churn_split, next_basket_split, next_item_split
from protocol_stores import build_store

P = int(EventType.PURCHASE)
event = st.tuples(
    st.integers(0, 4),                                  # customer
    st.integers(0, 12),                                 # time (many ties)
    st.integers(-3, 6),                                 # basket id
    st.integers(0, 5),                                  # item (0 = none)
    st.sampled_from([P, P, P, 2, 3, 4]),                # event type
)
stores = st.lists(event, min_size=1, max_size=60).map(lambda r: build_store(r, n_items=5))
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def purchase_baskets(s, c):
    """[(first index, time, set of purchased items)] of customer c, in store order."""
    lo, hi = s.offsets[c], s.offsets[c + 1]
    groups: dict[int, list[int]] = {}
    for i in range(lo, hi):
        groups.setdefault(int(s.basket[i]), []).append(i)
    out = []
    for idx in groups.values():
        items = {int(s.item[i]) for i in idx if s.event_type[i] == P and s.item[i] > 0}
        if items:
            out.append((min(idx), int(s.time[min(idx)]), items))
    return sorted(out, key=lambda b: b[0])


def first_at(s, c, t):
    lo, hi = s.offsets[c], s.offsets[c + 1]
    return next((i for i in range(lo, hi) if s.time[i] >= t), hi)


@SETTINGS
@given(stores, st.integers(2, 4), st.integers(0, 3))
def test_next_item_matches_reference(s, min_baskets, seed):
    try:
        sp = next_item_split(s, seed=seed, min_baskets=min_baskets)
    except ValueError:
        assert not ((s.event_type == P) & (s.item > 0)).any()
        return
    kept = []
    for c in range(s.n_customers):
        bs = purchase_baskets(s, c)
        if len(bs) < min_baskets:
            assert sp.train_end[c] == s.offsets[c]
            continue
        kept.append(c)
        m = len(kept) - 1
        for ex, b in ((sp.test, bs[-1]), (sp.valid, bs[-2])):
            assert ex.customer[m] == c and ex.cutoff[m] == b[1]
            assert ex.end[m] == first_at(s, c, b[1])
            assert ex.target_items[m] in b[2]
            vis = slice(s.offsets[c], ex.end[m])
            assert (s.time[vis] < b[1]).all()
            # no event of the target basket id is visible
            assert not np.isin(s.basket[vis], s.basket[b[0]]).any()
        assert sp.train_end[c] == sp.valid.end[m]
    assert sp.test.customer.tolist() == kept


@SETTINGS
@given(stores, st.integers(0, 12), st.integers(1, 8), st.integers(0, 2))
def test_next_basket_matches_reference(s, vc, gap, min_hist):
    tc = vc + gap
    sp = next_basket_split(s, valid_cutoff=vc, test_cutoff=tc, min_history_baskets=min_hist)
    for ex, lo, hi in ((sp.valid, vc, tc), (sp.test, tc, 10**9)):
        expect = []
        for c in range(s.n_customers):
            bs = purchase_baskets(s, c)
            win = [b for b in bs if lo <= b[1] < hi]
            if win and sum(b[1] < lo for b in bs) >= min_hist:
                expect.append((c, first_at(s, c, lo), sorted(win[0][2])))
        assert ex.customer.tolist() == [e[0] for e in expect]
        assert ex.end.tolist() == [e[1] for e in expect]
        got = [ex.target_items[ex.target_offsets[m]:ex.target_offsets[m + 1]].tolist()
               for m in range(len(ex))]
        assert got == [e[2] for e in expect]
        assert (ex.cutoff == lo).all()
    for c in range(s.n_customers):
        assert sp.train_end[c] == first_at(s, c, vc)


@SETTINGS
@given(stores, st.integers(1, 4))
def test_churn_temporal_matches_reference(s, h):
    t_end = 86_400  # all times are within day 0
    c_test = t_end - h
    cuts = (c_test - 2 * h, c_test - h, c_test)
    active = [((s.event_type == P) & (s.time < cut)).any() for cut in cuts]
    if not all(active):
        with pytest.raises(ValueError, match="no customer has a purchase"):
            churn_split(s, cutoff=c_test, horizon=h)
        return
    sp = churn_split(s, cutoff=c_test, horizon=h)
    for ex, cut in ((sp.train, c_test - 2 * h), (sp.valid, c_test - h), (sp.test, c_test)):
        exp_c, exp_l = [], []
        for c in range(s.n_customers):
            t = s.time[s.customer_slice(c)]
            p = s.event_type[s.customer_slice(c)] == P
            if (p & (t < cut)).any():
                exp_c.append(c)
                exp_l.append(float(not (p & (t >= cut) & (t < cut + h)).any()))
        assert ex.customer.tolist() == exp_c and ex.label.tolist() == exp_l
        assert ex.end.tolist() == [first_at(s, c, cut) for c in exp_c]
