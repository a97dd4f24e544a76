"""BG/NBD "buy till you die" model (Fader, Hardie & Lee 2005) fitted in JAX.

Model: while alive, a customer buys as a Poisson process with rate ``lambda ~
Gamma(r, alpha)`` (shape ``r``, rate ``alpha``); after every REPEAT purchase the
customer drops out for good with probability ``p ~ Beta(a, b)``. Per customer at a
cut-off the sufficient statistics are (as in the CDNOW literature, on a day grid):

* ``x``   -- repeat transactions: number of distinct purchase DAYS after the first one;
* ``t_x`` -- recency: (last purchase day - first purchase day) / 7, in weeks;
* ``T``   -- age: (last observed day - first purchase day) / 7, in weeks, where the
  last observed day is the day holding ``cutoff - 1 s`` (a cut-off at midnight
  1997-10-01 ends the calibration on 1997-09-30, as in the paper).

Individual likelihood (FHL 2005, eq. 6), with ``A = lnG(r+x) - lnG(r) + r ln alpha``::

    L = exp(A) [ B(a, b+x)/B(a, b) (alpha+T)^-(r+x)
                 + 1{x>0} B(a+1, b+x-1)/B(a, b) (alpha+t_x)^-(r+x) ]

The sum of log-likelihoods is maximised over ``log(r, alpha, a, b)`` with scipy
L-BFGS-B on exact JAX gradients (float64).

Churn (:class:`BGNBDChurn`): ``P(no purchase in the next h weeks)``. Dropout only
happens right after a purchase, so an alive customer who does not buy stays alive,
and given alive its rate has posterior ``Gamma(r + x, alpha + T)``; hence::

    P(0 in (T, T+h]) = (1 - P_alive) + P_alive * ((alpha + T) / (alpha + T + h))^(r + x)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import scipy.optimize
import scipy.special as ss
from jax.scipy.special import gammaln

from attnlab.data.rfm import purchase_index
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import DAY, Examples

WEEK_DAYS = 7.0


@dataclasses.dataclass(frozen=True)
class BGNBDParams:
    """BG/NBD parameters (time unit: weeks).

    Attributes:
      r: shape of the Gamma purchase-rate heterogeneity.
      alpha: rate (scale^-1) of the Gamma, in weeks.
      a: Beta dropout-probability shape a.
      b: Beta dropout-probability shape b.
    """

    r: float
    alpha: float
    a: float
    b: float

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.r, self.alpha, self.a, self.b)


CDNOW_PAPER_PARAMS = BGNBDParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
"""FHL (2005) estimates on the 2,357-customer CDNOW calibration sample (39 weeks)."""


# ----------------------------------------------------------------------------- features


def bgnbd_summary(store: SequenceStore, examples: Examples) -> pd.DataFrame:
    """``x``, ``t_x``, ``T`` (weeks) of each example's visible history (see module doc);
    :func:`bgnbd_stats` of the examples' histories and cut-offs."""
    starts = np.asarray(store.offsets, dtype=np.int64)[np.asarray(examples.customer, dtype=np.int64)]
    return bgnbd_stats(store, starts, examples.end, examples.cutoff)


def bgnbd_stats(store: SequenceStore, starts: np.ndarray, ends: np.ndarray, cutoffs: np.ndarray) -> pd.DataFrame:
    """``x``, ``t_x``, ``T`` (weeks) of each row's history ``store[start:end]`` seen from
    ``cutoff``; ``start`` is the customer's first event (``offsets[c]``) and every event
    before ``end`` must be before ``cutoff``.

    Only ``PURCHASE`` events in ``store[offsets[c]:end]`` count (item ids not needed).
    An example without a visible purchase gets ``x = t_x = T = 0`` (a customer who
    has just made a first purchase). Vectorised: a cumulative count of "new
    purchase day" flags over the store's purchase events, indexed by searchsorted.

    Returns:
      DataFrame ``[m]`` with float64 columns ``x``, ``t_x``, ``T`` and int
      ``n_purchase_days``.
    """
    ix = purchase_index(store)
    day = ix.day
    k0, k1 = ix.bounds(np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64))
    n_days = ix.days[k1] - ix.days[k0]
    has = n_days > 0
    first = np.where(has, day[np.minimum(k0, len(day) - 1)] if len(day) else 0, 0)
    last = np.where(has, day[np.maximum(k1 - 1, 0)] if len(day) else 0, 0)
    obs_day = (np.asarray(cutoffs, dtype=np.int64) - 1) // DAY
    x = np.maximum(n_days - 1, 0).astype(np.float64)
    t_x = np.where(has, (last - first) / WEEK_DAYS, 0.0)
    big_t = np.where(has, (obs_day - first) / WEEK_DAYS, 0.0)
    if (big_t < t_x).any():
        raise ValueError("a visible purchase lies at/after its example's cutoff; examples must "
                         "come from attnlab.data.splits (every visible event has time < cutoff)")
    return pd.DataFrame({"x": x, "t_x": t_x, "T": big_t, "n_purchase_days": n_days})


