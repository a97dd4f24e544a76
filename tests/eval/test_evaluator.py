"""Evaluation loops: full-catalogue ranking, chunking, repeat/explore, churn, errors."""

import numpy as np
import pytest

from attnlab.data.schema import EventType
from attnlab.data.splits import Examples, churn_split, next_basket_split, next_item_split
from attnlab.eval import ChunkedScorer, evaluate_churn, evaluate_next_basket, evaluate_next_item
from protocol_stores import build_store

P = int(EventType.PURCHASE)


def examples(customers, ends, targets_per_row):
    sizes = [len(t) for t in targets_per_row]
    return Examples(customer=np.array(customers), end=np.array(ends),
                    cutoff=np.zeros(len(customers), np.int64),
                    target_offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                    target_items=np.concatenate(targets_per_row).astype(np.int32))


def test_ranks_over_the_full_catalogue():
    """20,000 items; score = item index, so target t has rank n_items - t + 1 exactly.
    A sampled-negative evaluator (say 100 negatives) could not produce ranks > 101."""
    n = 20_000
    s = build_store([(0, 1, 1, 1, P)], n_items=n)
    targets = np.array([n, n - 9, 15_000, 1, 7])
    ex = examples([0] * 5, [0] * 5, [[t] for t in targets])

    def score_fn(store, chunk):
        out = np.tile(np.arange(n + 1, dtype=np.float32), (len(chunk), 1))
        out[:, 0] = 1e9            # column 0 must be ignored by the evaluator
        return out

    res = evaluate_next_item(score_fn, s, ex, batch_size=2, progress=False)
    np.testing.assert_array_equal(res.per_example["rank"], n - targets + 1)
    assert res.n == 5 and res.metrics["hr@10"] == pytest.approx(2 / 5)
    assert res.metrics["ndcg@10"] == pytest.approx((1 + 1 / np.log2(11)) / 5)
    assert res.metrics["mrr@20"] == pytest.approx((1 + 0.1) / 5)


def test_chunking_does_not_change_results():
    rng = np.random.default_rng(0)
    n = 50
    s = build_store([(c, 1, c, 1, P) for c in range(30)], n_items=n)
    ex = examples(np.arange(30), s.offsets[:-1], [[t] for t in rng.integers(1, n + 1, 30)])
    table = rng.normal(size=(30, n + 1)).astype(np.float32)

    def score_fn(store, chunk):
        return table[chunk.customer]

    a = evaluate_next_item(score_fn, s, ex, batch_size=1, progress=False)
    b = evaluate_next_item(score_fn, s, ex, batch_size=256, progress=False)
    for k in a.per_example:
        np.testing.assert_array_equal(a.per_example[k], b.per_example[k])


def test_next_basket_repeat_and_explore():
    # history of customer 0 purchases items 1, 2 (item 3 only via a campaign event)
    rows = [(0, 1, 1, 1, P), (0, 2, 2, 2, P), (0, 3, -1, 3, int(EventType.CAMPAIGN)),
            (0, 9, 3, 1, P), (0, 9, 3, 3, P), (0, 9, 3, 4, P)]
    s = build_store(rows, n_items=30)
    ex = examples([0], [3], [[1, 3, 4]])        # 1 = repeat; 3, 4 = explore
    # rank: 1 first, 3 at position 12, 4 at 25 (scores 30 - position)
    order = [1] + [j for j in range(5, 15)] + [3] + list(range(15, 27)) + [4]
    score = np.zeros(31, np.float32)
    for p, item in enumerate(order, start=1):
        score[item] = 100 - p
    res = evaluate_next_basket(lambda st, ch: np.tile(score, (len(ch), 1)), s, ex,
                               progress=False)
    m = res.metrics
    assert m["recall@10"] == pytest.approx(1 / 3) and m["recall@20"] == pytest.approx(2 / 3)
    assert m["recall@10_repeat"] == 1.0 and m["recall@10_explore"] == 0.0
    assert m["recall@20_explore"] == 0.5
    assert m["phr@10"] == 1.0 and m["phr@10_explore"] == 0.0
    assert m["n_repeat"] == 1 and m["n_explore"] == 1
    assert m["repeat_target_share"] == pytest.approx(1 / 3)
    idcg2 = 1 + 1 / np.log2(3)
    assert m["ndcg@20_explore"] == pytest.approx((1 / np.log2(13)) / idcg2)


