"""Full-catalogue ranking in item chunks (issue 15, million-item catalogues).

The chunked evaluator must give the SAME ranks, positions, metrics and per-example
arrays as the unchunked one for the same scores (ties included, any chunk size), never
ask a scorer for more than ``item_chunk`` items, and the model's chunked scores must
equal its full-catalogue scores (softmax and copy heads). Timings live in
experiments/eval_bench.py, not here.
"""

import jax
import numpy as np
import pytest
from flax import nnx

from attnlab.data.batching import make_batch
from attnlab.data.schema import EventType
from attnlab.data.splits import Examples, next_basket_split, next_item_split
from attnlab.eval import ChunkedScorer, evaluate_next_basket, evaluate_next_item, top_k
from attnlab.eval.chunked import item_ranges
from attnlab.models import build_model
from attnlab.train.tasks import NextBasketTask, NextItemTask
from attnlab.train.tasks import ranking
from protocol_stores import build_store

P = int(EventType.PURCHASE)
N_ITEMS = 37


class MatrixScorer:
    """A ChunkedScorer over a fixed score table (one row per customer), recording every
    call it gets."""

    def __init__(self, table, *, gather=None, item_chunk=8):
        self.table, self.widths, self.los, self.prepared = table, [], [], 0

        def prepare(store, ex):
            self.prepared += 1
            return self.table[ex.customer]

        def scores(state, lo, hi):
            self.widths.append(hi - lo)
            self.los.append(lo)
            return state[:, lo:hi].copy()

        self.scorer = ChunkedScorer(prepare=prepare, scores=scores, target_scores=gather, item_chunk=item_chunk)


def tie_table(rng, n_rows, n_items=N_ITEMS):
    """Scores with many ties (5 levels), some -inf and a huge column 0 (never a candidate)."""
    t = rng.integers(0, 5, (n_rows, n_items + 1)).astype(np.float32)
    t[rng.random(t.shape) < 0.05] = -np.inf
    t[:, 0] = 1e9
    return t


def one_target_examples(rng, n_rows, n_items=N_ITEMS):
    return Examples(customer=np.arange(n_rows), end=np.arange(1, n_rows + 1), cutoff=np.zeros(n_rows, np.int64),
                    target_offsets=np.arange(n_rows + 1, dtype=np.int64),
                    target_items=rng.integers(1, n_items + 1, n_rows).astype(np.int32))


def basket_examples(rng, n_rows, n_items=N_ITEMS):
    sets = [rng.choice(np.arange(1, n_items + 1), rng.integers(1, 9), replace=False) for _ in range(n_rows)]
    return Examples(customer=np.arange(n_rows), end=np.arange(1, n_rows + 1), cutoff=np.zeros(n_rows, np.int64),
                    target_offsets=np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64),
                    target_items=np.concatenate(sets).astype(np.int32))


def empty_store(n_rows, n_items=N_ITEMS):
    """One purchase of item 1 per customer row (so item 1 is a repeat target)."""
    return build_store([(c, 1, c, 1, P) for c in range(n_rows)], n_items=n_items)


def assert_same(a, b):
    assert a.n == b.n and a.metrics.keys() == b.metrics.keys() and a.per_example.keys() == b.per_example.keys()
    np.testing.assert_array_equal(np.array(list(a.metrics.values())), np.array(list(b.metrics.values())))
    for k in a.per_example:
        np.testing.assert_array_equal(a.per_example[k], b.per_example[k], err_msg=k)


CHUNKS = [1, 5, 8, 36, 37, 100]  # 37 items: 1 and 37 divide it, 5, 8, 36 do not, 100 is one chunk


