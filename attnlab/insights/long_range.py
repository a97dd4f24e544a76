"""Long-range memory: accuracy on a planted, cued dependency vs its distance, per family.

The synthetic simulator in cue mode (:mod:`attnlab.data.sources.synthetic`,
``trigger_mode="cue"``) gives every customer one episode: trigger ``j``, then
``distance - 2`` regular baskets, then a cue item, then target ``j``. The cue says
*when* to recall, the trigger *which* target, so accuracy at the cue measures memory
over ``distance`` events, not exact-lag counting. Under the ``next_item`` protocol a
quarter of the test customers (and a quarter of the validation rows) end on
``cue -> target``; :func:`attnlab.eval.evaluate.evaluate_next_item` scores those rows
separately (``planted/hr@1``, ``planted/mrr``, ``planted/n``, ``planted/cued``, whether
the trigger is in the window), and the experiment selects checkpoints on the validation
``planted/hr@1``. This module builds the distance x model x seed grid (each distance with
its own window, :data:`MAX_LEN`), collects the run results into a tidy table, reports
where each family stops remembering (:func:`memory_limits`) and plots planted accuracy
against distance.

    overrides = sweep_overrides()                    # one Hydra override list per job
    df = collect_results("outputs/multirun/long_range")
    memory_limits(df)                                # per family: remembers up to / forgets at
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

DISTANCES: tuple[int, ...] = (8, 32, 128, 512)
#: The window (``model.max_len`` = the simulator's ``max_events`` history cap) of each
#: distance: every history fits one window, so every trigger is visible to the model.
MAX_LEN: dict[int, int] = {8: 32, 32: 64, 128: 256, 512: 1024}
#: The published grid: LSTM and every attention family. ``sparse`` keeps its default
#: window of 64 events: it equals ``vanilla`` at distances 8 and 32 (window >= max_len)
#: and cannot see the trigger at 128 and 512 (a control that should score chance).
MODELS: tuple[str, ...] = ("lstm", "vanilla", "time_decay", "sparse", "linear")
SEEDS: tuple[int, ...] = (0, 1, 2)
DISTANCE_KEY = "data.options.trigger_distance"
MAX_EVENTS_KEY = "data.options.max_events"
#: :func:`memory_limits` thresholds on planted HR@1 (mean over seeds).
REMEMBERS, FORGETS = 0.9, 0.5

#: Columns of :func:`collect_results` (one row per run).
COLUMNS: tuple[str, ...] = (
    "distance", "model", "seed", "max_len", "planted_hr@1", "planted_hr@10", "planted_mrr",
    "planted_n", "planted_visible", "planted_cued", "valid_planted_hr@1", "hr@10", "chance_hr@1",
    "baseline_planted_hr@1", "baseline_planted_hr@10", "baseline_hr@10", "oracle_planted_hr@1",
    "wall_s", "path",
)


# ---------------------------------------------------------------------------- the grid


def window_for(distance: int) -> int:
    """The window (``model.max_len`` and ``data.options.max_events``) of a distance:
    :data:`MAX_LEN` for the published distances, else the smallest power of two
    >= ``2 * distance`` (at least 32), which leaves room for the trigger offset, the
    episode and a training tail."""
    d = int(distance)
    if d in MAX_LEN:
        return MAX_LEN[d]
    return max(32, 1 << int(np.ceil(np.log2(2 * d))))


def sweep_overrides(distances: Sequence[int] = DISTANCES, models: Sequence[str] = MODELS,
                    seeds: Sequence[int] = SEEDS, *, experiment: str | None = "long_range",
                    extra: Sequence[str] = ()) -> list[list[str]]:
    """Hydra override lists of the distance x model x seed grid, one per job.

    Args:
      distances: trigger -> target distances in baskets (``data.options.trigger_distance``);
        each job also sets ``data.options.max_events`` to :func:`window_for` (the
        experiment ties ``model.max_len`` to it).
      models: model config names (``configs/model/<name>.yaml``).
      seeds: run seeds (the long_range experiment also seeds the simulator with it).
      experiment: experiment config to start from (None: plain ``data=synthetic
        task=next_item``, where the cue options must come in ``extra``).
      extra: overrides appended to every job (e.g. ``["logger=none"]``).

    Returns:
      ``[[..., "model=lstm", "seed=0", "data.options.trigger_distance=8",
      "data.options.max_events=32", *extra], ...]`` ordered by distance, then model,
      then seed.
    """
    base = [f"experiment={experiment}"] if experiment else ["data=synthetic", "task=next_item"]
    out = []
    for d, m, s in itertools.product(distances, models, seeds):
        if int(d) < 2:
            raise ValueError(f"distances must be >= 2 baskets (trigger, cue, target), got {d}")
        out.append([*base, f"model={m}", f"seed={int(s)}", f"{DISTANCE_KEY}={int(d)}",
                    f"{MAX_EVENTS_KEY}={window_for(d)}", *extra])
    return out


def config_grid(cfg: Any) -> dict[int, int]:
    """``{distance: max_events}`` of an experiment config's sweep (its
    ``hydra.sweeper.params["data.options"]``, one dict per grid point), parsed with
    Hydra's own override grammar; ``{}`` when the config sweeps no ``data.options``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config_value(cfg, "hydra.sweeper.params", None) or {}
    value = params.get("data.options") if hasattr(params, "get") else None
    if value is None:
        return {}
    override = OverridesParser.create().parse_overrides([f"data.options={value}"])[0]
    points = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
    return {int(p["trigger_distance"]): int(p["max_events"]) for p in points}


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
        path to a result JSON, a :class:`attnlab.results.RunResult`, a result dict
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


