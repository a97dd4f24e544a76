"""Fairness breakdown: planted gaps are found, planted no-gaps are not, unknowns are kept."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples
from attnlab.insights.fairness import demographic_groups, fairness_report, natural_order
from attnlab.insights.groups import UNKNOWN, group_breakdown, plot_group_breakdown

N = 600


def tiny_store(n=N, events=3, seed=0):
    """``n`` customers with ``events`` purchases each; ``age`` codes 1/2 and 0 (unknown) for 1 in 6."""
    rng = np.random.default_rng(seed)
    age = np.where(np.arange(n) % 2 == 0, 1, 2).astype(np.int32)
    age[np.arange(n) % 6 == 5] = 0
    m = n * events
    return SequenceStore(
        offsets=np.arange(n + 1, dtype=np.int64) * events,
        customer_ids=np.arange(n, dtype=np.int64) + 1000,
        item=rng.integers(1, 5, m).astype(np.int32), time=np.arange(m, dtype=np.int64) * 86400,
        event_type=np.ones(m, np.int8), basket=np.arange(m, dtype=np.int64),
        quantity=np.ones(m, np.float32), value=np.ones(m, np.float32),
        item_vocab=np.arange(-1, 4, dtype=np.int64),
        customer_side={"age": age}, customer_side_vocab={"age": ["<unknown>", "18-34", "35+"]},
        customer_numeric={"income": np.where(age == 0, np.nan, rng.normal(50, 10, n))},
    )


def examples(store):
    c = np.arange(store.n_customers)
    return Examples(customer=c, end=store.offsets[c + 1], cutoff=np.full(len(c), 10**9))


def planted(store, p_young, p_old, seed=1):
    age = store.customer_side["age"]
    p = np.where(age == 1, p_young, p_old)
    return {"hr@10": (np.random.default_rng(seed).random(len(age)) < p).astype(float)}


def test_planted_gap_is_found_with_a_ci_that_excludes_zero():
    s = tiny_store()
    rep = fairness_report(planted(s, 0.7, 0.3), s, examples(s), by="age", n_boot=500)
    t = rep.table.set_index("group")
    assert list(t.index) == ["18-34", "35+", UNKNOWN]  # vocab order, unknown last, never dropped
    assert t["n"].sum() == N and t.loc[UNKNOWN, "n"] == N // 6 and not t.loc[UNKNOWN, "in_gap"]
    assert (t["ci_low"] <= t["mean"]).all() and (t["mean"] <= t["ci_high"]).all()
    g = rep.gaps.iloc[0]
    assert (g["by"], g["metric"], g["max_group"], g["min_group"]) == ("age", "hr@10", "18-34", "35+")
    assert abs(g["gap"] - 0.4) < 0.1 and g["gap_ci_low"] > 0.2
    assert g["p_perm"] < 0.01  # the permutation test, groups re-picked each time, agrees
    np.testing.assert_allclose(g["gap"], t.loc["18-34", "mean"] - t.loc["35+", "mean"])


def test_planted_no_gap_has_a_ci_that_contains_zero():
    s = tiny_store()
    rep = fairness_report(planted(s, 0.4, 0.4), s, examples(s), by="age", n_boot=500)
    g = rep.gaps.iloc[0]
    assert g["gap"] < 0.1 and g["gap_ci_low"] <= 0.0 <= g["gap_ci_high"]
    assert g["p_perm"] > 0.05


def test_tiny_groups_cannot_make_a_gap():
    """Two 1-customer groups beside a large one: by default they are left out of the gap;
    let in, their degenerate CI says "certain" but the permutation test does not."""
    rng = np.random.default_rng(4)
    hits = (rng.random(100) < 0.5).astype(float)
    hits[:2] = [1.0, 0.0]
    labels = np.array(["a", "b"] + ["c"] * 98, dtype=object)
    rep = group_breakdown({"hr@10": hits}, labels, n_boot=400)
    t = rep.table.set_index("group")
    assert not t.loc["a", "in_gap"] and not t.loc["b", "in_gap"] and t.loc["c", "in_gap"]
    assert rep.gaps.iloc[0]["n_groups"] == 1 and rep.gaps.iloc[0]["gap"] == 0.0
    g = group_breakdown({"hr@10": hits}, labels, n_boot=400, min_group_size=1).gaps.iloc[0]
    assert g["gap"] == 1.0 and g["gap_ci_low"] == g["gap_ci_high"] == 1.0  # the naive reading
    assert g["p_perm"] > 0.2  # picking the extremes of three groups explains it


def test_integer_series_with_missing_customers_keeps_its_own_group_names():
    s = tiny_store()
    by_id = pd.Series([1, 2, 3] * 100, index=np.arange(300) + 1000)  # customers 1300+ unlisted
    labels, order = demographic_groups(s, examples(s), by_id)
    assert order == ["1", "2", "3"]
    assert set(labels) == {"1", "2", "3", UNKNOWN} and (labels == UNKNOWN).sum() == N - 300


def test_churn_auc_by_group_and_nan_metrics():
    s = tiny_store()
    rng = np.random.default_rng(2)
    age = s.customer_side["age"]
    y = (rng.random(N) < 0.5).astype(float)
    prob = np.where(age == 1, 0.8 * y + 0.2 * rng.random(N), rng.random(N))  # informative for 18-34 only
    per = {"prob": prob, "label": y, "brier": (prob - y) ** 2, "nan_metric": np.full(N, np.nan)}
    rep = fairness_report(per, s, examples(s), by="age", n_boot=200)
    auc = rep.table[rep.table["metric"] == "auc"].set_index("group")
    assert auc.loc["18-34", "mean"] > 0.95 and abs(auc.loc["35+", "mean"] - 0.5) < 0.12
    gap = rep.gaps.set_index("metric")
    assert gap.loc["auc", "max_group"] == "18-34" and gap.loc["auc", "gap_ci_low"] > 0.3
    nan_rows = rep.table[rep.table["metric"] == "nan_metric"]
    assert (nan_rows["n"] == 0).all() and gap.loc["nan_metric", "n_groups"] == 0


def test_groups_from_numeric_columns_series_and_arrays():
    s = tiny_store()
    ex = examples(s)
    labels, order = demographic_groups(s, ex, "income", bins=4)
    assert len(order) == 4 and (labels == UNKNOWN).sum() == N // 6
    by_id = pd.Series({1000: "a", 1001: "b"})  # other customers are not listed -> unknown
    labels, _ = demographic_groups(s, ex, by_id)
    assert list(labels[:3]) == ["a", "b", UNKNOWN]
    rep = fairness_report(planted(s, 0.5, 0.5), s, ex, by=["age", "income"], n_boot=50)
    assert set(rep.table["by"]) == {"age", "income"} and len(rep.gaps) == 2
    arr = np.where(np.arange(N) < 10, None, "x")
    rep = group_breakdown(planted(s, 0.5, 0.5), arr, n_boot=50)
    assert rep.table.set_index("group").loc[UNKNOWN, "n"] == 10
    assert natural_order(["100-124K", "15-24K", "Under 15K", "250K+"]) == ["Under 15K", "15-24K", "100-124K", "250K+"]
    with pytest.raises(KeyError, match="not in this store"):
        demographic_groups(s, ex, "nope")
    with pytest.raises(ValueError, match="one per example"):
        demographic_groups(s, ex, np.zeros(3))
    with pytest.raises(ValueError, match="no categorical customer columns"):
        fairness_report(planted(s, 0.5, 0.5), s.__class__(**{**s.__dict__, "customer_side": {}}), ex)


def test_bootstrap_is_seeded_and_plot_returns_a_figure():
    s = tiny_store()
    a = fairness_report(planted(s, 0.6, 0.4), s, examples(s), by="age", n_boot=100, seed=3)
    b = fairness_report(planted(s, 0.6, 0.4), s, examples(s), by="age", n_boot=100, seed=3)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert isinstance(plot_group_breakdown(a), Figure)
