"""Banded attention for causal local windows (plus a global prefix).

Used by :func:`attnlab.ops.xla_chunked.chunked_attention` when ``spec.causal`` and
``spec.window <= BANDED_MAX_WINDOW`` (see there; ``WindowPath.BANDED`` forces it). Local attention in the style of
Longformer (Beltagy et al., 2020): each query sees the last ``window`` keys, plus
the first ``num_global`` positions of the sequence.

Layout. The (padded) sequence is cut into ``nb`` blocks of ``c`` positions. Every
key a query of block ``i`` may see through its window lies in blocks
``i - m .. i`` where ``m = ceil((window - 1) / c)``, so the keys of each query block
are the concatenation of those ``m + 1`` blocks, ``[b, h, nb, (m+1) c, d]`` (blocks
before the start are zeros and masked). Each query block takes its whole band at
once (no key loop, no online softmax); one ``lax.scan`` walks steps of ``rows``
(batch, head) pairs x ``group`` blocks, batched matmuls inside a step. Computing
all blocks in one step (no scan) was memory-bound on a 2-core CPU: 4096 positions,
window 256, fwd+bwd 660 ms vs 261 ms for the 128-block loop (same process). The ``num_global`` leading keys
are one extra key block shared by every query; the mask splits visibility into two
disjoint parts so that a global key inside a query's window is counted once:

* band part:   ``j <= i  and  i - j < window``
* global part: ``j < num_global  and  i - j >= window``

The softmax runs over both parts with fp32 accumulation. The backward
(``jax.custom_vjp``) saves only ``(out, lse)``, recomputes the band probabilities
(transposed, so every matmul is a plain or ``A @ B^T`` product on XLA:CPU) and
scatters the band cotangents of ``k`` and ``v`` back by summing the ``m + 1``
shifted slices. Memory is O(length * (m + 1) * c), never O(length^2).

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
      block: positions per block ``c``.
      prev: previous blocks in each query block's key band ``m``.
      window: the local window ``W`` (``prev * block >= W - 1`` or the band covers
        every earlier block).
      num_global: ``G``, leading positions every query sees.
      global_keys: key slots of the global block (0 if no query needs it).
      group: query blocks per scan step (divides ``length // block``).
      bh: ``batch * heads``, the flattened rows.
      rows: (batch, head) rows per scan step (divides ``bh``).
      decay_fn: decay shape, or None without time decay.
      time_unit: divides time gaps before ``decay_fn``.
    """

    length: int
    block: int
    prev: int
    window: int
    num_global: int
    global_keys: int
    group: int
    bh: int
    rows: int
    decay_fn: DecayFn | None
    time_unit: float

    @property
    def num_blocks(self) -> int:
        return self.length // self.block

    @property
    def num_groups(self) -> int:
        return self.num_blocks // self.group

    @property
    def band(self) -> int:
        return (self.prev + 1) * self.block


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


#: Scores per scan step (``batch * heads * group * c * K``) the default grouping aims
#: at: 2^19 fp32 = 2 MiB, about one core's L2 (see :func:`band_static`).
STEP_SCORES = 1 << 19


def _largest_divisor(n: int, at_most: int) -> int:
    return max(x for x in range(1, min(at_most, n) + 1) if n % x == 0)


