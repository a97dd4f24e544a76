"""Gradient-boosted churn baseline on RFM + BG/NBD features.

:class:`HGBChurn` is scikit-learn's :class:`~sklearn.ensemble.HistGradientBoostingClassifier`
on the features of :func:`churn_features`, computed from each example's visible
history only:

* RFM + tenure (:func:`attnlab.baselines.rfm.rfm_features`), ``log1p``;
* the BG/NBD calibration statistics ``x``, ``t_x``, ``T`` (weeks) and number of
  purchase days (:func:`attnlab.baselines.bgnbd.bgnbd_summary`);
* three BG/NBD quantities under parameters fitted (unsupervised, by maximum
  likelihood) on the training examples' histories: ``P(alive)``,
  ``P(no purchase in the horizon)`` and the expected purchases in the horizon.

The trees are fitted on ``split.train`` labels only (a seeded subsample of at most
``max_train_rows`` of them). A small grid (learning rate, ``max_leaf_nodes``, L2) is
scored by AUC on the validation examples and the best fitted model is kept as is (no
refit on validation labels); without validation examples the first grid point is used.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from attnlab.baselines.bgnbd import WEEK_DAYS, BGNBDParams, bgnbd_quantities, bgnbd_summary, fit_bgnbd
from attnlab.baselines.rfm import FEATURES as RFM_FEATURES
from attnlab.baselines.rfm import rfm_features
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples

FEATURE_NAMES = tuple(f"log1p_{f}" for f in RFM_FEATURES) + (
    "x", "t_x", "T", "n_purchase_days", "p_alive", "p_no_purchase", "expected_purchases")

HGB_GRID: dict[str, tuple] = {
    "learning_rate": (0.1, 0.05),
    "max_leaf_nodes": (15, 63),
    "l2_regularization": (0.0, 1.0),
}
"""Hyperparameters tried by :class:`HGBChurn` (the first value of each is the default)."""


def fit_bgnbd_params(store: SequenceStore, examples: Examples) -> BGNBDParams | None:
    """BG/NBD maximum-likelihood parameters from the histories of ``examples`` (labels
    unused), or None when they cannot be identified (no visible repeat purchase)."""
    s = bgnbd_summary(store, examples)
    s = s[s["n_purchase_days"] > 0]
    if len(s) == 0 or not (s["x"] > 0).any():
        return None
    try:
        return fit_bgnbd(s["x"], s["t_x"], s["T"])
    except ValueError as err:
        warnings.warn(f"HGBChurn: BG/NBD fit failed ({err}); its three model features are NaN")
        return None


def churn_features(store: SequenceStore, examples: Examples, *, params: BGNBDParams | None,
                   horizon_days: float) -> np.ndarray:
    """``float64[m, len(FEATURE_NAMES)]`` features of each example's visible history.

    BG/NBD model columns are NaN when ``params`` is None or the quantity is not finite
    (the trees route missing values natively).
    """
    rfm = np.log1p(rfm_features(store, examples)[list(RFM_FEATURES)].to_numpy(np.float64).clip(0))
    s = bgnbd_summary(store, examples)
    x, t_x, big_t = (s[c].to_numpy(np.float64) for c in ("x", "t_x", "T"))
    model = np.full((len(examples), 3), np.nan)
    if params is not None:
        model = bgnbd_quantities(params, horizon_days / WEEK_DAYS, x, t_x, big_t)
        model[s["n_purchase_days"].to_numpy() == 0] = np.nan  # BG/NBD starts at a first purchase
    return np.column_stack([rfm, x, t_x, big_t, s["n_purchase_days"].to_numpy(np.float64), model])


def _labels(examples: Examples, what: str) -> np.ndarray:
    if examples.label is None:
        raise ValueError(f"HGBChurn needs labelled {what} examples (Split.{what} of churn_split)")
    return np.asarray(examples.label).astype(int)


class HGBChurn:
    """Histogram gradient boosting on RFM + BG/NBD features (see module doc).

    Args:
      horizon_days: label-window length in days (the split's horizon), used by the
        BG/NBD horizon features.
      grid: name -> values of ``HistGradientBoostingClassifier`` keyword arguments
        tried on the validation examples (default :data:`HGB_GRID`).
      max_iter: boosting rounds (fixed; no early stopping, so fits are deterministic).
      seed: ``random_state`` of the classifier and of the row subsample.
      max_train_rows: training examples used (a seeded uniform subsample when
        ``split.train`` is larger, e.g. rolling churn windows stack tens of thousands
        of cut-offs per data set); None = all.
      num_threads: OpenMP threads of the trees (default 1: once JAX has started its
        thread pool, more OpenMP threads contend for the cores; on a 2-core machine a
        500-row fit took 10 s with the default thread count and 0.06 s with one).
    """

    def __init__(self, *, horizon_days: float, grid: Mapping[str, Sequence] | None = None,
                 max_iter: int = 150, seed: int = 0, max_train_rows: int | None = 100_000,
                 num_threads: int = 1) -> None:
        if not horizon_days > 0:
            raise ValueError(f"horizon_days must be > 0, got {horizon_days}")
        self.horizon_days, self.max_iter, self.seed = float(horizon_days), int(max_iter), int(seed)
        self.num_threads = int(num_threads)
        self.max_train_rows = None if max_train_rows is None else int(max_train_rows)
        self.grid = dict(HGB_GRID if grid is None else grid)
        self.model_: HistGradientBoostingClassifier | None = None

    def _candidates(self) -> list[dict[str, Any]]:
        names = list(self.grid)
        return [dict(zip(names, vals)) for vals in itertools.product(*(self.grid[n] for n in names))]

    def _classifier(self, params: Mapping[str, Any]) -> HistGradientBoostingClassifier:
        return HistGradientBoostingClassifier(max_iter=self.max_iter, early_stopping=False,
                                              random_state=self.seed, **params)

    def fit(self, store: SequenceStore, train_examples: Examples, *,
            valid: Examples | None = None) -> "HGBChurn":
        """Fits on ``train_examples`` labels; picks the grid point by AUC on ``valid``.

        Args:
          store: the event store.
          train_examples: ``Split.train`` (visible histories + labels, 1 = churned).
          valid: ``Split.valid`` for the hyperparameter choice (labels read only to
            score candidates); None = the first grid point.
        """
        y = _labels(train_examples, "train")
        if len(np.unique(y)) < 2:
            raise ValueError("HGBChurn.fit: training labels are all one class; move the cutoff "
                             "or lengthen the horizon")
        self.model_ = None
        self.bgnbd_params_ = fit_bgnbd_params(store, train_examples)  # on every training row
        if self.max_train_rows is not None and len(train_examples) > self.max_train_rows:
            keep = np.random.default_rng(self.seed).choice(len(train_examples), self.max_train_rows,
                                                           replace=False)
            train_examples = train_examples.take(np.sort(keep))
            y = _labels(train_examples, "train")
        self.n_train_ = len(train_examples)
        feats = lambda ex: churn_features(store, ex, params=self.bgnbd_params_,  # noqa: E731
                                          horizon_days=self.horizon_days)
        x = feats(train_examples)
        # A column with no value at all (e.g. BG/NBD features when it cannot be fitted)
        # cannot be binned; it carries no information, so it is held at 0.
        self.empty_cols_ = np.isnan(x).all(axis=0)
        x[:, self.empty_cols_] = 0.0
        cands = self._candidates()
        yv = xv = None
        if valid is not None and len(valid):
            yv = _labels(valid, "valid")
            if len(np.unique(yv)) < 2:
                yv = None  # AUC undefined: keep the default
            else:
                xv = feats(valid)
                xv[:, self.empty_cols_] = 0.0
        if yv is None:
            cands = cands[:1]
        self.valid_auc_: dict[tuple, float] = {}
        best = -np.inf
        with threadpool_limits(limits=self.num_threads, user_api="openmp"):
            for params in cands:
                clf = self._classifier(params).fit(x, y)
                auc = float(roc_auc_score(yv, clf.predict_proba(xv)[:, 1])) if yv is not None else np.nan
                self.valid_auc_[tuple(sorted(params.items()))] = auc
                if self.model_ is None or auc > best:
                    best, self.model_, self.params_ = auc, clf, params
        return self

    def prob(self, store: SequenceStore, examples: Examples) -> np.ndarray:
        """``float64[m]`` churn probabilities."""
        if self.model_ is None:
            raise RuntimeError("HGBChurn.fit(store, train_examples) must run before prob()")
        x = churn_features(store, examples, params=self.bgnbd_params_, horizon_days=self.horizon_days)
        x[:, self.empty_cols_] = 0.0
        with threadpool_limits(limits=self.num_threads, user_api="openmp"):
            return self.model_.predict_proba(x)[:, 1].astype(np.float64)
