"""The sequence model every attention family shares: encoder -> blocks -> heads."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attnlab.models.encoder import EventEncoder, TransformerBlock
from attnlab.models.heads import CatalogueHead, ChurnHead, last_state


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

    def next_item_scores(self, inputs: dict[str, jax.Array]) -> jax.Array:
        """Catalogue scores from the latest event: ``float32[batch, n_items + 1]``."""
        h = self.hidden(inputs)
        return self.catalogue_logits(last_state(h, inputs["lengths"]))

    def churn_logit(self, inputs: dict[str, jax.Array], *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """``float32[batch]`` churn logit from the state at the cutoff."""
        h = self.hidden(inputs, rngs=rngs)
        return self.churn(last_state(h, inputs["lengths"]))
