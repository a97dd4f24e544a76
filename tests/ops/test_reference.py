"""The reference against a direct numpy loop on tiny cases (outputs and weights)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.ops.attention import AttentionSpec, DecayFn, reference_attention
from tests.ops.attention_suite import AttentionSuite


def numpy_attention(q, k, v, *, causal, lengths, t, slopes, decay_fn, time_unit, window,
                    num_global, scale):
    """Loop-by-loop oracle: returns (out [b, n, h, d], weights [b, h, n, n])."""
    b, n, h, d = q.shape
    scale = scale if scale is not None else 1.0 / math.sqrt(d)
    out = np.zeros(q.shape, np.float64)
    weights = np.zeros((b, h, n, n), np.float64)
    for bi in range(b):
        length = n if lengths is None else lengths[bi]
        for hi in range(h):
            for i in range(n):
                visible = [
                    j for j in range(n)
                    if i < length and j < length and (not causal or j <= i)
                    and (window is None or i - j < window or j < num_global)
                ]
                if not visible:
                    continue
                scores = []
                for j in visible:
                    s = scale * float(np.dot(q[bi, i, hi], k[bi, j, hi]))
                    if slopes is not None:
                        x = abs(t[bi, i] - t[bi, j]) / time_unit
                        g = math.log1p(x) if decay_fn is DecayFn.LOG1P else x
                        s -= slopes[hi] * g
                    scores.append(s)
                scores = np.asarray(scores)
                w = np.exp(scores - scores.max())
                w /= w.sum()
                weights[bi, hi, i, visible] = w
                out[bi, i, hi] = w @ v[bi, visible, hi].astype(np.float64)
    return out, weights


CASES = [
    dict(causal=True),
    dict(causal=False),
    dict(causal=True, lengths=[5, 2, 0]),
    dict(causal=True, window=2),
    dict(causal=False, window=2, num_global=1, lengths=[6, 4, 1]),
    dict(causal=True, decay=DecayFn.LOG1P),
    dict(causal=False, decay=DecayFn.LINEAR, lengths=[3, 6, 0], scale=0.3),
    dict(causal=True, window=3, num_global=2, decay=DecayFn.LINEAR),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_reference_matches_numpy_loop(case):
    b, n, h, d = 3, 6, 2, 4
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((b, n, h, d)).astype(np.float32) for _ in range(3))
    t = np.cumsum(rng.exponential(3.0, (b, n)), axis=1).astype(np.float32)
    slopes = np.asarray([0.2, 0.9], np.float32)
    decay = case.get("decay")
    lengths = case.get("lengths")
    spec = AttentionSpec(
        causal=case["causal"],
        lengths=None if lengths is None else jnp.asarray(lengths, jnp.int32),
        timestamps=jnp.asarray(t) if decay else None,
        decay_slopes=jnp.asarray(slopes) if decay else None,
        decay_fn=decay or DecayFn.LOG1P, time_unit=2.0, window=case.get("window"),
        num_global=case.get("num_global", 0), scale=case.get("scale"))
    out, w = reference_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), spec=spec,
                                 return_weights=True)
    want_out, want_w = numpy_attention(
        q, k, v, causal=case["causal"], lengths=lengths, t=t, slopes=slopes if decay else None,
        decay_fn=decay, time_unit=2.0, window=case.get("window"),
        num_global=case.get("num_global", 0), scale=case.get("scale"))
    np.testing.assert_allclose(np.asarray(w), want_w, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out), want_out, atol=1e-6, rtol=1e-5)
    rows = np.asarray(w).sum(-1)
    assert np.allclose(rows[rows > 0], 1.0, atol=1e-6)


class TestReference(AttentionSuite):
    """The reference through the suite's harness: bf16/fp16 inputs, jit/vmap/grad
    composition, padded rows (fp32 comparisons against itself are skipped as vacuous;
    the numpy loop above is the reference's oracle)."""

    test_property_random_specs = None
    test_forward_features = None
    test_gradients_features = None
    test_lengths_not_block_multiples = None
    test_heads_and_head_dims = None

    def impl(self, q, k, v, spec):
        return reference_attention(q, k, v, spec=spec)
