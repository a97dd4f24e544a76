"""Segments: planted groups are recovered, profiled with RFM features, compared with RFM."""

import dataclasses

import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import adjusted_rand_score

from attnlab.baselines.rfm import SegmentLevel, rfm_features, rfm_scores
from attnlab.data import load_sequences
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import DAY, Examples, churn_split
from attnlab.explain import TimeReference
from attnlab.insights.segments import (
    cluster_customers, compare_with_rfm, customer_representations, plot_segments,
    segment_demographics, segment_profiles,
)

N_A, N_B = 20, 16  # frequent recent shoppers / rare lapsed shoppers


def planted_store():
    """Group A: 10 baskets, the last 1 day before the cut-off; group B: 2 baskets, 60+ days ago."""
    times, cust, value = [], [], []
    for c in range(N_A + N_B):
        a = c < N_A
        days = np.arange(10) * 3 + 1 if a else np.array([60, 90])
        times += list((100 - days) * DAY)
        cust += [c] * len(days)
        value += [5.0 if a else 50.0] * len(days)
    order = np.lexsort((np.array(times), np.array(cust)))
    cust, times, value = np.array(cust)[order], np.array(times, np.int64)[order], np.array(value)[order]
    off = np.concatenate([[0], np.cumsum(np.bincount(cust))]).astype(np.int64)
    m = len(cust)
    age = np.where(np.arange(N_A + N_B) < N_A, 1, 2).astype(np.int32)
    age[::5] = 0
    return SequenceStore(
        offsets=off, customer_ids=np.arange(N_A + N_B, dtype=np.int64) + 7,
        item=np.ones(m, np.int32), time=times, event_type=np.ones(m, np.int8),
        basket=np.arange(m, dtype=np.int64), quantity=np.ones(m, np.float32),
        value=value.astype(np.float32), item_vocab=np.array([-1, 3], np.int64),
        customer_side={"age": age}, customer_side_vocab={"age": ["<unknown>", "young", "old"]},
        customer_numeric={"truth": (np.arange(N_A + N_B) >= N_A).astype(float)},
    )


def examples(store):
    c = np.arange(store.n_customers)
    return Examples(customer=c, end=store.offsets[c + 1], cutoff=np.full(len(c), 100 * DAY),
                    label=(c >= N_A).astype(np.float32))


def planted_representations(seed=0):
    rng = np.random.default_rng(seed)
    truth = (np.arange(N_A + N_B) >= N_A).astype(int)
    centres = np.where(truth[:, None] == 1, -4.0, 4.0) * np.ones((1, 8))
    return centres + rng.normal(size=(len(truth), 8)), truth


def test_kmeans_recovers_planted_groups_and_is_seeded():
    reps, truth = planted_representations()
    seg = cluster_customers(reps, n_clusters=2, seed=0)
    assert adjusted_rand_score(truth, seg) == 1.0
    assert np.bincount(seg)[0] == N_A  # numbered by size, largest first
    np.testing.assert_array_equal(seg, cluster_customers(reps, n_clusters=2, seed=0))
    noise = np.random.default_rng(1).normal(size=reps.shape)
    assert abs(adjusted_rand_score(truth, cluster_customers(noise, n_clusters=2))) < 0.3
    with pytest.raises(ValueError, match="cannot form"):
        cluster_customers(reps[:1], n_clusters=2)


def test_profiles_reuse_rfm_features_and_show_the_planted_difference():
    store = planted_store()
    ex = examples(store)
    seg = cluster_customers(planted_representations()[0], n_clusters=2)
    prof = segment_profiles(store, ex, seg).set_index("segment")
    want = rfm_features(store, ex).groupby(seg).mean()
    np.testing.assert_allclose(prof[list(want.columns)].to_numpy(), want.to_numpy())
    assert prof.loc[0, "frequency"] == 10 and prof.loc[1, "frequency"] == 2
    assert prof.loc[0, "recency_days"] == 1 and prof.loc[1, "recency_days"] == 60
    assert prof.loc[1, "churn_rate"] == 1.0 and prof.loc[1, "truth"] == 1.0
    assert prof.loc[0, "age_top"] == "young" and prof.loc[1, "age_top"] == "old"
    assert prof["n"].sum() == N_A + N_B and 0 < prof.loc[0, "age_known"] < 1
    demo = segment_demographics(store, ex, seg)
    assert "unknown" in set(demo["value"])  # missing demographics are kept, not dropped
    np.testing.assert_allclose(demo.groupby("segment")["share"].sum(), 1.0)


def test_comparison_with_rfm_segments():
    store = planted_store()
    ex = examples(store)
    seg = cluster_customers(planted_representations()[0], n_clusters=2)
    cmp = compare_with_rfm(store, ex, seg)
    assert cmp.ari == 1.0 and cmp.nmi == pytest.approx(1.0)  # RFM separates the planted groups too
    assert cmp.contingency.to_numpy().sum() == N_A + N_B
    assert (cmp.contingency.to_numpy() > 0).sum() == 2
    shuffled = np.random.default_rng(0).permutation(seg)
    assert compare_with_rfm(store, ex, shuffled).ari < 0.3
    code = compare_with_rfm(store, ex, seg, level=SegmentLevel.CODE)
    np.testing.assert_array_equal(code.rfm_segments, rfm_scores(rfm_features(store, ex))["code"])
    assert isinstance(plot_segments(planted_representations()[0], seg, comparison=cmp), Figure)


def test_representations_from_a_model_read_only_the_visible_history():
    from attnlab.models import build_model

    store = load_sequences("synthetic", {"n_customers": 24, "n_items": 40, "seed": 2},
                           cache_dir=None, progress=False)
    test = churn_split(store, horizon="4W").test
    cfg = {"name": "vanilla", "item_head": "softmax", "history_memory": 0, "churn_pool": "last", "d_model": 16, "n_layers": 1, "n_heads": 2, "max_len": 16, "dropout": 0.0}
    model = build_model(cfg, n_items=store.n_items, seed=0)
    reps = customer_representations(model, store, test, time_reference=TimeReference.CUTOFF, batch_size=8)
    assert reps.shape == (len(test), 16) and np.isfinite(reps).all()
    future = np.ones(store.n_events, bool)
    for c, e in zip(test.customer, test.end):
        future[store.offsets[c]:e] = False
    value = store.value.copy()
    value[future] = 1e4
    changed = dataclasses.replace(store, value=value)
    again = customer_representations(model, changed, test, time_reference=TimeReference.CUTOFF, batch_size=8)
    np.testing.assert_array_equal(reps, again)
    seg = cluster_customers(reps, n_clusters=3, seed=0)
    assert len(segment_profiles(store, test, seg)) == 3
