"""Full-catalogue ranking in item chunks: memory bounded by batch x chunk, not batch x catalogue.

A :class:`ChunkedScorer` scores a group of examples against a range of item ids at a
time: ``prepare(store, examples) -> state`` once (e.g. each row's final hidden state),
then ``scores(state, lo, hi) -> float32[m, hi - lo]`` for the items ``lo .. hi - 1``.
The evaluators (:func:`attnlab.eval.evaluate.evaluate_next_item`,
:func:`~attnlab.eval.evaluate.evaluate_next_basket`) accept one wherever they accept a
full-matrix ``score_fn`` and then never hold more than ``m x item_chunk`` scores.

Exactness. Every ranking metric is a function of two counts per target and of the
targets' own scores: ``above = #{j >= 1 : s_j > s_t}`` and ``at_or_above = #{j >= 1 :
s_j >= s_t}`` (pessimistic ties, :func:`attnlab.eval.metrics.target_ranks` and
:func:`~attnlab.eval.metrics.basket_positions_from_counts`). Both counts are sums over
item chunks, so :func:`target_counts` reproduces the unchunked evaluator exactly for
the same scores: same ranks, positions, metrics and per-example arrays. No top-k list
is needed for any metric; :func:`top_k` builds one when the list itself is wanted.

The target's own score is gathered first (``target_scores``, or one single-column
``scores`` call per distinct target item) and then compared with the value of the
target's column in its chunk. A scorer whose gather rounds differently from its
chunks (a matrix-vector product vs a matrix product) is caught there: the batch is
counted again against the chunk values, so the ranks always rank exactly the scores
the chunks produced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples

#: items per chunk: 16 MiB of float32 scores at 256 rows; the fastest chunk at 1M items
#: on CPU (a chunk's scores stay in cache while they are counted), see docs/scaling.md
ITEM_CHUNK = 16_384
#: model scorers switch to chunks above this catalogue size (256 MiB per 256-row full matrix)
CHUNKED_ABOVE = 262_144


@dataclasses.dataclass(frozen=True)
class ChunkedScorer:
    """Scores examples against the catalogue one item range at a time.

    Attributes:
      prepare: ``(store, examples) -> state``: whatever scoring needs per row,
        computed from the visible history only (the state is opaque to the evaluator).
      scores: ``(state, lo, hi) -> float[m, hi - lo]``: the scores of items
        ``lo .. hi - 1`` for the ``m`` prepared rows, ``1 <= lo < hi <= n_items + 1``
        (item 0, "no item", is never asked for).
      target_scores: optional ``(state, rows int[T], items int[T]) -> float[T]``: the
        score of ``items[i]`` for row ``rows[i]``, equal to the matching column of
        ``scores``; None = one single-column ``scores`` call per distinct item.
      item_chunk: default items per ``scores`` call.
    """

    prepare: Callable[[SequenceStore, Examples], Any]
    scores: Callable[[Any, int, int], np.ndarray]
    target_scores: Callable[[Any, np.ndarray, np.ndarray], np.ndarray] | None = None
    item_chunk: int = ITEM_CHUNK

    def gather(self, state: Any, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``float32[T]`` score of ``items[i]`` for row ``rows[i]``."""
        if self.target_scores is not None:
            return np.asarray(self.target_scores(state, rows, items), dtype=np.float32).reshape(len(items))
        out = np.empty(len(items), np.float32)
        for t in np.unique(items):
            sel = items == t
            out[sel] = np.asarray(self.scores(state, int(t), int(t) + 1), dtype=np.float32)[rows[sel], 0]
        return out

    def __call__(self, store: SequenceStore, examples: Examples) -> np.ndarray:
        """The full ``float32[m, n_items + 1]`` matrix (column 0 = -inf), chunk by chunk:
        a plain ``score_fn`` for callers that need one (it holds the whole matrix)."""
        state = self.prepare(store, examples)
        out = np.full((len(examples), store.n_items + 1), -np.inf, np.float32)
        for lo, hi in item_ranges(store.n_items, self.item_chunk):
            out[:, lo:hi] = self.scores(state, lo, hi)
        return out


def item_ranges(n_items: int, item_chunk: int):
    """``(lo, hi)`` item-id ranges of at most ``item_chunk`` covering ``1 .. n_items``."""
    if item_chunk < 1:
        raise ValueError(f"item_chunk must be >= 1, got {item_chunk}")
    for lo in range(1, n_items + 1, item_chunk):
        yield lo, min(lo + item_chunk, n_items + 1)


def _chunk_scores(scorer: ChunkedScorer, state: Any, m: int, lo: int, hi: int) -> np.ndarray:
    s = np.asarray(scorer.scores(state, lo, hi))
    if s.shape != (m, hi - lo):
        raise ValueError(f"ChunkedScorer.scores(state, {lo}, {hi}) returned shape {s.shape}; expected "
                         f"{(m, hi - lo)} (prepared rows x items {lo}..{hi - 1})")
    s = s.astype(np.float32, copy=False)
    if np.isnan(s).any():
        bad = np.flatnonzero(np.isnan(s).any(axis=1))[:5]
        raise ValueError(f"score_fn returned NaN scores for chunk rows {bad.tolist()} (items {lo}..{hi - 1}) ...")
    return s