# ----------------------------------------------------------------------------- likelihood


def betaln(a, b):
    """log B(a, b) via gammaln (jax's betaln compiles several times slower on CPU)."""
    return gammaln(a) + gammaln(b) - gammaln(a + b)


def _loglik(log_params, x, t_x, big_t):
    """``float[n]`` per-customer BG/NBD log-likelihood (jax, any float dtype)."""
    r, alpha, a, b = jnp.exp(log_params)
    base = gammaln(r + x) - gammaln(r) + r * jnp.log(alpha)
    t1 = betaln(a, b + x) - betaln(a, b) - (r + x) * jnp.log(alpha + big_t)
    rep = x > 0
    xs = jnp.where(rep, x, 1.0)  # keeps b + x - 1 > 0 inside the unused branch
    t2 = betaln(a + 1.0, b + xs - 1.0) - betaln(a, b) - (r + xs) * jnp.log(alpha + t_x)
    return base + jnp.where(rep, jnp.logaddexp(t1, t2), t1)


def _objective(log_params, x, t_x, big_t, w, l2):
    """Weighted mean negative log-likelihood + ``l2 |log_params|^2``."""
    return -jnp.sum(w * _loglik(log_params, x, t_x, big_t)) + l2 * jnp.sum(log_params ** 2)


_objective_and_grad = jax.jit(jax.value_and_grad(_objective))


def log_likelihood(params: BGNBDParams, x, t_x, big_t) -> np.ndarray:
    """``float64[n]`` BG/NBD log-likelihood of each customer (``x``, ``t_x``, ``T`` ``[n]``)."""
    with jax.enable_x64(True):
        lp = jnp.log(jnp.asarray(params.as_tuple(), dtype=jnp.float64))
        out = _loglik(lp, *(jnp.asarray(v, dtype=jnp.float64) for v in (x, t_x, big_t)))
        return np.asarray(out)


