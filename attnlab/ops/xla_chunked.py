"""Blockwise (flash) attention in pure JAX: the portable / CPU production path.

The algorithm is the online softmax of FlashAttention (Dao et al., 2022;
FlashAttention-2, Dao 2023), which builds on memory-efficient attention by
Rabe & Staats (2021, "Self-attention does not need O(n^2) memory"): queries are
cut into blocks of ``block_q`` rows; for each query block a loop visits key blocks
of ``block_k`` keys, keeping a running row max ``m``, normaliser ``l`` and output
accumulator. Only key blocks that intersect the visibility pattern are visited
(causal: never above the diagonal; window: only blocks that intersect the window,
plus the ``num_global`` leading blocks; ragged: never past the longest sequence).

The backward pass (``jax.custom_vjp``) stores only the output and the per-row
log-sum-exp and recomputes the scores block by block, so memory is
O(length * block), never O(length^2). Gradients flow to ``q, k, v`` and the decay
slopes; ``lengths`` and ``timestamps`` get zero cotangents.

Everything is computed in fp32 (inputs of lower precision are upcast, outputs and
gradients cast back).
"""

from __future__ import annotations

import dataclasses
import enum
import functools

import jax
import jax.numpy as jnp

from attnlab.ops import banded as _banded
from attnlab.ops.spec import AttentionSpec, DecayFn

#: Finite "minus infinity": keeps the online softmax NaN-free on fully masked blocks.
_NEG = -1e30


class WindowPath(enum.Enum):
    """How a causal window (``spec.window``) is computed."""

    AUTO = "auto"  # banded while its key slab is at most 3/4 of the sequence, else looped
    BANDED = "banded"  # one query block x its key slab per step (attnlab.ops.banded); causal only
    LOOP = "loop"  # the blockwise online-softmax loop of this module


@dataclasses.dataclass(frozen=True)
class ChunkConfig:
    """Block sizes of the chunked path (how it tiles, not what it computes).

    Attributes:
      block_q: query rows per block (power of two); the work of one loop step is
        ``batch * heads * block_q * block_k``.
      block_k: keys per inner-loop step (power of two).
      window_path: banded or looped computation of a causal window (a non-causal
        window always loops: it is not a band).
      band_block: positions per block ``c`` of the banded path (multiple of 8), or
        None for :func:`band_block_for`.
      band_rows: (batch, head) pairs per loop step of the banded path, or None for
        the cache-sized default of :func:`attnlab.ops.banded.band_static`.
    """

    block_q: int = 256
    block_k: int = 256
    window_path: WindowPath = WindowPath.AUTO
    band_block: int | None = None
    band_rows: int | None = None

    def __post_init__(self):
        for name in ("block_q", "block_k"):
            b = getattr(self, name)
            if b < 8 or b & (b - 1):
                raise ValueError(f"ChunkConfig.{name} must be a power of two >= 8, got {b}.")
        if self.band_block is not None and (self.band_block < 8 or self.band_block % 8):
            raise ValueError(
                f"ChunkConfig.band_block must be a multiple of 8, got {self.band_block}.")


def band_block_for(window: int) -> int:
    """Heuristic query block ``c`` of the banded path for a causal window.

    Measured fwd+bwd on a 2-core AMD EPYC (batch 8, 2 heads, head_dim 32, length
    4096, interleaved medians, same run): window 64: c = 64 91 ms, 128: 140, 256:
    152; window 128: 117 / 132 / 146; window 256: c = 256 156 ms, 128: 188; window
    512: c = 256 210 ms, 128: 253, 512: 248. XLA:CPU's batched matmuls with a
    128-sized dimension ran at 64-80 GFLOP/s against 125-140 with 256 (head_dim 32),
    which outweighs the smaller slab of ``c = 128`` (``K = W + c`` keys per query)."""
    return 64 if window <= 128 else 256


