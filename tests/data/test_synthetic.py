"""Synthetic simulator: determinism and the three planted signals."""

import numpy as np
import pandas as pd
import pytest

from attnlab.data.schema import EventType
from attnlab.data.sequences import build_store
from attnlab.data.sources import get_source

SIM = get_source("synthetic").load


@pytest.fixture(scope="module")
def sim():
    return SIM(n_customers=3000, seed=3)


def test_same_seed_same_data_different_seed_different():
    a, b, c = SIM(n_customers=300, seed=1), SIM(n_customers=300, seed=1), SIM(n_customers=300, seed=2)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.customer_features, b.customer_features)
    assert a.meta == b.meta
    assert len(a.events) != len(c.events) or not a.events.equals(c.events)
    sa, sb = build_store(a, seed=0, progress=False), build_store(b, seed=0, progress=False)
    for name in ("offsets", "item", "time", "basket", "value"):
        np.testing.assert_array_equal(getattr(sa, name), getattr(sb, name))


def test_shape_and_options(sim):
    ev = sim.events
    assert ev["customer_id"].nunique() == 3000  # everyone has at least one basket
    per_customer = len(ev) / 3000
    assert 15 < per_customer < 45  # mean_events=30, approximately
    sizes = ev.groupby("basket_id").size()
    assert sizes.max() <= 8 and sizes.mean() > 2.0  # baskets with several items
    camp = SIM(n_customers=200, campaigns_per_customer=2.0, seed=0).events
    assert (camp["event_type"] == EventType.CAMPAIGN).sum() > 200


def test_long_range_trigger_predicts_target(sim):
    ev, gt = sim.events, sim.customer_features
    pairs = dict(map(tuple, sim.meta["trigger_pairs"]))
    ev = ev.assign(rank=ev.groupby("customer_id")["basket_id"].rank(method="dense").astype(int) - 1)
    trig = ev[ev["item_id"].isin(list(pairs))]
    targ = ev[ev["item_id"].isin(list(pairs.values()))]
    assert len(trig) > 500 and len(targ) > 100
    # every target follows its own trigger exactly `distance` baskets later
    m = targ.merge(trig, on="customer_id", suffixes=("_g", "_t"))
    assert len(m) == len(targ)
    assert (m["item_id_t"].map(pairs) == m["item_id_g"]).all()
    assert (m["rank_g"] - m["rank_t"] == sim.meta["trigger_distance_baskets"]).all()
    assert (m["timestamp_g"] > m["timestamp_t"]).all()
    # ... and a trigger is followed by its target whenever the customer is still active
    reached = gt.loc[trig["customer_id"], "n_baskets"].to_numpy() > trig["rank"].to_numpy() + 10
    got = trig["customer_id"].isin(targ["customer_id"]).to_numpy()
    np.testing.assert_array_equal(reached, got)
    assert int(gt["target_delivered"].sum()) == len(targ)


def _repeat_share(data, short=2.0, long=14.0):
    """Share of next-basket items whose category was in the previous basket, by gap."""
    cat = data.item_features["category"]
    ev = data.events.assign(cat=lambda d: d["item_id"].map(cat))
    ev = ev[ev["cat"] != "special"]
    b = ev.groupby(["customer_id", "basket_id"], sort=False)["timestamp"].first().reset_index()
    b = b.sort_values(["customer_id", "timestamp"])
    b["prev"] = b.groupby("customer_id")["basket_id"].shift()
    b["gap"] = b.groupby("customer_id")["timestamp"].diff().dt.total_seconds() / 86400
    nxt = ev.merge(b.dropna(subset=["prev"]), on=["customer_id", "basket_id"])
    prev = ev[["basket_id", "cat"]].drop_duplicates().rename(columns={"basket_id": "prev"})
    prev["hit"] = 1
    nxt = nxt.merge(prev.assign(prev=prev["prev"].astype(float)), on=["prev", "cat"], how="left")
    hit = nxt["hit"].fillna(0)
    return hit[nxt["gap"] < short].mean(), hit[nxt["gap"] > long].mean()


def test_time_decay_recent_categories_more_likely(sim):
    short, long = _repeat_share(sim)
    assert short > long + 0.08, (short, long)
    flat_short, flat_long = _repeat_share(SIM(n_customers=3000, seed=3, decay_boost=0.0))
    assert abs(flat_short - flat_long) < 0.05, (flat_short, flat_long)


def test_churn_is_predictable_from_observable_behaviour(sim):
    ev, gt, meta = sim.events, sim.customer_features, sim.meta
    b = ev.groupby(["customer_id", "basket_id"]).agg(t=("timestamp", "first"), k=("item_id", "size"))
    g = b.reset_index().groupby("customer_id")
    n = g.size()
    span = (g["t"].max() - g["t"].min()).dt.total_seconds() / 86400
    obs = pd.DataFrame({"gap": span / (n - 1), "size": g["k"].mean()})[n >= 3]
    # the simulator's log-rate, estimated from what a model could see
    score = (meta["churn_gap_coef"] * np.log(obs["gap"])
             - meta["churn_size_coef"] * np.log(obs["size"]))
    churned = gt.loc[obs.index, "churned"]
    lo, hi = score.quantile([0.25, 0.75])
    low_rate, high_rate = churned[score <= lo].mean(), churned[score >= hi].mean()
    assert high_rate > low_rate + 0.15, (low_rate, high_rate)
    assert 0.05 < gt["churned"].mean() < 0.98  # some customers are censored
    assert np.isclose(gt["churned"].mean(), meta["churned_share"])
