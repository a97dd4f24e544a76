"""Hyperparameter choice for ranking baselines on VALIDATION examples only.

:func:`tune_on_valid` fits a baseline on ``split.train_end`` and scores
``split.valid`` with the task's own evaluator; it reads ``split.protocol``,
``split.train_end`` and ``split.valid`` and nothing else of the split (never
``split.test``). The search is coordinate ascent over a small grid: starting from the
defaults, each hyperparameter in turn takes the grid value with the best validation
metric while the others stay fixed, for up to ``sweeps`` rounds or until a round
changes nothing. Ties keep the incumbent, so the defaults win unless beaten.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Split

TIFU_GRID: dict[str, tuple] = {
    "n_groups": (1, 3, 7, 12),
    "r_b": (0.8, 0.9, 1.0),
    "r_g": (0.6, 0.7, 0.9, 1.0),
    "k": (100, 300, 900),
    "alpha": (0.2, 0.5, 0.7, 0.9),
}
"""Search space of :func:`tune_tifu_knn` (the paper's ranges, m up to 12)."""

UPCF_GRID: dict[str, tuple] = {
    "recency": (1, 5, 10, 25, 0),
    "asymmetry": (0.25, 0.5, 0.75, 1.0),
    "locality": (1.0, 5.0, 10.0, 50.0),
    "k": (50, 100, 300),
}
"""Search space of :func:`tune_upcf` (``recency = 0`` = every basket)."""


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """Outcome of :func:`tune_on_valid`.

    Attributes:
      params: the chosen hyperparameters (keyword arguments of the model class).
      score: their validation metric.
      metric: the metric name, e.g. ``"ndcg@10"``.
      trials: every evaluated ``(params, score)`` in evaluation order.
    """

    params: dict[str, Any]
    score: float
    metric: str
    trials: list[tuple[dict[str, Any], float]]


def _evaluator(protocol: str):
    from attnlab.eval.evaluate import evaluate_next_basket, evaluate_next_item

    table = {"next_basket": evaluate_next_basket, "next_item": evaluate_next_item}
    if protocol not in table:
        raise ValueError(f"tune_on_valid ranks items; split.protocol {protocol!r} is not one of "
                         f"{sorted(table)}")
    return table[protocol]


def valid_metric(model_cls, params: Mapping[str, Any], store: SequenceStore, split: Split, *,
                 metric: str = "ndcg@10", batch_size: int = 256) -> float:
    """Fits ``model_cls(**params)`` on ``split.train_end`` and returns ``metric`` on ``split.valid``."""
    match = re.fullmatch(r"[a-z_]+@(\d+)", metric)
    if match is None:
        raise ValueError(f"metric must look like 'ndcg@10', got {metric!r}")
    model = model_cls(**params).fit(store, split.train_end)
    res = _evaluator(split.protocol)(model.score, store, split.valid, ks=(int(match.group(1)),),
                                     batch_size=batch_size, progress=False)
    if metric not in res.metrics:
        raise ValueError(f"{metric!r} is not reported for {split.protocol}; got {sorted(res.metrics)}")
    return float(res.metrics[metric])


def tune_on_valid(model_cls, store: SequenceStore, split: Split, *, grid: Mapping[str, Sequence],
                  init: Mapping[str, Any] | None = None, metric: str = "ndcg@10", sweeps: int = 2,
                  batch_size: int = 256) -> TuneResult:
    """Coordinate-ascent choice of ``model_cls`` hyperparameters on ``split.valid``.

    Args:
      model_cls: a ranking baseline class (``fit(store, train_end)``, ``score``).
      store: the event store.
      split: reads ``protocol``, ``train_end`` and ``valid`` only.
      grid: name -> candidate values (keyword arguments of ``model_cls``).
      init: starting values (default: the class defaults, i.e. no keyword).
      metric: validation metric to maximise (``"ndcg@10"``, ``"recall@10"``, ...).
      sweeps: maximum rounds over all hyperparameters.
      batch_size: examples scored per call.

    Returns:
      :class:`TuneResult`.
    """
    current = dict(init or {})
    seen: dict[tuple, float] = {}
    trials: list[tuple[dict[str, Any], float]] = []

    def evaluate(params: dict[str, Any]) -> float:
        key = tuple(sorted(params.items()))
        if key not in seen:
            seen[key] = valid_metric(model_cls, params, store, split, metric=metric, batch_size=batch_size)
            trials.append((dict(params), seen[key]))
        return seen[key]

    best = evaluate(current)
    for _ in range(max(sweeps, 1)):
        changed = False
        for name, values in grid.items():
            for value in values:
                cand = {**current, name: value}
                s = evaluate(cand)
                if s > best:
                    best, current, changed = s, cand, True
        if not changed:
            break
    return TuneResult(params=current, score=best, metric=metric, trials=trials)


def tune_tifu_knn(store: SequenceStore, split: Split, *, grid: Mapping[str, Sequence] = TIFU_GRID,
                  metric: str = "ndcg@10", sweeps: int = 2) -> TuneResult:
    """:func:`tune_on_valid` for :class:`~attnlab.baselines.nbr.TIFUKNN` from the paper's
    Dunnhumby setting (:data:`~attnlab.baselines.nbr.TIFU_DUNNHUMBY`)."""
    from attnlab.baselines.nbr import TIFU_DUNNHUMBY, TIFUKNN

    return tune_on_valid(TIFUKNN, store, split, grid=grid, init=TIFU_DUNNHUMBY, metric=metric, sweeps=sweeps)


def tune_upcf(store: SequenceStore, split: Split, *, grid: Mapping[str, Sequence] = UPCF_GRID,
              metric: str = "ndcg@10", sweeps: int = 2) -> TuneResult:
    """:func:`tune_on_valid` for :class:`~attnlab.baselines.nbr.UPCF` from its defaults."""
    from attnlab.baselines.nbr import UPCF

    init = {"recency": 10, "asymmetry": 0.75, "locality": 10.0, "k": 100}
    return tune_on_valid(UPCF, store, split, grid=grid, init=init, metric=metric, sweeps=sweeps)
