"""Shared event encoder and transformer block for every attention family.

The encoder turns a padded :class:`attnlab.data.batching.Batch` into
``float32[batch, length, d_model]``: item embedding (tied with the next-item output
layer) + event-type embedding + reverse-position embedding (distance from the latest
event, so "most recent" means the same slot for every history length) + calendar
(weekday, hour) + a projection of continuous features (time since previous event,
age at the cutoff, value, quantity). Families differ only in the attention module
plugged into :class:`TransformerBlock`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attnlab.data.schema import EventType

N_EVENT_TYPES = len(EventType)
CONTINUOUS = ("gap", "age", "value", "quantity")


class EventEncoder(nnx.Module):
    """Embeds events. Inputs are ``[batch, length]`` arrays; output ``[batch, length, d]``."""

    def __init__(self, *, n_items: int, d_model: int, max_len: int, dropout: float, rngs: nnx.Rngs):
        self.d_model = d_model
        self.max_len = max_len
        init = nnx.initializers.normal(stddev=0.02)
        self.item = nnx.Embed(n_items + 1, d_model, embedding_init=init, rngs=rngs)
        self.event_type = nnx.Embed(N_EVENT_TYPES, d_model, embedding_init=init, rngs=rngs)
        self.position = nnx.Embed(max_len, d_model, embedding_init=init, rngs=rngs)
        self.weekday = nnx.Embed(7, d_model, embedding_init=init, rngs=rngs)
        self.hour = nnx.Embed(24, d_model, embedding_init=init, rngs=rngs)
        self.continuous = nnx.Linear(len(CONTINUOUS), d_model, rngs=rngs)
        self.norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, inputs: dict[str, jax.Array], *, rngs: nnx.Rngs | None = None) -> jax.Array:
        item = inputs["item"]
        lengths = inputs["lengths"]
        length = item.shape[1]
        if length > self.max_len:
            raise ValueError(f"EventEncoder: batch length {length} > model max_len {self.max_len}.")
        pos = jnp.arange(length)[None, :]
        reverse = jnp.clip(lengths[:, None] - 1 - pos, 0, self.max_len - 1)
        valid = (pos < lengths[:, None])[..., None]
        cont = jnp.stack([inputs[name] for name in CONTINUOUS], axis=-1)
        x = (
            self.item(item)
            + self.event_type(inputs["event_type"])
            + self.position(reverse)
            + self.weekday(inputs["weekday"])
            + self.hour(inputs["hour"])
            + self.continuous(cont)
        )
        x = self.norm(x)
        x = self.dropout(x, rngs=rngs, deterministic=rngs is None)
        return jnp.where(valid, x, 0.0)


class FeedForward(nnx.Module):
    def __init__(self, d_model: int, *, hidden_mult: int, dropout: float, rngs: nnx.Rngs):
        self.up = nnx.Linear(d_model, hidden_mult * d_model, rngs=rngs)
        self.down = nnx.Linear(hidden_mult * d_model, d_model, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x, *, rngs=None):
        h = jax.nn.gelu(self.up(x))
        return self.dropout(self.down(h), rngs=rngs, deterministic=rngs is None)


class TransformerBlock(nnx.Module):
    """Pre-LayerNorm block: ``x + attn(LN(x))``, then ``x + FFN(LN(x))``.

    Args:
      attention: a module mapping ``(x [b, l, d], context)`` to ``[b, l, d]`` (a family
        from :mod:`attnlab.models`).
    """

    def __init__(self, d_model: int, attention: nnx.Module, *, dropout: float, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(d_model, rngs=rngs)
        self.attention = attention
        self.norm2 = nnx.LayerNorm(d_model, rngs=rngs)
        self.ffn = FeedForward(d_model, hidden_mult=4, dropout=dropout, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x, context: dict[str, jax.Array], *, rngs=None):
        a = self.attention(self.norm1(x), context)
        x = x + self.dropout(a, rngs=rngs, deterministic=rngs is None)
        return x + self.ffn(self.norm2(x), rngs=rngs)
