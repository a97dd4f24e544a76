"""Blockwise (flash) attention in pure JAX: the portable / CPU production path.

The algorithm is the online softmax of FlashAttention (Dao et al., 2022;
FlashAttention-2, Dao 2023), which builds on memory-efficient attention by
Rabe & Staats (2021, "Self-attention does not need O(n^2) memory"): queries are
cut into blocks of ``block_q`` rows; for each query block a loop visits key blocks
of ``block_k`` keys, keeping a running row max ``m``, normaliser ``l`` and output
accumulator. Only key blocks that intersect the visibility pattern are visited
(:func:`attnlab.ops.attention.visibility.key_block_range`: causal, never above the
diagonal; window, only blocks that intersect the window plus the ``num_global``
leading blocks; ragged, never past the longest sequence).

The backward pass (``jax.custom_vjp``) stores only the output and the per-row
log-sum-exp and recomputes the scores block by block, so memory is
O(length * block), never O(length^2). Gradients flow to ``q, k, v`` and the decay
slopes; ``lengths`` and ``timestamps`` get zero cotangents. The loops themselves are
in :mod:`attnlab.ops.attention.xla_chunked_loops`.

Everything is computed in fp32 (inputs of lower precision are upcast, outputs and
gradients cast back). Causal windows have a peer implementation,
:mod:`attnlab.ops.attention.banded`; the dispatcher chooses between them.
"""

from __future__ import annotations

import dataclasses
import functools

import jax

from attnlab.ops.attention import tuning
from attnlab.ops.attention.layout import finish, prepare, self_attention_problem, shape_problem
from attnlab.ops.attention.spec import AttentionSpec, StaticSpec
from attnlab.ops.attention.visibility import round_up
from attnlab.ops.attention.xla_chunked_loops import Tiling, backward, forward


@dataclasses.dataclass(frozen=True)
class ChunkConfig:
    """Block sizes of the chunked path (how it tiles, not what it computes).

    Attributes:
      block_q: query rows per block (power of two); the work of one loop step is
        ``batch * heads * block_q * block_k``.
      block_k: keys per inner-loop step (power of two).
    """

    block_q: int = tuning.CHUNK_BLOCK
    block_k: int = tuning.CHUNK_BLOCK

    def __post_init__(self):
        for name in ("block_q", "block_k"):
            b = getattr(self, name)
            if b < 8 or b & (b - 1):
                raise ValueError(f"ChunkConfig.{name} must be a power of two >= 8, got {b}.")


def default_config(length: int, head_dim: int, *, window: int | None = None) -> ChunkConfig:
    """Heuristic block sizes: small blocks for a small window (a query block of ``c``
    rows visits ``c + window`` keys), larger blocks for long sequences. The numbers
    are in :mod:`attnlab.ops.attention.tuning`."""
    del head_dim
    if window is not None and window <= tuning.CHUNK_WINDOW_MAX:
        return ChunkConfig(tuning.CHUNK_BLOCK_WINDOW, tuning.CHUNK_BLOCK_WINDOW)
    if length >= tuning.CHUNK_LONG_LENGTH:
        return ChunkConfig(tuning.CHUNK_BLOCK_LONG, tuning.CHUNK_BLOCK_LONG)
    return ChunkConfig(tuning.CHUNK_BLOCK, tuning.CHUNK_BLOCK)


def chunk_tiling(length: int, config: ChunkConfig) -> Tiling:
    """The blocks of ``config`` clipped to ``length`` (rounded up to 8), one a multiple
    of the other, and the length padded to a multiple of both."""
    n8 = round_up(length, 8)
    bk = min(config.block_k, n8)
    bq = min(config.block_q, round_up(n8, bk))
    bq, bk = (bq, bk) if bq % bk == 0 or bk % bq == 0 else (bk, bk)
    return Tiling(length=round_up(length, max(bq, bk)), block_q=bq, block_k=bk)


def why_unsupported(q, k, v, spec: AttentionSpec, *, platform: str | None = None) -> str | None:
    """Why :func:`chunked_attention` cannot run these operands, or None."""
    del spec, platform
    return shape_problem(q, k, v) or self_attention_problem(q, k, v)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _flash(q, k, v, slopes, lengths, t, spec: StaticSpec, tiling: Tiling):
    return forward(q, k, v, slopes, lengths, t, spec, tiling)[0]


def _flash_fwd(q, k, v, slopes, lengths, t, spec, tiling):
    out, lse = forward(q, k, v, slopes, lengths, t, spec, tiling)
    return out, (q, k, v, slopes, lengths, t, out, lse)


def _flash_bwd(spec, tiling, res, dout):
    q, k, v, slopes, lengths, t, out, lse = res
    dq, dk, dv, dslopes = backward(q, k, v, slopes, lengths, t, out, lse, dout, spec, tiling)
    return dq, dk, dv, (dslopes if slopes is not None else None), None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, spec: AttentionSpec,
                      config: ChunkConfig | None = None) -> jax.Array:
    """Flash attention in pure JAX.

    Args:
      q: ``[batch, length, heads, head_dim]``.
      k: ``[batch, length, heads, head_dim]``.
      v: ``[batch, length, heads, head_dim]``.
      spec: what to attend to (see :mod:`attnlab.ops.attention.spec`).
      config: block sizes; None uses :func:`default_config`.

    Returns:
      ``[batch, length, heads, head_dim]`` in ``q.dtype``.

    Raises:
      ValueError: the operands cannot go through this path (see :func:`why_unsupported`).
    """
    reason = why_unsupported(q, k, v, spec)
    if reason:
        raise ValueError(f"chunked_attention: {reason}")
    n, d = q.shape[1], q.shape[3]
    tiling = chunk_tiling(n, config or default_config(n, d, window=spec.window))
    static = spec.static(d)
    x = prepare(q, k, v, spec, scale=static.scale, padded=tiling.length)
    out = _flash(x.q, x.k, x.v, x.slopes, x.lengths, x.timestamps, static, tiling)
    return finish(out, n, q.dtype)
