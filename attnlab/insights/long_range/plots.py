"""Plot of the long-range study: planted accuracy vs distance per model family."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from attnlab.insights.long_range.analysis import check_one_budget
from attnlab.insights.long_range.grid import FORGETS, MODELS, REMEMBERS


def plot_accuracy_vs_distance(df: pd.DataFrame,
                              metrics: Sequence[str] = ("planted_hr@1", "planted_mrr"), *,
                              models: Sequence[str] | None = None, title: str | None = None):
    """Planted accuracy vs trigger -> target distance, one line per model family.

    One panel per metric; each point is the mean over seeds with a ±1 std band (no band
    with one seed). Reference lines where the frame has them: the baseline's planted
    metric (dashed grey, "most popular": a popularity ranker never puts the rare target
    first), the oracle's (dotted black, the ceiling: 1.0) and, on HR@1 panels, the
    cue-only chance ``1 / n_triggers`` (dash-dot grey: a model that knows the cue but
    not the trigger). The dotted horizontal lines at :data:`REMEMBERS` and
    :data:`FORGETS` are the thresholds of :func:`memory_limits`.

    Args:
      df: :func:`collect_results` output.
      metrics: columns to plot, one panel each.
      models: families to draw, in order (default: those in ``df``, LSTM first).
      title: figure title.

    Returns:
      A matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    if df.empty:
        raise ValueError("no runs to plot (empty DataFrame)")
    if df["distance"].isna().all():
        raise ValueError("no run has a known distance: pass the run configs to collect_results")
    check_one_budget(df)
    present = list(dict.fromkeys(df["model"]))
    models = list(models) if models is not None else (
        [m for m in MODELS if m in present] + [m for m in present if m not in MODELS])
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.0 * len(metrics), 3.8), squeeze=False)
    markers = "os^Dv<>p"  # distinct markers: identical curves (e.g. sparse = vanilla) stay visible
    for ax, metric in zip(axes[0], metrics):
        for i, model in enumerate(models):
            sub = df[df["model"] == model].groupby("distance")[metric]
            mean, std = sub.mean(), sub.std().fillna(0.0)
            if mean.empty:
                continue
            line, = ax.plot(mean.index, mean.values, marker=markers[i % len(markers)],
                            markersize=7 - (i % 3), label=model)
            ax.fill_between(mean.index, (mean - std).values, (mean + std).values,
                            color=line.get_color(), alpha=0.15, linewidth=0)
        refs = [(f"baseline_{metric}", dict(linestyle="--", color="grey", label="most popular")),
                (f"oracle_{metric}", dict(linestyle=":", color="black", label="oracle"))]
        if metric == "planted_hr@1":
            refs.append(("chance_hr@1", dict(linestyle="-.", color="grey", label="cue only (1/pairs)")))
        for col, style in refs:
            if col in df and df[col].notna().any():
                ref = df.groupby("distance")[col].mean()
                ax.plot(ref.index, ref.values, **style)
        if metric == "planted_hr@1":
            for level in (REMEMBERS, FORGETS):
                ax.axhline(level, color="lightgrey", linewidth=0.8, linestyle=":", zorder=0)
        ax.set_xscale("log", base=2)
        ticks = sorted(df["distance"].dropna().unique())
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(int(t)) for t in ticks])
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("trigger -> target distance (events)")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    n_seeds = df.groupby(["model", "distance"]).size().max()
    fig.suptitle(title or f"Long-range memory on cued planted pairs (mean ± std over {n_seeds} seed(s))")
    fig.tight_layout()
    return fig
