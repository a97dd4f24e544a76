"""The shared attention suite on the pure-JAX chunked (flash) path, plus its own
checks: block skipping, tiling, memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.ops.attention import AttentionSpec, DecayFn, StaticSpec, xla_chunked
from attnlab.ops.attention.xla_chunked import ChunkConfig, chunk_tiling, chunked_attention
from attnlab.ops.attention.xla_chunked_loops import Tiling, key_block_steps
from tests.ops.attention_suite import AttentionSuite, Features, make_qkv, make_spec


class TestXlaChunkedSmallBlocks(AttentionSuite):
    """Tiny blocks (8 x 16) so every test crosses many block boundaries, windows and
    global blocks straddle blocks, and lengths are not block multiples. Causal windows
    have a peer implementation; ``tests/ops/test_banded.py`` runs the suite on it."""

    def impl(self, q, k, v, spec):
        cfg = ChunkConfig(block_q=16, block_k=8)
        return chunked_attention(q, k, v, spec=spec, config=cfg)


class _Tiled(AttentionSuite):
    def __init__(self, config=None):
        self.config = config

    def impl(self, q, k, v, spec):
        return chunked_attention(q, k, v, spec=spec, config=self.config)


@pytest.mark.parametrize(
    "config",
    [None, ChunkConfig(block_q=32, block_k=64), ChunkConfig()],
    ids=["default", "bk_gt_bq", "default_loop"])
def test_other_tilings(config):
    """The production tiling (one block clipped to the length) and block_k > block_q."""
    b, n, h, d = 3, 150, 2, 16
    feats = Features("all", window=40, num_global=5, decay=DecayFn.LOG1P)
    q, k, v = make_qkv(b, n, h, d)
    spec = make_spec(feats, b, n, h)
    suite = _Tiled(config)
    suite.check_forward(q, k, v, spec, str(config))
    suite.check_gradients(q, k, v, spec, str(config))


def _spec(features):
    return StaticSpec(causal=features.causal, window=features.window,
                      num_global=features.num_global, decay_fn=None, time_unit=1.0, scale=1.0)


@pytest.mark.parametrize(
    "features,length,expected",
    [
        # 8 query blocks x 8 key blocks of 16: causal visits the lower triangle.
        (Features("causal"), 128, [i + 1 for i in range(8)]),
        (Features("full", causal=False), 128, [8] * 8),
        # window 16 -> the diagonal block and the one before it (first block: only itself).
        (Features("w", window=16), 128, [1] + [2] * 7),
        # + 20 global positions -> 2 global blocks, never double-visited.
        (Features("wg", window=16, num_global=20), 128, [1, 2, 3, 4, 4, 4, 4, 4]),
    ],
    ids=lambda x: getattr(x, "name", None),
)
def test_visits_only_blocks_in_pattern(features, length, expected):
    tiling = Tiling(length=length, block_q=16, block_k=16)
    steps = [int(key_block_steps(jnp.int32(i), _spec(features), tiling)[2]) for i in range(8)]
    assert steps == expected


def test_ragged_batch_stops_at_longest_sequence():
    tiling = Tiling(length=128, block_q=16, block_k=16)
    spec = _spec(Features("full", causal=False))
    steps = [int(key_block_steps(jnp.int32(i), spec, tiling, jnp.int32(40))[2])
             for i in range(8)]
    # keys stop at block 3 (40 keys); query blocks from 48 on are padding in every row: none
    assert steps == [3, 3, 3, 0, 0, 0, 0, 0]


def test_default_config():
    """Blocks never shrink as sequences grow, and a small window gets blocks no
    larger than the same length without one (a block of c rows visits c + window keys)."""
    lengths = [256, 1024, 2048, 8192]
    plain = [xla_chunked.default_config(n, 32) for n in lengths]
    assert all(a.block_q <= b.block_q and a.block_k <= b.block_k
               for a, b in zip(plain, plain[1:]))
    for n, cfg in zip(lengths, plain):
        windowed = xla_chunked.default_config(n, 32, window=256)
        assert windowed.block_q <= cfg.block_q and windowed.block_k <= cfg.block_k


@pytest.mark.parametrize("length,cfg,expected", [
    (7, ChunkConfig(512, 512), (8, 8, 8)),
    (200, ChunkConfig(512, 512), (200, 200, 200)),
    (200, ChunkConfig(256, 256), (200, 200, 200)),
    (1000, ChunkConfig(512, 256), (512, 256, 1024)),
    (300, ChunkConfig(512, 256), (512, 256, 512)),
])
def test_tiling(length, cfg, expected):
    tiling = chunk_tiling(length, cfg)
    assert (tiling.block_q, tiling.block_k, tiling.length) == expected


def test_backward_memory_is_linear_in_length():
    """Compiled fwd+bwd temp memory grows ~linearly (quadratic would be 4x per doubling)."""
    def temp_bytes(n):
        q, k, v = (jax.ShapeDtypeStruct((1, n, 1, 16), jnp.float32),) * 3
        spec = AttentionSpec(causal=True)
        loss = lambda q, k, v: jnp.sum(  # noqa: E731
            chunked_attention(q, k, v, spec=spec, config=ChunkConfig(64, 64)))
        mem = jax.jit(jax.grad(loss, (0, 1, 2))).lower(q, k, v).compile().memory_analysis()
        return mem.temp_size_in_bytes

    small, large = temp_bytes(2048), temp_bytes(8192)
    assert large < 6 * small, (small, large)
    assert large < 8192 * 8192 * 4 / 8  # far below one materialised score matrix


def test_unsupported_cross_attention():
    q = jnp.zeros((1, 8, 1, 8))
    k = jnp.zeros((1, 4, 1, 8))
    assert "q_len == k_len" in xla_chunked.why_unsupported(q, k, k, AttentionSpec())
    with pytest.raises(ValueError, match="q_len == k_len"):
        chunked_attention(q, k, k, spec=AttentionSpec())


def test_timestamps_and_lengths_get_no_gradient():
    b, n, h, d = 2, 12, 2, 8
    q, k, v = make_qkv(b, n, h, d)
    spec = make_spec(Features("cd", decay=DecayFn.LOG1P), b, n, h)

    def loss(t):
        return jnp.sum(chunked_attention(q, k, v, spec=spec.replace(timestamps=t)))

    assert np.all(np.asarray(jax.grad(loss)(spec.timestamps)) == 0.0)
