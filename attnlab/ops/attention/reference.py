"""Reference attention: plain einsum, materialising, fp32 accumulation.

Always supported, on every backend, for every :class:`AttentionSpec`. It is the
oracle every other implementation is tested against, and the path explainability
uses to recover attention weights for one customer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.ops.attention.layout import shape_problem
from attnlab.ops.attention.spec import AttentionSpec
from attnlab.ops.attention.visibility import decay_penalty, visible


def why_unsupported(q, k, v, spec: AttentionSpec, *, platform: str | None = None) -> str | None:
    """Why :func:`reference_attention` cannot run these operands (only malformed
    shapes), or None."""
    del spec, platform
    return shape_problem(q, k, v)


def reference_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    spec: AttentionSpec,
    return_weights: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Naive attention.

    Args:
      q: ``[batch, q_len, heads, head_dim]``.
      k: ``[batch, k_len, heads, head_dim]``.
      v: ``[batch, k_len, heads, head_dim]``.
      spec: what to attend to (see :mod:`attnlab.ops.attention.spec`).
      return_weights: also return the ``float32[batch, heads, q_len, k_len]`` weights.

    Returns:
      ``[batch, q_len, heads, head_dim]`` in ``q.dtype`` (and the weights if asked).
    """
    lq, d = q.shape[1], q.shape[3]
    lk = k.shape[1]
    static = spec.static(d)
    hi = jax.lax.Precision.HIGHEST
    s = jnp.einsum(
        "bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32), precision=hi
    ) * static.scale
    if spec.has_decay:
        t = jax.lax.stop_gradient(spec.timestamps.astype(jnp.float32))
        g = decay_penalty(t[:, :lq], t[:, :lk], static)  # [b, q, k]
        s = s - spec.decay_slopes.astype(jnp.float32)[None, :, None, None] * g[:, None]
    n = None if spec.lengths is None else spec.lengths.astype(jnp.int32)[:, None, None, None]
    mask = visible(jnp.arange(lq)[:, None], jnp.arange(lk)[None, :], static, q_len=n, k_len=n)
    if mask is None:
        mask = jnp.ones((lq, lk), bool)
    s = jnp.where(mask, s, -jnp.inf)
    row_max = jnp.max(s, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    p = jnp.where(mask, jnp.exp(s - row_max), 0.0)
    denom = jnp.sum(p, axis=-1, keepdims=True)
    w = p / jnp.where(denom > 0, denom, 1.0)  # rows with no visible key: all zeros
    out = jnp.einsum("bhqk,bkhd->bqhd", w, v.astype(jnp.float32), precision=hi)
    out = out.astype(q.dtype)
    return (out, w) if return_weights else out