def band_static(length: int, block: int, *, window: int, num_global: int,
                decay_fn: DecayFn | None, time_unit: float, batch_heads: int,
                group: int | None = None, rows: int | None = None) -> BandStatic:
    """Tiling of a causal window of ``window`` over ``length`` positions.

    ``block`` is clipped to the (8-rounded) length; the padded length is a multiple
    of it. A scan step covers ``rows`` of the ``batch_heads`` flattened (batch, head)
    rows and ``group`` query blocks; by default as many rows, then as many blocks,
    as fit :data:`STEP_SCORES` (at least one of each). Both are lowered to divisors
    of ``batch_heads`` and of the block count.
    """
    c = min(block, _round_up(length, 8))
    n_pad = _round_up(length, c)
    nb = n_pad // c
    prev = min(-(-(window - 1) // c), nb - 1)
    block_scores = c * (prev + 1) * c
    if rows is None:
        rows = max(1, min(batch_heads, STEP_SCORES // block_scores))
    rows = _largest_divisor(batch_heads, rows)
    if group is None:
        group = max(1, STEP_SCORES // (rows * block_scores))
    group = _largest_divisor(nb, group)
    # Global keys are needed only by queries whose window misses some of them.
    g = min(num_global, length)
    global_keys = _round_up(g, 8) if g and length - 1 >= window else 0
    global_keys = min(global_keys, n_pad)
    return BandStatic(length=n_pad, block=c, prev=prev, window=window, num_global=g,
                      global_keys=global_keys, group=group, bh=batch_heads, rows=rows,
                      decay_fn=decay_fn,
                      time_unit=time_unit)


# ----------------------------------------------------------------- band geometry


def _band(x, st: BandStatic, axis: int):
    """Key band: ``x`` with ``n`` at ``axis`` -> ``[..., nb, (m+1) c, ...]``.

    Band slot ``o * c + r`` of block ``i`` holds position ``(i - m + o) * c + r``
    (zeros before the start)."""
    c, m, n = st.block, st.prev, x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (m * c, 0)
    xp = jnp.pad(x, pad)
    shape = x.shape[:axis] + (n // c, c) + x.shape[axis + 1:]
    parts = [jax.lax.slice_in_dim(xp, o * c, o * c + n, axis=axis).reshape(shape)
             for o in range(m + 1)]
    return jnp.concatenate(parts, axis=axis + 1) if m else parts[0]


def _unband(y, st: BandStatic):
    """Adjoint of :func:`_band` on axis 1: ``[B, nb, (m+1) c, d]`` -> ``[B, n, d]``
    (sums the ``m + 1`` shifted slices into place)."""
    c, m = st.block, st.prev
    bh, nb = y.shape[:2]
    n = nb * c
    total = None
    for o in range(m + 1):
        part = y[:, :, o * c:(o + 1) * c].reshape(bh, n, *y.shape[3:])
        # position p of `part` belongs to p - (m - o) * c; drop what falls before 0
        shift = (m - o) * c
        part = jnp.pad(part[:, shift:], ((0, 0), (0, shift), (0, 0)))
        total = part if total is None else total + part
    return total


def _positions(blk, st: BandStatic, transposed: bool):
    """``(qpos [g, c, 1], kpos [g, 1, K])`` (or the transposed ``[g, K, 1]`` /
    ``[g, 1, c]``) as broadcastable int32 positions of blocks ``blk`` (``int32[g]``)."""
    c, kk = st.block, st.band
    blk = blk[:, None, None]
    r = jax.lax.broadcasted_iota(jnp.int32, (1, c, 1), 1)
    s = jax.lax.broadcasted_iota(jnp.int32, (1, 1, kk), 2)
    qpos, kpos = blk * c + r, (blk - st.prev) * c + s
    if transposed:
        qpos, kpos = jnp.swapaxes(qpos, 1, 2), jnp.swapaxes(kpos, 1, 2)
    return qpos, kpos


def _band_mask(blk, st: BandStatic, transposed: bool = False):
    """bool ``[g, c, K]`` (or ``[g, K, c]``): the band part of the visibility."""
    qpos, kpos = _positions(blk, st, transposed)
    return (kpos >= 0) & (kpos <= qpos) & (qpos - kpos < st.window)


def _global_mask(q0, rows: int, st: BandStatic, transposed: bool = False):
    """bool ``[rows, gk]`` (or ``[gk, rows]``) for queries ``q0 .. q0 + rows - 1``: the
    global part of the visibility (global keys outside the window)."""
    i = q0 + jax.lax.broadcasted_iota(jnp.int32, (rows, st.global_keys), 0)
    j = jax.lax.broadcasted_iota(jnp.int32, (rows, st.global_keys), 1)
    mask = (j < st.num_global) & (i - j >= st.window)
    return mask.T if transposed else mask


def _decay_g(ta, tb, st: BandStatic):
    """``g(|ta[..., :, None] - tb[..., None, :]| / time_unit)``."""
    dt = jnp.abs(ta[..., :, None] - tb[..., None, :]) * (1.0 / st.time_unit)
    return st.decay_fn.apply(dt)


def _mm(spec, a, b):
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


def _steps(x, st: BandStatic):
    """``[B, nb, ...]`` -> ``[steps, rows, group, ...]`` with ``B = batch * heads``:
    step ``r * num_groups + gi`` holds rows ``r * rows ..`` and block group ``gi``."""
    rows, gs = st.rows, st.group
    x = x.reshape(x.shape[0] // rows, rows, st.num_groups, gs, *x.shape[2:])
    return jnp.swapaxes(x, 1, 2).reshape(-1, rows, gs, *x.shape[4:])


def _unsteps(x, st: BandStatic):
    """Inverse of :func:`_steps`: ``[steps, rows, group, ...]`` -> ``[B, nb, ...]``."""
    x = x.reshape(-1, st.num_groups, *x.shape[1:])
    x = jnp.swapaxes(x, 1, 2)
    return x.reshape(x.shape[0] * x.shape[1], -1, *x.shape[4:])


def _per_step(x, st: BandStatic):
    """Per-row data ``[B, ...]`` -> ``[steps, rows, ...]`` (repeated over block groups)."""
    x = x.reshape(-1, 1, st.rows, *x.shape[1:])
    x = jnp.broadcast_to(x, (x.shape[0], st.num_groups) + x.shape[2:])
    return x.reshape(-1, *x.shape[2:])


def _step_index(st: BandStatic):
    return jnp.tile(jnp.arange(st.num_groups, dtype=jnp.int32), st.bh // st.rows)


# ----------------------------------------------------------------- forward / backward
#
# Rows are the flattened (batch, head) pairs, B = batch * heads. One scan step
# handles `rows` of them and `group` query blocks at once with batched matmuls (no
# inner loop, no online softmax: each query block's whole key band is in the step).
# The step keeps its [rows, group, c, K] scores about L2-sized: materialising every
# block at once is memory-bound on CPU and measured 2.5x slower (see module doc).


def _forward(q, k, v, slopes, t, st: BandStatic):
    """q, k, v: ``[B, n, d]`` fp32 with q pre-scaled; slopes, t per row ``[B]``,
    ``[B, n]``. Returns (out ``[B, n, d]``, lse ``[B, n]``)."""
    bh, n, d = q.shape
    nb, c, gs, gk, rows = st.num_blocks, st.block, st.group, st.global_keys, st.rows
    decay = st.decay_fn is not None

    def step(_, xs):
        gi, qb, kb, vb, tq, tk, sl, kg, vg, tg = xs  # qb [s, gs, c, d], kb [s, gs, K, d]
        blk = gi * gs + jnp.arange(gs, dtype=jnp.int32)
        s = _mm("snqd,snkd->snqk", qb, kb)  # [s, gs, c, K]
        if decay:
            s = s - sl[:, None, None, None] * _decay_g(tq, tk, st)
        s = jnp.where(_band_mask(blk, st), s, _NEG)
        mx = jnp.max(s, axis=-1)  # [s, gs, c]
        if gk:
            sg = _mm("sqd,sgd->sqg", qb.reshape(rows, gs * c, d), kg)
            if decay:
                sg = sg - sl[:, None, None] * _decay_g(tq.reshape(rows, gs * c), tg, st)
            sg = jnp.where(_global_mask(gi * gs * c, gs * c, st), sg, _NEG)
            sg = sg.reshape(rows, gs, c, gk)
            mx = jnp.maximum(mx, jnp.max(sg, axis=-1))
        p = jnp.exp(s - mx[..., None])
        denom = jnp.sum(p, axis=-1)
        acc = _mm("snqk,snkd->snqd", p, vb)
        if gk:
            pg = jnp.exp(sg - mx[..., None])
            denom = denom + jnp.sum(pg, axis=-1)
            acc = acc + _mm("snqg,sgd->snqd", pg, vg)
        return None, (acc / denom[..., None], mx + jnp.log(denom))

    opt = lambda cond, f: f() if cond else None  # noqa: E731
    xs = (_step_index(st), _steps(q.reshape(bh, nb, c, d), st), _steps(_band(k, st, 1), st),
          _steps(_band(v, st, 1), st),
          opt(decay, lambda: _steps(t.reshape(bh, nb, c), st)),
          opt(decay, lambda: _steps(_band(t, st, 1), st)),
          opt(decay, lambda: _per_step(slopes, st)),
          opt(gk, lambda: _per_step(k[:, :gk], st)), opt(gk, lambda: _per_step(v[:, :gk], st)),
          opt(gk and decay, lambda: _per_step(t[:, :gk], st)))
    _, (out, lse) = jax.lax.scan(step, None, xs)
    return _unsteps(out, st).reshape(bh, n, d), _unsteps(lse, st).reshape(bh, n)


def _backward(q, k, v, slopes, t, out, lse, dout, st: BandStatic):
    """Recomputing backward on transposed band blocks. Returns (dq, dk, dv, dslopes),
    ``dslopes`` per row ``[B]`` (or None)."""
    bh, n, d = q.shape
    nb, c, gs, gk, rows = st.num_blocks, st.block, st.group, st.global_keys, st.rows
    decay = st.decay_fn is not None
    delta = jnp.sum(dout * out, axis=-1)  # [B, n]

    def step(_, xs):
        gi, qb, kb, vb, dob, lse_b, delta_b, tq, tk, sl, kg, vg, tg = xs
        blk = gi * gs + jnp.arange(gs, dtype=jnp.int32)
        sT = _mm("snkd,snqd->snkq", kb, qb)  # [s, gs, K, c]
        if decay:
            gT = _decay_g(tk, tq, st)  # [s, gs, K, c]
            sT = sT - sl[:, None, None, None] * gT
        sT = jnp.where(_band_mask(blk, st, transposed=True), sT, _NEG)
        pT = jnp.exp(sT - lse_b[:, :, None, :])
        dsT = pT * (_mm("snkd,snqd->snkq", vb, dob) - delta_b[:, :, None, :])
        dkb = _mm("snkq,snqd->snkd", dsT, qb)
        dvb = _mm("snkq,snqd->snkd", pT, dob)
        dqT = _mm("sndk,snkq->sndq", jnp.swapaxes(kb, -1, -2), dsT)  # [s, gs, d, c]
        dsl = -jnp.sum(dsT * gT, axis=(1, 2, 3)) if decay else None
        dkg = dvg = None
        if gk:
            r = gs * c
            qr, dor = qb.reshape(rows, r, d), dob.reshape(rows, r, d)
            sgT = _mm("sgd,sqd->sgq", kg, qr)  # [s, gk, r]
            if decay:
                ggT = _decay_g(tg, tq.reshape(rows, r), st)
                sgT = sgT - sl[:, None, None] * ggT
            sgT = jnp.where(_global_mask(gi * r, r, st, transposed=True), sgT, _NEG)
            pgT = jnp.exp(sgT - lse_b.reshape(rows, 1, r))
            dsgT = pgT * (_mm("sgd,sqd->sgq", vg, dor) - delta_b.reshape(rows, 1, r))
            dkg = _mm("sgq,sqd->sgd", dsgT, qr)
            dvg = _mm("sgq,sqd->sgd", pgT, dor)
            dqT = dqT + jnp.swapaxes(
                _mm("sdg,sgq->sdq", jnp.swapaxes(kg, -1, -2), dsgT).reshape(rows, d, gs, c), 1, 2)
            if decay:
                dsl = dsl - jnp.sum(dsgT * ggT, axis=(1, 2))
        return None, (jnp.swapaxes(dqT, -1, -2), dkb, dvb, dkg, dvg, dsl)

    opt = lambda cond, f: f() if cond else None  # noqa: E731
    blocks = lambda x: _steps(x.reshape(bh, nb, c, *x.shape[2:]), st)  # noqa: E731
    xs = (_step_index(st), blocks(q), _steps(_band(k, st, 1), st), _steps(_band(v, st, 1), st),
          blocks(dout), blocks(lse), blocks(delta),
          opt(decay, lambda: blocks(t)), opt(decay, lambda: _steps(_band(t, st, 1), st)),
          opt(decay, lambda: _per_step(slopes, st)),
          opt(gk, lambda: _per_step(k[:, :gk], st)), opt(gk, lambda: _per_step(v[:, :gk], st)),
          opt(gk and decay, lambda: _per_step(t[:, :gk], st)))
    _, (dq, dkb, dvb, dkg, dvg, dsl) = jax.lax.scan(step, None, xs)
    dq = _unsteps(dq, st).reshape(bh, n, d)
    dk, dv = _unband(_unsteps(dkb, st), st), _unband(_unsteps(dvb, st), st)

    def per_row(x):  # [steps, rows, ...] -> [B, ...] summed over block groups
        return jnp.sum(x.reshape(-1, st.num_groups, *x.shape[1:]), axis=1).reshape(
            bh, *x.shape[2:])

    if gk:
        pad = ((0, 0), (0, n - gk), (0, 0))
        dk, dv = dk + jnp.pad(per_row(dkg), pad), dv + jnp.pad(per_row(dvg), pad)
    return dq, dk, dv, (per_row(dsl) if decay else None)


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
