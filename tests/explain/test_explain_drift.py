"""Explanations cannot drift from the forward pass (issue 14).

The weights an explanation shows must be the weights the model's forward pass used, even
after a block's internals change. Here a block gets a residual scale, an extra LayerNorm
and a rescaled attention input, and the linear layer a different ``eps``; the weights
:func:`trace_attention` returns must still equal the weights of the attention layers in
the (fast, production-path) forward pass, captured while it runs.

(The former explain code replayed the block by hand -- ``norm1``, ``project``, ``out``,
``ffn``, ``norm2`` -- with the linear ``eps`` hard-coded: it fails every assertion below
from layer 0 on, by up to ~0.5 in the weights.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attnlab.explain import LinearWeights, trace_attention
from attnlab.models import build_model
from attnlab.models.encoder import TransformerBlock

L = 12
OPTIONS = {  # softmax families pinned to the fast path, which never materialises weights
    "time_decay": {"attention": {"impl": "xla_chunked", "slope_min": 0.05, "slope_max": 2.0}},
    "sparse": {"attention": {"impl": "xla_chunked", "window": 4, "num_global": 1}},
    "linear": {"encoder": "event_local", "attention": {"chunk": 4}},
}
#: (block input, what the block passed to its attention layer, what the layer returned),
#: appended by eager (not traced) forward passes of DriftedBlock.
SEEN: list[tuple[jax.Array, jax.Array, jax.Array]] = []


class DriftedBlock(TransformerBlock):
    """A block whose internals changed after the explain code was written."""

    def __call__(self, x, context, *, rngs=None):
        xa = 1.5 * self.norm2(self.norm1(x))  # an extra norm and a scale before attention
        a = self.attention(xa, context)
        if not isinstance(a, jax.core.Tracer):
            SEEN.append((x, xa, a))
        x = x + 0.5 * a  # a residual scale
        return x + 0.25 * self.ffn(self.norm2(x), rngs=rngs)


def make_inputs(seed=0, lengths=(L, 7, 1)):
    lengths = np.asarray(lengths, np.int32)
    b = len(lengths)
    rng = np.random.default_rng(seed)
    valid = np.arange(L)[None] < lengths[:, None]
    f = lambda: np.where(valid, rng.random((b, L)), 0).astype(np.float32)  # noqa: E731
    days = np.where(valid, -np.sort(rng.random((b, L)) * 60, axis=1)[:, ::-1], 0)
    return {"item": np.where(valid, rng.integers(1, 31, (b, L)), 0).astype(np.int32),
            "event_type": valid.astype(np.int32), "time": days.astype(np.float32),
            "gap": f(), "age": f(), "value": f(), "quantity": f(),
            "weekday": rng.integers(0, 7, (b, L)).astype(np.int32),
            "hour": rng.integers(0, 24, (b, L)).astype(np.int32), "lengths": lengths}


def drifted_model(family):
    cfg = {"name": family, "item_head": "softmax", "history_memory": 0, "churn_pool": "last", "d_model": 16, "n_layers": 2, "n_heads": 2, "max_len": L, "dropout": 0.0,
           **OPTIONS[family]}
    model = build_model(cfg, n_items=30, seed=0)
    for i, block in enumerate(model.backbone.blocks):
        model.backbone.blocks[i] = DriftedBlock(16, block.attention, dropout=0.0, rngs=nnx.Rngs(10 + i))
        if family == "linear":
            block.attention.eps = 4.0  # a different eps: the fast path, streaming and weights use it
    return model


@pytest.mark.parametrize("family", list(OPTIONS))
def test_explanation_weights_are_the_weights_the_forward_pass_used(family):
    model, x = drifted_model(family), make_inputs()
    jx = {k: jnp.asarray(v) for k, v in x.items()}
    context = {"lengths": jx["lengths"], "time": jx["time"]}
    SEEN.clear()
    hidden = np.asarray(model.hidden(jx))  # the production forward pass, eager: DriftedBlock records
    seen, n = list(SEEN), len(model.backbone.blocks)
    assert len(seen) == n

    tr = trace_attention(model, x, linear=LinearWeights.IMPLIED)
    assert tr.weights.shape == (n, 3, 2, L, L)
    for layer, (block, (_, xa, a)) in enumerate(zip(model.backbone.blocks, seen)):
        att = block.attention
        # what the layer read and returned in the forward pass
        np.testing.assert_allclose(tr.attention_inputs[layer], xa, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(tr.attention_outputs[layer], a, rtol=1e-4, atol=1e-5)
        # the weights of that layer on that input (its own spec / eps) ...
        used = np.asarray(att.attention_weights(xa, context))
        np.testing.assert_allclose(tr.weights[layer], used, rtol=1e-5, atol=1e-6)
        # ... which reproduce the output the fast op computed without materialising them
        _, _, v = att.project(xa)
        o = jnp.einsum("bhqk,bkhd->bqhd", jnp.asarray(tr.weights[layer]), v, precision="highest")
        np.testing.assert_allclose(att.out(o.reshape(xa.shape)), a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tr.hidden, hidden, rtol=1e-4, atol=1e-4)
    # the explanation looked at a view: the model itself still runs its fast path
    assert not any(b.attention.record_weights for b in model.backbone.blocks)
