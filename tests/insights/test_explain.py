"""Attention explanations: replayed weights are exact, causal, normalised and leak-free."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import nnx
from matplotlib.figure import Figure

from attnlab.data import load_sequences
from attnlab.data.batching import make_batch
from attnlab.explain import (
    LinearWeights, NoAttentionWeightsError, TimeReference, attention_rollout, explain_prediction,
    last_query_weights, plot_attention_heatmap, plot_top_events, top_events, trace_attention,
)
from attnlab.models import build_model

L = 16
OPTIONS = {
    # pin the production path: weights come from the reference, the model's own output from xla_chunked
    "vanilla": {"attention": {"impl": "xla_chunked"}},
    "time_decay": {"attention": {"impl": "xla_chunked", "slope_min": 0.05, "slope_max": 2.0}},
    "sparse": {"attention": {"impl": "xla_chunked", "window": 4, "num_global": 1}},
    "linear": {"encoder": "event_local", "item_head": "softmax", "attention": {"chunk": 4}},
    "lstm": {},
}
SOFTMAX = ["vanilla", "time_decay", "sparse"]


@pytest.fixture(scope="module")
def store():
    return load_sequences("synthetic", {"n_customers": 24, "n_items": 50, "seed": 3},
                          cache_dir=None, progress=False)


def make_model(name, n_layers=2):
    cfg = {"name": name, "item_head": "softmax", "history_memory": 0, "churn_pool": "last", "d_model": 16, "n_layers": n_layers, "n_heads": 2, "max_len": L,
           "dropout": 0.0, "item_head": "copy", **OPTIONS[name]}
    cfg.update({k: v for k, v in OPTIONS[name].items() if k != "attention"})
    return build_model(cfg, n_items=50, seed=1)


def batch(store, customers=(0, 1, 2, 3, 4)):
    c = np.asarray(customers)
    ends = store.offsets[c + 1] - 1  # hold the last event out, ragged lengths <= L
    return make_batch(store, customers=c, ends=ends, cutoffs=None, max_len=L)


@nnx.jit
def reconstruct(att, x, w):
    """Layer output rebuilt from the explained weights and the layer's own v/out."""
    _, _, v = att.project(x)
    o = jnp.einsum("bhqk,bkhd->bqhd", w, v, precision="highest")
    return att.out(o.reshape(x.shape))


@nnx.jit
def own_output(att, x, context):
    """The layer's own forward pass (its pinned production implementation)."""
    return att(x, context)


@nnx.jit
def hidden(model, x):
    return model.hidden(x)