ORACLE = "planted_oracle"


def _best_baseline(result: Mapping[str, Any], baseline: str | None) -> str | None:
    names = [n for n in (result.get("metrics") or {}) if n not in ("model", ORACLE)]
    if baseline is not None:
        return baseline if baseline in names else None
    return "most_popular" if "most_popular" in names else (names[0] if names else None)


def _valid_metric(result: Mapping[str, Any], key: str) -> float:
    v = (result.get("valid") or {}).get(key)
    return float("nan") if v is None else float(v)


def _chance(cfg: Any) -> float:
    """Planted HR@1 of a model that knows the cue but not the trigger: 1 / pairs."""
    n = config_value(cfg, "data.options.n_triggers", None)
    return 1.0 / float(n) if n else float("nan")


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
        ``most_popular`` when present; never the oracle).

    Returns:
      DataFrame with ``distance`` (baskets, from the run config; NaN without one),
      ``model``, ``seed``, ``max_len``, the model's test ``planted_hr@1``,
      ``planted_hr@10``, ``planted_mrr``, ``planted_n``, ``planted_visible`` (share of
      planted examples whose trigger is inside the model's ``max_len`` window; from
      ``per_example.npz`` when the window is known, else the evaluator's share),
      ``planted_cued`` (share whose latest event is the cue), ``valid_planted_hr@1``
      (the selected checkpoint's validation value), the overall ``hr@10``,
      ``chance_hr@1`` (``1 / n_triggers``: knowing the cue but not the trigger), the
      baseline's ``baseline_*`` counterparts, ``oracle_planted_hr@1`` (the planted
      oracle, 1.0 when the rule is applicable), ``wall_s`` and ``path``; sorted by
      distance, model, seed.
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
            "planted_cued": _metric(res, "model", "planted/cued"),
            "valid_planted_hr@1": _valid_metric(res, "planted/hr@1"),
            "hr@10": _metric(res, "model", "hr@10"),
            "chance_hr@1": _chance(cfg),
            "baseline_planted_hr@1": _metric(res, base, "planted/hr@1") if base else float("nan"),
            "baseline_planted_hr@10": _metric(res, base, "planted/hr@10") if base else float("nan"),
            "baseline_hr@10": _metric(res, base, "hr@10") if base else float("nan"),
            "oracle_planted_hr@1": _metric(res, ORACLE, "planted/hr@1"),
            "wall_s": float(prov.get("wall_s", float("nan"))),
            "path": res.get("path"),
        })
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return df.sort_values(["distance", "model", "seed"], kind="stable").reset_index(drop=True)


def summarize(df: pd.DataFrame, metrics: Sequence[str] = ("planted_hr@1", "planted_mrr")
              ) -> pd.DataFrame:
    """Mean and std over seeds per (model, distance): columns ``<metric>_mean`` /
    ``<metric>_std`` plus ``n_seeds`` and ``planted_n`` (summed over seeds)."""
    g = df.groupby(["model", "distance"], sort=True)
    out = g[list(metrics)].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["n_seeds"] = g.size()
    out["planted_n"] = g["planted_n"].sum()
    return out.reset_index()


def memory_limits(df: pd.DataFrame, *, metric: str = "planted_hr@1", remembers: float = REMEMBERS,
                  forgets: float = FORGETS, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Where each family stops remembering, from the mean over seeds per distance.

    Args:
      df: :func:`collect_results` output (or any frame with ``model``, ``distance`` and
        ``metric``).
      metric: the accuracy column (default planted HR@1).
      remembers: a family "remembers" a distance when its mean is ``>= remembers``.
      forgets: ... and has "forgotten" it when its mean is ``< forgets``.
      models: families to report, in order (default: :data:`MODELS` present in ``df``,
        then the others).

    Returns:
      One row per family: ``remembers_up_to`` (the largest tested distance up to which
      EVERY tested distance has mean ``>= remembers``; NaN if not even the shortest),
      ``forgets_at`` (the shortest tested distance with mean ``< forgets``; NaN if none),
      ``<metric>_at`` (``{distance: mean}`` for reading the curve), ``n_seeds`` (the
      fewest seeds behind any of its points) and ``distances`` (how many were tested).
    """
    if df.empty:
        raise ValueError("no runs (empty DataFrame)")
    present = list(dict.fromkeys(df["model"]))
    order = list(models) if models is not None else (
        [m for m in MODELS if m in present] + [m for m in present if m not in MODELS])
    rows = []
    for model in order:
        sub = df[(df["model"] == model) & df["distance"].notna()]
        curve = sub.groupby("distance")[metric].mean().sort_index()
        seeds = sub.groupby("distance").size()
        up_to = float("nan")
        for d, v in curve.items():
            if not v >= remembers:  # NaN counts as not remembered
                break
            up_to = float(d)
        below = [float(d) for d, v in curve.items() if v < forgets]
        rows.append({
            "model": model,
            "remembers_up_to": up_to,
            "forgets_at": below[0] if below else float("nan"),
            f"{metric}_at": {int(d): round(float(v), 4) for d, v in curve.items()},
            "n_seeds": int(seeds.min()) if len(seeds) else 0,
            "distances": int(len(curve)),
        })
    return pd.DataFrame(rows, columns=["model", "remembers_up_to", "forgets_at", f"{metric}_at",
                                       "n_seeds", "distances"])


# ------------------------------------------------------------------------------ plotting


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
