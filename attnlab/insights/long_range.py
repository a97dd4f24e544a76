"""Long-range memory: accuracy on a planted dependency vs its distance, per model family.

The synthetic simulator (:mod:`attnlab.data.sources.synthetic`) plants (trigger, target)
item pairs: a customer's basket ``s`` holds trigger ``j`` and basket ``s + distance``
holds target ``j``. Under the ``next_item`` protocol some test customers end on their
target basket; :func:`attnlab.eval.evaluate.evaluate_next_item` scores those examples
separately (``planted/hr@k``, ``planted/n``, whether the trigger is in the window).
This module builds the distance x model x seed grid, collects the run results into a
tidy table and plots planted accuracy against distance.

    overrides = sweep_overrides()                    # one Hydra override list per job
    df = collect_results("outputs/multirun/long_range")
    fig = plot_accuracy_vs_distance(df)

The grid itself lives in ``configs/experiment/long_range.yaml``
(``python experiments/train.py -m experiment=long_range``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DISTANCES: tuple[int, ...] = (2, 8, 16, 32)
#: The published grid. ``sparse`` is left out: its default window (64) covers the whole
#: 64-event input here, so it computes exactly what ``vanilla`` does (measured identical).
MODELS: tuple[str, ...] = ("lstm", "vanilla", "time_decay", "linear")
SEEDS: tuple[int, ...] = (0, 1, 2)
DISTANCE_KEY = "data.options.trigger_distance"

#: Columns of :func:`collect_results` (one row per run).
COLUMNS: tuple[str, ...] = (
    "distance", "model", "seed", "max_len", "planted_hr@1", "planted_hr@10", "planted_mrr",
    "planted_n", "planted_visible", "hr@10", "baseline_planted_hr@1", "baseline_planted_hr@10",
    "baseline_hr@10", "wall_s", "path",
)


# ---------------------------------------------------------------------------- the grid


def sweep_overrides(distances: Sequence[int] = DISTANCES, models: Sequence[str] = MODELS,
                    seeds: Sequence[int] = SEEDS, *, experiment: str | None = "long_range",
                    extra: Sequence[str] = ()) -> list[list[str]]:
    """Hydra override lists of the distance x model x seed grid, one per job.

    Args:
      distances: trigger -> target distances in baskets (``data.options.trigger_distance``).
      models: model config names (``configs/model/<name>.yaml``).
      seeds: run seeds (the long_range experiment also seeds the simulator with it).
      experiment: experiment config to start from (None: plain ``data=synthetic
        task=next_item``).
      extra: overrides appended to every job (e.g. ``["logger=none"]``).

    Returns:
      ``[[..., "model=lstm", "seed=0", "data.options.trigger_distance=2", *extra], ...]``
      ordered by distance, then model, then seed.
    """
    base = [f"experiment={experiment}"] if experiment else ["data=synthetic", "task=next_item"]
    out = []
    for d, m, s in itertools.product(distances, models, seeds):
        if int(d) < 1:
            raise ValueError(f"distances must be >= 1 basket, got {d}")
        out.append([*base, f"model={m}", f"seed={int(s)}", f"{DISTANCE_KEY}={int(d)}", *extra])
    return out


# ------------------------------------------------------------------------ loading runs


def _to_container(cfg: Any) -> Any:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return cfg
        if isinstance(cfg, Mapping):
            return OmegaConf.create(dict(cfg))
    except ImportError:  # pragma: no cover
        pass
    return cfg


def config_value(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg[key]`` for a dotted key of a dict / OmegaConf config, or ``default``.

    Interpolations that cannot be resolved outside Hydra (``${hydra:...}``) give
    ``default`` instead of raising.
    """
    if cfg is None:
        return default
    try:
        from omegaconf import OmegaConf

        value = OmegaConf.select(_to_container(cfg), key, default=default)
    except Exception:  # unresolvable interpolation, not a config
        return default
    return default if value is None else value


def _read_result(path: Path) -> dict[str, Any]:
    with open(path) as fh:
        return json.load(fh)


def _hydra_config(run_dir: Path) -> Any:
    f = run_dir / ".hydra" / "config.yaml"
    if not f.exists():
        return None
    from omegaconf import OmegaConf

    return OmegaConf.load(f)


