"""Flash attention for customer histories as a Pallas kernel on the Triton backend.

The algorithm is FlashAttention (Dao, Fu, Ermon, Rudra and Ré, 2022) in the
work partitioning of FlashAttention-2 (Dao, 2023): each program owns one tile of
query rows, streams key/value tiles through an online softmax with fp32
accumulators, and stores the row logsumexp; the backward pass recomputes the
probabilities from that logsumexp, with one kernel per key tile for dK/dV (looping
over query tiles) and one kernel per query tile for dQ (looping over key tiles),
after a small pre-pass computing ``D = rowsum(dO * O)``.

Everything the :class:`~attnlab.ops.spec.AttentionSpec` describes is evaluated
inside the kernels from a few numbers, never from a materialised mask:

* per-sequence ``lengths`` (read from a tiny ``int32[batch]`` input),
* the causal mask,
* a local ``window`` plus ``num_global`` leading positions,
* the time-decay bias ``-slope_h * g(|t_i - t_j| / time_unit)`` from per-position
  timestamps and per-head slopes (``g`` = log1p or linear); the slope gradient
  ``-sum_ij dS_ij g_ij`` is accumulated per key inside the dK/dV kernel and reduced
  in JAX.

Key (query) tiles that lie entirely outside the attention pattern are skipped by
the loop bounds, not masked: the causal upper bound, the window lower bound (plus
the leading global tiles, visited in a separate loop) and the sequence length.
Rows without any visible key produce zeros in the forward and backward passes.

Layout is ``[batch, length, heads, head_dim]`` throughout. On CPU the kernels run
in Pallas interpret mode (tests only); on a CUDA GPU they lower to the
``__gpu$xla.gpu.triton`` custom call.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from attnlab.kernels.tuning import MIN_BLOCK, FlashTuning, default_tuning, next_pow2
from attnlab.ops.spec import AttentionSpec, DecayFn

__all__ = ["flash_attention", "unsupported_reason", "SUPPORTED_DTYPES", "GPU_PLATFORMS"]

#: Input dtypes the kernel accepts (accumulation is always fp32).
SUPPORTED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
#: Platform names on which the compiled (non-interpreted) kernel runs.
GPU_PLATFORMS = ("gpu", "cuda")
#: Largest head dimension we allow (register/shared-memory budget of one tile).
MAX_HEAD_DIM = 128


# --------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class _Static:
    """Hashable, trace-time configuration shared by all kernels of one call."""

    causal: bool
    window: int | None
    num_global: int
    decay_fn: DecayFn | None  # None: no time decay
    time_unit: float
    scale: float
    q_len: int  # unpadded lengths (padding rows/keys are masked)
    k_len: int
    tuning: FlashTuning
    interpret: bool

    @property
    def has_decay(self) -> bool:
        return self.decay_fn is not None


# --------------------------------------------------------------------- shared maths


def _matmul(a: jax.Array, b: jax.Array, contract: tuple[int, int]) -> jax.Array:
    """2-D matmul with fp32 result; ``contract`` names the contracted dim of a and b."""
    return lax.dot_general(
        a, b, (((contract[0],), (contract[1],)), ((), ())), preferred_element_type=jnp.float32
    )


def _decay_penalty(tq: jax.Array, tk: jax.Array, st: _Static) -> jax.Array:
    """``g(|t_i - t_j| / unit)`` as ``float32[rows, cols]``."""
    gap = jnp.abs(tq[:, None] - tk[None, :]) / st.time_unit
    if st.decay_fn is DecayFn.LOG1P:
        return jnp.log1p(gap)
    return gap


def _visible(rows: jax.Array, cols: jax.Array, q_n, k_n, st: _Static) -> jax.Array:
    """``bool[rows, cols]`` visibility of key ``cols[j]`` from query ``rows[i]``."""
    r = rows[:, None]
    c = cols[None, :]
    mask = (r < q_n) & (c < k_n)
    if st.causal:
        mask = mask & (c <= r)
    if st.window is not None:
        local = (r - c) < st.window
        if st.num_global:
            local = local | (c < st.num_global)
        mask = mask & local
    return mask


def _logits(q, k, rows, cols, q_n, k_n, tq, tk, slope, st: _Static):
    """Scores ``scale * q k^T - slope * g`` (fp32), the visibility mask and ``g``.

    Shapes: q ``[bq, d]``, k ``[bk, d]``, rows ``[bq]``, cols ``[bk]``; returns
    ``([bq, bk] f32, [bq, bk] bool, [bq, bk] f32 or None)``.
    """
    s = _matmul(q, k, (1, 1)) * st.scale
    g = None
    if st.has_decay:
        g = _decay_penalty(tq, tk, st)
        s = s - slope * g
    return s, _visible(rows, cols, q_n, k_n, st), g


def _cdiv(a, b: int):
    """Ceil division of a non-negative traced int by a static positive int."""
    return lax.div(a + (b - 1), b)


def _key_tile_ranges(q_start, q_n, k_n, block_q: int, block_k: int, st: _Static):
    """Key tiles a query tile ``[q_start, q_start + block_q)`` must visit.

    Returns ``(global_hi, lo, hi)``: visit tiles ``[0, global_hi)`` then
    ``[lo, hi)``; the two ranges never overlap and are empty when the query tile is
    entirely padding.
    """
    last_key = k_n  # exclusive bound from the sequence length
    if st.causal:
        last_key = jnp.minimum(last_key, q_start + block_q)
    hi = _cdiv(last_key, block_k)
    hi = jnp.where(q_start < q_n, hi, 0)
    if st.window is None:
        return jnp.int32(0), jnp.int32(0), hi
    first_key = jnp.maximum(q_start - (st.window - 1), 0)
    lo = jnp.minimum(lax.div(first_key, block_k), hi)
    if st.num_global:
        global_hi = jnp.minimum(_cdiv(jnp.int32(st.num_global), block_k), lo)
    else:
        global_hi = jnp.int32(0)
    return global_hi, lo, hi


def _query_tile_range(k_start, q_n, k_n, block_q: int, block_k: int, st: _Static):
    """Query tiles ``[lo, hi)`` that see any key of the tile ``[k_start, k_start+block_k)``."""
    lo = lax.div(k_start, block_q) if st.causal else jnp.int32(0)
    hi = _cdiv(q_n, block_q)
    if st.window is not None:
        # Row i sees key j (non-global) iff i - j < window: i < k_start + block_k - 1 + window.
        hi_local = jnp.minimum(hi, _cdiv(k_start + (block_k - 1 + st.window), block_q))
        if st.num_global:
            hi_local = jnp.where(k_start < st.num_global, hi, hi_local)
        hi = hi_local
    hi = jnp.where(k_start < k_n, hi, lo)
    return lo, jnp.maximum(hi, lo)


def _unpack(refs, st: _Static, names: tuple[str, ...]):
    """Splits ``refs`` into a dict; decay inputs are present only with time decay."""
    names = tuple(n for n in names if st.has_decay or n not in ("slope", "tq", "tk", "dslope"))
    assert len(refs) == len(names), (len(refs), names)
    return dict(zip(names, refs))


def _lengths(r, st: _Static):
    n = r["len"][0]
    return jnp.minimum(n, st.q_len), jnp.minimum(n, st.k_len)


# ---------------------------------------------------------------------- forward


_FWD_REFS = ("len", "slope", "tq", "tk", "q", "k", "v", "o", "lse")


def _fwd_kernel(*refs, st: _Static):
    r = _unpack(refs, st, _FWD_REFS)
    bq, bk = st.tuning.block_q, st.tuning.block_k
    q_start = pl.program_id(0) * bq
    q_n, k_n = _lengths(r, st)
    q = r["q"][...]
    rows = q_start + jnp.arange(bq, dtype=jnp.int32)
    tq = r["tq"][...] if st.has_decay else None
    slope = r["slope"][0] if st.has_decay else None
    head_dim = q.shape[-1]

    def step(kt, carry):
        m, l, acc = carry
        k_start = pl.multiple_of(kt * bk, bk)
        window = pl.ds(k_start, bk)
        k = r["k"][window, :]
        v = r["v"][window, :]
        tk = r["tk"][window] if st.has_decay else None
        cols = k_start + jnp.arange(bk, dtype=jnp.int32)
        s, mask, _ = _logits(q, k, rows, cols, q_n, k_n, tq, tk, slope, st)
        s = jnp.where(mask, s, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(s, axis=1))
        m_ref = jnp.where(m_new == -jnp.inf, 0.0, m_new)  # all-masked so far: no shift
        p = jnp.exp(s - m_ref[:, None])
        alpha = jnp.exp(m - m_ref)
        l = alpha * l + jnp.sum(p, axis=1)
        acc = acc * alpha[:, None] + _matmul(p.astype(v.dtype), v, (1, 0))
        return m_new, l, acc

    carry = (
        jnp.full((bq,), -jnp.inf, jnp.float32),
        jnp.zeros((bq,), jnp.float32),
        jnp.zeros((bq, head_dim), jnp.float32),
    )
    global_hi, lo, hi = _key_tile_ranges(q_start, q_n, k_n, bq, bk, st)
    if st.window is not None and st.num_global:
        carry = lax.fori_loop(0, global_hi, step, carry)
    m, l, acc = lax.fori_loop(lo, hi, step, carry)
    seen = l > 0.0
    out = acc / jnp.where(seen, l, 1.0)[:, None]
    r["o"][...] = out.astype(r["o"].dtype)
    # +inf for rows with no visible key: exp(s - lse) is then 0 in the backward pass.
    r["lse"][...] = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), jnp.inf)


# --------------------------------------------------------------------- backward


def _delta_kernel(o_ref, do_ref, delta_ref):
    o = o_ref[...].astype(jnp.float32)
    do = do_ref[...].astype(jnp.float32)
    delta_ref[...] = jnp.sum(o * do, axis=1)


_DKV_REFS = ("len", "slope", "tq", "tk", "q", "k", "v", "do", "lse", "delta", "dk", "dv", "dslope")


def _dkv_kernel(*refs, st: _Static):
    r = _unpack(refs, st, _DKV_REFS)
    bq, bk = st.tuning.block_q_bwd, st.tuning.block_k_bwd
    k_start = pl.program_id(0) * bk
    q_n, k_n = _lengths(r, st)
    k = r["k"][...]
    v = r["v"][...]
    cols = k_start + jnp.arange(bk, dtype=jnp.int32)
    tk = r["tk"][...] if st.has_decay else None
    slope = r["slope"][0] if st.has_decay else None
    head_dim = k.shape[-1]

    def step(qt, carry):
        dk, dv, dslope = carry
        q_start = pl.multiple_of(qt * bq, bq)
        window = pl.ds(q_start, bq)
        q = r["q"][window, :]
        do = r["do"][window, :]
        lse = r["lse"][window]
        delta = r["delta"][window]
        tq = r["tq"][window] if st.has_decay else None
        rows = q_start + jnp.arange(bq, dtype=jnp.int32)
        s, mask, g = _logits(q, k, rows, cols, q_n, k_n, tq, tk, slope, st)
        p = jnp.where(mask, jnp.exp(s - lse[:, None]), 0.0)  # [bq, bk]
        dv = dv + _matmul(p.astype(do.dtype), do, (0, 0))
        dp = _matmul(do, v, (1, 1))
        ds = p * (dp - delta[:, None])
        dk = dk + _matmul(ds.astype(q.dtype), q, (0, 0))
        if st.has_decay:
            dslope = dslope - jnp.sum(ds * g, axis=0)
        return dk, dv, dslope

    carry = (
        jnp.zeros((bk, head_dim), jnp.float32),
        jnp.zeros((bk, head_dim), jnp.float32),
        jnp.zeros((bk,), jnp.float32),
    )
    lo, hi = _query_tile_range(k_start, q_n, k_n, bq, bk, st)
    dk, dv, dslope = lax.fori_loop(lo, hi, step, carry)
    r["dk"][...] = (dk * st.scale).astype(r["dk"].dtype)
    r["dv"][...] = dv.astype(r["dv"].dtype)
    if st.has_decay:
        r["dslope"][...] = dslope


_DQ_REFS = ("len", "slope", "tq", "tk", "q", "k", "v", "do", "lse", "delta", "dq")


def _dq_kernel(*refs, st: _Static):
    r = _unpack(refs, st, _DQ_REFS)
    bq, bk = st.tuning.block_q_bwd, st.tuning.block_k_bwd
    q_start = pl.program_id(0) * bq
    q_n, k_n = _lengths(r, st)
    q = r["q"][...]
    do = r["do"][...]
    lse = r["lse"][...]
    delta = r["delta"][...]
    rows = q_start + jnp.arange(bq, dtype=jnp.int32)
    tq = r["tq"][...] if st.has_decay else None
    slope = r["slope"][0] if st.has_decay else None

    def step(kt, dq):
        k_start = pl.multiple_of(kt * bk, bk)
        window = pl.ds(k_start, bk)
        k = r["k"][window, :]
        v = r["v"][window, :]
        tk = r["tk"][window] if st.has_decay else None
        cols = k_start + jnp.arange(bk, dtype=jnp.int32)
        s, mask, _ = _logits(q, k, rows, cols, q_n, k_n, tq, tk, slope, st)
        p = jnp.where(mask, jnp.exp(s - lse[:, None]), 0.0)
        dp = _matmul(do, v, (1, 1))
        ds = p * (dp - delta[:, None])
        return dq + _matmul(ds.astype(k.dtype), k, (1, 0))

    dq = jnp.zeros(q.shape, jnp.float32)
    global_hi, lo, hi = _key_tile_ranges(q_start, q_n, k_n, bq, bk, st)
    if st.window is not None and st.num_global:
        dq = lax.fori_loop(0, global_hi, step, dq)
    dq = lax.fori_loop(lo, hi, step, dq)
    r["dq"][...] = (dq * st.scale).astype(r["dq"].dtype)


# ------------------------------------------------------------------ pallas calls


def _row_tile(block: int, d: int):
    """BlockSpec of a ``[batch, length, heads, head_dim]`` row tile (grid: tile, b, h)."""
    return pl.BlockSpec((None, block, None, d), lambda t, b, h: (b, t, h, 0))


def _whole_seq(length: int, d: int):
    return pl.BlockSpec((None, length, None, d), lambda t, b, h: (b, 0, h, 0))


def _scalar_per(axis: str):
    if axis == "b":
        return pl.BlockSpec((1,), lambda t, b, h: (b,))
    return pl.BlockSpec((1,), lambda t, b, h: (h,))


def _time_tile(block: int):
    return pl.BlockSpec((None, block), lambda t, b, h: (b, t))


def _time_whole(length: int):
    return pl.BlockSpec((None, length), lambda t, b, h: (b, 0))


def _stat_tile(block: int):
    """Per-row statistics ``[batch, heads, length]`` (lse, delta, slope partials)."""
    return pl.BlockSpec((None, None, block), lambda t, b, h: (b, h, t))


def _stat_whole(length: int):
    return pl.BlockSpec((None, None, length), lambda t, b, h: (b, h, 0))


def _decay_inputs(st: _Static, lengths, slopes, tq, tk, tq_spec, tk_spec):
    args, specs = [lengths], [_scalar_per("b")]
    if st.has_decay:
        args += [slopes, tq, tk]
        specs += [_scalar_per("h"), tq_spec, tk_spec]
    return args, specs


def _forward(q, k, v, lengths, tq, tk, slopes, st: _Static):
    """Padded forward: returns ``o [b, lq_p, h, d]`` and ``lse f32[b, h, lq_p]``."""
    b, lq_p, h, d = q.shape
    lk_p = k.shape[1]
    t = st.tuning
    args, specs = _decay_inputs(
        st, lengths, slopes, tq, tk, _time_tile(t.block_q), _time_whole(lk_p)
    )
    return pl.pallas_call(
        functools.partial(_fwd_kernel, st=st),
        grid=(lq_p // t.block_q, b, h),
        in_specs=specs + [_row_tile(t.block_q, d), _whole_seq(lk_p, d), _whole_seq(lk_p, d)],
        out_specs=[_row_tile(t.block_q, d), _stat_tile(t.block_q)],
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((b, h, lq_p), jnp.float32),
        ],
        compiler_params=plgpu.CompilerParams(num_warps=t.num_warps, num_stages=t.num_stages),
        interpret=st.interpret,
        name="attnlab_flash_fwd",
    )(*args, q, k, v)


def _backward(q, k, v, lengths, tq, tk, slopes, o, lse, do, st: _Static):
    """Padded backward: returns ``dq, dk, dv`` (input dtype) and ``dslopes f32[h]``."""
    b, lq_p, h, d = q.shape
    lk_p = k.shape[1]
    t = st.tuning
    bq, bk = t.block_q_bwd, t.block_k_bwd
    params = plgpu.CompilerParams(num_warps=t.num_warps_bwd, num_stages=t.num_stages_bwd)

    delta = pl.pallas_call(
        _delta_kernel,
        grid=(lq_p // bq, b, h),
        in_specs=[_row_tile(bq, d), _row_tile(bq, d)],
        out_specs=_stat_tile(bq),
        out_shape=jax.ShapeDtypeStruct((b, h, lq_p), jnp.float32),
        compiler_params=plgpu.CompilerParams(num_warps=4, num_stages=1),
        interpret=st.interpret,
        name="attnlab_flash_bwd_delta",
    )(o, do)

    args, specs = _decay_inputs(st, lengths, slopes, tq, tk, _time_whole(lq_p), _time_tile(bk))
    out_specs = [_row_tile(bk, d), _row_tile(bk, d)]
    out_shape = [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)]
    if st.has_decay:
        out_specs.append(_stat_tile(bk))
        out_shape.append(jax.ShapeDtypeStruct((b, h, lk_p), jnp.float32))
    dkv = pl.pallas_call(
        functools.partial(_dkv_kernel, st=st),
        grid=(lk_p // bk, b, h),
        in_specs=specs
        + [
            _whole_seq(lq_p, d),
            _row_tile(bk, d),
            _row_tile(bk, d),
            _whole_seq(lq_p, d),
            _stat_whole(lq_p),
            _stat_whole(lq_p),
        ],
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=params,
        interpret=st.interpret,
        name="attnlab_flash_bwd_dkv",
    )(*args, q, k, v, do, lse, delta)
    dk, dv = dkv[0], dkv[1]
    dslopes = jnp.sum(dkv[2], axis=(0, 2)) if st.has_decay else None

    args, specs = _decay_inputs(st, lengths, slopes, tq, tk, _time_tile(bq), _time_whole(lk_p))
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, st=st),
        grid=(lq_p // bq, b, h),
        in_specs=specs
        + [
            _row_tile(bq, d),
            _whole_seq(lk_p, d),
            _whole_seq(lk_p, d),
            _row_tile(bq, d),
            _stat_tile(bq),
            _stat_tile(bq),
        ],
        out_specs=_row_tile(bq, d),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=params,
        interpret=st.interpret,
        name="attnlab_flash_bwd_dq",
    )(*args, q, k, v, do, lse, delta)
    return dq, dk, dv, dslopes


# -------------------------------------------------------------------- custom vjp


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _flash(q, k, v, lengths, tq, tk, slopes, st: _Static):
    return _forward(q, k, v, lengths, tq, tk, slopes, st)[0]


def _flash_fwd(q, k, v, lengths, tq, tk, slopes, st: _Static):
    o, lse = _forward(q, k, v, lengths, tq, tk, slopes, st)
    return o, (q, k, v, lengths, tq, tk, slopes, o, lse)


def _flash_bwd(st: _Static, res, do):
    q, k, v, lengths, tq, tk, slopes, o, lse = res
    dq, dk, dv, dslopes = _backward(q, k, v, lengths, tq, tk, slopes, o, lse, do, st)
    zero_t = None if tq is None else (jnp.zeros_like(tq), jnp.zeros_like(tk))
    return (
        dq,
        dk,
        dv,
        None,  # lengths: integer, no cotangent
        None if zero_t is None else zero_t[0],
        None if zero_t is None else zero_t[1],
        dslopes,
    )


_flash.defvjp(_flash_fwd, _flash_bwd)


# ------------------------------------------------------------------ public API


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _shape_reason(q, k, v, spec: AttentionSpec) -> str | None:
    """Why these operands cannot go through the kernel on any platform (or None)."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        return (
            "flash_triton: q, k, v must be [batch, length, heads, head_dim]; got ranks "
            f"{q.ndim}, {k.ndim}, {v.ndim}."
        )
    b, lq, h, d = q.shape
    if k.shape != v.shape or k.shape[0] != b or k.shape[2:] != (h, d):
        return (
            f"flash_triton: k {k.shape} and v {v.shape} must match q {q.shape} in batch, "
            "heads and head_dim (and each other); grouped/multi-query heads are not supported."
        )
    dtypes = {jnp.dtype(x.dtype) for x in (q, k, v)}
    if len(dtypes) != 1:
        return f"flash_triton: q, k, v must share one dtype; got {sorted(map(str, dtypes))}."
    (dtype,) = dtypes
    if dtype not in SUPPORTED_DTYPES:
        return f"flash_triton: dtype {dtype} not supported; use float32, bfloat16 or float16."
    if d < 1 or d > MAX_HEAD_DIM:
        return (
            f"flash_triton: head_dim must be in [1, {MAX_HEAD_DIM}] (one tile holds a whole "
            f"head); got {d}. Use the xla_chunked implementation."
        )
    if min(lq, k.shape[1]) < 1:
        return "flash_triton: empty sequence dimension."
    if spec.lengths is not None and tuple(spec.lengths.shape) != (b,):
        shape = tuple(spec.lengths.shape)
        return f"flash_triton: spec.lengths must be int[{b}], got shape {shape}."
    if spec.has_decay:
        need = max(lq, k.shape[1])
        ts = spec.timestamps
        if ts.ndim != 2 or ts.shape[0] != b or ts.shape[1] < need:
            return (
                f"flash_triton: spec.timestamps must be [batch={b}, length>={need}], "
                f"got {tuple(ts.shape)}."
            )
        if tuple(spec.decay_slopes.shape) != (h,):
            return (
                f"flash_triton: spec.decay_slopes must be [heads={h}], got "
                f"{tuple(spec.decay_slopes.shape)}."
            )
    return None


