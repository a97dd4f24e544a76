"""``attention_weights``: the one code path for the weights an attention layer uses
(issue 14). The fast path stays the default and records nothing; the recording path
(``nnx.view(model, record_weights=True)``) computes the same outputs from its weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attnlab.models.attention_layers import RECORDED, LinearAttention
from tests.models.test_families import B, L, make_inputs, make_model

OPTIONS = {
    "vanilla": {"attention": {"impl": "xla_chunked"}},
    "time_decay": {"attention": {"impl": "xla_chunked", "slope_min": 0.05, "slope_max": 2.0}},
    "sparse": {"attention": {"impl": "xla_chunked", "window": 4, "num_global": 1}},
    "linear": {"encoder": "event_local", "attention": {"chunk": 4}},
}


def layer_and_input(name):
    m, x = make_model(name, **OPTIONS[name]), make_inputs(4)
    jx = {k: jnp.asarray(v) for k, v in x.items()}
    h = m.encoder(jx)
    block = m.backbone.blocks[0]
    return m, block.attention, block.norm1(h), {"lengths": jx["lengths"], "time": jx["time"]}, jx


@nnx.jit
def weights_and_outputs(att, x, context):
    w = att.attention_weights(x, context)
    _, _, v = att.project(x)
    rebuilt = att.out(jnp.einsum("bhqk,bkhd->bqhd", w, v, precision="highest").reshape(x.shape))
    recording, _ = nnx.capture(nnx.view(att, record_weights=True), nnx.Intermediate)(x, context)
    return w, rebuilt, att(x, context), recording


@pytest.mark.parametrize("name", list(OPTIONS))
def test_attention_weights_are_normalised_masked_and_reproduce_the_fast_path(name):
    _, att, x, context, jx = layer_and_input(name)
    w, rebuilt, fast, recording = map(np.asarray, weights_and_outputs(att, x, context))
    assert w.shape == (B, 2, L, L) and w.dtype == np.float32
    n = np.asarray(jx["lengths"])
    i, j = np.arange(L)[:, None], np.arange(L)[None, :]
    valid_q = np.arange(L)[None, :] < n[:, None]  # [B, L]
    rows = w.sum(-1).transpose(0, 2, 1)  # [B, L, heads]
    np.testing.assert_allclose(rows[valid_q], 1.0, atol=1e-4 if name == "linear" else 1e-5)
    assert np.all(rows[~valid_q] == 0.0)
    assert np.all(w[np.broadcast_to(j > i, w.shape)] == 0.0)
    assert np.all(w[np.broadcast_to((j[None] >= n[:, None, None])[:, None], w.shape)] == 0.0)
    if name == "sparse":
        assert np.all(w[np.broadcast_to((i - j >= 4) & (j >= 1), w.shape)] == 0.0)
    np.testing.assert_allclose(rebuilt, fast, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(recording, rebuilt)  # the recording path *is* w @ v


def test_default_forward_records_nothing_and_the_view_records_each_layer_once():
    m, _, _, _, jx = layer_and_input("time_decay")
    forward = nnx.capture(lambda model, x: model.hidden(x), nnx.Intermediate)
    h, recorded = forward(m, jx)
    assert not jax.tree_util.tree_leaves(recorded)  # the fast path materialises and sows nothing
    view = nnx.view(m, record_weights=True)
    h2, recorded = forward(view, jx)
    calls = recorded["backbone"]["blocks"][0]["attention"][RECORDED].get_value()
    assert len(calls) == 1 and set(calls[0]) == {"weights", "inputs", "outputs"}
    np.testing.assert_allclose(h2, h, rtol=1e-5, atol=1e-5)
    assert not m.backbone.blocks[0].attention.record_weights  # the view left the model alone


def test_linear_eps_is_one_constant_of_the_layer():
    m, att, x, context, _ = layer_and_input("linear")
    assert isinstance(att, LinearAttention) and att.eps == 1e-6
    before = weights_and_outputs(att, x, context)
    att.eps = 4.0
    w, rebuilt, fast, _ = map(np.asarray, weights_and_outputs(att, x, context))
    assert not np.allclose(w, before[0], atol=1e-3)  # the weights follow the layer's eps ...
    np.testing.assert_allclose(rebuilt, fast, rtol=1e-4, atol=1e-5)  # ... and so does the fast path
    # ... and the streaming recurrence
    q, k, v = att.project(x)
    state = att.init_state(B)
    lengths = np.asarray(context["lengths"])
    for t in range(L):
        state, out = att.step(state, x[:, t], jnp.asarray(t < lengths))
        ok = t < lengths
        np.testing.assert_allclose(np.asarray(out)[ok], fast[ok, t], rtol=1e-4, atol=1e-5)
