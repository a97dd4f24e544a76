"""Journey attention: per-customer mass is a distribution, matches the single-customer
explanation, reads nothing after the cut-off, and is averaged correctly per cohort."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from attnlab.data import load_sequences
from attnlab.data.splits import churn_split
from attnlab.explain import TimeReference, explain_example
from attnlab.insights.journey import (
    attention_mass, gap_bucket_labels, journey_attention, journey_summary, plot_journey,
)
from attnlab.models import build_model

L = 16


@pytest.fixture(scope="module")
def setup():
    store = load_sequences("synthetic", {"n_customers": 30, "n_items": 50, "seed": 5,
                                         "campaigns_per_customer": 2.0}, cache_dir=None, progress=False)
    split = churn_split(store, horizon="4W")
    cfg = {"name": "time_decay", "item_head": "softmax", "history_memory": 0, "churn_pool": "last", "d_model": 16, "n_layers": 2, "n_heads": 2, "max_len": L, "dropout": 0.0}
    return store, split.test, build_model(cfg, n_items=store.n_items, seed=0)


def test_mass_is_a_distribution_per_customer_and_dimension(setup):
    store, test, model = setup
    mass = attention_mass(model, store, test, batch_size=8)
    assert set(mass["dimension"]) == {"event_type", "category", "time_gap"}
    sums = mass.groupby(["row", "dimension"])["mass"].sum()
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
    np.testing.assert_allclose(mass.groupby(["row", "dimension"])["event_share"].sum(), 1.0)
    assert {"purchase", "campaign"} <= set(mass["group"]) and "(no item)" in set(mass["group"])
    assert set(mass.loc[mass["dimension"] == "time_gap", "group"]) <= set(gap_bucket_labels())


def test_mass_matches_the_single_customer_explanation(setup):
    store, test, model = setup
    row = int(np.argmax(test.end - store.offsets[test.customer]))
    mass = attention_mass(model, store, test, batch_size=8)
    ex = explain_example(model, store, test, row, time_reference=TimeReference.CUTOFF)
    roll = ex.frame[ex.frame["view"] == "rollout"]
    want = roll.groupby("event_type")["weight"].sum()
    got = mass[(mass["row"] == row) & (mass["dimension"] == "event_type")].set_index("group")["mass"]
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False, rtol=1e-5)
    days = roll["days_before"].to_numpy()
    got_gap = mass[(mass["row"] == row) & (mass["dimension"] == "time_gap")].set_index("group")["mass"]
    np.testing.assert_allclose(got_gap.get("<1d", 0.0), roll["weight"][days < 1].sum(), rtol=1e-5)
    np.testing.assert_allclose(got_gap.get(">90d", 0.0), roll["weight"][days > 90].sum(), rtol=1e-5)


def test_events_after_the_cutoff_are_never_read(setup):
    store, test, model = setup
    before = attention_mass(model, store, test, batch_size=8)
    after_mask = np.ones(store.n_events, bool)
    for c, e in zip(test.customer, test.end):
        after_mask[store.offsets[c]:e] = False
    item, etype = store.item.copy(), store.event_type.copy()
    item[after_mask] = 1
    etype[after_mask] = 4
    changed = dataclasses.replace(store, item=item, event_type=etype)
    pd.testing.assert_frame_equal(before, attention_mass(model, changed, test, batch_size=8))


def test_summary_means_count_missing_groups_as_zero():
    mass = pd.DataFrame({
        "row": [0, 0, 1, 2], "dimension": "event_type",
        "group": ["purchase", "campaign", "purchase", "purchase"],
        "mass": [0.6, 0.4, 1.0, 1.0], "n_events": [3, 1, 2, 5], "event_share": [0.75, 0.25, 1.0, 1.0],
    })
    s = journey_summary(mass, np.array([1.0, 1.0, 0.0])).set_index(["group", "cohort"])
    assert list(s.index.get_level_values(0).unique()) == ["purchase", "campaign"]  # EventType order
    np.testing.assert_allclose(s.loc[("campaign", "churned"), "mean_mass"], 0.2)
    np.testing.assert_allclose(s.loc[("purchase", "churned"), "mean_mass"], 0.8)
    np.testing.assert_allclose(s.loc[("purchase", "churned"), "lift"], 0.8 / 0.875)
    assert s.loc[("campaign", "retained"), "n_with_group"] == 0
    assert s.loc[("campaign", "retained"), "mean_mass"] == 0.0
    assert s.loc[("purchase", "retained"), "n_customers"] == 1


def test_journey_attention_end_to_end_and_plot(setup):
    store, test, model = setup
    summary = journey_attention(model, store, test, batch_size=8)
    assert set(summary["cohort"]) == {"churned", "retained"}
    for (dim, coh), d in summary.groupby(["dimension", "cohort"]):
        np.testing.assert_allclose(d["mean_mass"].sum(), 1.0, rtol=1e-5)
        assert (d["n_customers"] == (test.label == (coh == "churned")).sum()).all()
    assert isinstance(plot_journey(summary), Figure)
    unlabelled = dataclasses.replace(test, label=None)
    with pytest.raises(ValueError, match="churn labels"):
        journey_attention(model, store, unlabelled)
