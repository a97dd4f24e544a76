"""Churn metrics vs hand-computed values and scikit-learn."""

import numpy as np
import pytest
from sklearn import metrics as skm

from attnlab.eval import metrics as M


def test_hand_cases():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    assert M.roc_auc(y, p) == pytest.approx(0.75)
    # thresholds 0.8 (P=1, R=.5), 0.4 (P=.5), 0.35 (P=2/3, R=1): AP = .5*1 + .5*2/3
    assert M.average_precision(y, p) == pytest.approx(0.5 + 1 / 3)
    assert M.brier(y, p) == pytest.approx(np.mean([0.01, 0.16, 0.4225, 0.04]))
    assert M.log_loss(y, p) == pytest.approx(-np.mean(np.log([0.9, 0.6, 0.35, 0.8])))
    assert M.roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5     # ties count 1/2
    assert np.isnan(M.roc_auc(np.ones(3), np.array([0.1, 0.2, 0.3])))  # one class


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tied", [False, True])
def test_match_sklearn(seed, tied):
    rng = np.random.default_rng(seed)
    n = 500
    y = (rng.random(n) < 0.3).astype(np.float64)
    p = np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.2, n), 0.001, 0.999)
    if tied:
        p = np.round(p, 1).clip(0.05, 0.95)
    assert M.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert M.average_precision(y, p) == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    assert M.log_loss(y, p) == pytest.approx(skm.log_loss(y, p), rel=1e-9)
    assert M.brier(y, p) == pytest.approx(skm.brier_score_loss(y, p), rel=1e-12)
    out = M.churn_metrics(y, p)
    assert set(out) == {"auc", "pr_auc", "log_loss", "brier", "base_rate"}


def test_errors():
    with pytest.raises(ValueError, match="0 or 1"):
        M.roc_auc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.churn_metrics(np.array([0, 1]), np.array([0.1, 1.2]))
