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
``planted/hr@1``. This package builds the distance x model x seed grid (each distance with
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

from attnlab.insights.long_range.analysis import (
    ORACLE, check_one_budget, collect_results, memory_limits, planted_in_window, summarize,
)
from attnlab.insights.long_range.grid import (
    COLUMNS, DISTANCE_KEY, DISTANCES, FORGETS, MAX_EVENTS_KEY, MAX_LEN, MODELS, REMEMBERS, SEEDS, config_grid,
    sweep_overrides, window_for,
)
from attnlab.insights.long_range.plots import plot_accuracy_vs_distance
from attnlab.insights.long_range.runs import config_value, load_runs

__all__ = [
    "COLUMNS", "DISTANCES", "DISTANCE_KEY", "FORGETS", "MAX_EVENTS_KEY", "MAX_LEN", "MODELS", "ORACLE",
    "REMEMBERS", "SEEDS", "check_one_budget", "collect_results", "config_grid", "config_value", "load_runs", "memory_limits",
    "planted_in_window", "plot_accuracy_vs_distance", "summarize", "sweep_overrides", "window_for",
]
