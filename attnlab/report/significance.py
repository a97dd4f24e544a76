"""Paired significance of one contender against another on the same test examples.

Every run scores all contenders on the same test examples, so a comparison is paired:
per seed, the two contenders' per-example values (or scores, for AUC) line up row by
row. :func:`paired_bootstrap` resamples examples with replacement *within each seed*
(the seeds' splits differ), recomputes the seed-averaged difference of the statistic,
and reports the observed difference, a percentile confidence interval and a two-sided
p-value (twice the smaller tail of the bootstrap distribution around zero; Efron &
Tibshirani 1993, ch. 16). For per-example means it also reports the Wilcoxon
signed-rank test on the pooled pairs (scipy), a rank-based check that does not assume
normal differences.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from attnlab.eval.metrics import roc_auc_rows

Statistic = Callable[[np.ndarray, np.ndarray], float]


def mean_stat(values: np.ndarray, labels: np.ndarray | None = None) -> float:
    """Mean over the examples where the metric is defined (NaN rows are excluded)."""
    values = np.asarray(values, np.float64)
    keep = np.isfinite(values)
    return float(values[keep].mean()) if keep.any() else float("nan")


def auc_stat(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC with ties counted half (:func:`attnlab.eval.metrics.roc_auc`); NaN if one class."""
    return float(roc_auc_rows(labels, scores)[0])


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """``a`` minus ``b``: observed difference, its ``level`` CI, and p-values."""

    diff: float
    ci_low: float
    ci_high: float
    p_bootstrap: float
    p_wilcoxon: float | None
    n_pairs: int
    n_seeds: int
    level: float = 0.95

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_bootstrap < alpha


def paired_bootstrap(
    a: Sequence[np.ndarray],
    b: Sequence[np.ndarray],
    *,
    labels: Sequence[np.ndarray] | None = None,
    statistic: Statistic = mean_stat,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedTest:
    """Paired bootstrap of ``statistic(a) - statistic(b)``, averaged over seeds.

    Args:
      a, b: one array per seed, aligned example by example (same length per seed).
      labels: per seed, what ``statistic`` needs besides the values (e.g. churn labels
        for :func:`auc_stat`); resampled with the same indices.
      statistic: ``(values, labels) -> float``; :func:`mean_stat` for per-example
        metrics such as HR@10 or NDCG@10, :func:`auc_stat` for AUC.
    """
    if len(a) != len(b) or not len(a):
        raise ValueError(f"need the same non-zero number of seeds for both contenders, got {len(a)} and {len(b)}")
    labels = list(labels) if labels is not None else [None] * len(a)
    a = [np.asarray(x, np.float64) for x in a]
    b = [np.asarray(x, np.float64) for x in b]
    for s, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape:
            raise ValueError(f"seed {s}: contenders scored different examples ({x.shape} vs {y.shape}); "
                             "a paired test needs both from the same run")
    observed = float(np.mean([statistic(x, l) - statistic(y, l) for x, y, l in zip(a, b, labels)]))
    rng = np.random.default_rng(seed)
    boot = np.zeros(n_boot)
    for x, y, l in zip(a, b, labels):
        n = len(x)
        for i in range(n_boot):
            idx = rng.integers(0, n, n)
            li = None if l is None else np.asarray(l)[idx]
            boot[i] += statistic(x[idx], li) - statistic(y[idx], li)
    boot /= len(a)
    boot = boot[np.isfinite(boot)]
    alpha = 1.0 - level
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2]) if len(boot) else (np.nan, np.nan)
    if len(boot) and np.all(boot == 0) and observed == 0:
        p = 1.0
    elif len(boot):
        p = float(min(1.0, 2.0 * min(np.mean(boot <= 0), np.mean(boot >= 0))))
        p = max(p, 1.0 / len(boot))  # resolution of the bootstrap: never report p = 0
    else:
        p = float("nan")
    p_w = None
    if statistic is mean_stat:
        p_w = wilcoxon_p(np.concatenate(a), np.concatenate(b))
    return PairedTest(diff=observed, ci_low=float(lo), ci_high=float(hi), p_bootstrap=p, p_wilcoxon=p_w,
                      n_pairs=int(sum(len(x) for x in a)), n_seeds=len(a), level=level)


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value on paired values (NaN pairs dropped; 1.0 if
    every pair is tied)."""
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    if not np.any(d != 0):
        return 1.0
    return float(stats.wilcoxon(a[keep], b[keep], zero_method="wilcox").pvalue)
