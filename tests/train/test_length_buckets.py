"""Length-bucketed batches (issue 15, part 5): optimal edges, a pass that trains every
window once in a bounded set of shapes, the same per-row math at any padded length, and
an attention loop that stops at the batch's longest row."""

import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from flax import nnx
from omegaconf import OmegaConf

from attnlab.data.batching import make_batch, window_lengths
from attnlab.data.buckets import (
    AUTO_BUCKETS, bucket_edges, bucket_of, length_ladder, pass_padding, plan_buckets, resolve_buckets,
)
from attnlab.data.pipeline import load_sequences
from attnlab.models import build_model
from attnlab.ops.attention import AttentionSpec, attention
from attnlab.train.loop import train_and_evaluate
from attnlab.train.tasks import make_task
from attnlab.train.tasks.common import pad_rows, predictor

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def padded_work(lengths, edges):
    return float((edges[bucket_of(lengths, edges)].astype(float) ** 2).sum())


@pytest.mark.parametrize("seed", range(6))
def test_bucket_edges_minimise_the_padded_work_exactly(seed):
    """The dynamic programme against every set of at most k candidate edges."""
    rng = np.random.default_rng(seed)
    max_len, multiple = 64, 8
    lengths = np.minimum(rng.geometric(0.06, size=200), max_len)
    cand = np.arange(multiple, max_len + 1, multiple)
    top = cand[np.searchsorted(cand, lengths.max())]
    for k in (1, 2, 3, 4):
        edges = bucket_edges(lengths, k=k, max_len=max_len, multiple=multiple)
        assert len(edges) <= k and edges[-1] == (top if k > 1 else max_len)
        assert np.all(edges % multiple == 0) and np.all(np.diff(edges) > 0)
        if k == 1:
            continue
        best = min(padded_work(lengths, np.array(sorted(set(c) | {top})))
                   for r in range(0, k) for c in itertools.combinations(cand[cand < top], r))
        assert padded_work(lengths, edges) == pytest.approx(best)


def test_auto_buckets_only_for_long_windows():
    assert resolve_buckets(None, 50) == 1 and resolve_buckets(None, 200) == 1
    assert resolve_buckets(None, 4096) == AUTO_BUCKETS
    assert resolve_buckets(3, 50) == 3


def test_a_pass_trains_every_window_once_in_a_bounded_set_of_shapes():
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.lognormal(4.0, 1.2, size=3000).astype(np.int64) + 1, 1024)
    plan = plan_buckets(lengths, k=5, max_len=1024, batch_size=32)
    assert len(plan.shapes) <= 5 and all(rows >= 1 for rows, _ in plan.shapes)
    batches = plan.batches(lengths, np.random.default_rng(1))
    rows = np.concatenate([r for r, _, _ in batches])
    assert np.array_equal(np.sort(rows), np.arange(len(lengths)))       # every window exactly once
    for r, width, size in batches:
        assert (size, width) in plan.shapes and 0 < len(r) <= size
        assert lengths[r].max() <= width
    assert plan.n_batches(lengths) == len(batches)
    # a token budget: rows x length at most batch_size x the mean padded length, as many rows
    # as fit, so a pass has about ceil(n / batch_size) batches
    budget = 32 * plan.edges[bucket_of(lengths, plan.edges)].mean()
    for rows, width in plan.shapes:
        assert rows * width <= budget < (rows + 1) * width
    assert len(batches) <= -(-len(lengths) // 32) + len(plan.shapes)
    one = plan_buckets(lengths, k=1, max_len=1024, batch_size=32)
    assert one.shapes == [(32, 1024)]
    assert pass_padding(batches, lengths)["padding_work"] < 0.5 * pass_padding(
        one.batches(lengths, np.random.default_rng(1)), lengths)["padding_work"]
    # another pass with the same seed forms the same batches; another seed other ones
    again = plan.batches(lengths, np.random.default_rng(1))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))
    other = plan.batches(lengths, np.random.default_rng(2))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(batches, other))


def test_a_later_pass_may_draw_a_longer_window_than_the_planned_pass():
    """The plan comes from the first pass; another pass draws other window ends. Its
    last edge is max_len, so any window a later pass draws fits (CJ at max_len 4224 once
    stopped on pass 2: 4,027 events against a last edge of 3,936)."""
    rng = np.random.default_rng(0)
    first = rng.integers(1, 3900, 2000)                       # no window near max_len
    plan = plan_buckets(first, k=8, max_len=4224, batch_size=64)
    assert plan.edges[-1] == 4224 and len(plan.edges) <= 8
    later = np.append(rng.integers(1, 3900, 1999), 4027)
    rows = np.concatenate([r for r, _, _ in plan.batches(later, np.random.default_rng(1))])
    assert np.array_equal(np.sort(rows), np.arange(len(later)))
    # the other edges are optimal for the sample plus one max_len window
    assert np.array_equal(plan.edges, bucket_edges(np.append(first, 4224), k=8, max_len=4224))


