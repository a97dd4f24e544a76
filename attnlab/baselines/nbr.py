"""Next-basket recommendation baselines built on basket histories.

Every model here sees a history as a sequence of baskets: the distinct real items
(``PURCHASE`` events with ``item > 0``) of each run of consecutive purchase events
sharing a basket id, oldest first (:func:`history_baskets`). Fitting reads only the
training prefixes ``[offsets[c], train_end[c])``; scoring reads only each example's
visible history ``store[offsets[customer]:end]``. Neighbour pools are the training
prefixes of the OTHER customers: an example never meets its own customer's fitted row,
so a history is scored the same whether or not its customer was in training.

* :class:`PTopFreq` -- personal top frequency (Li, Jullien, Ariannezhad & de Rijke,
  "A Next Basket Recommendation Reality Check", TOIS 2023): items by the number of
  visible baskets containing them, ties by recency, then global popularity.
* :class:`UPCF` -- UP-CF@r (Faggioli, Polato & Aiolli, "Recency Aware Collaborative
  Filtering for Next Basket Recommendation", UMAP 2020).
* :class:`TIFUKNN` -- TIFU-KNN (Hu, He, Gao & Zhang, "Modeling Personalized Item
  Frequency Information for Next-basket Recommendation", SIGIR 2020).

Every ``score`` returns ``float32[m, n_items + 1]`` of exact small integers: items
the model scores rank above every other item by their (float64) model score, dense
ranks with ties kept; all other items follow by training basket popularity
(G-TopFreq), so the evaluator's pessimistic tie-break only meets true ties.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from attnlab.baselines.cf import _dense_rank, _RankingBase
from attnlab.baselines.popularity import _prefix_events, _purchase_mask
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples


# ----------------------------------------------------------------------------- baskets


@dataclasses.dataclass(frozen=True)
class HistoryBaskets:
    """Distinct (basket, item) entries of ``n_rows`` event ranges.

    Attributes:
      n_baskets: ``int64[n_rows]`` baskets per range.
      row: ``int64[n]`` range of each entry.
      pos: ``int64[n]`` basket position in its range (0 = oldest).
      item: ``int64[n]`` vocabulary index (>= 1), distinct within a basket.
    """

    n_baskets: np.ndarray
    row: np.ndarray
    pos: np.ndarray
    item: np.ndarray

    @property
    def n_rows(self) -> int:
        return len(self.n_baskets)

    @property
    def age(self) -> np.ndarray:
        """``int64[n]`` baskets between the entry's basket and the latest (0 = latest)."""
        return self.n_baskets[self.row] - 1 - self.pos


def history_baskets(store: SequenceStore, starts: np.ndarray, ends: np.ndarray) -> HistoryBaskets:
    """Baskets of the event ranges ``[starts[i], ends[i])`` (vectorised).

    A basket is a run of consecutive purchase events (``item > 0``) of a range that
    share a basket id; other event types in between do not split it.
    """
    starts = np.asarray(starts, dtype=np.int64)
    ev, row = _prefix_events(starts, np.asarray(ends, dtype=np.int64))
    keep = _purchase_mask(store)[ev]
    ev, row = ev[keep], row[keep]
    n_rows = len(starts)
    if len(ev) == 0:
        z = np.zeros(0, np.int64)
        return HistoryBaskets(np.zeros(n_rows, np.int64), z, z, z)
    bid = np.asarray(store.basket)[ev]
    new = np.ones(len(ev), dtype=bool)
    new[1:] = (row[1:] != row[:-1]) | (bid[1:] != bid[:-1])
    seq = np.cumsum(new) - 1  # global basket counter, in store order
    n_baskets = np.bincount(row[new], minlength=n_rows).astype(np.int64)
    first_seq = np.cumsum(n_baskets) - n_baskets
    v = store.n_items + 1
    key = np.sort(seq * v + store.item[ev].astype(np.int64))
    uniq = np.ones(len(key), dtype=bool)
    uniq[1:] = key[1:] != key[:-1]
    key = key[uniq]
    seq_u, item = key // v, key % v
    row_of_seq = row[new]
    row_u = row_of_seq[seq_u]
    return HistoryBaskets(n_baskets=n_baskets, row=row_u, pos=seq_u - first_seq[row_u], item=item)


def _examples_baskets(store: SequenceStore, examples: Examples) -> HistoryBaskets:
    return history_baskets(store, store.offsets[examples.customer], examples.end)