@pytest.mark.parametrize("chunk", CHUNKS)
def test_next_item_identical_to_unchunked(chunk):
    rng = np.random.default_rng(chunk)
    table, ex = tie_table(rng, 40), one_target_examples(rng, 40)
    store = empty_store(40)
    m = MatrixScorer(table)
    full = evaluate_next_item(lambda st, e: table[e.customer], store, ex, ks=(1, 5, 10), batch_size=16,
                              progress=False)
    got = evaluate_next_item(m.scorer, store, ex, ks=(1, 5, 10), batch_size=16, progress=False, item_chunk=chunk)
    assert_same(full, got)
    # structural memory bound: never more than `chunk` items per call, item 0 never asked for,
    # one prepare per batch of examples, every item covered once per batch
    assert max(m.widths) <= chunk and min(m.los) >= 1 and m.prepared == 3
    assert sum(m.widths) == 3 * N_ITEMS + len(np.unique(ex.target_items[:16])) + len(
        np.unique(ex.target_items[16:32])) + len(np.unique(ex.target_items[32:]))


@pytest.mark.parametrize("chunk", CHUNKS)
def test_next_basket_identical_to_unchunked(chunk):
    rng = np.random.default_rng(100 + chunk)
    table, ex = tie_table(rng, 30), basket_examples(rng, 30)
    store = empty_store(30)
    m = MatrixScorer(table, gather=lambda st, rows, items: st[rows, items])
    full = evaluate_next_basket(lambda st, e: table[e.customer], store, ex, ks=(1, 3, 10, 50), batch_size=7,
                                progress=False)
    got = evaluate_next_basket(m.scorer, store, ex, ks=(1, 3, 10, 50), batch_size=7, progress=False,
                               item_chunk=chunk)
    assert_same(full, got)
    assert max(m.widths) <= chunk and sum(m.widths) == 5 * N_ITEMS  # gather given: one pass per batch


def test_constant_scorer_worst_rank_and_no_hits():
    """Pessimistic ties survive chunking: a constant scorer ranks every target last."""
    store = empty_store(4)
    m = MatrixScorer(np.zeros((4, N_ITEMS + 1), np.float32))
    rng = np.random.default_rng(0)
    res = evaluate_next_item(m.scorer, store, one_target_examples(rng, 4), progress=False, item_chunk=6)
    np.testing.assert_array_equal(res.per_example["rank"], N_ITEMS)
    b = evaluate_next_basket(m.scorer, store, basket_examples(rng, 4), progress=False, item_chunk=6)
    assert b.metrics["recall@20"] == 0.0 and b.metrics["phr@20"] == 0.0


def test_gather_that_rounds_differently_is_caught():
    """A target gather one ulp off its chunk column: ranks still rank the chunks' values."""
    rng = np.random.default_rng(3)
    table, ex = tie_table(rng, 20), one_target_examples(rng, 20)
    off = lambda st, rows, items: np.nextafter(st[rows, items], np.float32(np.inf))  # noqa: E731
    store = empty_store(20)
    full = evaluate_next_item(lambda st, e: table[e.customer], store, ex, progress=False)
    assert_same(full, evaluate_next_item(MatrixScorer(table, gather=off).scorer, store, ex, progress=False))


def test_errors():
    rng = np.random.default_rng(0)
    store, ex = empty_store(3), one_target_examples(rng, 3)
    bad = np.zeros((3, N_ITEMS + 1), np.float32)
    bad[1, 30] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_next_item(MatrixScorer(bad).scorer, store, ex, progress=False)
    with pytest.raises(ValueError, match="item_chunk needs a ChunkedScorer"):
        evaluate_next_item(lambda st, e: bad[e.customer], store, ex, progress=False, item_chunk=4)
    short = ChunkedScorer(prepare=lambda st, e: None, scores=lambda s, lo, hi: np.zeros((3, 1)))
    with pytest.raises(ValueError, match="shape"):
        evaluate_next_item(short, store, ex, progress=False)
    wrong = Examples(ex.customer, ex.end, ex.cutoff, ex.target_offsets, np.array([1, 2, N_ITEMS + 1], np.int32))
    with pytest.raises(ValueError, match="targets must be in"):
        evaluate_next_item(MatrixScorer(bad).scorer, store, wrong, progress=False)


