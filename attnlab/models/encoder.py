"""Shared event encoder and transformer block for every attention family.

The encoder turns a padded :class:`attnlab.data.batching.Batch` into
``float32[batch, length, d_model]``: item embedding (tied with the next-item output
layer) + event-type embedding + reverse-position embedding (distance from the latest
event, so "most recent" means the same slot for every history length) + calendar
(weekday, hour) + a projection of continuous features (time since previous event,
age at the cutoff, value, quantity). Families differ only in the attention module
plugged into :class:`TransformerBlock` (or, for recurrent baselines such as the LSTM,
in the backbone that replaces the blocks; see :mod:`attnlab.models.backbones`).

Three :class:`EncoderMode` s. ``causal`` (the ranking tasks' default) uses the forward
position in the window (SASRec's) and no age: a position's input never depends on the
events after it, so a trained inner position looks like the test query (the latest
event). ``cutoff_relative`` (churn's default) uses the reverse position and the event's
age at the cutoff: the right view when the query is the known scoring date itself, but
at an inner position of a training window it would say how far the window's end lies
ahead. ``event_local`` drops both (no position embedding, age fed as 0): each event's
embedding depends only on the event itself (and the gap to its predecessor), which is
what a streaming model (linear attention, LSTM) needs to absorb an event into its state
once. Order then comes from the recurrence / causal decay and the gap feature.

Continuous features enter through a projection initialised at the embeddings' scale
(``continuous_std``, 0.02), not at a default fan-in scale that starts them ~100x
louder than the item embedding in the sum before the LayerNorm.

Optional ``gap_buckets``: a learned embedding of the bucketed time gap to the previous
event, added to the input. This is the input-side cousin of TiSASRec's time-interval
attention (Li, Wang & McAuley, 2020), which adds a learned bias per (query, key)
interval bucket inside the attention scores; that pairwise bias would have to be
materialised as ``length x length`` and so cannot go through the fused attention op.
Here only the gap to the *previous* event is embedded, for every family.
"""

from __future__ import annotations

import enum
import math

import jax
import jax.numpy as jnp
from flax import nnx

from attnlab.data.schema import EventType

N_EVENT_TYPES = len(EventType)
CONTINUOUS = ("gap", "age", "value", "quantity")
#: Inputs of one event (each ``[batch]`` in a streaming step, ``[batch, length]`` in a batch).
EVENT_KEYS = ("item", "event_type", "weekday", "hour") + CONTINUOUS
#: Gap buckets span log1p(0 days) .. log1p(GAP_BUCKET_MAX_DAYS days), uniform in log1p.
GAP_BUCKET_MAX_DAYS = 365.0


class EncoderMode(enum.Enum):
    """Which cutoff-dependent features the encoder uses (see the module docstring)."""

    CAUSAL = "causal"  # forward position in the window, no age: nothing after the event
    CUTOFF_RELATIVE = "cutoff_relative"  # reverse position + age at the cutoff
    EVENT_LOCAL = "event_local"  # neither: embeddings are fixed once an event happened


