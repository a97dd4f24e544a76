"""The forward and backward loops of :mod:`attnlab.ops.attention.banded`.

Rows are the flattened (batch, head) pairs, ``B = batch * heads``; operands are
``q, k, v [B, n, d]`` fp32 with ``q`` pre-scaled, ``slopes [B]`` and timestamps
``t [B, n]``. Step ``s`` handles ``rows`` of them and one query block against its
slab with batched matmuls (no inner loop, no online softmax: the whole slab is in
the step). The slabs are sliced straight out of ``k`` and ``v``; nothing of size
``B x n x K`` is ever materialised.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from attnlab.ops.attention.spec import StaticSpec
from attnlab.ops.attention.visibility import NEG, decay_penalty, tile_positions, visible


@dataclasses.dataclass(frozen=True)
class BandTiling:
    """Tiling of one banded call.

    Attributes:
      length: padded length, a multiple of ``block``.
      block: query positions per block ``c``.
      prev: previous blocks in each query block's key slab ``m`` (``prev * block >=
        window - 1``, or the slab covers every earlier block).
      global_keys: key slots of the global block (0 if no query needs it).
      bh: ``batch * heads``, the flattened rows.
      rows: (batch, head) rows per loop step (divides ``bh``).
    """

    length: int
    block: int
    prev: int
    global_keys: int
    bh: int
    rows: int

    @property
    def num_blocks(self) -> int:
        return self.length // self.block

    @property
    def band(self) -> int:
        """Keys per slab ``K = (m + 1) c`` (the whole sequence if it is shorter)."""
        return min((self.prev + 1) * self.block, self.length)

    @property
    def num_steps(self) -> int:
        return (self.bh // self.rows) * self.num_blocks


def slab_origin(step, tiling: BandTiling):
    """``(r0, q0, k0)`` of loop step ``step`` (traced int32): its first row, first
    query position, and first key position of its slab.

    The slab of query block ``i`` is the ``K`` keys ``[k0, k0 + K)`` with ``k0 = (i -
    m) c`` clamped into ``[0, length - K]``: every key a query of the block may see
    through its window lies inside (near the start the clamped slab reaches past the
    block, and causality masks those keys)."""
    i = step % tiling.num_blocks
    q0 = i * tiling.block
    k0 = jnp.clip(q0 - tiling.prev * tiling.block, 0, tiling.length - tiling.band)
    return (step // tiling.num_blocks) * tiling.rows, q0, k0


def _band_mask(q0, k0, spec: StaticSpec, tiling: BandTiling, *, transposed=False):
    """bool ``[c, K]`` (``[K, c]`` transposed): the band part of the visibility."""
    q_pos, k_pos = tile_positions(q0, k0, tiling.block, tiling.band, transposed=transposed)
    return visible(q_pos, k_pos, spec.without_global())


def _global_mask(q0, spec: StaticSpec, tiling: BandTiling, *, transposed=False):
    """bool ``[c, gk]`` (``[gk, c]`` transposed): the global part of the visibility,
    keys visible through the global rule and not through the band."""
    q_pos, k_pos = tile_positions(q0, 0, tiling.block, tiling.global_keys, transposed=transposed)
    return visible(q_pos, k_pos, spec) & ~visible(q_pos, k_pos, spec.without_global())


def _add_at(x, part, start):
    """``x`` with ``part`` added at ``start`` (in place inside the loop)."""
    old = jax.lax.dynamic_slice(x, start, part.shape)
    return jax.lax.dynamic_update_slice(x, old + part, start)


class _Slab:
    """The inputs of one loop step, sliced from the ``[B, n, ...]`` operands."""

    def __init__(self, step, spec: StaticSpec, tiling: BandTiling, q, k, t, slopes):
        self.tiling = tiling
        self.r0, self.q0, self.k0 = r0, q0, k0 = slab_origin(step, tiling)
        rows, c, band, gk = tiling.rows, tiling.block, tiling.band, tiling.global_keys
        self.q = self.take(q, q0, c)
        self.k = self.take(k, k0, band)
        self.has_decay = spec.has_decay
        if self.has_decay:
            self.t_q = jax.lax.dynamic_slice(t, (r0, q0), (rows, c))
            self.t_k = jax.lax.dynamic_slice(t, (r0, k0), (rows, band))
            self.slopes = jax.lax.dynamic_slice(slopes, (r0,), (rows,))[:, None, None]
        if gk:
            self.k_global = self.take(k, jnp.int32(0), gk)
            if self.has_decay:
                self.t_global = jax.lax.dynamic_slice(t, (r0, jnp.int32(0)), (rows, gk))

    def take(self, x, start, size):
        """``x[r0 : r0 + rows, start : start + size, :]`` of a ``[B, n, d]`` operand."""
        return jax.lax.dynamic_slice(x, (self.r0, start, jnp.int32(0)),
                                     (self.tiling.rows, size, x.shape[-1]))


def forward(q, k, v, slopes, t, spec: StaticSpec, tiling: BandTiling):
    """Returns ``(out [B, n, d], lse [B, n])``."""
    bh, n, d = q.shape
    gk = tiling.global_keys
    z = jnp.int32(0)

    def step(s_idx, carry):
        out, lse = carry
        slab = _Slab(s_idx, spec, tiling, q, k, t, slopes)
        s = jnp.einsum("rqd,rkd->rqk", slab.q, slab.k)  # [rows, c, K]
        if slab.has_decay:
            s = s - slab.slopes * decay_penalty(slab.t_q, slab.t_k, spec)
        s = jnp.where(_band_mask(slab.q0, slab.k0, spec, tiling), s, NEG)
        mx = jnp.max(s, axis=-1)  # [rows, c]
        if gk:
            sg = jnp.einsum("rqd,rgd->rqg", slab.q, slab.k_global)
            if slab.has_decay:
                sg = sg - slab.slopes * decay_penalty(slab.t_q, slab.t_global, spec)
            sg = jnp.where(_global_mask(slab.q0, spec, tiling), sg, NEG)
            mx = jnp.maximum(mx, jnp.max(sg, axis=-1))
        p = jnp.exp(s - mx[..., None])
        denom = jnp.sum(p, axis=-1)
        acc = jnp.einsum("rqk,rkd->rqd", p, slab.take(v, slab.k0, tiling.band))
        if gk:
            pg = jnp.exp(sg - mx[..., None])
            denom = denom + jnp.sum(pg, axis=-1)
            acc = acc + jnp.einsum("rqg,rgd->rqd", pg, slab.take(v, z, gk))
        out = jax.lax.dynamic_update_slice(out, acc / denom[..., None], (slab.r0, slab.q0, z))
        return out, jax.lax.dynamic_update_slice(lse, mx + jnp.log(denom), (slab.r0, slab.q0))

    init = (jnp.zeros((bh, n, d), jnp.float32), jnp.zeros((bh, n), jnp.float32))
    return jax.lax.fori_loop(0, tiling.num_steps, step, init)


def backward(q, k, v, slopes, t, out, lse, dout, spec: StaticSpec, tiling: BandTiling):
    """Recomputing backward on transposed slabs. Returns ``(dq, dk, dv, dslopes)``,
    ``dslopes`` per row ``[B]`` (or None)."""
    bh, n, d = q.shape
    rows, c, band, gk = tiling.rows, tiling.block, tiling.band, tiling.global_keys
    delta = jnp.sum(dout * out, axis=-1)  # [B, n]
    k_t = jnp.swapaxes(k, 1, 2)  # [B, d, n]: dq^T = k^T @ ds^T is a plain matmul
    z = jnp.int32(0)

    def step(s_idx, carry):
        dq_t, dk, dv, dslopes = carry
        slab = _Slab(s_idx, spec, tiling, q, k, t, slopes)
        r0, q0, k0 = slab.r0, slab.q0, slab.k0
        dout_b = slab.take(dout, q0, c)
        lse_b = jax.lax.dynamic_slice(lse, (r0, q0), (rows, c))[:, None, :]
        delta_b = jax.lax.dynamic_slice(delta, (r0, q0), (rows, c))[:, None, :]
        s_t = jnp.einsum("rkd,rqd->rkq", slab.k, slab.q)  # [rows, K, c]
        if slab.has_decay:
            g_t = decay_penalty(slab.t_k, slab.t_q, spec)
            s_t = s_t - slab.slopes * g_t
        s_t = jnp.where(_band_mask(q0, k0, spec, tiling, transposed=True), s_t, NEG)
        p_t = jnp.exp(s_t - lse_b)
        ds_t = p_t * (jnp.einsum("rkd,rqd->rkq", slab.take(v, k0, band), dout_b) - delta_b)
        k_slab_t = jax.lax.dynamic_slice(k_t, (r0, z, k0), (rows, d, band))
        dq_b = jnp.einsum("rdk,rkq->rdq", k_slab_t, ds_t)  # [rows, d, c]
        dk = _add_at(dk, jnp.einsum("rkq,rqd->rkd", ds_t, slab.q), (r0, k0, z))
        dv = _add_at(dv, jnp.einsum("rkq,rqd->rkd", p_t, dout_b), (r0, k0, z))
        dslopes_b = -jnp.sum(ds_t * g_t, axis=(1, 2)) if slab.has_decay else None
        if gk:
            sg_t = jnp.einsum("rgd,rqd->rgq", slab.k_global, slab.q)  # [rows, gk, c]
            if slab.has_decay:
                gg_t = decay_penalty(slab.t_global, slab.t_q, spec)
                sg_t = sg_t - slab.slopes * gg_t
            sg_t = jnp.where(_global_mask(q0, spec, tiling, transposed=True), sg_t, NEG)
            pg_t = jnp.exp(sg_t - lse_b)
            dsg_t = pg_t * (jnp.einsum("rgd,rqd->rgq", slab.take(v, z, gk), dout_b) - delta_b)
            k_global_t = jax.lax.dynamic_slice(k_t, (r0, z, z), (rows, d, gk))
            dq_b = dq_b + jnp.einsum("rdg,rgq->rdq", k_global_t, dsg_t)
            dk = _add_at(dk, jnp.einsum("rgq,rqd->rgd", dsg_t, slab.q), (r0, z, z))
            dv = _add_at(dv, jnp.einsum("rgq,rqd->rgd", pg_t, dout_b), (r0, z, z))
            if slab.has_decay:
                dslopes_b = dslopes_b - jnp.sum(dsg_t * gg_t, axis=(1, 2))
        dq_t = jax.lax.dynamic_update_slice(dq_t, dq_b, (r0, z, q0))
        if slab.has_decay:
            dslopes = _add_at(dslopes, dslopes_b, (r0,))
        return dq_t, dk, dv, dslopes

    init = (jnp.zeros((bh, d, n), jnp.float32), jnp.zeros_like(k), jnp.zeros_like(v),
            jnp.zeros((bh,), jnp.float32))
    dq_t, dk, dv, dslopes = jax.lax.fori_loop(0, tiling.num_steps, step, init)
    return jnp.swapaxes(dq_t, 1, 2), dk, dv, (dslopes if spec.has_decay else None)
