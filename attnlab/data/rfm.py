"""Recency, frequency, monetary and tenure of event ranges: one definition, read by the
RFM / BG/NBD-style baselines (:mod:`attnlab.baselines.rfm`) and by the churn head's
history summary (:func:`attnlab.data.batching.history_summary`). Definitions in
:mod:`attnlab.baselines.rfm`'s module docstring."""

from __future__ import annotations

import dataclasses
import weakref

import numpy as np
import pandas as pd

from attnlab.data.schema import EventType
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import DAY

FEATURES = ("recency_days", "frequency", "monetary", "tenure_days")


@dataclasses.dataclass(frozen=True)
class PurchaseIndex:
    """The store's ``PURCHASE`` events, indexed for range queries by ``searchsorted``.

    Attributes:
      pidx: ``int64[p]`` store index of each purchase event (ascending).
      time: ``int64[p]`` their times; ``day``: their days (``time // DAY``).
      baskets: ``int64[p + 1]`` cumulative count of new purchase baskets (a basket id or
        customer change starts one): baskets in ``pidx[k0:k1]`` = ``baskets[k1] - baskets[k0]``.
      days: ``int64[p + 1]`` the same for new purchase days.
      value: ``float64[p + 1]`` cumulative purchase value.
    """

    pidx: np.ndarray
    time: np.ndarray
    day: np.ndarray
    baskets: np.ndarray
    days: np.ndarray
    value: np.ndarray

    def bounds(self, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(k0, k1)``: the purchases of the event range ``[starts[i], ends[i])`` are ``pidx[k0[i]:k1[i]]``."""
        return np.searchsorted(self.pidx, starts), np.searchsorted(self.pidx, ends)


_INDEXES: dict[int, PurchaseIndex] = {}


def purchase_index(store: SequenceStore) -> PurchaseIndex:
    """The :class:`PurchaseIndex` of ``store``, built once per store object (stores are
    immutable; a changed store, e.g. ``dataclasses.replace``, is a new object). Range
    queries per batch (the churn summary) then cost a ``searchsorted``, not a pass over
    every event."""
    hit = _INDEXES.get(id(store))
    if hit is None:
        offsets = np.asarray(store.offsets)
        pidx = np.flatnonzero(np.asarray(store.event_type) == EventType.PURCHASE)
        cust = np.searchsorted(offsets, pidx, side="right") - 1
        time = np.asarray(store.time)[pidx]
        day = time // DAY
        bas = np.asarray(store.basket)[pidx]

        def starts_new(key: np.ndarray) -> np.ndarray:
            new = np.ones(len(pidx), dtype=bool)
            new[1:] = (key[1:] != key[:-1]) | (cust[1:] != cust[:-1])
            return np.concatenate([[0], np.cumsum(new)])

        hit = PurchaseIndex(pidx=pidx, time=time, day=day, baskets=starts_new(bas), days=starts_new(day),
                            value=np.concatenate([[0.0], np.cumsum(np.asarray(store.value, dtype=np.float64)[pidx])]))
        _INDEXES[id(store)] = hit
        weakref.finalize(store, _INDEXES.pop, id(store), None)
    return hit


def rfm_from_ranges(store: SequenceStore, starts: np.ndarray, ends: np.ndarray,
                    cutoff: np.ndarray) -> pd.DataFrame:
    """RFM + tenure of the event ranges ``[starts[i], ends[i])`` at ``cutoff[i]``.

    ``starts[i]`` must be a customer's first event (``offsets[c]``). Vectorised with
    cumulative sums over the store's purchase events and ``searchsorted``.

    Returns:
      DataFrame ``[m]`` with float64 columns :data:`FEATURES`.
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    cutoff = np.asarray(cutoff, dtype=np.int64)
    time = np.asarray(store.time)
    ix = purchase_index(store)
    k0, k1 = ix.bounds(starts, ends)
    freq = (ix.baskets[k1] - ix.baskets[k0]).astype(np.float64)
    has = freq > 0
    spend = ix.value[k1] - ix.value[k0]
    last_t = ix.time[np.maximum(k1 - 1, 0)] if len(ix.pidx) else np.zeros(len(ends), np.int64)
    nonempty = ends > starts
    first_t = np.where(nonempty, time[np.minimum(starts, max(len(time) - 1, 0))] if len(time) else 0, cutoff)
    tenure = np.maximum(cutoff - first_t, 0) / DAY
    recency = np.where(has, np.maximum(cutoff - np.where(has, last_t, cutoff), 0) / DAY, tenure)
    monetary = np.where(has, spend / np.maximum(freq, 1.0), 0.0)
    return pd.DataFrame({"recency_days": recency, "frequency": freq,
                         "monetary": monetary, "tenure_days": tenure})
