"""Banded attention for causal local windows (plus a global prefix).

Used by :func:`attnlab.ops.xla_chunked.chunked_attention` for causal windows whose
key slab is at most half the sequence (:func:`attnlab.ops.xla_chunked.use_banded`;
``WindowPath.BANDED`` forces it). Local attention in the style of Longformer
(Beltagy et al., 2020): each query sees the last ``window`` keys, plus the first
``num_global`` positions of the sequence.

Layout. The (padded) sequence is cut into ``nb`` blocks of ``c`` positions. Every
key a query of block ``i`` may see through its window lies in the ``K = (m + 1) c``
contiguous keys starting at ``(i - m) c``, ``m = ceil((window - 1) / c)`` (clamped
into the sequence near its start; causality masks what the clamp adds). One
``lax.fori_loop`` step takes ``rows`` (batch, head) pairs x one query block and
slices its queries and its key slab straight out of ``q``, ``k`` and ``v``; the
block's whole slab is scored at once with batched matmuls (no key loop, no online
softmax), and the step writes its output rows in place.

An earlier version materialised the band (``[B, nb, K, d]``, the ``m + 1`` shifted
key blocks concatenated) and scanned over a transposed copy; at 4096 positions,
window 256 (2-core AMD EPYC, fwd+bwd) those copies took ~25 ms of op time (XLA
profile) in a ~150-170 ms call, and slicing slabs in place brought the path to 156
ms against 183 ms for the 128-block loop. Computing all blocks in one step (no loop) was memory-bound: 660 ms. Also
measured and dropped (same setting): slicing ``[batch, n, heads, d]`` in place of
the ``[batch * heads, n, d]`` copy (~200 ms: per-step transposes for the matmuls);
two independent half-batch loops, to use both cores (no gain); packing the own-block
and previous-block triangles of ``c = window`` into one ``c x c`` softmax tile
(190-240 ms: ``q @ k^T`` with head_dim 32 is bound by writing its output, which
packing does not shrink).

The ``num_global`` leading keys are one extra key block shared by every query; the
mask splits visibility into two disjoint parts so that a global key inside a
query's window is counted once:

* band part:   ``j <= i  and  i - j < window``
* global part: ``j < num_global  and  i - j >= window``

The softmax runs over both parts with fp32 accumulation. The backward
(``jax.custom_vjp``) saves only ``(out, lse)``, recomputes the slab probabilities
(transposed, so every matmul is a plain or ``A @ B^T`` product on XLA:CPU) and adds
each step's ``k`` / ``v`` cotangents into its slab of ``dk`` / ``dv`` in place.
Memory is O(length * d) plus one step's ``rows * c * K`` scores, never O(length^2).

Causal only: a non-causal window (``i - j < window`` with no upper bound on ``j``)
is not a band; it stays on the looped path. With causal masking every query sees at
least itself, so no band row is ever empty; padded query rows (``i >= lengths[b]``)
are zeroed in the forward and get zero gradients.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from attnlab.ops.spec import DecayFn

#: Finite "minus infinity" for masked scores.
_NEG = -1e30


@dataclasses.dataclass(frozen=True)
class BandStatic:
    """Hashable static description of one banded call.

    Attributes:
      length: padded length, a multiple of ``block``.
      block: query positions per block ``c``.
      prev: previous blocks in each query block's key slab ``m``.
      window: the local window ``W`` (``prev * block >= W - 1`` or the slab covers
        every earlier block).
      num_global: ``G``, leading positions every query sees.
      global_keys: key slots of the global block (0 if no query needs it).
      bh: ``batch * heads``, the flattened rows.
      rows: (batch, head) rows per loop step (divides ``bh``).
      decay_fn: decay shape, or None without time decay.
      time_unit: divides time gaps before ``decay_fn``.
    """

    length: int
    block: int
    prev: int
    window: int
    num_global: int
    global_keys: int
    bh: int
    rows: int
    decay_fn: DecayFn | None
    time_unit: float

    @property
    def num_blocks(self) -> int:
        return self.length // self.block

    @property
    def band(self) -> int:
        """Keys per slab ``K = (m + 1) c`` (the whole sequence if it is shorter; as in
        :func:`slab_tiling`)."""
        return min((self.prev + 1) * self.block, self.length)

    @property
    def num_steps(self) -> int:
        return (self.bh // self.rows) * self.num_blocks


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


#: Scores per loop step (``rows * c * K``) the default row count aims at: 2^19 fp32
#: = 2 MiB, the L2 of the 2 cores together (see :func:`band_static`).
STEP_SCORES = 1 << 19


def _largest_divisor(n: int, at_most: int) -> int:
    return max(x for x in range(1, min(at_most, n) + 1) if n % x == 0)


def slab_tiling(length: int, block: int, window: int) -> tuple[int, int, int, int]:
    """``(c, padded length, m, K)`` for a causal window of ``window`` over ``length``
    positions: ``block`` clipped to the (8-rounded) length, the length padded to a
    multiple of it, the previous blocks a slab reaches back and the keys per slab."""
    c = min(block, _round_up(length, 8))
    n_pad = _round_up(length, c)
    prev = min(-(-(window - 1) // c), n_pad // c - 1)
    return c, n_pad, prev, min((prev + 1) * c, n_pad)


def band_static(length: int, block: int, *, window: int, num_global: int,
                decay_fn: DecayFn | None, time_unit: float, batch_heads: int,
                rows: int | None = None) -> BandStatic:
    """Tiling of a causal window of ``window`` over ``length`` positions.

    ``block`` is clipped to the (8-rounded) length; the padded length is a multiple
    of it. A loop step covers ``rows`` of the ``batch_heads`` flattened (batch, head)
    rows and one query block; by default as many rows as fit :data:`STEP_SCORES`
    (at least one), lowered to a divisor of ``batch_heads``.
    """
    c, n_pad, prev, slab = slab_tiling(length, block, window)
    if rows is None:
        rows = max(1, min(batch_heads, STEP_SCORES // (c * slab)))
    rows = _largest_divisor(batch_heads, rows)
    # Global keys are needed only by queries whose window misses some of them.
    g = min(num_global, length)
    global_keys = _round_up(g, 8) if g and length - 1 >= window else 0
    global_keys = min(global_keys, n_pad)
    return BandStatic(length=n_pad, block=c, prev=prev, window=window, num_global=g,
                      global_keys=global_keys, bh=batch_heads, rows=rows,
                      decay_fn=decay_fn, time_unit=time_unit)


# ----------------------------------------------------------------- slab geometry


def slab_origin(step, st: BandStatic):
    """``(r0, q0, k0)`` of loop step ``step`` (traced int32): its first row, first
    query position, and first key position of its slab.

    The slab of query block ``i`` is the ``K`` keys ``[k0, k0 + K)`` with ``k0 = (i -
    m) c`` clamped into ``[0, length - K]``: every key a query of the block may see
    through its window lies inside (near the start the clamped slab reaches past the
    block, and causality masks those keys)."""
    i = step % st.num_blocks
    q0 = i * st.block
    k0 = jnp.clip(q0 - st.prev * st.block, 0, st.length - st.band)
    return (step // st.num_blocks) * st.rows, q0, k0


def _band_mask(q0, k0, st: BandStatic, transposed: bool = False):
    """bool ``[c, K]`` (or ``[K, c]``): the band part of the visibility."""
    shape = (st.band, st.block) if transposed else (st.block, st.band)
    qpos = q0 + jax.lax.broadcasted_iota(jnp.int32, shape, 1 if transposed else 0)
    kpos = k0 + jax.lax.broadcasted_iota(jnp.int32, shape, 0 if transposed else 1)
    return (kpos <= qpos) & (qpos - kpos < st.window)


def _global_mask(q0, st: BandStatic, transposed: bool = False):
    """bool ``[c, gk]`` (or ``[gk, c]``) for queries ``q0 .. q0 + c - 1``: the global
    part of the visibility (global keys outside the window)."""
    i = q0 + jax.lax.broadcasted_iota(jnp.int32, (st.block, st.global_keys), 0)
    j = jax.lax.broadcasted_iota(jnp.int32, (st.block, st.global_keys), 1)
    mask = (j < st.num_global) & (i - j >= st.window)
    return mask.T if transposed else mask


def _decay_g(ta, tb, st: BandStatic):
    """``g(|ta[..., :, None] - tb[..., None, :]| / time_unit)``."""
    dt = jnp.abs(ta[..., :, None] - tb[..., None, :]) * (1.0 / st.time_unit)
    return st.decay_fn.apply(dt)


def _mm(spec, a, b):
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


_ds = jax.lax.dynamic_slice
_dus = jax.lax.dynamic_update_slice


def _add_at(x, part, start):
    """``x`` with ``part`` added at ``start`` (in place inside the loop)."""
    return _dus(x, _ds(x, start, part.shape) + part, start)


class _Slab:
    """The inputs of one loop step, sliced from the ``[B, n, ...]`` operands."""

    def __init__(self, step, st: BandStatic, q, k, t, slopes):
        self.st = st
        self.r0, self.q0, self.k0 = r0, q0, k0 = slab_origin(step, st)
        rows, c, kk, d = st.rows, st.block, st.band, q.shape[-1]
        z = jnp.int32(0)
        self.rows3 = lambda x, p0, size: _ds(x, (r0, p0, z), (rows, size, d))  # noqa: E731
        self.qb = self.rows3(q, q0, c)
        self.kb = self.rows3(k, k0, kk)
        self.decay = st.decay_fn is not None
        if self.decay:
            self.tq = _ds(t, (r0, q0), (rows, c))
            self.tk = _ds(t, (r0, k0), (rows, kk))
            self.sl = _ds(slopes, (r0,), (rows,))[:, None, None]
        if st.global_keys:
            self.kg = self.rows3(k, z, st.global_keys)
            if self.decay:
                self.tg = _ds(t, (r0, z), (rows, st.global_keys))


# ----------------------------------------------------------------- forward / backward
#
# Rows are the flattened (batch, head) pairs, B = batch * heads. Step s handles
# `rows` of them and query block i against its slab with batched matmuls (no inner
# loop, no online softmax: the whole slab is in the step). The slabs are sliced
# straight out of k and v; nothing of size B x n x K is ever materialised.


def _forward(q, k, v, slopes, t, st: BandStatic):
    """q, k, v: ``[B, n, d]`` fp32 with q pre-scaled; slopes, t per row ``[B]``,
    ``[B, n]``. Returns (out ``[B, n, d]``, lse ``[B, n]``)."""
    bh, n, d = q.shape
    gk = st.global_keys

    def step(s_idx, carry):
        out, lse = carry
        sl = _Slab(s_idx, st, q, k, t, slopes)
        s = _mm("rqd,rkd->rqk", sl.qb, sl.kb)  # [rows, c, K]
        if sl.decay:
            s = s - sl.sl * _decay_g(sl.tq, sl.tk, st)
        s = jnp.where(_band_mask(sl.q0, sl.k0, st), s, _NEG)
        mx = jnp.max(s, axis=-1)  # [rows, c]
        if gk:
            sg = _mm("rqd,rgd->rqg", sl.qb, sl.kg)
            if sl.decay:
                sg = sg - sl.sl * _decay_g(sl.tq, sl.tg, st)
            sg = jnp.where(_global_mask(sl.q0, st), sg, _NEG)
            mx = jnp.maximum(mx, jnp.max(sg, axis=-1))
        p = jnp.exp(s - mx[..., None])
        denom = jnp.sum(p, axis=-1)
        acc = _mm("rqk,rkd->rqd", p, sl.rows3(v, sl.k0, st.band))
        if gk:
            pg = jnp.exp(sg - mx[..., None])
            denom = denom + jnp.sum(pg, axis=-1)
            acc = acc + _mm("rqg,rgd->rqd", pg, sl.rows3(v, jnp.int32(0), gk))
        out = _dus(out, acc / denom[..., None], (sl.r0, sl.q0, jnp.int32(0)))
        return out, _dus(lse, mx + jnp.log(denom), (sl.r0, sl.q0))

    init = (jnp.zeros((bh, n, d), jnp.float32), jnp.zeros((bh, n), jnp.float32))
    return jax.lax.fori_loop(0, st.num_steps, step, init)


def _backward(q, k, v, slopes, t, out, lse, dout, st: BandStatic):
    """Recomputing backward on transposed slabs. Returns (dq, dk, dv, dslopes),
    ``dslopes`` per row ``[B]`` (or None)."""
    bh, n, d = q.shape
    gk = st.global_keys
    decay = st.decay_fn is not None
    delta = jnp.sum(dout * out, axis=-1)  # [B, n]
    kt = jnp.swapaxes(k, 1, 2)  # [B, d, n]: dq^T = k^T @ ds^T is a plain matmul

    def step(s_idx, carry):
        dqt, dk, dv, dsl = carry
        sl = _Slab(s_idx, st, q, k, t, slopes)
        z = jnp.int32(0)
        dob = sl.rows3(dout, sl.q0, st.block)
        vb = sl.rows3(v, sl.k0, st.band)
        lse_b = _ds(lse, (sl.r0, sl.q0), (st.rows, st.block))[:, None, :]
        delta_b = _ds(delta, (sl.r0, sl.q0), (st.rows, st.block))[:, None, :]
        sT = _mm("rkd,rqd->rkq", sl.kb, sl.qb)  # [rows, K, c]
        if decay:
            gT = _decay_g(sl.tk, sl.tq, st)
            sT = sT - sl.sl * gT
        sT = jnp.where(_band_mask(sl.q0, sl.k0, st, transposed=True), sT, _NEG)
        pT = jnp.exp(sT - lse_b)
        dsT = pT * (_mm("rkd,rqd->rkq", vb, dob) - delta_b)
        kbt = _ds(kt, (sl.r0, z, sl.k0), (st.rows, d, st.band))
        dqt_b = _mm("rdk,rkq->rdq", kbt, dsT)  # [rows, d, c]
        dk = _add_at(dk, _mm("rkq,rqd->rkd", dsT, sl.qb), (sl.r0, sl.k0, z))
        dv = _add_at(dv, _mm("rkq,rqd->rkd", pT, dob), (sl.r0, sl.k0, z))
        dsl_b = -jnp.sum(dsT * gT, axis=(1, 2)) if decay else None
        if gk:
            sgT = _mm("rgd,rqd->rgq", sl.kg, sl.qb)  # [rows, gk, c]
            if decay:
                ggT = _decay_g(sl.tg, sl.tq, st)
                sgT = sgT - sl.sl * ggT
            sgT = jnp.where(_global_mask(sl.q0, st, transposed=True), sgT, _NEG)
            pgT = jnp.exp(sgT - lse_b)
            dsgT = pgT * (_mm("rgd,rqd->rgq", sl.rows3(v, z, gk), dob) - delta_b)
            dqt_b = dqt_b + _mm("rdg,rgq->rdq", _ds(kt, (sl.r0, z, z), (st.rows, d, gk)), dsgT)
            dk = _add_at(dk, _mm("rgq,rqd->rgd", dsgT, sl.qb), (sl.r0, z, z))
            dv = _add_at(dv, _mm("rgq,rqd->rgd", pgT, dob), (sl.r0, z, z))
            if decay:
                dsl_b = dsl_b - jnp.sum(dsgT * ggT, axis=(1, 2))
        dqt = _dus(dqt, dqt_b, (sl.r0, z, sl.q0))
        if decay:
            dsl = _add_at(dsl, dsl_b, (sl.r0,))
        return dqt, dk, dv, dsl

    init = (jnp.zeros((bh, d, n), jnp.float32), jnp.zeros_like(k), jnp.zeros_like(v),
            jnp.zeros((bh,), jnp.float32))
    dqt, dk, dv, dsl = jax.lax.fori_loop(0, st.num_steps, step, init)
    return jnp.swapaxes(dqt, 1, 2), dk, dv, (dsl if decay else None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _banded(q, k, v, slopes, t, st):
    return _forward(q, k, v, slopes, t, st)[0]


def _banded_fwd(q, k, v, slopes, t, st):
    out, lse = _forward(q, k, v, slopes, t, st)
    return out, (q, k, v, slopes, t, out, lse)


def _banded_bwd(st, res, dout):
    q, k, v, slopes, t, out, lse = res
    dq, dk, dv, dslopes = _backward(q, k, v, slopes, t, out, lse, dout, st)
    return dq, dk, dv, dslopes, None


_banded.defvjp(_banded_fwd, _banded_bwd)


def banded_attention(q, k, v, slopes, lengths, t, st: BandStatic) -> jax.Array:
    """Causal local (+ global) attention on prepared inputs.

    Args:
      q, k, v: ``[batch, heads, st.length, head_dim]`` fp32, ``q`` pre-scaled.
      slopes: ``float32[heads]`` decay slopes (differentiable) or None.
      lengths: ``int32[batch]`` valid lengths or None (all valid).
      t: ``float32[batch, st.length]`` timestamps (no gradient) or None.
      st: tiling from :func:`band_static` (``st.bh == batch * heads``).

    Returns:
      ``[batch, heads, st.length, head_dim]`` fp32; padded query rows are zero (and
      get zero gradients: the row mask below is differentiated by JAX).
    """
    b, h, n, d = q.shape
    rows = lambda x: x.reshape(b * h, n, d)  # noqa: E731
    if t is not None:
        t = jnp.broadcast_to(t[:, None], (b, h, n)).reshape(b * h, n)
        slopes = jnp.broadcast_to(slopes[None], (b, h)).reshape(b * h)
    out = _banded(rows(q), rows(k), rows(v), slopes, t, st).reshape(b, h, n, d)
    if lengths is not None:
        valid = jnp.arange(n)[None, :] < lengths[:, None]  # [b, n]
        out = jnp.where(valid[:, None, :, None], out, 0.0)
    return out
