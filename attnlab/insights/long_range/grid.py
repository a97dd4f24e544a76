"""The long-range sweep: distances, model families, seeds, the window of each distance,
and the Hydra override lists of the distance x model x seed grid."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from attnlab.insights.long_range.runs import config_value

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
    "distance", "model", "seed", "max_len", "max_steps", "planted_hr@1", "planted_hr@10", "planted_mrr",
    "planted_n", "planted_visible", "planted_cued", "valid_planted_hr@1", "hr@10", "chance_hr@1",
    "baseline_planted_hr@1", "baseline_planted_hr@10", "baseline_hr@10", "oracle_planted_hr@1",
    "wall_s", "path",
)


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
