"""Collaborative-filtering ranking baselines over implicit feedback.

The "user" of every model is an example's visible history
``store[offsets[customer]:end]`` turned into an implicit-feedback row (1 for every
item purchased at least once: ``PURCHASE`` events with ``item > 0``). Fitting reads
only the training prefixes ``[offsets[c], train_end[c])`` through the binary
customer x item matrix :func:`train_matrix`; scoring never reads a customer's fitted
row, so a history is scored the same whether or not its customer was in training.

* :class:`ItemKNN` -- item-based kNN (Sarwar et al. 2001): cosine similarity of the
  item columns, the ``k`` most similar neighbours kept per item, score =
  history row x similarity.
* :class:`EASE` -- Steck (2019), closed form ``B = I - P diag(1 / diag P)`` with
  ``P = (X^T X + l2 I)^-1``, solved in the primal (items x items) or, when there
  are fewer training customers than items, exactly in the dual via the Woodbury
  identity (customers x customers), so the whole catalogue fits in memory.
* :class:`ALS` -- Hu, Koren & Volinsky (2008) through ``implicit``; histories are
  folded in with the library's exact least-squares user solve.
* :class:`BPR` -- Rendle et al. (2009) through ``implicit``; histories are folded in
  by ridge least squares on the learned item factors.

Every ``score`` returns ``float32[m, n_items + 1]``. Items a model cannot score
(outside its ``max_items`` catalogue, or with no kNN evidence) are back-filled
strictly below every model-scored item of the row, in order of training popularity.
"""

from __future__ import annotations

import enum
import os

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from attnlab.baselines.popularity import _prefix_events, _purchase_mask
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples


# ----------------------------------------------------------------------------- matrices


def history_matrix(store: SequenceStore, starts: np.ndarray, ends: np.ndarray, *,
                   binary: bool = True) -> sp.csr_matrix:
    """Implicit-feedback rows of the event ranges ``[starts[i], ends[i])``.

    Args:
      store: the event store.
      starts: ``int64[m]`` absolute first events (a customer's ``offsets[c]``).
      ends: ``int64[m]`` absolute exclusive ends.
      binary: 1.0 per purchased item; otherwise the number of purchase events.

    Returns:
      ``float32`` CSR ``[m, n_items + 1]`` (column 0 always empty).
    """
    starts = np.asarray(starts, dtype=np.int64)
    ev, row = _prefix_events(starts, np.asarray(ends, dtype=np.int64))
    keep = _purchase_mask(store)[ev]
    ev, row = ev[keep], row[keep]
    x = sp.csr_matrix((np.ones(len(ev), np.float32), (row, store.item[ev].astype(np.int64))),
                      shape=(len(starts), store.n_items + 1))
    x.sum_duplicates()
    if binary:
        x.data[:] = 1.0
    return x


def train_matrix(store: SequenceStore, train_end: np.ndarray, *, binary: bool = True
                 ) -> sp.csr_matrix:
    """``float32`` CSR ``[n_customers, n_items + 1]`` of the training prefixes."""
    train_end = np.asarray(train_end, dtype=np.int64)
    if train_end.shape != (store.n_customers,):
        raise ValueError(f"train_end must have one entry per customer ({store.n_customers}), "
                         f"got shape {train_end.shape}")
    starts = store.offsets[:-1].astype(np.int64)
    if (train_end < starts).any() or (train_end > store.offsets[1:]).any():
        bad = int(np.flatnonzero((train_end < starts) | (train_end > store.offsets[1:]))[0])
        raise ValueError(f"train_end[{bad}] = {int(train_end[bad])} lies outside customer row "
                         f"{bad}'s events [{int(starts[bad])}, {int(store.offsets[bad + 1])}]")
    return history_matrix(store, starts, train_end, binary=binary)


def examples_matrix(store: SequenceStore, examples: Examples, *, binary: bool = True
                    ) -> sp.csr_matrix:
    """History rows of ``examples`` (their visible prefixes), CSR ``[m, n_items + 1]``."""
    return history_matrix(store, store.offsets[examples.customer], examples.end, binary=binary)


