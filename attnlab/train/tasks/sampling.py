"""Seeded draws for training: target positions per window, members per group, and the
shared negatives of the sampled-softmax loss."""

from __future__ import annotations

import numpy as np

from attnlab.train.task_config import PROPOSALS


def sample_target_positions(targets: np.ndarray, n: int, rng: np.random.Generator):
    """Pick up to ``n`` positions with a target (> 0) per row, uniformly without replacement.

    Args:
      targets: ``int32[b, L]`` per-position targets (0 = none).
      n: positions per row.
      rng: numpy generator (seeded by the caller).

    Returns:
      ``(index int32[b, n], item int32[b, n])``; unused slots have item 0 (ignored).
    """
    b, length = targets.shape
    keys = np.where(targets > 0, rng.random((b, length)), np.inf)
    n = min(n, length)
    index = np.argsort(keys, axis=1)[:, :n]
    item = np.take_along_axis(targets, index, axis=1)
    return index.astype(np.int32), item.astype(np.int32)


def pick_per_group(offsets: np.ndarray, per: int, rng: np.random.Generator,
                   log_weights: np.ndarray | None = None) -> np.ndarray:
    """Up to ``per`` distinct members of each group, uniformly at random or, with
    ``log_weights``, without replacement in proportion to ``exp(log_weights)`` (each
    member's key is an Exp(1) draw divided by its weight, the smallest keys win:
    Efraimidis & Spirakis, "Weighted random sampling with a reservoir", IPL 2006; the
    first pick of a group is member ``i`` with probability ``w_i / sum(w)``). Keys are
    compared as logs, so weights far below float range (thousands of halvings) still
    order correctly.

    Args:
      offsets: ``int64[n_groups + 1]``: group ``g`` is ``[offsets[g], offsets[g + 1])``.
      per: members per group (all of a smaller group).
      rng: seeded by the caller (one draw per member).
      log_weights: ``float[n]`` finite log weight per member, or None (uniform; the draws
        of the unweighted version, so earlier runs reproduce).

    Returns:
      ``int64[k]`` chosen member indices, grouped by group (order inside a group random).
    """
    counts = np.diff(offsets)
    grp = np.repeat(np.arange(len(counts)), counts)
    keys = rng.random(len(grp))
    if log_weights is not None:
        log_weights = np.asarray(log_weights, np.float64)
        if log_weights.shape != keys.shape or not np.all(np.isfinite(log_weights)):
            raise ValueError(f"pick_per_group: log_weights must be {len(keys)} finite numbers (one per "
                             f"member), got shape {log_weights.shape}, {int((~np.isfinite(log_weights)).sum())} "
                             f"non-finite")
        with np.errstate(divide="ignore"):   # u = 0 gives log(0) = -inf: first, as Exp(1) = 0 would be
            keys = np.log(-np.log1p(-keys)) - log_weights   # log(Exp(1) / w)
    order = np.lexsort((keys, grp))
    rank = np.arange(len(grp)) - np.repeat(offsets[:-1], counts)
    return order[rank < per]


class NegativeSampler:
    """Shared negatives for the sampled-softmax training loss (next_item / next_basket).

    Draws ``n`` items *with replacement* from a proposal ``q`` over ``1..n_items``
    and returns them with ``log(n q(item))`` (their log expected count), which the
    loss subtracts from their logits (logQ correction, see
    :func:`attnlab.models.heads.sampled_softmax_log_prob`). Proposals, all positive on
    every item so the estimate stays unbiased:

    * ``uniform``: ``q = 1 / n_items``.
    * ``log_uniform``: Zipf-like over the popularity rank ``r = 0, 1, ...`` of the
      training targets, ``q = log((r + 2) / (r + 1)) / log(n_items + 1)`` (the
      log-uniform candidate sampler familiar from TensorFlow's sampled softmax, applied
      to popularity ranks because item ids here are not sorted by frequency).
    * ``popularity``: ``q ∝ (count + 1) ** alpha`` over the training targets
      (``alpha = 0.75``: word2vec's flattened unigram; add-one keeps unseen items).

    Args:
      counts: ``int[n_items + 1]`` training-target count per item (index 0 ignored).
      proposal: one of :data:`PROPOSALS`.
      alpha: popularity exponent (``popularity`` only).
    """

    def __init__(self, counts: np.ndarray, *, proposal: str = "popularity", alpha: float = 0.75):
        counts = np.asarray(counts, dtype=np.float64)[1:]
        n = len(counts)
        if n == 0:
            raise ValueError("sampled softmax needs a catalogue with at least one item.")
        if proposal == "uniform":
            q = np.full(n, 1.0 / n)
        elif proposal == "log_uniform":
            rank = np.empty(n, dtype=np.int64)
            rank[np.argsort(-counts, kind="stable")] = np.arange(n)
            q = np.log((rank + 2.0) / (rank + 1.0)) / np.log(n + 1.0)
        elif proposal == "popularity":
            w = (counts + 1.0) ** float(alpha)
            q = w / w.sum()
        else:
            raise ValueError(f"task.sampled_softmax.proposal={proposal!r} is not one of {list(PROPOSALS)}.")
        self.proposal = proposal
        self.log_q = np.concatenate([[-np.inf], np.log(q)])  # index 0: never drawn
        self._cdf = np.cumsum(q)
        self._cdf[-1] = 1.0

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(items int32[n], log_count float32[n])`` with ``log_count = log(n q(item))``."""
        idx = np.searchsorted(self._cdf, rng.random(n), side="right")
        items = np.minimum(idx, len(self._cdf) - 1) + 1
        return items.astype(np.int32), (np.log(n) + self.log_q[items]).astype(np.float32)
