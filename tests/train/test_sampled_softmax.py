"""Sampled softmax for the next_item / next_basket training loss.

Exactness (whole catalogue as negatives == full softmax), accidental-hit masking,
unbiasedness of the importance-sampled partition function, gradient direction, the
proposals, and the task wiring (config, batches, loss). Training through the real
trainer is in tests/train/test_zoo_matrix.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.data.pipeline import load_sequences
from attnlab.models import build_model
from attnlab.models.heads import sampled_softmax_log_prob
from attnlab.train.task_config import PROPOSALS, SampledSoftmaxConfig
from attnlab.train.tasks import NegativeSampler, make_task

B, L, V = 3, 12, 40
INDEX = np.array([[3, 11, 7], [0, 4, 2], [0, 0, 0]], np.int32)


def make_inputs(seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([12, 5, 1], np.int32)
    valid = np.arange(L)[None] < lengths[:, None]
    f = lambda: np.where(valid, rng.random((B, L)), 0).astype(np.float32)  # noqa: E731
    return {"item": np.where(valid, rng.integers(1, V + 1, (B, L)), 0).astype(np.int32),
            "event_type": valid.astype(np.int32), "time": -f(), "gap": f(), "age": f(),
            "value": f(), "quantity": f(), "weekday": np.zeros((B, L), np.int32),
            "hour": np.zeros((B, L), np.int32), "lengths": lengths}


def make_model(head):
    cfg = {"name": "vanilla", "item_head": "softmax", "history_memory": 0, "churn_pool": "last", "d_model": 16, "n_layers": 1, "n_heads": 2, "max_len": L,
           "dropout": 0.0, "item_head": head}
    return build_model(cfg, n_items=V, seed=0)


def targets_for(x):
    t = np.array([[5, 9, 5], [7, 1, 3], [2, 0, 0]], np.int32)
    t[0, 2] = x["item"][0, 1]  # an item from the history (the copy pointer has mass on it)
    return t


@pytest.mark.parametrize("head", ["softmax", "copy"])
def test_whole_catalogue_with_uniform_proposal_equals_full_softmax(head):
    """Negatives = every item once, q uniform: N q = 1, so the logQ correction is 0 and
    the target (present among the negatives) is masked as an accidental hit: the
    estimate is the full softmax over the catalogue, exactly (up to float summation)."""
    m, x = make_model(head), make_inputs(1)
    targets = targets_for(x)
    h = m.hidden(x)
    full = np.asarray(m.target_log_prob(h, x, INDEX, targets))
    sampler = NegativeSampler(np.ones(V + 1), proposal="uniform")
    items = np.arange(1, V + 1, dtype=np.int32)
    log_count = np.log(V) + sampler.log_q[items]  # log(N q) with N = V, q = 1 / V
    np.testing.assert_allclose(log_count, 0.0, atol=1e-12)
    sampled = np.asarray(m.target_log_prob(h, x, INDEX, targets,
                                           negatives=(items, np.zeros(V, np.float32))))
    mask = targets > 0
    np.testing.assert_allclose(sampled[mask], full[mask], rtol=1e-6, atol=1e-6)


def test_accidental_hits_are_masked():
    rng = np.random.default_rng(0)
    s_t = jnp.asarray(rng.normal(size=(4,)), jnp.float32)
    s_n = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    log_count = jnp.asarray(rng.normal(size=(6,)), jnp.float32)
    # every negative is the target: nothing else competes, log p = 0 exactly
    all_hits = sampled_softmax_log_prob(s_t, s_n, log_count, jnp.ones((4, 6), bool))
    np.testing.assert_array_equal(np.asarray(all_hits), 0.0)
    # a hit contributes nothing: same as dropping that negative
    hit = np.zeros((4, 6), bool)
    hit[:, 2] = True
    with_hit = sampled_softmax_log_prob(s_t, s_n, log_count, jnp.asarray(hit))
    keep = [0, 1, 3, 4, 5]
    dropped = sampled_softmax_log_prob(s_t, s_n[:, keep], log_count[jnp.asarray(keep)],
                                       jnp.zeros((4, 5), bool))
    np.testing.assert_allclose(np.asarray(with_hit), np.asarray(dropped), rtol=1e-6)


@pytest.mark.parametrize("head", ["softmax", "copy"])
def test_model_masks_the_target_among_the_negatives(head):
    m, x = make_model(head), make_inputs(2)
    targets = np.full((B, 3), 5, np.int32)
    h = m.hidden(x)
    only_target = (np.full(4, 5, np.int32), np.zeros(4, np.float32))
    lp = np.asarray(m.target_log_prob(h, x, INDEX, targets, negatives=only_target))
    if head == "softmax":  # the generator is the whole model: P = 1
        np.testing.assert_allclose(lp, 0.0, atol=1e-6)
    else:  # generator P = 1, pointer exact: the mixture can only be <= 1
        assert np.all(lp <= 1e-6)
    others = (np.array([5, 6, 7, 5], np.int32), np.zeros(4, np.float32))
    without = (np.array([6, 7], np.int32), np.zeros(2, np.float32))
    np.testing.assert_allclose(np.asarray(m.target_log_prob(h, x, INDEX, targets, negatives=others)),
                               np.asarray(m.target_log_prob(h, x, INDEX, targets, negatives=without)),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("proposal", PROPOSALS)
def test_sampled_partition_function_is_unbiased(proposal):
    """E[sum_k [n_k != t] exp(s_{n_k} - log(N q(n_k)))] = sum_{j != t} exp(s_j), with the
    sum read back from the library's estimate: exp(s_t - log p) - exp(s_t) (so a wrong
    logQ sign or a missing correction in ``sampled_softmax_log_prob`` fails here)."""
    rng = np.random.default_rng(0)
    n_items, n, draws, t = 50, 8, 40_000, 3
    counts = np.concatenate([[0], rng.zipf(1.5, n_items).clip(max=500)])
    sampler = NegativeSampler(counts, proposal=proposal)
    s = np.concatenate([[-1e9], rng.normal(scale=1.5, size=n_items)])
    s[1 + np.argsort(-counts[1:])[:5]] += 2.0  # popular items score high, like a trained model
    exact = np.exp(s[1:]).sum() - np.exp(s[t])
    drawn = [sampler.draw(rng, n) for _ in range(draws)]
    items = np.stack([d[0] for d in drawn])
    log_count = np.stack([d[1] for d in drawn])
    log_p = sampled_softmax_log_prob(
        jnp.full(draws, s[t], jnp.float32), jnp.asarray(s[items], jnp.float32),
        jnp.asarray(log_count), jnp.asarray(items == t))
    est = np.exp(s[t] - np.asarray(log_p, np.float64)) - np.exp(s[t])
    stderr = est.std() / np.sqrt(draws)
    assert abs(est.mean() - exact) < 4 * stderr + 1e-9 * exact, (est.mean(), exact, stderr)
    assert stderr < 0.05 * exact  # the check has power


def test_expected_sampled_gradient_points_like_the_full_gradient():
    rng = np.random.default_rng(1)
    n_items, n, t = 60, 16, 7
    counts = np.concatenate([[0], rng.integers(0, 50, n_items)])
    sampler = NegativeSampler(counts, proposal="popularity")
    logits = jnp.asarray(np.concatenate([[-1e9], rng.normal(size=n_items)]), jnp.float32)

    def full_nll(z):
        return -jax.nn.log_softmax(z)[t]

    def sampled_nll(z, items, log_count):
        return -sampled_softmax_log_prob(z[t], z[items], log_count, items == t)

    g_full = np.asarray(jax.grad(full_nll)(logits))[1:]
    draws = [sampler.draw(rng, n) for _ in range(400)]
    items = jnp.asarray(np.stack([d[0] for d in draws]))
    log_count = jnp.asarray(np.stack([d[1] for d in draws]))
    g = jax.vmap(jax.grad(sampled_nll), in_axes=(None, 0, 0))(logits, items, log_count)
    g_mean = np.asarray(g).mean(0)[1:]
    cos = g_mean @ g_full / (np.linalg.norm(g_mean) * np.linalg.norm(g_full))
    assert cos > 0.95, cos
    assert g_mean[t - 1] < 0  # pushes the target up


@pytest.mark.parametrize("proposal", PROPOSALS)
def test_proposals_are_distributions_over_real_items(proposal):
    counts = np.array([0, 50, 0, 5, 20, 1])
    sampler = NegativeSampler(counts, proposal=proposal)
    q = np.exp(sampler.log_q)
    assert q[0] == 0 and np.all(q[1:] > 0)  # "no item" never drawn; every item can be
    np.testing.assert_allclose(q.sum(), 1.0, rtol=1e-12)
    if proposal != "uniform":
        assert q[1] > q[4] > q[3] > q[2]  # follows the training counts
    items, log_count = sampler.draw(np.random.default_rng(0), 5000)
    assert items.min() >= 1 and items.max() <= 5
    np.testing.assert_allclose(log_count, np.log(5000) + sampler.log_q[items], rtol=1e-6)
    freq = np.bincount(items, minlength=6)[1:] / 5000
    np.testing.assert_allclose(freq, q[1:], atol=0.03)


def test_config_validation_names_the_key():
    assert SampledSoftmaxConfig.from_dict({}) == SampledSoftmaxConfig(negatives=1024, proposal="popularity", alpha=0.75)
    got = SampledSoftmaxConfig.from_dict({"negatives": 8, "proposal": "uniform"})
    assert (got.negatives, got.proposal) == (8, "uniform")
    for bad, key in [({"negatives": -1}, "negatives"), ({"negatives": 1.5}, "negatives"),
                     ({"proposal": "nope"}, "proposal"), ({"alpha": -1}, "alpha"), ({"k": 1}, "unknown")]:
        with pytest.raises(ValueError, match=key):
            make_task({"name": "next_item", "sampled_softmax": bad})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return load_sequences("synthetic", {"n_customers": 80, "n_items": 30},
                          cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


@pytest.mark.parametrize("task_name", ["next_item", "next_basket"])
def test_task_batches_carry_shared_negatives_and_leave_positions_alone(store, task_name):
    def batches(negatives):
        task = make_task({"name": task_name, "loss_positions": 4,
                          "sampled_softmax": {"negatives": negatives, "proposal": "popularity"}})
        split = task.split(store, seed=0)
        task.prepare(store, split)
        return task, list(task.train_batches(store, split, max_len=16, batch_size=8, epoch=0, seed=0))

    full_task, full = batches(0)
    task, sampled = batches(12)
    assert full_task.sampler is None and "neg_item" not in full[0][1]
    assert len(full) == len(sampled)
    for (x0, t0), (x1, t1) in zip(full, sampled):  # the full-softmax stream is unchanged
        np.testing.assert_array_equal(t0["index"], t1["index"])
        np.testing.assert_array_equal(t0["item"], t1["item"])
        np.testing.assert_array_equal(x0["item"], x1["item"])
        assert t1["neg_item"].shape == (12,) and t1["neg_log_count"].shape == (12,)
        assert t1["neg_item"].min() >= 1 and t1["neg_item"].max() <= store.n_items
    # the proposal is fitted on training targets only, and the loss runs with it
    m = build_model({"name": "vanilla", "item_head": "softmax", "history_memory": 0, "churn_pool": "last", "d_model": 16, "n_layers": 1, "n_heads": 2, "max_len": 16,
                     "dropout": 0.0, "item_head": "copy"}, n_items=store.n_items, seed=0)
    x, t = sampled[0]
    loss_sampled = float(task.loss(m, x, t, None))
    loss_full = float(task.loss(m, x, {k: t[k] for k in ("index", "item")}, None))
    assert np.isfinite(loss_sampled) and 0 < loss_sampled
    assert np.isfinite(loss_full) and loss_full > 0
