"""HGB churn baseline: beats a constant on a planted signal, trains on split.train labels
only, picks its hyperparameters on split.valid, reads visible histories only."""

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from attnlab.baselines.gbm import FEATURE_NAMES, HGB_GRID, HGBChurn, churn_features
from attnlab.baselines.registry import churn_baselines
from attnlab.data.schema import EventType
from attnlab.data.splits import Examples, Split
from protocol_stores import POISON, build_store
from tests.baselines.cases import Untouchable, make_case

P = int(EventType.PURCHASE)
DAY = 86_400
CUTOFF = 300


def planted_store(n: int = 900, seed: int = 0):
    """Customers buy on random days before day CUTOFF; churn is planted on the days since
    the last purchase relative to the customer's own mean gap (a ratio no single raw
    feature shows), plus 10% label noise. One event after the cut-off per customer is
    poison: a model that reads it would see the label."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for c in range(n):
        gap = rng.uniform(3, 40)
        days = np.cumsum(rng.exponential(gap, 40))
        days = days[days < CUTOFF - rng.uniform(0, 120)]
        if len(days) == 0:
            days = np.array([rng.uniform(0, CUTOFF - 1)])
        rows += [(c, int(d * DAY), 10 * c + b, 1 + b % 5, P) for b, d in enumerate(days)]
        ratio = (CUTOFF - days[-1]) / gap
        y = float(ratio > 2.5) if rng.random() > 0.1 else float(rng.random() < 0.5)
        labels.append(y)
        if y == 0:  # the customer comes back after the cut-off
            rows.append((c, (CUTOFF + 5) * DAY, 10 * c + 9999, 1, P, POISON))
    store = build_store(rows, n_items=5)
    cust = np.repeat(np.arange(n), store.lengths)
    end = store.offsets[:-1] + np.bincount(cust[store.time < CUTOFF * DAY], minlength=n)
    return store, np.asarray(labels, np.float32), end.astype(np.int64)


def examples(idx, end, labels):
    return Examples(customer=idx, end=end[idx], cutoff=np.full(len(idx), CUTOFF * DAY, np.int64),
                    label=labels[idx])


@pytest.fixture(scope="module")
def planted():
    store, y, end = planted_store()
    idx = np.random.default_rng(1).permutation(store.n_customers)
    tr, va, te = idx[:500], idx[500:650], idx[650:]
    split = Split(protocol="churn", train_end=end, train=examples(tr, end, y),
                  valid=examples(va, end, y), test=examples(te, end, y))
    return store, split


def test_hgb_beats_a_constant(planted):
    store, split = planted
    model = HGBChurn(horizon_days=56).fit(store, split.train, valid=split.valid)
    p = model.prob(store, split.test)
    assert p.shape == (len(split.test),) and ((p >= 0) & (p <= 1)).all()
    auc = roc_auc_score(split.test.label, p)
    assert auc > 0.8, auc  # a constant scores 0.5; the labels carry 10% noise
    # the same probabilities against labels shuffled across customers score chance
    perm = np.random.default_rng(2).permutation(len(split.test))
    scrambled = dataclasses.replace(split.test, label=split.test.label[perm])
    assert abs(roc_auc_score(scrambled.label, p) - 0.5) < 0.1


def test_hgb_picks_on_valid_and_trains_on_train_labels_only(planted):
    store, split = planted
    model = HGBChurn(horizon_days=56).fit(store, split.train, valid=split.valid)
    assert len(model.valid_auc_) == np.prod([len(v) for v in HGB_GRID.values()])
    best = max(model.valid_auc_, key=model.valid_auc_.get)
    assert dict(best) == model.params_
    # the fitted trees depend on train labels: flipping some changes the model ...
    flipped = dataclasses.replace(split.train, label=np.where(np.arange(len(split.train)) % 3 == 0,
                                                              1 - split.train.label, split.train.label))
    fixed = {k: (v,) for k, v in model.params_.items()}
    a = HGBChurn(horizon_days=56, grid=fixed).fit(store, split.train, valid=split.valid)
    b = HGBChurn(horizon_days=56, grid=fixed).fit(store, flipped, valid=split.valid)
    assert not np.allclose(a.prob(store, split.test), b.prob(store, split.test))
    # ... but valid labels only choose among grid points: with one grid point they do nothing
    shuffled = dataclasses.replace(split.valid, label=split.valid.label[::-1].copy())
    c = HGBChurn(horizon_days=56, grid=fixed).fit(store, split.train, valid=shuffled)
    np.testing.assert_array_equal(a.prob(store, split.test), c.prob(store, split.test))


def test_registry_fits_hgb_without_touching_test(planted):
    store, split = planted
    blind = dataclasses.replace(split, test=Untouchable())
    fitted = churn_baselines(["hgb"], store, blind, horizon_days=56)
    direct = HGBChurn(horizon_days=56).fit(store, split.train, valid=split.valid)
    np.testing.assert_array_equal(fitted["hgb"].predict(store, split.test), direct.prob(store, split.test))
    assert list(fitted) == ["hgb"] and fitted["hgb"].fit_s >= 0.0


def test_features_read_only_visible_history():
    clean, _, ex = make_case(poison=False)
    dirty, _, ex_d = make_case(poison=True)
    labelled = dataclasses.replace(ex, label=np.array([0, 1, 0, 1, 0, 1], np.float32))
    model = HGBChurn(horizon_days=14).fit(clean, labelled)
    fc = churn_features(clean, ex, params=model.bgnbd_params_, horizon_days=14)
    fd = churn_features(dirty, ex_d, params=model.bgnbd_params_, horizon_days=14)
    assert fc.shape == (len(ex), len(FEATURE_NAMES))
    np.testing.assert_array_equal(fc, fd)
    np.testing.assert_array_equal(model.prob(clean, ex), model.prob(dirty, ex_d))


def test_hgb_errors():
    store, _, ex = make_case(poison=False)
    with pytest.raises(ValueError, match="labelled train"):
        HGBChurn(horizon_days=14).fit(store, ex)
    with pytest.raises(ValueError, match="all one class"):
        HGBChurn(horizon_days=14).fit(store, dataclasses.replace(ex, label=np.zeros(len(ex), np.float32)))
    with pytest.raises(RuntimeError, match="must run before"):
        HGBChurn(horizon_days=14).prob(store, ex)


def test_hgb_subsamples_large_training_sets(planted):
    store, split = planted
    model = HGBChurn(horizon_days=56, max_train_rows=200).fit(store, split.train, valid=split.valid)
    assert model.n_train_ == 200
    again = HGBChurn(horizon_days=56, max_train_rows=200).fit(store, split.train, valid=split.valid)
    np.testing.assert_array_equal(model.prob(store, split.test), again.prob(store, split.test))  # seeded
    assert roc_auc_score(split.test.label, model.prob(store, split.test)) > 0.7
