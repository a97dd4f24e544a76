"""Task heads on top of the encoder's hidden states.

* next_item: full-catalogue logits, tied to the item embedding (softmax CE), or, for
  training only, a sampled-softmax estimate of the same loss
  (:func:`sampled_softmax_log_prob`).
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


class ChurnHead(nnx.Module):
    def __init__(self, d_model: int, *, rngs: nnx.Rngs):
        self.proj = nnx.Linear(d_model, 1, rngs=rngs)

    def __call__(self, state: jax.Array) -> jax.Array:
        return self.proj(state)[..., 0]


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
    """

    def __init__(self, d_model: int, *, rngs: nnx.Rngs):
        self.query = nnx.Linear(d_model, d_model, rngs=rngs)
        self.key = nnx.Linear(d_model, d_model, rngs=rngs)
        self.gate = nnx.Linear(d_model, 1, rngs=rngs)

    def pointer(self, h_query, h_keys, query_pos, lengths, items):
        """Copy weights ``[b, P, L]`` and log-gate pair ``(log g, log(1 - g))`` ``[b, P]``."""
        d = h_keys.shape[-1]
        s = jnp.einsum("bpd,bld->bpl", self.query(h_query), self.key(h_keys)) / jnp.sqrt(d)
        j = jnp.arange(h_keys.shape[1])
        ok = (j[None, None, :] <= query_pos[:, :, None]) & (j[None, None, :] < lengths[:, None, None])
        ok &= (items > 0)[:, None, :]
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
