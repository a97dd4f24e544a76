"""Next-basket baselines (P-TopFreq, UP-CF@r, TIFU-KNN): hand-computed scores, brute-force
agreement, exact ranking output, leakage."""

import dataclasses
import itertools

import numpy as np
import pytest

from attnlab.baselines.nbr import (TIFU_DUNNHUMBY, TIFUKNN, UPCF, PTopFreq, history_baskets,
                                   recency_popularity, tifu_vectors)
from attnlab.data.schema import EventType
from attnlab.data.splits import Examples
from protocol_stores import build_store
from tests.baselines.cases import check_contract_and_no_leakage, make_case

P, C = int(EventType.PURCHASE), int(EventType.CAMPAIGN)
DAY = 86_400

MODELS = {
    "p_topfreq": lambda: PTopFreq(),
    "up_cf": lambda: UPCF(recency=2, k=3, locality=2.0),
    "tifu_knn": lambda: TIFUKNN(n_groups=2, r_b=0.8, r_g=0.7, k=3, alpha=0.5),
    "tifu_knn_default": lambda: TIFUKNN(),
}


def baskets_store(hist: dict[int, list[list[int]]], *, n_items: int):
    """Store from ``customer -> baskets`` (basket b of customer c on day b, id 100 c + b)."""
    rows = [(c, b * DAY, 100 * c + b, i, P) for c, bs in hist.items() for b, items in enumerate(bs)
            for i in items]
    return build_store(rows, n_items=n_items)


def full_examples(store, customers):
    cs = np.asarray(customers)
    return Examples(customer=cs, end=store.offsets[cs + 1].astype(np.int64), cutoff=np.full(len(cs), 10**9))


def order_of(row: np.ndarray) -> list[int]:
    """Items 1.. by descending score (ties by item index)."""
    return [int(i) + 1 for i in np.lexsort((np.arange(len(row) - 1), -row[1:]))]


def assert_same_ranking(scores: np.ndarray, reference: np.ndarray) -> None:
    """Positive reference entries rank above the rest and in the same order, ties included."""
    for s, ref in zip(scores, reference):
        pos = np.flatnonzero(ref[1:] > 0) + 1
        rest = np.setdiff1d(np.arange(1, len(ref)), pos)
        if len(rest) and len(pos):
            assert s[pos].min() > s[rest].max()
        a, b = s[pos], ref[pos]
        np.testing.assert_array_equal(np.sign(a[:, None] - a[None, :]),
                                      np.sign(np.round(b[:, None] - b[None, :], 12)))


# ----------------------------------------------------------------------------- contract, leakage


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shape_dtype_and_no_leakage(name):
    """Events after every example's end (and after train_end) change nothing."""
    check_contract_and_no_leakage(MODELS[name])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fit_reads_only_train_prefix(name):
    """Rewriting every event at/after train_end changes nothing for histories inside it."""
    store, te, ex = make_case(poison=False, n_train={c: 2 if c < 5 else 1 for c in range(6)})
    cust = np.repeat(np.arange(store.n_customers), store.lengths)
    after = np.arange(store.n_events) >= te[cust]
    assert after.any() and (~after).any()
    rewritten = dataclasses.replace(store, item=np.where(after, 9, store.item).astype(np.int32),
                                    basket=np.where(after, 7, store.basket))
    probe = Examples(customer=ex.customer, end=te.copy(), cutoff=ex.cutoff)
    a = MODELS[name]().fit(store, te).score(store, probe)
    b = MODELS[name]().fit(rewritten, te).score(rewritten, probe)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_scores_read_only_the_visible_history(name):
    """Rewriting a customer's events after its example's end (the fit is unchanged:
    those events are after train_end too) leaves its scores unchanged."""
    store, te, ex = make_case(poison=False)
    cust = np.repeat(np.arange(store.n_customers), store.lengths)
    hidden = np.arange(store.n_events) >= ex.end[cust]
    assert (te <= ex.end).all() and hidden.any()
    other = dataclasses.replace(store, item=np.where(hidden, 6, store.item).astype(np.int32))
    a = MODELS[name]().fit(store, te).score(store, ex)
    b = MODELS[name]().fit(other, te).score(other, ex)
    np.testing.assert_array_equal(a, b)


def test_unfitted_and_bad_train_end():
    store, te, ex = make_case(poison=False)
    with pytest.raises(RuntimeError, match="must run before"):
        TIFUKNN().score(store, ex)
    with pytest.raises(ValueError, match="one entry per customer"):
        UPCF().fit(store, te[:2])
    with pytest.raises(ValueError, match="outside customer row"):
        PTopFreq().fit(store, te + 100)