@dataclasses.dataclass(frozen=True)
class TargetCounts:
    """Per-target counts over the whole catalogue (items ``1 .. n_items``).

    Attributes:
      score: ``float32[T]`` the target's own score.
      above: ``int64[T]`` items scoring strictly higher.
      at_or_above: ``int64[T]`` items scoring higher or equal, the target included
        (= the pessimistic 1-based rank of :func:`attnlab.eval.metrics.target_ranks`).
    """

    score: np.ndarray
    above: np.ndarray
    at_or_above: np.ndarray


def target_counts(scorer: ChunkedScorer, store: SequenceStore, examples: Examples, *,
                  item_chunk: int | None = None) -> TargetCounts:
    """Count, chunk by chunk, the items scoring above / at-or-above each target.

    Args:
      scorer: the chunked scorer.
      store: the event store.
      examples: rows with ragged targets (``target_offsets``, ``target_items``).
      item_chunk: items per ``scores`` call (None = ``scorer.item_chunk``); the largest
        array held is ``len(examples) x item_chunk`` scores (and as many booleans).

    Returns:
      :class:`TargetCounts`, one entry per target, in ``target_items`` order.
    """
    chunk = int(item_chunk or scorer.item_chunk)
    n = store.n_items
    m = len(examples)
    items = np.asarray(examples.target_items, dtype=np.int64)
    rows = np.repeat(np.arange(m), np.diff(examples.target_offsets))
    if len(items) and (items.min() < 1 or items.max() > n):
        raise ValueError(f"targets must be in 1..{n}; got {items.min()}..{items.max()}")
    state = scorer.prepare(store, examples)
    s_t = scorer.gather(state, rows, items)
    if np.isnan(s_t).any():
        raise ValueError(f"score_fn returned NaN scores for target rows {rows[np.isnan(s_t)][:5].tolist()} ...")
    for _ in range(2):
        above, at_or_above, seen = _count(scorer, state, rows, items, s_t, n=n, m=m, chunk=chunk)
        if np.array_equal(seen, s_t):
            return TargetCounts(score=s_t, above=above, at_or_above=at_or_above)
        s_t = seen  # the gather rounded differently from the chunks: count against the chunks' values
    raise RuntimeError("ChunkedScorer.scores returned different values for the same items on two passes; "
                       "a scorer must be deterministic for exact ranks.")


def _count(scorer, state, rows, items, s_t, *, n: int, m: int, chunk: int):
    above = np.zeros(len(items), np.int64)
    at_or_above = np.zeros(len(items), np.int64)
    seen = np.full(len(items), np.nan, np.float32)
    one_each = len(items) == m and np.array_equal(rows, np.arange(m))  # next item: compare in place
    block = max(m, 1)  # targets compared at once: temporaries stay [m, chunk]
    for lo, hi in item_ranges(n, chunk):
        s = _chunk_scores(scorer, state, m, lo, hi)
        for b0 in range(0, len(items), block):
            sl = slice(b0, b0 + block)
            part = s if one_each else s[rows[sl]]
            v = s_t[sl, None]
            above[sl] += np.count_nonzero(part > v, axis=1)
            at_or_above[sl] += np.count_nonzero(part >= v, axis=1)
        inside = (items >= lo) & (items < hi)
        seen[inside] = s[rows[inside], items[inside] - lo]
    return above, at_or_above, seen


def top_k(scorer: ChunkedScorer, store: SequenceStore, examples: Examples, *, k: int,
          item_chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best items per row over the catalogue, chunk by chunk.

    Order: score descending, ties by ascending item id (the unchunked
    ``np.lexsort((items, -scores))`` order). A running top-k per row is merged with each
    chunk's entries that can still enter it (at or above the running k-th score).

    Returns:
      ``(items int64[m, k'], scores float32[m, k'])`` with ``k' = min(k, n_items)``.
    """
    chunk = int(item_chunk or scorer.item_chunk)
    m, k = len(examples), min(int(k), store.n_items)
    state = scorer.prepare(store, examples)
    best_s = np.full((m, 0), -np.inf, np.float32)
    best_i = np.zeros((m, 0), np.int64)
    for lo, hi in item_ranges(store.n_items, chunk):
        s = _chunk_scores(scorer, state, m, lo, hi)
        full = best_s.shape[1] == k
        kth = best_s[:, -1] if full else np.full(m, -np.inf, np.float32)
        r, c = np.nonzero(s >= kth[:, None])
        cand_r = np.concatenate([np.repeat(np.arange(m), best_s.shape[1]), r])
        cand_s = np.concatenate([best_s.ravel(), s[r, c]])
        cand_i = np.concatenate([best_i.ravel(), c + lo])
        order = np.lexsort((cand_i, -cand_s, cand_r))
        cand_r, cand_s, cand_i = cand_r[order], cand_s[order], cand_i[order]
        start = np.searchsorted(cand_r, np.arange(m))
        keep = (np.arange(len(cand_r)) - start[cand_r]) < k
        width = min(k, best_s.shape[1] + (hi - lo))
        best_s = cand_s[keep].reshape(m, width)
        best_i = cand_i[keep].reshape(m, width)
    return best_i, best_s
