"""Flash attention for customer histories as a Pallas kernel on the Triton backend.

The algorithm is FlashAttention (Dao, Fu, Ermon, Rudra and Ré, 2022) in the
work partitioning of FlashAttention-2 (Dao, 2023): each program owns one tile of
query rows, streams key/value tiles through an online softmax with fp32
accumulators, and stores the row logsumexp (``forward``); the backward pass
recomputes the probabilities from that logsumexp, with one kernel per key tile for
dK/dV (looping over query tiles) and one kernel per query tile for dQ (looping over
key tiles), after a small pre-pass computing ``D = rowsum(dO * O)`` (``backward``).

Everything the :class:`~attnlab.ops.attention.AttentionSpec` describes is evaluated
inside the kernels from a few numbers, with the one visibility rule and decay
penalty of :mod:`attnlab.ops.attention.visibility`, never from a materialised mask:

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
``__gpu$xla.gpu.triton`` custom call. Tiles and launch options: ``launch``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from attnlab.kernels.flash_triton.backward import backward, query_tile_range
from attnlab.kernels.flash_triton.forward import forward
from attnlab.kernels.flash_triton.launch import (
    MIN_BLOCK,
    FlashTuning,
    Launch,
    default_tuning,
    next_pow2,
)
from attnlab.ops.attention.spec import AttentionSpec, StaticSpec
from attnlab.ops.attention.visibility import round_up

__all__ = [
    "flash_attention",
    "why_unsupported",
    "FlashTuning",
    "default_tuning",
    "query_tile_range",
    "SUPPORTED_DTYPES",
    "GPU_PLATFORMS",
    "MAX_HEAD_DIM",
]

#: Input dtypes the kernel accepts (accumulation is always fp32).
SUPPORTED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
#: Platform names on which the compiled (non-interpreted) kernel runs.
GPU_PLATFORMS = ("gpu", "cuda")
#: Largest head dimension we allow (register/shared-memory budget of one tile).
MAX_HEAD_DIM = 128


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def _flash(q, k, v, lengths, tq, tk, slopes, spec: StaticSpec, launch: Launch):
    return forward(q, k, v, lengths, tq, tk, slopes, spec, launch)[0]


def _flash_fwd(q, k, v, lengths, tq, tk, slopes, spec, launch):
    o, lse = forward(q, k, v, lengths, tq, tk, slopes, spec, launch)
    return o, (q, k, v, lengths, tq, tk, slopes, o, lse)


def _flash_bwd(spec, launch, res, do):
    q, k, v, lengths, tq, tk, slopes, o, lse = res
    dq, dk, dv, dslopes = backward(q, k, v, lengths, tq, tk, slopes, o, lse, do, spec, launch)
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


def why_unsupported(q, k, v, spec: AttentionSpec, *, platform: str) -> str | None:
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
      spec: what to attend to (see :mod:`attnlab.ops.attention.spec`).
      tuning: tile sizes and launch options; None means :func:`default_tuning`.
        Tiles larger than the rounded lengths are shrunk.
      interpret: run the kernels in Pallas interpret mode; None means interpret
        unless the default backend is a GPU.

    Returns:
      ``[batch, q_len, heads, head_dim]`` in ``q.dtype``.

    Raises:
      ValueError: if the operands cannot go through this kernel (the message says
        why; see :func:`why_unsupported`).
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
    launch = Launch(q_len=lq, k_len=lk, tuning=tuning, interpret=bool(interpret))
    lq_p = round_up(lq, max(tuning.block_q, tuning.block_q_bwd))
    lk_p = round_up(lk, max(tuning.block_k, tuning.block_k_bwd))

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

    out = _flash(pad_qkv(q, lq_p), pad_qkv(k, lk_p), pad_qkv(v, lk_p), lengths, tq, tk, slopes,
                 spec.static(d), launch)
    return out[:, :lq, :, :d]
