"""History length: accuracy and cost vs the number of past events a model reads.

Runs that differ in ``model.max_len`` (the window: the most recent ``max_len`` visible
events) are collected into a tidy table -- accuracy (the task's monitor metric by
default), training throughput, wall time, peak memory -- and plotted as two panels.

    df = collect_results("outputs/multirun/history_length")
    fig = plot_history_length(df)

The grid lives in ``configs/experiment/history_length.yaml``
(``python experiments/train.py -m experiment=history_length``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from attnlab.insights.long_range import config_value, load_runs

MAX_LENS: tuple[int, ...] = (50, 200, 800, 4224)
#: Default accuracy metric per task when a result does not name its monitor.
TASK_METRIC = {"next_item": "ndcg@10", "next_basket": "recall@10", "churn": "auc"}

#: Columns of :func:`collect_results` (one row per run).
COLUMNS: tuple[str, ...] = (
    "max_len", "model", "seed", "task", "metric", "value", "baseline", "baseline_value",
    "train_events_per_s", "train_s", "wall_s", "peak_rss_mb", "epochs", "path",
)


def sweep_overrides(max_lens: Sequence[int] = MAX_LENS, models: Sequence[str] = ("vanilla",),
                    seeds: Sequence[int] = (0, 1, 2), *, experiment: str | None = "history_length",
                    extra: Sequence[str] = ()) -> list[list[str]]:
    """Hydra override lists of the max_len x model x seed grid, one per job."""
    base = [f"experiment={experiment}"] if experiment else []
    out = []
    for n in max_lens:
        if int(n) < 1:
            raise ValueError(f"max_len must be >= 1, got {n}")
        for m in models:
            for s in seeds:
                out.append([*base, f"model={m}", f"seed={int(s)}", f"model.max_len={int(n)}", *extra])
    return out


def _f(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _baseline(metrics: dict[str, dict[str, float]], metric: str, name: str | None) -> tuple[str | None, float]:
    """The named baseline, else the best baseline on ``metric``."""
    cands = {k: _f(v.get(metric)) for k, v in metrics.items() if k != "model"}
    if name is not None:
        return (name, cands[name]) if name in cands else (None, float("nan"))
    cands = {k: v for k, v in cands.items() if np.isfinite(v)}
    if not cands:
        return None, float("nan")
    best = max(cands, key=cands.get)
    return best, cands[best]


def collect_results(source: Any, configs: Sequence[Any] | None = None, *,
                    metric: str | None = None, baseline: str | None = None) -> pd.DataFrame:
    """Tidy table of runs that differ in ``model.max_len`` (one row per run).

    Args:
      source: anything :func:`attnlab.insights.long_range.load_runs` accepts (a
        multirun directory, a results-index folder, result paths, ``RunResult``
        objects, ``(result, config)`` pairs).
      configs: optional configs aligned with ``source``.
      metric: the accuracy metric (default: the run's monitor, else by task:
        ``ndcg@10`` / ``recall@10`` / ``auc``).
      baseline: contender reported as ``baseline_value`` (default: the best one).

    Returns:
      DataFrame with :data:`COLUMNS`: ``max_len`` (from the run config), ``model``,
      ``seed``, ``task``, ``metric`` and the model's test ``value``, the baseline and
      its value, ``train_events_per_s`` (provenance), ``train_s`` (model training
      seconds), ``wall_s`` (whole run), ``peak_rss_mb`` (the model row's process peak)
      and ``epochs``; sorted by model, max_len, seed.
    """
    rows = []
    for run in load_runs(source, configs):
        res, cfg = run["result"], run["config"]
        prov = res.get("provenance") or {}
        metrics = res.get("metrics") or {}
        model = metrics.get("model", {})
        task = prov.get("task") or config_value(cfg, "task.name")
        name = metric or prov.get("monitor") or TASK_METRIC.get(task, "ndcg@10")
        base_name, base_value = _baseline(metrics, name, baseline)
        rows.append({
            "max_len": _f(config_value(cfg, "model.max_len")),
            "model": prov.get("model") or config_value(cfg, "model.name"),
            "seed": prov.get("seed", config_value(cfg, "seed")),
            "task": task,
            "metric": name,
            "value": _f(model.get(name)),
            "baseline": base_name,
            "baseline_value": base_value,
            "train_events_per_s": _f(prov.get("train_events_per_s")),
            "train_s": _f(model.get("train_s")),
            "wall_s": _f(prov.get("wall_s")),
            "peak_rss_mb": _f(model.get("peak_rss_mb")),
            "epochs": prov.get("epochs_trained"),
            "path": res.get("path"),
        })
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return df.sort_values(["model", "max_len", "seed"], kind="stable").reset_index(drop=True)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (model, max_len) of value, throughput, time, memory."""
    cols = ["value", "train_events_per_s", "train_s", "wall_s", "peak_rss_mb"]
    g = df.groupby(["model", "max_len"], sort=True)
    out = g[cols].agg(["mean", "std"])
    out.columns = [f"{c}_{s}" for c, s in out.columns]
    out["n_seeds"] = g.size()
    return out.reset_index()


def plot_history_length(df: pd.DataFrame, *, cost: str = "train_s", memory: str | None = "peak_rss_mb",
                        title: str | None = None):
    """Two panels vs ``max_len``: accuracy (left) and cost (right).

    Left: the model's ``value`` per model (mean ± std over seeds as a band), the
    baseline dashed. Right: ``cost`` (default model training seconds) as solid lines
    and, on a second axis, ``memory`` (peak RSS, MB) dotted.

    Returns:
      A matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    if df.empty:
        raise ValueError("no runs to plot (empty DataFrame)")
    if df["max_len"].isna().all():
        raise ValueError("no run has a known model.max_len: pass the run configs to collect_results")
    fig, (acc, cst) = plt.subplots(1, 2, figsize=(11.0, 4.0))
    metric = ", ".join(sorted(set(df["metric"].dropna())))
    mem_ax = cst.twinx() if memory else None
    for model, sub in df.groupby("model", sort=False):
        g = sub.groupby("max_len")
        mean, std = g["value"].mean(), g["value"].std().fillna(0.0)
        line, = acc.plot(mean.index, mean.values, marker="o", label=model)
        acc.fill_between(mean.index, (mean - std).values, (mean + std).values,
                         color=line.get_color(), alpha=0.15, linewidth=0)
        c = g[cost].mean()
        cst.plot(c.index, c.values, marker="o", color=line.get_color(), label=f"{model}: {cost}")
        if mem_ax is not None:
            m = g[memory].mean()
            mem_ax.plot(m.index, m.values, marker="s", linestyle=":", color=line.get_color(),
                        label=f"{model}: {memory}")
    if df["baseline_value"].notna().any():
        b = df.groupby("max_len")["baseline_value"].mean()
        names = sorted(df["baseline"].dropna().unique())
        # the best baseline may differ between runs: the label names every one averaged
        name = " / ".join(map(str, names)) if names else "baseline"
        acc.plot(b.index, b.values, linestyle="--", color="grey", label=str(name))
    ticks = sorted(df["max_len"].dropna().unique())
    for ax in (acc, cst):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(int(t)) for t in ticks])
        ax.set_xlabel("history length (model.max_len, events)")
        ax.grid(alpha=0.3)
    acc.set_ylabel(f"test {metric}")
    acc.set_title("accuracy")
    acc.legend(fontsize=8)
    cst.set_ylabel(cost)
    cst.set_title("cost")
    handles, labels = cst.get_legend_handles_labels()
    if mem_ax is not None:
        mem_ax.set_ylabel(memory)
        h2, l2 = mem_ax.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    cst.legend(handles, labels, fontsize=8, loc="upper left")
    n_seeds = df.groupby(["model", "max_len"]).size().max()
    fig.suptitle(title or f"Accuracy and cost vs history length (mean over {n_seeds} seed(s))")
    fig.tight_layout()
    return fig
