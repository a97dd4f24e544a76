"""Journey insight: where does the model's attention go, for churners vs retained customers?

For each labelled example (e.g. ``churn_split(store).test``) the model is replayed on
its visible history (the last ``max_len`` events before the cut-off) with
:func:`attnlab.explain.trace_attention`; the attention of the *last position* (the
state the churn head reads) is rolled out across layers (Abnar & Zuidema, 2020) to a
distribution over the customer's events (it sums to 1). With ``churn_pool: attention``
the head also reads its own pooled view of the window; that pooling is not part of the
rollout, so the mass here is the backbone's route to the last state only. That mass is summed per
customer over three views of the events:

* ``event_type`` -- purchase, return, campaign, coupon_redemption;
* an item column of ``store.item_side`` (``department`` on The Complete Journey,
  ``category`` on synthetic data); events without an item are ``"(no item)"``;
* ``time_gap`` -- how long before the cut-off the event happened, bucketed
  (default ``<1d, 1-7d, 7-30d, 30-90d, >90d``).

:func:`journey_summary` then averages per cohort (churned / retained): the mean
attention mass per customer (a customer with no event in a group contributes 0), its
standard error, the mean share of the customer's events in that group, and ``lift`` =
mass / share (> 1: the model looks at that kind of event more than its frequency).
Only events before each example's cut-off are read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from attnlab.data.batching import make_batch
from attnlab.data.schema import EventType
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples
from attnlab.explain.attention import LinearWeights, TimeReference, last_query_weights, trace_attention
from attnlab.models.sequence_model import SequenceModel

DEFAULT_GAP_EDGES_DAYS = (1.0, 7.0, 30.0, 90.0)
NO_ITEM_GROUP = "(no item)"
COHORTS = {0: "retained", 1: "churned"}


def gap_bucket_labels(edges: Sequence[float] = DEFAULT_GAP_EDGES_DAYS) -> list[str]:
    """``["<1d", "1-7d", ..., ">90d"]`` for increasing edges in days."""
    e = [float(x) for x in edges]
    if not e or any(a >= b for a, b in zip(e, e[1:])) or e[0] <= 0:
        raise ValueError(f"gap edges must be increasing and > 0 days, got {list(edges)}")
    f = lambda x: f"{x:g}"  # noqa: E731
    return [f"<{f(e[0])}d"] + [f"{f(a)}-{f(b)}d" for a, b in zip(e, e[1:])] + [f">{f(e[-1])}d"]


def default_item_column(store: SequenceStore) -> str | None:
    """``department`` if the store has it, else ``category``, else the first item column."""
    for name in ("department", "category"):
        if name in store.item_side:
            return name
    return next(iter(store.item_side), None)


def _pad(inputs: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    out = {}
    for k, a in inputs.items():
        pad = size - a.shape[0]
        out[k] = np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) if pad else a
    return out


def attention_mass(model: SequenceModel, store: SequenceStore, examples: Examples, *,
                   time_reference: TimeReference = TimeReference.CUTOFF, max_len: int | None = None,
                   batch_size: int = 64, item_column: str | None = None,
                   gap_edges: Sequence[float] = DEFAULT_GAP_EDGES_DAYS,
                   linear: LinearWeights = LinearWeights.RAISE) -> pd.DataFrame:
    """Per-example rolled-out last-position attention mass per event group.

    Args:
      model: trained attention model.
      store: the event store.
      examples: the examples (their visible histories are read, nothing after ``end``).
      time_reference: as the model was trained (churn: ``CUTOFF``).
      max_len: window (default ``model.max_len``).
      batch_size: examples per replay (fixed shape, one compilation).
      item_column: ``store.item_side`` column (default :func:`default_item_column`).
      gap_edges: time-gap bucket edges in days before the cut-off.
      linear: see :class:`attnlab.explain.LinearWeights`.

    Returns:
      Long DataFrame: ``row`` (example row), ``dimension`` (``event_type`` | the item
      column | ``time_gap``), ``group``, ``mass`` (sum of weights; per row and
      dimension it sums to 1), ``n_events`` and ``event_share`` (of the row's visible
      window).
    """
    item_column = default_item_column(store) if item_column is None else item_column
    if item_column is not None and item_column not in store.item_side:
        raise KeyError(f"item column {item_column!r} not in store.item_side {sorted(store.item_side)}")
    max_len = int(max_len or model.max_len)
    tr = TimeReference(time_reference)
    edges = np.asarray(gap_edges, np.float64)
    gap_names = np.asarray(gap_bucket_labels(gap_edges), dtype=object)
    type_names = {int(e): e.name.lower() for e in EventType}
    rows, weights, index = [], [], []
    for lo in range(0, len(examples), batch_size):
        sel = np.arange(lo, min(lo + batch_size, len(examples)))
        b = make_batch(store, customers=examples.customer[sel], ends=examples.end[sel],
                       cutoffs=examples.cutoff[sel] if tr is TimeReference.CUTOFF else None, max_len=max_len,
                       memory=model.history_memory)
        trace = trace_attention(model, _pad(b.model_inputs(), batch_size), linear=linear)
        _, roll = last_query_weights(trace)
        valid = b.index >= 0
        r, p = np.nonzero(valid)
        rows.append(sel[r])
        weights.append(roll[r, p])
        index.append(b.index[r, p])
    row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    w = np.concatenate(weights) if weights else np.zeros(0)
    idx = np.concatenate(index) if index else np.zeros(0, np.int64)
    days = (np.asarray(examples.cutoff)[row] - np.asarray(store.time)[idx]) / 86_400.0
    etype = np.asarray(store.event_type)[idx]
    dims = {"event_type": np.asarray([type_names.get(int(t), str(int(t))) for t in etype], dtype=object),
            "time_gap": gap_names[np.searchsorted(edges, days, side="right")]}
    if item_column is not None:
        item = np.asarray(store.item)[idx]
        codes = np.asarray(store.item_side[item_column])[item]
        labels = np.asarray(store.item_side_vocab[item_column], dtype=object)[codes]
        dims[item_column] = np.where(item > 0, labels, NO_ITEM_GROUP)
    n_row = np.bincount(row, minlength=len(examples))
    parts = []
    for dim, group in dims.items():
        f = pd.DataFrame({"row": row, "group": group, "mass": w, "n_events": 1})
        f = f.groupby(["row", "group"], sort=False, as_index=False).sum()
        f.insert(1, "dimension", dim)
        f["event_share"] = f["n_events"] / n_row[f["row"].to_numpy()]
        parts.append(f)
    cols = ["row", "dimension", "group", "mass", "n_events", "event_share"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def _group_order(dim: str, groups: list[str]) -> list[str]:
    if dim == "event_type":
        ref = [e.name.lower() for e in EventType]
    elif dim == "time_gap":
        ref = sorted(groups, key=lambda g: (0, 0.0) if g.startswith("<") else
                     ((2, 0.0) if g.startswith(">") else (1, float(g.split("-")[0]))))
    else:
        ref = sorted(g for g in groups if g != NO_ITEM_GROUP) + [NO_ITEM_GROUP]
    return [g for g in ref if g in groups]


def journey_summary(mass: pd.DataFrame, labels: np.ndarray, *,
                    cohort_names: dict[int, str] = COHORTS) -> pd.DataFrame:
    """Mean attention mass per (dimension, group, cohort).

    Args:
      mass: :func:`attention_mass` output.
      labels: ``[m]`` churn label per example row (1 = churned); NaN rows are skipped.
      cohort_names: label -> cohort name.

    Returns:
      Tidy DataFrame: ``dimension``, ``group``, ``cohort``, ``n_customers`` (examples in
      the cohort with a visible event), ``n_with_group`` (of them, with an event in the
      group), ``mean_mass``, ``sem_mass``, ``mean_event_share``, ``lift``.
    """
    labels = np.asarray(labels, np.float64)
    out = []
    for dim, f in mass.groupby("dimension", sort=False):
        wide_m = f.pivot_table(index="row", columns="group", values="mass", aggfunc="sum", fill_value=0.0)
        wide_s = f.pivot_table(index="row", columns="group", values="event_share", aggfunc="sum", fill_value=0.0)
        y = labels[wide_m.index.to_numpy()]
        for g in _group_order(dim, list(wide_m.columns)):
            for lab, name in cohort_names.items():
                sel = y == lab
                m, s = wide_m[g].to_numpy()[sel], wide_s[g].to_numpy()[sel]
                n = int(sel.sum())
                mean_m = float(m.mean()) if n else np.nan
                mean_s = float(s.mean()) if n else np.nan
                out.append({"dimension": dim, "group": g, "cohort": name, "n_customers": n,
                            "n_with_group": int((s > 0).sum()), "mean_mass": mean_m,
                            "sem_mass": float(m.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan,
                            "mean_event_share": mean_s,
                            "lift": mean_m / mean_s if n and mean_s > 0 else np.nan})
    return pd.DataFrame(out)


def journey_attention(model: SequenceModel, store: SequenceStore, examples: Examples, *,
                      labels: np.ndarray | None = None, **kwargs) -> pd.DataFrame:
    """:func:`attention_mass` + :func:`journey_summary` (labels default ``examples.label``,
    e.g. the test examples of :func:`attnlab.data.splits.churn_split`)."""
    if labels is None:
        if examples.label is None:
            raise ValueError("journey_attention needs churn labels: pass examples from "
                             "attnlab.data.splits.churn_split (or labels=...)")
        labels = examples.label
    return journey_summary(attention_mass(model, store, examples, **kwargs), labels)


def plot_journey(summary: pd.DataFrame, *, top: int = 12, panel_width: float = 5.0) -> Figure:
    """Grouped bars of mean attention mass (churned vs retained, with SEM) per
    dimension; dots mark the mean event share. At most ``top`` groups per panel
    (largest mean mass)."""
    dims = list(dict.fromkeys(summary["dimension"]))
    cohorts = list(dict.fromkeys(summary["cohort"]))
    fig = Figure(figsize=(panel_width * len(dims), 3.8))
    axes = fig.subplots(1, len(dims), squeeze=False)[0]
    width = 0.8 / max(len(cohorts), 1)
    for ax, dim in zip(axes, dims):
        d = summary[summary["dimension"] == dim]
        order = list(dict.fromkeys(d["group"]))
        if len(order) > top:
            keep = set(d.groupby("group")["mean_mass"].mean().nlargest(top).index)
            order = [g for g in order if g in keep]
        x = np.arange(len(order))
        for k, coh in enumerate(cohorts):
            c = d[d["cohort"] == coh].set_index("group").reindex(order)
            pos = x + (k - (len(cohorts) - 1) / 2) * width
            ax.bar(pos, c["mean_mass"].fillna(0), width, yerr=c["sem_mass"].fillna(0), capsize=2,
                   label=f"{coh} (n={int(c['n_customers'].max()) if len(c) else 0})")
            ax.plot(pos, c["mean_event_share"], "k.", ms=5)
        ax.set_xticks(x, order, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"attention mass by {dim}", fontsize=10)
        ax.set_ylabel("mean rolled-out mass")
    axes[0].legend(fontsize=8, title="dots: event share", title_fontsize=7)
    fig.tight_layout()
    return fig
