"""Paired significance: a planted difference is found, a planted no-difference is not."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from attnlab.report import significance as sig


def _hits(rng, n, p):
    return (rng.random(n) < p).astype(np.float64)


def test_planted_difference_is_significant():
    rng = np.random.default_rng(1)
    base = [rng.random(2000) for _ in range(3)]  # a per-customer "difficulty"
    a = [(u < 0.30).astype(float) for u in base]  # the better model hits 30%
    b = [(u < 0.22).astype(float) for u in base]  # the baseline hits 22%, paired on the same customers
    t = sig.paired_bootstrap(a, b, n_boot=1000)
    assert t.diff == pytest.approx(np.mean([x.mean() - y.mean() for x, y in zip(a, b)]))
    assert 0.07 < t.diff < 0.09
    assert t.ci_low > 0 and t.ci_high > t.ci_low
    assert t.p_bootstrap <= 0.002 and t.significant()
    assert t.p_wilcoxon is not None and t.p_wilcoxon < 1e-6
    assert t.n_pairs == 6000 and t.n_seeds == 3


def test_planted_no_difference_is_not_significant():
    rng = np.random.default_rng(2)
    a = [_hits(rng, 2000, 0.25) for _ in range(3)]
    b = [_hits(rng, 2000, 0.25) for _ in range(3)]  # same distribution, independent draws
    t = sig.paired_bootstrap(a, b, n_boot=1000)
    assert t.ci_low < 0 < t.ci_high
    assert t.p_bootstrap > 0.05 and not t.significant()
    assert t.p_wilcoxon > 0.05


def test_identical_contenders_give_p_one():
    x = [np.array([1.0, 0.0, 0.5, 0.25])]
    t = sig.paired_bootstrap(x, x, n_boot=100)
    assert t.diff == 0 and t.p_bootstrap == 1.0 and t.p_wilcoxon == 1.0


def test_nan_rows_are_excluded_like_the_metric():
    a = [np.array([1.0, np.nan, 0.0, 1.0])]
    b = [np.array([0.0, np.nan, 0.0, 1.0])]
    t = sig.paired_bootstrap(a, b, n_boot=200)
    assert t.diff == pytest.approx(1 / 3)


def test_auc_stat_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(500), 1)  # many ties
    labels = (rng.random(500) < 0.3).astype(float)
    assert sig.auc_stat(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert np.isnan(sig.auc_stat(scores, np.zeros(500)))


def test_paired_auc_planted_difference():
    rng = np.random.default_rng(4)
    labels = [(rng.random(3000) < 0.2).astype(float) for _ in range(3)]
    good = [lab * 1.0 + rng.normal(0, 0.8, lab.size) for lab in labels]
    poor = [lab * 0.3 + rng.normal(0, 0.8, lab.size) for lab in labels]
    t = sig.paired_bootstrap(good, poor, labels=labels, statistic=sig.auc_stat, n_boot=300)
    expected = np.mean([roc_auc_score(l, g) - roc_auc_score(l, p) for l, g, p in zip(labels, good, poor)])
    assert t.diff == pytest.approx(expected)
    assert t.ci_low > 0 and t.p_bootstrap < 0.01
    assert t.p_wilcoxon is None  # a rank test of per-example values means nothing for AUC


def test_mismatched_examples_fail_clearly():
    with pytest.raises(ValueError, match="different examples"):
        sig.paired_bootstrap([np.zeros(3)], [np.zeros(4)])
    with pytest.raises(ValueError, match="same non-zero number of seeds"):
        sig.paired_bootstrap([np.zeros(3)], [])
