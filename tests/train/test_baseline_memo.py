"""The sweep's baseline memo: equal baselines are fitted once per process, keyed by
content, and never reused when anything they read differs."""

import dataclasses

import numpy as np
import pytest
from omegaconf import OmegaConf

from attnlab.baselines import registry
from attnlab.train import loop
from attnlab.train.loop import BASELINE_MEMO, BaselineMemo, evaluate_baselines, train_and_evaluate
from tests.train.test_train import tiny_cfg


@pytest.fixture
def memo():
    BASELINE_MEMO.enable()
    yield BASELINE_MEMO
    BASELINE_MEMO.enable(False)


@pytest.fixture
def fits(monkeypatch):
    """Counts the ranking baselines' fits."""
    calls = []
    real = registry.ranking_baselines

    def counted(names, store, split):
        calls.append(tuple(names))
        return real(names, store, split)

    monkeypatch.setattr(registry, "ranking_baselines", counted)
    from attnlab.train.tasks import ranking

    monkeypatch.setattr(ranking, "ranking_baselines", counted)
    return calls


def test_a_sweeps_second_model_reuses_the_first_runs_baselines(tmp_path, memo, fits):
    common = ("task=next_basket", "trainer.max_steps=4", "trainer.max_epochs=1", "seed=0")
    a = train_and_evaluate(tiny_cfg(tmp_path, *common, "model=vanilla", out="a"))
    b = train_and_evaluate(tiny_cfg(tmp_path, *common, "model=lstm", out="b"))
    assert len(fits) == 1                                   # fitted once, for the first run
    assert a.provenance["baselines_reused"] is False and b.provenance["baselines_reused"] is True
    for name in set(a.metrics) - {"model"}:
        assert a.metrics[name] == b.metrics[name]           # identical numbers, timings included
    # a different task config (another k) is another computation: fitted again
    c = train_and_evaluate(tiny_cfg(tmp_path, *common, "model=lstm", "task.ks=[5,10]", out="c"))
    assert len(fits) == 2 and c.provenance["baselines_reused"] is False


def test_next_item_seeds_split_differently_so_nothing_is_reused(tmp_path):
    from attnlab.data.pipeline import store_from_config
    from attnlab.train.tasks import make_task

    cfg = tiny_cfg(tmp_path)                                # next_item: the target item is seeded
    store = store_from_config(cfg.data, cache_dir=tmp_path / "cache", progress=False)
    task = make_task(OmegaConf.to_container(cfg.task, resolve=True))
    keys = {BaselineMemo.key(task, store, task.split(store, seed=s)) for s in (0, 0, 1)}
    assert len(keys) == 2


def test_off_by_default_and_keyed_by_every_array(tmp_path, fits):
    """Library callers fit every time; the key changes with any array of the store or split."""
    from attnlab.data.pipeline import store_from_config
    from attnlab.train.tasks import make_task

    cfg = tiny_cfg(tmp_path, "task=next_basket")
    store = store_from_config(cfg.data, cache_dir=tmp_path / "cache", progress=False)
    task = make_task(OmegaConf.to_container(cfg.task, resolve=True))
    split = task.split(store, seed=0)
    off = BaselineMemo()
    evaluate_baselines(task, store, split, progress=False, memo=off)
    evaluate_baselines(task, store, split, progress=False, memo=off)
    assert len(fits) == 2                                   # not enabled: no reuse

    key = BaselineMemo.key(task, store, split)
    assert key == BaselineMemo.key(task, store, split)
    value = np.asarray(store.value).copy()
    value[0] += 1.0
    assert BaselineMemo.key(task, dataclasses.replace(store, value=value), split) != key
    train_end = np.asarray(split.train_end).copy()
    train_end[0] -= 1
    assert BaselineMemo.key(task, store, dataclasses.replace(split, train_end=train_end)) != key
    test = dataclasses.replace(split.test, end=np.asarray(split.test.end) - 1)
    assert BaselineMemo.key(task, store, dataclasses.replace(split, test=test)) != key
    # side columns (dicts of arrays) are hashed byte by byte, not as numpy's shortened str()
    side = np.zeros(5000, np.int32)
    with_side = dataclasses.replace(store, customer_side={"segment": side})
    side2 = side.copy()
    side2[2500] = 1                                         # deep inside: str() would print "..."
    assert (BaselineMemo.key(task, with_side, split)
            != BaselineMemo.key(task, dataclasses.replace(store, customer_side={"segment": side2}), split))


def test_the_memo_is_bounded_and_hands_out_copies():
    m = BaselineMemo(size=2)
    m.enable()
    ev = {"b": loop.Evaluated({"x": 1.0}, {"x": np.zeros(2)})}
    for k in "pqr":
        m.put(k, ev)
    assert m.get("p") is None and m.get("q") is not None and m.get("r") is not None
    got = m.get("r")
    got["b"].metrics["x"] = 5.0
    assert m.get("r")["b"].metrics["x"] == 1.0