def test_a_window_longer_than_every_bucket_is_refused():
    with pytest.raises(ValueError, match="longer than the longest bucket"):
        bucket_of(np.array([10, 300]), np.array([64, 128]))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["debug=tiny"])
    c = {"task": OmegaConf.to_container(cfg.task, resolve=True),
         "data": OmegaConf.to_container(cfg.data, resolve=True)}
    store = load_sequences(c["data"]["name"], dict(c["data"]["options"]),
                           cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    return c, store


FAMILIES = {
    "vanilla": {}, "time_decay": {},
    "sparse": {"attention": {"window": 4, "num_global": 1}},
    "linear": {"attention": {"chunk": 4}},
    "lstm": {},
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_computes_the_same_per_row_at_any_padded_length(tiny, family):
    """Right-padded rows give the same hidden states and loss whether the batch is padded
    to the model's max_len or to a shorter bucket: bucketing changes shapes, not math."""
    c, store = tiny
    task = make_task(c["task"])
    split = task.split(store, seed=0)
    task.prepare(store, split)
    cfg = {**OmegaConf.to_container(OmegaConf.load(CONFIGS / "model" / f"{family}.yaml")),
           "d_model": 16, "n_layers": 1, "max_len": 32, "dropout": 0.0, "encoder": "causal",
           "history_summary": False, "summary_bgnbd": False}
    for key, value in FAMILIES[family].items():
        cfg[key] = {**cfg.get(key, {}), **value}
    model = build_model(cfg, n_items=store.n_items, seed=0)
    cust, ends = task.train_windows(store, split, max_len=32, epoch=0, seed=0)
    short = window_lengths(store, cust, ends, 32) <= 12
    cust, ends = cust[short][:8], ends[short][:8]
    outs, losses = [], []
    # jitted: one compile per length beats the eager loops
    run = nnx.jit(lambda m, x, t: (m.hidden(x, rngs=None), task.loss(m, x, t, None)))
    for length in (32, 16):
        b = make_batch(store, customers=cust, ends=ends, cutoffs=None, max_len=length,
                       targets=task._targets, memory=model.history_memory)
        targets = {"index": np.broadcast_to(np.arange(length, dtype=np.int32), b.targets.shape).copy(),
                   "item": b.targets.astype(np.int32)}
        h, loss = run(model, b.model_inputs(), targets)
        valid = np.arange(length)[None, :] < b.lengths[:, None]
        outs.append(np.asarray(h)[:, :16][valid[:, :16]])
        losses.append(float(loss))
    np.testing.assert_allclose(outs[0], outs[1], rtol=2e-5, atol=2e-5)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_chunked_attention_of_a_short_batch_in_a_long_shape_matches_its_own_shape():
    """The chunked loops stop at the batch's longest row (query blocks past it visit no
    key block): outputs and gradients equal those of the batch in its own, shorter shape."""
    rng = np.random.default_rng(0)
    b, h, d, short, long = 2, 2, 8, 256, 768
    q, k, v = (jnp.asarray(rng.normal(size=(b, long, h, d)), jnp.float32) for _ in range(3))
    lengths = jnp.asarray([200, 131], jnp.int32)

    def loss(q, k, v, n):
        spec = AttentionSpec(causal=True, lengths=lengths)
        out = attention(q[:, :n], k[:, :n], v[:, :n], spec=spec, impl="xla_chunked")
        return jnp.sum(out[:, :short] ** 2), out[:, :short]

    (l_long, o_long), g_long = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, long)
    (l_short, o_short), g_short = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, short)
    np.testing.assert_allclose(o_long, o_short, rtol=1e-6, atol=1e-6)
    for a, s in zip(g_long, g_short):
        np.testing.assert_allclose(a[:, :short], s[:, :short], rtol=1e-5, atol=1e-6)
        assert not np.any(np.asarray(a[:, short:]))


