"""The sequence model every attention family shares: encoder -> blocks -> heads."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attnlab.models.encoder import EventEncoder, TransformerBlock
import enum

from attnlab.models.heads import (
    CatalogueHead, ChurnHead, CopyHead, gather_positions, last_state, mixture_log_prob,
)


class ItemHead(enum.Enum):
    """How items are scored: the catalogue softmax alone, or mixed with a history pointer."""

    SOFTMAX = "softmax"
    COPY = "copy"


class SequenceModel(nnx.Module):
    """Event encoder + ``n_layers`` transformer blocks + catalogue and churn heads.

    Args:
      n_items: catalogue size (vocabulary without the 0 slot).
      d_model, n_layers, n_heads, max_len, dropout: architecture.
      attention_factory: ``(d_model, rngs) -> nnx.Module`` building one attention layer.
    """

    def __init__(
        self,
        *,
        n_items: int,
        d_model: int,
        n_layers: int,
        max_len: int,
        dropout: float,
        attention_factory,
        item_head: ItemHead = ItemHead.SOFTMAX,
        rngs: nnx.Rngs,
    ):
        self.n_items = n_items
        self.max_len = max_len
        self.encoder = EventEncoder(
            n_items=n_items, d_model=d_model, max_len=max_len, dropout=dropout, rngs=rngs
        )
        self.blocks = nnx.List(
            [
                TransformerBlock(d_model, attention_factory(d_model, rngs), dropout=dropout, rngs=rngs)
                for _ in range(n_layers)
            ]
        )
        self.final_norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.catalogue = CatalogueHead(n_items, rngs=rngs)
        self.churn = ChurnHead(d_model, rngs=rngs)
        self.item_head = ItemHead(item_head)
        self.copy = CopyHead(d_model, rngs=rngs) if self.item_head is ItemHead.COPY else None

    def hidden(self, inputs: dict[str, jax.Array], *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Hidden states ``float32[batch, length, d_model]`` (zeros at padding)."""
        context = {"lengths": inputs["lengths"], "time": inputs["time"]}
        x = self.encoder(inputs, rngs=rngs)
        for block in self.blocks:
            x = block(x, context, rngs=rngs)
        return self.final_norm(x)

    def catalogue_logits(self, h: jax.Array) -> jax.Array:
        """``[..., d] -> [..., n_items + 1]`` full-catalogue scores (index 0 masked)."""
        return self.catalogue(h, self.encoder.item.embedding[...])

    def target_log_prob(self, h, inputs, index, targets) -> jax.Array:
        """``log P(targets[b, p] | history up to position index[b, p])`` -> ``[b, P]``.

        Args:
          h: hidden states ``[b, L, d]``.
          inputs: the batch (``item``, ``lengths`` used by the copy head).
          index: ``int32[b, P]`` positions; targets: ``int32[b, P]`` items.
        """
        hq = gather_positions(h, index)
        logits = self.catalogue_logits(hq)
        gen = jax.nn.log_softmax(logits, axis=-1)
        gen_t = jnp.take_along_axis(gen, targets[..., None], axis=-1)[..., 0]
        if self.copy is None:
            return gen_t
        w, log_g, log_1mg = self.copy.pointer(hq, h, index, inputs["lengths"], inputs["item"])
        copy_t = jnp.sum(w * (inputs["item"][:, None, :] == targets[..., None]), axis=-1)
        return mixture_log_prob(log_g, log_1mg, copy_t, gen_t)

    def next_item_scores(self, inputs: dict[str, jax.Array]) -> jax.Array:
        """Catalogue scores from the latest event: ``float32[batch, n_items + 1]``.

        Softmax head: logits. Copy head: ``log P(item)`` of the mixture.
        """
        h = self.hidden(inputs)
        last = jnp.clip(inputs["lengths"] - 1, 0, h.shape[1] - 1)[:, None]
        hq = gather_positions(h, last)  # [b, 1, d]
        logits = self.catalogue_logits(hq)
        if self.copy is None:
            return logits[:, 0]
        w, log_g, log_1mg = self.copy.pointer(hq, h, last, inputs["lengths"], inputs["item"])
        b, n = logits.shape[0], logits.shape[-1]
        copy = jnp.zeros((b, n)).at[jnp.arange(b)[:, None], inputs["item"]].add(w[:, 0])
        gen = jax.nn.softmax(logits[:, 0], axis=-1)
        p = jnp.exp(log_g) * copy + jnp.exp(log_1mg) * gen
        return jnp.log(jnp.maximum(p, 1e-30)).at[:, 0].set(-1e30)

    def churn_logit(self, inputs: dict[str, jax.Array], *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """``float32[batch]`` churn logit from the state at the cutoff."""
        h = self.hidden(inputs, rngs=rngs)
        return self.churn(last_state(h, inputs["lengths"]))
