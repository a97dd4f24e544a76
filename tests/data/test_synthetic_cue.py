"""Synthetic simulator, cue mode (the long-range memory study): every planted target is
announced by a cue, every window that holds a target holds its trigger, enough planted
test and validation rows, and no ground truth reaches a model."""

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from attnlab.data.batching import make_batch, next_basket_targets
from attnlab.data.pipeline import load_sequences
from attnlab.data.sources import get_source
from attnlab.eval.evaluate import planted_cue, planted_pairs
from attnlab.insights.long_range import DISTANCES, window_for
from attnlab.train.tasks import make_task

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SIM = get_source("synthetic").load
CUE = dict(n_customers=400, n_items=30, n_triggers=4, trigger_prob=1.0, trigger_window=4,
           trigger_offset=5, trigger_distance=12, trigger_mode="cue", max_events=40,
           mean_basket_size=1.0, max_basket_size=1, mean_gap_days=1.0, decay_boost=0.0, seed=0)


def experiment_cfg(distance=None):
    overrides = ["experiment=long_range", "seed=0"]
    if distance is not None:
        overrides += [f"data.options.trigger_distance={distance}",
                      f"data.options.max_events={window_for(distance)}"]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg.data, resolve=True), OmegaConf.to_container(cfg.task, resolve=True), \
        int(cfg.model.max_len)


def store_of(options):
    return load_sequences("synthetic", options, cache_dir=None, progress=False)


def episodes(store):
    """Per planted target event: (position, its customer's trigger position, customer)."""
    pairs = planted_pairs(store)
    trigger_of = np.zeros(store.n_items + 1, np.int64)
    trigger_of[pairs[:, 1]] = pairs[:, 0]
    cust = np.repeat(np.arange(store.n_customers), np.diff(store.offsets))
    tgt = np.flatnonzero(trigger_of[store.item] > 0)
    trig = np.full(len(tgt), -1)
    for k, p in enumerate(tgt):
        start = store.offsets[cust[p]]
        hits = np.flatnonzero(store.item[start:p] == trigger_of[store.item[p]])
        if len(hits):
            trig[k] = start + hits[-1]
    return tgt, trig, cust[tgt]


# ------------------------------------------------------------------------ the generator


def test_cue_immediately_precedes_every_planted_target_and_nowhere_else():
    store = store_of(CUE)
    cue = planted_cue(store)
    assert cue > 0 and store.meta["source_meta"]["cue_item"] == CUE["n_items"] - 1
    tgt, trig, cust = episodes(store)
    assert len(tgt) == CUE["n_customers"]  # one episode per customer (trigger_prob 1)
    assert np.all(tgt > store.offsets[cust])
    np.testing.assert_array_equal(store.item[tgt - 1], cue)  # the event right before
    assert np.all(store.time[tgt - 1] < store.time[tgt])  # strictly earlier: visible at test time
    assert np.all(store.basket[tgt - 1] != store.basket[tgt])  # its own basket
    assert (store.item == cue).sum() == len(tgt)  # the cue never appears otherwise
    # the trigger is exactly `distance` events before its target, once per customer
    np.testing.assert_array_equal(tgt - trig, CUE["trigger_distance"])
    assert np.all(trig - store.offsets[cust] >= CUE["trigger_offset"])
    assert np.bincount(cust, minlength=store.n_customers).max() == 1


def test_lag_tolerant_variant_jitters_the_distance_but_keeps_the_cue():
    store = store_of({**CUE, "trigger_jitter": 3})
    tgt, trig, _ = episodes(store)
    lag = tgt - trig
    assert lag.min() >= 9 and lag.max() <= 15 and len(np.unique(lag)) >= 5
    np.testing.assert_array_equal(store.item[tgt - 1], planted_cue(store))


def test_mixed_training_lags_leave_the_evaluated_episodes_at_the_distance():
    data = SIM(**{**CUE, "train_lag_min": 2})
    cf = data.customer_features
    lag = cf["target_step"] - cf["trigger_step"]
    train = cf["planted_role"] == "train"
    assert (lag[~train] == CUE["trigger_distance"]).all()  # test and valid rows: exactly d
    assert lag[train].min() >= 2 and lag[train].max() <= CUE["trigger_distance"]
    assert (lag[train] < 6).sum() > 30 and (lag[train] > 8).sum() > 30  # short and long
    assert (cf["cue_step"] == cf["target_step"] - 1).all()
    with pytest.raises(ValueError, match="train_lag_min"):
        SIM(**{**CUE, "train_lag_min": 1})


def test_roles_have_exact_counts_and_shape_the_history_end():
    data = SIM(**CUE)
    cf = data.customer_features
    counts = cf["planted_role"].value_counts().to_dict()
    assert counts == {"train": 200, "test": 100, "valid": 100}
    assert data.meta["planted_roles"]["test"] == 100
    nb, tstep = cf["n_baskets"], cf["target_step"]
    assert (nb[cf.planted_role == "test"] == tstep[cf.planted_role == "test"] + 1).all()
    assert (nb[cf.planted_role == "valid"] == tstep[cf.planted_role == "valid"] + 2).all()
    assert (nb[cf.planted_role == "train"] == CUE["max_events"]).all()
    assert (cf["cue_step"] == tstep - 1).all() and (cf["churned"] == 0).all()