class EventEncoder(nnx.Module):
    """Embeds events. Inputs are ``[batch, length]`` arrays; output ``[batch, length, d]``."""

    def __init__(self, *, n_items: int, d_model: int, max_len: int, dropout: float,
                 mode: EncoderMode = EncoderMode.CUTOFF_RELATIVE, gap_buckets: int = 0,
                 continuous_std: float | None = 0.02, rngs: nnx.Rngs):
        self.d_model = d_model
        self.max_len = max_len
        self.mode = EncoderMode(mode)
        self.gap_buckets = int(gap_buckets)
        init = nnx.initializers.normal(stddev=0.02)
        self.item = nnx.Embed(n_items + 1, d_model, embedding_init=init, rngs=rngs)
        self.event_type = nnx.Embed(N_EVENT_TYPES, d_model, embedding_init=init, rngs=rngs)
        self.position = (nnx.Embed(max_len, d_model, embedding_init=init, rngs=rngs)
                         if self.mode is not EncoderMode.EVENT_LOCAL else None)
        self.weekday = nnx.Embed(7, d_model, embedding_init=init, rngs=rngs)
        self.hour = nnx.Embed(24, d_model, embedding_init=init, rngs=rngs)
        self.continuous = (nnx.Linear(len(CONTINUOUS), d_model, rngs=rngs) if continuous_std is None else
                           nnx.Linear(len(CONTINUOUS), d_model, rngs=rngs,
                                      kernel_init=nnx.initializers.normal(stddev=float(continuous_std))))
        self.gap_embed = (nnx.Embed(self.gap_buckets, d_model, embedding_init=init, rngs=rngs)
                          if self.gap_buckets else None)
        self.norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, inputs: dict[str, jax.Array], *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """``[batch, length]`` inputs (+ ``lengths int32[batch]``) -> ``[batch, length, d]``."""
        item = inputs["item"]
        lengths = inputs["lengths"]
        length = item.shape[1]
        if length > self.max_len:
            raise ValueError(f"EventEncoder: batch length {length} > model max_len {self.max_len}.")
        pos = jnp.arange(length)[None, :]
        reverse = jnp.clip(lengths[:, None] - 1 - pos, 0, self.max_len - 1)
        valid = (pos < lengths[:, None])[..., None]
        x = self._embed(inputs, pos if self.mode is EncoderMode.CAUSAL else reverse)
        x = self.dropout(x, rngs=rngs, deterministic=rngs is None)
        return jnp.where(valid, x, 0.0)

    def embed_event(self, event: dict[str, jax.Array]) -> jax.Array:
        """One new event per row (each input ``[batch]``) -> ``[batch, d]`` (inference).

        Only valid in ``event_local`` mode, where an event's embedding does not depend
        on the cutoff or on later events.
        """
        if self.mode is not EncoderMode.EVENT_LOCAL:
            raise ValueError("EventEncoder.embed_event needs encoder mode 'event_local' (set "
                             "`encoder: event_local` in the model config): in 'cutoff_relative' "
                             "mode past events' embeddings change with every new event.")
        x = self._embed({k: event[k][:, None] for k in EVENT_KEYS}, None)
        return x[:, 0]

    def _embed(self, inputs: dict[str, jax.Array], position: jax.Array | None) -> jax.Array:
        """``position``: the index fed to the position embedding (reverse or forward)."""
        local = self.mode is EncoderMode.EVENT_LOCAL
        no_age = self.mode is not EncoderMode.CUTOFF_RELATIVE
        cont = jnp.stack([jnp.zeros_like(inputs[n]) if (no_age and n == "age") else inputs[n]
                          for n in CONTINUOUS], axis=-1)
        x = (
            self.item(inputs["item"])
            + self.event_type(inputs["event_type"])
            + self.weekday(inputs["weekday"])
            + self.hour(inputs["hour"])
            + self.continuous(cont)
        )
        if not local:
            x = x + self.position(jnp.clip(position, 0, self.max_len - 1))
        if self.gap_embed is not None:
            x = x + self.gap_embed(gap_bucket(inputs["gap"], n_buckets=self.gap_buckets))
        return self.norm(x)


def gap_bucket(gap: jax.Array, *, n_buckets: int) -> jax.Array:
    """Bucket of ``gap = log1p(days since the previous event)``: uniform in log1p-days
    over ``[0, log1p(365)]``, the last bucket open-ended. ``int32``, same shape."""
    top = math.log1p(GAP_BUCKET_MAX_DAYS)
    return jnp.clip(jnp.floor(gap / top * (n_buckets - 1)), 0, n_buckets - 1).astype(jnp.int32)


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

    def init_state(self, batch: int):
        """Streaming state of the attention layer (raises if the family cannot stream)."""
        return self.attention.init_state(batch)

    def step(self, state, x: jax.Array, valid: jax.Array):
        """One event: ``x [b, d]``, ``valid bool[b]`` -> ``(state, [b, d])`` (inference).

        LayerNorm and the FFN are per-position, so the block streams whenever its
        attention layer does.
        """
        state, a = self.attention.step(state, self.norm1(x), valid)
        x = x + a
        return state, x + self.ffn(self.norm2(x))
