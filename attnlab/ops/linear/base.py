"""Feature map, recurrent state and masks shared by the forms of linear attention."""

from __future__ import annotations

import dataclasses
import enum

import jax
import jax.numpy as jnp


class FeatureMap(enum.Enum):
    """Positive feature map ``phi`` applied to queries and keys."""

    ELU_PLUS_ONE = "elu1"  # phi(x) = elu(x) + 1 > 0 (Katharopoulos et al., 2020)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.elu(x) + 1.0


@dataclasses.dataclass(frozen=True)
class LinearState:
    """Per-customer recurrent state of one linear-attention layer.

    Attributes:
      kv: ``float32[batch, heads, d_k, d_v]`` decayed sum of ``phi(k) v^T``.
      k_sum: ``float32[batch, heads, d_k]`` decayed sum of ``phi(k)`` (normaliser).
    """

    kv: jax.Array
    k_sum: jax.Array

    @classmethod
    def zeros(cls, batch: int, heads: int, d_k: int, d_v: int) -> "LinearState":
        return cls(kv=jnp.zeros((batch, heads, d_k, d_v), jnp.float32),
                   k_sum=jnp.zeros((batch, heads, d_k), jnp.float32))


jax.tree_util.register_dataclass(LinearState, data_fields=["kv", "k_sum"], meta_fields=[])


def log_gamma(log_decay: jax.Array | None, heads: int) -> jax.Array:
    """``float32[heads]`` per-head ``log gamma_h`` (0: no forgetting)."""
    if log_decay is None:
        return jnp.zeros((heads,), jnp.float32)
    return log_decay.astype(jnp.float32)


def valid_positions(lengths: jax.Array | None, batch: int, length: int) -> jax.Array:
    """``bool[batch, length]``: positions inside the valid (right-padded) length."""
    if lengths is None:
        return jnp.ones((batch, length), bool)
    return jnp.arange(length)[None, :] < lengths.astype(jnp.int32)[:, None]