def test_bad_cue_options_are_explained():
    with pytest.raises(ValueError, match="needs max_events"):
        SIM(**{**CUE, "max_events": None})
    with pytest.raises(ValueError, match="too small"):
        SIM(**{**CUE, "trigger_distance": 40})
    with pytest.raises(ValueError, match="trigger_jitter"):
        SIM(n_customers=10, trigger_jitter=2)  # lag mode: a jittered target is unpredictable
    with pytest.raises(ValueError, match="campaigns"):
        SIM(**{**CUE, "campaigns_per_customer": 1.0})
    with pytest.raises(ValueError, match="trigger_mode"):
        SIM(n_customers=10, trigger_mode="counting")


def test_default_options_leave_the_original_simulator_untouched():
    a = SIM(n_customers=200, seed=4)
    assert "planted_role" not in a.customer_features and "cue_item" not in a.meta
    assert (a.item_features["role"] != "cue").all()
    b = SIM(n_customers=200, seed=4, trigger_mode="lag", trigger_offset=0, trigger_jitter=0,
            max_events=None)
    assert a.events.equals(b.events)


# ------------------------------------------------- the experiment's data, every distance


@pytest.mark.parametrize("distance", DISTANCES)
def test_every_window_that_holds_a_target_holds_its_trigger(distance):
    """On the store alone, whatever the trainer samples: a training window is the last
    ``max_len`` events before some end; the latest end of a customer is its last event,
    and windows ending earlier start earlier, so checking that window suffices. Here
    every history fits in ``max_len`` (each window is a whole prefix)."""
    data_cfg, _, max_len = experiment_cfg(distance)
    store = store_of(data_cfg["options"])
    assert int(np.diff(store.offsets).max()) <= max_len
    tgt, trig, cust = episodes(store)
    assert len(tgt) > 0 and np.all(trig >= 0)
    last_start = np.maximum(store.offsets[cust], store.offsets[cust + 1] - max_len)
    assert np.all(last_start <= trig) and np.all(tgt - trig <= max_len)
    # evaluated episodes sit exactly at the distance; training ones (mixed lags) within it
    role = np.asarray(store.customer_side["planted_role"])[cust]
    train = role == store.customer_side_vocab["planted_role"].index("train")
    np.testing.assert_array_equal((tgt - trig)[~train], distance)
    assert np.all(tgt - trig <= distance + data_cfg["options"]["trigger_jitter"])


@pytest.mark.parametrize("distance", [None, DISTANCES[-1]])
def test_enough_planted_test_and_validation_rows(distance):
    """>= 300 planted rows per seed (95% CI on HR@1 within about +-0.05), on the store
    and the split alone (no training)."""
    data_cfg, task_cfg, _ = experiment_cfg(distance)
    store = store_of(data_cfg["options"])
    split = make_task(task_cfg).split(store, seed=0)
    targets = set(planted_pairs(store)[:, 1].tolist())
    n_test = int(np.isin(split.test.target_items, list(targets)).sum())
    n_valid = int(np.isin(split.valid.target_items, list(targets)).sum())
    assert n_test >= 300 and n_valid >= 300
    half_width = 1.96 * np.sqrt(0.25 / n_test)  # worst case p = 0.5
    assert half_width <= 0.05


# ------------------------------------------------------------------------------- leakage


def strip_ground_truth(store):
    import dataclasses

    return dataclasses.replace(store, meta={}, customer_side={}, customer_side_vocab={},
                               customer_numeric={}, item_side={}, item_side_vocab={},
                               item_numeric={})


def test_no_ground_truth_reaches_the_model_inputs():
    """Models read Batch.model_inputs(), built from events alone: the same arrays with
    the simulator's ground truth (meta pairs, cue, roles, trigger/target columns)
    removed from the store."""
    store = store_of(CUE)
    assert "trigger_item" in store.customer_numeric or "trigger_item" in store.customer_side
    bare = strip_ground_truth(store)
    split = make_task({"name": "next_item"}).split(store, seed=0)
    for ex in (split.test, split.valid):
        a = make_batch(store, customers=ex.customer, ends=ex.end, cutoffs=None, max_len=40)
        b = make_batch(bare, customers=ex.customer, ends=ex.end, cutoffs=None, max_len=40)
        inputs = a.model_inputs()
        assert set(inputs) == set(b.model_inputs())
        assert not {"trigger_item", "target_item", "planted_role", "role"} & set(inputs)
        for k, v in inputs.items():
            np.testing.assert_array_equal(v, b.model_inputs()[k], err_msg=k)
        # a held-out planted target is never in its visible history
        planted = np.flatnonzero(np.isin(ex.target_items, planted_pairs(store)[:, 1]))
        assert len(planted) > 50
        for m in planted:
            assert ex.target_items[m] not in store.item[store.offsets[ex.customer[m]]:ex.end[m]]


def test_planted_evaluation_targets_are_never_training_targets():
    store = store_of(CUE)
    split = make_task({"name": "next_item"}).split(store, seed=0)
    targets = next_basket_targets(store, split.train_end)
    planted = planted_pairs(store)[:, 1]
    role = np.asarray(store.customer_side["planted_role"])
    vocab = store.customer_side_vocab["planted_role"]
    cust = np.repeat(np.arange(store.n_customers), np.diff(store.offsets))
    for name in ("test", "valid"):
        held_out = np.isin(cust, np.flatnonzero(role == vocab.index(name)))
        assert not np.isin(targets[held_out], planted).any(), name
    # ... while the train-role episodes teach the rule at their cue position
    train = np.isin(cust, np.flatnonzero(role == vocab.index("train")))
    cued = train & (store.item == planted_cue(store))
    assert np.isin(targets[cued], planted).all() and cued.sum() == (role == vocab.index("train")).sum()