def _dense_rank(counts: np.ndarray) -> np.ndarray:
    """Dense ranks of ``counts`` (0 = smallest), float64, ties equal."""
    order = np.argsort(counts, kind="stable")
    new = np.ones(len(counts), dtype=bool)
    new[1:] = counts[order][1:] != counts[order][:-1]
    out = np.empty(len(counts), dtype=np.float64)
    out[order] = np.cumsum(new) - 1
    return out


class _RankingBase:
    """Shared fit bookkeeping: vocabulary size, popularity back-fill."""

    def _fit_common(self, store: SequenceStore, train_end: np.ndarray) -> sp.csr_matrix:
        x = train_matrix(store, train_end)
        counts = train_matrix(store, train_end, binary=False).sum(axis=0).A1.astype(np.float64)
        counts[0] = 0.0
        self.n_vocab_ = store.n_items + 1
        self.pop_counts_ = counts
        self._pop_rank = _dense_rank(counts)
        return x

    def _check(self, store: SequenceStore) -> None:
        if not hasattr(self, "n_vocab_"):
            raise RuntimeError(f"{type(self).__name__}.fit(store, train_end) must run before score()")
        if store.n_items + 1 != self.n_vocab_:
            raise ValueError(f"{type(self).__name__} was fitted on {self.n_vocab_ - 1} items but the "
                             f"store has {store.n_items}; score with the store it was fitted on")

    def _finish(self, raw: np.ndarray, scored: np.ndarray) -> np.ndarray:
        """Full ``float32[m, V]`` rows: ``raw`` where ``scored``, popularity below it elsewhere.

        Back-filled entries get ``row_min - 1 - (max_rank - pop_rank)``: integer steps
        (exact in float32) strictly below the smallest model score of the row.
        """
        raw = np.asarray(raw, dtype=np.float64)
        big = np.where(scored, raw, np.inf).min(axis=1, keepdims=True)
        big = np.where(np.isfinite(big), big, 0.0)
        fill = big - 1.0 - (self._pop_rank.max() - self._pop_rank)[None, :]
        return np.where(scored, raw, fill).astype(np.float32)


def _top_items(counts: np.ndarray, max_items: int | None) -> np.ndarray:
    """Sorted vocabulary indices of the ``max_items`` most popular items with count > 0."""
    have = np.flatnonzero(counts > 0)
    if max_items is not None and len(have) > max_items:
        order = np.argsort(-counts[have], kind="stable")[:max_items]
        have = np.sort(have[order])
    if len(have) == 0:
        raise ValueError("no training purchase with an item id (item > 0) inside train_end; "
                         "collaborative filtering has nothing to fit")
    return have


# ----------------------------------------------------------------------------- item kNN


