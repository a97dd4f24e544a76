"""churn_split: labels, temporal windows and disjoint holdout customers."""

import numpy as np
import pytest

from attnlab.data.schema import EventType
from attnlab.data.splits import DAY, WEEK, ChurnMode, churn_split, default_churn_cutoff
from protocol_stores import POISON, build_store, visible

P, C = int(EventType.PURCHASE), int(EventType.CAMPAIGN)
H = 10 * DAY
T_END = 100 * DAY  # data runs to day 99 -> observed until the end of day 99


def test_temporal_hand_case():
    # test cutoff 90d, valid 80d, train 70d; horizon 10d
    rows = [
        (0, 1 * DAY, 1, 0, P), (0, 75 * DAY, 2, 0, P), (0, 95 * DAY, 3, 0, P),
        (1, 1 * DAY, 4, 0, P), (1, 85 * DAY, 5, 0, P),
        (2, 72 * DAY, 6, 0, P),                       # first purchase after train cutoff
        (3, 5 * DAY, -1, 0, C), (3, 99 * DAY, 7, 0, P),  # never purchases before 90d
    ]
    s = build_store(rows, n_items=1)
    sp = churn_split(s, cutoff=90 * DAY, horizon=H)           # TEMPORAL by default
    assert sp.protocol == "churn" and sp.report["mode"] == "temporal"
    np.testing.assert_array_equal(sp.train.customer, [0, 1])
    np.testing.assert_array_equal(sp.train.label, [0, 1])     # [70d, 80d)
    np.testing.assert_array_equal(sp.valid.customer, [0, 1, 2])
    np.testing.assert_array_equal(sp.valid.label, [1, 0, 1])  # [80d, 90d)
    np.testing.assert_array_equal(sp.test.customer, [0, 1, 2])
    np.testing.assert_array_equal(sp.test.label, [0, 1, 1])   # [90d, 100d)
    assert sp.test.label.dtype == np.float32 and sp.test.target_items is None
    assert (sp.train.cutoff == 70 * DAY).all() and (sp.valid.cutoff == 80 * DAY).all()
    # train_end: first event >= valid cutoff (80d)
    np.testing.assert_array_equal(sp.train_end, [2, s.offsets[1] + 1, s.offsets[2] + 1, s.offsets[3] + 1])
    assert sp.report["test_excluded_no_purchase_before_cutoff"] == 1


def test_default_cutoff_is_last_day_minus_horizon():
    s = build_store([(0, 3 * DAY, 1, 0, P), (0, 99 * DAY + 5, 2, 0, P)], n_items=1)
    assert default_churn_cutoff(s, horizon=H) == T_END - H
    assert default_churn_cutoff(s, horizon="2W") == T_END - 2 * WEEK
    with pytest.raises(ValueError, match="censored"):
        churn_split(s, cutoff=T_END - H + 1, horizon=H)
    with pytest.raises(ValueError, match="holdout_customers"):
        churn_split(s, horizon="40D")     # 3 x 40 days do not fit into 100 days


