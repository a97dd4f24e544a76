"""gBCE (gSASRec's generalised binary cross-entropy, ``task.loss=gbce``) for next_item /
next_basket: the exponent, the per-position loss against a hand computation, its BCE
limit, the accidental-hit mask, the task wiring and the refusals (copy head, no
negatives, t outside [0, 1])."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from attnlab.data.pipeline import load_sequences
from attnlab.models import build_model
from attnlab.models.config import model_config
from attnlab.models.heads import gbce_beta, gbce_loss
from attnlab.train.task_config import NextItemConfig
from attnlab.train.tasks import make_task
from attnlab.typed_config import ConfigError


def test_beta_is_one_at_t0_and_the_sampling_rate_at_t1():
    assert gbce_beta(256, 1001, 0.0) == pytest.approx(1.0)
    assert gbce_beta(256, 1001, 1.0) == pytest.approx(256 / 1000)
    a = 256 / 1000  # the paper's formula at t = 0.75
    assert gbce_beta(256, 1001, 0.75) == pytest.approx(a * (0.75 * (1 - 1 / a) + 1 / a))
    # more calibration, smaller exponent: the positive term is down-weighted monotonically
    betas = [gbce_beta(64, 5000, t) for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(x > y for x, y in zip(betas, betas[1:]))
    for bad in [(0, 100, 0.5), (100, 100, 0.5), (10, 100, 1.5), (10, 100, -0.1)]:
        with pytest.raises(ValueError):
            gbce_beta(*bad)


def test_loss_matches_a_hand_computation_and_masks_accidental_hits():
    rng = np.random.default_rng(0)
    s_t = rng.normal(size=(2, 3)).astype(np.float32)
    s_n = rng.normal(size=(2, 3, 5)).astype(np.float32)
    hit = np.zeros((2, 3, 5), bool)
    hit[0, 1, 2] = hit[1, 2, 0] = True
    beta = 0.4
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    want = -(beta * np.log(sig(s_t)) + np.sum(np.where(hit, 0.0, np.log(1 - sig(s_n))), axis=-1))
    np.testing.assert_allclose(np.asarray(gbce_loss(s_t, s_n, hit, beta)), want, rtol=1e-5)
    # an accidental hit contributes nothing, whatever its score
    s_n2 = s_n.copy()
    s_n2[0, 1, 2] = 50.0
    np.testing.assert_allclose(np.asarray(gbce_loss(s_t, s_n2, hit, beta)), want, rtol=1e-5)


def test_beta_one_is_binary_cross_entropy_with_negatives():
    rng = np.random.default_rng(1)
    s_t, s_n = rng.normal(size=(4,)).astype(np.float32), rng.normal(size=(4, 6)).astype(np.float32)
    bce = (optax.sigmoid_binary_cross_entropy(s_t, np.ones(4, np.float32))
           + optax.sigmoid_binary_cross_entropy(s_n, np.zeros((4, 6), np.float32)).sum(-1))
    np.testing.assert_allclose(np.asarray(gbce_loss(s_t, s_n, np.zeros((4, 6), bool), 1.0)), bce, rtol=1e-5)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return load_sequences("synthetic", {"n_customers": 80, "n_items": 30},
                          cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def softmax_model(n_items, head="softmax"):
    return build_model({"name": "vanilla", "item_head": head, "history_memory": 0, "churn_pool": "last",
                        "d_model": 16, "n_layers": 1, "n_heads": 2, "max_len": 16, "dropout": 0.0},
                       n_items=n_items, seed=0)


def gbce_batches(store, task_name="next_item", t=0.75, negatives=12):
    task = make_task({"name": task_name, "loss": "gbce", "gbce_t": t,
                      "sampled_softmax": {"negatives": negatives, "proposal": "uniform"}})
    split = task.split(store, seed=0)
    task.prepare(store, split)
    return task, list(task.train_batches(store, split, max_len=16, batch_size=8, epoch=0, seed=0))


@pytest.mark.parametrize("task_name", ["next_item", "next_basket"])
def test_task_loss_is_the_mean_gbce_over_trained_positions(store, task_name):
    task, batches = gbce_batches(store, task_name)
    x, t = batches[0]
    assert float(t["gbce_beta"]) == pytest.approx(gbce_beta(12, store.n_items, 0.75))
    m = softmax_model(store.n_items)
    h = m.hidden(x)
    per = np.asarray(m.target_gbce(h, t["index"], t["item"], t["neg_item"], t["gbce_beta"]))
    mask = t["item"] > 0
    assert mask.any() and per.shape == mask.shape
    assert float(task.loss(m, x, t, None)) == pytest.approx(per[mask].mean(), rel=1e-5)
    # by hand from the catalogue scores: the model's scoring path, not a second copy of gbce_loss
    emb, bias = np.asarray(m.encoder.item.embedding[...]), np.asarray(m.catalogue.bias[...])
    hq = np.take_along_axis(np.asarray(h), t["index"][..., None], axis=1)
    s_t = np.sum(hq * emb[t["item"]], -1) + bias[t["item"]]
    s_n = hq @ emb[t["neg_item"]].T + bias[t["neg_item"]]
    hit = t["neg_item"][None, None, :] == t["item"][..., None]
    ls = lambda z: -np.logaddexp(0.0, -z)  # noqa: E731  log sigmoid
    want = -(float(t["gbce_beta"]) * ls(s_t) + np.where(hit, 0.0, ls(-s_n)).sum(-1))
    np.testing.assert_allclose(per[mask], want[mask], rtol=2e-4, atol=1e-4)


def test_gbce_training_steps_lower_the_loss_and_raise_the_targets_above_the_negatives(store):
    """A few AdamW steps on one batch: the loss falls and the targets' scores rise
    relative to the negatives' (the loss pushes them apart; a sign error would not)."""
    task, batches = gbce_batches(store, t=0.75)
    x, t = batches[0]
    m = softmax_model(store.n_items)
    opt = nnx.Optimizer(m, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(m, opt):
        loss, g = nnx.value_and_grad(lambda m: task.loss(m, x, t, None))(m)
        opt.update(m, g)
        return loss

    def margin(m):
        h = m.hidden(x)
        hq = jnp.take_along_axis(h, jnp.asarray(t["index"])[..., None], axis=1)
        emb = m.encoder.item.embedding[...]
        s_t = m.catalogue.target_logits(hq, emb, t["item"])
        s_n = m.catalogue.shared_logits(hq, emb, t["neg_item"]).mean(-1)
        return float(jnp.mean(jnp.where(t["item"] > 0, s_t - s_n, 0.0)))

    before_loss, before_margin = float(task.loss(m, x, t, None)), margin(m)
    losses = [float(step(m, opt)) for _ in range(30)]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * before_loss
    assert margin(m) > before_margin + 1.0


def test_refusals_name_the_keys_and_the_fix(store):
    with pytest.raises(ConfigError, match=r"model.item_head=softmax model.history_memory=0"):
        make_task({"name": "next_item", "loss": "gbce"}).check_model(
            model_config({"name": "vanilla", "item_head": "copy"}))
    make_task({"name": "next_item", "loss": "gbce"}).check_model(
        model_config({"name": "vanilla", "item_head": "softmax", "history_memory": 0}))
    make_task({"name": "next_item"}).check_model(model_config({"name": "vanilla", "item_head": "copy"}))
    with pytest.raises(ValueError, match=r"copy head"):  # the model refuses too, if called directly
        m = softmax_model(store.n_items, head="copy")
        task, batches = gbce_batches(store)
        task.loss(m, *batches[0], None)
    task = make_task({"name": "next_item", "loss": "gbce", "sampled_softmax": {"negatives": 0}})
    with pytest.raises(ConfigError, match=r"task.sampled_softmax.negatives to 1 \.\. "):
        task.prepare(store, task.split(store, seed=0))
    with pytest.raises(ConfigError, match=r"task.gbce_t"):
        NextItemConfig.from_dict({"gbce_t": 1.5})
    with pytest.raises(ConfigError, match=r"task.loss"):
        NextItemConfig.from_dict({"loss": "bce"})
    # the default loss adds nothing to a batch
    plain = make_task({"name": "next_item", "sampled_softmax": {"negatives": 12}})
    plain.prepare(store, plain.split(store, seed=0))
    _, t = next(iter(plain.train_batches(store, plain.split(store, seed=0), max_len=16, batch_size=8, epoch=0,
                                         seed=0)))
    assert "gbce_beta" not in t
