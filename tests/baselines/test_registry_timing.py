"""Each baseline's fit time is measured separately and returned with its predictor."""

import math

import pytest

from attnlab.baselines.registry import FittedBaseline, ranking_baselines
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
def test_task_returns_one_fit_time_per_baseline(store, task_cfg):
    task = make_task(task_cfg)
    split = task.split(store, seed=0)
    fitted = task.baselines(store, split)
    assert list(fitted) == task_cfg["baselines"]
    for name, f in fitted.items():
        assert isinstance(f, FittedBaseline) and callable(f.predict)
        assert isinstance(f.fit_s, float) and math.isfinite(f.fit_s) and f.fit_s >= 0.0, (name, f.fit_s)
    # a second call with other names returns only those (nothing carried over from the first)
    first = task_cfg["baselines"][:1]
    assert list(make_task({**task_cfg, "baselines": first}).baselines(store, split)) == first


def test_each_fit_is_timed_on_its_own(store, monkeypatch):
    """The clock is read around each baseline's construction + fit, not around the loop."""
    import attnlab.baselines.registry as reg

    ticks = iter([0.0, 1.0, 10.0, 13.0])
    monkeypatch.setattr(reg.time, "perf_counter", lambda: next(ticks))
    split = make_task({"name": "next_item"}).split(store, seed=0)
    fitted = ranking_baselines(["most_popular", "personal_repeat"], store, split)
    assert [f.fit_s for f in fitted.values()] == [1.0, 3.0]
