"""Operand checks and the layout the two XLA blockwise paths compute in.

Both ``xla_chunked`` and ``banded`` work on ``[batch, heads, padded length,
head_dim]`` fp32 arrays with ``q`` pre-scaled, lengths clamped to the sequence and
timestamps padded; :func:`prepare` builds that and :func:`finish` undoes it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from attnlab.ops.attention.spec import AttentionSpec


def shape_problem(q, k, v) -> str | None:
    """Why ``q, k, v`` are not ``[batch, length, heads, head_dim]`` operands of one
    call, or None."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        return (f"q, k, v must be [batch, length, heads, head_dim]; got shapes "
                f"{q.shape}, {k.shape}, {v.shape}")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        return f"incompatible shapes q={q.shape}, k={k.shape}, v={v.shape}"
    return None


def self_attention_problem(q, k, v) -> str | None:
    """Why the blockwise XLA paths cannot take these operands, or None."""
    if q.shape[1] != k.shape[1]:
        return f"needs q_len == k_len (self-attention), got {q.shape[1]} and {k.shape[1]}"
    if q.shape[1] == 0:
        return "empty sequence"
    if not jnp.issubdtype(q.dtype, jnp.floating):
        return f"needs floating-point inputs, got {q.dtype}"
    return None


class Prepared(NamedTuple):
    """Operands in the blockwise layout.

    Attributes:
      q, k, v: ``float32[batch, heads, padded, head_dim]``, ``q`` times the scale.
      slopes: ``float32[heads]`` decay slopes (differentiable), or None.
      lengths: ``int32[batch]`` valid lengths (no gradient), or None when every
        position is valid and nothing was padded.
      timestamps: ``float32[batch, padded]`` (no gradient), or None.
    """

    q: jax.Array
    k: jax.Array
    v: jax.Array
    slopes: jax.Array | None
    lengths: jax.Array | None
    timestamps: jax.Array | None


def prepare(q, k, v, spec: AttentionSpec, *, scale: float, padded: int) -> Prepared:
    """``[batch, length, heads, head_dim]`` operands -> :class:`Prepared`."""
    b, n = q.shape[:2]
    pad = padded - n

    def blockwise(x):  # [b, n, h, d] -> [b, h, padded, d] fp32
        x = jnp.swapaxes(x.astype(jnp.float32), 1, 2)
        return jnp.pad(x, ((0, 0), (0, 0), (0, pad), (0, 0))) if pad else x

    lengths = spec.lengths
    if lengths is not None:
        lengths = jnp.minimum(jax.lax.stop_gradient(lengths).astype(jnp.int32), n)
    elif pad:
        lengths = jnp.full((b,), n, jnp.int32)
    t = slopes = None
    if spec.has_decay:
        t = jax.lax.stop_gradient(spec.timestamps).astype(jnp.float32)
        t = jnp.pad(t, ((0, 0), (0, pad))) if pad else t
        slopes = spec.decay_slopes.astype(jnp.float32)
    return Prepared(blockwise(q) * scale, blockwise(k), blockwise(v), slopes, lengths, t)


def finish(out: jax.Array, length: int, dtype) -> jax.Array:
    """``[batch, heads, padded, head_dim]`` -> ``[batch, length, heads, head_dim]``."""
    return jnp.swapaxes(out[:, :, :length], 1, 2).astype(dtype)


def zero_padded_rows(x: jax.Array, lengths: jax.Array | None) -> jax.Array:
    """``x [batch, heads, n, head_dim]`` with rows at or past ``lengths[b]`` set to 0."""
    if lengths is None:
        return x
    valid = jnp.arange(x.shape[2])[None, :] < lengths[:, None]  # [b, n]
    return jnp.where(valid[:, None, :, None], x, 0.0)
