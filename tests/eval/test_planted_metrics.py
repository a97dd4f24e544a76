"""Planted long-range metrics of the next-item evaluator (hand-built store + the simulator)."""

import dataclasses

import numpy as np
import pytest

from attnlab.data.pipeline import load_sequences
from attnlab.data.schema import EventType
from attnlab.data.splits import Examples, next_item_split
from attnlab.eval import evaluate_next_item
from attnlab.eval.evaluate import planted_metrics, planted_pairs, planted_trigger_back
from protocol_stores import build_store

P = int(EventType.PURCHASE)
C = int(EventType.CAMPAIGN)
N_ITEMS = 20
# build_store's vocabulary: index i <-> source item id i - 1. Pairs are in source ids:
# (7 -> 8) is vocab (8 -> 9), (5 -> 6) is vocab (6 -> 7); (100 -> 101) is not in the store.
PAIRS_SOURCE = [[7, 8], [5, 6], [100, 101]]


def planted_store():
    rows = [
        # c0: trigger 8, then 3 regular events -> target 9 planted, trigger 4 events back
        (0, 1, 1, 8, P), (0, 2, 2, 1, P), (0, 3, 3, 2, P), (0, 4, 4, 3, P),
        # c1: no trigger -> target 9 planted, trigger not visible
        (1, 1, 1, 1, P), (1, 2, 2, 2, P),
        # c2: regular target 3 -> not planted
        (2, 1, 1, 1, P), (2, 2, 2, 2, P),
        # c3: trigger 6, a campaign (no item), then item 1 -> target 7 planted, 3 back
        (3, 1, 1, 6, P), (3, 2, -1, 0, C), (3, 3, 3, 1, P),
        # c4: trigger 8 only AFTER the example's end -> target 9 planted, not visible
        (4, 1, 1, 1, P), (4, 2, 2, 8, P),
    ]
    s = build_store(rows, n_items=N_ITEMS)
    s = dataclasses.replace(s, meta={"source_meta": {"trigger_pairs": PAIRS_SOURCE}})
    end = s.offsets[1:].copy()
    end[4] -= 1  # c4 sees only its first event
    targets = np.array([9, 9, 3, 7, 9], np.int32)
    ex = Examples(customer=np.arange(5), end=end, cutoff=np.zeros(5, np.int64),
                  target_offsets=np.arange(6), target_items=targets)
    return s, ex


def popularity_scores(store, chunk):
    """A fixed popularity ranking: item 1 most popular, then 2, ... (no ties)."""
    return np.tile(-np.arange(store.n_items + 1, dtype=np.float32), (len(chunk), 1))


def oracle_scores(store, chunk):
    """Puts every row's target first."""
    out = np.zeros((len(chunk), store.n_items + 1), np.float32)
    out[np.arange(len(chunk)), chunk.target_items] = 1.0
    return out


def test_pairs_are_mapped_to_vocabulary_indices():
    s, _ = planted_store()
    np.testing.assert_array_equal(planted_pairs(s), [[8, 9], [6, 7]])  # absent pair dropped
    assert planted_pairs(dataclasses.replace(s, meta={})).shape == (0, 2)
    # top-level meta (a store built by hand) works too
    top = dataclasses.replace(s, meta={"trigger_pairs": [[7, 8]]})
    np.testing.assert_array_equal(planted_pairs(top), [[8, 9]])


def test_which_examples_are_planted_and_how_far_back_the_trigger_is():
    s, ex = planted_store()
    planted, back = planted_trigger_back(s, ex, planted_pairs(s))
    np.testing.assert_array_equal(planted, [True, True, False, True, True])
    np.testing.assert_array_equal(back, [4.0, np.nan, np.nan, 3.0, np.nan])


def test_oracle_gets_planted_accuracy_one():
    s, ex = planted_store()
    res = evaluate_next_item(oracle_scores, s, ex, ks=(5, 8), progress=False)
    m = res.metrics
    assert m["planted/n"] == 4 and m["planted/visible"] == pytest.approx(0.5)
    assert m["planted/hr@1"] == m["planted/hr@5"] == m["planted/mrr"] == 1.0
    assert m["planted/visible_hr@1"] == 1.0
    assert m["hr@5"] == 1.0


def test_popularity_scorer_matches_hand_computation():
    s, ex = planted_store()
    res = evaluate_next_item(popularity_scores, s, ex, ks=(5, 8), progress=False)
    m = res.metrics
    # rank of target t is t; planted rows: c0 (9), c1 (9), c3 (7), c4 (9)
    np.testing.assert_array_equal(res.per_example["rank"], [9, 9, 3, 7, 9])
    assert m["planted/n"] == 4
    assert m["planted/hr@1"] == 0.0 and m["planted/hr@5"] == 0.0
    assert m["planted/hr@8"] == pytest.approx(1 / 4)
    assert m["planted/mrr"] == pytest.approx((3 / 9 + 1 / 7) / 4)
    # trigger visible for c0 (rank 9) and c3 (rank 7)
    assert m["planted/visible"] == pytest.approx(0.5)
    assert m["planted/visible_hr@8"] == pytest.approx(0.5)
    assert m["planted/visible_hr@1"] == 0.0
    # per-example values on planted rows only (NaN elsewhere): their means are the metrics
    np.testing.assert_array_equal(res.per_example["planted/hr@8"], [0, 0, np.nan, 1, 0])
    np.testing.assert_array_equal(res.per_example["planted/visible_hr@8"], [0, np.nan, np.nan, 1, np.nan])
    # the overall metrics are unchanged by the planted bookkeeping
    assert m["hr@5"] == pytest.approx(1 / 5) and m["n"] == 5