def default_config(length: int, head_dim: int, *, window: int | None = None) -> ChunkConfig:
    """Heuristic block sizes of the loop path, measured on a 2-core AVX-512 CPU
    (batch 8, 2 heads, head_dim 32, fp32, fwd+bwd; see ``docs/kernel_bench.md``).

    Full/causal: 256 x 256 blocks below 2048 positions, 512 x 512 from 2048 on
    (quiet machine: 2048 205 -> 169 ms, 4096 660 -> 531 ms, 8192 2716 -> 1906 ms;
    at 512 positions 256 wins, 23 vs 35 ms; at 1024 they tie). NOTE: under load
    (another job on both cores) 512 x 512 measured slower than 256 x 256 (2048: 291
    vs 228 ms, 4096: 941 vs 815 ms, interleaved medians); the quiet-machine numbers
    set the default.

    Windows: 128 blocks up to a 512 window (a query block of ``c`` rows visits ``c +
    window`` keys). Causal windows loop only when the banded path declines (see
    :func:`use_banded`)."""
    del head_dim
    if window is not None and window <= 512:
        return ChunkConfig(block_q=128, block_k=128)
    if length >= 2048:
        return ChunkConfig(block_q=512, block_k=512)
    return ChunkConfig(block_q=256, block_k=256)


def _band_block(spec: AttentionSpec, cfg: ChunkConfig) -> int:
    return cfg.band_block or band_block_for(spec.window)


def use_banded(spec: AttentionSpec, cfg: ChunkConfig, length: int) -> bool:
    """Does a call over ``length`` positions take the banded path?

    Causal windows only (a non-causal window is not a band). ``WindowPath.AUTO``
    takes it while a query block's key slab ``K`` is at most 3/4 of the padded
    sequence. Both paths visit about ``window + c`` keys per query, but the loop
    skips keys past the diagonal in the first ``window`` rows, where the band scores
    its whole slab; near the full length the band does up to twice the loop's work.
    Measured at 4096 positions (2-core AMD EPYC, fwd+bwd, interleaved medians, loop
    with 128 blocks): window 64 91 vs 125 ms, 256 156 vs 183, 512 210 vs 253, 1024
    328 vs 483, 2048 567 vs 765 (slab 2304 = 0.56 of the length); at 512 positions,
    window 256 (slab = the length) the loop's 17.0 ms beat the band's 18.0.
    """
    if spec.window is None or not spec.causal:
        return False
    if cfg.window_path is WindowPath.AUTO:
        _, n_pad, _, slab = _banded.slab_tiling(length, _band_block(spec, cfg), spec.window)
        return 4 * slab <= 3 * n_pad
    return cfg.window_path is WindowPath.BANDED


def unsupported_reason(q, k, v, spec: AttentionSpec) -> str | None:
    """Why :func:`chunked_attention` cannot run these inputs, or None."""
    if q.shape[1] != k.shape[1]:
        return f"needs q_len == k_len (self-attention), got {q.shape[1]} and {k.shape[1]}"
    if q.shape[1] == 0:
        return "empty sequence"
    if not jnp.issubdtype(q.dtype, jnp.floating):
        return f"needs floating-point inputs, got {q.dtype}"
    return None


@dataclasses.dataclass(frozen=True)
class _Static:
    """Hashable static description of one call (spec meta + tiling)."""

    length: int  # padded length, a multiple of block_q and block_k
    block_q: int
    block_k: int
    causal: bool
    window: int | None
    num_global: int
    decay_fn: DecayFn | None
    time_unit: float
    scale: float

    @property
    def num_q_blocks(self):
        return self.length // self.block_q

    @property
    def num_k_blocks(self):
        return self.length // self.block_k


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _tiling(length: int, cfg: ChunkConfig) -> tuple[int, int, int]:
    """Block sizes clipped to the length, and the padded length."""
    n8 = _round_up(length, 8)
    bk = min(cfg.block_k, n8)
    bq = min(cfg.block_q, _round_up(n8, bk))
    bq, bk = (bq, bk) if bq % bk == 0 or bk % bq == 0 else (bk, bk)
    return bq, bk, _round_up(length, max(bq, bk))


