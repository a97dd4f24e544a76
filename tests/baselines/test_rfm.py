"""RFM features, quintile segments, RFMChurn and RFMSegmentPopularity."""

import numpy as np
import pandas as pd
import pytest

from attnlab.baselines.rfm import (RFMChurn, RFMSegmentPopularity, rfm_features, rfm_scores,
                                   quintile_edges)
from attnlab.data.splits import Examples
from tests.baselines.cases import N_ITEMS, make_case

DAY = 86_400


def test_features_hand_computed():
    store, _, ex = make_case(poison=False)
    f = rfm_features(store, ex)
    # customer 0: visible baskets day 1 (3 items) and day 3 (2 items), value 2 per item,
    # cut-off day 6.
    assert f.loc[0].to_dict() == {"recency_days": 3.0, "frequency": 2.0, "monetary": 5.0,
                                  "tenure_days": 5.0}
    # customer 5: one visible basket (day 1, 3 items), cut-off day 2.
    assert f.loc[5].to_dict() == {"recency_days": 1.0, "frequency": 1.0, "monetary": 6.0,
                                  "tenure_days": 1.0}
    dirty, _, ex_d = make_case(poison=True)
    pd.testing.assert_frame_equal(f, rfm_features(dirty, ex_d))


def test_features_without_purchase():
    store, _, _ = make_case(poison=False)
    ex = Examples(customer=np.array([0, 1]), end=np.array([store.offsets[0], store.offsets[1]]),
                  cutoff=np.array([5 * DAY, 5 * DAY]))
    f = rfm_features(store, ex)
    assert (f.to_numpy() == 0).all()


def test_segments_hand_computed():
    edges = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [10, 20, 30, 40]], dtype=float)
    feats = pd.DataFrame({
        "recency_days": [0.5, 2.0, 10.0, 3.0, 9.0, 3.0, 0.1],
        "frequency":    [5.0, 1.0, 3.5, 1.5, 1.0, 9.0, 3.0],
        "monetary":     [25., 5.0, 50., 10., 0.0, 41., 20.],
        "tenure_days":  [1.0] * 7,
    })
    s = rfm_scores(feats, edges)
    assert s["code"].tolist() == ["R5F5M3", "R4F1M1", "R1F4M5", "R3F2M1", "R1F1M1", "R3F5M5", "R5F3M2"]
    assert s["segment"].tolist() == ["champions", "new_customers", "at_risk", "needs_attention",
                                     "hibernating", "loyal", "potential_loyalist"]
    own = rfm_scores(feats)  # default: quintiles of the rows themselves
    np.testing.assert_array_equal(quintile_edges(feats)[0], np.quantile(feats["recency_days"], [.2, .4, .6, .8]))
    assert own["R"].between(1, 5).all()


def test_churn_probabilities():
    store, _, ex = make_case(poison=False)
    train = Examples(customer=ex.customer, end=ex.end, cutoff=ex.cutoff,
                     label=np.array([0, 1, 0, 1, 0, 1], np.float32))
    p = RFMChurn().fit(store, train).prob(store, ex)
    assert p.shape == (6,) and p.dtype == np.float64 and ((p >= 0) & (p <= 1)).all()
    dirty, _, ex_d = make_case(poison=True)
    train_d = Examples(customer=ex_d.customer, end=ex_d.end, cutoff=ex_d.cutoff, label=train.label)
    np.testing.assert_allclose(RFMChurn().fit(dirty, train_d).prob(dirty, ex_d), p)
    with pytest.raises(ValueError, match="one class"):
        RFMChurn().fit(store, Examples(customer=ex.customer, end=ex.end, cutoff=ex.cutoff,
                                       label=np.zeros(6, np.float32)))


@pytest.mark.parametrize("level", ["named", "code"])
def test_segment_popularity(level):
    clean, te, ex = make_case(poison=False)
    dirty, te_d, ex_d = make_case(poison=True)
    m = RFMSegmentPopularity(level=level).fit(clean, te)
    s = m.score(clean, ex)
    assert s.shape == (6, N_ITEMS + 1) and s.dtype == np.float32
    np.testing.assert_array_equal(s, RFMSegmentPopularity(level=level).fit(dirty, te_d).score(dirty, ex_d))
    # within a segment: segment counts first, global popularity below.
    seg = m.segments(clean, ex)
    real = np.arange(N_ITEMS + 1) > 0
    seen = [i for i in range(6) if str(seg[i]) in m.counts_]
    if level == "named":
        assert seen
    for i in seen:
        bought = m.counts_[str(seg[i])] > 0
        assert s[i, bought].min() > s[i, ~bought & real].max()
    for i in set(range(6)) - set(seen):  # unseen segment: global popularity order
        g = m.global_share_[real]
        assert (np.argsort(-s[i, real], kind="stable") == np.argsort(-g, kind="stable")).all()