@pytest.mark.parametrize("chunk", [1, 4, 37])
def test_top_k_lists(chunk):
    rng = np.random.default_rng(chunk)
    table = tie_table(rng, 6)
    items, scores = top_k(MatrixScorer(table).scorer, empty_store(6), one_target_examples(rng, 6), k=10,
                          item_chunk=chunk)
    for r in range(6):
        order = np.lexsort((np.arange(1, N_ITEMS + 1), -table[r, 1:]))[:10] + 1
        np.testing.assert_array_equal(items[r], order)
        np.testing.assert_array_equal(scores[r], table[r, order])


def test_item_ranges():
    assert list(item_ranges(10, 4)) == [(1, 5), (5, 9), (9, 11)]
    assert list(item_ranges(3, 100)) == [(1, 4)]


# --------------------------------------------------------------------------- the model


def history_store(n_customers=12, n_items=120, per=14, seed=0):
    """Purchases in baskets of 2 with repeats (the copy head's pointer gets mass)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_customers):
        pool = rng.choice(np.arange(1, n_items + 1), 5, replace=False)
        for e in range(per):
            item = int(pool[rng.integers(5)] if rng.random() < 0.6 else rng.integers(1, n_items + 1))
            rows.append((c, 86_400 * (e // 2) + e, 100 * c + e // 2, item, P))
    return build_store(rows, n_items=n_items)


def tiny_model(head, n_items, memory=0):
    return build_model({"name": "vanilla", "d_model": 16, "n_layers": 1, "n_heads": 2, "max_len": 8,
                        "dropout": 0.0, "item_head": head, "history_memory": memory, "churn_pool": "last",
                        "encoder": "causal"}, n_items=n_items, seed=0)


@pytest.mark.parametrize("head,memory", [("softmax", 0), ("copy", 0), ("copy", 4)])
def test_model_chunk_scores_equal_full_scores(head, memory):
    store = history_store()
    model = tiny_model(head, store.n_items, memory)
    ends = store.offsets[1:] - 1
    inputs = make_batch(store, customers=np.arange(store.n_customers), ends=ends, cutoffs=None, max_len=8,
                        memory=memory).model_inputs()
    full = np.asarray(model.next_item_scores(inputs))
    chunk_scores = nnx.jit(lambda m, s, lo, size: m.next_item_chunk_scores(s, lo, size), static_argnums=3)
    for chunk in (50, store.n_items + 1):  # 121 columns: 50 leaves a shorter last chunk (shifted in the normaliser)
        state = model.next_item_state(inputs, item_chunk=chunk)
        got = np.concatenate([np.asarray(chunk_scores(model, state, lo, min(chunk, store.n_items + 1 - lo)))
                              for lo in range(0, store.n_items + 1, chunk)], axis=1)
        np.testing.assert_allclose(got[:, 1:], full[:, 1:], rtol=1e-5, atol=1e-5)
        assert (got[:, 0] < -1e8).all()  # "no item" is never a prediction
        items = np.asarray(store.item)[ends][:, None].repeat(2, 1)
        items[:, 1] = 1 + np.arange(store.n_customers)
        np.testing.assert_allclose(np.asarray(model.next_item_target_scores(state, items)),
                                   np.take_along_axis(got, items, 1), rtol=1e-6, atol=1e-6)
    if head == "copy":  # the pointer carried mass: the mixture differs from the bare softmax
        bare = jax.nn.log_softmax(model.catalogue_logits(state["hq"]), -1)
        assert np.abs(full[:, 1:] - np.asarray(bare)[:, 1:]).max() > 0.1


@pytest.mark.parametrize("head", ["softmax", "copy"])
def test_task_chunked_scorer_matches_full_path(head):
    """Through the task: the chunked scorer gives the evaluator's exact metrics on its own
    scores, and the same ranks as today's full-matrix path."""
    store = history_store(n_customers=20)
    model = tiny_model(head, store.n_items, memory=4 if head == "copy" else 0)
    task = NextItemTask({})
    full = task.model_scores(model, max_len=8, batch_size=8, item_chunk=0)
    chunked = task.model_scores(model, max_len=8, batch_size=8, item_chunk=13)
    assert isinstance(chunked, ChunkedScorer) and not isinstance(full, ChunkedScorer)
    test = next_item_split(store, min_baskets=3).test
    a = evaluate_next_item(chunked, store, test, batch_size=20, progress=False)  # 3 model batches per prepare
    assert_same(evaluate_next_item(lambda st, e: chunked(st, e), store, test, batch_size=8, progress=False), a)
    np.testing.assert_array_equal(evaluate_next_item(full, store, test, progress=False).per_example["rank"],
                                  a.per_example["rank"])
    basket = next_basket_split(store, valid_cutoff=86_400 * 4, test_cutoff=86_400 * 5).test
    b = evaluate_next_basket(chunked, store, basket, batch_size=8, progress=False)
    assert_same(evaluate_next_basket(lambda st, e: chunked(st, e), store, basket, batch_size=8, progress=False), b)
    assert_same(evaluate_next_basket(full, store, basket, batch_size=8, progress=False), b)


