"""The sequence model every family shares: encoder -> backbone -> heads.

The backbone is the only part a family chooses (see :mod:`attnlab.models.registry`):
transformer blocks around an attention layer, or a whole recurrent backbone.
Families whose backbone can stream (linear attention, LSTM) also score one new event
per customer in O(1) (:meth:`SequenceModel.init_state`, :meth:`SequenceModel.step`).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from attnlab.models.encoder import EncoderMode, EventEncoder

from attnlab.models.heads import (
    CatalogueHead, ChurnHead, CopyHead, gather_positions, last_state, log_popularity_bias, mixture_log_prob,
    sampled_softmax_log_prob,
)


class ItemHead(enum.Enum):
    """How items are scored: the catalogue softmax alone, or mixed with a history pointer."""

    SOFTMAX = "softmax"
    COPY = "copy"


@dataclasses.dataclass(frozen=True)
class StreamScores:
    """Scores after one streamed event.

    Attributes:
      item_scores: ``float32[batch, n_items + 1]`` catalogue logits (index 0 masked),
        equal to :meth:`SequenceModel.next_item_scores` on the history so far.
      churn_logit: ``float32[batch]``, equal to :meth:`SequenceModel.churn_logit`.
      hidden: ``float32[batch, d_model]`` final hidden state of the new event.
    """

    item_scores: jax.Array
    churn_logit: jax.Array
    hidden: jax.Array


jax.tree_util.register_dataclass(StreamScores, data_fields=["item_scores", "churn_logit", "hidden"],
                                 meta_fields=[])


class SequenceModel(nnx.Module):
    """Event encoder + a family's backbone + catalogue and churn heads.

    Args:
      n_items: catalogue size (vocabulary without the 0 slot).
      d_model, max_len, dropout: architecture.
      backbone_factory: ``rngs -> backbone`` (``(x [b, l, d], context) -> [b, l, d]``,
        see :mod:`attnlab.models.backbones`).
      item_head: softmax or copy.
      encoder_mode: cutoff_relative (default) or event_local (needed for streaming).
      gap_buckets: learned bucketed-gap input embedding (0 = off).
      continuous_std: init scale of the continuous-feature projection (None = flax's
        fan-in default, the v0.1 recipe).
      churn_pool: ``last`` or ``attention`` (:class:`attnlab.models.heads.ChurnHead`).
      history_memory: ``K > 0``: the copy head also points at the K most purchased
        items older than the window (inputs then carry ``mem_*``, see
        :func:`attnlab.data.batching.make_batch`); 0 = off.
    """

    def __init__(
        self,
        *,
        n_items: int,
        d_model: int,
        max_len: int,
        dropout: float,
        backbone_factory: Callable[[nnx.Rngs], nnx.Module],
        item_head: ItemHead = ItemHead.SOFTMAX,
        encoder_mode: EncoderMode = EncoderMode.CUTOFF_RELATIVE,
        gap_buckets: int = 0,
        continuous_std: float | None = 0.02,
        churn_pool: str = "last",
        history_memory: int = 0,
        rngs: nnx.Rngs,
    ):
        self.n_items = n_items
        self.max_len = max_len
        self.encoder = EventEncoder(
            n_items=n_items, d_model=d_model, max_len=max_len, dropout=dropout,
            mode=encoder_mode, gap_buckets=gap_buckets, continuous_std=continuous_std, rngs=rngs,
        )
        self.backbone = backbone_factory(rngs)
        self.final_norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.catalogue = CatalogueHead(n_items, rngs=rngs)
        self.churn = ChurnHead(d_model, pool=churn_pool, rngs=rngs)
        self.item_head = ItemHead(item_head)
        if history_memory and self.item_head is not ItemHead.COPY:
            raise ValueError(
                f"model.history_memory={history_memory} feeds the copy head, but "
                f"model.item_head={self.item_head.value} has none: set model.history_memory=0 "
                "with the softmax head (or model.item_head=copy).")
        self.copy = (CopyHead(d_model, memory=history_memory, rngs=rngs)
                     if self.item_head is ItemHead.COPY else None)
        #: memory slots the inputs must carry (0 = none); the copy head is the only reader
        self.history_memory = int(history_memory)

    def hidden(self, inputs: dict[str, jax.Array], *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Hidden states ``float32[batch, length, d_model]`` (zeros at padding)."""
        context = {"lengths": inputs["lengths"], "time": inputs["time"]}
        x = self.encoder(inputs, rngs=rngs)
        x = self.backbone(x, context, rngs=rngs)
        return self.final_norm(x)

    def init_catalogue_bias(self, counts) -> None:
        """Set the catalogue bias to :func:`attnlab.models.heads.log_popularity_bias`."""
        bias = log_popularity_bias(counts)
        if bias.shape != self.catalogue.bias.shape:
            raise ValueError(f"counts cover {bias.shape[0] - 1} items, the model's catalogue "
                             f"{self.catalogue.bias.shape[0] - 1}.")
        self.catalogue.bias[...] = bias

    def catalogue_logits(self, h: jax.Array) -> jax.Array:
        """``[..., d] -> [..., n_items + 1]`` full-catalogue scores (index 0 masked)."""
        return self.catalogue(h, self.encoder.item.embedding[...])

    def target_log_prob(self, h, inputs, index, targets, *, negatives=None) -> jax.Array:
        """``log P(targets[b, p] | history up to position index[b, p])`` -> ``[b, P]``.

        Args:
          h: hidden states ``[b, L, d]``.
          inputs: the batch (``item``, ``lengths`` used by the copy head).
          index: ``int32[b, P]`` positions; targets: ``int32[b, P]`` items.
          negatives: None (default) for the exact full-catalogue softmax, or
            ``(items int32[N], log_count float32[N])``: negatives shared by the whole
            batch, drawn with replacement from a proposal ``q``, with
            ``log_count = log(N q(item))``. The catalogue softmax is then replaced by
            its sampled estimate (:func:`attnlab.models.heads.sampled_softmax_log_prob`):
            O(N) instead of O(n_items) per position. Training only; scoring
            (:meth:`next_item_scores`) always uses the full catalogue.

        Copy head with negatives: only the catalogue (generator) part is sampled; the
        pointer over the history and the repeat gate stay exact. The pointer costs
        O(history length) per position, not O(n_items), so sampling it would save
        nothing, and it carries the repeat signal the head exists for, which an
        estimate would blur. The mixture ``log(g * copy + (1 - g) * p_gen)`` uses the
        sampled ``p_gen``; it stays a valid probability because the sampled
        generator log-probability is always <= 0.
        """
        hq = gather_positions(h, index)
        if negatives is None:
            logits = self.catalogue_logits(hq)
            gen = jax.nn.log_softmax(logits, axis=-1)
            gen_t = jnp.take_along_axis(gen, targets[..., None], axis=-1)[..., 0]
        else:
            neg_items, neg_log_count = negatives
            emb = self.encoder.item.embedding[...]
            s_t = self.catalogue.target_logits(hq, emb, targets)
            s_n = self.catalogue.shared_logits(hq, emb, neg_items)
            hit = neg_items[None, None, :] == targets[..., None]
            gen_t = sampled_softmax_log_prob(s_t, s_n, neg_log_count, hit)
        if self.copy is None:
            return gen_t
        w, items, log_g, log_1mg = self.copy_pointer(hq, h, index, inputs)
        copy_t = jnp.sum(w * (items[:, None, :] == targets[..., None]), axis=-1)
        return mixture_log_prob(log_g, log_1mg, copy_t, gen_t)

    def copy_pointer(self, hq, h, index, inputs):
        """The copy head's weights over the window (+ memory) slots, the slots' items
        ``int[b, L (+ K)]`` and the log gates."""
        memory, items = None, inputs["item"]
        if self.history_memory:
            if "mem_item" not in inputs:
                raise ValueError(f"model.history_memory={self.history_memory}: the inputs need the history "
                                 "memory; build them with make_batch(..., memory=model.history_memory).")
            t_q = gather_positions(inputs["time"], index)                     # [b, P] days
            days_back = t_q[:, :, None] - inputs["mem_time"][:, None, :]      # >= 0: memory is older
            emb = self.encoder.item.embedding[...][inputs["mem_item"]]
            memory = (emb, inputs["mem_item"], inputs["mem_count"], days_back)
            items = jnp.concatenate([items, inputs["mem_item"]], axis=1)
        w, log_g, log_1mg = self.copy.pointer(hq, h, index, inputs["lengths"], inputs["item"], memory)
        return w, items, log_g, log_1mg

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
        w, items, log_g, log_1mg = self.copy_pointer(hq, h, last, inputs)
        b, n = logits.shape[0], logits.shape[-1]
        copy = jnp.zeros((b, n)).at[jnp.arange(b)[:, None], items].add(w[:, 0])
        gen = jax.nn.softmax(logits[:, 0], axis=-1)
        p = jnp.exp(log_g) * copy + jnp.exp(log_1mg) * gen
        return jnp.log(jnp.maximum(p, 1e-30)).at[:, 0].set(-1e30)

    def churn_logit(self, inputs: dict[str, jax.Array], *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """``float32[batch]`` churn logit from the state at the cutoff."""
        h = self.hidden(inputs, rngs=rngs)
        return self.churn(last_state(h, inputs["lengths"]), h, inputs["lengths"])

    # -- streaming ------------------------------------------------------------------
    def init_state(self, batch: int) -> Any:
        """Empty per-customer streaming state for ``batch`` customers.

        Needs a backbone that can stream (``linear``, ``lstm``), ``encoder:
        event_local`` and the softmax item head; raises a ValueError /
        NotImplementedError saying which config key to change otherwise.
        """
        if self.encoder.mode is not EncoderMode.EVENT_LOCAL:
            raise ValueError("streaming needs `encoder: event_local` in the model config: with "
                             "cutoff-relative features every past event changes at each new event.")
        if self.copy is not None:
            raise NotImplementedError("streaming supports item_head=softmax only: the copy head "
                                      "points over the whole history, which a fixed state does not keep.")
        if self.churn.pool != "last":
            raise NotImplementedError("streaming supports churn_pool=last only: attention pooling "
                                      "reads the whole window, which a fixed state does not keep.")
        return self.backbone.init_state(batch)

    def step(self, state: Any, event: dict[str, jax.Array]) -> tuple[Any, StreamScores]:
        """Absorb one new event per customer and score them, O(1) in history length.

        Args:
          state: from :meth:`init_state` or a previous ``step``.
          event: the new event's inputs, each ``[batch]``: ``item``, ``event_type``,
            ``weekday``, ``hour``, ``gap``, ``age``, ``value``, ``quantity``; optional
            ``valid bool[batch]`` (rows without a new event keep their state; their
            scores are meaningless).

        Returns:
          ``(new state, StreamScores)``; the scores equal the parallel model's scores
          at the new event's position.
        """
        valid = event.get("valid")
        if valid is None:
            valid = jnp.ones(event["item"].shape, bool)
        x = self.encoder.embed_event(event)
        state, y = self.backbone.step(state, x, valid)
        h = self.final_norm(y)
        return state, StreamScores(item_scores=self.catalogue_logits(h), churn_logit=self.churn(h), hidden=h)
