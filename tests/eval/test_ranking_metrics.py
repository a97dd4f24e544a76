"""Ranking metrics vs hand-computed values, brute force and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from attnlab.eval import metrics as M

NEG = -np.inf


def test_target_ranks_hand_and_pessimistic_ties():
    scores = np.array([
        [9.0, 0.1, 0.5, 0.3, 0.2],    # column 0 huge: ignored; target 2 is best -> 1
        [NEG, 0.4, 0.4, 0.4, 0.1],    # target 1 ties with items 2, 3 -> pessimistic 3
        [NEG, 0.0, 0.0, 0.0, 0.0],    # constant scorer -> worst rank n_items = 4
        [NEG, 0.9, 0.8, 0.7, 0.6],    # target 4 last -> 4
    ])
    np.testing.assert_array_equal(M.target_ranks(scores, np.array([2, 1, 3, 4])), [1, 3, 4, 4])


def test_target_ranks_errors():
    with pytest.raises(ValueError, match="NaN"):
        M.target_ranks(np.array([[0, np.nan, 1.0]]), np.array([2]))
    with pytest.raises(ValueError, match="targets must be in"):
        M.target_ranks(np.zeros((1, 3)), np.array([0]))


def test_rank_metrics_hand():
    per = M.rank_metrics(np.array([1, 3, 10, 11, 25]), ks=(10, 20))
    np.testing.assert_allclose(per["hr@10"], [1, 1, 1, 0, 0])
    np.testing.assert_allclose(per["hr@20"], [1, 1, 1, 1, 0])
    np.testing.assert_allclose(per["ndcg@10"], [1, 0.5, 1 / np.log2(11), 0, 0])
    np.testing.assert_allclose(per["mrr@10"], [1, 1 / 3, 0.1, 0, 0])
    np.testing.assert_allclose(per["mrr@20"], [1, 1 / 3, 0.1, 1 / 11, 0])
    np.testing.assert_allclose(per["mrr"], [1, 1 / 3, 0.1, 1 / 11, 1 / 25])


@pytest.mark.parametrize("k", [10, 20])
def test_next_item_ndcg_matches_sklearn(k):
    rng = np.random.default_rng(0)
    m, n = 50, 40
    scores = rng.normal(size=(m, n + 1))                 # continuous: no ties
    targets = rng.integers(1, n + 1, m)
    per = M.rank_metrics(M.target_ranks(scores, targets), ks=(k,))
    y = np.zeros((m, n))
    y[np.arange(m), targets - 1] = 1
    assert per[f"ndcg@{k}"].mean() == pytest.approx(ndcg_score(y, scores[:, 1:], k=k))


def brute_positions(scores, off, items):
    """Full sort with the documented tie-break: score desc, non-targets first, item asc."""
    out = []
    for r in range(len(off) - 1):
        t = set(items[off[r]:off[r + 1]].tolist())
        cand = sorted(range(1, scores.shape[1]), key=lambda j: (-scores[r, j], j in t, j))
        pos = {j: p + 1 for p, j in enumerate(cand)}
        out += [pos[j] for j in items[off[r]:off[r + 1]]]
    return np.array(out)


@pytest.mark.parametrize("seed", range(5))
def test_basket_positions_match_brute_force_with_heavy_ties(seed):
    rng = np.random.default_rng(seed)
    m, n, max_k = 12, 30, 10
    scores = rng.integers(0, 4, size=(m, n + 1)).astype(np.float32)  # many ties
    scores[:3] = 0.0                                                  # constant rows
    sizes = rng.integers(1, 8, m)
    off = np.concatenate([[0], np.cumsum(sizes)])
    items = np.concatenate([rng.choice(np.arange(1, n + 1), s, replace=False) for s in sizes])
    got = M.basket_target_positions(scores, off, items, max_k=max_k, block=4)
    want = np.minimum(brute_positions(scores, off, items), max_k + 1)
    np.testing.assert_array_equal(got, want)


def test_basket_metrics_hand():
    # row 0: targets at positions 1, 3, 30 (|T| = 3); row 1: one target at 12
    pos = np.array([1, 3, 21, 12])
    off = np.array([0, 3, 4])
    per = M.basket_metrics(pos, off, ks=(10, 20))
    idcg3 = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    np.testing.assert_allclose(per["recall@10"], [2 / 3, 0])
    np.testing.assert_allclose(per["recall@20"], [2 / 3, 1])
    np.testing.assert_allclose(per["ndcg@10"], [(1 + 1 / np.log2(4)) / idcg3, 0])
    np.testing.assert_allclose(per["ndcg@20"], [(1 + 1 / np.log2(4)) / idcg3, 1 / np.log2(13)])
    np.testing.assert_allclose(per["phr@10"], [1, 0])
    # repeat subset: only the target at position 3 of row 0 is a repeat target
    rel = np.array([False, True, False, False])
    sub = M.basket_metrics(pos, off, ks=(10,), relevant=rel)
    np.testing.assert_allclose(sub["recall@10"], [1.0, np.nan])
    np.testing.assert_allclose(sub["ndcg@10"], [(1 / np.log2(4)) / 1.0, np.nan])
    means = M.nan_means(sub)
    assert means["recall@10"] == 1.0


def test_idcg_uses_min_of_basket_size_and_k():
    # 15 targets, all in the top 15: NDCG@10 must be 1 (IDCG over min(15, 10)).
    per = M.basket_metrics(np.arange(1, 16), np.array([0, 15]), ks=(10, 20))
    assert per["ndcg@10"][0] == pytest.approx(1.0) and per["ndcg@20"][0] == pytest.approx(1.0)
    assert per["recall@10"][0] == pytest.approx(10 / 15)


@pytest.mark.parametrize("k", [10, 20])
def test_basket_ndcg_matches_sklearn(k):
    rng = np.random.default_rng(k)
    m, n = 40, 60
    scores = rng.normal(size=(m, n + 1))
    sizes = rng.integers(1, 25, m)
    off = np.concatenate([[0], np.cumsum(sizes)])
    items = np.concatenate([rng.choice(np.arange(1, n + 1), s, replace=False) for s in sizes])
    pos = M.basket_target_positions(scores, off, items, max_k=k)
    per = M.basket_metrics(pos, off, ks=(k,))
    y = np.zeros((m, n))
    y[np.repeat(np.arange(m), sizes), items - 1] = 1
    for r in range(m):
        assert per[f"ndcg@{k}"][r] == pytest.approx(ndcg_score(y[r:r + 1], scores[r:r + 1, 1:], k=k))
        top = np.argsort(-scores[r, 1:])[:k] + 1
        hits = len(set(top) & set(items[off[r]:off[r + 1]]))
        assert per[f"recall@{k}"][r] == pytest.approx(hits / sizes[r])
        assert per[f"phr@{k}"][r] == float(hits > 0)