def test_model_scores_switches_on_catalogue_size(monkeypatch):
    store = history_store()
    model = tiny_model("softmax", store.n_items)
    task = NextBasketTask({})
    assert not isinstance(task.model_scores(model, max_len=8, batch_size=4), ChunkedScorer)
    monkeypatch.setattr(ranking, "CHUNKED_ABOVE", store.n_items - 1)
    assert isinstance(task.model_scores(model, max_len=8, batch_size=4), ChunkedScorer)


# ------------------------------------------------------- sampled softmax: no [batch, n_items]


def catalogue_shapes(jaxpr, n_cols):
    """Shapes of every value in ``jaxpr`` (sub-programs included) with an ``n_items + 1`` axis."""
    out = set()
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            shape = getattr(v.aval, "shape", ())
            if n_cols in shape:
                out.add(tuple(shape))
        for p in eqn.params.values():
            for sub in (p if isinstance(p, (tuple, list)) else [p]):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    out |= catalogue_shapes(sub, n_cols)
    return out


@pytest.mark.parametrize("head", ["softmax", "copy"])
def test_sampled_softmax_step_has_no_batch_by_catalogue_array(head):
    """With negatives, the loss and its gradient touch the catalogue only as the
    parameters' own shapes ([n_items + 1] bias, [n_items + 1, d] embedding); the full
    softmax builds [batch, positions, n_items + 1] (the detector sees it)."""
    n, b, length = 5_000, 4, 6
    model = tiny_model(head, n)
    rng = np.random.default_rng(0)
    inputs = make_batch(history_store(n_customers=b, n_items=n), customers=np.arange(b),
                        ends=np.full(b, 6) + 14 * np.arange(b), cutoffs=None, max_len=length).model_inputs()
    targets = {"index": np.tile(np.arange(length, dtype=np.int32), (b, 1)),
               "item": rng.integers(1, n + 1, (b, length)).astype(np.int32)}
    graphdef, params = nnx.split(model)

    def shapes(t):
        loss = lambda p: NextItemTask.loss(nnx.merge(graphdef, p), inputs, t, nnx.Rngs(dropout=0))  # noqa: E731
        return catalogue_shapes(jax.make_jaxpr(jax.value_and_grad(loss))(params).jaxpr, n + 1)

    sampled = shapes({**targets, "neg_item": rng.integers(1, n + 1, 64).astype(np.int32),
                      "neg_log_count": np.zeros(64, np.float32)})
    assert sampled <= {(n + 1,), (n + 1, 16)}, sampled
    assert (b, length, n + 1) in shapes(targets)
