"""Fairness: every evaluation metric broken down by a demographic group.

Takes the per-example metric arrays of :func:`attnlab.eval.evaluate.evaluate_next_item`
/ ``evaluate_next_basket`` / ``evaluate_churn`` (``EvalResult.per_example``, aligned
with ``Examples`` rows) and one group per example, looked up through
``Examples.customer``:

* a categorical customer column of the store (``store.customer_side``; The Complete
  Journey demographics: ``age``, ``income``, ``household_size``, ``marital_status``,
  ...), code 0 = ``"unknown"``;
* a numeric customer column (``store.customer_numeric``, e.g. synthetic
  ``size_scale``), cut into quantile bins; NaN = ``"unknown"``;
* or your own labels: a ``pd.Series`` indexed by source customer id (customers it does
  not list are ``"unknown"``), or an array with one label per example.

Households without demographics (about two thirds of The Complete Journey) are an
explicit ``"unknown"`` group in the table, never dropped; they are left out of the
gap. See :mod:`attnlab.insights.groups` for the statistics (bootstrap CIs, gap CI).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples
from attnlab.insights.groups import UNKNOWN, GroupBreakdown, group_breakdown, normalise_labels


def natural_order(labels) -> list[str]:
    """Labels sorted by their first number (``"Under 15K"`` first, ``"15-24K"`` before
    ``"100-124K"``, ``"5+"`` after ``"4"``), then alphabetically."""
    def key(label: str):
        m = re.search(r"\d+(\.\d+)?", label)
        first = float(m.group()) if m else math.inf
        return (-math.inf if label.lower().startswith(("under", "less", "<")) else first, label)

    return sorted((str(v) for v in labels), key=key)


def numeric_bins(values: np.ndarray, *, bins: int = 4) -> tuple[np.ndarray, list[str]]:
    """Quantile bins of a numeric column: ``(labels object[n], order)``; NaN -> unknown.

    Labels read ``"q1 [lo, hi]"``; equal quantiles are merged.
    """
    v = np.asarray(values, np.float64)
    ok = np.isfinite(v)
    out = np.full(len(v), UNKNOWN, dtype=object)
    if not ok.any():
        return out, []
    edges = np.unique(np.quantile(v[ok], np.linspace(0.0, 1.0, int(bins) + 1)))
    if len(edges) == 1:
        label = f"q1 [{edges[0]:.3g}, {edges[0]:.3g}]"
        out[ok] = label
        return out, [label]
    k = np.clip(np.searchsorted(edges, v[ok], side="right") - 1, 0, len(edges) - 2)
    names = [f"q{i + 1} [{edges[i]:.3g}, {edges[i + 1]:.3g}]" for i in range(len(edges) - 1)]
    out[ok] = np.asarray(names, dtype=object)[k]
    return out, names


def demographic_groups(store: SequenceStore, examples: Examples, by: str | pd.Series | np.ndarray, *,
                       bins: int = 4) -> tuple[np.ndarray, list[str]]:
    """One group label per example, and the group order.

    Args:
      store: the event store.
      examples: the evaluated examples.
      by: a column of ``store.customer_side`` / ``store.customer_numeric``, a
        ``pd.Series`` indexed by source customer id, or an array of ``len(examples)``
        labels.
      bins: quantile bins for numeric columns.

    Returns:
      ``(labels object[len(examples)], order)``; missing -> ``"unknown"``.
    """
    cust = np.asarray(examples.customer, np.int64)
    if isinstance(by, str):
        if by in store.customer_side:
            codes = np.asarray(store.customer_side[by])[cust]
            vocab = list(store.customer_side_vocab[by])
            labels = np.asarray(vocab, dtype=object)[codes]
            labels[codes == 0] = UNKNOWN
            return normalise_labels(labels), natural_order(vocab[1:])
        if by in store.customer_numeric:
            return numeric_bins(np.asarray(store.customer_numeric[by])[cust], bins=bins)
        raise KeyError(f"customer column {by!r} is not in this store; categorical: "
                       f"{sorted(store.customer_side)}, numeric: {sorted(store.customer_numeric)}. "
                       "Or pass a pd.Series indexed by customer id.")
    if isinstance(by, pd.Series):
        ids = np.asarray(store.customer_ids)[cust]
        # object dtype before reindexing: an int column with missing customers would turn
        # into floats ("1.0") and no longer match its own order ("1")
        vals = by[~by.index.duplicated(keep="first")].astype(object).reindex(ids)
        order = [str(v) for v in pd.unique(by.dropna().astype(object))]
        if pd.api.types.is_numeric_dtype(by.dtype) and by.nunique() > 2 * bins:
            return numeric_bins(vals.to_numpy(np.float64), bins=bins)
        return normalise_labels(vals.to_numpy(dtype=object)), natural_order(order)
    arr = np.asarray(by, dtype=object)
    if arr.shape != (len(examples),):
        raise ValueError(f"group labels have shape {arr.shape}; expected ({len(examples)},) "
                         "(one per example) or a pd.Series indexed by customer id")
    return normalise_labels(arr), []


def fairness_report(per_example: Mapping[str, np.ndarray] | Any, store: SequenceStore, examples: Examples, *,
                    by: str | Sequence[str] | pd.Series | np.ndarray | None = None,
                    metrics: Sequence[str] | None = None, bins: int = 4, n_boot: int = 1000,
                    ci: float = 0.95, seed: int = 0, min_group_size: int = 20) -> GroupBreakdown:
    """Every metric by demographic group: per-group mean, n, bootstrap CI, largest gap.

    Args:
      per_example: ``EvalResult`` (or its ``per_example``) of ``examples``.
      store: the event store.
      examples: the evaluated examples (same row order).
      by: a column name, a list of column names, a Series by customer id or an ndarray
        of per-example labels (a list is read as column names, never as labels);
        default every categorical customer column of the store (CJ: all demographics).
      metrics: metric names (default all; see :func:`attnlab.insights.groups.group_breakdown`).
      bins: quantile bins for numeric columns.
      n_boot, ci, seed: bootstrap settings.
      min_group_size: smaller known groups are reported but left out of the gap.

    Returns:
      :class:`GroupBreakdown` (``by`` column = the grouping name).
    """
    if by is None:
        by = list(store.customer_side)
        if not by:
            raise ValueError("this store has no categorical customer columns (demographics); pass "
                             f"by=<numeric column> (available: {sorted(store.customer_numeric)}), a "
                             "pd.Series indexed by customer id, or one label per example")
    columns = [by] if isinstance(by, (str, pd.Series, np.ndarray)) else list(by)
    parts = []
    for col in columns:
        labels, order = demographic_groups(store, examples, col, bins=bins)
        name = col if isinstance(col, str) else (getattr(col, "name", None) or "group")
        parts.append(group_breakdown(per_example, labels, by=str(name), metrics=metrics, order=order,
                                     n_boot=n_boot, ci=ci, seed=seed, min_group_size=min_group_size))
    return GroupBreakdown.concat(parts)
