"""Recency-frequency logistic churn baseline (the simplest honest churn model).

Features at each example's cut-off, from its visible history only: log1p(days since
the last purchase), log1p(number of purchases), log1p(days since the first event).
A scikit-learn logistic regression is fitted on ``split.train`` examples. The full
RFM(+tenure) baseline with quintile segments lives in the RFM module.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from attnlab.data.schema import EventType
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples

DAY = 86400.0


def recency_frequency_features(store: SequenceStore, ex: Examples) -> np.ndarray:
    """``float64[m, 3]`` features from ``store[offsets[c]:end]`` of each example."""
    starts = np.asarray(store.offsets)[ex.customer]
    ends = np.asarray(ex.end)
    is_purchase = (np.asarray(store.event_type) == EventType.PURCHASE).astype(np.int64)
    csum = np.concatenate([[0], np.cumsum(is_purchase)])
    n_purchases = csum[ends] - csum[starts]
    # index of the last purchase before `end`: last position where the cumsum steps up
    pidx = np.flatnonzero(is_purchase)
    last_pos = np.searchsorted(pidx, ends) - 1
    has = (last_pos >= 0) & (n_purchases > 0)
    last_t = np.where(has, np.asarray(store.time)[pidx[np.maximum(last_pos, 0)]], ex.cutoff)
    first_t = np.where(ends > starts, np.asarray(store.time)[np.minimum(starts, len(store.time) - 1)], ex.cutoff)
    recency = (ex.cutoff - last_t) / DAY
    tenure = (ex.cutoff - first_t) / DAY
    return np.stack([np.log1p(recency.clip(0)), np.log1p(n_purchases), np.log1p(tenure.clip(0))], axis=1)


class RecencyFrequency:
    def fit(self, store: SequenceStore, train: Examples) -> "RecencyFrequency":
        x = recency_frequency_features(store, train)
        y = train.label.astype(int)
        if len(np.unique(y)) < 2:
            raise ValueError("recency_frequency: training labels are all one class; move the cut-off.")
        self.model = LogisticRegression(max_iter=1000).fit(x, y)
        return self

    def prob(self, store: SequenceStore, ex: Examples) -> np.ndarray:
        return self.model.predict_proba(recency_frequency_features(store, ex))[:, 1]
