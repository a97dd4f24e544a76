"""The long-range results table (:func:`collect_results`), its summary over seeds and where
each family stops remembering (:func:`memory_limits`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attnlab.insights.long_range.grid import COLUMNS, DISTANCE_KEY, FORGETS, MODELS, REMEMBERS
from attnlab.insights.long_range.runs import config_value, load_runs

ORACLE = "planted_oracle"


def _metric(result: Mapping[str, Any], contender: str, key: str) -> float:
    v = (result.get("metrics") or {}).get(contender, {}).get(key)
    return float("nan") if v is None else float(v)


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
      ``model``, ``seed``, ``max_len``, ``max_steps`` (the step budget), the model's test ``planted_hr@1``,
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
            "max_steps": float(config_value(cfg, "trainer.max_steps", float("nan"))),
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


def check_one_budget(df: pd.DataFrame) -> None:
    """Refuse a frame where one (model, distance) holds runs of different step budgets
    (``max_steps``): averaging them as seeds would mix a short and a long training (the
    LSTM at 2,400 and 9,600 steps differs by 0.2 vs 0.97 at distance 128)."""
    if "max_steps" not in df or df.empty:
        return
    budgets = df.dropna(subset=["max_steps"]).groupby(["model", "distance"])["max_steps"].unique()
    mixed = budgets[budgets.map(len) > 1]
    if len(mixed):
        (model, distance), steps = next(iter(mixed.items()))
        raise ValueError(f"{model} at distance {distance:g} has runs at {len(steps)} step budgets "
                         f"(trainer.max_steps {sorted(int(s) for s in steps)}); their mean is not a mean "
                         f"over seeds. Select one budget first, e.g. df[df.max_steps == {int(min(steps))}].")


def summarize(df: pd.DataFrame, metrics: Sequence[str] = ("planted_hr@1", "planted_mrr")
              ) -> pd.DataFrame:
    """Mean and std over seeds per (model, distance): columns ``<metric>_mean`` /
    ``<metric>_std`` plus ``n_seeds`` and ``planted_n`` (summed over seeds). A frame that
    mixes step budgets for one (model, distance) is refused (:func:`check_one_budget`)."""
    check_one_budget(df)
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
    check_one_budget(df)
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
