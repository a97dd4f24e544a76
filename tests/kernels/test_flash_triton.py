"""The Pallas/Triton flash kernel, run in interpret mode on CPU, against the reference.

Subclasses the shared attention suite (forward + gradients for q, k, v and decay
slopes, every spec feature, ragged and fully padded rows, fp32/bf16/fp16,
jit/vmap/grad) and adds kernel-specific checks: several tile configurations
(tiles smaller than, equal to and not dividing the lengths), unequal query/key
lengths and head dims that need padding.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.kernels.flash_triton import FlashTuning, flash_attention
from attnlab.ops.attention import DecayFn, reference_attention
from tests.ops.attention_suite import (
    AttentionSuite,
    Features,
    TOLERANCES,
    assert_close,
    make_qkv,
    make_spec,
)


class TestFlashTritonInterpret(AttentionSuite):
    """The shared suite, with the kernel in Pallas interpret mode (default tuning)."""

    max_len = 200
    max_batch = 4
    property_examples = 4

    def impl(self, q, k, v, spec):
        return flash_attention(q, k, v, spec=spec, interpret=True)


# ------------------------------------------------------------- kernel-specific cases

#: Tile configurations that force several tiles per sequence, mixed fwd/bwd shapes.
TINY = FlashTuning(block_q=16, block_k=16, block_q_bwd=16, block_k_bwd=16)
MIXED = FlashTuning(block_q=32, block_k=16, block_q_bwd=16, block_k_bwd=32)


class _TunedKernel(AttentionSuite):
    """Suite helpers bound to the kernel with an explicit tuning (not collected)."""

    def __init__(self, tuning: FlashTuning):
        self.tuning = tuning

    def impl(self, q, k, v, spec):
        return flash_attention(q, k, v, spec=spec, tuning=self.tuning, interpret=True)


def _check(q, k, v, spec, tuning, what):
    """Forward and all gradients of the kernel vs the fp32 reference (suite helpers)."""
    suite = _TunedKernel(tuning)
    suite.check_forward(q, k, v, spec, what)
    suite.check_gradients(q, k, v, spec, what)


@pytest.mark.parametrize(
    "tuning,features,length",
    [
        (TINY, Features("cwg_log1p", window=13, num_global=3, decay=DecayFn.LOG1P), 50),
        (MIXED, Features("fwg_linear", causal=False, window=9, num_global=5,
                         decay=DecayFn.LINEAR), 45),
    ],
    ids=["tiny_tiles_causal", "mixed_tiles_full"],
)
def test_multi_tile_skipping_matches_reference(tuning, features, length):
    """Many tiles per row: the global loop, window lower bound and causal bound all bite."""
    b, h, d = 4, 2, 16
    q, k, v = make_qkv(b, length, h, d, seed=length)
    spec = make_spec(features, b, length, h)  # ragged: full, 2/3, 1 event, empty
    _check(q, k, v, spec, tuning, f"{features.name} tiles={tuning}")


def test_unequal_lengths_and_padded_head_dim():
    """q_len != k_len (keys beyond the queries) and head_dim 24 (padded to 32 inside)."""
    b, h, d, lq, lk = 2, 3, 24, 20, 37
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((b, lq, h, d), dtype=np.float32))
    k, v = (jnp.asarray(rng.standard_normal((b, lk, h, d), dtype=np.float32)) for _ in range(2))
    spec = make_spec(Features("cw_decay", window=11, num_global=2, decay=DecayFn.LOG1P),
                     b, lk, h, lengths=jnp.asarray([30, 12], jnp.int32))
    _check(q, k, v, spec, TINY, "lq!=lk")


def test_bf16_output_dtype_and_no_nan_on_empty_batch():
    """bf16 path with every sequence empty: exact zeros, no NaN, in bf16."""
    b, n, h, d = 2, 24, 1, 32
    q, k, v = make_qkv(b, n, h, d, dtype=jnp.bfloat16)
    spec = make_spec(Features("cd", decay=DecayFn.LINEAR), b, n, h,
                     lengths=jnp.zeros((b,), jnp.int32))
    f = lambda q, k, v, s: flash_attention(  # noqa: E731
        q, k, v, spec=spec.replace(decay_slopes=s), interpret=True)
    out = jax.jit(f)(q, k, v, spec.decay_slopes)
    assert out.dtype == jnp.bfloat16 and np.all(np.asarray(out, np.float32) == 0.0)
    grads = jax.jit(jax.grad(lambda *a: f(*a).astype(jnp.float32).sum(), (0, 1, 2, 3)))(
        q, k, v, spec.decay_slopes)
    for g in grads:
        assert np.all(np.asarray(g, np.float32) == 0.0)


def test_timestamps_get_zero_cotangent():
    """Timestamps (and lengths) are data, not parameters: their gradient is exactly 0."""
    b, n, h, d = 2, 20, 2, 16
    q, k, v = make_qkv(b, n, h, d, seed=2)
    spec = make_spec(Features("cd", decay=DecayFn.LOG1P), b, n, h)

    def loss(ts):
        out = flash_attention(q, k, v, spec=spec.replace(timestamps=ts), interpret=True)
        return jnp.sum(out**2)

    g = jax.jit(jax.grad(loss))(spec.timestamps)
    assert g.shape == spec.timestamps.shape and np.all(np.asarray(g) == 0.0)


def test_vmap_over_batched_spec():
    """vmap with lengths and timestamps batched too (the kernel gets a vmapped grid)."""
    outer, b, n, h, d = 3, 2, 20, 2, 16
    q, k, v = (x.reshape(outer, b, n, h, d) for x in make_qkv(outer * b, n, h, d, seed=4))
    base = make_spec(Features("cwg", window=5, num_global=2, decay=DecayFn.LOG1P), b, n, h)
    lengths = jnp.asarray([[20, 3], [0, 7], [11, 1]], jnp.int32)
    stamps = base.timestamps[None] * jnp.asarray([1.0, 0.5, 2.0])[:, None, None]

    def run(impl):
        def one(q, k, v, lengths, stamps):
            return impl(q, k, v, spec=base.replace(lengths=lengths, timestamps=stamps))

        return lambda q: jax.vmap(one)(q, k, v, lengths, stamps)

    kernel = run(functools.partial(flash_attention, interpret=True))
    ref = run(reference_attention)
    fwd_tol, grad_tol = TOLERANCES[jnp.dtype(jnp.float32)]
    assert_close(jax.jit(kernel)(q), ref(q), fwd_tol, "vmap(spec) forward")
    loss = lambda f: lambda q: jnp.sum(jnp.sin(f(q)))  # noqa: E731
    assert_close(jax.jit(jax.grad(loss(kernel)))(q), jax.grad(loss(ref))(q), grad_tol,
                 "vmap(spec) dq")
