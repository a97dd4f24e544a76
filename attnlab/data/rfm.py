"""Recency, frequency, monetary and tenure of event ranges: one definition, read by the
RFM / BG/NBD-style baselines (:mod:`attnlab.baselines.rfm`) and by the churn head's
history summary (:func:`attnlab.data.batching.history_summary`). Definitions in
:mod:`attnlab.baselines.rfm`'s module docstring."""

from __future__ import annotations

import numpy as np
import pandas as pd

from attnlab.data.schema import EventType
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import DAY

FEATURES = ("recency_days", "frequency", "monetary", "tenure_days")


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
    offsets = np.asarray(store.offsets)
    time = np.asarray(store.time)
    pidx = np.flatnonzero(np.asarray(store.event_type) == EventType.PURCHASE)
    cust = np.searchsorted(offsets, pidx, side="right") - 1
    bas = np.asarray(store.basket)[pidx]
    new = np.ones(len(pidx), dtype=bool)
    new[1:] = (bas[1:] != bas[:-1]) | (cust[1:] != cust[:-1])
    n_new = np.concatenate([[0], np.cumsum(new)])
    val = np.concatenate([[0.0], np.cumsum(np.asarray(store.value, dtype=np.float64)[pidx])])
    k0, k1 = np.searchsorted(pidx, starts), np.searchsorted(pidx, ends)
    freq = (n_new[k1] - n_new[k0]).astype(np.float64)
    has = freq > 0
    spend = val[k1] - val[k0]
    last_t = time[pidx[np.maximum(k1 - 1, 0)]] if len(pidx) else np.zeros(len(ends), np.int64)
    nonempty = ends > starts
    first_t = np.where(nonempty, time[np.minimum(starts, max(len(time) - 1, 0))] if len(time) else 0, cutoff)
    tenure = np.maximum(cutoff - first_t, 0) / DAY
    recency = np.where(has, np.maximum(cutoff - np.where(has, last_t, cutoff), 0) / DAY, tenure)
    monetary = np.where(has, spend / np.maximum(freq, 1.0), 0.0)
    return pd.DataFrame({"recency_days": recency, "frequency": freq,
                         "monetary": monetary, "tenure_days": tenure})
