"""RFM (recency, frequency, monetary) features, quintile segments and two baselines.

Features at each example's cut-off, from its visible history ``store[offsets[c]:end]``
only (Hughes 1994):

* ``recency_days`` -- days from the last purchase to the cut-off (tenure when the
  history has no purchase);
* ``frequency`` -- number of purchase baskets (runs of consecutive ``PURCHASE``
  events of the customer sharing a basket id);
* ``monetary`` -- mean basket value (sum of ``value`` of the basket's purchases);
  0 without purchases;
* ``tenure_days`` -- days from the first visible event (any type) to the cut-off.

Quintile scores 1..5 use breakpoints (20/40/60/80 % quantiles) of a reference
population: ``R = 5`` for the most recent fifth, ``F``/``M = 5`` for the highest;
a value equal to a breakpoint falls in the lower bin. The segment code is
``"R{R}F{F}M{M}"``; the named segment depends on R and F only (M refines the code):

==================  ==============================
name                rule (first match)
==================  ==============================
champions           R >= 4 and F >= 4
loyal               R == 3 and F >= 4
potential_loyalist  R >= 4 and F in {2, 3}
new_customers       R >= 4 and F == 1
needs_attention     R == 3 and F <= 3
at_risk             R <= 2 and F >= 3
hibernating         R <= 2 and F <= 2
==================  ==============================
"""

from __future__ import annotations

import enum

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from attnlab.baselines.popularity import _prefix_events, _purchase_mask
from attnlab.data.sequences import SequenceStore
from attnlab.data.rfm import FEATURES, rfm_from_ranges  # noqa: F401  (re-exported: the baselines' features)
from attnlab.data.splits import Examples

SEGMENT_NAMES = ("champions", "loyal", "potential_loyalist", "new_customers",
                 "needs_attention", "at_risk", "hibernating")


# ----------------------------------------------------------------------------- features


def rfm_features(store: SequenceStore, examples: Examples) -> pd.DataFrame:
    """RFM + tenure of each example's visible history at its ``cutoff`` (see module doc).

    Returns:
      DataFrame ``[m]`` with float64 columns ``recency_days``, ``frequency``,
      ``monetary``, ``tenure_days``.
    """
    return rfm_from_ranges(store, store.offsets[examples.customer], examples.end, examples.cutoff)


# ----------------------------------------------------------------------------- segments


def quintile_edges(features: pd.DataFrame) -> np.ndarray:
    """``float64[3, 4]`` 20/40/60/80 % quantiles of recency, frequency, monetary."""
    cols = features[["recency_days", "frequency", "monetary"]].to_numpy(np.float64)
    if len(cols) == 0:
        raise ValueError("quintile_edges needs at least one row")
    return np.quantile(cols, [0.2, 0.4, 0.6, 0.8], axis=0).T


def rfm_scores(features: pd.DataFrame, edges: np.ndarray | None = None) -> pd.DataFrame:
    """Quintile scores and segments.

    Args:
      features: output of :func:`rfm_features`.
      edges: ``float64[3, 4]`` from :func:`quintile_edges` of a reference population
        (e.g. the training customers); default: the quintiles of ``features`` itself.

    Returns:
      DataFrame ``[m]`` with int ``R``, ``F``, ``M`` (1..5), str ``code``
      (e.g. ``"R5F4M3"``) and str ``segment`` (:data:`SEGMENT_NAMES`).
    """
    edges = quintile_edges(features) if edges is None else np.asarray(edges, dtype=np.float64)
    if edges.shape != (3, 4):
        raise ValueError(f"edges must have shape (3, 4) (R, F, M x 4 breakpoints), got {edges.shape}")
    bins = [1 + np.searchsorted(edges[j], features[c].to_numpy(np.float64), side="left")
            for j, c in enumerate(("recency_days", "frequency", "monetary"))]
    r, f, m = 6 - bins[0], bins[1], bins[2]
    code = np.char.add(np.char.add(np.char.add("R", r.astype(str)), np.char.add("F", f.astype(str))),
                       np.char.add("M", m.astype(str)))
    seg = np.select(
        [(r >= 4) & (f >= 4), (r == 3) & (f >= 4), (r >= 4) & (f >= 2), r >= 4, r == 3, f >= 3],
        list(SEGMENT_NAMES[:6]), default=SEGMENT_NAMES[6])
    return pd.DataFrame({"R": r, "F": f, "M": m, "code": code, "segment": seg})


# ----------------------------------------------------------------------------- churn


def _log_features(features: pd.DataFrame) -> np.ndarray:
    return np.log1p(features[list(FEATURES)].to_numpy(np.float64).clip(0))


