"""Reference attention: plain einsum, materialising, fp32 accumulation.

Always supported, on every backend, for every :class:`AttentionSpec`. It is the
oracle every other implementation is tested against, and the path explainability
uses to recover attention weights for one customer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.ops.spec import AttentionSpec, decay_bias, visible_mask


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
      spec: what to attend to (see :mod:`attnlab.ops.spec`).
      return_weights: also return the ``float32[batch, heads, q_len, k_len]`` weights.

    Returns:
      ``[batch, q_len, heads, head_dim]`` in ``q.dtype`` (and the weights if asked).
    """
    b, lq, h, d = q.shape
    lk = k.shape[1]
    hi = jax.lax.Precision.HIGHEST
    s = jnp.einsum(
        "bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32), precision=hi
    ) * spec.softmax_scale(d)
    bias = decay_bias(spec, lq, lk)
    if bias is not None:
        s = s + bias
    mask = visible_mask(spec, b, lq, lk)[:, None, :, :]
    s = jnp.where(mask, s, -jnp.inf)
    row_max = jnp.max(s, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    p = jnp.where(mask, jnp.exp(s - row_max), 0.0)
    denom = jnp.sum(p, axis=-1, keepdims=True)
    w = p / jnp.where(denom > 0, denom, 1.0)  # rows with no visible key: all zeros
    out = jnp.einsum("bhqk,bkhd->bqhd", w, v.astype(jnp.float32), precision=hi)
    out = out.astype(q.dtype)
    return (out, w) if return_weights else out
