"""Model heads: the copy mixture is a distribution and training/scoring agree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.models import build_model

B, L, V = 3, 12, 40


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([12, 5, 1], np.int32)
    valid = np.arange(L)[None] < lengths[:, None]
    item = np.where(valid, rng.integers(1, V + 1, (B, L)), 0).astype(np.int32)
    item[1, 2] = 0  # a no-item event (e.g. a campaign contact) inside a history
    f = lambda: np.where(valid, rng.random((B, L)), 0).astype(np.float32)
    return {"item": item, "event_type": np.where(valid, 1, 0).astype(np.int32), "time": -f(),
            "gap": f(), "age": f(), "value": f(), "quantity": f(),
            "weekday": np.zeros((B, L), np.int32), "hour": np.zeros((B, L), np.int32),
            "lengths": lengths}


def model(head):
    cfg = {"name": "vanilla", "item_head": "softmax", "history_memory": 0, "churn_pool": "last", "d_model": 16, "n_layers": 1, "n_heads": 2, "max_len": L,
           "dropout": 0.0, "item_head": head}
    return build_model(cfg, n_items=V, seed=0)


@pytest.mark.parametrize("head", ["softmax", "copy"])
def test_scores_are_a_distribution_over_real_items(head):
    m, x = model(head), inputs()
    s = m.next_item_scores(x)
    assert s.shape == (B, V + 1)
    p = jax.nn.softmax(s, axis=-1)
    assert float(p[:, 0].max()) < 1e-12  # "no item" is never predicted
    if head == "copy":  # copy scores are log-probabilities already
        np.testing.assert_allclose(np.exp(np.asarray(s)).sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("head", ["softmax", "copy"])
def test_training_log_prob_matches_scoring_at_last_position(head):
    m, x = model(head), inputs(1)
    h = m.hidden(x)
    last = (x["lengths"] - 1)[:, None]
    targets = np.array([[3], [x["item"][1, 0]], [7]], np.int32)  # row 1: an item in its history
    lp = m.target_log_prob(h, x, jnp.asarray(last), jnp.asarray(targets))[:, 0]
    scores = jax.nn.log_softmax(m.next_item_scores(x), axis=-1)
    np.testing.assert_allclose(lp, scores[np.arange(B), targets[:, 0]], rtol=1e-4, atol=1e-5)


def test_copy_head_boosts_items_in_the_history():
    m, x = model("copy"), inputs(2)
    s = np.asarray(m.next_item_scores(x))
    row = 0
    seen = set(x["item"][row][: x["lengths"][row]].tolist()) - {0}
    unseen = sorted(set(range(1, V + 1)) - seen)
    # at initialisation the pointer puts mass only on history items
    assert s[row, sorted(seen)].min() > s[row, unseen].max()
