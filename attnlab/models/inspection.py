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
    count, over the items that occur as a target (NaN with fewer than 3 such items)."""
    from scipy.stats import spearmanr

    counts = np.asarray(counts)[1:]
    bias = np.asarray(model.catalogue.bias[...])[1:]
    seen = counts > 0
    if seen.sum() < 3:
        return float("nan")
    return float(spearmanr(bias[seen], counts[seen]).statistic)
