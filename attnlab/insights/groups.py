"""Metrics broken down by a group label, with bootstrap CIs and the largest gap.

The one group-breakdown routine behind :mod:`attnlab.insights.fairness` (demographic
groups) and :mod:`attnlab.insights.cold_start` (history-length buckets). Input is the
per-example metric arrays of :class:`attnlab.eval.evaluate.EvalResult` (aligned with
the examples' rows) and one group label per example.

* Missing labels (None, NaN, empty, ``"<unknown>"``) form an explicit ``"unknown"``
  group: rows are never dropped silently.
* NaN metric values (metric undefined for that example, e.g. ``*_repeat`` without
  repeat targets) are left out of that metric's mean; ``n`` counts the rest.
* CIs are percentile bootstrap intervals of the group mean (Efron & Tibshirani, 1993),
  resampling examples within the group, seeded.
* The gap of a metric is ``max - min`` of the group means over the known groups with
  at least ``min_group_size`` values (``in_gap`` in the table says which; default 20,
  so a group of a handful of customers cannot make the gap), with a bootstrap CI of
  the difference between those two groups (independent resamples). That CI is
  conditional on which two groups came out extreme, so it is optimistic when there are
  many groups; ``p_perm`` accounts for the picking: a permutation test of "every group
  has the same distribution" on the same ``max - min`` statistic (group labels
  shuffled among the examples in the gap, groups re-picked in every permutation).
  Read a gap as real when ``p_perm`` is small, not from the CI alone.
* Resamples in which a statistic is undefined (an AUC resample with one class) are
  left out of that CI; ``n_boot`` in the table says how many were kept.
* When per-example churn ``prob`` and ``label`` are present, the per-group AUC-ROC
  (Mann-Whitney form, ties averaged) is added as metric ``auc``; the group means of
  ``prob`` and ``label`` themselves are the predicted and observed churn rates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from attnlab.data.schema import UNKNOWN_LABEL
from attnlab.eval.metrics import roc_auc_rows

UNKNOWN = "unknown"
#: Per-example arrays that are bookkeeping, not metrics (left out by default).
BOOKKEEPING = ("n_targets", "n_repeat_targets", "planted", "planted/trigger_back", "planted/visible")
_MAX_DRAW = 4_000_000  # bootstrap indices drawn per chunk


@dataclasses.dataclass(frozen=True)
class GroupBreakdown:
    """Result of :func:`group_breakdown`.

    Attributes:
      table: one row per (``by``, ``metric``, ``group``): ``n`` (examples with a value),
        ``mean``, ``ci_low``, ``ci_high``, ``n_boot`` (resamples behind the CI), ``in_gap``.
      gaps: one row per (``by``, ``metric``): ``n_groups`` (in the gap), ``max_group``,
        ``max_mean``, ``min_group``, ``min_mean``, ``gap``, ``gap_ci_low``, ``gap_ci_high``,
        ``p_perm`` (permutation p-value of the gap, see the module docstring).
    """

    table: pd.DataFrame
    gaps: pd.DataFrame

    @staticmethod
    def concat(parts: Sequence["GroupBreakdown"]) -> "GroupBreakdown":
        return GroupBreakdown(table=pd.concat([p.table for p in parts], ignore_index=True),
                              gaps=pd.concat([p.gaps for p in parts], ignore_index=True))


def normalise_labels(groups: Any, *, unknown: str = UNKNOWN) -> np.ndarray:
    """``object[n]`` string labels; None / NaN / empty / ``"<unknown>"`` become ``unknown``."""
    s = pd.Series(groups, dtype=object) if not isinstance(groups, pd.Series) else groups.astype(object)
    missing = s.isna().to_numpy() | s.astype(str).str.strip().isin(["", UNKNOWN_LABEL, "nan", "None"]).to_numpy()
    out = s.astype(str).to_numpy(dtype=object)
    out[missing] = unknown
    return out


def _boot(stat, arrays: tuple[np.ndarray, ...], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` bootstrap replicates of ``stat`` (row-wise over ``[k, n]`` resamples of
    every array in ``arrays``, drawn with the same indices), in memory-bounded slabs."""
    n = len(arrays[0])
    if n == 0:
        return np.full(n_boot, np.nan)
    out = np.empty(n_boot)
    step = max(1, _MAX_DRAW // n)
    for lo in range(0, n_boot, step):
        k = min(step, n_boot - lo)
        idx = rng.integers(0, n, (k, n))
        out[lo:lo + k] = stat(*(a[idx] for a in arrays))
    return out


def _boot_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return _boot(lambda v: v.mean(axis=1), (values,), n_boot, rng)


def auc_rows(prob: np.ndarray, label: np.ndarray) -> np.ndarray:
    """AUC-ROC of each row of ``prob``/``label`` ``[r, n]`` (NaN when one class is absent)."""
    return roc_auc_rows(label, prob)


def _boot_auc(prob: np.ndarray, label: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return _boot(auc_rows, (prob, label), n_boot, rng)


def _perm_gap_p(values: list[tuple[np.ndarray, ...]], stat, observed: float, n_perm: int,
                rng: np.random.Generator) -> float:
    """Permutation p-value of ``max - min`` over groups of ``stat``: the examples of the
    groups in ``values`` (one tuple of aligned arrays per group) are pooled, group labels
    shuffled with the group sizes kept, and the extremes re-picked each time. ``stat``
    maps ``[k, n_g]`` arrays to ``[k]`` values (NaN where undefined)."""
    sizes = [len(v[0]) for v in values]
    pooled = tuple(np.concatenate([v[i] for v in values]) for i in range(len(values[0])))
    n = len(pooled[0])
    bounds = np.cumsum([0, *sizes])
    hits, done = 0, 0
    step = max(1, _MAX_DRAW // max(n, 1))
    while done < n_perm:
        k = min(step, n_perm - done)
        idx = rng.permuted(np.broadcast_to(np.arange(n), (k, n)), axis=1)
        per_group = np.stack([stat(*(a[idx[:, lo:hi]] for a in pooled))
                              for lo, hi in zip(bounds[:-1], bounds[1:])], axis=1)  # [k, groups]
        gaps = np.nanmax(per_group, axis=1) - np.nanmin(per_group, axis=1)
        hits += int(np.sum(gaps >= observed - 1e-12))
        done += k
    return (hits + 1) / (n_perm + 1)


def _ci(boot: np.ndarray, ci: float) -> tuple[float, float]:
    b = boot[np.isfinite(boot)]
    if len(b) == 0:
        return float("nan"), float("nan")
    a = (1.0 - ci) / 2.0
    return float(np.quantile(b, a)), float(np.quantile(b, 1.0 - a))


def group_breakdown(per_example: Mapping[str, np.ndarray] | Any, groups: Any, *, by: str = "group",
                    metrics: Sequence[str] | None = None, order: Sequence[str] | None = None,
                    n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
                    min_group_size: int = 20) -> GroupBreakdown:
    """Per-group mean, n and bootstrap CI of every metric, and the largest gap per metric.

    Args:
      per_example: ``EvalResult`` or its ``per_example`` mapping, name -> ``float[m]``.
      groups: ``[m]`` group label per example (anything :func:`normalise_labels` takes).
      by: name of the grouping (a column of both output tables).
      metrics: which arrays (default: all but :data:`BOOKKEEPING`; ``auc`` is added when
        ``prob`` and ``label`` are present).
      order: group order in the table (groups not listed follow, ``unknown`` last);
        listed groups without examples are kept with ``n = 0``.
      n_boot: bootstrap resamples (and permutations of the gap test); ci: interval
        level; seed: bootstrap seed.
      min_group_size: known groups with fewer values are reported but left out of the gap.

    Returns:
      :class:`GroupBreakdown`.
    """
    per = dict(getattr(per_example, "per_example", per_example))
    labels = normalise_labels(groups)
    m = len(labels)
    with_auc = "prob" in per and "label" in per
    names = list(metrics) if metrics is not None else [k for k in per if k not in BOOKKEEPING]
    if with_auc and metrics is None:
        names.append("auc")
    for k in names:
        if k not in per and not (k == "auc" and with_auc):
            raise KeyError(f"metric {k!r} not in the per-example results; available: {sorted(per)}")
    for k in set(names) - {"auc"} | ({"prob", "label"} if "auc" in names else set()):
        if len(np.asarray(per[k])) != m:
            raise ValueError(f"per-example array {k!r} has {len(np.asarray(per[k]))} rows but there "
                             f"are {m} group labels; pass labels aligned with the evaluated examples")
    present = list(dict.fromkeys(labels))
    listed = [str(g) for g in order] if order is not None else []
    rest = sorted(g for g in present if g not in listed and g != UNKNOWN)
    group_order = listed + rest + ([UNKNOWN] if UNKNOWN in present and UNKNOWN not in listed else [])
    rng = np.random.default_rng(seed)
    rows, gap_rows = [], []
    for metric in names:
        boots, data = {}, {}
        stat = auc_rows if metric == "auc" else (lambda v: v.mean(axis=-1))
        for g in group_order:
            sel = labels == g
            if metric == "auc":
                p, y = np.asarray(per["prob"], float)[sel], np.asarray(per["label"], float)[sel]
                ok = np.isfinite(p) & np.isfinite(y)
                data[g] = (p[ok], y[ok])
                boot = _boot_auc(*data[g], n_boot, rng)
            else:
                v = np.asarray(per[metric], float)[sel]
                data[g] = (v[np.isfinite(v)],)
                boot = _boot_means(*data[g], n_boot, rng)
            n = len(data[g][0])
            mean = float(stat(*(a[None] for a in data[g]))[0]) if n else float("nan")
            lo, hi = _ci(boot, ci)
            in_gap = g != UNKNOWN and n >= max(1, min_group_size) and np.isfinite(mean)
            boots[g] = (mean, boot, in_gap)
            rows.append({"by": by, "metric": metric, "group": g, "n": n, "mean": mean,
                         "ci_low": lo, "ci_high": hi, "n_boot": int(np.isfinite(boot).sum()),
                         "in_gap": bool(in_gap)})
        cand = [(g, b[0]) for g, b in boots.items() if b[2]]
        if cand:
            g_max = max(cand, key=lambda t: t[1])[0]
            g_min = min(cand, key=lambda t: t[1])[0]
            diff = boots[g_max][1] - boots[g_min][1]
            glo, ghi = _ci(diff, ci) if g_max != g_min else (0.0, 0.0)
            gap = boots[g_max][0] - boots[g_min][0]
            p_perm = (_perm_gap_p([data[g] for g, _ in cand], stat, gap, n_boot, rng)
                      if len(cand) > 1 else float("nan"))
            gap_rows.append({"by": by, "metric": metric, "n_groups": len(cand), "max_group": g_max,
                             "max_mean": boots[g_max][0], "min_group": g_min, "min_mean": boots[g_min][0],
                             "gap": gap, "gap_ci_low": glo, "gap_ci_high": ghi, "p_perm": p_perm})
        else:
            gap_rows.append({"by": by, "metric": metric, "n_groups": 0, "max_group": None,
                             "max_mean": np.nan, "min_group": None, "min_mean": np.nan,
                             "gap": np.nan, "gap_ci_low": np.nan, "gap_ci_high": np.nan,
                             "p_perm": np.nan})
    return GroupBreakdown(table=pd.DataFrame(rows), gaps=pd.DataFrame(gap_rows))


def plot_group_breakdown(breakdown: GroupBreakdown, *, metrics: Sequence[str] | None = None,
                         panel_size: tuple[float, float] = (3.6, 2.8)) -> Figure:
    """Bars of the group means with their bootstrap CIs: one row of panels per
    grouping (``by``), one column per metric."""
    t = breakdown.table
    mets = list(metrics) if metrics is not None else list(dict.fromkeys(t["metric"]))
    bys = list(dict.fromkeys(t["by"]))
    fig = Figure(figsize=(panel_size[0] * len(mets), panel_size[1] * len(bys)))
    axes = fig.subplots(len(bys), len(mets), squeeze=False)
    for r, by in enumerate(bys):
        for c, metric in enumerate(mets):
            ax = axes[r][c]
            d = t[(t["by"] == by) & (t["metric"] == metric)]
            x = np.arange(len(d))
            mean = d["mean"].to_numpy(float)
            err = np.vstack([mean - d["ci_low"].to_numpy(float), d["ci_high"].to_numpy(float) - mean])
            colors = ["tab:gray" if g == UNKNOWN else "tab:blue" for g in d["group"]]
            ax.bar(x, np.nan_to_num(mean), yerr=np.nan_to_num(np.abs(err)), color=colors, capsize=3)
            ax.set_xticks(x, [f"{g}\n(n={n})" for g, n in zip(d["group"], d["n"])], rotation=45,
                          ha="right", fontsize=7)
            ax.set_title(f"{metric} by {by}", fontsize=9)
    fig.tight_layout()
    return fig
