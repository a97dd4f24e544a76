"""Baselines by config name (``task.baselines: [most_popular, personal_repeat, ...]``).

Ranking baselines (next_item / next_basket) are fitted on the ``train_end`` prefixes and
score the catalogue from each example's visible history; churn baselines are fitted on
the labelled ``split.train`` examples.
"""

from __future__ import annotations

from typing import Any, Callable

from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Split

RANKING = {
    "most_popular": ("attnlab.baselines.popularity", "MostPopular"),
    "personal_repeat": ("attnlab.baselines.popularity", "PersonalRepeat"),
    "rfm_segment_popularity": ("attnlab.baselines.rfm", "RFMSegmentPopularity"),
    "item_knn": ("attnlab.baselines.cf", "ItemKNN"),
    "ease": ("attnlab.baselines.cf", "EASE"),
    "als": ("attnlab.baselines.cf", "ALS"),
    "bpr": ("attnlab.baselines.cf", "BPR"),
}
CHURN = {
    "recency_frequency": ("attnlab.baselines.recency", "RecencyFrequency"),
    "rfm": ("attnlab.baselines.rfm", "RFMChurn"),
    "bgnbd": ("attnlab.baselines.bgnbd", "BGNBDChurn"),
}


def _cls(table: dict, name: str, kind: str):
    if name not in table:
        raise KeyError(f"unknown {kind} baseline {name!r}; available: {sorted(table)}. "
                       f"Set task.baselines to a list of these.")
    import importlib

    module, attr = table[name]
    return getattr(importlib.import_module(module), attr)


def ranking_baselines(names, store: SequenceStore, split: Split) -> dict[str, Callable]:
    """``{name: score_fn}`` of fitted ranking baselines."""
    return {n: _cls(RANKING, n, "ranking")().fit(store, split.train_end).score for n in names}


def churn_baselines(names, store: SequenceStore, split: Split, *, horizon_days: float) -> dict[str, Callable]:
    """``{name: prob_fn}`` of fitted churn baselines."""
    out = {}
    for n in names:
        cls = _cls(CHURN, n, "churn")
        kwargs: dict[str, Any] = {"horizon_days": horizon_days} if n == "bgnbd" else {}
        out[n] = cls(**kwargs).fit(store, split.train).prob
    return out