def _check_train_end(store: SequenceStore, train_end: np.ndarray) -> np.ndarray:
    train_end = np.asarray(train_end, dtype=np.int64)
    if train_end.shape != (store.n_customers,):
        raise ValueError(f"train_end must have one entry per customer ({store.n_customers}), "
                         f"got shape {train_end.shape}")
    lo, hi = store.offsets[:-1], store.offsets[1:]
    bad = (train_end < lo) | (train_end > hi)
    if bad.any():
        c = int(np.flatnonzero(bad)[0])
        raise ValueError(f"train_end[{c}] = {int(train_end[c])} lies outside customer row {c}'s "
                         f"events [{int(lo[c])}, {int(hi[c])}]")
    return train_end


def _csr(hb: HistoryBaskets, values: np.ndarray, n_vocab: int) -> sp.csr_matrix:
    """``float64`` CSR ``[n_rows, n_vocab]``: ``values`` summed per (row, item)."""
    x = sp.csr_matrix((np.asarray(values, dtype=np.float64), (hb.row, hb.item)),
                      shape=(hb.n_rows, n_vocab))
    x.sum_duplicates()
    return x


class _BasketRanker(_RankingBase):
    """Shared fit bookkeeping: vocabulary, basket popularity, the ranked output (the
    fitted-state check is :class:`attnlab.baselines.cf._RankingBase`'s)."""

    def _fit_popularity(self, store: SequenceStore, train_end: np.ndarray) -> HistoryBaskets:
        train_end = _check_train_end(store, train_end)
        hb = history_baskets(store, store.offsets[:-1], train_end)
        self.n_vocab_ = store.n_items + 1
        counts = np.bincount(hb.item, minlength=self.n_vocab_).astype(np.float64)
        counts[0] = 0.0
        self.pop_counts_ = counts  # training baskets containing each item (G-TopFreq)
        self._pop_rank = _dense_rank(counts)
        return hb

    def _ranked(self, m: int, row: np.ndarray, item: np.ndarray, key: np.ndarray) -> np.ndarray:
        """``float32[m, n_vocab]``: the distinct entries ``(row, item)`` above popularity.

        Inside a row the entries are ordered by ``key`` ascending with dense ranks
        1.. (equal keys share a rank, so the evaluator's pessimistic tie-break sees
        the model's true ties) and score ``max_pop_rank + 1 + rank``; every other
        item scores its popularity dense rank (``<= max_pop_rank``). Exact integers
        in float32 (below 2^24 for any catalogue under 8 million items).
        """
        out = np.repeat(self._pop_rank.astype(np.float32)[None, :], m, axis=0)
        if len(row) == 0:
            return out
        row, item, key = np.asarray(row), np.asarray(item), np.asarray(key)
        # Sort by key (fast unstable sort), then stably by row (radix sort on int16).
        o = np.argsort(key)
        r = row[o]
        o = o[np.argsort(r.astype(np.int16) if m < 2**15 else r, kind="stable")]
        r_o, k_o = row[o], key[o]
        row_first = np.ones(len(o), dtype=bool)
        row_first[1:] = r_o[1:] != r_o[:-1]
        new = row_first.copy()
        new[1:] |= k_o[1:] != k_o[:-1]
        cum = np.cumsum(new)
        start = np.maximum.accumulate(np.where(row_first, np.arange(len(o)), 0))
        rank = cum - cum[start] + 1
        out[r_o, item[o]] = (self._pop_rank.max() + 1 + rank).astype(np.float32)
        return out

    def _ranked_dense(self, pred: np.ndarray) -> np.ndarray:
        """:meth:`_ranked` of the positive entries of float64 scores ``pred >= 0``
        ``[m, n_vocab]`` (row-wise sorts; column 0 must be 0)."""
        pred = np.ascontiguousarray(pred, dtype=np.float64)
        if np.count_nonzero(pred) < pred.size // 4:  # sparse rows: sort the entries only
            row, item = np.nonzero(pred)
            return self._ranked(pred.shape[0], row, item, pred[row, item])
        order = np.argsort(pred, axis=1)
        s = np.take_along_axis(pred, order, axis=1)
        new = np.ones(s.shape, dtype=bool)
        np.not_equal(s[:, 1:], s[:, :-1], out=new[:, 1:])
        # Column 0 is 0, so every row starts with zeros (dense rank 1) and its positive
        # entries get dense ranks >= 2, i.e. scores >= max_pop_rank + 2 as in _ranked.
        dense = np.cumsum(new, axis=1, dtype=np.int32)
        top = np.float32(self._pop_rank.max())
        vals = np.where(s > 0, top + dense.astype(np.float32),
                        self._pop_rank.astype(np.float32)[order])
        out = np.empty(pred.shape, dtype=np.float32)
        np.put_along_axis(out, order, vals, axis=1)
        return out


