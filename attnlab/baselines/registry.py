"""Baselines by config name (``task.baselines: [most_popular, personal_repeat, ...]``).

Ranking baselines (next_item / next_basket) are fitted on the ``train_end`` prefixes and
score the catalogue from each example's visible history; churn baselines are fitted on
the labelled ``split.train`` examples. Churn baselines listed in :data:`SELECT_ON_VALID`
also receive ``split.valid`` to choose their hyperparameters (never ``split.test``).

Both builders return ``{name: FittedBaseline}``: the fitted predictor and its fit wall
time (``time.perf_counter``, construction + ``fit``; the module import is excluded).
"""

from __future__ import annotations

import dataclasses
import time
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
    "p_topfreq": ("attnlab.baselines.nbr", "PTopFreq"),
    "up_cf": ("attnlab.baselines.nbr", "UPCF"),
    "tifu_knn": ("attnlab.baselines.nbr", "TIFUKNN"),
    "planted_oracle": ("attnlab.baselines.planted_oracle", "PlantedOracle"),  # synthetic cue mode: the ceiling
}
CHURN = {
    "recency_frequency": ("attnlab.baselines.recency", "RecencyFrequency"),
    "rfm": ("attnlab.baselines.rfm", "RFMChurn"),
    "bgnbd": ("attnlab.baselines.bgnbd", "BGNBDChurn"),
    "hgb": ("attnlab.baselines.gbm", "HGBChurn"),
}
HORIZON = {"bgnbd", "hgb"}
"""Churn baselines constructed with ``horizon_days``."""
SELECT_ON_VALID = {"hgb"}
"""Churn baselines fitted as ``fit(store, split.train, valid=split.valid)``: each takes a
``grid`` of candidates and exposes the chosen point as ``params_``."""


def _cls(table: dict, name: str, kind: str):
    if name not in table:
        raise KeyError(f"unknown {kind} baseline {name!r}; available: {sorted(table)}. "
                       f"Set task.baselines to a list of these.")
    import importlib

    module, attr = table[name]
    return getattr(importlib.import_module(module), attr)


@dataclasses.dataclass(frozen=True)
class FittedBaseline:
    """A fitted baseline: ``predict`` is a ranking ``score_fn(store, examples)`` or a churn
    ``prob_fn(store, examples)``; ``fit_s`` its fit wall time in seconds."""

    predict: Callable
    fit_s: float


def _fit(cls, kwargs: dict[str, Any], data, store: SequenceStore, method: str,
         fit_kwargs: dict[str, Any] | None = None) -> FittedBaseline:
    t0 = time.perf_counter()
    fitted = cls(**kwargs).fit(store, data, **(fit_kwargs or {}))
    return FittedBaseline(predict=getattr(fitted, method), fit_s=time.perf_counter() - t0)


def ranking_baselines(names, store: SequenceStore, split: Split) -> dict[str, FittedBaseline]:
    """``{name: FittedBaseline}`` of ranking baselines fitted on the ``train_end`` prefixes."""
    return {n: _fit(_cls(RANKING, n, "ranking"), {}, split.train_end, store, "score") for n in names}


def churn_baselines(names, store: SequenceStore, split: Split, *, horizon_days: float,
                    select: Split | None = None) -> dict[str, FittedBaseline]:
    """``{name: FittedBaseline}`` of churn baselines fitted on ``split.train``.

    ``select``: where the :data:`SELECT_ON_VALID` baselines choose their hyperparameters
    (``select.train`` fitted, ``select.valid`` scored), when ``split.valid`` is in-sample
    (a refit split, :func:`attnlab.data.splits.churn_split`); the chosen point is then
    refitted on ``split.train``. ``fit_s`` counts both fits. None = ``split`` itself.
    """
    out = {}
    for n in names:
        cls = _cls(CHURN, n, "churn")
        kwargs: dict[str, Any] = {"horizon_days": horizon_days} if n in HORIZON else {}
        if n not in SELECT_ON_VALID:
            out[n] = _fit(cls, kwargs, split.train, store, "prob")
        elif select is None:
            out[n] = _fit(cls, kwargs, split.train, store, "prob", {"valid": split.valid})
        else:
            t0 = time.perf_counter()
            chosen = cls(**kwargs).fit(store, select.train, valid=select.valid).params_
            refit = _fit(cls, {**kwargs, "grid": {k: (v,) for k, v in chosen.items()}}, split.train, store, "prob")
            out[n] = FittedBaseline(predict=refit.predict, fit_s=time.perf_counter() - t0)
    return out