class RFMChurn:
    """Logistic regression on standardised ``log1p`` RFM + tenure features.

    Args:
      c: inverse L2 strength of :class:`sklearn.linear_model.LogisticRegression`.
      max_iter: solver iterations.
    """

    def __init__(self, *, c: float = 1.0, max_iter: int = 1000) -> None:
        self.c, self.max_iter = float(c), int(max_iter)
        self.model_ = None

    def fit(self, store: SequenceStore, train_examples: Examples) -> "RFMChurn":
        """Fits on ``train_examples`` (their visible histories and ``label``, 1 = churned)."""
        if train_examples.label is None:
            raise ValueError("RFMChurn.fit needs labelled examples (Split.train of churn_split)")
        y = np.asarray(train_examples.label).astype(int)
        if len(np.unique(y)) < 2:
            raise ValueError("RFMChurn.fit: training labels are all one class; move the cutoff "
                             "or lengthen the horizon")
        x = _log_features(rfm_features(store, train_examples))
        self.model_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.c, max_iter=self.max_iter))
        self.model_.fit(x, y)
        return self

    def prob(self, store: SequenceStore, examples: Examples) -> np.ndarray:
        """``float64[m]`` churn probabilities."""
        if self.model_ is None:
            raise RuntimeError("RFMChurn.fit(store, train_examples) must run before prob()")
        return self.model_.predict_proba(_log_features(rfm_features(store, examples)))[:, 1].astype(np.float64)


# ----------------------------------------------------------------------------- ranking


class SegmentLevel(str, enum.Enum):
    """Granularity of :class:`RFMSegmentPopularity`: 7 named segments or 125 codes."""

    NAMED = "named"
    CODE = "code"


class RFMSegmentPopularity:
    """Item popularity among training customers of the example's RFM segment.

    Fit: every customer's training prefix ``[offsets[c], train_end[c])`` gets RFM
    features at one snapshot time (1 s after the last training event), quintile
    breakpoints come from the customers with a training purchase, and purchase counts
    ``n[s, i]`` are accumulated per segment ``s``. Score: the example's segment is
    computed from its visible history at its ``cutoff`` with the fit-time breakpoints;
    ``score_i = (n[s, i] + g_i) / (N_s + 1)`` where ``g_i`` is the item's global
    purchase share (< 1), so segment counts rank first and global popularity fills
    (and breaks ties) below; unseen segments fall back to global popularity.

    Args:
      level: a :class:`SegmentLevel` (or its value).
    """

    def __init__(self, *, level: SegmentLevel | str = SegmentLevel.NAMED) -> None:
        self.level = SegmentLevel(level)
        self.counts_: dict[str, np.ndarray] | None = None

    def _key(self, scores: pd.DataFrame) -> np.ndarray:
        return scores["segment" if self.level is SegmentLevel.NAMED else "code"].to_numpy(str)

    def fit(self, store: SequenceStore, train_end: np.ndarray) -> "RFMSegmentPopularity":
        """Segments the training prefixes and counts purchases per segment."""
        train_end = np.asarray(train_end, dtype=np.int64)
        if train_end.shape != (store.n_customers,):
            raise ValueError(f"train_end must have one entry per customer ({store.n_customers}), "
                             f"got shape {train_end.shape}")
        starts = store.offsets[:-1].astype(np.int64)
        ev, row = _prefix_events(starts, train_end)
        if len(ev) == 0:
            raise ValueError("RFMSegmentPopularity.fit: the training prefixes hold no event")
        snapshot = int(np.asarray(store.time)[ev].max()) + 1
        feats = rfm_from_ranges(store, starts, train_end, np.full(len(starts), snapshot))
        active = feats["frequency"].to_numpy() > 0
        if not active.any():
            raise ValueError("RFMSegmentPopularity.fit: no customer has a training purchase")
        self.edges_ = quintile_edges(feats[active])
        key = self._key(rfm_scores(feats, self.edges_))
        keep = _purchase_mask(store)[ev]
        ev, row = ev[keep], row[keep]
        v = store.n_items + 1
        glob = np.bincount(store.item[ev], minlength=v).astype(np.float64)
        glob[0] = 0.0
        self.n_vocab_ = v
        self.global_share_ = glob / max(glob.sum(), 1.0) * (1.0 - 1e-9)
        self.counts_ = {}
        ev_key = key[row]
        for s in np.unique(ev_key):
            c = np.bincount(store.item[ev[ev_key == s]], minlength=v).astype(np.float64)
            c[0] = 0.0
            self.counts_[str(s)] = c
        return self

    def segments(self, store: SequenceStore, examples: Examples) -> np.ndarray:
        """``str[m]`` segment (name or code) of each example with the fitted breakpoints."""
        if self.counts_ is None:
            raise RuntimeError("RFMSegmentPopularity.fit(store, train_end) must run before score()")
        return self._key(rfm_scores(rfm_features(store, examples), self.edges_))

    def score(self, store: SequenceStore, examples: Examples) -> np.ndarray:
        """``float32[m, n_items + 1]`` segment popularity with global back-fill."""
        key = self.segments(store, examples)
        if store.n_items + 1 != self.n_vocab_:
            raise ValueError("store vocabulary differs from the one the model was fitted on")
        out = np.empty((len(examples), self.n_vocab_), dtype=np.float32)
        zero = np.zeros(self.n_vocab_)
        for s in np.unique(key):
            c = self.counts_.get(str(s), zero)
            out[key == s] = ((c + self.global_share_) / (c.sum() + 1.0)).astype(np.float32)[None, :]
        return out
