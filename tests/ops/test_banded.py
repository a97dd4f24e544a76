"""The shared attention suite on the banded path for causal windows, plus its own
checks: band geometry, global keys overlapping the band, memory. (Which path the
dispatcher takes for a window is tested in ``test_dispatch.py``.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.ops.attention import AttentionSpec, DecayFn, attention, banded
from attnlab.ops.attention import tuning as numbers
from attnlab.ops.attention.banded import BandConfig, banded_attention
from attnlab.ops.attention.banded_loops import slab_origin
from attnlab.ops.attention.xla_chunked import ChunkConfig, chunked_attention
from tests.ops.attention_suite import AttentionSuite, Features, make_qkv, make_spec


class TestBandedSmallBlocks(AttentionSuite):
    """Causal windows forced onto the band with 8-position blocks (window 13 spans
    ``m = 2`` previous blocks), 2 (batch, head) rows per loop step, so slab edges,
    the clamped first slabs and the global block all straddle each other. Non-causal
    windows and window-free specs are no band: they run the loop path, as the
    dispatcher would send them."""

    def impl(self, q, k, v, spec):
        if spec.causal and spec.window is not None:
            return banded_attention(q, k, v, spec=spec, config=BandConfig(block=8, rows=2))
        return chunked_attention(q, k, v, spec=spec, config=ChunkConfig())


class _Banded(AttentionSuite):
    """The band with ``config``, or the dispatcher's choice when ``config`` is None."""

    def __init__(self, config):
        self.config = config

    def impl(self, q, k, v, spec):
        if self.config is None:
            return attention(q, k, v, spec=spec)
        return banded_attention(q, k, v, spec=spec, config=self.config)


_FORCED = BandConfig()


@pytest.mark.parametrize(
    "length,window,num_global,decay,config",
    [
        (150, 37, 0, DecayFn.LOG1P, _FORCED),  # window not a power of two
        (150, 37, 5, DecayFn.LINEAR, BandConfig(block=16, rows=3)),
        (100, 300, 4, DecayFn.LOG1P, _FORCED),  # window > length: plain causal
        (90, 16, 24, DecayFn.LOG1P, _FORCED),  # globals overlap the band
        (90, 16, 24, None, BandConfig(block=8)),
        (90, 1, 0, None, _FORCED),  # window 1: each query sees only itself
        (90, 1, 3, DecayFn.LINEAR, _FORCED),  # ... plus the globals
        (130, 64, 7, DecayFn.LOG1P, None),  # the dispatcher: the production route
    ],
)
def test_band_cases(length, window, num_global, decay, config):
    b, h, d = 4, 2, 16
    feats = Features("band", window=window, num_global=num_global, decay=decay)
    q, k, v = make_qkv(b, length, h, d, seed=length + window)
    spec = make_spec(feats, b, length, h)
    suite = _Banded(config)
    suite.check_forward(q, k, v, spec, f"W={window} G={num_global}")
    suite.check_gradients(q, k, v, spec, f"W={window} G={num_global}")


def test_window_one_is_identity_on_values():
    b, n, h, d = 2, 40, 2, 8
    q, k, v = make_qkv(b, n, h, d)
    out = banded_attention(q, k, v, spec=AttentionSpec(window=1), config=_FORCED)
    np.testing.assert_allclose(np.asarray(out), np.asarray(v), rtol=0, atol=1e-6)


@pytest.mark.parametrize("length,block,window,expected", [
    # (padded length, block, prev blocks)
    (4096, 256, 256, (4096, 256, 1)),
    (4096, 128, 256, (4096, 128, 2)),
    (4096, 256, 257, (4096, 256, 1)),  # W - 1 = 256 keys back still fits one block
    (4096, 256, 258, (4096, 256, 2)),
    (63, 16, 13, (64, 16, 1)),
    (7, 64, 40, (8, 8, 0)),  # one block: the band is the block
    (100, 64, 300, (128, 64, 1)),
])
def test_band_geometry(length, block, window, expected):
    st = banded.band_tiling(length, block, window=window, num_global=0, batch_heads=16)
    assert (st.length, st.block, st.prev) == expected
    assert st.prev * st.block >= window - 1 or st.prev == st.num_blocks - 1
    assert st.bh % st.rows == 0


@pytest.mark.parametrize("block,window,batch_heads", [
    (64, 64, 16),  # small steps: every row fits one step
    (256, 256, 16),
    (256, 256, 6),  # lowered to a divisor of batch * heads
    (1024, 2048, 16),  # one row is already over budget: at least one
])
def test_default_step_fits_budget(block, window, batch_heads):
    """The default row count is the largest divisor of batch * heads whose step stays
    within the score budget (at least one row)."""
    st = banded.band_tiling(4096, block, window=window, num_global=0, batch_heads=batch_heads)
    per_row = st.block * st.band
    assert st.bh % st.rows == 0
    assert st.rows * per_row <= max(numbers.BAND_STEP_SCORES, per_row)
    larger = [r for r in range(st.rows + 1, batch_heads + 1) if batch_heads % r == 0]
    assert all(r * per_row > numbers.BAND_STEP_SCORES for r in larger)


@pytest.mark.parametrize("num_global,length,window,expected", [
    (0, 100, 10, 0),
    (3, 100, 10, 8),
    (20, 100, 10, 24),
    (5, 10, 40, 0),  # every global key already inside every window
])
def test_global_keys(num_global, length, window, expected):
    st = banded.band_tiling(length, 16, window=window, num_global=num_global, batch_heads=1)
    assert st.global_keys == expected


@pytest.mark.parametrize("length,block,window", [
    (4096, 256, 256), (4096, 128, 256), (200, 16, 37), (63, 16, 13), (7, 64, 40),
    (100, 64, 300), (96, 8, 1), (96, 32, 33),
])
def test_slab_holds_every_key_in_the_window(length, block, window):
    """Each step's key slab [k0, k0 + K) lies inside the sequence and contains every
    key any of its queries sees through the window."""
    st = banded.band_tiling(length, block, window=window, num_global=0, batch_heads=2, rows=1)
    seen_rows = set()
    for step in range(st.num_steps):
        r0, q0, k0 = (int(x) for x in slab_origin(jnp.int32(step), st))
        seen_rows.add(r0)
        assert 0 <= k0 and k0 + st.band <= st.length
        for i in range(q0, q0 + st.block):
            lo = max(0, i - window + 1)
            assert k0 <= lo and i < k0 + st.band, (step, i, k0)
    assert seen_rows == {0, 1}


def test_backward_memory_is_linear_in_length():
    """Compiled fwd+bwd temp memory grows ~linearly (quadratic would be 4x per doubling)."""
    def temp_bytes(n):
        q, k, v = (jax.ShapeDtypeStruct((1, n, 1, 16), jnp.float32),) * 3
        spec = AttentionSpec(window=32, num_global=4)
        loss = lambda q, k, v: jnp.sum(banded_attention(q, k, v, spec=spec))  # noqa: E731
        mem = jax.jit(jax.grad(loss, (0, 1, 2))).lower(q, k, v).compile().memory_analysis()
        return mem.temp_size_in_bytes

    small, large = temp_bytes(2048), temp_bytes(8192)
    assert large < 6 * small, (small, large)
    assert large < 8192 * 8192 * 4 / 8