class ItemKNN(_RankingBase):
    """Item-based kNN with cosine similarity (Sarwar et al. 2001).

    ``sim(i, j) = <x_i, x_j> / (|x_i| |x_j| + shrink)`` over the binary training
    customer x item columns; per item (column) the ``k`` most similar other items are
    kept. A history row ``h`` (binary) scores ``s = h S``; items with no evidence
    (``s == 0``) and items outside the ``max_items`` most popular are back-filled by
    popularity.

    Args:
      k: neighbours kept per item.
      max_items: catalogue of the similarity matrix (most popular first); the Gram
        matrix is built in column blocks, ``O(max_items x block)`` memory.
      shrink: similarity shrinkage added to the cosine denominator.
      block: columns per block of the Gram computation.
    """

    def __init__(self, *, k: int = 100, max_items: int | None = 20_000, shrink: float = 0.0,
                 block: int = 1024) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.max_items, self.shrink, self.block = int(k), max_items, float(shrink), int(block)

    def fit(self, store: SequenceStore, train_end: np.ndarray) -> "ItemKNN":
        """Builds the top-k cosine neighbourhoods from the training prefixes.

        Args:
          store: the event store.
          train_end: ``int64[n_customers]`` (:attr:`Split.train_end`).
        """
        x = self._fit_common(store, train_end)
        keep = _top_items(np.asarray(x.sum(axis=0)).ravel(), self.max_items)
        xk = x[:, keep].tocsc()
        n = len(keep)
        norm = np.sqrt(np.asarray(xk.sum(axis=0)).ravel())
        xt = xk.T.tocsr()  # [n, customers]
        k = min(self.k, n - 1)
        rows, cols, vals = [], [], []
        for lo in range(0, n, self.block):
            hi = min(lo + self.block, n)
            g = np.asarray(xt @ xk[:, lo:hi].toarray(), dtype=np.float32)  # [n, hi - lo]
            g /= (norm[:, None] * norm[None, lo:hi] + self.shrink).astype(np.float32)
            g[np.arange(lo, hi), np.arange(hi - lo)] = 0.0
            if k <= 0:
                continue
            top = np.argpartition(-g, k - 1, axis=0)[:k]  # [k, hi - lo]
            v = np.take_along_axis(g, top, axis=0)
            ok = v > 0
            rows.append(top[ok])
            cols.append(np.broadcast_to(np.arange(lo, hi)[None, :], top.shape)[ok])
            vals.append(v[ok])
        cat = (lambda a, dt: np.concatenate(a).astype(dt) if a else np.zeros(0, dt))
        self.items_ = keep
        self.sim_ = sp.csr_matrix((cat(vals, np.float32), (cat(rows, np.int64), cat(cols, np.int64))),
                                  shape=(n, n))
        return self

    def score(self, store: SequenceStore, examples: Examples) -> np.ndarray:
        """``float32[m, n_items + 1]`` from each example's visible history."""
        self._check(store)
        h = examples_matrix(store, examples)[:, self.items_]
        s = (h @ self.sim_).toarray()
        raw = np.zeros((len(examples), self.n_vocab_))
        raw[:, self.items_] = s
        return self._finish(raw, raw > 0)


# ----------------------------------------------------------------------------- EASE


class EASESolver(str, enum.Enum):
    """How :class:`EASE` solves ``P = (X^T X + l2 I)^-1``.

    ``PRIMAL``: dense ``items x items`` inverse (memory ``8 max_items^2`` bytes).
    ``DUAL``: Woodbury, ``P = (I - X^T (l2 I + X X^T)^-1 X) / l2``, dense
    ``customers x customers``; ``B`` is never materialised (low-rank scoring). Exact.
    ``AUTO``: ``DUAL`` when there are fewer training customers than kept items.
    """

    AUTO = "auto"
    PRIMAL = "primal"
    DUAL = "dual"


PRIMAL_MAX_BYTES = 512 * 2**20
"""Largest dense ``items x items`` float32 matrix the primal solver may build."""


