"""The planted-pair oracle: HR@1 = 1 where the rule applies, popularity elsewhere."""

import dataclasses

import numpy as np
import pytest

from attnlab.baselines.planted_oracle import PlantedOracle
from attnlab.baselines.registry import RANKING, ranking_baselines
from attnlab.data.pipeline import load_sequences
from attnlab.data.schema import EventType
from attnlab.data.splits import Examples, next_item_split
from attnlab.eval import evaluate_next_item
from protocol_stores import build_store

P = int(EventType.PURCHASE)
C = int(EventType.CAMPAIGN)
# source id = vocab index - 1: pairs (source) 4 -> 5 and 6 -> 7 are vocab 5 -> 6 and 7 -> 8;
# the cue is source 9 = vocab 10.
META = {"source_meta": {"trigger_pairs": [[4, 5], [6, 7]], "cue_item": 9}}


def hand_store():
    rows = [
        (0, 1, 1, 5, P), (0, 2, 2, 1, P), (0, 3, 3, 10, P),                   # c0: trigger 5, cue -> fires 6
        (1, 1, 1, 5, P), (1, 2, 2, 7, P), (1, 3, 3, 2, P), (1, 4, 4, 10, P),  # c1: two triggers: the latest (7) -> 8
        (2, 1, 1, 5, P), (2, 2, 2, 10, P), (2, 3, 3, 1, P),                   # c2: cue not the latest event
        (3, 1, 1, 1, P), (3, 2, 2, 10, P),                                    # c3: cue, no trigger
        (4, 1, 1, 5, C), (4, 2, 2, 10, P),                                    # c4: "trigger" only as a campaign
    ]
    s = build_store(rows, n_items=12)
    return dataclasses.replace(s, meta=META)


def all_rows(store):
    n = store.n_customers
    return Examples(customer=np.arange(n), end=store.offsets[1:].copy(), cutoff=np.zeros(n, np.int64),
                    target_offsets=np.arange(n + 1), target_items=np.ones(n, np.int32))


def test_fires_only_on_a_cue_with_a_visible_trigger_and_uses_the_latest_trigger():
    s = hand_store()
    oracle = PlantedOracle().fit(s, s.offsets[1:])
    ex = all_rows(s)
    np.testing.assert_array_equal(oracle.planted_target(s, ex), [6, 8, 0, 0, 0])
    scores = oracle.score(s, ex)
    assert scores.shape == (5, s.n_items + 1) and scores.dtype == np.float32
    assert scores[0].argmax() == 6 and scores[1].argmax() == 8
    # where it does not fire it is exactly popularity
    pop = oracle.counts.astype(np.float32)
    np.testing.assert_array_equal(scores[2:], np.repeat(pop[None], 3, axis=0))
    # a shorter visible history of c0 (the cue hidden) does not fire
    short = dataclasses.replace(ex, end=ex.end - 1)
    assert oracle.planted_target(s, short)[0] == 0


def test_without_a_cue_it_is_plain_popularity():
    s = dataclasses.replace(hand_store(), meta={"source_meta": {"trigger_pairs": [[4, 5]]}})
    oracle = PlantedOracle().fit(s, s.offsets[1:])
    assert not oracle.planted_target(s, all_rows(s)).any()


@pytest.fixture(scope="module")
def cue_store():
    return load_sequences("synthetic", {
        "n_customers": 500, "n_items": 30, "n_triggers": 4, "trigger_prob": 1.0, "trigger_window": 4,
        "trigger_offset": 5, "trigger_distance": 16, "trigger_jitter": 2, "trigger_mode": "cue",
        "max_events": 48, "mean_basket_size": 1.0, "max_basket_size": 1, "mean_gap_days": 1.0,
        "decay_boost": 0.0, "seed": 1}, cache_dir=None, progress=False)


def test_oracle_hits_hr1_one_on_every_planted_row_with_a_visible_trigger(cue_store):
    split = next_item_split(cue_store, seed=0)
    fitted = ranking_baselines(["planted_oracle", "most_popular"], cue_store, split)
    for ex in (split.test, split.valid):
        m = evaluate_next_item(fitted["planted_oracle"].predict, cue_store, ex, progress=False, max_len=48)
        assert m.metrics["planted/n"] >= 100
        assert m.metrics["planted/visible"] == 1.0 and m.metrics["planted/cued"] == 1.0
        assert m.metrics["planted/hr@1"] == 1.0 and m.metrics["planted/visible_hr@1"] == 1.0
        planted = m.per_example["planted"] > 0
        np.testing.assert_array_equal(m.per_example["rank"][planted], 1.0)
        # chance reference on the same rows: popularity never puts a planted target first
        pop = evaluate_next_item(fitted["most_popular"].predict, cue_store, ex, progress=False)
        assert pop.metrics["planted/hr@1"] == 0.0


def test_registered_as_a_ranking_baseline():
    assert RANKING["planted_oracle"] == ("attnlab.baselines.planted_oracle", "PlantedOracle")
