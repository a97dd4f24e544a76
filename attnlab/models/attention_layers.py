"""Multi-head self-attention layers: one base, one subclass per attention family.

A family only decides the :class:`attnlab.ops.AttentionSpec` (and owns any parameters
that spec needs, e.g. learnable decay slopes); projections and the call into the
shared op :func:`attnlab.ops.attention` are common.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attnlab.ops import AttentionSpec, attention


class SelfAttention(nnx.Module):
    """Causal multi-head self-attention over right-padded histories.

    ``context`` carries ``lengths int32[b]`` and ``time float32[b, l]`` (days).
    """

    def __init__(self, d_model: int, *, n_heads: int, impl: str | None = None, rngs: nnx.Rngs):
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}.")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.impl = impl
        self.qkv = nnx.Linear(d_model, 3 * d_model, rngs=rngs)
        self.out = nnx.Linear(d_model, d_model, rngs=rngs)

    def spec(self, context: dict[str, jax.Array]) -> AttentionSpec:
        return AttentionSpec(causal=True, lengths=context["lengths"])

    def __call__(self, x: jax.Array, context: dict[str, jax.Array]) -> jax.Array:
        b, l, d = x.shape
        qkv = self.qkv(x).reshape(b, l, 3, self.n_heads, self.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        o = attention(q, k, v, spec=self.spec(context), impl=self.impl)
        return self.out(o.reshape(b, l, d))


class VanillaAttention(SelfAttention):
    """SASRec-style causal softmax attention (Kang & McAuley, 2018)."""