class EASE(_RankingBase):
    """Embarrassingly shallow autoencoder (Steck 2019), closed form.

    ``B = I - P diag(1 / diag P)``, ``P = (X^T X + l2 I)^-1`` over the binary training
    customer x item matrix restricted to the ``max_items`` most popular items;
    ``score = h B`` (``diag B = 0``). Items outside the catalogue get popularity
    back-fill below every model score.

    Args:
      l2: ridge weight ``lambda``.
      max_items: catalogue size (most popular first); None = every item bought in
        training. The primal solver refuses catalogues whose float32 ``P`` would
        exceed :data:`PRIMAL_MAX_BYTES` (about 11,500 items).
      solver: an :class:`EASESolver` (or its value).
    """

    def __init__(self, *, l2: float = 500.0, max_items: int | None = 20_000,
                 solver: EASESolver | str = EASESolver.AUTO) -> None:
        if l2 <= 0:
            raise ValueError(f"l2 must be > 0, got {l2}")
        self.l2, self.max_items, self.solver = float(l2), max_items, EASESolver(solver)

    def fit(self, store: SequenceStore, train_end: np.ndarray) -> "EASE":
        """Solves EASE on the training prefixes (see :class:`EASESolver`)."""
        x = self._fit_common(store, train_end)
        keep = _top_items(np.asarray(x.sum(axis=0)).ravel(), self.max_items)
        xk = x[:, keep]
        xk = xk[np.diff(xk.indptr) > 0].astype(np.float64)  # customers with training items
        n_users, n = xk.shape
        solver = self.solver
        if solver is EASESolver.AUTO:
            solver = EASESolver.DUAL if n_users < n else EASESolver.PRIMAL
        self.items_, self.solver_ = keep, solver
        if solver is EASESolver.PRIMAL:
            if 4 * n * n > PRIMAL_MAX_BYTES:
                raise ValueError(f"EASE primal solve over {n:,} items needs {4 * n * n / 2**30:.1f} GiB; "
                                 f"set max_items <= {int(np.sqrt(PRIMAL_MAX_BYTES / 4)):,} or "
                                 f"solver='dual' ({n_users:,} training customers)")
            g = (xk.T @ xk).toarray().astype(np.float32)
            g[np.diag_indices(n)] += self.l2
            p = sla.inv(g, overwrite_a=True, check_finite=False)
            b = -p / np.diag(p)[None, :]
            b[np.diag_indices(n)] = 0.0
            self.b_ = b.astype(np.float32)
        else:
            k = (xk @ xk.T).toarray()
            k[np.diag_indices(n_users)] += self.l2
            kinv = sla.inv(k, overwrite_a=True, check_finite=False)
            xt = xk.T.tocsr()  # [n, users]
            # d_j = x_j^T K^-1 x_j, computed in item blocks.
            d = np.empty(n)
            for lo in range(0, n, 4096):
                blk = xt[lo:lo + 4096]
                d[lo:lo + 4096] = np.asarray(blk.multiply(blk @ kinv).sum(axis=1)).ravel()
            self.kinv_, self.xt_, self.xk_ = kinv, xt, xk.tocsr()
            self.denom_ = 1.0 - d  # = l2 * diag(P) > 0
        return self

    def score(self, store: SequenceStore, examples: Examples) -> np.ndarray:
        """``float32[m, n_items + 1]`` from each example's visible history."""
        self._check(store)
        h = examples_matrix(store, examples)[:, self.items_]
        if self.solver_ is EASESolver.PRIMAL:
            s = np.asarray(h @ self.b_, dtype=np.float64)
        else:
            # s_j = h_j - (hP)_j / P_jj with hP = (h - h X^T K^-1 X) / l2.
            a = np.asarray((h @ self.xt_).toarray()) @ self.kinv_  # [m, users]
            hp = h.toarray() - np.asarray(self.xt_ @ a.T).T  # l2 * hP
            s = h.toarray() - hp / self.denom_[None, :]
        raw = np.zeros((len(examples), self.n_vocab_))
        raw[:, self.items_] = s
        scored = np.zeros(self.n_vocab_, dtype=bool)
        scored[self.items_] = True
        return self._finish(raw, np.broadcast_to(scored, raw.shape))


# ----------------------------------------------------------------------------- implicit MF


def _threads(num_threads: int) -> int:
    return int(num_threads) if num_threads > 0 else (os.cpu_count() or 1)


