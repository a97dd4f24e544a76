"""Task heads on top of the encoder's hidden states.

* next_item: full-catalogue logits, tied to the item embedding (softmax CE), or, for
  training only, a sampled-softmax estimate of the same loss
  (:func:`sampled_softmax_log_prob`), or gBCE over the same sampled negatives
  (:func:`gbce_loss`, plain softmax head only).
* next_basket: the same catalogue logits, trained like next_item (one target item of
  the next basket per position).
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

    def target_logits(self, h: jax.Array, item_embedding: jax.Array, items: jax.Array) -> jax.Array:
        """One score per position: ``h [..., d]``, ``items int[...]`` -> ``[...]``.

        Equal to ``self(h, E)[..., items]`` without building the catalogue axis.
        """
        s = jnp.sum(h * item_embedding[items], axis=-1) + self.bias[...][items]
        return jnp.where(items > 0, s, -1e9)

    def shared_logits(self, h: jax.Array, item_embedding: jax.Array, items: jax.Array) -> jax.Array:
        """Scores of a shared candidate set: ``h [..., d]``, ``items int[N]`` -> ``[..., N]``."""
        s = h @ item_embedding[items].T + self.bias[...][items]
        return jnp.where(items > 0, s, -1e9)

    def chunk_logits(self, h: jax.Array, item_embedding: jax.Array, lo: jax.Array, size: int) -> jax.Array:
        """Scores of the items ``lo .. lo + size - 1``: ``h [..., d]`` -> ``[..., size]``.

        Equal to ``self(h, E)[..., lo:lo + size]`` (the same product per item) without
        the catalogue axis; ``lo`` may be traced, ``size`` is static and
        ``lo + size <= n_items + 1``.
        """
        e = jax.lax.dynamic_slice_in_dim(item_embedding, lo, size)
        b = jax.lax.dynamic_slice_in_dim(self.bias[...], lo, size)
        logits = h @ e.T + b
        return jnp.where(lo + jnp.arange(size) == 0, -1e9, logits)


def log_popularity_bias(counts) -> jax.Array:
    """Catalogue bias at step 0: ``log((count + 1) / sum(count + 1))`` per item (slot 0: 0).

    The softmax then starts at the add-one popularity distribution instead of uniform,
    so the first steps do not spend themselves learning popularity (log-popularity
    spans ~10 nats on The Complete Journey, far more than a bias moves in a short run).
    ``counts``: ``int[n_items + 1]`` training-target counts (index 0 ignored).
    """
    c = jnp.asarray(counts, jnp.float32)[1:] + 1.0
    return jnp.concatenate([jnp.zeros((1,)), jnp.log(c) - jnp.log(jnp.sum(c))])


def next_item_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean softmax CE over positions with a target (> 0). logits ``[b, l, V+1]``."""
    mask = targets > 0
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return jnp.sum(jnp.where(mask, ce, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def sampled_softmax_log_prob(
    target_logit: jax.Array,
    negative_logits: jax.Array,
    negative_log_count: jax.Array,
    accidental_hit: jax.Array,
) -> jax.Array:
    """Sampled-softmax estimate of ``log softmax(logits)[target]`` (training only).

    With ``N`` negatives ``n_1..n_N`` drawn *with replacement* from a proposal ``q``
    (shared by every position of a batch), importance sampling gives an unbiased
    estimate of the partition function without the target:

    ``sum_{j != t} exp(s_j)  ~=  sum_k [n_k != t] exp(s_{n_k} - log(N q(n_k)))``

    so ``log p(t) ~= s_t - log(exp(s_t) + sum_k [n_k != t] exp(s_{n_k} - log(N q(n_k))))``.
    Subtracting ``log(N q)`` is the logQ correction (Bengio & Senecal 2008; Jean et
    al. 2015; Yi et al. 2019 for recommendation); masking ``n_k == t`` ("accidental
    hits") keeps the target from being counted as its own negative, which is exactly
    what makes the estimate unbiased for the sum over ``j != t``. The log of an
    unbiased sum is biased low by Jensen's inequality (consistent as ``N`` grows).
    The estimate is always ``<= 0`` because the target's own term is exact.

    With the whole catalogue as negatives, each once, and ``log(N q) = 0`` (uniform
    ``q = 1/N``, ``N = n_items``), this equals the full-softmax log-probability.

    Args:
      target_logit: ``[...]`` score of each position's target.
      negative_logits: ``[..., N]`` scores of the shared negatives at each position.
      negative_log_count: ``[N]`` ``log(N q(n_k))``, the log expected count of each
        negative among the ``N`` draws.
      accidental_hit: ``bool[..., N]``, ``n_k == target``.

    Returns:
      ``[...]`` estimated log-probabilities.
    """
    corrected = jnp.where(accidental_hit, -1e30, negative_logits - negative_log_count)
    both = jnp.concatenate([target_logit[..., None], corrected], axis=-1)
    return target_logit - jax.nn.logsumexp(both, axis=-1)


def gbce_beta(n_negatives: int, n_items: int, t: float) -> float:
    """The positive term's exponent ``beta`` of gBCE (Petrov & Macdonald, "gSASRec:
    Reducing Overconfidence in Sequential Recommendation Trained with Negative
    Sampling", RecSys 2023).

    With ``k`` negatives out of ``n_items - 1`` items the sampling rate is
    ``a = k / (n_items - 1)`` and ``beta = a * (t * (1 - 1/a) + 1/a)``: ``t = 0`` gives
    ``beta = 1`` (plain BCE with negatives, SASRec's loss), ``t = 1`` gives ``beta = a``
    (the calibrated limit, where the sigmoid of a score estimates the full softmax
    probability under uniform sampling).
    """
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"gBCE calibration t={t} must be in [0, 1].")
    if not 0 < n_negatives < n_items:
        raise ValueError(f"gBCE needs 1 .. n_items - 1 = {n_items - 1} negatives, got {n_negatives}.")
    a = n_negatives / (n_items - 1)
    return float(a * (t * (1.0 - 1.0 / a) + 1.0 / a))


def gbce_loss(target_logit: jax.Array, negative_logits: jax.Array, accidental_hit: jax.Array,
              beta: jax.Array | float) -> jax.Array:
    """Per-position gBCE: ``-(beta * log sigmoid(s_t) + sum_k [n_k != t] log sigmoid(-s_k))``.

    Args:
      target_logit: ``[...]`` score of each position's target.
      negative_logits: ``[..., N]`` scores of the shared negatives.
      accidental_hit: ``bool[..., N]``, ``n_k == target`` (such a draw is not a negative).
      beta: the positive term's exponent (:func:`gbce_beta`).

    Returns:
      ``[...]`` losses (>= 0).
    """
    pos = beta * jax.nn.log_sigmoid(target_logit)
    neg = jnp.sum(jnp.where(accidental_hit, 0.0, jax.nn.log_sigmoid(-negative_logits)), axis=-1)
    return -(pos + neg)


class ChurnHead(nnx.Module):
    """Churn logit from the state at the cut-off, optionally with attention pooling.

    ``pool="last"``: ``w . h_last + b``. ``pool="attention"``: the last state also
    queries every valid position of the window (one learned query projection, scaled
    dot product, softmax over positions) and the logit reads ``[h_last, pooled]``, so a
    churn signal carried by one event far back reaches the head in one hop instead of
    through the last position's residual stream.

    ``summary: S > 0``: the head also reads the whole history's RFM summary
    (``float32[b, S]``, :func:`attnlab.data.batching.history_summary`) through a small
    MLP added to the cut-off state before pooling and the logit, so frequency, tenure
    and recency older than the window reach it, as they reach the RFM and BG/NBD
    baselines.
    """

    def __init__(self, d_model: int, *, pool: str = "last", summary: int = 0, rngs: nnx.Rngs):
        if pool not in ("last", "attention"):
            raise ValueError(f"model.churn_pool={pool!r} is not one of ['last', 'attention'].")
        self.pool = pool
        self.proj = nnx.Linear(d_model * (2 if pool == "attention" else 1), 1, rngs=rngs)
        self.query = nnx.Linear(d_model, d_model, rngs=rngs) if pool == "attention" else None
        self.summary = int(summary)
        if self.summary:
            self.summary_in = nnx.Linear(self.summary, d_model, rngs=rngs)
            self.summary_out = nnx.Linear(d_model, d_model, rngs=rngs)

    def __call__(self, state: jax.Array, h: jax.Array | None = None, lengths: jax.Array | None = None,
                 summary: jax.Array | None = None) -> jax.Array:
        """``state [..., d]`` (the last valid position); ``h [b, L, d]`` and ``lengths
        int32[b]`` for attention pooling; ``summary [..., S]`` when built with one
        -> ``[...]`` logits."""
        if self.summary:
            if summary is None or summary.shape[-1] != self.summary:
                got = None if summary is None else summary.shape[-1]
                raise ValueError(f"this churn head reads a {self.summary}-feature history summary (model."
                                 f"history_summary=true), got {got}: build the inputs with make_batch(..., "
                                 "summary=...), with the BG/NBD columns exactly when model.summary_bgnbd=true "
                                 "(task.summary_bgnbd sets both).")
            state = state + self.summary_out(jax.nn.gelu(self.summary_in(summary)))
        if self.query is None:
            return self.proj(state)[..., 0]
        if h is None:
            raise ValueError("attention-pooled churn head needs the whole window's states (h, lengths).")
        s = jnp.einsum("bd,bld->bl", self.query(state), h) / jnp.sqrt(h.shape[-1])
        valid = jnp.arange(h.shape[1])[None, :] < lengths[:, None]
        w = jnp.where(valid, jax.nn.softmax(jnp.where(valid, s, -1e30), axis=-1), 0.0)
        pooled = jnp.einsum("bl,bld->bd", w, h)
        return self.proj(jnp.concatenate([state, pooled], axis=-1))[..., 0]


def gather_positions(x: jax.Array, index: jax.Array) -> jax.Array:
    """``x[b, index[b, p]]``: ``[b, L, ...]`` x ``int[b, P]`` -> ``[b, P, ...]``."""
    idx = index.reshape(index.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


class CopyHead(nnx.Module):
    """Pointer over the visible history, mixed with the catalogue softmax.

    ``P(item | t) = g_t * sum_{j <= t, item_j = item} a_tj + (1 - g_t) * softmax(logits_t)[item]``
    where ``a_t`` is a softmax over the valid history positions ``j <= t`` with an item,
    and ``g_t = sigmoid(w . h_t)`` is the repeat gate (forced to 0 with no such position).
    Idea from pointer-generator networks (See et al., 2017) and RepeatNet (Ren et al.,
    2019): on repeat-heavy grocery data, copying from the history is what matters. The
    pointer weights are directly inspectable (which past events the prediction copies).

    With ``memory: K > 0`` the pointer also reaches the K most purchased items of the
    history older than the window (each slot keyed by its item embedding, scored with
    its log count and the days since its last purchase), so the head reaches the
    repeat history older than the window, as personal repeat does (its top K items).
    """

    def __init__(self, d_model: int, *, memory: int = 0, rngs: nnx.Rngs):
        self.query = nnx.Linear(d_model, d_model, rngs=rngs)
        self.key = nnx.Linear(d_model, d_model, rngs=rngs)
        self.gate = nnx.Linear(d_model, 1, rngs=rngs)
        self.memory = int(memory)
        if self.memory:
            self.mem_key = nnx.Linear(d_model, d_model, rngs=rngs)
            self.mem_norm = nnx.LayerNorm(d_model, rngs=rngs)
            # score += w_count * log1p(count) + w_age * log1p(days since its last purchase)
            self.mem_weights = nnx.Param(jnp.array([1.0, 0.0], jnp.float32))

    def pointer(self, h_query, h_keys, query_pos, lengths, items, memory=None):
        """Copy weights and log-gate pair ``(log g, log(1 - g))`` ``[b, P]``.

        Args:
          h_query: ``[b, P, d]`` query states; h_keys: ``[b, L, d]`` window states;
          query_pos: ``int[b, P]``; lengths: ``int[b]``; items: ``int[b, L]``.
          memory: with ``memory > 0``, ``(item_emb [b, K, d], mem_item int[b, K],
            log1p_count [b, K], days_back [b, P, K])``: the history memory's slots
            (:func:`attnlab.data.batching.history_memory`), visible to every query.

        Returns:
          ``(w [b, P, L (+ K)], log_g, log_1mg)``; the slots' items are ``items``
          followed by the memory's.
        """
        d = h_keys.shape[-1]
        q = self.query(h_query)
        s = jnp.einsum("bpd,bld->bpl", q, self.key(h_keys)) / jnp.sqrt(d)
        j = jnp.arange(h_keys.shape[1])
        ok = (j[None, None, :] <= query_pos[:, :, None]) & (j[None, None, :] < lengths[:, None, None])
        ok &= (items > 0)[:, None, :]
        if self.memory:
            if memory is None:
                raise ValueError("this copy head was built with model.history_memory > 0: its inputs "
                                 "need the memory (make_batch(..., memory=model.history_memory)).")
            emb, mem_item, log_count, days_back = memory
            k = self.mem_key(self.mem_norm(emb))
            w_count, w_age = self.mem_weights[...][0], self.mem_weights[...][1]
            s_mem = (jnp.einsum("bpd,bkd->bpk", q, k) / jnp.sqrt(d) + w_count * log_count[:, None, :]
                     + w_age * jnp.log1p(jnp.maximum(days_back, 0.0)))
            s = jnp.concatenate([s, s_mem], axis=-1)
            ok = jnp.concatenate([ok, jnp.broadcast_to((mem_item > 0)[:, None, :], s_mem.shape)], axis=-1)
        w = jax.nn.softmax(jnp.where(ok, s, -1e30), axis=-1)
        w = jnp.where(ok, w, 0.0)
        any_ok = jnp.any(ok, axis=-1)
        z = self.gate(h_query)[..., 0]
        log_g = jnp.where(any_ok, jax.nn.log_sigmoid(z), -jnp.inf)
        log_1mg = jnp.where(any_ok, jax.nn.log_sigmoid(-z), 0.0)
        return w, log_g, log_1mg


def mixture_log_prob(log_g, log_1mg, copy_p, gen_logp):
    """``log(g * copy_p + (1 - g) * exp(gen_logp))``, stable."""
    log_copy = jnp.where(copy_p > 0, jnp.log(jnp.maximum(copy_p, 1e-30)), -jnp.inf)
    return jnp.logaddexp(log_g + log_copy, log_1mg + gen_logp)