def unsupported_reason(q, k, v, spec: AttentionSpec, *, platform: str) -> str | None:
    """Why the compiled kernel cannot run these operands on ``platform``, or None.

    Args:
      q: ``[batch, q_len, heads, head_dim]`` array (or ShapeDtypeStruct).
      k: ``[batch, k_len, heads, head_dim]``.
      v: ``[batch, k_len, heads, head_dim]``.
      spec: the attention spec of the call.
      platform: backend name, e.g. ``jax.default_backend()`` (``"cpu"``, ``"gpu"``,
        ``"cuda"``, ``"rocm"``, ``"tpu"``).

    Returns:
      None if :func:`flash_attention` runs compiled on that platform, else a
      human-readable reason suitable for the dispatcher's log.
    """
    platform = platform.lower()
    if platform not in GPU_PLATFORMS:
        return (
            f"flash_triton: needs a CUDA GPU (Pallas Triton backend); on {platform!r} it can "
            "only run with interpret=True, which is for tests only."
        )
    return _shape_reason(q, k, v, spec)


def flash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    spec: AttentionSpec,
    tuning: FlashTuning | None = None,
    interpret: bool | None = None,
) -> jax.Array:
    """Flash attention with the full :class:`AttentionSpec` semantics.

    Differentiable in ``q``, ``k``, ``v`` and ``spec.decay_slopes`` (custom VJP);
    ``spec.lengths`` and ``spec.timestamps`` get zero cotangents.

    Args:
      q: ``[batch, q_len, heads, head_dim]`` (fp32, bf16 or fp16).
      k: ``[batch, k_len, heads, head_dim]``, same dtype.
      v: ``[batch, k_len, heads, head_dim]``, same dtype.
      spec: what to attend to (see :mod:`attnlab.ops.spec`).
      tuning: tile sizes and launch options; None means :func:`default_tuning`.
        Tiles larger than the rounded lengths are shrunk.
      interpret: run the kernels in Pallas interpret mode; None means interpret
        unless the default backend is a GPU.

    Returns:
      ``[batch, q_len, heads, head_dim]`` in ``q.dtype``.

    Raises:
      ValueError: if the operands cannot go through this kernel (the message says
        why; see :func:`unsupported_reason`).
    """
    reason = _shape_reason(q, k, v, spec)
    if reason is not None:
        raise ValueError(reason)
    if interpret is None:
        interpret = jax.default_backend() not in GPU_PLATFORMS
    b, lq, h, d = q.shape
    lk = k.shape[1]
    # Triton tiles need power-of-two sizes >= 16: zero-pad the head dimension (zeros
    # change no dot product; the extra output columns are dropped).
    d_p = max(MIN_BLOCK, next_pow2(d))
    if tuning is None:
        tuning = default_tuning(lq, lk, d_p, q.dtype)
    else:
        tuning = tuning.fitted(lq, lk)
    st = _Static(
        causal=bool(spec.causal),
        window=spec.window,
        num_global=int(spec.num_global) if spec.window is not None else 0,
        decay_fn=spec.decay_fn if spec.has_decay else None,
        time_unit=float(spec.time_unit),
        scale=float(spec.softmax_scale(d)),
        q_len=lq,
        k_len=lk,
        tuning=tuning,
        interpret=bool(interpret),
    )
    lq_p = _round_up(lq, max(tuning.block_q, tuning.block_q_bwd))
    lk_p = _round_up(lk, max(tuning.block_k, tuning.block_k_bwd))

    def pad_len(x, length):
        return jnp.pad(x, ((0, 0), (0, length - x.shape[1])))

    if spec.lengths is None:
        lengths = jnp.full((b,), max(lq, lk), jnp.int32)
    else:
        lengths = jnp.clip(lax.stop_gradient(spec.lengths).astype(jnp.int32), 0, max(lq, lk))
    tq = tk = slopes = None
    if spec.has_decay:
        ts = lax.stop_gradient(spec.timestamps).astype(jnp.float32)
        tq = pad_len(ts[:, :lq], lq_p)
        tk = pad_len(ts[:, :lk], lk_p)
        slopes = spec.decay_slopes.astype(jnp.float32)

    def pad_qkv(x, length):
        return jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, d_p - d)))

    out = _flash(pad_qkv(q, lq_p), pad_qkv(k, lk_p), pad_qkv(v, lk_p), lengths, tq, tk, slopes, st)
    return out[:, :lq, :, :d]
