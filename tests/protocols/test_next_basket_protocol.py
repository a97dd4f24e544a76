"""next_basket_split: hand cases and leakage (nothing at/after a cutoff is visible)."""

import numpy as np
import pytest

from attnlab.data.schema import EventType
from attnlab.data.splits import BasketCutoffs, default_cutoffs, next_basket_split, to_seconds
from protocol_stores import POISON, build_store, visible

P, C = int(EventType.PURCHASE), int(EventType.CAMPAIGN)
VC, TC = 100, 200
VALID_POISON = 555.0  # at the valid cutoff: hidden from valid inputs and training


def test_hand_case():
    rows = [
        (0, 10, 1, 1, P), (0, 50, 2, 2, P),
        (0, 120, 3, 3, P), (0, 120, 3, 3, P), (0, 120, 3, 4, P),   # first valid basket
        (0, 150, 4, 5, P),                                        # later valid basket
        (0, 210, 5, 6, P), (0, 210, 5, 1, P), (0, 230, 6, 7, P),   # first test basket: {1, 6}
        (1, 150, 7, 2, P), (1, 250, 8, 3, P),     # no history before VC -> excluded (valid)
        (2, 20, 9, 1, P),                         # no basket after VC
    ]
    s = build_store(rows)
    sp = next_basket_split(s, valid_cutoff=VC, test_cutoff=TC)
    np.testing.assert_array_equal(sp.valid.customer, [0])
    np.testing.assert_array_equal(sp.valid.target_items, [3, 4])   # distinct, ascending
    assert sp.valid.end[0] == 2 and sp.valid.cutoff[0] == VC
    np.testing.assert_array_equal(sp.test.customer, [0, 1])
    np.testing.assert_array_equal(sp.test.target_offsets, [0, 2, 3])
    np.testing.assert_array_equal(sp.test.target_items, [1, 6, 3])
    np.testing.assert_array_equal(sp.test.end, [6, s.offsets[1] + 1])
    np.testing.assert_array_equal(sp.train_end, [2, s.offsets[1], s.offsets[2] + 1])
    r = sp.report
    assert r["valid_excluded_short_history"] == 1 and r["valid_no_target_basket"] == 1
    assert r["test_no_target_basket"] == 1 and r["test_n_examples"] == 2


def test_min_history_zero_keeps_cold_start():
    s = build_store([(0, 150, 1, 1, P), (0, 250, 2, 2, P)])
    sp = next_basket_split(s, valid_cutoff=VC, test_cutoff=TC, min_history_baskets=0)
    assert len(sp.valid) == 1 and sp.valid.end[0] == 0


def test_poison_after_cutoffs_never_visible():
    """Poison = everything at/after the test cutoff (for test inputs) and at/after the
    valid cutoff (for valid inputs and the training prefix), including same-second
    events at the cutoff itself and non-purchase events."""
    rng = np.random.default_rng(0)
    rows = []
    for c in range(20):
        for b in range(8):
            t = int(rng.integers(0, 300))
            t += t == TC  # keep the marked basket below the only one at exactly TC
            for i in rng.choice(np.arange(1, 30), size=int(rng.integers(1, 6)), replace=False):
                rows.append((c, t, 100 * c + b, int(i), P))
        rows += [(c, VC, -1 - c, 0, C, VALID_POISON), (c, TC, -100 - c, 0, C, POISON),
                 (c, TC, 10_000 + c, 3, P, POISON)]
    s = build_store(rows)
    sp = next_basket_split(s, valid_cutoff=VC, test_cutoff=TC)
    assert len(sp.test) == 20
    for ex, cut, marks in ((sp.test, TC, [POISON]), (sp.valid, VC, [POISON, VALID_POISON])):
        for m in range(len(ex)):
            v = visible(s, ex, m)
            assert (s.time[v] < cut).all() and ex.cutoff[m] == cut
            assert not np.isin(s.quantity[v], marks).any()
            # maximal: the next event of the customer is at/after the cutoff
            assert ex.end[m] == s.offsets[ex.customer[m] + 1] or s.time[ex.end[m]] >= cut
    for c in range(s.n_customers):
        assert (s.time[s.offsets[c]:sp.train_end[c]] < VC).all()
        assert not np.isin(s.quantity[s.offsets[c]:sp.train_end[c]], [POISON, VALID_POISON]).any()
    # the test targets come from the first basket at/after TC: the poison basket at TC
    assert all(3 in sp.test.target_items[sp.test.target_offsets[m]:sp.test.target_offsets[m + 1]]
               for m in range(len(sp.test)))


def test_cutoffs_accept_iso_and_defaults():
    day = 86_400
    t0 = to_seconds("2020-01-01")
    rows = [(0, t0 + d * day, d, 1 + d % 5, P) for d in range(100)]
    s = build_store(rows)
    d = default_cutoffs(s, valid_frac=0.1, test_frac=0.1)
    assert isinstance(d, BasketCutoffs)
    assert d.valid_cutoff % day == 0 and d.test_cutoff % day == 0
    assert t0 < d.valid_cutoff < d.test_cutoff < t0 + 100 * day
    a = next_basket_split(s, valid_cutoff="2020-03-01", test_cutoff="2020-03-20")
    b = next_basket_split(s, valid_cutoff=to_seconds("2020-03-01"), test_cutoff=t0 + 79 * day)
    np.testing.assert_array_equal(a.test.end, b.test.end)
    assert next_basket_split(s).report["test_cutoff"] == str(np.datetime64(d.test_cutoff, "s")).replace("T", " ")
    with pytest.raises(ValueError, match="before test_cutoff"):
        next_basket_split(s, valid_cutoff="2020-03-20", test_cutoff="2020-03-01")
    with pytest.raises(ValueError, match="cannot parse"):
        next_basket_split(s, valid_cutoff="not a date", test_cutoff="2020-03-01")
