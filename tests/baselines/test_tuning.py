"""Hyperparameter choice on validation examples: never reads split.test, picks the best trial."""

import dataclasses

import numpy as np
import pytest

from attnlab.baselines.nbr import TIFUKNN, UPCF
from attnlab.baselines.tuning import tune_on_valid, tune_tifu_knn, tune_upcf, valid_metric
from attnlab.data.pipeline import load_sequences
from attnlab.eval.evaluate import evaluate_next_basket
from attnlab.train.tasks import make_task
from tests.baselines.cases import Untouchable

SMALL_TIFU = {"n_groups": (1, 3), "k": (2, 10), "alpha": (0.3, 0.9)}


@pytest.fixture(scope="module")
def store_split(tmp_path_factory):
    store = load_sequences("synthetic", {"n_customers": 80, "n_items": 40},
                           cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    return store, make_task({"name": "next_basket"}).split(store, seed=0)


def test_tuning_never_reads_test(store_split):
    store, split = store_split
    blind = dataclasses.replace(split, test=Untouchable())
    res = tune_tifu_knn(store, blind, grid=SMALL_TIFU, sweeps=2)
    # the same search with a different (permuted, truncated) test set gives the same answer
    other = dataclasses.replace(split, test=split.test.take(np.arange(len(split.test))[::-1][:3]))
    again = tune_tifu_knn(store, other, grid=SMALL_TIFU, sweeps=2)
    assert res == again


def test_tuning_result_is_the_best_validation_trial(store_split):
    store, split = store_split
    res = tune_tifu_knn(store, split, grid=SMALL_TIFU, sweeps=2)
    scores = [s for _, s in res.trials]
    assert res.score == max(scores) and res.metric == "ndcg@10"
    assert res.trials[0][0]["k"] == 900  # the search starts from the paper's setting
    assert all(res.params[k] in v for k, v in SMALL_TIFU.items() if res.params[k] != res.trials[0][0][k])
    assert len({tuple(sorted(p.items())) for p, _ in res.trials}) == len(res.trials)  # no repeats
    # the reported score is the plain evaluator's metric on split.valid
    model = TIFUKNN(**res.params).fit(store, split.train_end)
    direct = evaluate_next_basket(model.score, store, split.valid, ks=(10,), progress=False)
    assert res.score == pytest.approx(direct.metrics["ndcg@10"])


def test_generic_tuner_and_upcf(store_split):
    store, split = store_split
    res = tune_upcf(store, split, grid={"recency": (1, 0), "k": (0, 20)}, metric="recall@10", sweeps=1)
    assert res.metric == "recall@10" and res.score == max(s for _, s in res.trials)
    assert valid_metric(UPCF, res.params, store, split, metric="recall@10") == pytest.approx(res.score)
    with pytest.raises(ValueError, match="metric must look like"):
        tune_on_valid(UPCF, store, split, grid={}, metric="ndcg")