def poison_store(n=40, seed=0):
    """Random purchases; every event at/after the test cutoff is POISON."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n):
        for t in np.sort(rng.integers(0, T_END, size=int(rng.integers(1, 12)))):
            rows.append((c, int(t), int(rng.integers(1e6)), 0, P, POISON if t >= T_END - H else 1.0))
        rows.append((c, T_END - H, -1 - c, 0, C, POISON))   # a contact exactly at the cutoff
    return build_store(rows, n_items=1)


def test_temporal_leakage():
    """Every train/valid input AND label window ends before the test cutoff; training
    inputs and labels end before the valid cutoff; test inputs end before the test
    cutoff; labels agree with a direct recount."""
    s = poison_store()
    c = T_END - H
    sp = churn_split(s, horizon=H, mode=ChurnMode.TEMPORAL)
    assert (sp.test.cutoff == c).all()
    assert (sp.valid.cutoff + H <= c).all()                  # valid label window < test cutoff
    assert (sp.train.cutoff + H <= sp.valid.cutoff).all()    # train labels < valid cutoff
    for ex in (sp.train, sp.valid, sp.test):
        for m in range(len(ex)):
            v = visible(s, ex, m)
            assert (s.time[v] < ex.cutoff[m]).all() and not (s.quantity[v] == POISON).any()
            cs = s.customer_slice(ex.customer[m])
            t, et = s.time[cs], s.event_type[cs]
            bought = ((et == P) & (t >= ex.cutoff[m]) & (t < ex.cutoff[m] + H)).any()
            assert ex.label[m] == (not bought)
            assert ((et == P) & (t < ex.cutoff[m])).any()     # only active customers
    for k in range(s.n_customers):
        tr = slice(s.offsets[k], sp.train_end[k])
        assert (s.time[tr] < sp.valid.cutoff[0]).all() and not (s.quantity[tr] == POISON).any()


@pytest.mark.parametrize("stride", [None, WEEK])
def test_refit_trains_up_to_the_test_cutoff_and_reads_nothing_after_it(stride):
    """refit: the validation labels become training labels (the latest training cut-off
    is the valid cut-off), every training label window ends by the test cut-off, no
    training input or label reads a POISON event, and test rows are unchanged."""
    s = poison_store()
    c = T_END - H
    sp = churn_split(s, horizon=H, mode=ChurnMode.TEMPORAL, train_stride=stride)
    rf = churn_split(s, horizon=H, mode=ChurnMode.TEMPORAL, train_stride=stride, refit=True)
    vc = int(sp.valid.cutoff[0])
    assert rf.report["refit"] and not sp.report["refit"]
    assert int(rf.train.cutoff.max()) == vc and int(sp.train.cutoff.max()) == vc - H
    assert (rf.train.cutoff + H <= c).all()
    key = lambda ex: set(zip(ex.customer.tolist(), ex.cutoff.tolist(), ex.label.tolist()))  # noqa: E731
    assert key(rf.valid) <= key(rf.train)                    # validation is in-sample now
    np.testing.assert_array_equal(rf.test.label, sp.test.label)
    np.testing.assert_array_equal(rf.test.end, sp.test.end)
    for m in range(len(rf.train)):
        v = visible(s, rf.train, m)
        assert (s.time[v] < rf.train.cutoff[m]).all() and not (s.quantity[v] == POISON).any()
    for k in range(s.n_customers):
        tr = slice(s.offsets[k], rf.train_end[k])
        assert (s.time[tr] < c).all() and not (s.quantity[tr] == POISON).any()
        assert rf.train_end[k] >= sp.train_end[k]


def test_refit_is_temporal_only():
    with pytest.raises(ValueError, match="mode='temporal' only"):
        churn_split(poison_store(), horizon=H, mode=ChurnMode.HOLDOUT_CUSTOMERS, refit=True)


def test_holdout_customers_disjoint_and_inputs_before_cutoff():
    s = poison_store(n=200, seed=1)
    c = T_END - H
    sp = churn_split(s, horizon=H, mode="holdout_customers", seed=3, fractions=(0.6, 0.2, 0.2))
    tr, va, te = (set(ex.customer.tolist()) for ex in (sp.train, sp.valid, sp.test))
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert len(te) == pytest.approx(0.2 * (len(tr) + len(va) + len(te)), abs=1)
    for ex in (sp.train, sp.valid, sp.test):
        assert (ex.cutoff == c).all()
        for m in range(len(ex)):
            v = visible(s, ex, m)
            assert (s.time[v] < c).all() and not (s.quantity[v] == POISON).any()
    # valid/test customers contribute nothing to training; train customers only inputs
    for k in range(s.n_customers):
        tr_slice = s.time[s.offsets[k]:sp.train_end[k]]
        if k in tr:
            assert (tr_slice < c).all()
        else:
            assert len(tr_slice) == 0
    again = churn_split(s, horizon=H, mode="holdout_customers", seed=3, fractions=(0.6, 0.2, 0.2))
    np.testing.assert_array_equal(again.test.customer, sp.test.customer)
    other = churn_split(s, horizon=H, mode="holdout_customers", seed=4, fractions=(0.6, 0.2, 0.2))
    assert not np.array_equal(other.test.customer, sp.test.customer)
    with pytest.raises(ValueError, match="fractions"):
        churn_split(s, horizon=H, mode="holdout_customers", fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError):
        churn_split(s, horizon=H, mode="bogus")
