"""BG/NBD: published values, simulation recovery, CDNOW calibration fit, churn probs."""

import numpy as np
import pytest

from attnlab.baselines.bgnbd import (CDNOW_PAPER_PARAMS, BGNBDChurn, BGNBDParams, bgnbd_summary,
                                     expected_purchases, fit_bgnbd, log_likelihood, p_alive,
                                     prob_no_purchase, simulate_bgnbd)
from attnlab.data.splits import Examples, to_seconds
from tests.baselines.cases import make_case

P = CDNOW_PAPER_PARAMS


def test_published_conditional_expectation():
    # FHL (2005), section 5: x = 2, t_x = 30.43, T = 38.86 -> 1.226 purchases in 39 weeks.
    assert expected_purchases(P, 39, 2, 30.43, 38.86) == pytest.approx(1.226, abs=1e-3)


def test_p_alive_and_no_purchase_prob():
    assert p_alive(P, 0, 0, 30.0) == 1.0
    assert p_alive(P, 3, 30.0, 30.0) > p_alive(P, 3, 5.0, 30.0)  # recent buyers more alive
    # x = 0: P(alive) = 1, so P(0 in h) = ((alpha + T) / (alpha + T + h))^r.
    assert prob_no_purchase(P, 10.0, 0, 0, 20.0) == pytest.approx(((P.alpha + 20) / (P.alpha + 30)) ** P.r)
    q = prob_no_purchase(P, 39.0, np.array([0, 1, 5, 20]), np.array([0, 1, 30, 2]), np.array([39, 39, 39, 39]))
    assert ((q >= 0) & (q <= 1)).all()


def test_likelihood_matches_closed_form():
    x, tx, t = np.array([0.0, 2.0]), np.array([0.0, 30.43]), np.array([38.86, 38.86])
    from scipy.special import betaln, gammaln
    r, al, a, b = P.as_tuple()
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(al)
    l1 = np.exp(betaln(a, b + x) - betaln(a, b)) * (al + t) ** -(r + x)
    l2 = np.where(x > 0, np.exp(betaln(a + 1, b + np.maximum(x, 1) - 1) - betaln(a, b)) * (al + tx) ** -(r + x), 0)
    np.testing.assert_allclose(log_likelihood(P, x, tx, t), a1 + np.log(l1 + l2), rtol=1e-10)


def test_mle_recovers_simulated_parameters():
    rng = np.random.default_rng(0)
    truth = BGNBDParams(r=0.5, alpha=5.0, a=0.8, b=2.5)
    d = simulate_bgnbd(truth, rng.uniform(30, 78, 8000), seed=1)
    est = fit_bgnbd(d["x"], d["t_x"], d["T"])
    rel = np.abs(np.array(est.as_tuple()) / np.array(truth.as_tuple()) - 1)
    assert rel[:2].max() < 0.15, est  # r, alpha: tight
    assert rel[2:].max() < 0.35, est  # a, b: the dropout process is weakly identified


def test_summary_on_tiny_store():
    store, _, ex = make_case(poison=False)
    s = bgnbd_summary(store, ex)
    # customer 0: visible purchase days 1 and 3, cut-off midnight of day 6 (last day 5).
    assert s.loc[0, ["x", "t_x", "T"]].tolist() == [1.0, 2 / 7, 4 / 7]
    dirty, _, ex_d = make_case(poison=True)
    np.testing.assert_array_equal(s.to_numpy(), bgnbd_summary(dirty, ex_d).to_numpy())


def test_churn_on_tiny_store():
    store, _, ex = make_case(poison=False)
    p = BGNBDChurn(horizon_days=14).fit(store, ex).prob(store, ex)
    assert p.shape == (6,) and ((p >= 0) & (p <= 1)).all()
    with pytest.raises(ValueError, match="horizon_days"):
        BGNBDChurn(horizon_days=0)


def test_cdnow_calibration_close_to_paper(tmp_path):
    from attnlab.data import load_sequences
    from attnlab.data.sources.cdnow import default_path
    try:
        default_path()
    except Exception as err:  # lifetimes (which ships the file) missing
        pytest.skip(str(err))
    store = load_sequences("cdnow", {}, cache_dir=tmp_path, progress=False)
    c = to_seconds("1997-10-01")
    cust = np.repeat(np.arange(store.n_customers), store.lengths)
    end = store.offsets[:-1] + np.bincount(cust[store.time < c], minlength=store.n_customers)
    keep = end > store.offsets[:-1]
    ex = Examples(customer=np.flatnonzero(keep), end=end[keep], cutoff=np.full(keep.sum(), c))
    s = bgnbd_summary(store, ex)
    assert len(s) == 23_570 and s["T"].max() == pytest.approx(272 / 7)
    est = fit_bgnbd(s["x"], s["t_x"], s["T"])
    rel = np.abs(np.array(est.as_tuple()) / np.array(P.as_tuple()) - 1)
    assert rel.max() < 0.15, est
