"""Read learned, interpretable parameters out of a model.

* :func:`decay_slopes` -- time-decay slopes per layer and head (``time_decay``): which
  heads look far back (small slope) and which only at the last days (large slope).
* :func:`forgetting_factors` -- per-head ``gamma_h`` of the ``linear`` family.
* :func:`bias_popularity_correlation` -- does the catalogue bias encode popularity?
  (a training-signal check: an undertrained softmax head has a flat bias).
"""

from __future__ import annotations

import numpy as np

from attnlab.models.attention_layers import LinearAttention, TimeDecayAttention, decay_horizon_days
from attnlab.models.sequence_model import SequenceModel


def _layers(model: SequenceModel, cls) -> dict[str, object]:
    blocks = getattr(model.backbone, "blocks", ())
    return {f"layer{i}": b.attention for i, b in enumerate(blocks) if isinstance(b.attention, cls)}


def decay_slopes(model: SequenceModel) -> dict[str, np.ndarray]:
    """``{"layer0": float32[heads], ...}`` current slopes (per day, >= 0) of every
    time-decay layer; empty for other families."""
    return {k: np.asarray(a.slopes()) for k, a in _layers(model, TimeDecayAttention).items()}


def decay_horizons(model: SequenceModel) -> dict[str, np.ndarray]:
    """``{"layer0": float64[heads], ...}`` days after which each head down-weights an
    event 10x (a readable version of :func:`decay_slopes`)."""
    out = {}
    for k, a in _layers(model, TimeDecayAttention).items():
        out[k] = np.array([decay_horizon_days(float(s), decay_fn=a.decay_fn) for s in np.asarray(a.slopes())])
    return out


def forgetting_factors(model: SequenceModel) -> dict[str, np.ndarray]:
    """``{"layer0": float32[heads], ...}`` per-head ``gamma_h`` of every linear layer
    with a learned decay (1 = no forgetting)."""
    out = {}
    for k, a in _layers(model, LinearAttention).items():
        ld = a.log_decay()
        out[k] = np.exp(np.asarray(ld)) if ld is not None else np.ones(a.n_heads, np.float32)
    return out


def bias_popularity_correlation(model: SequenceModel, counts) -> float:
    """Spearman rank correlation between the catalogue bias and the training-target
    count, over the items that occur as a target (NaN with fewer than 3 such items).

    Same value as ``scipy.stats.spearmanr`` (ties get their average rank), computed with
    numpy: importing ``scipy.stats`` costs a few seconds, more than a tiny run trains."""
    counts = np.asarray(counts)[1:]
    bias = np.asarray(model.catalogue.bias[...])[1:]
    seen = counts > 0
    if seen.sum() < 3:
        return float("nan")
    return spearman(bias[seen], counts[seen])


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (``scipy.stats.rankdata``'s default)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]  # start of each run of equal values
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(xs)]  # exclusive
    avg = (starts + 1 + ends) / 2.0  # mean of the ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = avg[group]
    return ranks


def spearman(a, b) -> float:
    """Spearman rank correlation of two 1-d arrays (NaN if either is constant or has NaN)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if np.isnan(a).any() or np.isnan(b).any():
        return float("nan")
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    if denom == 0:
        return float("nan")
    return float(np.clip((ra * rb).sum() / denom, -1.0, 1.0))