@pytest.mark.parametrize("family", SOFTMAX)
def test_replayed_weights_reproduce_layer_outputs_and_hidden_state(store, family):
    model, b = make_model(family), batch(store)
    x = b.model_inputs()
    assert (x["lengths"] < L).any() and (x["lengths"] == L).any()  # ragged and full rows
    tr = trace_attention(model, x)
    assert tr.family == family and tr.weights.shape == (2, 5, 2, L, L)
    context = {"lengths": jnp.asarray(x["lengths"]), "time": jnp.asarray(x["time"])}
    for layer, block in enumerate(model.backbone.blocks):
        own = np.asarray(own_output(block.attention, tr.attention_inputs[layer], context))
        rebuilt = reconstruct(block.attention, tr.attention_inputs[layer], tr.weights[layer])
        np.testing.assert_allclose(rebuilt, own, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(tr.attention_outputs[layer], own, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tr.hidden, np.asarray(hidden(model, x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", SOFTMAX)
def test_weights_sum_to_one_over_visible_keys_and_never_look_ahead(store, family):
    tr = trace_attention(make_model(family), batch(store).model_inputs())
    w = tr.weights
    n = tr.lengths[None, :, None, None, None]
    i = np.arange(L)[:, None]
    j = np.arange(L)[None, :]
    rows = w.sum(-1)
    valid_q = (np.arange(L)[None, None, None, :] < tr.lengths[None, :, None, None])
    np.testing.assert_allclose(rows[np.broadcast_to(valid_q, rows.shape)], 1.0, rtol=1e-5)
    assert np.all(rows[~np.broadcast_to(valid_q, rows.shape)] == 0.0)  # padded queries
    assert np.all(w[np.broadcast_to(j > i, w.shape)] == 0.0)  # causal: no weight on the future
    assert np.all(w[np.broadcast_to(j >= n, w.shape)] == 0.0)  # no weight on padding
    if family == "sparse":  # window 4 + 1 global position
        outside = (i - j >= 4) & (j >= 1)
        assert np.all(w[np.broadcast_to(outside, w.shape)] == 0.0)
    roll = attention_rollout(w, tr.lengths)
    for r, m in zip(roll, tr.lengths):
        np.testing.assert_allclose(r[:m, :m].sum(-1), 1.0, rtol=1e-9)
        assert np.all(np.triu(r, 1) == 0.0) and np.all(r[m:] == 0) and np.all(r[:, m:] == 0)
    per_head, last = last_query_weights(tr)
    np.testing.assert_allclose(last.sum(-1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(per_head.sum(-1), 1.0, rtol=1e-5)


def test_rollout_of_one_layer_is_the_residual_mix():
    w = np.zeros((1, 1, 1, 3, 3))
    w[0, 0, 0] = [[1, 0, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5]]
    r = attention_rollout(w, np.array([3]))[0]
    np.testing.assert_allclose(r, 0.5 * w[0, 0, 0] + 0.5 * np.eye(3))
    w2 = np.zeros_like(w)
    w2[0, 0, 0] = [[1, 0, 0], [0.9, 0.1, 0], [0.1, 0.1, 0.8]]
    r2 = 0.5 * w2[0, 0, 0] + 0.5 * np.eye(3)
    two = attention_rollout(np.concatenate([w, w2]), np.array([3]))[0]
    np.testing.assert_allclose(two, r2 @ r)  # the later layer on the left
    assert not np.allclose(r2 @ r, r @ r2)  # so the order is tested


def test_explanation_table_maps_events_back_and_sums_to_one(store):
    model = make_model("time_decay")
    c = int(np.argmax(store.lengths))
    cutoff = int(store.time[int(store.offsets[c + 1]) - 1])  # the last basket's time
    ex = explain_prediction(model, store, c, cutoff=cutoff, time_reference=TimeReference.CUTOFF)
    end = ex.end
    assert store.time[end - 1] < cutoff <= store.time[end]
    n = min(end - int(store.offsets[c]), L)
    assert len(ex.events) == n and ex.weights.shape == (2, 2, n, n)
    f = ex.frame
    assert set(f["view"]) == {"L0.H0", "L0.H1", "L1.H0", "L1.H1", "rollout", "copy"}
    np.testing.assert_allclose(f.groupby("view")["weight"].sum(), 1.0, rtol=1e-5)
    assert 0.0 < ex.copy_gate < 1.0  # the copy head's pointer over past items is a view too
    copy = f[f["view"] == "copy"]
    assert (copy.loc[copy["item"] == 0, "weight"] == 0).all()
    ev = ex.events
    np.testing.assert_array_equal(ev["store_index"], np.arange(end - n, end))
    assert (ev["date"] < pd.Timestamp(cutoff, unit="s")).all() and (ev["days_before"] > 0).all()
    np.testing.assert_array_equal(ev["product_id"].to_numpy(int), store.item_vocab[store.item[end - n:end]])
    assert {"event_type", "category", "role"} <= set(ev.columns) and set(ev["event_type"]) == {"purchase"}
    top = top_events(ex, 3)
    assert len(top) == 3 and top["weight"].is_monotonic_decreasing
    assert top["weight"].iloc[0] == f.loc[f["view"] == "rollout", "weight"].max()
    assert isinstance(plot_attention_heatmap(ex), Figure) and isinstance(plot_top_events(ex, 3), Figure)
    # defaults: everything visible, cut-off 1 s after the last event
    full = explain_prediction(model, store, c)
    assert full.end == int(store.offsets[c + 1]) and full.cutoff == int(store.time[full.end - 1]) + 1


def test_events_after_the_cutoff_do_not_change_the_explanation(store):
    model = make_model("vanilla")
    c = 2
    lo, hi = int(store.offsets[c]), int(store.offsets[c + 1])
    end = lo + (hi - lo) // 2
    cutoff = int(store.time[end])
    before = explain_prediction(model, store, c, cutoff=cutoff)
    # the explanation reads exactly the events strictly before the cut-off
    assert (store.time[lo:before.end] < cutoff).all() and store.time[before.end] >= cutoff
    rng = np.random.default_rng(0)
    item, value, etype = store.item.copy(), store.value.copy(), store.event_type.copy()
    item[before.end:hi] = rng.integers(1, store.n_items + 1, hi - before.end)
    value[before.end:hi] += 100.0
    etype[before.end:hi] = 2  # returns
    changed = dataclasses.replace(store, item=item, value=value, event_type=etype)
    after = explain_prediction(model, changed, c, cutoff=cutoff)
    pd.testing.assert_frame_equal(before.frame, after.frame)
    with pytest.raises(ValueError, match="before the cut-off"):
        explain_prediction(model, store, c, end=end + 1, cutoff=int(store.time[end]))


def test_families_without_softmax_weights_raise_clear_errors(store):
    x = batch(store).model_inputs()
    with pytest.raises(NoAttentionWeightsError, match="'lstm'.*occlusion"):
        trace_attention(make_model("lstm"), x)
    with pytest.raises(NoAttentionWeightsError, match="'linear'.*LinearWeights.IMPLIED"):
        explain_prediction(make_model("linear"), store, 0)


def test_linear_implied_weights_reproduce_the_linear_layer(store):
    model, x = make_model("linear"), batch(store).model_inputs()
    tr = trace_attention(model, x, linear=LinearWeights.IMPLIED)
    context = {"lengths": jnp.asarray(x["lengths"]), "time": jnp.asarray(x["time"])}
    for layer, block in enumerate(model.backbone.blocks):
        own = np.asarray(own_output(block.attention, tr.attention_inputs[layer], context))
        rebuilt = reconstruct(block.attention, tr.attention_inputs[layer], tr.weights[layer])
        np.testing.assert_allclose(rebuilt, own, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tr.hidden, np.asarray(hidden(model, x)), rtol=1e-4, atol=1e-4)
    rows = tr.weights.sum(-1)[:, 0, :, : int(x["lengths"][0])]
    np.testing.assert_allclose(rows, 1.0, atol=1e-4)