# ----------------------------------------------------------------------------- baskets


def test_history_baskets_dedupes_items_and_ignores_other_events():
    rows = [(0, 0, 10, 3, P), (0, 0, 10, 3, P), (0, 0, 10, 1, P),   # basket 0: {1, 3}
            (0, DAY, 11, 0, C),                                    # campaign: not a basket
            (0, 2 * DAY, 12, 2, P), (1, 0, 13, 2, P)]
    store = build_store(rows, n_items=3)
    hb = history_baskets(store, store.offsets[:-1], store.offsets[1:])
    np.testing.assert_array_equal(hb.n_baskets, [2, 1])
    assert list(zip(hb.row, hb.pos, hb.item)) == [(0, 0, 1), (0, 0, 3), (0, 1, 2), (1, 0, 2)]
    np.testing.assert_array_equal(hb.age, [1, 1, 0, 0])


# ----------------------------------------------------------------------------- P-TopFreq


def test_p_topfreq_counts_baskets_then_recency_then_popularity():
    # customer 0: item 1 in 3 baskets; item 2 in 2; item 5 three times in ONE basket;
    # items 4 (latest basket) and 3 once each.
    hist = {0: [[1, 2], [1, 3], [5, 5, 5], [1, 2], [4]],
            1: [[6], [6], [6], [7]], 2: [[6, 7], [6]]}
    store = baskets_store(hist, n_items=8)
    te = store.offsets[1:].astype(np.int64)
    s = PTopFreq().fit(store, te).score(store, full_examples(store, [0, 1]))
    # item 5 counts one basket (not three events); 4 beats 5 and 3 on recency.
    assert order_of(s[0])[:5] == [1, 2, 4, 5, 3]
    # then popularity: item 6 (5 training baskets) before 7 (2) before 8 (0).
    assert order_of(s[0])[5:] == [6, 7, 8]
    assert s[0, 3] < s[0, 5] < s[0, 4]
    assert order_of(s[1])[:2] == [6, 7]
    # exact small integers, strictly ordered, all above popularity ranks
    assert np.array_equal(s, np.round(s)) and len(set(s[0, 1:6].tolist())) == 5


def test_p_topfreq_keeps_true_ties():
    store = baskets_store({0: [[1, 2]], 1: [[3]]}, n_items=3)
    s = PTopFreq().fit(store, store.offsets[1:].astype(np.int64)).score(store, full_examples(store, [0]))
    assert s[0, 1] == s[0, 2] > s[0, 3]


# ----------------------------------------------------------------------------- TIFU-KNN


def test_tifu_vectors_hand_computed():
    # 5 baskets, m = 2 groups: sizes 2 (baskets 0-1) and 3 (baskets 2-4, the recent group).
    store = baskets_store({0: [[1], [2], [3], [4], [5, 1]]}, n_items=5)
    hb = history_baskets(store, store.offsets[:-1], store.offsets[1:])
    u = tifu_vectors(hb, 6, n_groups=2, r_b=0.5, r_g=0.25).toarray()[0]
    old = lambda j: 0.5 ** (1 - j) / 2 * 0.25 / 2  # noqa: E731  group 0, size 2
    new = lambda j: 0.5 ** (2 - j) / 3 * 1.0 / 2  # noqa: E731  group 1, size 3
    np.testing.assert_allclose(u, [0, old(0) + new(2), old(1), new(0), new(1), new(2)])
    # fewer baskets than groups: one basket per group
    u1 = tifu_vectors(history_baskets(store, store.offsets[:1], store.offsets[:1] + 2), 6,
                      n_groups=3, r_b=0.5, r_g=0.25).toarray()[0]
    np.testing.assert_allclose(u1, [0, 0.25 / 2, 1.0 / 2, 0, 0, 0])


def test_tifu_k0_alpha1_is_the_own_decayed_vector():
    hist = {0: [[1, 2], [3], [1, 4], [2], [5]], 1: [[6, 7]], 2: [[7], [7, 8]]}
    store = baskets_store(hist, n_items=8)
    te = store.offsets[1:].astype(np.int64)
    ex = full_examples(store, [0, 1, 2])
    model = TIFUKNN(n_groups=2, r_b=0.6, r_g=0.5, k=0, alpha=1.0).fit(store, te)
    s = model.score(store, ex)
    u = tifu_vectors(history_baskets(store, store.offsets[ex.customer], ex.end), 9,
                     n_groups=2, r_b=0.6, r_g=0.5).toarray()
    assert_same_ranking(s, u)
    # the remaining items follow training basket popularity (7: 3, 1 and 2: 2, others 1)
    assert order_of(s[1])[:4] == [6, 7, 1, 2] and order_of(s[0])[5:] == [7, 6, 8]


