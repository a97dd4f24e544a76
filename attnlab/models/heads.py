"""Task heads on top of the encoder's hidden states.

* next_item: full-catalogue logits, tied to the item embedding (softmax CE).
* next_basket: the same catalogue logits, trained multi-label.
* churn: a logistic output from the state at the cutoff (last valid position).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx


def last_state(h: jax.Array, lengths: jax.Array) -> jax.Array:
    """``h[b, lengths[b] - 1]`` -> ``[batch, d]`` (zeros for empty histories)."""
    idx = jnp.clip(lengths - 1, 0, h.shape[1] - 1)
    out = jnp.take_along_axis(h, idx[:, None, None], axis=1)[:, 0]
    return jnp.where((lengths > 0)[:, None], out, 0.0)


class CatalogueHead(nnx.Module):
    """Scores every item: ``h @ E^T + b`` with ``E`` the (shared) item embedding."""

    def __init__(self, n_items: int, *, rngs: nnx.Rngs):
        self.bias = nnx.Param(jnp.zeros((n_items + 1,)))

    def __call__(self, h: jax.Array, item_embedding: jax.Array) -> jax.Array:
        logits = h @ item_embedding.T + self.bias[...]
        return logits.at[..., 0].set(-1e9)  # index 0 is "no item", never a prediction


def next_item_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean softmax CE over positions with a target (> 0). logits ``[b, l, V+1]``."""
    mask = targets > 0
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return jnp.sum(jnp.where(mask, ce, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


class ChurnHead(nnx.Module):
    def __init__(self, d_model: int, *, rngs: nnx.Rngs):
        self.proj = nnx.Linear(d_model, 1, rngs=rngs)

    def __call__(self, state: jax.Array) -> jax.Array:
        return self.proj(state)[..., 0]