# ----------------------------------------------------------------- block geometry


def _key_block_range(i, st: _Static, kmax):
    """Key blocks visited by query block ``i`` (a traced int).

    Returns ``(num_global_blocks, first_local, num_steps)``: steps ``t <
    num_global_blocks`` visit block ``t``; later steps visit ``first_local + t - ng``.
    """
    bq, bk = st.block_q, st.block_k
    last = st.num_k_blocks - 1
    if st.causal:
        last = jnp.minimum(last, (i * bq + bq - 1) // bk)
    if kmax is not None:  # never past the longest sequence
        last = jnp.minimum(last, (kmax - 1) // bk)
    ng = 0
    first = jnp.int32(0)
    if st.window is not None:
        ng = _round_up(st.num_global, bk) // bk
        first = jnp.maximum(ng, (i * bq - st.window + 1) // bk)
        ng = jnp.minimum(ng, last + 1)
    steps = ng + jnp.maximum(last - first + 1, 0)
    return ng, first, steps


def _key_block_index(t, ng, first):
    return jnp.where(t < ng, t, first + t - ng)


def _needs_mask(q0, k0, lengths, st: _Static):
    """Traced bool: does block pair (q0, k0) contain any invisible (query, key) pair?

    Padded query rows are ignored (their results are zeroed separately)."""
    q_lo, q_hi = q0, q0 + st.block_q - 1
    k_lo, k_hi = k0, k0 + st.block_k - 1
    need = jnp.bool_(False)
    if st.causal:
        need |= k_hi > q_lo
    if st.window is not None:
        need |= (q_hi - k_lo >= st.window) & (k_hi >= st.num_global)
    if not st.causal and lengths is not None:
        need |= k_hi >= jnp.min(lengths)
    return need


def _maybe_masked(body, q0, j, bk, lengths, st: _Static, carry):
    """``body(masked, j, carry)``, skipping the mask arithmetic on fully visible blocks.

    Under a window nearly every visited block is an edge block, so the branch is not
    worth its cost there and the masked body always runs."""
    if st.window is not None:
        return body(True, j, carry)
    return jax.lax.cond(_needs_mask(q0, j * bk, lengths, st), functools.partial(body, True),
                        functools.partial(body, False), j, carry)


def _block_scores(qb, kb, q0, k0, tq, tk, lengths, slopes, st: _Static, *, masked=True):
    """Masked scores of one block pair.

    Args:
      qb: ``[b, h, bq, d]`` pre-scaled queries; kb: ``[b, h, bk, d]`` keys.
      q0, k0: first query / key position of the block.
      tq, tk: ``[b, bq]`` / ``[b, bk]`` timestamps (or None).
      lengths: ``int32[b]`` or None.

    Returns:
      ``(s, mask, g)``: scores ``[b, h, bq, bk]`` with invisible entries at ``_NEG``,
      the visibility mask (or None if all visible) and the decay shape ``g``
      ``[b, 1, bq, bk]`` (or None).
    """
    s = jnp.einsum("bhqd,bhkd->bhqk", qb, kb, preferred_element_type=jnp.float32)
    g = None
    if st.decay_fn is not None:
        dt = jnp.abs(tq[:, :, None] - tk[:, None, :]) * (1.0 / st.time_unit)
        g = st.decay_fn.apply(dt)[:, None]
        s = s - slopes[None, :, None, None] * g
    qpos = q0 + jax.lax.broadcasted_iota(jnp.int32, (st.block_q, st.block_k), 0)
    kpos = k0 + jax.lax.broadcasted_iota(jnp.int32, (st.block_q, st.block_k), 1)
    mask = None
    if not masked:
        return s, None, g

    def _and(a, b):
        return b if a is None else a & b

    if st.causal:
        mask = _and(mask, kpos <= qpos)
    if st.window is not None:
        mask = _and(mask, (qpos - kpos < st.window) | (kpos < st.num_global))
    if mask is not None:
        mask = mask[None, None]
    if not st.causal and lengths is not None:
        # With causal masking, keys past the length are only seen by padded query
        # rows, whose outputs and gradients are zeroed separately.
        mask = _and(mask, (kpos[None] < lengths[:, None, None])[:, None])
    if mask is not None:
        s = jnp.where(mask, s, _NEG)
    return s, mask, g


def _block_scores_t(kb, qb, q0, k0, tq, tk, lengths, slopes, st: _Static, *, masked=True):
    """Transposed :func:`_block_scores`: ``(s^T [b, h, bk, bq], g^T [b, 1, bk, bq])``.

    The backward works on transposed blocks so that all five of its matmuls are
    plain or ``A @ B^T`` products (a contraction over the leading axis of both
    operands runs ~4x slower on XLA:CPU)."""
    s = jnp.einsum("bhkd,bhqd->bhkq", kb, qb, preferred_element_type=jnp.float32)
    g = None
    if st.decay_fn is not None:
        dt = jnp.abs(tk[:, :, None] - tq[:, None, :]) * (1.0 / st.time_unit)
        g = st.decay_fn.apply(dt)[:, None]
        s = s - slopes[None, :, None, None] * g
    if not masked:
        return s, g
    kpos = k0 + jax.lax.broadcasted_iota(jnp.int32, (st.block_k, st.block_q), 0)
    qpos = q0 + jax.lax.broadcasted_iota(jnp.int32, (st.block_k, st.block_q), 1)
    mask = jnp.ones((st.block_k, st.block_q), bool)
    if st.causal:
        mask &= kpos <= qpos
    if st.window is not None:
        mask &= (qpos - kpos < st.window) | (kpos < st.num_global)
    mask = mask[None, None]
    if not st.causal and lengths is not None:
        mask = mask & (kpos[None] < lengths[:, None, None])[:, None]
    return jnp.where(mask, s, _NEG), g


def _blocks(x, block):
    """``[b, h, n, ...]`` -> ``[n // block, b, h, block, ...]``."""
    b, h, n = x.shape[:3]
    x = x.reshape(b, h, n // block, block, *x.shape[3:])
    return jnp.moveaxis(x, 2, 0)


def _unblocks(x):
    """Inverse of :func:`_blocks`."""
    x = jnp.moveaxis(x, 0, 2)
    return x.reshape(x.shape[0], x.shape[1], -1, *x.shape[4:])


def _slice_keys(x, j, bk, axis):
    return jax.lax.dynamic_slice_in_dim(x, j * bk, bk, axis=axis)


# ----------------------------------------------------------------- forward / backward


def _forward(q, k, v, slopes, lengths, t, st: _Static):
    """q, k, v: ``[b, h, n, d]`` fp32 with q pre-scaled. Returns (out, lse)."""
    b, h, n, d = q.shape
    bq, bk = st.block_q, st.block_k
    kmax = jnp.max(lengths) if lengths is not None else None
    tq_blocks = _blocks(t[:, None], bq)[:, :, 0] if t is not None else None

    def q_block(_, xs):
        i, qb, tq = xs
        ng, first, steps = _key_block_range(i, st, kmax)

        def body(masked, j, carry):
            m, l, acc = carry
            kb, vb = _slice_keys(k, j, bk, 2), _slice_keys(v, j, bk, 2)
            tk = _slice_keys(t, j, bk, 1) if t is not None else None
            s, _, _ = _block_scores(qb, kb, i * bq, j * bk, tq, tk, lengths, slopes, st,
                                    masked=masked)
            m_new = jnp.maximum(m, jnp.max(s, axis=-1))
            alpha = jnp.exp(m - m_new)
            p = jnp.exp(s - m_new[..., None])
            l = alpha * l + jnp.sum(p, axis=-1)
            pv = jnp.einsum("bhqk,bhkd->bhqd", p, vb, preferred_element_type=jnp.float32)
            return m_new, l, alpha[..., None] * acc + pv

        def step(tt, carry):
            j = _key_block_index(tt, ng, first)
            return _maybe_masked(body, i * bq, j, bk, lengths, st, carry)

        init = (jnp.full((b, h, bq), _NEG, jnp.float32), jnp.zeros((b, h, bq), jnp.float32),
                jnp.zeros((b, h, bq, d), jnp.float32))
        m, l, acc = jax.lax.fori_loop(0, steps, step, init)
        safe_l = jnp.where(l > 0, l, 1.0)
        return None, (acc / safe_l[..., None], m + jnp.log(safe_l))

    idx = jnp.arange(st.num_q_blocks, dtype=jnp.int32)
    xs = (idx, _blocks(q, bq), tq_blocks)
    _, (out, lse) = jax.lax.scan(q_block, None, xs)
    out, lse = _unblocks(out), _unblocks(lse)
    if lengths is not None:
        valid = jnp.arange(n)[None, :] < lengths[:, None]  # [b, n]
        out = jnp.where(valid[:, None, :, None], out, 0.0)
    return out, lse


def _backward(q, k, v, slopes, lengths, t, out, lse, dout, st: _Static):
    """FlashAttention-2 style recomputing backward. Returns (dq, dk, dv, dslopes)."""
    b, h, n, d = q.shape
    bq, bk = st.block_q, st.block_k
    kmax = jnp.max(lengths) if lengths is not None else None
    if lengths is not None:  # padded query rows contribute nothing
        valid = jnp.arange(n)[None, :] < lengths[:, None]
        dout = jnp.where(valid[:, None, :, None], dout, 0.0)
    delta = jnp.sum(dout * out, axis=-1)  # [b, h, n]
    kt = jnp.swapaxes(k, -1, -2)  # [b, h, d, n]: dq^T = k^T @ ds^T is a plain matmul
    tq_blocks = _blocks(t[:, None], bq)[:, :, 0] if t is not None else None

    def q_block(carry, xs):
        dk, dv, dslopes = carry
        i, qb, dob, lse_b, delta_b, tq = xs
        ng, first, steps = _key_block_range(i, st, kmax)

        def body(masked, j, dqt_b):
            kb, vb = _slice_keys(k, j, bk, 2), _slice_keys(v, j, bk, 2)
            kbt = _slice_keys(kt, j, bk, 3)
            tk = _slice_keys(t, j, bk, 1) if t is not None else None
            st_, gt = _block_scores_t(kb, qb, i * bq, j * bk, tq, tk, lengths, slopes, st,
                                      masked=masked)
            pt = jnp.exp(st_ - lse_b[:, :, None, :])  # [b, h, bk, bq]
            dpt = jnp.einsum("bhkd,bhqd->bhkq", vb, dob, preferred_element_type=jnp.float32)
            dst = pt * (dpt - delta_b[:, :, None, :])
            dqt_b = dqt_b + jnp.einsum("bhdk,bhkq->bhdq", kbt, dst,
                                       preferred_element_type=jnp.float32)
            dk_j = jnp.einsum("bhkq,bhqd->bhkd", dst, qb, preferred_element_type=jnp.float32)
            dv_j = jnp.einsum("bhkq,bhqd->bhkd", pt, dob, preferred_element_type=jnp.float32)
            dslopes_j = (-jnp.sum(dst * gt, axis=(0, 2, 3)) if gt is not None
                         else jnp.zeros((h,), jnp.float32))
            return dqt_b, dk_j, dv_j, dslopes_j

        def step(tt, inner):
            dqt_b, dk, dv, dslopes = inner
            j = _key_block_index(tt, ng, first)
            dqt_b, dk_j, dv_j, dslopes_j = _maybe_masked(body, i * bq, j, bk, lengths, st, dqt_b)
            dk = jax.lax.dynamic_update_slice_in_dim(
                dk, _slice_keys(dk, j, bk, 2) + dk_j, j * bk, axis=2)
            dv = jax.lax.dynamic_update_slice_in_dim(
                dv, _slice_keys(dv, j, bk, 2) + dv_j, j * bk, axis=2)
            return dqt_b, dk, dv, dslopes + dslopes_j

        init = (jnp.zeros((b, h, d, bq), jnp.float32), dk, dv, dslopes)
        dqt_b, dk, dv, dslopes = jax.lax.fori_loop(0, steps, step, init)
        return (dk, dv, dslopes), jnp.swapaxes(dqt_b, -1, -2)

    idx = jnp.arange(st.num_q_blocks, dtype=jnp.int32)
    xs = (idx, _blocks(q, bq), _blocks(dout, bq), _blocks(lse, bq), _blocks(delta, bq),
          tq_blocks)
    init = (jnp.zeros_like(k), jnp.zeros_like(v), jnp.zeros((h,), jnp.float32))
    (dk, dv, dslopes), dq = jax.lax.scan(q_block, init, xs)
    return _unblocks(dq), dk, dv, dslopes


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _flash(q, k, v, slopes, lengths, t, st):
    return _forward(q, k, v, slopes, lengths, t, st)[0]


def _flash_fwd(q, k, v, slopes, lengths, t, st):
    out, lse = _forward(q, k, v, slopes, lengths, t, st)
    return out, (q, k, v, slopes, lengths, t, out, lse)


def _flash_bwd(st, res, dout):
    q, k, v, slopes, lengths, t, out, lse = res
    dq, dk, dv, dslopes = _backward(q, k, v, slopes, lengths, t, out, lse, dout, st)
    return dq, dk, dv, (dslopes if slopes is not None else None), None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, spec: AttentionSpec,
                      config: ChunkConfig | None = None) -> jax.Array:
    """Flash attention in pure JAX.

    Args:
      q: ``[batch, length, heads, head_dim]``.
      k: ``[batch, length, heads, head_dim]``.
      v: ``[batch, length, heads, head_dim]``.
      spec: what to attend to (see :mod:`attnlab.ops.spec`).
      config: block sizes; None uses :func:`default_config`.

    Returns:
      ``[batch, length, heads, head_dim]`` in ``q.dtype``.
    """
    reason = unsupported_reason(q, k, v, spec)
    if reason:
        raise ValueError(f"chunked_attention: {reason}")
    b, n, h, d = q.shape
    cfg = config or default_config(n, d, window=spec.window)
    decay_fn = spec.decay_fn if spec.has_decay else None
    scale = float(spec.softmax_scale(d))
    if use_banded(spec, cfg, n):
        st = _banded.band_static(
            n, _band_block(spec, cfg), window=spec.window,
            num_global=spec.num_global, decay_fn=decay_fn, time_unit=float(spec.time_unit),
            batch_heads=b * h, rows=cfg.band_rows)
        n_pad, fn = st.length, _banded.banded_attention
    else:
        bq, bk, n_pad = _tiling(n, cfg)
        st = _Static(
            length=n_pad, block_q=bq, block_k=bk, causal=spec.causal, window=spec.window,
            num_global=spec.num_global, decay_fn=decay_fn, time_unit=float(spec.time_unit),
            scale=scale,
        )
        fn = _flash

    def prep(x):  # [b, n, h, d] -> [b, h, n_pad, d] fp32
        x = jnp.swapaxes(x.astype(jnp.float32), 1, 2)
        return jnp.pad(x, ((0, 0), (0, 0), (0, n_pad - n), (0, 0))) if n_pad != n else x

    lengths = spec.lengths
    if lengths is not None:
        lengths = jnp.minimum(jax.lax.stop_gradient(lengths).astype(jnp.int32), n)
    elif n_pad != n:
        lengths = jnp.full((b,), n, jnp.int32)
    t = slopes = None
    if spec.has_decay:
        t = jax.lax.stop_gradient(spec.timestamps).astype(jnp.float32)
        t = jnp.pad(t, ((0, 0), (0, n_pad - n))) if n_pad != n else t
        slopes = spec.decay_slopes.astype(jnp.float32)
    out = fn(prep(q) * scale, prep(k), prep(v), slopes, lengths, t, st)
    return jnp.swapaxes(out[:, :, :n], 1, 2).astype(q.dtype)