def test_bucketed_training_runs_end_to_end_with_the_planned_shapes(tmp_path):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "debug=tiny", "logger=none", "progress=false", "model.d_model=16", "model.n_layers=1",
            "model.max_len=32", "model.dropout=0.0", "trainer.length_buckets=3", "trainer.max_epochs=1",
            "trainer.patience=5", f"paths.output_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.results_dir={tmp_path / 'index'}"])
    result = train_and_evaluate(cfg)
    assert len(result.history) == 1 and np.isfinite(result.history[0]["train_loss"])
    c = OmegaConf.to_container(cfg, resolve=True)
    store = load_sequences(c["data"]["name"], dict(c["data"]["options"]), cache_dir=c["paths"]["cache_dir"],
                           progress=False)
    task = make_task(c["task"])
    split = task.split(store, seed=0)
    task.prepare(store, split)
    shapes = set()
    n_windows = 0
    for inputs, targets in task.train_batches(store, split, max_len=32, batch_size=int(c["trainer"]["batch_size"]),
                                              epoch=1, seed=0, buckets=3):
        shapes.add(inputs["item"].shape)
        assert targets["index"].shape == inputs["item"].shape
        assert int(inputs["lengths"].max()) <= inputs["item"].shape[1]
        n_windows += int((inputs["lengths"] > 0).sum())
    plan = task.plans.get(max_len=32, batch_size=int(c["trainer"]["batch_size"]), buckets=3, seed=0)
    assert shapes <= set(plan.shapes) and len(plan.shapes) <= 3
    assert n_windows == len(task.train_windows(store, split, max_len=32, epoch=1, seed=0)[0])
    assert result.provenance["length_buckets"]["shapes"] == [list(s) for s in plan.shapes]


def test_bucketed_scoring_equals_one_shape_scoring_in_example_order(tiny):
    c, store = tiny
    task = make_task(c["task"])
    split = task.split(store, seed=0)
    task.prepare(store, split)
    cfg = {**OmegaConf.to_container(OmegaConf.load(CONFIGS / "model" / "vanilla.yaml")),
           "d_model": 16, "n_layers": 1, "max_len": 32, "dropout": 0.0, "encoder": "causal",
           "history_summary": False, "summary_bgnbd": False}
    model = build_model(cfg, n_items=store.n_items, seed=0)
    lengths = window_lengths(store, split.test.customer, split.test.end, 32)
    assert len(np.unique(np.minimum(lengths, 32) > 16)) == 2       # short and long histories
    one = task.model_scores(model, max_len=32, batch_size=16)(store, split.test)
    bucketed = task.model_scores(model, max_len=32, batch_size=16, buckets=3)(store, split.test)
    assert one.shape == bucketed.shape == (len(split.test), store.n_items + 1)
    np.testing.assert_allclose(bucketed, one, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("max_len,k", [(800, 8), (4224, 8), (50, 3), (17, 8), (32, 1)])
def test_the_scoring_ladder_is_at_most_k_round_lengths_ending_at_max_len(max_len, k):
    ladder = length_ladder(max_len, k)
    assert 1 <= len(ladder) <= k and ladder[-1] == max_len and np.all(np.diff(ladder) > 0)
    assert np.all(ladder[:-1] % 16 == 0)
    # evenly spaced: every history length is padded by at most max_len / k (+ rounding)
    holds = ladder[np.searchsorted(ladder, np.arange(1, max_len + 1))]
    assert np.all(holds - np.arange(1, max_len + 1) < -(-max_len // k) + 16)


def test_bucketed_scoring_compiles_a_fixed_set_of_shapes_whatever_the_rows(tiny):
    """Each validation pass and the test pass score other rows; the padded lengths must
    come from the fixed ladder (at most k compilations for the run), one call of
    ``batch_size`` rows per ``batch_size`` examples. Before: edges fitted to each call's
    rows (new shapes call after call) and every bucket padded to the full row count
    (121 s a validation pass at max_len 800 on CJ, 18.7 s now: docs/bucket_eval_bench.md)."""
    c, store = tiny
    task = make_task(c["task"])
    split = task.split(store, seed=0)
    max_len, k, batch = 128, 4, 4
    shapes = []

    def fn(model, inputs):
        shapes.append(inputs["item"].shape)
        return np.zeros((inputs["item"].shape[0], store.n_items + 1), np.float32)

    predict = predictor(fn, None, max_len=max_len, batch_size=batch, use_cutoff=False, buckets=k)
    lengths = window_lengths(store, split.test.customer, split.test.end, max_len)
    assert len(np.unique(lengths)) > 2 * k            # the rows could ask for many more lengths
    rng = np.random.default_rng(0)
    for _ in range(5):   # calls over different rows
        rows = rng.permutation(len(split.test))[: rng.integers(3, len(split.test))]
        before = len(shapes)
        predict(store, split.test.take(rows))
        assert len(shapes) - before == -(-len(rows) // batch)       # one call per batch of rows
    assert {s[1] for s in shapes} <= set(length_ladder(max_len, k).tolist()) == {32, 64, 96, 128}
    assert {s[0] for s in shapes} == {batch}
    # a call of short histories is padded to a short length, not to max_len
    short = np.flatnonzero(lengths <= 20)
    assert len(short) > 0
    shapes.clear()
    predict(store, split.test.take(short))
    assert {s[1] for s in shapes} == {32}
