"""The training recipe (docs/models.md): windows, features, schedule, decay groups,
catalogue bias, rolling churn cut-offs. Each test fails on the v0.1 recipe."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hydra import compose, initialize_config_dir

from attnlab.data.batching import make_batch, window_ends
from attnlab.data.pipeline import load_sequences
from attnlab.data.splits import churn_split, next_item_split, to_duration_seconds
from attnlab.models import build_model
from attnlab.train.loop import train_and_evaluate
from attnlab.train.optim import TrainerConfig, decay_mask, lr_schedule, make_optimizer
from attnlab.train.tasks import ChurnTask, NextItemTask
from tests.train.test_train import CONFIGS

TINY_DATA = {"n_customers": 120, "n_items": 60}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return load_sequences("synthetic", TINY_DATA, cache_dir=str(tmp_path_factory.mktemp("c")), progress=False)


def _task(**cfg):
    return NextItemTask({"name": "next_item", "windows_per_customer": 4, **cfg})


# ---------------------------------------------------------------------------- windows


def test_every_window_ends_on_a_trained_slot_like_the_test_query(store):
    split = next_item_split(store, seed=0)
    task = _task()
    task.prepare(store, split)
    cust, ends = task.train_windows(store, split, max_len=16, epoch=0, seed=0)
    b = make_batch(store, customers=cust, ends=ends, cutoffs=None, max_len=16, targets=task._targets)
    last = b.targets[np.arange(len(cust)), b.lengths - 1]
    assert (last > 0).all()                      # the test query's slot is trained in every window
    basket = np.asarray(store.basket)
    # and, like a test history, the window ends at a basket boundary (its last event ends a basket)
    nxt_same_customer = ends < np.asarray(store.offsets)[cust + 1]
    assert (basket[ends[nxt_same_customer]] != basket[ends[nxt_same_customer] - 1]).all()
    assert (ends <= split.train_end[cust]).all()


def test_latest_windows_never_train_the_last_slot(store):
    """v0.1's windows (kept as window_ends=latest for the ablation): the newest window ends
    at train_end, whose last basket has no target."""
    split = next_item_split(store, seed=0)
    task = _task(window_ends="latest", windows_per_customer=1)
    task.prepare(store, split)
    cust, ends = task.train_windows(store, split, max_len=16)
    b = make_batch(store, customers=cust, ends=ends, cutoffs=None, max_len=16, targets=task._targets)
    assert (b.targets[np.arange(len(cust)), b.lengths - 1] == 0).all()


def test_window_ends_are_reseeded_per_pass_and_reproducible(store):
    split = next_item_split(store, seed=0)
    task = _task(windows_per_customer=2)
    task.prepare(store, split)
    a = task.train_windows(store, split, max_len=16, epoch=0, seed=0)
    b = task.train_windows(store, split, max_len=16, epoch=0, seed=0)
    c = task.train_windows(store, split, max_len=16, epoch=1, seed=0)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(np.sort(a[1]), np.sort(c[1]))
    # at most 2 distinct ends per customer, all candidates
    ends, off = window_ends(store, task._targets)
    for cu in np.unique(a[0]):
        mine = a[1][a[0] == cu]
        assert len(mine) == len(set(mine)) <= 2
        assert set(mine) <= set(ends[off[cu]:off[cu + 1]])


def test_every_position_with_a_target_is_trained(store):
    split = next_item_split(store, seed=0)
    task = _task()
    task.prepare(store, split)
    inputs, targets = next(task.train_batches(store, split, max_len=16, batch_size=8, epoch=0, seed=0))
    assert targets["index"].shape == (8, 16)
    item = targets["item"]
    # every valid position keeps its target (no sampling), padding has none
    valid = np.arange(16)[None, :] < inputs["lengths"][:, None]
    assert (item[~valid] == 0).all()
    assert (item[valid] > 0).mean() > 0.5


def test_basket_targets_train_each_window_end_on_its_whole_next_basket(store):
    """task.targets: basket: a batch's pairs are exactly (the last slot of each basket in the
    window, every item of its next purchase basket before train_end), the window's last
    slot among them, as the next_basket test query is scored against a whole basket."""
    split = next_item_split(store, seed=0)
    task = _task(targets="basket", loss_positions=64)   # 64 pairs per row: none dropped here
    task.prepare(store, split)
    nxt, start, size = task._groups
    cust, ends = task.train_windows(store, split, max_len=16, epoch=0, seed=0)
    ref = make_batch(store, customers=cust, ends=ends, cutoffs=None, max_len=16, targets=nxt)
    inputs, targets = next(task.train_batches(store, split, max_len=16, batch_size=len(cust), epoch=0, seed=0))
    assert task.dropped_pairs == 0
    item, train_end = np.asarray(store.item), np.asarray(split.train_end)
    offsets = np.asarray(store.offsets)
    def expected(w):
        out = []
        for p in range(ref.lengths[w]):
            g = nxt[ref.index[w, p]] - 1
            if g >= 0:
                assert start[g] + size[g] <= train_end[cust[w]] <= offsets[cust[w] + 1]
                out += [(p, int(t)) for t in item[start[g]:start[g] + size[g]]]
        assert any(p == ref.lengths[w] - 1 for p, _ in out)          # the test query's slot is trained
        return sorted(out)

    for r in range(len(cust)):
        got = targets["item"][r] > 0
        pairs = sorted(zip(targets["index"][r][got].tolist(), targets["item"][r][got].tolist()))
        # the window this row holds (a one-event window may look like another: any of them)
        same = np.flatnonzero((ref.item == inputs["item"][r]).all(1) & (ref.time == inputs["time"][r]).all(1))
        assert any(pairs == expected(w) for w in same)
    counts = np.bincount(np.concatenate([item[start[g]:start[g] + size[g]] for g in nxt[nxt > 0] - 1]),
                         minlength=store.n_items + 1)
    assert np.array_equal(task.target_counts, counts)


def test_basket_targets_at_the_default_width_keep_or_count_every_pair(store):
    """At the default width (the batch's length) a short window holds more pairs than slots:
    over a pass, kept + dropped pairs equal every (basket end, next-basket item) pair."""
    split = next_item_split(store, seed=0)
    task = _task(targets="basket")
    task.prepare(store, split)
    nxt, start, size = task._groups
    cust, ends = task.train_windows(store, split, max_len=4, epoch=0, seed=0)
    ref = make_batch(store, customers=cust, ends=ends, cutoffs=None, max_len=4, targets=nxt)
    every = int(size[ref.targets[ref.targets > 0] - 1].sum())
    kept = sum(int((t["item"] > 0).sum())
               for _, t in task.train_batches(store, split, max_len=4, batch_size=8, epoch=0, seed=0))
    assert task.dropped_pairs > 0 and kept + task.dropped_pairs == every


# ---------------------------------------------------------------------------- features


@pytest.mark.parametrize("encoder,leaks", [("causal", False), ("cutoff_relative", True)])
def test_a_positions_state_does_not_depend_on_later_events(store, encoder, leaks):
    """A trained inner query must look like the test query: its hidden state may not
    depend on anything after it (cutoff-relative ages do: they measure to the window end)."""
    model = build_model({"name": "vanilla", "item_head": "softmax", "history_memory": 0, "churn_pool": "last", "d_model": 16, "n_layers": 1, "n_heads": 2, "max_len": 16,
                         "dropout": 0.0, "item_head": "softmax", "encoder": encoder}, n_items=store.n_items, seed=0)
    c = np.flatnonzero(np.asarray(store.lengths) >= 16)[:4]
    ends = np.asarray(store.offsets)[c] + 16
    full = make_batch(store, customers=c, ends=ends, cutoffs=None, max_len=16)
    short = make_batch(store, customers=c, ends=ends - 6, cutoffs=None, max_len=16)
    h_full = model.hidden(full.model_inputs())[:, :10]
    h_short = model.hidden(short.model_inputs())[:, :10]
    same = np.allclose(np.asarray(h_full), np.asarray(h_short), atol=1e-5)
    assert same != leaks


def test_continuous_features_start_at_the_embeddings_scale():
    def ratio(std):
        cfg = {"name": "vanilla", "item_head": "softmax", "history_memory": 0, "churn_pool": "last", "d_model": 32, "n_layers": 1, "n_heads": 2, "max_len": 8, "dropout": 0.0,
               "continuous_std": std}
        m = build_model(cfg, n_items=50, seed=0)
        feats = jnp.asarray([[1.5, 3.0, 2.0, 0.7]])  # typical gap / age / value / quantity magnitudes
        cont = feats @ m.encoder.continuous.kernel[...]
        return float(jnp.std(cont) / jnp.std(m.encoder.item.embedding[...]))

    assert ratio(0.02) < 5.0
    assert ratio(None) > 30.0   # the fan-in default drowns the item identity


# ------------------------------------------------------------------ optimiser pieces


def test_weight_decay_groups_follow_the_config():
    m = build_model({"name": "time_decay", "item_head": "softmax", "history_memory": 0, "churn_pool": "last", "d_model": 16, "n_layers": 1, "n_heads": 2, "max_len": 8,
                     "dropout": 0.0, "item_head": "copy"}, n_items=20, seed=0)
    params = nnx.state(m, nnx.Param)
    flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(decay_mask(params))}
    decayed = {k for k, v in flat.items() if v}
    assert decayed and all("kernel" in k for k in decayed)
    for frag in ("embedding", "['bias']", "scale", "raw_slopes"):
        assert not any(frag in k for k in decayed), frag
    assert any("['item']['embedding']" in k for k in flat)
    assert all(jax.tree.leaves(decay_mask(params, decay="all")))


def test_weight_decay_spares_embeddings_in_an_update():
    m = build_model({"name": "vanilla", "item_head": "softmax", "history_memory": 0, "churn_pool": "last", "d_model": 8, "n_layers": 1, "n_heads": 2, "max_len": 4,
                     "dropout": 0.0}, n_items=5, seed=0)
    emb0 = np.asarray(m.encoder.item.embedding[...]).copy()
    ker0 = np.asarray(m.encoder.continuous.kernel[...]).copy()
    opt = nnx.Optimizer(m, make_optimizer({"lr": 0.1, "weight_decay": 0.5, "warmup": 0.0, "schedule": "constant",
                                           "max_steps": 10}), wrt=nnx.Param)
    zeros = jax.tree.map(jnp.zeros_like, nnx.state(m, nnx.Param))
    opt.update(m, zeros)   # zero gradient: only decay moves parameters
    np.testing.assert_array_equal(np.asarray(m.encoder.item.embedding[...]), emb0)
    np.testing.assert_allclose(np.asarray(m.encoder.continuous.kernel[...]), ker0 * (1 - 0.1 * 0.5), rtol=1e-5)


def test_schedule_warms_up_within_five_percent_then_decays():
    cfg = TrainerConfig(lr=1e-3, warmup=0.05, schedule="cosine", max_steps=1000)
    s = lr_schedule(cfg, 1000)
    lrs = np.array([float(s(i)) for i in range(0, 1001, 10)])
    peak = int(np.argmax(lrs)) * 10
    assert peak <= 50 and np.isclose(lrs.max(), 1e-3)
    assert lrs[-1] < 1e-6 and np.all(np.diff(lrs[6:]) <= 1e-12)


@pytest.mark.parametrize("bad,match", [({"lr": -1}, "trainer.lr"), ({"max_epoch": 1}, r"unknown key\(s\) \['trainer.max_epoch'\]"),
                                       ({"batch_size": 0}, "trainer.batch_size"),
                                       ({"warmup": 0.5, "schedule": "cosin"}, "trainer.schedule"),
                                       ({"max_steps": None, "max_epochs": None}, "both null"),
                                       ({"stop_at": float("nan")}, "trainer.stop_at"),
                                       ({"stop_at": float("inf")}, "trainer.stop_at")])
def test_trainer_config_rejects_nonsense(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainerConfig.from_dict(bad)


def tiny(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=[
            "debug=tiny", f"paths.output_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}",
            *overrides])


def test_catalogue_bias_learns_and_keeps_log_popularity(tmp_path, store):
    """With init_bias=log_popularity the bias starts at log-popularity; after training it
    still tracks it (rank correlation, recomputed here from the best checkpoint and filed
    in the result's training signal)."""
    from scipy.stats import spearmanr

    from attnlab.train.checkpoint import Checkpoints

    from attnlab.data.pipeline import store_from_config

    cfg = tiny(tmp_path, "trainer.max_steps=60", *(f"data.options.{k}={v}" for k, v in TINY_DATA.items()))
    result = train_and_evaluate(cfg)
    store = store_from_config(cfg.data, cache_dir=tmp_path / "cache", progress=False)  # the run's data
    model = build_model(dict(cfg.model), n_items=store.n_items, seed=0)
    opt = nnx.Optimizer(model, make_optimizer(dict(cfg.trainer)), wrt=nnx.Param)
    Checkpoints(tmp_path / "run" / "checkpoints").restore("best", (model, opt))
    task = NextItemTask(dict(cfg.task))
    task.prepare(store, next_item_split(store, seed=0))
    counts = task.target_counts[1:]
    bias = np.asarray(model.catalogue.bias[...])[1:]
    seen = counts > 0
    rho = spearmanr(bias[seen], np.log(counts[seen])).statistic
    assert rho > 0.9, rho
    signal = result.provenance["training_signal"]
    assert signal["bias_popularity_spearman"] == pytest.approx(rho, abs=1e-6)
    assert signal["steps"] == result.provenance["steps_trained"] > 0
    assert signal["targets"] > 0 and signal["targets_per_step"] > 16   # more than one target per row
    assert signal["dropped_target_pairs"] == 0    # spread targets: one per position, none dropped


# ------------------------------------------------------------------------------ churn


def test_rolling_churn_cutoffs_give_many_labels_before_the_valid_cutoff(store):
    h = "2W"
    one = churn_split(store, horizon=h)
    roll = churn_split(store, horizon=h, train_stride="1W")
    vc = int(one.valid.cutoff[0])
    assert len(roll.train) > 3 * len(one.train)
    # every training label window ends by the validation cut-off
    assert (roll.train.cutoff + to_duration_seconds(h) <= vc).all()
    assert (roll.train.end <= roll.train_end[roll.train.customer]).all()
    # the single-cutoff examples are among them, with the same labels
    key = lambda ex: set(zip(ex.customer.tolist(), ex.cutoff.tolist(), ex.label.tolist()))
    assert key(one.train) <= key(roll.train)
    np.testing.assert_array_equal(roll.valid.label, one.valid.label)
    np.testing.assert_array_equal(roll.test.label, one.test.label)

    task = ChurnTask({"name": "churn", "horizon": h, "train_stride": "1W", "windows_per_customer": 3})
    task.prepare(store, roll)
    rows0 = task.train_rows(roll, epoch=0, seed=0)
    rows1 = task.train_rows(roll, epoch=1, seed=0)
    assert np.bincount(roll.train.customer[rows0]).max() <= 3
    assert not np.array_equal(rows0, rows1)


def test_weighted_pick_per_group_follows_the_weights_and_keeps_the_uniform_draws():
    from attnlab.train.tasks.sampling import pick_per_group
    off = np.array([0, 5, 9, 10])
    w = np.array([1, 2, 4, 8, 16, 1, 1, 1, 1, 3], float)
    first = np.zeros(10)
    for e in range(6000):
        picked = pick_per_group(off, 2, np.random.default_rng([0, e, 2]), np.log(w))
        assert np.array_equal(np.bincount(np.repeat([0, 1, 2], [2, 2, 1]), minlength=3),
                              np.bincount(np.searchsorted(off, picked, side="right") - 1, minlength=3))
        assert len(set(picked.tolist())) == len(picked)        # distinct within a group
        first[picked[[0, 2]]] += 1                            # each group's first pick
    # the first pick of group 0 is member i with probability w_i / sum(w)
    np.testing.assert_allclose(first[:5] / 6000, w[:5] / w[:5].sum(), atol=0.02)
    np.testing.assert_allclose(first[5:9] / 6000, 0.25, atol=0.02)
    # weights thousands of halvings apart (exp underflows to 0) still order: the heaviest wins
    tiny = -np.log(2.0) * np.array([3000.0, 0.0, 5000.0, 4000.0, 2000.0, 9000, 9000, 0, 9000, 0])
    for e in range(50):
        top = pick_per_group(off, 1, np.random.default_rng(e), tiny)
        assert top[0] == 1 and top[1] == 7
    # without weights: exactly the draws of the version before weights (uniform keys, a
    # lexsort by group, the first `per` of each group), so earlier runs reproduce
    for per in (1, 2, 3):
        keys = np.random.default_rng(7).random(10)
        grp = np.repeat(np.arange(3), np.diff(off))
        order = np.lexsort((keys, grp))
        old = order[np.arange(10) - np.repeat(off[:-1], np.diff(off)) < per]
        np.testing.assert_array_equal(pick_per_group(off, per, np.random.default_rng(7)), old)
    with pytest.raises(ValueError, match="finite numbers"):
        pick_per_group(off, 1, np.random.default_rng(0), np.r_[np.log(w[:-1]), -np.inf])


def test_recent_half_life_draws_the_latest_cutoffs_more_often(store):
    h = "2W"
    roll = churn_split(store, horizon=h, train_stride="1W")
    base = {"name": "churn", "horizon": h, "train_stride": "1W", "windows_per_customer": 1}
    uniform, recent = ChurnTask(base), ChurnTask({**base, "recent_half_life": "1W"})
    for t in (uniform, recent):
        t.prepare(store, roll)
    latest = roll.train.cutoff.max()
    age = lambda t: np.concatenate([(latest - roll.train.cutoff[t.train_rows(roll, epoch=e, seed=0)])
                                    for e in range(20)]) / to_duration_seconds("1W")
    a_uniform, a_recent = age(uniform), age(recent)
    assert np.median(a_recent) < 0.5 * np.median(a_uniform)
    # a customer with cut-offs at ages 0, 1, 2, ... weeks draws age 0 about half the time
    assert 0.35 < np.mean(a_recent == 0) < 0.65
    assert np.mean(a_uniform == 0) < 0.35
    assert uniform.cutoff_log_weights(roll.train.cutoff) is None


@pytest.mark.parametrize("bad, match", [
    ({"recent_half_life": "8W", "windows_per_customer": 0}, "needs task.train_stride"),
    ({"recent_half_life": "8W", "train_stride": None}, "needs task.train_stride"),
    ({"recent_half_life": "-2W"}, "task.recent_half_life='-2W': duration must be positive"),
    ({"recent_half_life": "soon"}, "task.recent_half_life"),
])
def test_recent_half_life_refuses_settings_where_it_does_nothing(bad, match):
    from attnlab.train.task_config import ChurnConfig
    from attnlab.typed_config import ConfigError
    with pytest.raises(ConfigError, match=match):
        ChurnConfig.from_dict({"name": "churn", **bad})


def test_attention_pooled_churn_head_learns_a_signal_far_back():
    """Label = whether the OLDEST event of a 48-event window is item 1: the head that
    attends over the window learns it (AUC > 0.9 on fresh rows)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    n, L = 512, 48

    def data(k):
        item = rng.integers(2, 30, (k, L)).astype(np.int32)
        label = rng.random(k) < 0.5
        item[:, 0] = np.where(label, 1, item[:, 0])
        z = np.zeros((k, L), np.float32)
        inputs = {"item": item, "event_type": np.ones((k, L), np.int32), "time": z, "gap": z, "age": z,
                  "value": z, "quantity": z, "weekday": np.zeros((k, L), np.int32),
                  "hour": np.zeros((k, L), np.int32), "lengths": np.full(k, L, np.int32)}
        return inputs, label.astype(np.float32)

    train, test = data(n), data(256)

    def fit(pool):
        m = build_model({"name": "vanilla", "item_head": "softmax", "history_memory": 0, "churn_pool": "last", "d_model": 16, "n_layers": 1, "n_heads": 2, "max_len": L,
                         "dropout": 0.0, "churn_pool": pool}, n_items=30, seed=0)
        opt = nnx.Optimizer(m, make_optimizer({"lr": 3e-3, "max_steps": 300, "warmup": 0.0}), wrt=nnx.Param)

        @nnx.jit
        def step(m, opt, x, y):
            def loss(m):
                logit = m.churn_logit(x)
                return jnp.mean(jnp.logaddexp(0.0, logit) - y * logit)

            v, g = nnx.value_and_grad(loss)(m)
            opt.update(m, g)
            return v

        for i in range(300):
            sel = rng.integers(0, n, 64)
            step(m, opt, {k: v[sel] for k, v in train[0].items()}, train[1][sel])
        return roc_auc_score(test[1], np.asarray(m.churn_logit(test[0])))

    assert fit("attention") > 0.9


# ------------------------------------------------------------------- history memory


def test_history_memory_counts_only_purchases_before_the_window():
    from attnlab.data.batching import history_memory
    from tests.train.test_batching import C, P, store_from_rows

    day = 86400
    s = store_from_rows([(0, 1 * day, 10, 1, P), (0, 1 * day, 10, 2, P), (0, 2 * day, 11, 1, P),
                         (0, 3 * day, -1, 3, C), (0, 4 * day, 12, 3, P), (0, 5 * day, 13, 2, P),
                         (0, 6 * day, 14, 1, P)])
    item, count, last = history_memory(s, np.array([0]), np.array([6]), k=3)
    # 1 and 2 bought twice (2 more recently), 3 once (the campaign event with item 3 is not a purchase)
    assert item.tolist() == [[2, 1, 3]]
    np.testing.assert_allclose(count, np.log1p([[2, 2, 1]]))
    assert last.tolist() == [[5 * day, 2 * day, 4 * day]]
    # a window over the whole history leaves nothing to remember; k caps the slots
    assert (history_memory(s, np.array([0]), np.array([0]), k=3)[0] == 0).all()
    assert history_memory(s, np.array([0]), np.array([6]), k=1)[0].tolist() == [[2]]


def test_history_memory_never_reads_the_window_or_later(store):
    c = np.flatnonzero(np.asarray(store.lengths) >= 40)[:3]
    ends = np.asarray(store.offsets)[c] + 40
    a = make_batch(store, customers=c, ends=ends, cutoffs=None, max_len=16, memory=8)
    item = np.asarray(store.item).copy()
    for cu, e in zip(c, ends):
        item[e - 16:np.asarray(store.offsets)[cu + 1]] = 1   # the window and the future rewritten
    changed = dataclasses.replace(store, item=item)
    b = make_batch(changed, customers=c, ends=ends, cutoffs=None, max_len=16, memory=8)
    np.testing.assert_array_equal(a.mem_item, b.mem_item)
    np.testing.assert_array_equal(a.mem_count, b.mem_count)
    filled = a.mem_item > 0
    assert filled.any()
    assert (a.mem_time <= a.time[:, :1])[filled].all()   # no later than the window's first event


# ------------------------------------------------------------------ history summary


@pytest.mark.parametrize("form", ["counts", "rates"])
def test_history_summary_measures_frequency_tenure_recency_before_the_end(form):
    from attnlab.data.batching import SUMMARY_FEATURES, SUMMARY_FORMS, history_summary
    from tests.train.test_batching import C, P, store_from_rows

    day = 86400
    s = store_from_rows([(0, 1 * day, 10, 1, P), (0, 1 * day + 60, 10, 2, P), (0, 2 * day, 11, 1, P),
                         (0, 3 * day, -1, 0, C), (0, 5 * day, 12, 3, P), (0, 9 * day, 13, 2, P)])
    got = history_summary(s, np.array([0, 0, 0]), np.array([5, 3, 0]), np.array([6, 4, 6]) * day,
                          firsts=np.array([2, 3, 0]), form=form)
    # purchase baskets: 10, 11, 12 (the campaign on day 3 is not a purchase); value 1 per
    # purchase event: 4 events over 3 baskets, 3 over 2
    counts = {"events": [5, 3, 0], "events_before_window": [2, 3, 0], "frequency": [3, 2, 0],
              "tenure_days": [5, 3, 0], "recency_days": [1, 2, 0], "monetary": [4 / 3, 3 / 2, 0]}
    # rates: tenure floored at 1 day; days per basket = tenure / baskets (5/3, 3/2, 1)
    rates = {"events_per_30d": [30, 30, 0], "overdue": [1 / (5 / 3), 2 / 1.5, 0], "baskets_per_30d": [18, 20, 0],
             "days_per_basket": [5 / 3, 1.5, 1], "recency_days": [1, 2, 0], "monetary": [4 / 3, 3 / 2, 0]}
    want = counts if form == "counts" else rates
    assert got.shape == (3, len(SUMMARY_FEATURES)) and tuple(want) == SUMMARY_FORMS[form]
    for j, name in enumerate(SUMMARY_FORMS[form]):
        np.testing.assert_allclose(got[:, j], np.log1p(want[name]), rtol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match="form must be one of"):
        history_summary(s, np.array([0]), np.array([5]), np.array([6 * day]), form="count")


def test_rates_summary_does_not_grow_with_the_cutoff():
    """A customer who buys one basket a week looks the same at every cut-off in the rates
    form (the test cut-off is no further out of the training range than any other);
    in the counts form events, baskets and tenure keep growing."""
    from attnlab.data.batching import SUMMARY_FORMS, history_summary
    from tests.train.test_batching import P, store_from_rows

    day = 86400
    s = store_from_rows([(0, 7 * k * day, 10 + k % 3, 1, P) for k in range(40)])
    ends = np.array([10, 20, 40])                   # cut-offs one day after the 10th, 20th, 40th basket
    ref = (7 * (ends - 1) + 1) * day
    rates = history_summary(s, np.zeros(3, np.int64), ends, ref, form="rates")
    counts = history_summary(s, np.zeros(3, np.int64), ends, ref, form="counts")
    moving = [SUMMARY_FORMS["rates"].index(k) for k in ("events_per_30d", "baskets_per_30d", "days_per_basket")]
    assert np.ptp(rates[:, moving], axis=0).max() < 0.12     # ~ n/(n-1): 10 baskets over 64 days vs 40 over 274
    np.testing.assert_allclose(rates[:, SUMMARY_FORMS["rates"].index("overdue")], rates[0, 1], rtol=0.2)
    grown = [SUMMARY_FORMS["counts"].index(k) for k in ("events", "frequency", "tenure_days")]
    assert (np.diff(counts[:, grown], axis=0) > 0.6).all()  # log1p(20) - log1p(10) = 0.647


def test_history_summary_counts_purchases_without_item_ids():
    """CDNOW has no product ids (every item is 0): its purchases still count, as they
    do for the RFM baselines (the summary's RFM columns are theirs)."""
    from attnlab.data.batching import history_summary
    from attnlab.data.rfm import rfm_from_ranges
    from tests.train.test_batching import P, store_from_rows

    day = 86400
    s = store_from_rows([(0, 1 * day, 1, 0, P), (0, 3 * day, 2, 0, P), (0, 3 * day + 5, 2, 0, P)])
    got = history_summary(s, np.array([0]), np.array([3]), np.array([4 * day]), form="counts")
    np.testing.assert_allclose(got[0, 2:], np.log1p([2, 3, 1 - 5 / day, 1.5]), rtol=1e-6)   # baskets, tenure, recency, value
    rfm = rfm_from_ranges(s, np.array([0]), np.array([3]), np.array([4 * day]))
    np.testing.assert_allclose(got[0, 2:], np.log1p(rfm[["frequency", "tenure_days", "recency_days",
                                                         "monetary"]].to_numpy()[0]), rtol=1e-6)


def _after_each_end(store, ex):
    """``bool[n_events]``: the events of each example's customer from its end on (none empty)."""
    future = np.zeros(store.n_events, bool)
    for c, e in zip(ex.customer, ex.end):
        future[e:np.asarray(store.offsets)[c + 1]] = True
    assert future.any()
    return future


@pytest.mark.parametrize("form", ["rates", "counts"])
def test_history_summary_never_reads_events_at_or_after_the_end(store, form):
    """Rewriting everything from each example's end on (items, times, types, values)
    leaves its summary unchanged: no label-window leakage."""
    split = churn_split(store, horizon="2W", mode="temporal", train_stride="1W")
    ex = split.test.take(np.arange(min(40, len(split.test))))
    a = make_batch(store, customers=ex.customer, ends=ex.end, cutoffs=ex.cutoff, max_len=8, summary=form)
    future = _after_each_end(store, ex)
    changed = dataclasses.replace(
        store, item=np.where(future, 1, np.asarray(store.item)).astype(np.asarray(store.item).dtype),
        value=np.where(future, 1e6, np.asarray(store.value)).astype(np.float32))
    b = make_batch(changed, customers=ex.customer, ends=ex.end, cutoffs=ex.cutoff, max_len=8, summary=form)
    np.testing.assert_array_equal(a.summary, b.summary)
    if form == "counts":   # a window of 8 events on longer histories: the summary still counts the older ones
        n = ex.end - np.asarray(store.offsets)[ex.customer]
        assert (n > 8).any()
        np.testing.assert_allclose(a.summary[:, 0], np.log1p(n), rtol=1e-6)
        np.testing.assert_allclose(a.summary[:, 1], np.log1p(np.maximum(n - 8, 0)), rtol=1e-6)


def test_churn_head_reads_the_summary_and_refuses_inputs_without_it(store):
    cfg = {"name": "vanilla", "item_head": "softmax", "history_memory": 0, "d_model": 16, "n_layers": 1,
           "n_heads": 2, "max_len": 8, "dropout": 0.0, "encoder": "cutoff_relative", "history_summary": True}
    model = build_model(cfg, n_items=store.n_items, seed=0)
    split = churn_split(store, horizon="2W", mode="temporal")
    ex = split.test.take(np.arange(8))
    x = make_batch(store, customers=ex.customer, ends=ex.end, cutoffs=ex.cutoff, max_len=8,
                   summary=True).model_inputs()
    logit = np.asarray(model.churn_logit(x))
    moved = np.asarray(model.churn_logit({**x, "summary": x["summary"] + 1.0}))
    assert np.abs(logit - moved).min() > 1e-4   # every row's logit depends on its summary
    with pytest.raises(ValueError, match="history_summary"):
        model.churn_logit({k: v for k, v in x.items() if k != "summary"})
    # off (the default), the same inputs give the same logits with or without a summary
    off = build_model({**cfg, "history_summary": False}, n_items=store.n_items, seed=0)
    np.testing.assert_array_equal(np.asarray(off.churn_logit(x)),
                                  np.asarray(off.churn_logit({k: v for k, v in x.items() if k != "summary"})))
    # a stream has no scoring date to measure the summary from
    stream = build_model({**cfg, "name": "linear", "encoder": "event_local", "churn_pool": "last"},
                         n_items=store.n_items, seed=0)
    with pytest.raises(NotImplementedError, match="history_summary"):
        stream.init_state(2)


def test_churn_training_and_scoring_feed_the_summary(tmp_path):
    """The loop builds churn batches with the summary when the model reads it, at
    training and at scoring (a missing one would raise in the head)."""
    result = train_and_evaluate(tiny(tmp_path, "task=churn", "task.horizon=2W", "model.history_summary=true",
                                     "trainer.max_steps=6"))
    assert 0.0 <= result.metrics["model"]["auc"] <= 1.0


def test_churn_refit_trains_fixed_passes_without_validation(tmp_path):
    """task.refit: the validation labels are training labels, so the run needs a pass
    count (an error names it), never validates, keeps its last pass and still scores
    the unchanged test rows; hgb keeps the hyperparameters chosen on the ordinary split."""
    base = ("task=churn", "task.horizon=2W", "trainer.max_steps=40", "trainer.patience=10",
            "task.baselines=[recency_frequency,hgb]")
    with pytest.raises(ValueError, match="trainer.max_epochs"):
        train_and_evaluate(tiny(tmp_path / "a", *base, "task.refit=true", "trainer.max_epochs=null"))
    ordinary = train_and_evaluate(tiny(tmp_path / "b", *base, "trainer.max_epochs=2"))
    refit = train_and_evaluate(tiny(tmp_path / "c", *base, "task.refit=true", "trainer.max_epochs=2"))
    assert [h["epoch"] for h in refit.history] == [1, 2]
    assert not any(k.startswith("valid/") for h in refit.history for k in h) and refit.valid == {}
    assert all(any(k.startswith("valid/") for k in h) for h in ordinary.history)
    rep_o, rep_r = ordinary.provenance["split_report"], refit.provenance["split_report"]
    assert rep_r["refit"] and rep_r["train_cutoff"] == rep_o["valid_cutoff"]
    assert rep_r["train_n_examples"] > rep_o["train_n_examples"]
    assert refit.metrics["model"]["n"] == ordinary.metrics["model"]["n"] > 0
    assert 0.0 <= refit.metrics["model"]["auc"] <= 1.0


def test_refit_baselines_choose_hyperparameters_on_the_ordinary_split(store, monkeypatch):
    import attnlab.baselines.registry as registry
    from attnlab.baselines.gbm import HGBChurn

    grid = {"learning_rate": (0.1, 0.05), "max_leaf_nodes": (4, 31)}
    ordinary = churn_split(store, horizon="2W", train_stride="1W")
    refit = churn_split(store, horizon="2W", train_stride="1W", refit=True)
    chosen = HGBChurn(horizon_days=14, grid=grid, max_iter=20).fit(store, ordinary.train,
                                                                   valid=ordinary.valid).params_
    seen = []

    class Spy(HGBChurn):
        def __init__(self, **kw):
            super().__init__(**{"grid": grid, "max_iter": 20, **kw})
            seen.append(self.grid)

        def fit(self, store, train_examples, *, valid=None):
            seen.append((len(train_examples), None if valid is None else len(valid)))
            return super().fit(store, train_examples, valid=valid)

    monkeypatch.setattr(registry, "_cls", lambda table, name, kind: Spy)
    fitted = registry.churn_baselines(["hgb"], store, refit, horizon_days=14, select=ordinary)
    # chosen on (ordinary.train, ordinary.valid), then one candidate refitted on refit.train
    assert seen == [grid, (len(ordinary.train), len(ordinary.valid)),
                    {k: (v,) for k, v in chosen.items()}, (len(refit.train), None)]
    p = fitted["hgb"].predict(store, refit.test)
    assert p.shape == (len(refit.test),) and np.isfinite(p).all()


def test_copy_head_reaches_items_only_in_the_memory(store):
    cfg = {"name": "vanilla", "item_head": "softmax", "history_memory": 0, "churn_pool": "last", "d_model": 16, "n_layers": 1, "n_heads": 2, "max_len": 8, "dropout": 0.0,
           "item_head": "copy", "history_memory": 8}
    model = build_model(cfg, n_items=store.n_items, seed=0)
    c = np.flatnonzero(np.asarray(store.lengths) >= 40)[:4]
    ends = np.asarray(store.offsets)[c] + 40
    b = make_batch(store, customers=c, ends=ends, cutoffs=None, max_len=8, memory=8)
    x = b.model_inputs()
    scores = np.asarray(model.next_item_scores(x))
    no_mem = build_model({**cfg, "history_memory": 0}, n_items=store.n_items, seed=0)
    base = np.asarray(no_mem.next_item_scores(make_batch(store, customers=c, ends=ends, cutoffs=None,
                                                         max_len=8).model_inputs()))
    for r in range(len(c)):
        only_mem = set(b.mem_item[r][b.mem_item[r] > 0]) - set(b.item[r])
        assert only_mem
        for it in only_mem:   # the memory lifts exactly the items it holds
            assert scores[r, it] > base[r, it] + 0.5
    # the training loss reads the same distribution as scoring at the last slot
    last = (b.lengths - 1)[:, None].astype(np.int32)
    tgt = np.asarray([[sorted(set(b.mem_item[r][b.mem_item[r] > 0]) - set(b.item[r]))[0]] for r in range(len(c))],
                     np.int32)
    lp = np.asarray(model.target_log_prob(model.hidden(x), x, last, tgt))[:, 0]
    np.testing.assert_allclose(lp, scores[np.arange(len(c)), tgt[:, 0]], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="history_memory"):
        model.next_item_scores(make_batch(store, customers=c, ends=ends, cutoffs=None, max_len=8).model_inputs())


def test_trainer_yaml_states_the_typed_defaults():
    """configs/trainer/default.yaml and TrainerConfig may not drift apart."""
    import dataclasses as dc

    from omegaconf import OmegaConf

    yaml = OmegaConf.to_container(OmegaConf.load(CONFIGS / "trainer" / "default.yaml"))
    typed = TrainerConfig().to_dict()  # nested groups (mesh, distributed) as plain mappings
    assert set(yaml) == set(typed) == {f.name for f in dc.fields(TrainerConfig)}
    assert {k: yaml[k] for k in typed} == typed


def test_an_unknown_monitor_fails_with_the_available_metrics(tmp_path):
    with pytest.raises(KeyError, match="task.monitor='ndcg@7' is not a validation metric.*ndcg@10"):
        train_and_evaluate(tiny(tmp_path, "task.monitor=ndcg@7", "trainer.max_steps=2"))


@pytest.mark.parametrize("seed", range(6))
def test_rolling_holdout_cutoffs_stop_where_the_train_group_has_no_history(seed):
    """Only customer 0 buys early: rolling cut-offs before the others' first purchase have
    no train-group example whenever customer 0 is not in the train group (an error before)."""
    from tests.train.test_batching import P, store_from_rows

    day = 86400
    rows = [(0, 1 * day, 1, 1, P)] + [(c, (40 + c) * day, 10 + c, 2, P) for c in range(10)]
    rows += [(c, (70 + c) * day, 100 + c, 3, P) for c in range(0, 10, 2)] + [(9, 120 * day, 200, 4, P)]
    s = store_from_rows(rows)
    split = churn_split(s, cutoff=int(60 * day), horizon="4W", mode="holdout_customers", seed=seed,
                        train_stride="1W")
    assert len(split.train) > 0
    assert (split.train.cutoff <= 60 * day).all()
    trained = set(split.train.customer.tolist())
    assert trained.isdisjoint(split.test.customer.tolist())


def test_history_memory_without_a_copy_head_is_refused():
    """The memory only feeds the copy head: with the softmax head it would be ignored."""
    cfg = {"name": "vanilla", "item_head": "softmax", "history_memory": 0, "churn_pool": "last", "d_model": 16, "n_layers": 1, "n_heads": 2, "max_len": 8, "dropout": 0.0,
           "item_head": "softmax", "history_memory": 8}
    with pytest.raises(ValueError, match="model.history_memory=0"):
        build_model(cfg, n_items=10, seed=0)
    assert build_model({**cfg, "history_memory": 0}, n_items=10, seed=0).history_memory == 0


@pytest.mark.parametrize("form", ["rates", "counts"])
def test_churn_task_builds_the_configured_summary_form(store, form, monkeypatch):
    """``task.summary_form`` reaches every batch the churn task builds (training and scoring)."""
    import attnlab.data.batching as batching
    from attnlab.train.tasks.churn import ChurnTask

    seen = []
    real = batching.history_summary
    monkeypatch.setattr(batching, "history_summary", lambda *a, **k: seen.append(k["form"]) or real(*a, **k))
    task = ChurnTask({"name": "churn", "horizon": "2W", "train_stride": "1W", "summary_form": form})
    split = task.split(store, seed=0)
    task.prepare(store, split)
    inputs, _ = next(iter(task.train_batches(store, split, max_len=8, batch_size=4, epoch=0, seed=0)))
    assert inputs["summary"].shape[1] == len(batching.SUMMARY_FORMS[form]) and seen == [form]
    model = build_model({"name": "vanilla", "item_head": "softmax", "history_memory": 0, "d_model": 16,
                         "n_layers": 1, "n_heads": 2, "max_len": 8, "dropout": 0.0,
                         "encoder": "cutoff_relative", "history_summary": True}, n_items=store.n_items, seed=0)
    seen.clear()
    probs = task.model_scores(model, max_len=8, batch_size=4)(store, split.valid.take(np.arange(6)))
    assert len(probs) == 6 and seen and set(seen) == {form}   # scoring measures the summary the same way


# ------------------------------------------------------------------ BG/NBD columns of the summary


def test_summary_bgnbd_columns_are_the_hgb_baselines_features(store):
    """With BG/NBD parameters the summary appends P(alive), P(no purchase in the horizon)
    and log1p(expected purchases): the same numbers ``hgb`` reads for the same examples."""
    from attnlab.baselines.gbm import FEATURE_NAMES, churn_features, fit_bgnbd_params
    from attnlab.data.batching import BGNBD_FEATURES, SUMMARY_FEATURES, SummarySpec, history_summary

    split = churn_split(store, horizon="2W", mode="temporal", train_stride="1W")
    params = fit_bgnbd_params(store, split.train)
    assert params is not None
    ex = split.test
    spec = SummarySpec(bgnbd=params, horizon_weeks=2.0)
    b = make_batch(store, customers=ex.customer, ends=ex.end, cutoffs=ex.cutoff, max_len=8, summary=spec)
    assert b.summary.shape == (len(ex), len(SUMMARY_FEATURES) + len(BGNBD_FEATURES)) == (len(ex), spec.width)
    plain = make_batch(store, customers=ex.customer, ends=ex.end, cutoffs=ex.cutoff, max_len=8, summary=True)
    np.testing.assert_array_equal(b.summary[:, :len(SUMMARY_FEATURES)], plain.summary)   # the form's columns first
    f = churn_features(store, ex, params=params, horizon_days=14.0)
    col = {n: f[:, FEATURE_NAMES.index(n)] for n in ("p_alive", "p_no_purchase", "expected_purchases")}
    has = ~np.isnan(col["p_alive"])   # hgb leaves a history without a purchase missing (NaN)
    assert has.sum() > 10
    got = b.summary[:, len(SUMMARY_FEATURES):]
    np.testing.assert_allclose(got[has, 0], col["p_alive"][has], rtol=1e-5)
    np.testing.assert_allclose(got[has, 1], col["p_no_purchase"][has], rtol=1e-5)
    np.testing.assert_allclose(got[has, 2], np.log1p(col["expected_purchases"][has]), rtol=1e-5)
    assert 0.0 < got[:, 1].mean() < 1.0 and np.ptp(got[:, 2]) > 0.1    # informative, not constant
    # direct call: the same columns; a spec without a horizon is refused
    direct = history_summary(store, np.asarray(store.offsets)[ex.customer], ex.end, ex.cutoff,
                             bgnbd=params, horizon_weeks=2.0)
    np.testing.assert_allclose(direct, b.summary, rtol=1e-6)
    with pytest.raises(ValueError, match="horizon_weeks"):
        SummarySpec(bgnbd=params)


def test_summary_bgnbd_never_reads_events_at_or_after_the_end(store):
    """Swapping purchases and non-purchases (and their values) among every event from each
    example's end on leaves its BG/NBD columns unchanged (the parameters fixed): no
    label-window leakage through them."""
    from attnlab.baselines.gbm import fit_bgnbd_params
    from attnlab.data.batching import SummarySpec

    split = churn_split(store, horizon="2W", mode="temporal", train_stride="1W")
    spec = SummarySpec(bgnbd=fit_bgnbd_params(store, split.train), horizon_weeks=2.0)
    ex = split.test.take(np.arange(min(40, len(split.test))))
    a = make_batch(store, customers=ex.customer, ends=ex.end, cutoffs=ex.cutoff, max_len=8, summary=spec)
    future = _after_each_end(store, ex)
    changed = _swap_purchases(store, future)
    b = make_batch(changed, customers=ex.customer, ends=ex.end, cutoffs=ex.cutoff, max_len=8, summary=spec)
    np.testing.assert_array_equal(a.summary, b.summary)


def _swap_purchases(store, mask):
    """``store`` with every masked purchase turned into a non-purchase and every masked
    non-purchase into a purchase (values 1e6): any read of a masked event changes the
    purchase days, their times and values the BG/NBD and RFM columns count."""
    from attnlab.data.schema import EventType

    et = np.asarray(store.event_type)
    buy = et == EventType.PURCHASE
    assert (mask & buy).any()
    swapped = np.where(mask, np.where(buy, int(EventType.CAMPAIGN), int(EventType.PURCHASE)), et).astype(et.dtype)
    return dataclasses.replace(store, event_type=swapped,
                               value=np.where(mask, 1e6, np.asarray(store.value)).astype(np.float32))


@pytest.mark.parametrize("mode,refit", [("temporal", False), ("temporal", True), ("holdout_customers", False)])
def test_summary_bgnbd_parameters_never_see_the_scored_windows(store, mode, refit):
    """The BG/NBD parameters the summary uses are fitted on what training may see: swapping
    purchases and non-purchases among every event a scored label window or a scored
    customer holds (temporal: from the validation cut-off on; refit: from the test cut-off
    on; holdout: every event of the validation and test customers, and every event from
    the latest training cut-off on) leaves them unchanged, while the same swap over 30% of
    the other events moves them (the check can fail)."""
    from attnlab.train.tasks.churn import ChurnTask

    task = ChurnTask({"name": "churn", "horizon": "2W", "train_stride": "1W", "summary_bgnbd": True,
                      "mode": mode, "refit": refit})
    split = task.split(store, seed=0)
    task.prepare(store, split)
    before = task.summary.bgnbd
    t = np.asarray(store.time)
    owner = np.repeat(np.arange(len(store.offsets) - 1), np.diff(np.asarray(store.offsets)))
    if mode == "temporal":
        forbidden = t >= (split.test.cutoff.min() if refit else split.valid.cutoff.min())
    else:
        scored = np.isin(owner, np.concatenate([split.valid.customer, split.test.customer]))
        forbidden = scored | (t >= split.train.cutoff.max())
    assert forbidden.any() and not forbidden.all()
    task.prepare(_swap_purchases(store, forbidden), split)
    assert task.summary.bgnbd == before
    allowed = ~forbidden & (np.random.default_rng(0).random(store.n_events) < 0.3)   # the control
    task.prepare(_swap_purchases(store, allowed), split)
    assert task.summary.bgnbd != before


def test_churn_task_fits_the_bgnbd_columns_on_training_histories_only(store, monkeypatch):
    """``task.summary_bgnbd``: ``prepare`` fits the parameters on ``split.train`` (the
    histories before the training cut-offs), every training and scoring batch carries the
    columns, and a model built with ``summary_bgnbd`` reads them (one without refuses)."""
    import attnlab.baselines.gbm as gbm
    from attnlab.baselines.gbm import fit_bgnbd_params
    from attnlab.data.batching import SUMMARY_FEATURES, summary_width
    from attnlab.train.tasks.churn import ChurnTask

    fitted_on = []
    monkeypatch.setattr(gbm, "fit_bgnbd_params", lambda s, ex: fitted_on.append(ex) or fit_bgnbd_params(s, ex))
    task = ChurnTask({"name": "churn", "horizon": "2W", "train_stride": "1W", "summary_bgnbd": True})
    split = task.split(store, seed=0)
    with pytest.raises(RuntimeError, match="prepare"):
        task.model_scores(None, max_len=8, batch_size=4)
    task.prepare(store, split)
    assert len(fitted_on) == 1 and fitted_on[0] is split.train
    assert split.train.cutoff.max() <= split.valid.cutoff.min()
    assert task.summary.horizon_weeks == 2.0 and task.summary.bgnbd == fit_bgnbd_params(store, split.train)
    inputs, _ = next(iter(task.train_batches(store, split, max_len=8, batch_size=4, epoch=0, seed=0)))
    assert inputs["summary"].shape[1] == summary_width(bgnbd=True) == len(SUMMARY_FEATURES) + 3
    cfg = {"name": "vanilla", "item_head": "softmax", "history_memory": 0, "d_model": 16, "n_layers": 1,
           "n_heads": 2, "max_len": 8, "dropout": 0.0, "encoder": "cutoff_relative", "history_summary": True}
    model = build_model({**cfg, "summary_bgnbd": True}, n_items=store.n_items, seed=0)
    probs = task.model_scores(model, max_len=8, batch_size=4)(store, split.valid.take(np.arange(6)))
    assert probs.shape == (6,) and np.isfinite(probs).all()
    x = {k: v for k, v in inputs.items()}
    moved = np.asarray(model.churn_logit({**x, "summary": x["summary"] + np.eye(x["summary"].shape[1])[-1]}))
    assert np.abs(np.asarray(model.churn_logit(x)) - moved).min() > 1e-5   # the last BG/NBD column is read
    with pytest.raises(ValueError, match="summary_bgnbd"):
        build_model(cfg, n_items=store.n_items, seed=0).churn_logit(x)
    with pytest.raises(ValueError, match="set model.summary_bgnbd"):   # before any scoring or training
        task.model_scores(build_model(cfg, n_items=store.n_items, seed=0), max_len=8, batch_size=4)
    with pytest.raises(ValueError, match="model.history_summary=true"):
        build_model({**cfg, "history_summary": False, "summary_bgnbd": True}, n_items=store.n_items, seed=0)


def test_summary_bgnbd_config_refusals_and_a_run_files_its_parameters(tmp_path):
    """Without the summary there is nothing to add columns to (a config error before any
    work); a tiny run with the columns trains, scores and files the fitted parameters; an
    old result's config (no such key) hashes as the key's default."""
    from attnlab.results import config_hash
    from attnlab.typed_config import ConfigError

    with pytest.raises(ConfigError, match="task.summary_bgnbd"):
        train_and_evaluate(tiny(tmp_path / "a", "task=churn", "task.horizon=2W", "task.history_summary=false",
                                "task.summary_bgnbd=true"))
    result = train_and_evaluate(tiny(tmp_path / "b", "task=churn", "task.horizon=2W", "task.summary_bgnbd=true",
                                     "trainer.max_steps=6"))
    assert 0.0 <= result.metrics["model"]["auc"] <= 1.0
    params = result.provenance["training_signal"]["summary_bgnbd_params"]
    assert set(params) == {"r", "alpha", "a", "b"} and all(v > 0 for v in params.values())
    cfg = dict(result.config)
    on = config_hash(cfg)
    off = {**cfg, "task": {**cfg["task"], "summary_bgnbd": False}, "model": {**cfg["model"], "summary_bgnbd": False}}
    old = {**off, "task": {k: v for k, v in off["task"].items() if k != "summary_bgnbd"},
           "model": {k: v for k, v in off["model"].items() if k != "summary_bgnbd"}}
    assert config_hash(off) == config_hash(old) != on


def test_purchase_index_is_built_once_per_store_and_never_shared_with_a_changed_one(store):
    """The churn summary's range queries share one purchase index per store object; a
    store rebuilt with other events (``dataclasses.replace``) gets its own, so its RFM and
    BG/NBD statistics are its own."""
    from attnlab.baselines.bgnbd import bgnbd_stats
    from attnlab.data.rfm import purchase_index, rfm_from_ranges

    assert purchase_index(store) is purchase_index(store)
    starts = np.asarray(store.offsets)[:-1]
    ends = np.asarray(store.offsets)[1:]
    ref = np.full(len(starts), int(np.asarray(store.time).max()) + 1)
    changed = _swap_purchases(store, np.arange(store.n_events) % 3 == 0)
    assert purchase_index(changed) is not purchase_index(store)
    a, b = rfm_from_ranges(store, starts, ends, ref), rfm_from_ranges(changed, starts, ends, ref)
    assert not a["frequency"].equals(b["frequency"])
    assert not bgnbd_stats(store, starts, ends, ref)["x"].equals(bgnbd_stats(changed, starts, ends, ref)["x"])
    np.testing.assert_array_equal(rfm_from_ranges(store, starts, ends, ref).to_numpy(), a.to_numpy())