def test_next_basket_constant_scorer_gets_nothing():
    """Pessimistic ties: a constant scorer never hits (unless all items are targets)."""
    s = build_store([(0, 1, 1, 1, P)], n_items=25)
    ex = examples([0, 0], [1, 1], [[1, 2], [3]])
    res = evaluate_next_basket(lambda st, ch: np.zeros((len(ch), 26), np.float32), s, ex,
                               progress=False)
    assert res.metrics["recall@20"] == 0.0 and res.metrics["phr@20"] == 0.0


def test_errors():
    s = build_store([(0, 1, 1, 1, P)], n_items=5)
    ex = examples([0], [1], [[2]])
    with pytest.raises(ValueError, match="shape"):
        evaluate_next_item(lambda st, ch: np.zeros((1, 5)), s, ex, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_next_item(lambda st, ch: np.full((1, 6), np.nan), s, ex, progress=False)
    with pytest.raises(ValueError, match="exactly one target"):
        evaluate_next_item(lambda st, ch: np.zeros((1, 6)), s, examples([0], [1], [[2, 3]]),
                           progress=False)


def test_end_to_end_on_split_outputs():
    rng = np.random.default_rng(1)
    rows = []
    for c in range(15):
        for b in range(6):
            for i in rng.choice(np.arange(1, 20), 3, replace=False):
                rows.append((c, 10 * b + c, 100 * c + b, int(i), P))
    s = build_store(rows, n_items=20)
    table = rng.normal(size=(s.n_customers, 21)).astype(np.float32)
    fn = lambda st, ch: table[ch.customer]  # noqa: E731
    ni = next_item_split(s)
    assert evaluate_next_item(fn, s, ni.test, progress=False).n == 15
    nb = next_basket_split(s, valid_cutoff=30, test_cutoff=45)
    r = evaluate_next_basket(fn, s, nb.test, progress=False)
    assert r.n == len(nb.test) and len(r.per_example["recall@10"]) == r.n
    ch = churn_split(s, cutoff=40, horizon=10)
    rc = evaluate_churn(lambda st, ex: np.full(len(ex), 0.3), s, ch.test)
    assert rc.metrics["auc"] == 0.5 or np.isnan(rc.metrics["auc"])
    assert rc.metrics["brier"] == pytest.approx(np.mean((0.3 - ch.test.label) ** 2))
    with pytest.raises(ValueError, match="probabilities"):
        evaluate_churn(lambda st, ex: np.zeros(len(ex) + 1), s, ch.test)


def test_chunks_are_scored_shortest_history_first_and_results_stay_in_example_order():
    """The evaluators hand a scorer chunks in visible-history-length order (so a
    length-bucketed model pads each chunk to about its own length); per-example results
    must still line up with the example rows, for next item and next basket."""
    rng = np.random.default_rng(3)
    n_items, n_cust = 40, 24
    lengths = rng.integers(1, 30, n_cust)                    # unsorted history lengths
    rows = [(c, 1, int(rng.integers(1, n_items + 1)), t, P) for c in range(n_cust) for t in range(lengths[c])]
    s = build_store(rows, n_items=n_items)
    table = rng.normal(size=(n_cust, n_items + 1)).astype(np.float32)
    seen = []

    def score_fn(store, chunk):
        seen.append(np.asarray(chunk.end) - np.asarray(store.offsets)[chunk.customer])
        return table[chunk.customer]

    item_ex = examples(np.arange(n_cust), s.offsets[1:], [[t] for t in rng.integers(1, n_items + 1, n_cust)])
    basket_ex = examples(np.arange(n_cust), s.offsets[1:],
                         [list(rng.choice(np.arange(1, n_items + 1), int(rng.integers(1, 5)), replace=False))
                          for _ in range(n_cust)])
    # the item-chunked scorer (million-item catalogues) must line up the same way
    chunked = ChunkedScorer(prepare=lambda store, chunk: score_fn(store, chunk),
                            scores=lambda state, lo, hi: state[:, lo:hi].copy(), item_chunk=7)
    for scorer in (score_fn, chunked):
        for evaluate, ex in ((evaluate_next_item, item_ex), (evaluate_next_basket, basket_ex)):
            seen.clear()
            whole = evaluate(scorer, s, ex, batch_size=5, progress=False)
            visited = np.concatenate(seen)
            assert len(seen) == 5 and np.all(np.diff(visited) >= 0)      # shortest first, chunk after chunk
            for i in range(n_cust):                                      # one example at a time: example order
                one = evaluate(scorer, s, ex.take(np.array([i])), batch_size=5, progress=False)
                for k, v in whole.per_example.items():
                    np.testing.assert_array_equal(v[i], one.per_example[k][0],
                                                  err_msg=f"{evaluate.__name__} {k} row {i}")
