"""The forward and backward loops of :mod:`attnlab.ops.attention.xla_chunked`.

Operands are in the layout of :func:`attnlab.ops.attention.layout.prepare`:
``q, k, v [batch, heads, n, head_dim]`` fp32 with ``q`` pre-scaled, ``n`` a multiple
of both block sizes. A ``lax.scan`` walks the query blocks; inside it a
``lax.fori_loop`` walks the key blocks of :func:`key_block_range`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from attnlab.ops.attention.layout import zero_padded_rows
from attnlab.ops.attention.spec import StaticSpec
from attnlab.ops.attention.visibility import (
    NEG,
    decay_penalty,
    key_block_range,
    tile_positions,
    visible,
)


@dataclasses.dataclass(frozen=True)
class Tiling:
    """Blocks of one call.

    Attributes:
      length: padded length, a multiple of ``block_q`` and ``block_k``.
      block_q: query rows per block.
      block_k: keys per block.
    """

    length: int
    block_q: int
    block_k: int

    @property
    def num_q_blocks(self) -> int:
        return self.length // self.block_q


def key_block_steps(i, spec: StaticSpec, tiling: Tiling, kmax=None):
    """Key blocks visited by query block ``i`` (a traced int), never past ``kmax``
    (the longest sequence of the batch; None: the padded length). A query block at or
    past ``kmax`` is padding in every row and visits nothing, so a batch shorter than its
    padded shape costs the blocks of its longest row, not of the shape.

    Returns ``(global_hi, lo, num_steps)``: step ``t < global_hi`` visits block ``t``,
    later steps visit ``lo + t - global_hi``.
    """
    global_hi, lo, hi = key_block_range(
        i * tiling.block_q, tiling.block_q, tiling.block_k, spec,
        k_len=tiling.length if kmax is None else kmax, q_len=kmax)
    return global_hi, lo, global_hi + hi - lo


def _key_block_index(t, global_hi, lo):
    return jnp.where(t < global_hi, t, lo + t - global_hi)


def _lengths_rule(lengths, spec: StaticSpec):
    """Key lengths the chunked path masks by: none when causal (keys past the length
    are seen only by padded query rows, whose outputs and gradients are zeroed)."""
    return None if spec.causal or lengths is None else lengths


def _maybe_masked(body, q0, j, lengths, spec: StaticSpec, tiling: Tiling, carry):
    """``body(masked, j, carry)``, skipping the mask arithmetic on fully visible blocks.

    Under a window nearly every visited block is an edge block, so the branch is not
    worth its cost there and the masked body always runs. Without a window the
    visible set is an intersection of half-planes, so a block is fully visible iff
    its first query sees its last key (padded query rows are ignored).
    """
    if spec.window is not None:
        return body(True, j, carry)
    k_len = _lengths_rule(lengths, spec)
    corner = visible(q0, j * tiling.block_k + tiling.block_k - 1, spec,
                     k_len=None if k_len is None else jnp.min(k_len))
    if corner is None:
        return body(False, j, carry)
    return jax.lax.cond(corner, functools.partial(body, False), functools.partial(body, True),
                        j, carry)


def _block_scores(qb, kb, q0, k0, tq, tk, lengths, slopes, spec: StaticSpec, tiling: Tiling,
                  *, masked: bool, transposed: bool = False):
    """Scores of one block pair.

    Args:
      qb: ``[b, h, bq, d]`` pre-scaled queries; kb: ``[b, h, bk, d]`` keys.
      q0, k0: first query / key position of the block.
      tq, tk: ``[b, bq]`` / ``[b, bk]`` timestamps (or None).
      lengths: ``int32[b]`` or None.
      masked: set invisible entries to :data:`NEG`.
      transposed: compute ``s^T`` (keys by queries). The backward works on
        transposed blocks so that all five of its matmuls are plain or ``A @ B^T``
        products (a contraction over the leading axis of both operands runs ~4x
        slower on XLA:CPU).

    Returns:
      ``(s, g)``: scores ``[b, h, bq, bk]`` (``[b, h, bk, bq]`` transposed) and the
      decay shape ``g`` ``[b, 1, bq, bk]`` (transposed alike), or None without decay.
    """
    if transposed:
        s = jnp.einsum("bhkd,bhqd->bhkq", kb, qb)
        t_rows, t_cols = tk, tq
    else:
        s = jnp.einsum("bhqd,bhkd->bhqk", qb, kb)
        t_rows, t_cols = tq, tk
    g = None
    if spec.has_decay:
        g = decay_penalty(t_rows, t_cols, spec)[:, None]
        s = s - slopes[None, :, None, None] * g
    if not masked:
        return s, g
    q_pos, k_pos = tile_positions(q0, k0, tiling.block_q, tiling.block_k, transposed=transposed)
    k_len = _lengths_rule(lengths, spec)
    mask = visible(q_pos, k_pos, spec,
                   k_len=None if k_len is None else k_len[:, None, None, None])
    if mask is not None:
        s = jnp.where(mask, s, NEG)
    return s, g


def _blocks(x, block):
    """``[b, h, n, ...]`` -> ``[n // block, b, h, block, ...]``."""
    b, h, n = x.shape[:3]
    x = x.reshape(b, h, n // block, block, *x.shape[3:])
    return jnp.moveaxis(x, 2, 0)


def _unblocks(x):
    """Inverse of :func:`_blocks`."""
    x = jnp.moveaxis(x, 0, 2)
    return x.reshape(x.shape[0], x.shape[1], -1, *x.shape[4:])


def _key_slice(x, j, bk, axis):
    return jax.lax.dynamic_slice_in_dim(x, j * bk, bk, axis=axis)


def _time_blocks(t, block):
    """``[b, n]`` timestamps -> ``[n // block, b, block]`` (or None)."""
    return None if t is None else _blocks(t[:, None], block)[:, :, 0]


def forward(q, k, v, slopes, lengths, t, spec: StaticSpec, tiling: Tiling):
    """Online-softmax forward. Returns ``(out [b, h, n, d], lse [b, h, n])``."""
    b, h, _, d = q.shape
    bq, bk = tiling.block_q, tiling.block_k
    kmax = jnp.max(lengths) if lengths is not None else None

    def q_block(_, xs):
        i, qb, tq = xs
        global_hi, lo, steps = key_block_steps(i, spec, tiling, kmax)

        def body(masked, j, carry):
            m, l, acc = carry
            kb, vb = _key_slice(k, j, bk, 2), _key_slice(v, j, bk, 2)
            tk = _key_slice(t, j, bk, 1) if t is not None else None
            s, _ = _block_scores(qb, kb, i * bq, j * bk, tq, tk, lengths, slopes, spec, tiling,
                                 masked=masked)
            m_new = jnp.maximum(m, jnp.max(s, axis=-1))
            alpha = jnp.exp(m - m_new)
            p = jnp.exp(s - m_new[..., None])
            l = alpha * l + jnp.sum(p, axis=-1)
            pv = jnp.einsum("bhqk,bhkd->bhqd", p, vb)
            return m_new, l, alpha[..., None] * acc + pv

        def step(tt, carry):
            j = _key_block_index(tt, global_hi, lo)
            return _maybe_masked(body, i * bq, j, lengths, spec, tiling, carry)

        init = (jnp.full((b, h, bq), NEG, jnp.float32), jnp.zeros((b, h, bq), jnp.float32),
                jnp.zeros((b, h, bq, d), jnp.float32))
        m, l, acc = jax.lax.fori_loop(0, steps, step, init)
        safe_l = jnp.where(l > 0, l, 1.0)
        return None, (acc / safe_l[..., None], m + jnp.log(safe_l))

    idx = jnp.arange(tiling.num_q_blocks, dtype=jnp.int32)
    _, (out, lse) = jax.lax.scan(q_block, None, (idx, _blocks(q, bq), _time_blocks(t, bq)))
    return zero_padded_rows(_unblocks(out), lengths), _unblocks(lse)


def backward(q, k, v, slopes, lengths, t, out, lse, dout, spec: StaticSpec, tiling: Tiling):
    """FlashAttention-2 style recomputing backward. Returns ``(dq, dk, dv, dslopes)``."""
    b, h, _, d = q.shape
    bq, bk = tiling.block_q, tiling.block_k
    kmax = jnp.max(lengths) if lengths is not None else None
    dout = zero_padded_rows(dout, lengths)  # padded query rows contribute nothing
    delta = jnp.sum(dout * out, axis=-1)  # [b, h, n]
    k_t = jnp.swapaxes(k, -1, -2)  # [b, h, d, n]: dq^T = k^T @ ds^T is a plain matmul

    def q_block(carry, xs):
        dk, dv, dslopes = carry
        i, qb, dob, lse_b, delta_b, tq = xs
        global_hi, lo, steps = key_block_steps(i, spec, tiling, kmax)

        def body(masked, j, dq_t):
            kb, vb = _key_slice(k, j, bk, 2), _key_slice(v, j, bk, 2)
            tk = _key_slice(t, j, bk, 1) if t is not None else None
            s_t, g_t = _block_scores(qb, kb, i * bq, j * bk, tq, tk, lengths, slopes, spec,
                                     tiling, masked=masked, transposed=True)
            p_t = jnp.exp(s_t - lse_b[:, :, None, :])  # [b, h, bk, bq]
            dp_t = jnp.einsum("bhkd,bhqd->bhkq", vb, dob)
            ds_t = p_t * (dp_t - delta_b[:, :, None, :])
            dq_t = dq_t + jnp.einsum("bhdk,bhkq->bhdq", _key_slice(k_t, j, bk, 3), ds_t)
            dk_j = jnp.einsum("bhkq,bhqd->bhkd", ds_t, qb)
            dv_j = jnp.einsum("bhkq,bhqd->bhkd", p_t, dob)
            dslopes_j = (-jnp.sum(ds_t * g_t, axis=(0, 2, 3)) if g_t is not None
                         else jnp.zeros((h,), jnp.float32))
            return dq_t, dk_j, dv_j, dslopes_j

        def step(tt, inner):
            dq_t, dk, dv, dslopes = inner
            j = _key_block_index(tt, global_hi, lo)
            dq_t, dk_j, dv_j, dslopes_j = _maybe_masked(body, i * bq, j, lengths, spec, tiling,
                                                        dq_t)
            dk = jax.lax.dynamic_update_slice_in_dim(
                dk, _key_slice(dk, j, bk, 2) + dk_j, j * bk, axis=2)
            dv = jax.lax.dynamic_update_slice_in_dim(
                dv, _key_slice(dv, j, bk, 2) + dv_j, j * bk, axis=2)
            return dq_t, dk, dv, dslopes + dslopes_j

        init = (jnp.zeros((b, h, d, bq), jnp.float32), dk, dv, dslopes)
        dq_t, dk, dv, dslopes = jax.lax.fori_loop(0, steps, step, init)
        return (dk, dv, dslopes), jnp.swapaxes(dq_t, -1, -2)

    idx = jnp.arange(tiling.num_q_blocks, dtype=jnp.int32)
    xs = (idx, _blocks(q, bq), _blocks(dout, bq), _blocks(lse, bq), _blocks(delta, bq),
          _time_blocks(t, bq))
    init = (jnp.zeros_like(k), jnp.zeros_like(v), jnp.zeros((h,), jnp.float32))
    (dk, dv, dslopes), dq = jax.lax.scan(q_block, init, xs)
    return _unblocks(dq), dk, dv, dslopes
