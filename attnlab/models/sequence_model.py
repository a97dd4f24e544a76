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

from attnlab.data.batching import summary_width
from attnlab.models.encoder import EncoderMode, EventEncoder

from attnlab.models.heads import (
    CatalogueHead, ChurnHead, CopyHead, gather_positions, gbce_loss, last_state, log_popularity_bias,
    mixture_log_prob, sampled_softmax_log_prob,
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
      history_summary: the churn head also reads the whole history's RFM summary
        (inputs then carry ``summary``, see :func:`attnlab.data.batching.history_summary`).
      summary_bgnbd: that summary also carries the BG/NBD columns
        (:data:`attnlab.data.batching.BGNBD_FEATURES`; ``task.summary_bgnbd``).
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
        history_summary: bool = False,
        summary_bgnbd: bool = False,
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
        if summary_bgnbd and not history_summary:
            raise ValueError("model.summary_bgnbd=true adds BG/NBD columns to the churn head's history summary, "
                             "but model.history_summary=false: set model.history_summary=true or "
                             "model.summary_bgnbd=false.")
        self.churn = ChurnHead(d_model, pool=churn_pool,
                               summary=summary_width(bgnbd=bool(summary_bgnbd)) if history_summary else 0, rngs=rngs)
        #: whether the churn head reads the history summary (inputs built with ``summary=True``)
        self.history_summary = bool(history_summary)
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
            s_t, s_n = self._sampled_logits(hq, targets, neg_items)
            gen_t = sampled_softmax_log_prob(s_t, s_n, neg_log_count, neg_items[None, None, :] == targets[..., None])
        if self.copy is None:
            return gen_t
        w, items, log_g, log_1mg = self.copy_pointer(hq, h, index, inputs)
        copy_t = jnp.sum(w * (items[:, None, :] == targets[..., None]), axis=-1)
        return mixture_log_prob(log_g, log_1mg, copy_t, gen_t)

    def _sampled_logits(self, hq, targets, neg_items):
        """``(s_t [b, P], s_n [b, P, N])``: the targets' and the shared negatives' catalogue scores."""
        emb = self.encoder.item.embedding[...]
        return (self.catalogue.target_logits(hq, emb, targets),
                self.catalogue.shared_logits(hq, emb, neg_items))

    def target_gbce(self, h, index, targets, neg_items, beta) -> jax.Array:
        """Per-position gBCE loss ``[b, P]`` (:func:`attnlab.models.heads.gbce_loss`): the
        target's catalogue score against the batch's shared negatives, each scored by its
        own sigmoid. Plain softmax head only: the copy head's output is a mixture of
        probabilities, not one score per item, so there is nothing for a sigmoid to read.
        """
        if self.copy is not None:
            raise ValueError("task.loss=gbce scores every item by its own sigmoid; the copy head mixes two "
                             "probabilities and has no per-item score: use model.item_head=softmax "
                             "model.history_memory=0, or task.loss=softmax with the copy head.")
        hq = gather_positions(h, index)
        s_t, s_n = self._sampled_logits(hq, targets, neg_items)
        return gbce_loss(s_t, s_n, neg_items[None, None, :] == targets[..., None], beta)

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

    # -- chunked catalogue scoring --------------------------------------------------
    def next_item_state(self, inputs: dict[str, jax.Array], *, item_chunk: int) -> dict[str, jax.Array]:
        """What :meth:`next_item_chunk_scores` needs from the latest event, per row.

        Returns ``{"hq": [b, d]}`` (the final hidden state); the copy head adds its
        pointer (``w [b, S]`` over the slots' ``items int[b, S]``), the log gates
        ``log_g``, ``log_1mg`` ``[b]``, and the catalogue softmax's normaliser: its max
        ``gen_max [b]`` and ``gen_sum [b] = sum_j exp(logit_j - gen_max)``, each taken in
        one pass over the catalogue ``item_chunk`` items at a time, so no array is
        larger than ``[b, item_chunk]``.
        """
        h = self.hidden(inputs)
        last = jnp.clip(inputs["lengths"] - 1, 0, h.shape[1] - 1)[:, None]
        hq = gather_positions(h, last)  # [b, 1, d]
        state = {"hq": hq[:, 0]}
        if self.copy is None:
            return state
        w, items, log_g, log_1mg = self.copy_pointer(hq, h, last, inputs)
        gen_max, gen_sum = self._catalogue_normaliser(hq[:, 0], item_chunk)
        return {**state, "w": w[:, 0], "items": items, "log_g": log_g[:, 0], "log_1mg": log_1mg[:, 0],
                "gen_max": gen_max, "gen_sum": gen_sum}

    def _catalogue_normaliser(self, hq: jax.Array, item_chunk: int) -> tuple[jax.Array, jax.Array]:
        """``(max_j logit_j, sum_j exp(logit_j - max))`` over the whole vocabulary (slot 0
        included, as in :meth:`next_item_scores`), ``item_chunk`` columns at a time."""
        n = self.n_items + 1
        size = min(int(item_chunk), n)
        n_chunks = -(-n // size)

        def chunk(i):  # the last chunk is shifted left to fit; `fresh` masks the overlap
            lo = jnp.minimum(i * size, n - size)
            return self.catalogue_chunk_logits(hq, lo, size), lo + jnp.arange(size) >= i * size

        def step_max(i, m):
            return jnp.maximum(m, jnp.max(chunk(i)[0], axis=-1))

        gen_max = jax.lax.fori_loop(0, n_chunks, step_max, jnp.full(hq.shape[:1], -jnp.inf, hq.dtype))

        def step_sum(i, acc):
            logits, fresh = chunk(i)
            return acc + jnp.sum(jnp.where(fresh, jnp.exp(logits - gen_max[:, None]), 0.0), axis=-1)

        gen_sum = jax.lax.fori_loop(0, n_chunks, step_sum, jnp.zeros(hq.shape[:1], hq.dtype))
        return gen_max, gen_sum

    def catalogue_chunk_logits(self, hq: jax.Array, lo: jax.Array, size: int) -> jax.Array:
        """``hq [..., d]`` -> ``[..., size]``: :meth:`catalogue_logits` of items ``lo .. lo + size - 1``."""
        return self.catalogue.chunk_logits(hq, self.encoder.item.embedding[...], lo, size)

    def next_item_chunk_scores(self, state: dict[str, jax.Array], lo: jax.Array, size: int) -> jax.Array:
        """:meth:`next_item_scores` restricted to items ``lo .. lo + size - 1``: ``[b, size]``.

        ``state`` from :meth:`next_item_state`. Softmax head: the logits of the chunk,
        the same products as the full scores. Copy head: ``log P(item)`` of the mixture,
        with the catalogue softmax normalised by the state's ``gen_max``/``gen_sum``
        (the full-catalogue normaliser up to fp32 summation order) and the pointer's
        weights on the chunk's items only.
        """
        logits = self.catalogue_chunk_logits(state["hq"], lo, size)
        if self.copy is None:
            return logits
        b = logits.shape[0]
        col = state["items"] - lo
        col = jnp.where((col >= 0) & (col < size), col, size)  # out of the chunk: dropped
        copy = jnp.zeros((b, size)).at[jnp.arange(b)[:, None], col].add(state["w"], mode="drop")
        gen = jnp.exp(logits - state["gen_max"][:, None]) / state["gen_sum"][:, None]
        p = jnp.exp(state["log_g"])[:, None] * copy + jnp.exp(state["log_1mg"])[:, None] * gen
        return jnp.where(lo + jnp.arange(size) == 0, -1e30, jnp.log(jnp.maximum(p, 1e-30)))

    def next_item_target_scores(self, state: dict[str, jax.Array], items: jax.Array) -> jax.Array:
        """:meth:`next_item_chunk_scores` at given items: ``items int[b, T]`` -> ``[b, T]``.

        The logits come from one matrix product of every row with every row's items
        (the same product as a chunk's, ``b x b T`` dots, then each row's own columns),
        so the values round like the chunks' columns do.
        """
        b, t = items.shape
        flat = items.reshape(-1)
        width = -(-flat.shape[0] // 64) * 64  # a product as wide as a chunk's (multiples of 64)
        flat = jnp.pad(flat, (0, width - flat.shape[0]))
        emb = self.encoder.item.embedding[...]
        every = state["hq"] @ emb[flat].T + self.catalogue.bias[...][flat]   # [b, width]
        own = jnp.arange(b)[:, None] * t + jnp.arange(t)[None, :]
        logits = jnp.where(items == 0, -1e9, jnp.take_along_axis(every, own, axis=1))
        if self.copy is None:
            return logits
        match = state["items"][:, :, None] == items[:, None, :]           # [b, S, T]
        col = jnp.where(jnp.any(match, axis=-1), jnp.argmax(match, axis=-1), t)
        copy = jnp.zeros((b, t)).at[jnp.arange(b)[:, None], col].add(state["w"], mode="drop")
        gen = jnp.exp(logits - state["gen_max"][:, None]) / state["gen_sum"][:, None]
        p = jnp.exp(state["log_g"])[:, None] * copy + jnp.exp(state["log_1mg"])[:, None] * gen
        return jnp.where(items == 0, -1e30, jnp.log(jnp.maximum(p, 1e-30)))

    def churn_logit(self, inputs: dict[str, jax.Array], *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """``float32[batch]`` churn logit from the state at the cutoff."""
        h = self.hidden(inputs, rngs=rngs)
        return self.churn(last_state(h, inputs["lengths"]), h, inputs["lengths"], inputs.get("summary"))

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
        if self.history_summary:
            raise NotImplementedError("streaming supports history_summary=false only: the churn head's "
                                      "summary is measured from the scoring date, which a stream does not have.")
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