def brute_tifu(store, te, ex, *, n_groups, r_b, r_g, k, alpha):
    """Loop reference: own vector + mean of the k nearest OTHER customers' training vectors."""
    v = store.n_items + 1
    pool = tifu_vectors(history_baskets(store, store.offsets[:-1], te), v,
                        n_groups=n_groups, r_b=r_b, r_g=r_g).toarray()
    own = tifu_vectors(history_baskets(store, store.offsets[ex.customer], ex.end), v,
                       n_groups=n_groups, r_b=r_b, r_g=r_g).toarray()
    out = []
    for c, u in zip(ex.customer, own):
        cands = [j for j in range(store.n_customers) if j != c and pool[j].any()]
        d = [float(((u - pool[j]) ** 2).sum()) for j in cands]
        nb = [cands[i] for i in np.argsort(d, kind="stable")[:k]]
        out.append(alpha * u + (1 - alpha) * (pool[nb].mean(axis=0) if nb else 0))
    return np.array(out)


@pytest.mark.parametrize("k,alpha", [(1, 0.0), (2, 0.3), (10, 0.5)])
def test_tifu_matches_brute_force(k, alpha):
    store, te, ex = make_case(poison=False)
    hp = dict(n_groups=2, r_b=0.8, r_g=0.7, k=k, alpha=alpha)
    s = TIFUKNN(**hp).fit(store, te).score(store, ex)
    assert_same_ranking(s, brute_tifu(store, te, ex, **hp))


def test_tifu_excludes_the_customers_own_training_row():
    # customer 0's training prefix equals its history; with k = 1, alpha = 0 the
    # neighbour must be customer 1 (items 1, 2: distance^2 3), not customer 0 itself
    # (item 5, distance 0) nor customer 2 (items 3, 4, 6: distance^2 4).
    store = baskets_store({0: [[5]], 1: [[1, 2]], 2: [[3, 4, 6]]}, n_items=6)
    te = store.offsets[1:].astype(np.int64)
    s = TIFUKNN(n_groups=1, k=1, alpha=0.0).fit(store, te).score(store, full_examples(store, [0]))
    assert set(order_of(s[0])[:2]) == {1, 2}


def test_tifu_defaults_are_the_papers_dunnhumby_setting():
    m = TIFUKNN()
    assert {k: getattr(m, k) for k in TIFU_DUNNHUMBY} == TIFU_DUNNHUMBY


# ----------------------------------------------------------------------------- UP-CF


def test_recency_popularity_hand_computed():
    store = baskets_store({0: [[1, 2], [1, 3], [4]]}, n_items=4)
    hb = history_baskets(store, store.offsets[:-1], store.offsets[1:])
    np.testing.assert_allclose(recency_popularity(hb, 5, 2).toarray()[0], [0, 0.5, 0, 0.5, 0.5])
    np.testing.assert_allclose(recency_popularity(hb, 5, 0).toarray()[0], [0, 2 / 3, 1 / 3, 1 / 3, 1 / 3])


def test_upcf_without_neighbours_ranks_by_recent_popularity_with_ties():
    store = baskets_store({0: [[1, 2], [1, 3], [4]], 1: [[2]], 2: [[2], [5]]}, n_items=5)
    te = store.offsets[1:].astype(np.int64)
    s = UPCF(recency=2, k=0).fit(store, te).score(store, full_examples(store, [0]))
    assert s[0, 1] == s[0, 3] == s[0, 4] > s[0, 2] > s[0, 5]  # 2: popularity 3 baskets, 5: 1


def brute_upcf(store, te, ex, *, recency, asymmetry, locality, k):
    v = store.n_items + 1
    hb_pool = history_baskets(store, store.offsets[:-1], te)
    pool_pi = recency_popularity(hb_pool, v, recency).toarray()
    hb_own = history_baskets(store, store.offsets[ex.customer], ex.end)
    own_pi = recency_popularity(hb_own, v, recency).toarray()
    sets = [set(hb_pool.item[hb_pool.row == j]) for j in range(store.n_customers)]
    out = []
    for i, c in enumerate(ex.customer):
        iu = set(hb_own.item[hb_own.row == i])
        sims = []
        for j in range(store.n_customers):
            if j == c or not sets[j] or not iu & sets[j]:
                continue
            sims.append((-len(iu & sets[j]) / (len(iu) ** asymmetry * len(sets[j]) ** (1 - asymmetry)), j))
        top = sorted(sims)[:k]
        out.append(own_pi[i] + sum((-w) ** locality * pool_pi[j] for w, j in top))
    return np.array(out)


