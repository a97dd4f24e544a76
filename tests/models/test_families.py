"""Every family x head: shapes, padding, causality, family-specific properties,
streaming == parallel, and a few optimiser steps lower the loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from attnlab.models import FAMILIES, build_model, decay_horizons, decay_slopes, forgetting_factors

B, L, V = 3, 12, 40
LENGTHS = np.array([12, 5, 0], np.int32)  # full, ragged, fully padded
FAMILY_NAMES = ["vanilla", "time_decay", "sparse", "linear", "lstm"]
OPTIONS = {"sparse": {"attention": {"window": 4, "num_global": 1}},
           "linear": {"encoder": "event_local", "attention": {"chunk": 4}}}


def make_inputs(seed=0, lengths=LENGTHS):
    rng = np.random.default_rng(seed)
    valid = np.arange(L)[None] < lengths[:, None]
    f = lambda: np.where(valid, rng.random((B, L)), 0).astype(np.float32)  # noqa: E731
    days = np.where(valid, -np.sort(rng.random((B, L)) * 60, axis=1)[:, ::-1], 0)
    return {"item": np.where(valid, rng.integers(1, V + 1, (B, L)), 0).astype(np.int32),
            "event_type": valid.astype(np.int32), "time": days.astype(np.float32),
            "gap": f(), "age": f(), "value": f(), "quantity": f(),
            "weekday": rng.integers(0, 7, (B, L)).astype(np.int32),
            "hour": rng.integers(0, 24, (B, L)).astype(np.int32), "lengths": lengths}


def make_model(name, head="softmax", n_layers=1, **extra):
    cfg = {"name": name, "item_head": "softmax", "history_memory": 0, "churn_pool": "last", "d_model": 16, "n_layers": n_layers, "n_heads": 2, "max_len": L,
           "dropout": 0.0, "item_head": head, **OPTIONS.get(name, {}), **extra}
    return build_model(cfg, n_items=V, seed=0)


INDEX = np.array([[3, 11], [0, 4], [0, 0]], np.int32)
TARGET = np.array([[5, 9], [7, 1], [0, 0]], np.int32)


@nnx.jit
def outputs(model, x):
    h = model.hidden(x)
    lp = model.target_log_prob(h, x, INDEX, TARGET)
    return h, lp, model.next_item_scores(x), model.churn_logit(x)


def test_every_family_is_registered():
    assert set(FAMILY_NAMES) <= set(FAMILIES)
    with pytest.raises(KeyError, match="registered"):
        make_model("nope")


@pytest.mark.parametrize("head", ["softmax", "copy"])
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_shapes_finite_padding_and_causal(name, head):
    m, x = make_model(name, head), make_inputs()
    h, lp, scores, churn = outputs(m, x)
    assert h.shape == (B, L, 16) and lp.shape == (B, 2)
    assert scores.shape == (B, V + 1) and churn.shape == (B,)
    for a in (h, lp, scores, churn):
        assert np.all(np.isfinite(np.asarray(a))), name  # incl. the fully padded row
    # causal: changing events after position 5 (same lengths) leaves positions <= 5 alone
    y = dict(x)
    y["item"] = x["item"].copy()
    y["item"][0, 6:] = (x["item"][0, 6:] % V) + 1
    y["value"] = x["value"].copy()
    y["value"][0, 6:] += 3.0
    h2 = outputs(m, y)[0]
    np.testing.assert_allclose(h2[0, :6], h[0, :6], rtol=1e-5, atol=1e-5)
    assert not np.allclose(h2[0, 6:], h[0, 6:])


def test_time_decay_slopes_are_spread_learnable_and_inspectable():
    m, x = make_model("time_decay", n_layers=2, n_heads=4), make_inputs(1)
    slopes = decay_slopes(m)
    assert set(slopes) == {"layer0", "layer1"}
    s = slopes["layer0"]
    np.testing.assert_allclose([s[0], s[-1]], [1.0, 1 / 365], rtol=1e-4)
    assert np.all(np.diff(s) < 0)  # geometric spread: last head looks furthest back
    horizons = decay_horizons(m)["layer0"]
    assert horizons[0] < 14 and horizons[-1] > 365  # ~last week ... beyond a year

    def loss(model):
        h = model.hidden(x)
        return -jnp.mean(model.target_log_prob(h, x, INDEX, TARGET))

    grads = nnx.jit(nnx.grad(loss))(m)
    for i in range(2):
        g = np.asarray(grads["backbone"]["blocks"][i]["attention"]["raw_slopes"][...])
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0


def test_sparse_equals_vanilla_when_the_window_covers_the_history():
    x = make_inputs(2)
    wide = make_model("sparse", attention={"window": L, "num_global": 0})
    vanilla = make_model("vanilla")
    np.testing.assert_allclose(outputs(wide, x)[0], outputs(vanilla, x)[0], rtol=1e-5, atol=1e-5)
    narrow = make_model("sparse", attention={"window": 2, "num_global": 0})
    assert not np.allclose(outputs(narrow, x)[0][0], outputs(vanilla, x)[0][0], atol=1e-4)


@pytest.mark.parametrize("name", ["linear", "lstm"])
def test_streaming_scores_equal_parallel_scores_at_every_position(name):
    m = make_model(name, n_layers=2, encoder="event_local")
    x = make_inputs(3)
    h = outputs(m, x)[0]
    parallel = np.asarray(m.catalogue_logits(h))  # [B, L, V + 1]
    churn = np.asarray(m.churn(h))
    churn_at_cutoff = np.asarray(nnx.jit(lambda m, x: m.churn_logit(x))(m, x))

    @nnx.jit
    def step(model, state, event):
        return model.step(state, event)

    state = m.init_state(B)
    for t in range(L):
        event = {k: jnp.asarray(x[k][:, t]) for k in x if k not in ("lengths", "time")}
        event["valid"] = jnp.asarray(t < x["lengths"])
        state, out = step(m, state, event)
        ok = t < x["lengths"]
        np.testing.assert_allclose(np.asarray(out.item_scores)[ok], parallel[ok, t], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(out.churn_logit)[ok], churn[ok, t], rtol=1e-4, atol=1e-4)
        last = t == x["lengths"] - 1  # the cutoff: the parallel churn_logit reads this state
        np.testing.assert_allclose(np.asarray(out.churn_logit)[last], churn_at_cutoff[last],
                                   rtol=1e-4, atol=1e-4)
    if name == "linear":
        gammas = forgetting_factors(m)["layer0"]
        assert np.all((gammas > 0) & (gammas < 1))


def test_softmax_families_refuse_to_stream_with_a_reason():
    with pytest.raises(NotImplementedError, match="model=linear"):
        make_model("vanilla", encoder="event_local").init_state(2)
    with pytest.raises(ValueError, match="event_local"):
        make_model("lstm").init_state(2)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_a_few_optimiser_steps_lower_the_loss(name):
    m, x = make_model(name, head="copy" if name == "time_decay" else "softmax"), make_inputs(4)
    opt = nnx.Optimizer(m, optax.adam(1e-2), wrt=nnx.Param)

    def loss_fn(model):
        h = model.hidden(x)
        logp = model.target_log_prob(h, x, INDEX, TARGET)
        mask = TARGET > 0
        return -jnp.sum(jnp.where(mask, logp, 0.0)) / mask.sum()

    @nnx.jit
    def train_step(model, opt):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    losses = [float(train_step(m, opt)) for _ in range(6)]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.1, losses
