"""Collaborative-filtering baselines: shapes, leakage, co-purchase recovery, EASE solvers."""

import dataclasses

import numpy as np
import pytest

from attnlab.baselines.cf import ALS, BPR, EASE, ItemKNN, examples_matrix, train_matrix
from attnlab.data.splits import Examples
from tests.baselines.cases import N_ITEMS, check_contract_and_no_leakage, make_case

MODELS = {
    "knn": lambda: ItemKNN(k=3),
    "ease": lambda: EASE(l2=1.0),
    "ease_primal": lambda: EASE(l2=1.0, solver="primal"),
    "ease_top3": lambda: EASE(l2=1.0, max_items=3),
    "als": lambda: ALS(factors=4, iterations=3),
    "bpr": lambda: BPR(factors=4, iterations=5),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shape_dtype_and_no_leakage(name):
    check_contract_and_no_leakage(MODELS[name], skip_column0=True)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fit_reads_only_train_prefix(name):
    """Rewriting every event at/after train_end (here: after each customer's first
    basket) changes nothing for a probe history inside the training prefix."""
    store, te, ex = make_case(poison=False, n_train={c: 1 for c in range(6)})
    cust = np.repeat(np.arange(store.n_customers), store.lengths)
    after = np.arange(store.n_events) >= te[cust]
    assert after.any() and (~after).any()
    rewritten = dataclasses.replace(store, item=np.where(after, 9, store.item).astype(np.int32))
    probe = Examples(customer=ex.customer, end=te.copy(), cutoff=ex.cutoff)
    a = MODELS[name]().fit(store, te).score(store, probe)
    b = MODELS[name]().fit(rewritten, te).score(rewritten, probe)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["knn", "ease", "ease_primal"])
def test_recovers_co_purchase(name):
    store, te, _ = make_case(poison=False)
    model = MODELS[name]().fit(store, te)
    # histories {1} and {3}: the co-purchased partner ranks first.
    probe = Examples(customer=np.array([0, 2]), end=np.array([store.offsets[0] + 1, store.offsets[2] + 1]),
                     cutoff=np.array([10**9, 10**9]))
    assert store.item[store.offsets[0]] == 1 and store.item[store.offsets[2]] == 3
    s = model.score(store, probe)
    s[:, 0] = -np.inf
    assert s[0].argmax() == 2 and s[1].argmax() == 4


def test_ease_primal_equals_dual():
    store, te, ex = make_case(poison=False)
    p = EASE(l2=2.0, solver="primal").fit(store, te).score(store, ex)
    d = EASE(l2=2.0, solver="dual").fit(store, te).score(store, ex)
    np.testing.assert_allclose(p, d, rtol=1e-4, atol=1e-5)


def test_backfill_below_model_scores():
    store, te, ex = make_case(poison=False)
    m = EASE(l2=1.0, max_items=3).fit(store, te)
    s = m.score(store, ex)
    inside = np.zeros(N_ITEMS + 1, bool)
    inside[m.items_] = True
    inside[0] = False
    out = ~inside
    out[0] = False
    assert (s[:, inside].min(axis=1) > s[:, out].max(axis=1)).all()


def test_train_matrix_checks():
    store, te, _ = make_case(poison=False)
    x = train_matrix(store, te)
    assert x.shape == (6, N_ITEMS + 1) and set(np.unique(x.data)) == {1.0}
    with pytest.raises(ValueError, match="one entry per customer"):
        train_matrix(store, te[:3])
    with pytest.raises(RuntimeError, match="must run before"):
        ItemKNN().score(store, Examples(customer=np.array([0]), end=np.array([1]), cutoff=np.array([1])))
    assert examples_matrix(store, Examples(customer=np.array([0]), end=np.array([0]),
                                           cutoff=np.array([1]))).nnz == 0