@pytest.mark.parametrize("asymmetry,locality,k", [(0.5, 1.0, 2), (0.75, 3.0, 10), (0.0, 2.0, 1)])
def test_upcf_matches_brute_force(asymmetry, locality, k):
    store, te, ex = make_case(poison=False)
    hp = dict(recency=2, asymmetry=asymmetry, locality=locality, k=k)
    s = UPCF(**hp).fit(store, te).score(store, ex)
    assert_same_ranking(s, brute_upcf(store, te, ex, **hp))


# ----------------------------------------------------------------------------- exact output


def test_dense_and_sparse_ranking_paths_agree():
    rng = np.random.default_rng(0)
    model = PTopFreq()
    model._pop_rank = rng.integers(0, 5, 30).astype(np.float64)
    for density in (0.1, 0.9):  # below / above the dense-path threshold
        pred = np.round(rng.random((7, 30)), 2) * (rng.random((7, 30)) < density)
        pred[:, 0] = 0.0
        out = model._ranked_dense(pred)
        row, item = np.nonzero(pred)
        ref = model._ranked(7, row, item, pred[row, item])
        np.testing.assert_array_equal(out, ref)
        assert_same_ranking(out, pred)
        rest = pred == 0
        np.testing.assert_array_equal(out[rest], np.broadcast_to(model._pop_rank, pred.shape)[rest])


def test_tiny_differences_survive_float32():
    """UP-CF with a high locality adds neighbour terms far below float32 resolution of
    the personal scores; the ranked output must still order them."""
    model = PTopFreq()
    model._pop_rank = np.zeros(6)
    pred = np.array([[0, 0.5, 0.5 + 1e-13, 0.5 + 2e-13, 0.25, 0]])
    assert np.float32(pred[0, 1]) == np.float32(pred[0, 3])  # a plain cast would tie them
    out = model._ranked_dense(pred)
    assert out[0, 3] > out[0, 2] > out[0, 1] > out[0, 4] > out[0, 5]


@pytest.mark.parametrize("name", ["p_topfreq", "up_cf", "tifu_knn"])
def test_registered_and_fitted_by_the_registry(name, tmp_path):
    from attnlab.baselines.registry import RANKING, ranking_baselines
    from attnlab.data.pipeline import load_sequences
    from attnlab.train.tasks import make_task

    assert name in RANKING
    store = load_sequences("synthetic", {"n_customers": 60, "n_items": 40}, cache_dir=tmp_path,
                           progress=False)
    split = make_task({"name": "next_basket"}).split(store, seed=0)
    fitted = ranking_baselines([name], store, split)
    s = fitted[name].predict(store, split.test.take(np.arange(min(5, len(split.test)))))
    assert s.shape[1] == store.n_items + 1 and list(fitted) == [name] and fitted[name].fit_s >= 0.0


def test_all_grid_models_run_on_tiny_case():
    """Every hyperparameter corner of the tuning grids scores without error."""
    from attnlab.baselines.tuning import TIFU_GRID, UPCF_GRID

    store, te, ex = make_case(poison=False)
    for cls, grid in ((TIFUKNN, TIFU_GRID), (UPCF, UPCF_GRID)):
        for vals in itertools.product(*((min(v), max(v)) for v in grid.values())):
            s = cls(**dict(zip(grid, vals))).fit(store, te).score(store, ex)
            assert np.isfinite(s).all()


def test_tifu_keeps_a_neighbour_at_distance_zero():
    # customers 0 and 1 have identical histories; item 4 (customer 2) is the most popular.
    store = baskets_store({0: [[1, 2]], 1: [[1, 2]], 2: [[4], [4], [4, 3]]}, n_items=4)
    te = store.offsets[1:].astype(np.int64)
    ex = Examples(customer=np.array([0]), end=store.offsets[:1].astype(np.int64), cutoff=np.array([10**9]))
    s = TIFUKNN(n_groups=1, k=1, alpha=0.0).fit(store, te).score(store, ex)  # empty own history
    assert order_of(s[0])[0] == 4  # nearest to an empty vector: customer 2 (smallest norm)
    s = TIFUKNN(n_groups=1, k=1, alpha=0.0).fit(store, te).score(store, full_examples(store, [0]))
    assert set(order_of(s[0])[:2]) == {1, 2}  # customer 1 at distance 0, not popularity
