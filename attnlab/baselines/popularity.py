"""Two non-learned baselines every ranking table must beat.

* :class:`MostPopular` -- global purchase counts over the training prefixes.
* :class:`PersonalRepeat` -- the customer's own previously purchased items (from the
  example's visible history only), by purchase count, ties broken by recency, then
  every other item by global popularity.

Both expose ``score(store, examples_chunk) -> float32[m, n_items + 1]`` and therefore
plug into :func:`attnlab.eval.evaluate.evaluate_next_item` and
:func:`~attnlab.eval.evaluate.evaluate_next_basket` unchanged.
"""

from __future__ import annotations

import numpy as np

from attnlab.data.sequences import SequenceStore
from attnlab.data.sequences import purchase_mask as _purchase_mask  # noqa: F401 (used by the other baselines)
from attnlab.data.sequences import range_events as _prefix_events
from attnlab.data.splits import Examples


class MostPopular:
    """Scores every item by its number of purchase events in the training prefixes."""

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None

    def fit(self, store: SequenceStore, train_end: np.ndarray) -> "MostPopular":
        """Counts purchases (``PURCHASE`` events with ``item > 0``) in
        ``[offsets[c], train_end[c])`` for every customer ``c``.

        Args:
          store: the event store.
          train_end: ``int64[n_customers]`` from :attr:`attnlab.data.splits.Split.train_end`.
        """
        train_end = np.asarray(train_end, dtype=np.int64)
        if train_end.shape != (store.n_customers,):
            raise ValueError(f"train_end must have one entry per customer "
                             f"({store.n_customers}), got {train_end.shape}")
        ev, _ = _prefix_events(store.offsets[:-1].astype(np.int64), train_end)
        ev = ev[_purchase_mask(store)[ev]]
        counts = np.bincount(store.item[ev], minlength=store.n_items + 1).astype(np.float64)
        counts[0] = 0.0
        self.counts = counts
        return self

    def _require_fit(self) -> np.ndarray:
        if self.counts is None:
            raise RuntimeError(f"{type(self).__name__}.fit(store, train_end) must run before score()")
        return self.counts

    def score(self, store: SequenceStore, examples: Examples) -> np.ndarray:
        """``float32[m, n_items + 1]``: the same popularity row for every example."""
        counts = self._require_fit()
        if len(counts) != store.n_items + 1:
            raise ValueError("store vocabulary differs from the one the model was fitted on")
        return np.repeat(counts.astype(np.float32)[None, :], len(examples), axis=0)


class PersonalRepeat(MostPopular):
    """Re-purchase baseline with popularity backfill.

    For each example, items purchased in its visible history rank first, ordered by
    (purchase count, recency of the last purchase) descending -- recency is the store
    position of the last purchase, so two items bought in the same basket are ordered
    by the store's seeded in-basket order. All other items follow by global training
    popularity (:class:`MostPopular`). Scores are exact small integers in float32:
    the dense popularity rank for non-history items and ``max_rank + 1 +
    personal_rank`` for history items (``personal_rank`` = 1 for the weakest).
    """

    def _dense_rank(self) -> np.ndarray:
        """Dense ranks of the popularity counts (0 = least popular), cached: they keep
        the order and ties of the counts and stay exact in float32 for any count."""
        counts = self._require_fit()
        cached = getattr(self, "_dense", None)
        if cached is not None and cached[0] is counts:
            return cached[1]
        order = np.argsort(counts, kind="stable")
        new = np.ones(len(counts), dtype=bool)
        new[1:] = counts[order][1:] != counts[order][:-1]
        dense = np.empty(len(counts), dtype=np.float64)
        dense[order] = np.cumsum(new) - 1
        self._dense = (counts, dense)
        return dense

    def score(self, store: SequenceStore, examples: Examples) -> np.ndarray:
        """``float32[m, n_items + 1]`` scores from each example's visible history."""
        counts = self._require_fit()
        base = self._dense_rank()
        m, v = len(examples), store.n_items + 1
        out = np.repeat(base[None, :], m, axis=0)
        ev, row = _prefix_events(store.offsets[examples.customer].astype(np.int64), examples.end)
        keep = _purchase_mask(store)[ev]
        ev, row = ev[keep], row[keep]
        if len(ev):
            key = row * v + store.item[ev].astype(np.int64)
            # Sort by key then event index: per (row, item) group, its size is the
            # purchase count and its last element the most recent purchase.
            order = np.lexsort((ev, key))
            key_s, ev_s = key[order], ev[order]
            last = np.ones(len(key_s), dtype=bool)
            last[:-1] = key_s[1:] != key_s[:-1]
            ukey, last_ev = key_s[last], ev_s[last]
            n_buy = np.diff(np.concatenate([[-1], np.flatnonzero(last)]))
            urow, uitem = ukey // v, ukey % v
            # Rank inside each row by (count, recency), ascending -> 1 = weakest.
            o = np.lexsort((last_ev, n_buy, urow))
            row_start = np.searchsorted(urow[o], urow[o], side="left")
            prank = np.empty(len(o), dtype=np.float64)
            prank[o] = np.arange(len(o)) - row_start + 1
            out[urow, uitem] = base.max() + 1 + prank
        return out.astype(np.float32)