def fit_bgnbd(x, t_x, big_t, *, weights=None, l2: float = 0.0,
              init: BGNBDParams | None = None, max_iter: int = 500) -> BGNBDParams:
    """Maximum-likelihood BG/NBD parameters.

    Identical ``(x, t_x, T)`` rows are merged with counts first (on CDNOW's day grid
    this shrinks the problem several-fold).

    Args:
      x: ``[n]`` repeat transactions (>= 0).
      t_x: ``[n]`` recency in weeks (``0 <= t_x <= T``).
      big_t: ``[n]`` age ``T`` in weeks.
      weights: optional ``[n]`` row weights (default 1).
      l2: penalty ``l2 * sum(log_params^2)`` added to the mean negative log-likelihood.
      init: starting point (default all ones).
      max_iter: L-BFGS-B iterations.

    Returns:
      The fitted :class:`BGNBDParams`.

    Raises:
      ValueError: on invalid inputs or when the optimiser fails.
    """
    data = np.stack([np.asarray(v, dtype=np.float64).reshape(-1) for v in (x, t_x, big_t)], 1)
    w = np.ones(len(data)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(data) == 0 or len(w) != len(data):
        raise ValueError(f"fit_bgnbd needs >= 1 customer and one weight per row, got {len(data)} rows, "
                         f"{len(w)} weights")
    if (data < 0).any() or (data[:, 1] > data[:, 2] + 1e-9).any() or not np.isfinite(data).all():
        raise ValueError("fit_bgnbd needs finite x >= 0 and 0 <= t_x <= T")
    if not (data[:, 0] > 0).any():
        raise ValueError("fit_bgnbd: no customer has a repeat purchase; the dropout process is "
                         "not identified (use a longer calibration period)")
    uniq, inv = np.unique(data, axis=0, return_inverse=True)
    cnt = np.bincount(inv.reshape(-1), weights=w, minlength=len(uniq))
    # Pad to a power-of-two bucket (zero weight) so the jitted objective is compiled
    # once per bucket, not once per data set.
    size = max(1024, 1 << int(np.ceil(np.log2(len(uniq)))))
    pad = np.zeros((size, 4))
    pad[: len(uniq), :3], pad[: len(uniq), 3] = uniq, cnt / cnt.sum()
    start = np.log(np.asarray((init or BGNBDParams(1.0, 1.0, 1.0, 1.0)).as_tuple()))
    with jax.enable_x64(True):
        cols = [jnp.asarray(pad[:, i]) for i in range(4)]

        def fun(lp):
            v, g = _objective_and_grad(jnp.asarray(lp), *cols, l2)
            return float(v), np.asarray(g, dtype=np.float64)

        res = scipy.optimize.minimize(fun, start, jac=True, method="L-BFGS-B",
                                      bounds=[(-12.0, 12.0)] * 4, options={"maxiter": max_iter})
    if not np.isfinite(res.fun):
        raise ValueError(f"BG/NBD optimisation failed: {res.message}")
    r, alpha, a, b = np.exp(res.x)
    return BGNBDParams(float(r), float(alpha), float(a), float(b))


# ----------------------------------------------------------------------------- quantities


def _arrays(*vals):
    return [np.asarray(v, dtype=np.float64) for v in vals]


def p_alive(params: BGNBDParams, x, t_x, big_t) -> np.ndarray:
    """P(alive at T | x, t_x, T) = 1 / (1 + 1{x>0} a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)).

    Args:
      params: fitted parameters.
      x, t_x, big_t: broadcastable arrays (weeks).

    Returns:
      float64 array; exactly 1 where ``x == 0``.
    """
    r, alpha, a, b = params.as_tuple()
    x, t_x, big_t = _arrays(x, t_x, big_t)
    xs = np.where(x > 0, x, 1.0)
    log_odds = np.log(a) - np.log(b + xs - 1.0) + (r + xs) * (np.log(alpha + big_t) - np.log(alpha + t_x))
    return np.where(x > 0, 1.0 / (1.0 + np.exp(log_odds)), 1.0)


def expected_purchases(params: BGNBDParams, t, x, t_x, big_t) -> np.ndarray:
    """E[Y(t) | x, t_x, T]: expected purchases in the next ``t`` weeks (FHL 2005, eq. 10).

    ``(a+b+x-1)/(a-1) [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1;
    t/(alpha+T+t))] * P(alive)`` (valid for ``a != 1``).

    Args:
      params: fitted parameters.
      t: forecast length in weeks; x, t_x, big_t: calibration statistics (broadcastable).

    Returns:
      float64 array of expected repeat purchases.
    """
    r, alpha, a, b = params.as_tuple()
    t, x, t_x, big_t = _arrays(t, x, t_x, big_t)
    z = t / (alpha + big_t + t)
    hyp = ss.hyp2f1(r + x, b + x, a + b + x - 1.0, z)
    head = (a + b + x - 1.0) / (a - 1.0)
    tail = 1.0 - ((alpha + big_t) / (alpha + big_t + t)) ** (r + x) * hyp
    return head * tail * p_alive(params, x, t_x, big_t)


def prob_no_purchase(params: BGNBDParams, horizon_weeks, x, t_x, big_t) -> np.ndarray:
    """P(no purchase in (T, T + h]) = (1 - P_alive) + P_alive ((alpha+T)/(alpha+T+h))^(r+x)."""
    r, alpha, _, _ = params.as_tuple()
    h, x, t_x, big_t = _arrays(horizon_weeks, x, t_x, big_t)
    pa = p_alive(params, x, t_x, big_t)
    quiet = np.exp((r + x) * (np.log(alpha + big_t) - np.log(alpha + big_t + h)))
    return np.clip(1.0 - pa + pa * quiet, 0.0, 1.0)


#: what :func:`bgnbd_quantities` returns, in column order
QUANTITIES = ("p_alive", "p_no_purchase", "expected_purchases")


def bgnbd_quantities(params: BGNBDParams, horizon_weeks: float, x, t_x, big_t) -> np.ndarray:
    """``float64[m, 3]``: :data:`QUANTITIES` (P(alive), P(no purchase in the horizon),
    expected purchases in the horizon) of each row's calibration statistics; NaN where a
    quantity is not finite. The features ``hgb`` and the churn head's history summary
    read (one definition)."""
    with np.errstate(all="ignore"):
        out = np.stack([p_alive(params, x, t_x, big_t),
                        prob_no_purchase(params, horizon_weeks, x, t_x, big_t),
                        expected_purchases(params, horizon_weeks, x, t_x, big_t)], axis=1)
    out[~np.isfinite(out)] = np.nan
    return out


# ----------------------------------------------------------------------------- simulation


def simulate_bgnbd(params: BGNBDParams, big_t, *, seed: int = 0, max_repeats: int = 2000
                   ) -> pd.DataFrame:
    """Draws ``(x, t_x, T)`` from the BG/NBD process (vectorised numpy).

    Every customer buys at time 0, then at Poisson(lambda) times; after each repeat
    purchase they drop out with probability ``p``. Times continuous (weeks).

    Args:
      params: true parameters.
      big_t: ``[n]`` observation length per customer (weeks).
      seed: numpy seed.
      max_repeats: cap on simulated arrivals per customer; raises if a customer could
        exceed it (raise the cap).

    Returns:
      DataFrame ``[n]`` with ``x``, ``t_x``, ``T``, and the latent ``lam``, ``p``.
    """
    rng = np.random.default_rng(seed)
    big_t = np.asarray(big_t, dtype=np.float64)
    n = len(big_t)
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    life = rng.geometric(p)  # the repeat purchase after which the customer drops out
    n_arr = rng.poisson(lam * big_t)  # arrivals in [0, T] if the customer never dropped out
    if n_arr.max(initial=0) > max_repeats:
        raise ValueError(f"a simulated customer has {n_arr.max()} arrivals > max_repeats={max_repeats}")
    x = np.minimum(n_arr, life)
    # Given N arrivals in [0, T], their times are sorted uniforms; the x-th of N sorted
    # uniforms on [0, T] is T * Beta(x, N - x + 1).
    t_x = np.where(x > 0, big_t * rng.beta(np.maximum(x, 1), np.maximum(n_arr - x + 1, 1)), 0.0)
    return pd.DataFrame({"x": x.astype(np.float64), "t_x": t_x, "T": big_t, "lam": lam, "p": p})


# ----------------------------------------------------------------------------- churn model


class BGNBDChurn:
    """Churn = P(no purchase in the horizon) under a BG/NBD fitted on training examples.

    Args:
      horizon_days: label-window length in days (the split's ``horizon``; 273 for the
        CDNOW 39-week holdout, 56 for the 8-week default).
      l2: optional penalty on the log-parameters (see :func:`fit_bgnbd`).
    """

    def __init__(self, *, horizon_days: float, l2: float = 0.0) -> None:
        if not horizon_days > 0:
            raise ValueError(f"horizon_days must be > 0, got {horizon_days}")
        self.horizon_days, self.l2 = float(horizon_days), float(l2)
        self.params_: BGNBDParams | None = None

    def fit(self, store: SequenceStore, train_examples: Examples) -> "BGNBDChurn":
        """Fits the parameters by MLE on the calibration statistics of ``train_examples``
        (visible histories only; the labels are not used -- BG/NBD is unsupervised)."""
        s = bgnbd_summary(store, train_examples)
        s = s[s["n_purchase_days"] > 0]
        if len(s) == 0:
            raise ValueError("BGNBDChurn.fit: no training example has a visible purchase")
        self.params_ = fit_bgnbd(s["x"], s["t_x"], s["T"], l2=self.l2)
        return self

    def prob(self, store: SequenceStore, examples: Examples) -> np.ndarray:
        """``float64[m]`` P(no purchase in the next ``horizon_days``)."""
        if self.params_ is None:
            raise RuntimeError("BGNBDChurn.fit(store, train_examples) must run before prob()")
        s = bgnbd_summary(store, examples)
        return prob_no_purchase(self.params_, self.horizon_days / WEEK_DAYS, s["x"], s["t_x"], s["T"])
