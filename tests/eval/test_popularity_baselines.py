"""MostPopular / PersonalRepeat: training-prefix-only counts, visible-history-only
personal scores, recency tie-break, popularity backfill."""

import numpy as np
import pytest

from attnlab.baselines import MostPopular, PersonalRepeat
from attnlab.data.schema import EventType
from attnlab.data.splits import Examples, next_item_split
from attnlab.eval import evaluate_next_item
from protocol_stores import POISON, build_store

P, R = int(EventType.PURCHASE), int(EventType.RETURN)


def one_example(customer, end):
    return Examples(customer=np.array([customer]), end=np.array([end]), cutoff=np.array([0]))


def test_most_popular_counts_only_training_prefix():
    rows = [(0, 1, 1, 1, P), (0, 2, 2, 1, P), (0, 3, 3, 2, P),
            (0, 4, 4, 3, R),                                  # returns don't count
            (0, 9, 5, 4, P, POISON), (0, 9, 5, 4, P, POISON),  # after train_end
            (1, 1, 6, 2, P), (1, 8, 7, 4, P, POISON)]
    s = build_store(rows, n_items=5)
    train_end = np.array([4, s.offsets[1] + 1])
    mp = MostPopular().fit(s, train_end)
    np.testing.assert_array_equal(mp.counts, [0, 2, 2, 0, 0, 0])
    sc = mp.score(s, one_example(0, 4))
    assert sc.shape == (1, 6) and sc.dtype == np.float32
    with pytest.raises(RuntimeError, match="fit"):
        MostPopular().score(s, one_example(0, 1))
    with pytest.raises(ValueError, match="one entry per customer"):
        MostPopular().fit(s, np.array([1]))


def test_personal_repeat_order_and_visibility():
    # customer 0 history: item 3 x2, item 5 x1 (t=4), item 6 x1 (t=5, most recent),
    # then POISON purchases of item 7 after the example's end.
    rows = [(0, 1, 1, 3, P), (0, 2, 2, 3, P), (0, 4, 3, 5, P), (0, 5, 4, 6, P),
            (0, 9, 5, 7, P, POISON), (0, 9, 5, 7, P, POISON), (0, 9, 5, 7, P, POISON),
            (1, 1, 6, 1, P), (1, 1, 6, 1, P), (1, 2, 7, 2, P)]   # popularity: 1 > 2
    s = build_store(rows, n_items=8)
    train_end = np.array([4, s.offsets[2]])
    pr = PersonalRepeat().fit(s, train_end)
    sc = pr.score(s, one_example(0, 4))[0]
    ranking = [int(j) for j in np.argsort(-sc[1:], kind="stable") + 1]
    assert ranking[:3] == [3, 6, 5]          # count first, then recency
    assert ranking[3:5] == [1, 2]            # backfill by popularity
    assert sc[7] < sc[5]                     # item 7 only bought after `end`
    # no history -> pure popularity order
    sc0 = pr.score(s, one_example(0, 0))[0]
    assert sc0[1] > sc0[2] > sc0[4]


def test_personal_repeat_batch_equals_rowwise():
    rng = np.random.default_rng(0)
    rows = [(c, t, 10 * c + t, int(rng.integers(1, 12)), P) for c in range(8) for t in range(10)]
    s = build_store(rows, n_items=12)
    pr = PersonalRepeat().fit(s, s.offsets[:-1] + 5)
    ends = s.offsets[:-1] + rng.integers(0, 11, 8)
    ex = Examples(customer=np.arange(8), end=ends, cutoff=np.zeros(8, np.int64))
    batch = pr.score(s, ex)
    for m in range(8):
        np.testing.assert_array_equal(batch[m], pr.score(s, one_example(m, ends[m]))[0])


def test_repeat_beats_popularity_on_repeat_heavy_data():
    rng = np.random.default_rng(0)
    rows = []
    for c in range(40):
        fav = rng.choice(np.arange(1, 200), 3, replace=False)
        for b in range(6):
            rows.append((c, 10 * b, 100 * c + b, int(rng.choice(fav)), P))
            rows.append((c, 10 * b, 100 * c + b, int(rng.integers(1, 200)), P))
    s = build_store(rows, n_items=200)
    sp = next_item_split(s, seed=0)
    mp = MostPopular().fit(s, sp.train_end)
    pr = PersonalRepeat().fit(s, sp.train_end)
    a = evaluate_next_item(mp.score, s, sp.test, progress=False).metrics["hr@10"]
    b = evaluate_next_item(pr.score, s, sp.test, progress=False).metrics["hr@10"]
    assert b > a
