"""Cold start: metrics by history length (events before the cut-off).

The history length of an example is the number of the customer's events visible at
prediction time, ``end - offsets[customer]`` (every event type, all of them -- not
only the last ``max_len`` the model reads; compare the buckets with the model's
``max_len``). Buckets are closed ranges given by their upper bounds: the default
``(10, 50, 200, 1000)`` gives ``1-10``, ``11-50``, ``51-200``, ``201-1000``,
``>1000``; examples with no visible event get their own ``0`` bucket.

Output has the same shape as :func:`attnlab.insights.fairness.fairness_report` (the
same :func:`attnlab.insights.groups.group_breakdown`); every bucket is listed, empty
ones with ``n = 0``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples
from attnlab.insights.groups import GroupBreakdown, group_breakdown

DEFAULT_BUCKETS = (10, 50, 200, 1000)


def history_lengths(store: SequenceStore, examples: Examples) -> np.ndarray:
    """``int64[m]`` number of visible events (before the cut-off) of each example."""
    return np.asarray(examples.end, np.int64) - np.asarray(store.offsets)[np.asarray(examples.customer)]


def bucket_labels(buckets: Sequence[int] = DEFAULT_BUCKETS) -> list[str]:
    """Labels of the buckets, in order (without the ``0`` bucket)."""
    ub = [int(b) for b in buckets]
    if not ub or ub[0] < 1 or any(b >= c for b, c in zip(ub, ub[1:])):
        raise ValueError(f"buckets must be increasing upper bounds >= 1, got {list(buckets)}")
    lows = [1] + [b + 1 for b in ub[:-1]]
    return [f"{lo}-{hi}" if lo < hi else f"{lo}" for lo, hi in zip(lows, ub)] + [f">{ub[-1]}"]


def history_length_groups(lengths: np.ndarray, *, buckets: Sequence[int] = DEFAULT_BUCKETS
                          ) -> tuple[np.ndarray, list[str]]:
    """Bucket label per history length, and the bucket order (``0`` first)."""
    names = bucket_labels(buckets)
    lengths = np.asarray(lengths, np.int64)
    if (lengths < 0).any():
        raise ValueError("history lengths must be >= 0")
    k = np.searchsorted(np.asarray(buckets, np.int64), lengths, side="left")
    labels = np.asarray(names, dtype=object)[k]
    labels[lengths == 0] = "0"
    return labels, ["0"] + names


def cold_start_report(per_example: Mapping[str, np.ndarray] | Any, store: SequenceStore, examples: Examples, *,
                      buckets: Sequence[int] = DEFAULT_BUCKETS, metrics: Sequence[str] | None = None,
                      n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
                      min_group_size: int = 20) -> GroupBreakdown:
    """Every metric by history-length bucket: per-bucket mean, n, bootstrap CI, largest gap.

    Args:
      per_example: ``EvalResult`` (or its ``per_example``) of ``examples``.
      store: the event store.
      examples: the evaluated examples (same row order).
      buckets: increasing upper bounds (see module docstring).
      metrics, n_boot, ci, seed, min_group_size: see
        :func:`attnlab.insights.groups.group_breakdown`.

    Returns:
      :class:`GroupBreakdown` with ``by = "history_length"``; the ``0`` bucket is listed
      only when some example has an empty history.
    """
    labels, order = history_length_groups(history_lengths(store, examples), buckets=buckets)
    if not (labels == "0").any():
        order = order[1:]
    return group_breakdown(per_example, labels, by="history_length", metrics=metrics, order=order,
                           n_boot=n_boot, ci=ci, seed=seed, min_group_size=min_group_size)