def _result_files(folder: Path) -> list[Path]:
    """``result.json`` of every Hydra run under ``folder``; else, for a results-index
    folder (``<results_dir>/<experiment>/<config_hash>.json``), its JSON files."""
    found = sorted(folder.rglob("result.json"))
    if found:
        return found
    out = []
    for f in sorted(folder.rglob("*.json")):
        try:
            data = _read_result(f)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "metrics" in data and "provenance" in data:
            out.append(f)
    return out


def _per_example_file(result_file: Path) -> Path:
    """``per_example.npz`` next to a run's ``result.json``; ``<hash>.npz`` in the index."""
    if result_file.name == "result.json":
        return result_file.with_name("per_example.npz")
    return result_file.with_suffix(".npz")


def load_runs(source: Any, configs: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """Normalises run results from many shapes into ``{"result", "config", "per_example"}``.

    Args:
      source: a directory (a Hydra multirun/run directory, searched recursively for
        ``result.json``, or a results-index folder ``<results_dir>/<experiment>``), a
        path to a result JSON, a :class:`attnlab.train.results.RunResult`, a result dict
        (the JSON), a ``(result, config)`` tuple, or a list of any of these.
      configs: optional configs aligned with a list ``source`` (e.g. the composed Hydra
        configs passed to ``train_and_evaluate``). Without one, a run's config is the
        ``config`` stored in its result (attnlab >= the results index), else
        ``.hydra/config.yaml`` next to its ``result.json``.

    Returns:
      One dict per run: ``result`` (JSON dict with ``metrics``/``provenance``),
      ``config`` (OmegaConf/dict or None) and ``per_example`` (path of the per-example
      ``.npz`` or None).
    """
    items: list[Any]
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            items = _result_files(p)
        elif p.exists():
            items = [p]
        else:
            raise FileNotFoundError(f"{p}: no such run directory or result file")
    elif isinstance(source, list):
        items = list(source)
    else:
        items = [source]
    if configs is not None and len(configs) != len(items):
        raise ValueError(f"got {len(configs)} configs for {len(items)} runs")
    runs = []
    for i, item in enumerate(items):
        cfg = None if configs is None else configs[i]
        if _is_pair(item):
            item, cfg = item
        result_file = None
        if isinstance(item, (str, Path)):
            result_file = Path(item)
            result = _read_result(result_file)
        elif hasattr(item, "to_json"):
            result = item.to_json()
        elif isinstance(item, Mapping):
            result = dict(item)
        else:
            raise TypeError(f"cannot read a run result from {type(item).__name__}")
        if result_file is None and result.get("path"):
            result_file = Path(result["path"])
        if cfg is None:
            cfg = result.get("config") or None
        if cfg is None and result_file is not None:
            cfg = _hydra_config(result_file.parent)
        npz = _per_example_file(result_file) if result_file is not None else None
        runs.append({"result": result, "config": cfg,
                     "per_example": npz if npz is not None and npz.exists() else None})
    return runs


def _is_pair(x: Any) -> bool:
    """A tuple is a ``(result, config)`` pair; several runs go in a list."""
    return isinstance(x, tuple) and len(x) == 2


def _metric(result: Mapping[str, Any], contender: str, key: str) -> float:
    v = (result.get("metrics") or {}).get(contender, {}).get(key)
    return float("nan") if v is None else float(v)


def _best_baseline(result: Mapping[str, Any], baseline: str | None) -> str | None:
    names = [n for n in (result.get("metrics") or {}) if n != "model"]
    if baseline is not None:
        return baseline if baseline in names else None
    return "most_popular" if "most_popular" in names else (names[0] if names else None)


def planted_in_window(per_example: str | Path | Mapping[str, np.ndarray] | None,
                      max_len: float, *, contender: str = "model") -> float:
    """Share of a run's planted test examples whose trigger lies within the last
    ``max_len`` visible events (the model's window), from its per-example arrays
    (``<contender>/planted``, ``<contender>/planted/trigger_back``); NaN if unknown."""
    if per_example is None or not np.isfinite(max_len):
        return float("nan")
    if isinstance(per_example, (str, Path)):
        with np.load(per_example) as z:
            arrays = {k: z[k] for k in z.files if k.startswith(f"{contender}/planted")}
    else:
        arrays = dict(per_example)
    key = f"{contender}/planted"
    if key not in arrays or f"{key}/trigger_back" not in arrays:
        return float("nan")
    planted = np.asarray(arrays[key]) > 0
    if not planted.any():
        return float("nan")
    back = np.asarray(arrays[f"{key}/trigger_back"], dtype=np.float64)[planted]
    return float((np.nan_to_num(back, nan=np.inf) <= max_len).mean())


def collect_results(source: Any, configs: Sequence[Any] | None = None, *,
                    baseline: str | None = None) -> pd.DataFrame:
    """Tidy table of long-range runs: one row per run (see :data:`COLUMNS`).

    Args:
      source: anything :func:`load_runs` accepts (a multirun directory, result paths,
        :class:`RunResult` objects, ``(result, config)`` pairs).
      configs: optional configs aligned with ``source``.
      baseline: the contender reported as the chance reference (default
        ``most_popular`` when present).

    Returns:
      DataFrame with ``distance`` (baskets, from the run config; NaN without one),
      ``model``, ``seed``, ``max_len``, the model's planted ``planted_hr@1``,
      ``planted_hr@10``, ``planted_mrr``, ``planted_n``, ``planted_visible`` (share of
      planted examples whose trigger is inside the model's ``max_len`` window; from
      ``per_example.npz`` when the window is known, else the evaluator's share), the
      overall ``hr@10``, the baseline's ``baseline_*`` counterparts, ``wall_s`` and
      ``path``; sorted by distance, model, seed.
    """
    rows = []
    for run in load_runs(source, configs):
        res, cfg = run["result"], run["config"]
        prov = res.get("provenance") or {}
        max_len = float(config_value(cfg, "model.max_len", float("nan")))
        visible = planted_in_window(run["per_example"], max_len)
        if np.isnan(visible):
            visible = _metric(res, "model", "planted/visible")
        base = _best_baseline(res, baseline)
        rows.append({
            "distance": float(config_value(cfg, DISTANCE_KEY, float("nan"))),
            "model": prov.get("model") or config_value(cfg, "model.name"),
            "seed": prov.get("seed", config_value(cfg, "seed")),
            "max_len": max_len,
            "planted_hr@1": _metric(res, "model", "planted/hr@1"),
            "planted_hr@10": _metric(res, "model", "planted/hr@10"),
            "planted_mrr": _metric(res, "model", "planted/mrr"),
            "planted_n": _metric(res, "model", "planted/n"),
            "planted_visible": visible,
            "hr@10": _metric(res, "model", "hr@10"),
            "baseline_planted_hr@1": _metric(res, base, "planted/hr@1") if base else float("nan"),
            "baseline_planted_hr@10": _metric(res, base, "planted/hr@10") if base else float("nan"),
            "baseline_hr@10": _metric(res, base, "hr@10") if base else float("nan"),
            "wall_s": float(prov.get("wall_s", float("nan"))),
            "path": res.get("path"),
        })
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return df.sort_values(["distance", "model", "seed"], kind="stable").reset_index(drop=True)


def summarize(df: pd.DataFrame, metrics: Sequence[str] = ("planted_hr@1", "planted_hr@10")
              ) -> pd.DataFrame:
    """Mean and std over seeds per (model, distance): columns ``<metric>_mean`` /
    ``<metric>_std`` plus ``n_seeds`` and ``planted_n`` (summed over seeds)."""
    g = df.groupby(["model", "distance"], sort=True)
    out = g[list(metrics)].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["n_seeds"] = g.size()
    out["planted_n"] = g["planted_n"].sum()
    return out.reset_index()


# ------------------------------------------------------------------------------ plotting


def plot_accuracy_vs_distance(df: pd.DataFrame,
                              metrics: Sequence[str] = ("planted_hr@1", "planted_hr@10"), *,
                              models: Sequence[str] | None = None, title: str | None = None):
    """Planted accuracy vs trigger -> target distance, one line per model family.

    One panel per metric; each point is the mean over seeds with a ±1 std band (no band
    with one seed). The dashed grey line is the baseline's planted metric (the chance
    reference: a popularity ranker never puts a rare target first).

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
        base_col = f"baseline_{metric}"
        if base_col in df and df[base_col].notna().any():
            base = df.groupby("distance")[base_col].mean()
            ax.plot(base.index, base.values, linestyle="--", color="grey", label="most popular")
        ax.set_xscale("log", base=2)
        ticks = sorted(df["distance"].dropna().unique())
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(int(t)) for t in ticks])
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("trigger -> target distance (baskets)")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    n_seeds = df.groupby(["model", "distance"]).size().max()
    fig.suptitle(title or f"Long-range memory on planted pairs (mean ± std over {n_seeds} seed(s))")
    fig.tight_layout()
    return fig
