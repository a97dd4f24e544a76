"""Tasks: how a protocol becomes training batches, a loss, scores and metrics.

Each task is a small class registered in :data:`TASKS`; the trainer never branches on
the task name. A task states what the model may see (the protocol in
:mod:`attnlab.data.splits`) and builds training data only from ``split.train_end``
prefixes or ``split.train`` examples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attnlab.train.tasks.churn import ChurnTask
from attnlab.train.tasks.common import ScoreFn, check_split, data_span
from attnlab.train.tasks.ranking import NextBasketTask, NextItemTask
from attnlab.train.tasks.sampling import NegativeSampler, pick_per_group, sample_target_positions

__all__ = ["TASKS", "ChurnTask", "NegativeSampler", "NextBasketTask", "NextItemTask", "ScoreFn",
           "check_split", "data_span", "make_task", "pick_per_group", "sample_target_positions"]

TASKS: dict[str, type] = {"next_item": NextItemTask, "next_basket": NextBasketTask, "churn": ChurnTask}


def make_task(task_cfg: Mapping[str, Any]):
    """The task named by ``task_cfg["name"]``, its config typed (:mod:`attnlab.train.task_config`):
    unknown keys and out-of-range values fail here, before any data is loaded."""
    name = task_cfg.get("name")
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; available: {sorted(TASKS)}. Pick one with task=<name>.")
    return TASKS[name](task_cfg)