def test_window_shorter_than_the_distance_hides_the_trigger():
    s, ex = planted_store()
    res = evaluate_next_item(popularity_scores, s, ex, ks=(5, 8), progress=False, max_len=3)
    m = res.metrics
    # c0's trigger is 4 events back: outside a 3-event window; c3's (3 back) is inside
    assert m["planted/visible"] == pytest.approx(0.25)
    assert m["planted/visible_hr@8"] == 1.0  # c3 only (rank 7)
    assert m["planted/hr@8"] == pytest.approx(1 / 4)  # every planted example still counts
    np.testing.assert_array_equal(res.per_example["planted/visible"], [0, 0, np.nan, 1, 0])


def test_per_example_arrays_are_aligned_and_chunk_independent():
    s, ex = planted_store()
    a = evaluate_next_item(popularity_scores, s, ex, batch_size=1, progress=False)
    b = evaluate_next_item(popularity_scores, s, ex, batch_size=256, progress=False)
    for k, v in a.per_example.items():
        assert len(v) == len(ex), k
        np.testing.assert_array_equal(v, b.per_example[k])
    np.testing.assert_array_equal(a.per_example["planted"], [1, 1, 0, 1, 1])
    np.testing.assert_array_equal(a.per_example["planted/visible"], [1, 0, np.nan, 1, 0])


def test_no_planted_pairs_is_a_no_op():
    s, ex = planted_store()
    plain = dataclasses.replace(s, meta={})
    res = evaluate_next_item(popularity_scores, plain, ex, progress=False)
    assert not [k for k in res.metrics if k.startswith("planted")]
    assert set(res.per_example) == {"rank", "hr@10", "ndcg@10", "mrr@10", "hr@20", "ndcg@20",
                                    "mrr@20", "mrr"}


def test_no_planted_example_reports_zero():
    s, ex = planted_store()
    sub = ex.take(np.array([2]))  # the regular target only
    m, per = planted_metrics(s, sub, np.array([3]))
    assert m["planted/n"] == 0
    assert np.isnan(m["planted/hr@1"]) and np.isnan(m["planted/visible"])  # same keys, undefined
    np.testing.assert_array_equal(per["planted"], [0.0])
    np.testing.assert_array_equal(per["planted/hr@10"], [np.nan])


def test_simulator_planted_examples_are_leak_free_and_at_the_planted_distance():
    """One item per basket: the trigger is exactly `distance` events before the target,
    and the target (the last basket) is never in the visible history."""
    d = 5
    store = load_sequences("synthetic", {
        "n_customers": 600, "n_items": 30, "n_triggers": 3, "trigger_prob": 1.0,
        "trigger_window": 3, "trigger_distance": d, "mean_events": 12, "mean_basket_size": 1.0,
        "max_basket_size": 1, "mean_gap_days": 2.0, "horizon_days": 60, "seed": 0,
    }, cache_dir=None, progress=False)
    split = next_item_split(store, seed=0)
    res = evaluate_next_item(popularity_scores, store, split.test, progress=False)
    planted = res.per_example["planted"] > 0
    # ground truth from the simulator: customers whose last basket is the target basket
    cust_ids = store.customer_ids[split.test.customer]
    nb = store.customer_numeric["n_baskets"][split.test.customer]
    tstep = store.customer_numeric["target_step"][split.test.customer]
    expected = (nb - 1 == tstep)
    assert planted.sum() > 5 and len(cust_ids) == len(planted)
    np.testing.assert_array_equal(planted, expected)
    np.testing.assert_array_equal(res.per_example["planted/trigger_back"][planted], d)
    pairs = planted_pairs(store)
    for m in np.flatnonzero(planted):
        hist = store.item[store.offsets[split.test.customer[m]]:split.test.end[m]]
        assert split.test.target_items[m] not in hist
        assert split.test.target_items[m] in pairs[:, 1]


def test_cue_share_only_with_a_cue_item():
    """planted/cued: is the latest visible event the cue? (cue = source id 1 = vocab 2:
    c1 ends on vocab 2, cued; c0 ends on 3, c3 and c4 on 1: not cued; c2 is not planted)."""
    s, ex = planted_store()
    assert "planted/cued" not in planted_metrics(s, ex, np.ones(5))[0]  # no cue: old keys only
    cued = dataclasses.replace(s, meta={"source_meta": {"trigger_pairs": PAIRS_SOURCE, "cue_item": 1}})
    m, per = planted_metrics(cued, ex, np.ones(5))
    np.testing.assert_array_equal(per["planted/cued"], [0, 1, np.nan, 0, 0])
    assert m["planted/cued"] == pytest.approx(1 / 4)
    absent = dataclasses.replace(s, meta={"source_meta": {"trigger_pairs": PAIRS_SOURCE, "cue_item": 999}})
    assert "planted/cued" not in planted_metrics(absent, ex, np.ones(5))[0]
