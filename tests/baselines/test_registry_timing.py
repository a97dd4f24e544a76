"""Each baseline's fit time is measured separately and exposed as ``task.baseline_fit_s``."""

import math

import pytest

from attnlab.baselines.registry import ranking_baselines
from attnlab.data.pipeline import load_sequences
from attnlab.train.tasks import make_task


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return load_sequences("synthetic", {"n_customers": 80, "n_items": 30},
                          cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


@pytest.mark.parametrize("task_cfg", [
    {"name": "next_item", "baselines": ["most_popular", "personal_repeat", "item_knn"]},
    {"name": "next_basket", "baselines": ["most_popular", "rfm_segment_popularity"]},
    {"name": "churn", "horizon": "2W", "baselines": ["recency_frequency", "rfm"]},
], ids=lambda c: c["name"])
def test_task_exposes_one_fit_time_per_baseline(store, task_cfg):
    task = make_task(task_cfg)
    assert task.baseline_fit_s == {}
    split = task.split(store, seed=0)
    fitted = task.baselines(store, split)
    assert isinstance(fitted, dict) and list(fitted) == task_cfg["baselines"]  # return type unchanged
    assert all(callable(fn) for fn in fitted.values())
    assert list(task.baseline_fit_s) == task_cfg["baselines"]
    for name, seconds in task.baseline_fit_s.items():
        assert isinstance(seconds, float) and math.isfinite(seconds) and seconds >= 0.0, (name, seconds)
    # a second call starts a fresh dict (no stale entries from earlier calls)
    first = task_cfg["baselines"][:1]
    task.cfg = {**task_cfg, "baselines": first}
    task.baselines(store, split)
    assert list(task.baseline_fit_s) == first


def test_registry_fills_the_dict_only_when_asked(store):
    split = make_task({"name": "next_item"}).split(store, seed=0)
    assert set(ranking_baselines(["most_popular"], store, split)) == {"most_popular"}
    times: dict[str, float] = {}
    ranking_baselines(["most_popular", "personal_repeat"], store, split, fit_seconds=times)
    assert set(times) == {"most_popular", "personal_repeat"}
