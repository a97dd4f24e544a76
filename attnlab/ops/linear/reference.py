"""Naive materialising linear attention (the oracle of the tests)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.ops.linear.base import FeatureMap, log_gamma, valid_positions


def linear_attention_reference(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    lengths: jax.Array | None = None,
    log_decay: jax.Array | None = None,
    feature_map: FeatureMap = FeatureMap.ELU_PLUS_ONE,
    eps: float = 1e-6,
) -> jax.Array:
    """Naive O(length^2) materialising reference (tests only). Shapes as above."""
    b, length, h, _ = q.shape
    valid = valid_positions(lengths, b, length)
    fq = feature_map(q.astype(jnp.float32))
    fk = feature_map(k.astype(jnp.float32))
    i = jnp.arange(length)
    steps = jnp.maximum(i[:, None] - i[None, :], 0).astype(jnp.float32)  # i - j (valid = prefix)
    lg = log_gamma(log_decay, h)
    w = jnp.exp(steps[None, :, :] * lg[:, None, None])  # [h, i, j] gamma^(i - j)
    vis = (i[:, None] >= i[None, :])[None] & valid[:, :, None] & valid[:, None, :]  # [b, i, j]
    s = jnp.einsum("bihd,bjhd->bhij", fq, fk) * w[None]
    s = jnp.where(vis[:, None], s, 0.0)
    out = jnp.einsum("bhij,bjhe->bihe", s, v.astype(jnp.float32)) / (jnp.sum(s, -1).transpose(0, 2, 1)[..., None] + eps)
    return jnp.where(valid[..., None, None], out, 0.0).astype(q.dtype)
