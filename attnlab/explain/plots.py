"""Plots for :mod:`attnlab.explain.attention` (matplotlib; every function returns a Figure).

Figures are created with :class:`matplotlib.figure.Figure` (not ``pyplot``), so library
calls never pile up open figures; in a notebook, put the figure last in a cell or
``display(fig)``.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from attnlab.explain.attention import ROLLOUT, Explanation


def _event_label(row, label_column: str | None) -> str:
    what = row["event_type"]
    if label_column is not None and row.get(label_column) is not None:
        what = str(row[label_column])
    elif row["item"] > 0:
        what = f"{what} {row['product_id']}"
    return f"{row['date']:%Y-%m-%d}  {what}"[:40]


def plot_attention_heatmap(explanation: Explanation, *, max_events: int = 60,
                           label_column: str | None = None, width: float = 12.0) -> Figure:
    """Heatmap of the last position's weights: rows = layer/head views, the rollout
    (and the copy head's pointer, if any), columns = the customer's visible events (oldest left, at most the last ``max_events``).

    Args:
      explanation: from :func:`attnlab.explain.explain_prediction`.
      max_events: show only the most recent events.
      label_column: event-table column for the x labels (e.g. ``"department"``);
        default: event type and product id.
      width: figure width in inches.

    Returns:
      the Figure.
    """
    f = explanation.frame
    views = list(dict.fromkeys(f["view"]))
    ev = explanation.events
    n = len(ev)
    lo = max(0, n - int(max_events))
    mat = np.stack([f.loc[f["view"] == v, "weight"].to_numpy()[lo:] for v in views])
    fig = Figure(figsize=(width, 1.2 + 0.45 * len(views) + 0.06 * (n - lo)))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(mat, aspect="auto", cmap="viridis", interpolation="nearest", vmin=0.0)
    ax.set_yticks(range(len(views)), [("rollout" if v == ROLLOUT else v) for v in views])
    step = max(1, (n - lo) // 30)
    ticks = list(range(0, n - lo, step))
    labels = [_event_label(ev.iloc[lo + t], label_column) for t in ticks]
    ax.set_xticks(ticks, labels, rotation=90, fontsize=7)
    ax.axhline(views.index(ROLLOUT) - 0.5, color="white", lw=1.5)
    ax.set_title(f"customer {explanation.customer_id} ({explanation.family}): attention of the "
                 f"latest event over its history")
    fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01, label="weight")
    fig.tight_layout()
    return fig


def plot_top_events(explanation: Explanation, k: int = 10, *, label_column: str | None = None) -> Figure:
    """Horizontal bars of the ``k`` events with the most rolled-out attention."""
    from attnlab.explain.attention import top_events

    top = top_events(explanation, k).iloc[::-1]
    fig = Figure(figsize=(7.0, 0.9 + 0.32 * len(top)))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh([_event_label(r, label_column) for _, r in top.iterrows()], top["weight"], color="tab:blue")
    ax.set_xlabel("rolled-out attention weight")
    ax.set_title(f"customer {explanation.customer_id}: top {len(top)} events")
    fig.tight_layout()
    return fig
