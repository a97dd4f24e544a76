"""Linear attention: chunked parallel == recurrent == naive reference (fwd and grads),
ragged right padding never enters the state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.ops import linear as lin

B, L, H, D = 3, 13, 2, 4  # 13: not a multiple of the chunk
LENGTHS = np.array([13, 7, 0], np.int32)  # full, ragged, fully padded


def qkv(seed=0):
    ks = jax.random.split(jax.random.key(seed), 3)
    return tuple(jax.random.normal(k, (B, L, H, D), jnp.float32) for k in ks)


LOG_DECAY = jnp.log(jnp.array([0.6, 0.95], jnp.float32))


@pytest.mark.parametrize("log_decay", [None, LOG_DECAY], ids=["no_decay", "decay"])
@pytest.mark.parametrize("chunk", [4, 64])
def test_parallel_equals_reference_and_recurrent(log_decay, chunk):
    q, k, v = qkv()

    @jax.jit
    def run(q, k, v):
        ref = lin.linear_attention_reference(q, k, v, lengths=LENGTHS, log_decay=log_decay)
        par = lin.linear_attention(q, k, v, lengths=LENGTHS, log_decay=log_decay, chunk=chunk)
        rec = lin.linear_attention_recurrent(q, k, v, lengths=LENGTHS, log_decay=log_decay)
        return ref, par, rec

    ref, (par, s_par), (rec, s_rec) = run(q, k, v)
    np.testing.assert_allclose(par, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rec, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s_par.kv, s_rec.kv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s_par.k_sum, s_rec.k_sum, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(par[2]).max()) == 0.0 and float(jnp.abs(par[1, 7:]).max()) == 0.0
    assert float(jnp.abs(s_par.kv[2]).max()) == 0.0  # an empty history has an empty state


def test_padding_does_not_enter_or_decay_the_state():
    q, k, v = qkv(1)
    garbage = jax.random.normal(jax.random.key(9), (1, L - 7, H, D)) * 100

    @jax.jit
    def run(q, k, v):
        _, full = lin.linear_attention(q[1:2, :7], k[1:2, :7], v[1:2, :7], log_decay=LOG_DECAY, chunk=4)
        pad = lambda x: jnp.concatenate([x[1:2, :7], garbage], axis=1)  # noqa: E731
        _, ragged = lin.linear_attention(pad(q), pad(k), pad(v), lengths=LENGTHS[1:2],
                                         log_decay=LOG_DECAY, chunk=4)
        return full, ragged

    full, ragged = run(q, k, v)
    np.testing.assert_allclose(ragged.kv, full.kv, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ragged.k_sum, full.k_sum, rtol=1e-6, atol=1e-6)


def test_gradients_match_reference():
    q, k, v = qkv(2)
    w = jax.random.normal(jax.random.key(5), (B, L, H, D))

    def loss(fn, q, k, v, ld):
        return jnp.sum(w * fn(q, k, v, ld))

    par = lambda q, k, v, ld: lin.linear_attention(q, k, v, lengths=LENGTHS, log_decay=ld, chunk=4)[0]  # noqa: E731
    ref = lambda q, k, v, ld: lin.linear_attention_reference(q, k, v, lengths=LENGTHS, log_decay=ld)  # noqa: E731
    g_par = jax.jit(jax.grad(lambda *a: loss(par, *a), argnums=(0, 1, 2, 3)))(q, k, v, LOG_DECAY)
    g_ref = jax.jit(jax.grad(lambda *a: loss(ref, *a), argnums=(0, 1, 2, 3)))(q, k, v, LOG_DECAY)
    for a, b in zip(g_par, g_ref):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(g_par[3]).max()) > 0  # the forgetting factor learns


def test_step_continues_from_a_parallel_state():
    """Streaming: the state after a parallel prefix + one step == parallel over prefix + 1."""
    q, k, v = qkv(3)

    @jax.jit
    def run(q, k, v):
        _, s = lin.linear_attention(q[:, :9], k[:, :9], v[:, :9], log_decay=LOG_DECAY, chunk=4)
        _, o = lin.linear_attention_step(s, q[:, 9], k[:, 9], v[:, 9], log_decay=LOG_DECAY)
        full, _ = lin.linear_attention(q[:, :10], k[:, :10], v[:, :10], log_decay=LOG_DECAY, chunk=4)
        return o, full

    o, full = run(q, k, v)
    np.testing.assert_allclose(o, full[:, 9], rtol=1e-5, atol=1e-5)