class ALS(_RankingBase):
    """Implicit-feedback matrix factorisation (Hu, Koren & Volinsky 2008) via ``implicit``.

    Confidence ``c = 1 + alpha`` for purchased items (binary rows, as ``implicit``
    scales the matrix by ``alpha``), preference 1 for purchased, 0 otherwise. A
    history is folded in with ``implicit``'s exact least-squares user solve
    (``recalculate_user``) against the fitted item factors; score = ``u . v_i`` for
    every item.

    Args:
      factors: latent dimension.
      regularization: L2 weight.
      alpha: confidence scale.
      iterations: ALS sweeps.
      seed: initialisation seed.
      num_threads: ``implicit`` threads (0 = all cores); default 1.
    """

    def __init__(self, *, factors: int = 64, regularization: float = 0.05, alpha: float = 10.0,
                 iterations: int = 15, seed: int = 0, num_threads: int = 1) -> None:
        self.factors, self.regularization, self.alpha = int(factors), float(regularization), float(alpha)
        self.iterations, self.seed, self.num_threads = int(iterations), int(seed), int(num_threads)

    def fit(self, store: SequenceStore, train_end: np.ndarray) -> "ALS":
        """Fits ``implicit.cpu.als.AlternatingLeastSquares`` on the training prefixes."""
        from implicit.cpu.als import AlternatingLeastSquares

        x = self._fit_common(store, train_end)
        self.model_ = AlternatingLeastSquares(
            factors=self.factors, regularization=self.regularization, alpha=self.alpha,
            iterations=self.iterations, random_state=self.seed,
            num_threads=_threads(self.num_threads), calculate_training_loss=False)
        self.model_.fit(x, show_progress=False)
        return self

    def score(self, store: SequenceStore, examples: Examples) -> np.ndarray:
        """``float32[m, n_items + 1]``: folded-in user factors x item factors."""
        self._check(store)
        h = examples_matrix(store, examples)
        u = self.model_.recalculate_user(np.arange(len(examples)), h)
        raw = np.asarray(u, dtype=np.float32).reshape(len(examples), -1) @ self.model_.item_factors.T
        return self._finish(raw, np.ones(raw.shape, dtype=bool))


class BPR(_RankingBase):
    """Bayesian personalised ranking (Rendle et al. 2009) via ``implicit``.

    ``implicit`` learns item factors with a bias column (user factors carry a
    constant 1 there). ``implicit`` cannot fold in new users for BPR, so a history
    ``h`` (binary) gets user factors by ridge least squares on the item factors:
    ``u = argmin |h - b - V u|^2 + fold_in_l2 |u|^2`` over ALL items (``b`` = item
    bias), i.e. ``u = (V^T V + l2 I)^-1 V^T (h - b)``; score = ``V u + b``.

    Args:
      factors: latent dimension (``implicit`` adds the bias column).
      learning_rate: SGD step.
      regularization: L2 weight.
      iterations: epochs.
      fold_in_l2: ridge weight of the fold-in.
      seed: sampling seed.
      num_threads: ``implicit`` threads (0 = all cores); default 1.
    """

    def __init__(self, *, factors: int = 64, learning_rate: float = 0.05,
                 regularization: float = 0.01, iterations: int = 40, fold_in_l2: float = 1.0,
                 seed: int = 0, num_threads: int = 1) -> None:
        self.factors, self.learning_rate, self.regularization = int(factors), float(learning_rate), float(regularization)
        self.iterations, self.fold_in_l2 = int(iterations), float(fold_in_l2)
        self.seed, self.num_threads = int(seed), int(num_threads)

    def fit(self, store: SequenceStore, train_end: np.ndarray) -> "BPR":
        """Fits ``implicit.cpu.bpr.BayesianPersonalizedRanking`` on the training prefixes."""
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        x = self._fit_common(store, train_end)
        self.model_ = BayesianPersonalizedRanking(
            factors=self.factors, learning_rate=self.learning_rate,
            regularization=self.regularization, iterations=self.iterations,
            random_state=self.seed, num_threads=_threads(self.num_threads))
        self.model_.fit(x, show_progress=False)
        f = np.asarray(self.model_.item_factors, dtype=np.float64)
        v, bias = f[:, :-1], f[:, -1]
        a = v.T @ v + self.fold_in_l2 * np.eye(v.shape[1])
        self._v, self._bias = v, bias
        self._chol = sla.cho_factor(a)
        self._vb = v.T @ bias  # V^T b, shared by every history
        return self

    def score(self, store: SequenceStore, examples: Examples) -> np.ndarray:
        """``float32[m, n_items + 1]``: ridge fold-in user factors x item factors + bias."""
        self._check(store)
        h = examples_matrix(store, examples)
        rhs = np.asarray(h @ self._v) - self._vb[None, :]  # [m, factors]
        u = sla.cho_solve(self._chol, rhs.T).T
        raw = u @ self._v.T + self._bias[None, :]
        return self._finish(raw, np.ones(raw.shape, dtype=bool))