# ----------------------------------------------------------------------------- P-TopFreq


class PTopFreq(_BasketRanker):
    """Personal top frequency (Li et al., TOIS 2023).

    Items of the visible history rank first by the number of visible baskets that
    contain them, ties by the most recent such basket; every other item follows by
    the number of training baskets containing it (G-TopFreq). No hyperparameters.
    """

    def fit(self, store: SequenceStore, train_end: np.ndarray) -> "PTopFreq":
        """Counts training baskets per item in ``[offsets[c], train_end[c])``."""
        self._fit_popularity(store, train_end)
        return self

    def score(self, store: SequenceStore, examples: Examples) -> np.ndarray:
        """``float32[m, n_items + 1]`` from each example's visible baskets."""
        self._check(store)
        hb = _examples_baskets(store, examples)
        key = hb.row * self.n_vocab_ + hb.item  # entries are sorted by (row, basket, item)
        order = np.lexsort((hb.pos, key))
        k_o = key[order]
        last = np.ones(len(k_o), dtype=bool)
        last[:-1] = k_o[1:] != k_o[:-1]
        ends = np.flatnonzero(last)
        count = np.diff(np.concatenate([[-1], ends]))
        recent = hb.pos[order][ends]  # basket position of the latest purchase
        uk = k_o[ends]
        key = count * (int(hb.n_baskets.max(initial=0)) + 1) + recent  # count first, then recency
        return self._ranked(len(examples), uk // self.n_vocab_, uk % self.n_vocab_, key)


# ----------------------------------------------------------------------------- UP-CF@r


def recency_popularity(hb: HistoryBaskets, n_vocab: int, recency: int) -> sp.csr_matrix:
    """UP-CF's user-wise popularity ``pi^r[u, i]``: the share of ``u``'s last ``r``
    baskets (all of them when ``recency <= 0`` or fewer exist) that contain ``i``."""
    window = hb.n_baskets if recency <= 0 else np.minimum(hb.n_baskets, recency)
    keep = hb.age < window[hb.row]
    w = 1.0 / np.maximum(window[hb.row[keep]], 1)
    return _csr(dataclasses.replace(hb, row=hb.row[keep], pos=hb.pos[keep], item=hb.item[keep]),
                w, n_vocab)


def _binary(hb: HistoryBaskets, n_vocab: int) -> sp.csr_matrix:
    x = _csr(hb, np.ones(len(hb.item)), n_vocab)
    x.data[:] = 1.0
    return x


class _NeighbourPool(_BasketRanker):
    """Training customers with at least one training basket, and where each sits."""

    def _set_pool(self, store: SequenceStore, hb: HistoryBaskets) -> np.ndarray:
        members = np.flatnonzero(hb.n_baskets > 0)
        self.pool_customers_ = members
        self._pool_pos = np.full(store.n_customers, -1, dtype=np.int64)
        self._pool_pos[members] = np.arange(len(members))
        return members

    def _mask_self(self, table: np.ndarray, customers: np.ndarray, value: float) -> None:
        """Sets ``table[i, pool position of customers[i]] = value`` where present."""
        pos = self._pool_pos[customers]
        has = pos >= 0
        table[np.flatnonzero(has), pos[has]] = value


def _top_k_weights(sim: np.ndarray, k: int, *, largest: bool) -> sp.csr_matrix:
    """Sparse ``[m, n]`` keeping each row's ``k`` best entries of ``sim`` (stable order:
    on ties the lower column wins); entries that are not finite are never kept."""
    m, n = sim.shape
    k = min(k, n)
    if k <= 0:
        return sp.csr_matrix((m, n))
    order = np.argsort(-sim if largest else sim, axis=1, kind="stable")[:, :k]
    vals = np.take_along_axis(sim, order, axis=1)
    ok = np.isfinite(vals)
    rows = np.broadcast_to(np.arange(m)[:, None], order.shape)
    return sp.csr_matrix((vals[ok], (rows[ok], order[ok])), shape=(m, n))


class UPCF(_NeighbourPool):
    """UP-CF@r: user-popularity collaborative filtering with recency (Faggioli et al. 2020).

    ``score(u, i) = pi^r[u, i] + sum_{v in N_k(u)} w(u, v)^q pi^r[v, i]``: the target's
    own recency-aware popularity vector (:func:`recency_popularity`, weight 1 = its
    self-similarity) mixed with those of its ``k`` most similar training customers.
    ``w`` is the asymmetric cosine of the binary item sets (all visible baskets),
    ``|I_u & I_v| / (|I_u|^a |I_v|^(1-a))``; ``q`` (locality) sharpens it.

    Args:
      recency: ``r``, the last baskets counted in ``pi^r`` (``<= 0`` = all).
      asymmetry: ``a`` in ``[0, 1]`` (0.5 = cosine).
      locality: ``q`` >= 1.
      k: neighbours per history (0 = the personal vector alone).
    """

    def __init__(self, *, recency: int = 10, asymmetry: float = 0.75, locality: float = 10.0,
                 k: int = 100) -> None:
        if not 0.0 <= asymmetry <= 1.0:
            raise ValueError(f"asymmetry must lie in [0, 1], got {asymmetry}")
        if k < 0 or locality <= 0:
            raise ValueError(f"need k >= 0 and locality > 0, got k={k}, locality={locality}")
        self.recency, self.asymmetry = int(recency), float(asymmetry)
        self.locality, self.k = float(locality), int(k)

    def fit(self, store: SequenceStore, train_end: np.ndarray) -> "UPCF":
        """Item sets and ``pi^r`` vectors of the training prefixes (the neighbour pool)."""
        hb = self._fit_popularity(store, train_end)
        members = self._set_pool(store, hb)
        self._x = _binary(hb, self.n_vocab_)[members]
        self._pi = recency_popularity(hb, self.n_vocab_, self.recency)[members]
        self._size_pow = np.asarray(self._x.sum(axis=1)).ravel() ** (1.0 - self.asymmetry)
        self._xt = self._x.T.tocsr()
        self._pi_t = self._pi.T.tocsr()
        return self

    def score(self, store: SequenceStore, examples: Examples) -> np.ndarray:
        """``float32[m, n_items + 1]`` from each example's visible baskets."""
        self._check(store)
        hb = _examples_baskets(store, examples)
        pred = recency_popularity(hb, self.n_vocab_, self.recency)
        if self.k > 0 and self._x.shape[0]:
            h = _binary(hb, self.n_vocab_)
            overlap = (h @ self._xt).toarray()
            size = np.asarray(h.sum(axis=1)).ravel() ** self.asymmetry
            with np.errstate(divide="ignore", invalid="ignore"):
                sim = overlap / (size[:, None] * self._size_pow[None, :])
            sim[overlap <= 0] = -np.inf  # no shared item: not a neighbour
            self._mask_self(sim, examples.customer, -np.inf)
            w = _top_k_weights(sim, self.k, largest=True)
            w.data = w.data ** self.locality
            return self._ranked_dense(pred.toarray() + np.asarray(self._pi_t @ w.T.toarray()).T)
        return self._ranked_dense(pred.toarray())


# ----------------------------------------------------------------------------- TIFU-KNN


def tifu_vectors(hb: HistoryBaskets, n_vocab: int, *, n_groups: int, r_b: float, r_g: float
                 ) -> sp.csr_matrix:
    """TIFU-KNN's time-decayed personal item-frequency vectors, ``float64`` CSR.

    A history of ``t`` baskets is cut, oldest first, into ``K = min(t, n_groups)``
    groups of consecutive baskets with sizes ``floor(t / K)``, the ``t mod K`` most
    recent groups one basket larger. With ``b_j`` the binary basket vectors::

        group g:  v_g = (1 / |g|) sum_{j in g} r_b^(baskets after j inside g) b_j
        history:  u   = (1 / K)   sum_g     r_g^(groups after g)            v_g

    Args:
      hb: the histories' baskets.
      n_vocab: ``n_items + 1``.
      n_groups: ``m``, the number of groups.
      r_b: within-group decay; r_g: decay across groups.
    """
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    t = hb.n_baskets[hb.row]
    big_k = np.minimum(t, n_groups)
    base = t // np.maximum(big_k, 1)
    n_big = t - base * big_k  # groups with base + 1 baskets, the most recent ones
    bound = (big_k - n_big) * base  # first basket position of the larger groups
    j = hb.pos
    small = j < bound
    g = np.where(small, j // np.maximum(base, 1), big_k - n_big + (j - bound) // (base + 1))
    size = np.where(small, base, base + 1)
    within = np.where(small, j % np.maximum(base, 1), (j - bound) % (base + 1))
    w = (np.power(r_b, size - 1 - within) / size) * (np.power(r_g, big_k - 1 - g) / big_k)
    return _csr(hb, w, n_vocab)


TIFU_DUNNHUMBY = {"n_groups": 3, "r_b": 0.9, "r_g": 0.6, "k": 900, "alpha": 0.2}
"""The authors' released setting for their Dunnhumby data (grocery baskets from the
publisher of The Complete Journey): ``m = 3`` groups, ``r_b = 0.9``, ``r_g = 0.6``,
``k = 900``, ``alpha = 0.2``."""


class TIFUKNN(_NeighbourPool):
    """TIFU-KNN (Hu et al., SIGIR 2020).

    ``score(u) = alpha * u + (1 - alpha) * mean_{v in N_k(u)} v`` over the
    :func:`tifu_vectors` of the visible history (``u``) and of the training prefixes of
    the ``k`` other customers nearest to ``u`` in Euclidean distance (ties: lower store
    row first). With fewer candidates than ``k`` all of them are used; ``k = 0`` keeps
    ``alpha * u`` alone. Defaults: :data:`TIFU_DUNNHUMBY`; pick them on validation
    examples with :func:`attnlab.baselines.tuning.tune_tifu_knn`.

    Args:
      n_groups: ``m``, groups per history.
      r_b: within-group decay rate in ``(0, 1]``.
      r_g: group decay rate in ``(0, 1]``.
      k: neighbours.
      alpha: weight of the customer's own vector in ``[0, 1]``.
    """

    def __init__(self, *, n_groups: int = 3, r_b: float = 0.9, r_g: float = 0.6, k: int = 900,
                 alpha: float = 0.2) -> None:
        if not (0 < r_b <= 1 and 0 < r_g <= 1 and 0 <= alpha <= 1 and k >= 0 and n_groups >= 1):
            raise ValueError(f"TIFUKNN needs 0 < r_b, r_g <= 1, 0 <= alpha <= 1, k >= 0, n_groups >= 1; "
                             f"got r_b={r_b}, r_g={r_g}, alpha={alpha}, k={k}, n_groups={n_groups}")
        self.n_groups, self.r_b, self.r_g = int(n_groups), float(r_b), float(r_g)
        self.k, self.alpha = int(k), float(alpha)

    def _vectors(self, hb: HistoryBaskets) -> sp.csr_matrix:
        return tifu_vectors(hb, self.n_vocab_, n_groups=self.n_groups, r_b=self.r_b, r_g=self.r_g)

    def fit(self, store: SequenceStore, train_end: np.ndarray) -> "TIFUKNN":
        """TIFU vectors of the training prefixes (the neighbour pool)."""
        hb = self._fit_popularity(store, train_end)
        members = self._set_pool(store, hb)
        self._pool = self._vectors(hb)[members]
        self._pool_sq = np.asarray(self._pool.multiply(self._pool).sum(axis=1)).ravel()
        self._pool_t = self._pool.T.tocsr()
        return self

    def score(self, store: SequenceStore, examples: Examples) -> np.ndarray:
        """``float32[m, n_items + 1]`` from each example's visible baskets."""
        self._check(store)
        u = self._vectors(_examples_baskets(store, examples))
        pred = self.alpha * u.toarray()
        if self.k > 0 and self.alpha < 1.0 and self._pool.shape[0]:
            u_sq = np.asarray(u.multiply(u).sum(axis=1)).ravel()
            d2 = u_sq[:, None] + self._pool_sq[None, :] - 2.0 * (u @ self._pool_t).toarray()
            self._mask_self(d2, examples.customer, np.inf)
            w = _top_k_weights(d2, self.k, largest=False)
            n_nb = np.diff(w.indptr)
            w.data = np.repeat((1.0 - self.alpha) / np.maximum(n_nb, 1), n_nb)
            pred += np.asarray(self._pool_t @ w.T.toarray()).T
        return self._ranked_dense(pred)
